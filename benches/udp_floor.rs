//! The kernel's floor for a media shard's socket work: what receiving one 20 ms packet
//! from every member and sending one back costs, with no mixing at all, for each way
//! of doing the I/O a shard could use.
//!
//! Run with `cargo bench --bench udp_floor` (loopback only). A generator thread plays N
//! members (one socket each, 172-byte packets every 20 ms, like PCMA RTP); a reflector
//! thread plays the bridge and, once per 20 ms tick, takes in what arrived and sends
//! every member one packet. The reflector's own CPU time (its thread clock, which on
//! loopback includes the kernel delivering its packets to the generator's sockets, as
//! it does for the bridge in a load run) over 5 s gives µs per member-second:
//!
//! - `poll`: one socket per member, `recv_from` on every socket each tick until
//!   EAGAIN, one `send_to` per member (what the shard does today);
//! - `epoll`: one socket per member, level-triggered epoll asked once per tick, one
//!   `recvmmsg` per ready socket, one `send_to` per member;
//! - `single`: one socket for all members, `recvmmsg` and `sendmmsg` in batches of 64.

// A benchmark must read the clock and call the kernel; the sans-IO rule is for the library.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(20);
const PACKET: usize = 172;
const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);
const BATCH: usize = 64;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Poll,
    Epoll,
    Single,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Poll => "poll",
            Mode::Epoll => "epoll",
            Mode::Single => "single",
        }
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn bind() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind on loopback");
    s.set_nonblocking(true).expect("non-blocking");
    s
}

fn sockaddr(addr: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = addr else {
        unreachable!("loopback v4 only")
    };
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// recvmmsg/sendmmsg buffers for one batch.
struct Batch {
    bufs: Vec<[u8; 2048]>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    msgs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new() -> Box<Batch> {
        let mut b = Box::new(Batch {
            bufs: vec![[0u8; 2048]; BATCH],
            iovs: Vec::with_capacity(BATCH),
            addrs: vec![sockaddr("127.0.0.1:9".parse().expect("addr")); BATCH],
            msgs: Vec::with_capacity(BATCH),
        });
        for i in 0..BATCH {
            let iov = libc::iovec {
                iov_base: b.bufs[i].as_mut_ptr().cast(),
                iov_len: 2048,
            };
            b.iovs.push(iov);
        }
        for i in 0..BATCH {
            // SAFETY: zeroed mmsghdr is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut b.iovs[i];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_in).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            b.msgs.push(m);
        }
        b
    }

    fn recv(&mut self, fd: i32, max: usize) -> usize {
        for i in 0..max {
            self.iovs[i].iov_len = 2048;
            self.msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        }
        // SAFETY: the headers point into self, alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                max as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        n.max(0) as usize
    }

    fn send(&mut self, fd: i32, dests: &[SocketAddr]) {
        for (i, d) in dests.iter().enumerate() {
            self.addrs[i] = sockaddr(*d);
            self.iovs[i].iov_len = PACKET;
        }
        let mut done = 0;
        while done < dests.len() {
            // SAFETY: the headers point into self, alive for the call.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.msgs.as_mut_ptr().add(done),
                    (dests.len() - done) as u32,
                    0,
                )
            };
            if n <= 0 {
                break;
            }
            done += n as usize;
        }
    }
}

fn generator(members: Vec<UdpSocket>, targets: Vec<SocketAddr>, stop: Arc<AtomicBool>) {
    let packet = [0x80u8; PACKET];
    let mut buf = [0u8; 2048];
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for (s, t) in members.iter().zip(&targets) {
            let _ = s.send_to(&packet, t);
        }
        for s in &members {
            while s.recv_from(&mut buf).is_ok() {}
        }
        next += TICK;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
}

fn reflector(mode: Mode, n: usize) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<UdpSocket> = (0..n).map(|_| bind()).collect();
    let client_addrs: Vec<SocketAddr> = clients
        .iter()
        .map(|s| s.local_addr().expect("addr"))
        .collect();
    let servers: Vec<UdpSocket> = match mode {
        Mode::Single => vec![bind()],
        _ => (0..n).map(|_| bind()).collect(),
    };
    let targets: Vec<SocketAddr> = match mode {
        Mode::Single => vec![servers[0].local_addr().expect("addr"); n],
        _ => servers
            .iter()
            .map(|s| s.local_addr().expect("addr"))
            .collect(),
    };
    let g = {
        let stop = stop.clone();
        std::thread::spawn(move || generator(clients, targets, stop))
    };
    let mut batch = Batch::new();
    let mut buf = [0u8; 2048];
    let packet = [0x80u8; PACKET];
    // SAFETY: plain epoll instance.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if mode == Mode::Epoll {
        for (i, s) in servers.iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: valid fds and event.
            unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) };
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let start = Instant::now();
    let mut next = start;
    let mut measured_from = None;
    let mut received = 0u64;
    loop {
        let now = Instant::now();
        if measured_from.is_none() && now >= start + WARMUP {
            measured_from = Some((now, thread_cpu()));
        }
        if let Some((t0, _)) = measured_from {
            if now >= t0 + MEASURE {
                break;
            }
        }
        match mode {
            Mode::Poll => {
                for s in &servers {
                    while s.recv_from(&mut buf).is_ok() {
                        received += 1;
                    }
                }
                for (s, d) in servers.iter().zip(&client_addrs) {
                    let _ = s.send_to(&packet, d);
                }
            }
            Mode::Epoll => loop {
                // SAFETY: events has room for its length.
                let k = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 1024, 0) };
                if k <= 0 {
                    for (s, d) in servers.iter().zip(&client_addrs) {
                        let _ = s.send_to(&packet, d);
                    }
                    break;
                }
                for ev in &events[..k as usize] {
                    let i = ev.u64 as usize;
                    received += batch.recv(servers[i].as_raw_fd(), 16) as u64;
                }
                if (k as usize) < 1024 {
                    for (s, d) in servers.iter().zip(&client_addrs) {
                        let _ = s.send_to(&packet, d);
                    }
                    break;
                }
            },
            Mode::Single => {
                let fd = servers[0].as_raw_fd();
                loop {
                    let got = batch.recv(fd, BATCH);
                    received += got as u64;
                    if got < BATCH {
                        break;
                    }
                }
                for chunk in client_addrs.chunks(BATCH) {
                    batch.send(fd, chunk);
                }
            }
        }
        next += TICK;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    let (t0, cpu0) = measured_from.expect("measured");
    let cpu = thread_cpu() - cpu0;
    let wall = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = g.join();
    // SAFETY: our own epoll fd.
    unsafe { libc::close(ep) };
    std::hint::black_box(received);
    cpu.as_secs_f64() * 1e6 / (n as f64 * wall.as_secs_f64())
}

fn main() {
    println!("UDP floor: one 172-byte packet in and one out per member every 20 ms, no mixing");
    println!("| members | poll µs/member-s | epoll | single socket, recvmmsg/sendmmsg |");
    println!("|---|---|---|---|");
    for n in [200usize, 500, 1000] {
        let row: Vec<String> = [Mode::Poll, Mode::Epoll, Mode::Single]
            .iter()
            .map(|m| {
                let v = reflector(*m, n);
                eprintln!("  {} {n}: {v:.0}", m.name());
                format!("{v:.0}")
            })
            .collect();
        println!("| {n} | {} | {} | {} |", row[0], row[1], row[2]);
    }
}
