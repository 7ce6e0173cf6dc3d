//! Wiring: binds the listeners, starts the shards, signalling and the metrics endpoint.
//!
//! Binding ([`bind`]) is separate from starting ([`start`]) so that the binary can bind
//! every listener and read every file first, then lock itself down (the sandbox), and
//! only then start threads: Landlock applies to the thread that installs it and to the
//! threads it creates afterwards.

use crate::conference::{ConferenceSettings, Rooms};
use crate::config::Config;
use crate::io::media::ShardHandle;
use crate::io::pin_verifier::PinVerifier;
use crate::io::signalling::{channels, Signalling};
use crate::io::stream::{Connections, StreamLimits};
use crate::metrics::Metrics;
use crate::room::ivr::IvrSettings;
use crate::room::pin::RoomPins;
use crate::room::prompts::Prompts;
use crate::sip::endpoint::{Endpoint, EndpointConfig};
use crate::sip::message::Limits;
use crate::sip::transaction::Timers;
use crate::sip::transport::Transport;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// PIN attempts waiting for verification at most (a meeting start of 1,000 callers
/// typing within seconds fits; the cache of correct PINs empties it fast).
const PIN_QUEUE: usize = 1024;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A socket could not be handed to the runtime.
    #[error("cannot register a socket with the runtime: {0}")]
    Register(std::io::Error),
    /// A mixer thread could not be started.
    #[error("cannot start a mixer thread: {0}")]
    Thread(std::io::Error),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] crate::io::tls::TlsError),
}

/// Listeners bound (and TLS keys read) before the sandbox goes up.
pub struct Listeners {
    /// SIP over UDP.
    pub sip_udp: Option<std::net::UdpSocket>,
    /// SIP over TCP.
    pub sip_tcp: Vec<std::net::TcpListener>,
    /// SIP over TLS.
    pub sip_tls: Vec<std::net::TcpListener>,
    /// The TLS configuration, when there are TLS listeners.
    pub tls: Option<crate::io::tls::TlsSetup>,
    /// The metrics endpoint, if configured.
    pub metrics: Option<std::net::TcpListener>,
}

/// Kernel buffer asked for the shared RTP port: a tick's datagrams of thousands of
/// members wait there between two reads (2,000 × ~1 KiB of kernel overhead each).
const SHARED_RTP_BUFFER: usize = 8 << 20;

/// Binds the shared RTP port (`rtp_ports = "single:PORT"`) with room for a tick's
/// datagrams.
fn bind_shared_rtp(addr: SocketAddr) -> Result<std::net::UdpSocket, StartError> {
    let socket =
        std::net::UdpSocket::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    socket
        .set_nonblocking(true)
        .map_err(|source| StartError::Bind { addr, source })?;
    crate::io::batch::enlarge_buffers(&socket, SHARED_RTP_BUFFER);
    Ok(socket)
}

fn bind_tcp(addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    let l =
        std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    l.set_nonblocking(true)
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok(l)
}

/// Binds every listener the config names and reads the TLS keys (no threads start).
pub fn bind(config: &Config) -> Result<Listeners, StartError> {
    let sip_udp = match config.sip.udp.first() {
        Some(&addr) => {
            let s = std::net::UdpSocket::bind(addr)
                .map_err(|source| StartError::Bind { addr, source })?;
            s.set_nonblocking(true)
                .map_err(|source| StartError::Bind { addr, source })?;
            Some(s)
        }
        None => None,
    };
    let sip_tcp = config
        .sip
        .tcp
        .iter()
        .map(|&a| bind_tcp(a))
        .collect::<Result<Vec<_>, _>>()?;
    let sip_tls = config
        .sip
        .tls
        .iter()
        .map(|&a| bind_tcp(a))
        .collect::<Result<Vec<_>, _>>()?;
    let tls = if sip_tls.is_empty() {
        None
    } else {
        Some(crate::io::tls::setup(
            config.tls.certificate.as_deref(),
            config.tls.private_key.as_deref(),
            &config.tls.names,
        )?)
    };
    let metrics = config.metrics.listen.map(bind_tcp).transpose()?;
    Ok(Listeners {
        sip_udp,
        sip_tcp,
        sip_tls,
        tls,
        metrics,
    })
}

/// A running bridge.
pub struct ServerHandle {
    sip_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    stream_tasks: Vec<JoinHandle<()>>,
    metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    metrics_task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The first SIP listener: UDP if there is one, else TLS, else TCP.
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    /// The first SIP over TLS address, if any.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The first SIP over TCP address, if any.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The address of the metrics endpoint, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Hangs up every call, stops the shards and waits for the end.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        if let Some(t) = self.metrics_task {
            t.abort();
        }
        for t in self.stream_tasks {
            t.abort();
        }
    }
}

/// Binds and starts in one step (tests, and runs without a sandbox).
pub async fn start(config: Config, prompts: Prompts) -> Result<ServerHandle, StartError> {
    let listeners = bind(&config)?;
    start_with(config, prompts, listeners, Arc::new(Metrics::new())).await
}

/// Starts the bridge on the current tokio runtime with listeners bound by [`bind`].
pub async fn start_with(
    config: Config,
    prompts: Prompts,
    listeners: Listeners,
    metrics: Arc<Metrics>,
) -> Result<ServerHandle, StartError> {
    let config = Arc::new(config);
    // Behind NAT the operator sets `media.public_address`: our Contact names it too
    // (with the listener's port), so in-dialog requests come back to the public side.
    let public = |a: SocketAddr| {
        let p = config.media.public_address;
        let nat = p != config.media.rtp_address;
        if (a.ip().is_unspecified() || nat) && p.is_ipv4() == a.is_ipv4() {
            SocketAddr::new(p, a.port())
        } else {
            a
        }
    };
    let (socket, udp_addr) = match listeners.sip_udp {
        Some(s) => {
            let addr = s.local_addr().map_err(StartError::Register)?;
            let s = UdpSocket::from_std(s).map_err(StartError::Register)?;
            (Some(Arc::new(s)), Some(addr))
        }
        None => (None, None),
    };
    let limits = StreamLimits {
        max_connections: config.sip.max_connections,
        max_per_source: config.sip.max_connections_per_source,
        message_timeout: Duration::from_secs(config.sip.message_timeout_secs),
        max_message: config.sip.max_message_size,
    };
    let connections = Arc::new(Connections::default());
    let (stream_tx, stream_rx) = tokio::sync::mpsc::channel(1024);
    let mut stream_tasks = Vec::new();
    let mut tcp_addr = None;
    let mut tls_addr = None;
    for l in listeners.sip_tcp {
        let addr = l.local_addr().map_err(StartError::Register)?;
        tcp_addr.get_or_insert(addr);
        let l = tokio::net::TcpListener::from_std(l).map_err(StartError::Register)?;
        stream_tasks.push(tokio::spawn(crate::io::stream::serve(
            l,
            Transport::Tcp,
            None,
            limits,
            connections.clone(),
            stream_tx.clone(),
        )));
    }
    if let Some(tls) = &listeners.tls {
        let origin = if tls.self_signed {
            "self-signed, made at start"
        } else {
            "loaded"
        };
        tracing::info!(fingerprint = %tls.fingerprint, "TLS certificate ({origin}), SHA-256");
    }
    for l in listeners.sip_tls {
        let addr = l.local_addr().map_err(StartError::Register)?;
        tls_addr.get_or_insert(addr);
        let acceptor = listeners
            .tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
        let l = tokio::net::TcpListener::from_std(l).map_err(StartError::Register)?;
        stream_tasks.push(tokio::spawn(crate::io::stream::serve(
            l,
            Transport::Tls,
            acceptor,
            limits,
            connections.clone(),
            stream_tx.clone(),
        )));
    }
    drop(stream_tx);
    let sip_addr = udp_addr
        .or(tls_addr)
        .or(tcp_addr)
        .ok_or_else(|| StartError::Register(std::io::Error::other("no SIP listener")))?;
    let local = public(udp_addr.unwrap_or(sip_addr));

    let (metrics_addr, metrics_task) = match listeners.metrics {
        Some(l) => {
            let addr = l.local_addr().map_err(StartError::Register)?;
            let l = tokio::net::TcpListener::from_std(l).map_err(StartError::Register)?;
            let task = tokio::spawn(crate::io::metrics_http::serve(l, metrics.clone()));
            (Some(addr), Some(task))
        }
        None => (None, None),
    };

    let ((ev_tx, ev_rx), (pin_tx, pin_rx)) = channels();
    let prompts = Arc::new(prompts);
    let settings = ConferenceSettings {
        jitter_min: Duration::from_millis(u64::from(config.media.jitter_min_ms)),
        jitter_max: Duration::from_millis(u64::from(config.media.jitter_max_ms)),
        max_speakers: config.mixer.max_speakers,
        noise_gate_dbov: config.mixer.noise_gate_dbov,
        auto_gain: config.mixer.auto_gain,
        rtp_timeout: Duration::from_secs(config.media.rtp_timeout_secs),
        ivr: IvrSettings {
            max_tries: config.ivr.pin_tries,
            digit_timeout: Duration::from_secs(config.ivr.digit_timeout_secs),
            max_digits: config.ivr.max_pin_digits,
        },
        keys: Arc::new(config.controls.clone()),
        room_options: config.rooms.iter().map(|r| r.options).collect(),
        shared_port: config.media.rtp_single_port.is_some(),
    };
    let shard_count = match config.mixer.shards {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // The rooms of the node, shared by the shards (a room spans those its members are
    // in); the shards tick on one grid.
    let node = Rooms::new(shard_count, None);
    let mut shards = Vec::with_capacity(shard_count);
    for i in 0..shard_count {
        // Shard i's shared port: PORT + 2i.
        let shared = match config.media.rtp_single_port {
            Some(port) => {
                let port = u16::try_from(usize::from(port) + 2 * i).map_err(|_| {
                    StartError::Register(std::io::Error::other(
                        "media.rtp_ports: single:PORT + 2 per mixer shard passes 65535",
                    ))
                })?;
                Some(bind_shared_rtp(SocketAddr::new(
                    config.media.rtp_address,
                    port,
                ))?)
            }
            None => None,
        };
        shards.push(
            ShardHandle::spawn(
                i,
                settings.clone(),
                prompts.clone(),
                ev_tx.clone(),
                metrics.clone(),
                (node.clone(), shared),
            )
            .map_err(StartError::Thread)?,
        );
    }
    drop(ev_tx);

    let endpoint = Endpoint::new(EndpointConfig {
        local,
        timers: Timers::default(),
        limits: Limits {
            max_size: config.sip.max_message_size,
            max_headers: config.sip.max_headers,
        },
        max_transactions: 20_000,
        amplification_guard: true,
        trunks: config.trunks.clone(),
        local_tcp: tcp_addr.map(public),
        local_tls: tls_addr.map(public),
    });
    let mut endpoint = endpoint;
    endpoint.set_filters(crate::sip::endpoint::RequestFilters {
        scanner_user_agents: config.limits.scanner_user_agents.clone(),
        domains: config.limits.domains.clone(),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let pins = Arc::new(RoomPins::new(
        config
            .rooms
            .iter()
            .map(|r| (&r.pin, r.moderator_pin.as_ref())),
    ));
    let verifier = PinVerifier::spawn(pins, pin_tx, PIN_QUEUE).map_err(StartError::Thread)?;
    let signalling = Signalling::new(
        config.clone(),
        endpoint,
        socket,
        connections,
        shards,
        verifier,
        metrics,
    );
    let task = tokio::spawn(signalling.run(ev_rx, pin_rx, stream_rx, shutdown_rx));
    tracing::info!(shards = shard_count, "sotto ready");
    Ok(ServerHandle {
        sip_addr,
        tls_addr,
        tcp_addr,
        stream_tasks,
        metrics_addr,
        shutdown,
        task,
        metrics_task,
    })
}
