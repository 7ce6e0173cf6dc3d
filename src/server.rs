//! Wiring: binds the listeners, starts the shards, signalling and the metrics endpoint.
//!
//! Binding ([`bind`]) is separate from starting ([`start`]) so that the binary can bind
//! every listener and read every file first, then lock itself down (the sandbox), and
//! only then start threads: Landlock applies to the thread that installs it and to the
//! threads it creates afterwards.

use crate::conference::ConferenceSettings;
use crate::config::Config;
use crate::io::media::ShardHandle;
use crate::io::signalling::{channels, Signalling};
use crate::metrics::Metrics;
use crate::room::ivr::IvrSettings;
use crate::room::prompts::Prompts;
use crate::sip::endpoint::{Endpoint, EndpointConfig};
use crate::sip::message::Limits;
use crate::sip::transaction::Timers;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
}

/// Listeners bound before the sandbox goes up.
#[derive(Debug)]
pub struct Listeners {
    /// SIP over UDP.
    pub sip_udp: std::net::UdpSocket,
    /// The metrics endpoint, if configured.
    pub metrics: Option<std::net::TcpListener>,
}

/// Binds every listener the config names (no threads are started).
pub fn bind(config: &Config) -> Result<Listeners, StartError> {
    let addr = config.sip.udp[0];
    let sip_udp =
        std::net::UdpSocket::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    sip_udp
        .set_nonblocking(true)
        .map_err(|source| StartError::Bind { addr, source })?;
    let metrics = match config.metrics.listen {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .map_err(|source| StartError::Bind { addr, source })?;
            l.set_nonblocking(true)
                .map_err(|source| StartError::Bind { addr, source })?;
            Some(l)
        }
        None => None,
    };
    Ok(Listeners { sip_udp, metrics })
}

/// A running bridge.
pub struct ServerHandle {
    sip_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    metrics_task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address the SIP UDP socket is bound to.
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
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
    let sip_addr = listeners
        .sip_udp
        .local_addr()
        .map_err(StartError::Register)?;
    let socket = UdpSocket::from_std(listeners.sip_udp).map_err(StartError::Register)?;
    let local = if sip_addr.ip().is_unspecified() {
        SocketAddr::new(config.media.public_address, sip_addr.port())
    } else {
        sip_addr
    };

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
        jitter_delay_samples: config.media.jitter_delay_ms * 8,
        rtp_timeout: Duration::from_secs(config.media.rtp_timeout_secs),
        ivr: IvrSettings {
            max_tries: config.ivr.pin_tries,
            digit_timeout: Duration::from_secs(config.ivr.digit_timeout_secs),
            max_digits: config.ivr.max_pin_digits,
        },
    };
    let shard_count = match config.mixer.shards {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut shards = Vec::with_capacity(shard_count);
    for i in 0..shard_count {
        shards.push(
            ShardHandle::spawn(i, settings, prompts.clone(), ev_tx.clone(), metrics.clone())
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
        local_tcp: None,
        local_tls: None,
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let signalling = Signalling::new(
        config.clone(),
        endpoint,
        Arc::new(socket),
        shards,
        pin_tx,
        metrics,
    );
    let task = tokio::spawn(signalling.run(ev_rx, pin_rx, shutdown_rx));
    tracing::info!(shards = shard_count, "sotto ready");
    Ok(ServerHandle {
        sip_addr,
        metrics_addr,
        shutdown,
        task,
        metrics_task,
    })
}
