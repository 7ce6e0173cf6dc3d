//! Test kit: a small SIP phone over loopback, tone generators and a Goertzel detector.
//!
//! The phone speaks just enough SIP (INVITE/ACK/BYE, answering a BYE) and RTP (PCMU,
//! RFC 4733 digits) to dial into the bridge like a desk phone would. Its media runs
//! on a thread with a 20 ms pacing loop; everything it hears is kept for analysis.
#![allow(dead_code, clippy::disallowed_methods)]

pub mod link;

use bytes::Bytes;
use link::{LinkKind, SipLink};
use sotto::media::g711::Law;
use sotto::sip::message::{parse, HeaderAccess, Limits, Message};
use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Config for an in-process bridge: loopback, port 0, given rooms; `extra` goes into [media].
/// The tokio runtime a test bridge runs on: two workers, as in production.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn test_config(rooms: &[(&str, &str)], rtp_ports: &str, extra: &str) -> sotto::config::Config {
    test_config_with(rooms, rtp_ports, extra, "")
}

/// Like [`test_config`], with extra lines for the [sip] section.
pub fn test_config_with(
    rooms: &[(&str, &str)],
    rtp_ports: &str,
    media_extra: &str,
    sip_extra: &str,
) -> sotto::config::Config {
    // Plain RTP unless the test asks for a policy: the test phone speaks SRTP only when told.
    let policy = if media_extra.contains("encryption") {
        ""
    } else {
        "encryption = \"off\""
    };
    let mut text = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\n{sip_extra}\n[metrics]\nlisten = \"127.0.0.1:0\"\n[mixer]\nshards = 2\n[media]\nrtp_ports = \"{rtp_ports}\"\n{policy}\n{media_extra}\n"
    );
    for (i, (id, pin)) in rooms.iter().enumerate() {
        let hash = sotto::room::pin::cheap_hash_for_tests(pin, format!("salt-{i}-salt").as_bytes());
        text.push_str(&format!("[[room]]\nid = \"{id}\"\npin = \"{hash}\"\n"));
    }
    sotto::config::Config::parse(&text, "test.toml".as_ref(), ".".as_ref()).expect("test config")
}

/// Prompts made of distinct tones so tests can tell which one a phone heard.
pub fn tone_prompts() -> sotto::room::prompts::Prompts {
    use sotto::room::prompts::Prompt;
    sotto::room::prompts::Prompts::from_fn(|p| match p {
        Prompt::EnterPin => tone(300.0, 0.6, 8000.0),
        Prompt::WrongPin => tone(350.0, 0.3, 8000.0),
        Prompt::Goodbye => tone(380.0, 0.3, 8000.0),
        Prompt::FirstParticipant => tone(2000.0, 0.6, 8000.0),
        Prompt::JoinTone => tone(1500.0, 0.2, 8000.0),
        _ => tone(2500.0, 0.2, 8000.0),
    })
}

/// A sine tone at -12 dBFS.
pub fn tone(freq: f64, secs: f64, rate: f64) -> Vec<i16> {
    let n = (secs * rate) as usize;
    (0..n)
        .map(|i| ((2.0 * std::f64::consts::PI * freq * i as f64 / rate).sin() * 8000.0) as i16)
        .collect()
}

/// Share of the signal's power within ±1.5 % of `freq`, 0..1 (~1 for a pure tone).
///
/// A band rather than one DFT bin: the bridge's adaptive playout buffer may drop or
/// insert single samples to follow the network's delay, which plays a tone up to
/// 0.6 % faster or slower for a while; a listener hears the same tone, and so should
/// the test. The DFT bins (Goertzel, integer bins) inside the band are summed.
pub fn tone_share(samples: &[i16], freq: f64, rate: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let n = samples.len() as f64;
    let energy: f64 = samples.iter().map(|&x| (x as f64).powi(2)).sum();
    if energy == 0.0 {
        return 0.0;
    }
    let centre = (n * freq / rate).round() as i64;
    let spread = ((0.015 * freq) / (rate / n)).ceil() as i64;
    let mut power = 0.0f64;
    for k in (centre - spread).max(1)..=centre + spread {
        let w = 2.0 * std::f64::consts::PI * k as f64 / n;
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in samples {
            let s0 = x as f64 + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        power += s1 * s1 + s2 * s2 - coeff * s1 * s2;
    }
    // For a pure tone at bin k, power = (N·A/2)^2 and energy = N·A^2/2.
    (power * 2.0 / (n * energy)).min(1.0)
}

/// Asserts that in its last second each phone hears every other phone's tone (more than
/// 15 % of the power) and not its own (under 1 %): the mix-minus of one room.
pub fn assert_each_hears_the_others(phones: &[&Phone], tones: &[f64]) {
    for (i, p) in phones.iter().enumerate() {
        let heard = p.last_heard(1.0);
        for (j, &f) in tones.iter().enumerate() {
            let share = tone_share(&heard, f, 8000.0);
            if i == j {
                assert!(share < 0.01, "phone {i} hears itself ({share:.3})");
            } else {
                assert!(share > 0.15, "phone {i} misses phone {j} ({share:.3})");
            }
        }
    }
}

#[derive(Default)]
struct MediaShared {
    received: Vec<i16>,
    arrivals: Vec<Instant>,
    digits: VecDeque<u8>,
    remote: Option<SocketAddr>,
    silent: bool,
}

/// What a phone tells the bridge about its user.
#[derive(Clone)]
pub struct Identity {
    /// From display name.
    pub display_name: String,
    /// From/Contact user part (the caller ID).
    pub user: String,
    /// User-Agent header.
    pub user_agent: String,
    /// Request-URI user part.
    pub request_user: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            display_name: "Test Phone".into(),
            user: "phone".into(),
            user_agent: "sotto-testkit".into(),
            request_user: "conference".into(),
        }
    }
}

/// A SIP phone on loopback.
pub struct Phone {
    identity: Identity,
    sips: bool,
    sip: SipLink,
    bridge: SocketAddr,
    call_id: String,
    from_tag: String,
    to_tag: Option<String>,
    cseq: u32,
    media: Arc<Mutex<MediaShared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    rtp_addr: SocketAddr,
}

impl Phone {
    /// A phone that will play `tone_hz` once in the room (0: silence).
    pub fn new(bridge: SocketAddr, tone_hz: f64) -> Phone {
        Phone::new_at(bridge, tone_hz, "127.0.0.1")
    }

    /// A phone on a given loopback address (127.0.0.0/8), so tests can use many sources.
    pub fn new_at(bridge: SocketAddr, tone_hz: f64, ip: &str) -> Phone {
        Phone::with_link(bridge, tone_hz, ip, LinkKind::Udp)
    }

    /// A phone whose SIP goes over `kind` to `bridge` (the bridge's UDP, TCP or TLS address).
    pub fn with_link(bridge: SocketAddr, tone_hz: f64, ip: &str, kind: LinkKind) -> Phone {
        let sip = SipLink::open(kind, ip, bridge);
        let rtp = UdpSocket::bind((ip, 0)).unwrap();
        rtp.set_nonblocking(true).unwrap();
        let rtp_addr = rtp.local_addr().unwrap();
        let media = Arc::new(Mutex::new(MediaShared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let media = media.clone();
            let stop = stop.clone();
            std::thread::spawn(move || media_loop(rtp, media, stop, tone_hz))
        };
        Phone {
            identity: Identity::default(),
            sips: false,
            sip,
            bridge,
            call_id: format!("{:016x}@test", rand::random::<u64>()),
            from_tag: format!("{:08x}", rand::random::<u32>()),
            to_tag: None,
            cseq: 1,
            media,
            stop,
            thread: Some(thread),
            rtp_addr,
        }
    }

    fn local(&self) -> SocketAddr {
        self.sip.local()
    }

    fn headers(&self, method: &str, branch: &str, cseq: u32) -> String {
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        format!(
            "{method} {scheme}:{room}@{b} SIP/2.0\r\nVia: SIP/2.0/{via} {l};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: \"{name}\" <sip:{user}@{l}>;tag={ft}\r\nTo: <{scheme}:{room}@{b}>{to_tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: <sip:{user}@{l}>\r\nUser-Agent: {ua}\r\n",
            b = self.bridge,
            l = self.local(),
            ft = self.from_tag,
            cid = self.call_id,
            name = self.identity.display_name,
            user = self.identity.user,
            ua = self.identity.user_agent,
            room = self.identity.request_user,
            via = self.sip.via(),
            scheme = if self.sips { "sips" } else { "sip" },
        )
    }

    /// Calls a `sips:` URI (meaningful over TLS only).
    pub fn use_sips(&mut self, sips: bool) {
        self.sips = sips;
    }

    /// Sets what this phone says about itself (for privacy tests).
    pub fn set_identity(&mut self, identity: Identity) {
        self.identity = identity;
    }

    fn recv(&self, deadline: Instant) -> Option<Message> {
        while Instant::now() < deadline {
            if let Some((data, _)) = self.sip.recv() {
                if let Ok(m) = parse(Bytes::from(data), &Limits::default()) {
                    return Some(m);
                }
            }
        }
        None
    }

    fn offer(&self, direction: &str) -> String {
        format!(
            "v=0\r\no=- 1 {} IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na={direction}\r\n",
            self.cseq,
            self.rtp_addr.port(),
            ip = self.rtp_addr.ip(),
            family = if self.rtp_addr.is_ipv6() { "IP6" } else { "IP4" }
        )
    }

    /// Sends a re-INVITE with this direction (`sendonly` = hold); returns the final code.
    pub fn reinvite(&mut self, direction: &str) -> u16 {
        self.cseq += 1;
        self.call_with(&self.offer(direction))
    }

    /// Dials the bridge; returns the final status code.
    pub fn call(&mut self) -> u16 {
        let sdp = self.offer("sendrecv");
        self.call_with(&sdp)
    }

    /// Sends a re-INVITE without SDP (a PBX after a transfer): the bridge's offer comes in
    /// the 200 and this phone answers in the ACK. Returns the final status code.
    pub fn reinvite_without_offer(&mut self) -> u16 {
        self.cseq += 1;
        self.call_without_offer()
    }

    /// Dials the bridge with an INVITE without SDP (as some PBXs do): the bridge's offer
    /// comes in the 200, and this phone answers with PCMU and telephone-event in the ACK.
    /// Returns the final status code.
    pub fn call_without_offer(&mut self) -> u16 {
        let branch = format!("z9hG4bK{:08x}", rand::random::<u32>());
        let msg = format!(
            "{}Content-Length: 0\r\n\r\n",
            self.headers("INVITE", &branch, self.cseq)
        );
        self.sip.send(msg.as_bytes(), self.bridge);
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Some(m) = self.recv(deadline) {
            let Message::Response(r) = m else { continue };
            if r.code < 200 {
                continue;
            }
            if r.code >= 300 {
                return r.code;
            }
            self.to_tag = r.to().ok().and_then(|t| t.tag).map(|t| t.to_string());
            let offer = sotto::sip::sdp::SessionDescription::parse(&r.body).expect("offer SDP");
            let m = &offer.media[0];
            assert!(m.formats.iter().any(|f| f == "0"), "the offer lacks PCMU");
            assert!(
                m.formats.iter().any(|f| f == "101"),
                "the offer lacks telephone-event/8000"
            );
            let ip = m.connection.or(offer.connection).unwrap();
            self.media.lock().unwrap().remote = Some(SocketAddr::new(ip, m.port));
            let family = if self.rtp_addr.is_ipv6() {
                "IP6"
            } else {
                "IP4"
            };
            let answer = format!(
                "v=0\r\no=- 2 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n",
                self.rtp_addr.port(),
                ip = self.rtp_addr.ip()
            );
            let ack_branch = format!("z9hG4bK{:08x}", rand::random::<u32>());
            let ack = format!(
                "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
                self.headers("ACK", &ack_branch, self.cseq),
                answer.len()
            );
            self.sip.send(ack.as_bytes(), self.bridge);
            return r.code;
        }
        0
    }

    fn call_with(&mut self, sdp: &str) -> u16 {
        let branch = format!("z9hG4bK{:08x}", rand::random::<u32>());
        let msg = format!(
            "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{}",
            self.headers("INVITE", &branch, self.cseq),
            sdp.len(),
            sdp
        );
        self.sip.send(msg.as_bytes(), self.bridge);
        let start = Instant::now();
        let deadline = start + Duration::from_secs(5);
        let mut retransmit = Duration::from_millis(500);
        loop {
            // Timer A (RFC 3261 §17.1.1.2): over UDP a phone repeats its INVITE until it
            // hears a response; the bridge relies on that (its answer may not exceed
            // what an unverified source has sent).
            let wait = (start + retransmit).min(deadline);
            let Some(m) = self.recv(wait) else {
                if Instant::now() >= deadline {
                    break;
                }
                if self.sip.via() == "UDP" {
                    self.sip.send(msg.as_bytes(), self.bridge);
                }
                retransmit *= 2;
                continue;
            };
            let Message::Response(r) = m else { continue };
            if r.code < 200 {
                continue;
            }
            if r.code >= 300 {
                return r.code;
            }
            if r.cseq().map(|c| c.cseq) != Ok(self.cseq) {
                continue;
            }
            self.to_tag = r.to().ok().and_then(|t| t.tag).map(|t| t.to_string());
            let answer = sotto::sip::sdp::SessionDescription::parse(&r.body).expect("answer SDP");
            let m = &answer.media[0];
            let ip = m.connection.or(answer.connection).unwrap();
            self.media.lock().unwrap().remote = Some(SocketAddr::new(ip, m.port));
            let ack_branch = format!("z9hG4bK{:08x}", rand::random::<u32>());
            let ack = format!(
                "{}Content-Length: 0\r\n\r\n",
                self.headers("ACK", &ack_branch, self.cseq)
            );
            self.sip.send(ack.as_bytes(), self.bridge);
            return r.code;
        }
        0
    }

    /// The bridge's RTP address for this call (from the SDP answer).
    pub fn bridge_rtp(&self) -> Option<SocketAddr> {
        self.media.lock().unwrap().remote
    }

    /// The Call-ID this phone uses.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// This phone's From tag.
    pub fn local_tag(&self) -> &str {
        &self.from_tag
    }

    /// Queues RFC 4733 digits (e.g. "31415926#").
    pub fn dial_digits(&self, digits: &str) {
        let mut m = self.media.lock().unwrap();
        for c in digits.chars() {
            let ev = match c {
                '0'..='9' => c as u8 - b'0',
                '*' => 10,
                '#' => 11,
                _ => continue,
            };
            m.digits.push_back(ev);
        }
    }

    /// Stops sending RTP (a phone that vanished).
    pub fn go_silent(&self) {
        self.media.lock().unwrap().silent = true;
    }

    /// Hangs up with BYE; returns the response code.
    pub fn hangup(&mut self) -> u16 {
        self.cseq += 1;
        let branch = format!("z9hG4bK{:08x}", rand::random::<u32>());
        let bye = format!(
            "{}Content-Length: 0\r\n\r\n",
            self.headers("BYE", &branch, self.cseq)
        );
        self.sip.send(bye.as_bytes(), self.bridge);
        let deadline = Instant::now() + Duration::from_secs(3);
        while let Some(m) = self.recv(deadline) {
            if let Message::Response(r) = m {
                if r.cseq().map(|c| c.cseq) == Ok(self.cseq) {
                    return r.code;
                }
            }
        }
        0
    }

    /// Waits for a BYE from the bridge and answers it 200; true if one came in time.
    pub fn wait_for_bye(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let Some((data, src)) = self.sip.recv() else {
                continue;
            };
            let Ok(Message::Request(req)) = parse(Bytes::from(data), &Limits::default()) else {
                continue;
            };
            if req.method != ezk_method_bye() {
                continue;
            }
            let resp =
                sotto::sip::message::build_response(&req, src, 200, None, &[], None).unwrap();
            self.sip.send(&resp, src);
            return true;
        }
        false
    }

    /// Everything heard so far.
    pub fn received(&self) -> Vec<i16> {
        self.media.lock().unwrap().received.clone()
    }

    /// The longest gap between two received packets since `since` (for "no gap over 60 ms").
    pub fn max_gap_since(&self, since: Instant) -> Duration {
        let m = self.media.lock().unwrap();
        let times: Vec<Instant> = m.arrivals.iter().copied().filter(|&t| t >= since).collect();
        times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(Duration::MAX)
    }

    /// Packets received since `since`.
    pub fn packets_since(&self, since: Instant) -> usize {
        self.media
            .lock()
            .unwrap()
            .arrivals
            .iter()
            .filter(|&&t| t >= since)
            .count()
    }

    /// The last `secs` seconds heard.
    pub fn last_heard(&self, secs: f64) -> Vec<i16> {
        let r = self.received();
        let n = ((secs * 8000.0) as usize).min(r.len());
        r[r.len() - n..].to_vec()
    }
}

fn ezk_method_bye() -> ezk_sip_types::Method {
    ezk_sip_types::Method::BYE
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn media_loop(rtp: UdpSocket, media: Arc<Mutex<MediaShared>>, stop: Arc<AtomicBool>, tone_hz: f64) {
    let ssrc: u32 = rand::random();
    let mut seq: u16 = rand::random();
    let mut ts: u32 = rand::random();
    let mut phase = 0usize;
    let mut next = Instant::now();
    let mut buf = [0u8; 2048];
    // A digit is sent as 5 packets (3 in progress, then the end packet three times,
    // RFC 4733 §2.5.1.4), then 3 ticks of pause.
    let mut digit_step: Option<(u8, u32, usize)> = None;
    let mut pause = 0usize;
    let mut pcm = [0i16; 160];
    let mut payload = [0u8; 160];
    while !stop.load(Ordering::Relaxed) {
        // Receive what arrived.
        loop {
            match rtp.recv_from(&mut buf) {
                Ok((n, _)) if n > 12 => {
                    let cc = (buf[0] & 0x0f) as usize;
                    let start = 12 + 4 * cc;
                    if buf[1] & 0x7f == 0 && n > start {
                        let mut out = vec![0i16; n - start];
                        Law::Ulaw.decode(&buf[start..n], &mut out);
                        let mut m = media.lock().unwrap();
                        m.received.extend_from_slice(&out);
                        m.arrivals.push(Instant::now());
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let (remote, silent) = {
            let m = media.lock().unwrap();
            (m.remote, m.silent)
        };
        if let (Some(remote), false) = (remote, silent) {
            if digit_step.is_none() && pause == 0 {
                if let Some(d) = media.lock().unwrap().digits.pop_front() {
                    digit_step = Some((d, ts, 0));
                }
            }
            let mut pkt = Vec::with_capacity(200);
            if let Some((digit, event_ts, step)) = digit_step {
                let end = step >= 2;
                let duration = ((step.min(2) + 1) * 160) as u16;
                pkt.extend_from_slice(&[0x80, if step == 0 { 0x80 | 101 } else { 101 }]);
                pkt.extend_from_slice(&seq.to_be_bytes());
                pkt.extend_from_slice(&event_ts.to_be_bytes());
                pkt.extend_from_slice(&ssrc.to_be_bytes());
                pkt.extend_from_slice(&[digit, if end { 0x80 | 10 } else { 10 }]);
                pkt.extend_from_slice(&duration.to_be_bytes());
                digit_step = if step + 1 >= 5 {
                    pause = 3;
                    None
                } else {
                    Some((digit, event_ts, step + 1))
                };
            } else {
                pause = pause.saturating_sub(1);
                let in_room = media.lock().unwrap().digits.is_empty();
                for s in pcm.iter_mut() {
                    *s = if tone_hz > 0.0 && in_room {
                        ((2.0 * std::f64::consts::PI * tone_hz * phase as f64 / 8000.0).sin()
                            * 8000.0) as i16
                    } else {
                        0
                    };
                    phase += 1;
                }
                Law::Ulaw.encode(&pcm, &mut payload);
                pkt.extend_from_slice(&[0x80, 0]);
                pkt.extend_from_slice(&seq.to_be_bytes());
                pkt.extend_from_slice(&ts.to_be_bytes());
                pkt.extend_from_slice(&ssrc.to_be_bytes());
                pkt.extend_from_slice(&payload);
            }
            let _ = rtp.send_to(&pkt, remote);
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(160);
        }
        next += Duration::from_millis(20);
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

/// The bridge's metrics page.
pub fn metrics(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// One counter's value from a metrics page (0 when absent).
pub fn metric(page: &str, name: &str) -> u64 {
    page.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
