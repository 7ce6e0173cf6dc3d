//! The stream edge: SIP over TCP and TLS connections.
//!
//! One task per connection reads into a bounded buffer, frames messages with the cheap
//! [`framing::check`](crate::sip::framing::check) (an incomplete message means "read
//! more"), hands each complete one to signalling, and writes what signalling sends
//! back on the same connection. Bounds: connections in total and per source address;
//! a TLS handshake deadline; a connection must complete a message within
//! `message_timeout` of opening, and any partial message within `message_timeout` of its
//! first byte (slow senders are cut off); the buffer never exceeds the message size cap.

use crate::sip::framing::{check, Frame};
use crate::sip::transport::{ConnectionId, Flow, Transport};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// Limits of the stream edge.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Connections open at once, all sources together.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_per_source: usize,
    /// Time to complete the first message, and any partial message.
    pub message_timeout: Duration,
    /// Largest message.
    pub max_message: usize,
}

/// What the stream edge tells signalling.
#[derive(Debug)]
pub enum StreamEvent {
    /// A complete SIP message.
    Message {
        /// Where it came from.
        flow: Flow,
        /// The message.
        data: Bytes,
    },
    /// The connection is gone; in-dialog requests can no longer use it.
    Closed(ConnectionId),
}

/// Messages queued per connection before sends are dropped (a peer that does not read).
const SEND_QUEUE: usize = 64;

/// Open connections and their send queues; shared by the listeners and signalling.
#[derive(Default)]
pub struct Connections {
    senders: Mutex<HashMap<ConnectionId, mpsc::Sender<Bytes>>>,
    per_source: Mutex<HashMap<IpAddr, usize>>,
    next_id: AtomicU64,
}

impl Connections {
    /// Queues `bytes` on a connection; false when it is gone or not reading.
    pub fn send(&self, connection: ConnectionId, bytes: Bytes) -> bool {
        let sender = match self.senders.lock() {
            Ok(map) => map.get(&connection).cloned(),
            Err(_) => None,
        };
        sender.is_some_and(|s| s.try_send(bytes).is_ok())
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.senders.lock().map_or(0, |m| m.len())
    }

    /// Admits a new connection from `ip` within the limits; None when over a cap.
    fn admit(
        &self,
        ip: IpAddr,
        limits: &StreamLimits,
    ) -> Option<(ConnectionId, mpsc::Receiver<Bytes>)> {
        let mut senders = self.senders.lock().ok()?;
        let mut per_source = self.per_source.lock().ok()?;
        if senders.len() >= limits.max_connections {
            return None;
        }
        let n = per_source.entry(ip).or_insert(0);
        if *n >= limits.max_per_source {
            return None;
        }
        *n += 1;
        let id = ConnectionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        senders.insert(id, tx);
        Some((id, rx))
    }

    fn release(&self, id: ConnectionId, ip: IpAddr) {
        if let Ok(mut senders) = self.senders.lock() {
            senders.remove(&id);
        }
        if let Ok(mut per_source) = self.per_source.lock() {
            if let Some(n) = per_source.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_source.remove(&ip);
                }
            }
        }
    }
}

/// Accepts connections on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    transport: Transport,
    tls: Option<TlsAcceptor>,
    limits: StreamLimits,
    connections: Arc<Connections>,
    events: mpsc::Sender<StreamEvent>,
) {
    loop {
        let Ok((stream, remote)) = listener.accept().await else {
            // Out of descriptors or a transient error: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some((id, outgoing)) = connections.admit(remote.ip(), &limits) else {
            // Over a cap: close at once, before any TLS work.
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connections = connections.clone();
        let events = events.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let flow = Flow::stream(transport, remote, id);
            match tls {
                Some(acceptor) => {
                    // The handshake counts against the first-message deadline: a peer
                    // that connects and says nothing is cut off just the same.
                    let handshake = acceptor.accept(stream);
                    if let Ok(Ok(s)) = tokio::time::timeout(limits.message_timeout, handshake).await
                    {
                        run(s, flow, limits, outgoing, &events).await;
                    }
                }
                None => run(stream, flow, limits, outgoing, &events).await,
            }
            connections.release(id, remote.ip());
            let _ = events.send(StreamEvent::Closed(id)).await;
        });
    }
}

/// Reads, frames and forwards messages; writes queued sends; enforces the deadlines.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    flow: Flow,
    limits: StreamLimits,
    mut outgoing: mpsc::Receiver<Bytes>,
    events: &mpsc::Sender<StreamEvent>,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(4096);
    let opened = Instant::now();
    let mut completed_any = false;
    let mut partial_since: Option<Instant> = None;
    loop {
        let deadline = match (completed_any, partial_since) {
            (false, _) => Some(opened + limits.message_timeout),
            (true, Some(t)) => Some(t + limits.message_timeout),
            // An established connection may sit idle for the length of a call.
            (true, None) => None,
        };
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = reader.read_buf(&mut buf) => {
                match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                loop {
                    match check(&buf, limits.max_message) {
                        Ok(Frame::Message(len)) => {
                            let data = buf.split_to(len).freeze();
                            completed_any = true;
                            if events.send(StreamEvent::Message { flow, data }).await.is_err() {
                                return;
                            }
                        }
                        Ok(Frame::KeepAlive { len, ping }) => {
                            buf.advance(len);
                            // RFC 5626 §3.5.1: a double-CRLF ping gets a single-CRLF pong.
                            if ping && writer.write_all(b"\r\n").await.is_err() {
                                return;
                            }
                        }
                        Ok(Frame::Incomplete) => break,
                        Err(_) => return,
                    }
                }
                partial_since = match (buf.is_empty(), partial_since) {
                    (true, _) => None,
                    (false, Some(t)) => Some(t),
                    (false, None) => Some(Instant::now()),
                };
                if buf.len() >= limits.max_message {
                    return;
                }
            }
            msg = outgoing.recv() => {
                let Some(bytes) = msg else { return };
                if writer.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            _ = sleep => return,
        }
    }
}

/// Binds nothing: accepts already-bound std listeners (bound before the sandbox).
pub fn listener_from_std(l: std::net::TcpListener) -> std::io::Result<TcpListener> {
    l.set_nonblocking(true)?;
    TcpListener::from_std(l)
}
