//! The test phone's SIP transport: UDP, TCP or TLS, behind one small interface.
//!
//! Streams run on a thread that owns the connection: it reads (framing with the
//! bridge's own framer, which is what a peer does too) and writes what the phone
//! queues. TLS accepts any server certificate: the bridge's is self-signed, and the
//! tests check the transport, not the PKI.

use sotto::sip::framing::{check, Frame};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_rustls::rustls;

/// How the phone talks SIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// Datagrams.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

/// A SIP transport for the test phone.
pub enum SipLink {
    /// UDP socket.
    Udp(UdpSocket),
    /// A stream, driven by a thread.
    Stream {
        /// Via transport token.
        kind: LinkKind,
        /// Our end's address.
        local: SocketAddr,
        /// The bridge's end.
        remote: SocketAddr,
        /// Messages to write.
        out: Sender<Vec<u8>>,
        /// Messages read.
        inbox: Receiver<Vec<u8>>,
    },
}

impl SipLink {
    /// Opens a link from `ip`; for streams, connects to `remote`.
    pub fn open(kind: LinkKind, ip: &str, remote: SocketAddr) -> SipLink {
        match kind {
            LinkKind::Udp => {
                let s = UdpSocket::bind((ip, 0)).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                SipLink::Udp(s)
            }
            LinkKind::Tcp | LinkKind::Tls => {
                let socket = connect(remote);
                socket
                    .set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                socket.set_nodelay(true).unwrap();
                let local = socket.local_addr().unwrap();
                let stream: Box<dyn ReadWrite> = if kind == LinkKind::Tls {
                    Box::new(tls_client(socket))
                } else {
                    Box::new(socket)
                };
                let (out_tx, out_rx) = channel::<Vec<u8>>();
                let (in_tx, in_rx) = channel::<Vec<u8>>();
                std::thread::spawn(move || stream_loop(stream, out_rx, in_tx));
                SipLink::Stream {
                    kind,
                    local,
                    remote,
                    out: out_tx,
                    inbox: in_rx,
                }
            }
        }
    }

    /// Via transport token.
    pub fn via(&self) -> &'static str {
        match self {
            SipLink::Udp(_) => "UDP",
            SipLink::Stream {
                kind: LinkKind::Tls,
                ..
            } => "TLS",
            SipLink::Stream { .. } => "TCP",
        }
    }

    /// Our address.
    pub fn local(&self) -> SocketAddr {
        match self {
            SipLink::Udp(s) => s.local_addr().unwrap(),
            SipLink::Stream { local, .. } => *local,
        }
    }

    /// Sends one message (streams ignore `dest`: it goes on the connection).
    pub fn send(&self, bytes: &[u8], dest: SocketAddr) {
        match self {
            SipLink::Udp(s) => {
                s.send_to(bytes, dest).unwrap();
            }
            SipLink::Stream { out, .. } => {
                let _ = out.send(bytes.to_vec());
            }
        }
    }

    /// Waits up to 100 ms for one message; returns it and where it came from.
    pub fn recv(&self) -> Option<(Vec<u8>, SocketAddr)> {
        match self {
            SipLink::Udp(s) => {
                let mut buf = [0u8; 8192];
                s.recv_from(&mut buf)
                    .ok()
                    .map(|(n, a)| (buf[..n].to_vec(), a))
            }
            SipLink::Stream { inbox, remote, .. } => inbox
                .recv_timeout(Duration::from_millis(100))
                .ok()
                .map(|m| (m, *remote)),
        }
    }
}

/// Something we can read and write (a TCP or TLS stream).
pub trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// Connects to the bridge (streams always come from 127.0.0.1: std has no
/// bind-before-connect, and only the UDP phones need other source addresses).
fn connect(remote: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect_timeout(&remote, Duration::from_secs(2)) {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("connect to {remote}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn stream_loop(mut stream: Box<dyn ReadWrite>, out: Receiver<Vec<u8>>, inbox: Sender<Vec<u8>>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        loop {
            match out.try_recv() {
                Ok(m) => {
                    if stream.write_all(&m).and_then(|_| stream.flush()).is_err() {
                        return;
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
        loop {
            match check(&buf, 65_536) {
                Ok(Frame::Message(len)) => {
                    let m: Vec<u8> = buf.drain(..len).collect();
                    if inbox.send(m).is_err() {
                        return;
                    }
                }
                Ok(Frame::KeepAlive { len, .. }) => {
                    buf.drain(..len);
                }
                Ok(Frame::Incomplete) => break,
                Err(_) => return,
            }
        }
    }
}

fn tls_client(socket: TcpStream) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let config = sotto::load::loopback_tls_config().unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    rustls::StreamOwned::new(conn, socket)
}
