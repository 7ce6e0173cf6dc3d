//! Wiring: binds the sockets, starts the shards and the signalling task.

use crate::conference::ConferenceSettings;
use crate::config::Config;
use crate::io::media::ShardHandle;
use crate::io::signalling::{channels, Signalling};
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
    /// A mixer thread could not be started.
    #[error("cannot start a mixer thread: {0}")]
    Thread(std::io::Error),
}

/// A running bridge.
pub struct ServerHandle {
    sip_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    /// The address the SIP UDP socket is bound to.
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    /// Hangs up every call, stops the shards and waits for the end.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Starts the bridge on the current tokio runtime.
pub async fn start(config: Config, prompts: Prompts) -> Result<ServerHandle, StartError> {
    let config = Arc::new(config);
    let addr = config.sip.udp[0];
    let socket = UdpSocket::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let sip_addr = socket
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let local = if sip_addr.ip().is_unspecified() {
        SocketAddr::new(config.media.public_address, sip_addr.port())
    } else {
        sip_addr
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
            ShardHandle::spawn(i, settings, prompts.clone(), ev_tx.clone())
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
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let signalling = Signalling::new(config.clone(), endpoint, Arc::new(socket), shards, pin_tx);
    let task = tokio::spawn(signalling.run(ev_rx, pin_rx, shutdown_rx));
    tracing::info!(shards = shard_count, "sotto ready");
    Ok(ServerHandle {
        sip_addr,
        shutdown,
        task,
    })
}
