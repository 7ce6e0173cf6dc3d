//! A member's SIP socket: UDP, TCP or TLS from a chosen loopback source address.
//!
//! An I/O edge of the load generator. Streams are framed with the bridge's own framer
//! ([`crate::sip::framing`]). TLS accepts **any** server certificate: the bridge's
//! default certificate is self-signed and made at every start, and this is a loopback
//! test tool that checks capacity, not the PKI (signatures in the handshake are still
//! verified).

use super::sip::SipTransport;
use crate::sip::framing::{check, Frame};
use bytes::Bytes;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

/// Largest SIP message we read from a stream (the bridge's are a few hundred bytes).
const MAX_MESSAGE: usize = 65_536;

/// Largest SIP datagram we read (the bridge's own limit for what it accepts).
const MAX_DATAGRAM: usize = 16 * 1024;

/// A member's SIP transport.
pub(super) enum SipSocket {
    /// One UDP socket; everything goes to the target.
    Udp {
        /// The socket, bound to the member's source address.
        socket: UdpSocket,
        /// The bridge.
        target: SocketAddr,
        /// Reused for every datagram (`recv` runs once per select round).
        buffer: Box<[u8]>,
    },
    /// A TCP or TLS connection and what has been read but not yet framed.
    Stream {
        /// The connection.
        stream: Stream,
        /// Our end.
        local: SocketAddr,
        /// The bridge's end.
        remote: SocketAddr,
        /// Bytes read, not yet a whole message.
        buffer: Vec<u8>,
    },
}

/// TCP or TLS.
pub(super) enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP (boxed: the TLS state is a kilobyte).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl SipSocket {
    /// Opens a socket from `source` (port chosen by the OS) to `target`.
    pub(super) async fn open(
        transport: SipTransport,
        source: IpAddr,
        target: SocketAddr,
        tls: Option<&TlsConnector>,
    ) -> io::Result<SipSocket> {
        match transport {
            SipTransport::Udp => {
                let socket = UdpSocket::bind(SocketAddr::new(source, 0)).await?;
                Ok(SipSocket::Udp {
                    socket,
                    target,
                    buffer: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
                })
            }
            SipTransport::Tcp | SipTransport::Tls => {
                let socket = if target.is_ipv6() {
                    TcpSocket::new_v6()?
                } else {
                    TcpSocket::new_v4()?
                };
                socket.bind(SocketAddr::new(source, 0))?;
                let tcp = socket.connect(target).await?;
                tcp.set_nodelay(true)?;
                let local = tcp.local_addr()?;
                let stream = match (transport, tls) {
                    (SipTransport::Tls, Some(connector)) => {
                        let name = rustls_pki_types::ServerName::IpAddress(target.ip().into());
                        Stream::Tls(Box::new(connector.connect(name, tcp).await?))
                    }
                    (SipTransport::Tls, None) => {
                        return Err(io::Error::other("TLS without a client configuration"))
                    }
                    _ => Stream::Tcp(tcp),
                };
                Ok(SipSocket::Stream {
                    stream,
                    local,
                    remote: target,
                    buffer: Vec::new(),
                })
            }
        }
    }

    /// Our address (what Via and Contact name).
    pub(super) fn local(&self) -> io::Result<SocketAddr> {
        match self {
            SipSocket::Udp { socket, .. } => socket.local_addr(),
            SipSocket::Stream { local, .. } => Ok(*local),
        }
    }

    /// Sends one message to the bridge.
    pub(super) async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            SipSocket::Udp { socket, target, .. } => {
                socket.send_to(bytes, *target).await.map(|_| ())
            }
            SipSocket::Stream { stream, .. } => match stream {
                Stream::Tcp(s) => s.write_all(bytes).await,
                Stream::Tls(s) => {
                    s.write_all(bytes).await?;
                    s.flush().await
                }
            },
        }
    }

    /// Waits for one message from the bridge; returns it and its source. Cancel-safe:
    /// bytes read from a stream stay in the buffer until they make a whole message.
    pub(super) async fn recv(&mut self) -> io::Result<(Bytes, SocketAddr)> {
        match self {
            SipSocket::Udp {
                socket,
                target,
                buffer,
            } => loop {
                let (n, from) = socket.recv_from(buffer).await?;
                // Only the bridge talks to us; anything else is dropped.
                if from.ip() == target.ip() {
                    return Ok((Bytes::copy_from_slice(&buffer[..n]), from));
                }
            },
            SipSocket::Stream {
                stream,
                remote,
                buffer,
                ..
            } => {
                let mut chunk = [0u8; 4096];
                loop {
                    match check(buffer, MAX_MESSAGE) {
                        Ok(Frame::Message(len)) => {
                            let message: Vec<u8> = buffer.drain(..len).collect();
                            return Ok((Bytes::from(message), *remote));
                        }
                        Ok(Frame::KeepAlive { len, .. }) => {
                            buffer.drain(..len);
                            continue;
                        }
                        Ok(Frame::Incomplete) => {}
                        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                    }
                    let n = match stream {
                        Stream::Tcp(s) => s.read(&mut chunk).await?,
                        Stream::Tls(s) => s.read(&mut chunk).await?,
                    };
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
}

/// A TLS client that accepts any certificate (see the module docs).
pub(super) fn tls_connector() -> Result<TlsConnector, rustls::Error> {
    Ok(TlsConnector::from(Arc::new(loopback_tls_config()?)))
}

/// A TLS client configuration that accepts any server certificate (the bridge's default
/// one is self-signed) but still checks the handshake signatures: for loopback tests only.
pub fn loopback_tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
    )
}

/// Accepts any server certificate; handshake signatures are still checked.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
