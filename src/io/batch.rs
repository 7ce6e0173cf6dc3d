//! Batched datagram I/O on one UDP socket: `recvmmsg` and `sendmmsg`, many packets per
//! system call, for the shard's shared RTP port.
//!
//! On this kind of machine a system call and the socket lookup behind it cost as much
//! as the UDP work itself: receiving and sending each member's packet one call at a
//! time costs ~400 µs per member-second on loopback, in batches ~270
//! (`cargo bench --bench udp_floor`, docs/performance.md). The buffers are allocated
//! once; nothing is allocated per packet.
#![allow(unsafe_code)] // the libc calls; every pointer points into `self` for the call

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams per system call.
pub const BATCH: usize = 64;

/// Largest datagram taken in (RTP over UDP stays far below; a bigger one is cut and
/// fails its parse or authentication).
pub const DATAGRAM: usize = 2048;

/// Buffers and message headers for one batch in each direction.
pub struct DatagramBatch {
    bufs: Box<[[u8; DATAGRAM]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
    /// Datagrams held in the send half: `sends` packets copied into the first buffers.
    sends: usize,
    /// Datagrams the last `recv` gave, with their lengths in `msgs`.
    received: usize,
}

// SAFETY: the raw pointers in the headers point only into the struct's own boxed
// buffers, which move with it; nothing is shared between threads.
unsafe impl Send for DatagramBatch {}

impl Default for DatagramBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl DatagramBatch {
    /// Buffers for [`BATCH`] datagrams.
    pub fn new() -> DatagramBatch {
        // SAFETY: all-zero is a valid sockaddr_storage, iovec and mmsghdr (null
        // pointers, zero lengths); the pointers are set before every call.
        let zero_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let zero_iov: libc::iovec = unsafe { std::mem::zeroed() };
        let zero_msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
        DatagramBatch {
            bufs: vec![[0u8; DATAGRAM]; BATCH].into_boxed_slice(),
            addrs: vec![zero_addr; BATCH].into_boxed_slice(),
            iovs: vec![zero_iov; BATCH].into_boxed_slice(),
            msgs: vec![zero_msg; BATCH].into_boxed_slice(),
            sends: 0,
            received: 0,
        }
    }

    /// Points header `i` at buffer `i` (`len` bytes) and address `i`.
    fn aim(&mut self, i: usize, len: usize) {
        self.iovs[i].iov_base = self.bufs[i].as_mut_ptr().cast();
        self.iovs[i].iov_len = len;
        let hdr = &mut self.msgs[i].msg_hdr;
        hdr.msg_iov = &mut self.iovs[i];
        hdr.msg_iovlen = 1;
        hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
        hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_control = std::ptr::null_mut();
        hdr.msg_controllen = 0;
        hdr.msg_flags = 0;
        self.msgs[i].msg_len = 0;
    }

    /// Reads up to [`BATCH`] waiting datagrams without blocking; returns how many came
    /// (0 when none wait or on an error: a receive error loses nothing already read).
    pub fn recv(&mut self, socket: &UdpSocket) -> usize {
        for i in 0..BATCH {
            self.aim(i, DATAGRAM);
        }
        // SAFETY: `msgs` holds BATCH headers, each pointing at its own buffer and
        // address storage, all alive and exclusively borrowed for the call.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        self.received = usize::try_from(n).unwrap_or(0).min(BATCH);
        self.received
    }

    /// Datagram `i` of the last [`Self::recv`]: its source (if an IP address) and its
    /// bytes, which may be changed in place (SRTP decrypts there).
    pub fn received(&mut self, i: usize) -> Option<(SocketAddr, &mut [u8])> {
        if i >= self.received {
            return None;
        }
        let len = (self.msgs[i].msg_len as usize).min(DATAGRAM);
        let source = from_storage(&self.addrs[i], self.msgs[i].msg_hdr.msg_namelen)?;
        Some((source, &mut self.bufs[i][..len]))
    }

    /// Queues one datagram to `dest`; sends the batch first when it is full.
    pub fn queue(&mut self, socket: &UdpSocket, dest: SocketAddr, bytes: &[u8]) {
        if self.sends == BATCH {
            self.flush(socket);
        }
        let i = self.sends;
        let len = bytes.len().min(DATAGRAM);
        self.bufs[i][..len].copy_from_slice(&bytes[..len]);
        self.aim(i, len);
        self.msgs[i].msg_hdr.msg_namelen = to_storage(dest, &mut self.addrs[i]);
        self.sends += 1;
    }

    /// Sends what is queued. A datagram the kernel refuses (full buffer, unreachable
    /// peer) is skipped: it loses one frame, nothing more.
    pub fn flush(&mut self, socket: &UdpSocket) {
        let mut done = 0;
        while done < self.sends {
            // SAFETY: headers `done..sends` were aimed by `queue` at their own buffers
            // and addresses, alive and exclusively borrowed for the call.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.msgs.as_mut_ptr().add(done),
                    (self.sends - done) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            match usize::try_from(n) {
                Ok(sent) if sent > 0 => done += sent,
                // An error stops at the datagram it concerns: drop that one, go on.
                _ => done += 1,
            }
        }
        // The payloads were audio: nothing of it stays in the send buffers.
        for (buf, iov) in self.bufs.iter_mut().zip(self.iovs.iter()).take(self.sends) {
            buf[..iov.iov_len.min(DATAGRAM)].fill(0);
        }
        self.sends = 0;
    }

    /// Wipes the received payloads (decrypted audio) once they were handled.
    pub fn wipe_received(&mut self) {
        for i in 0..self.received {
            let len = (self.msgs[i].msg_len as usize).min(DATAGRAM);
            self.bufs[i][..len].fill(0);
        }
        self.received = 0;
    }
}

/// Asks for `bytes` of kernel buffer each way: beyond `net.core.rmem_max` only as root
/// (`SO_RCVBUFFORCE`); otherwise as much as the limit allows. Best effort: a smaller
/// buffer drops datagrams under a burst, it does not stop the bridge.
pub fn enlarge_buffers(socket: &UdpSocket, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for (forced, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        for option in [forced, plain] {
            // SAFETY: a c_int option value with its size, on our own socket.
            let r = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    option,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r == 0 {
                break;
            }
        }
    }
}

fn to_storage(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe {
                std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin);
            }
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe {
                std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6);
            }
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

fn from_storage(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel wrote a sockaddr_in (family and length checked).
            let sin: &libc::sockaddr_in =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the kernel wrote a sockaddr_in6 (family and length checked).
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // real sockets: real time bounds the waits
mod tests {
    use super::*;

    fn pair(local: &str) -> Option<(UdpSocket, UdpSocket)> {
        let a = UdpSocket::bind(local).ok()?;
        let b = UdpSocket::bind(local).ok()?;
        a.set_nonblocking(true).ok()?;
        b.set_nonblocking(true).ok()?;
        Some((a, b))
    }

    fn round_trip(a: &UdpSocket, b: &UdpSocket) {
        let mut tx = DatagramBatch::new();
        let to = b.local_addr().unwrap();
        // More than one batch, so that a full batch is sent on the way.
        for i in 0..(BATCH + 6) {
            tx.queue(a, to, &[i as u8; 100]);
        }
        tx.flush(a);
        let mut rx = DatagramBatch::new();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < BATCH + 6 && std::time::Instant::now() < deadline {
            let n = rx.recv(b);
            for i in 0..n {
                let (src, bytes) = rx.received(i).unwrap();
                assert_eq!(src, a.local_addr().unwrap());
                assert_eq!(bytes.len(), 100);
                got.push(bytes[0]);
            }
            rx.wipe_received();
        }
        let want: Vec<u8> = (0..(BATCH + 6)).map(|i| i as u8).collect();
        assert_eq!(got, want);
        assert_eq!(rx.recv(b), 0, "nothing more waits");
        assert!(rx.received(0).is_none());
    }

    #[test]
    fn a_batch_goes_out_and_comes_in_with_its_sources_over_ipv4() {
        let (a, b) = pair("127.0.0.1:0").unwrap();
        round_trip(&a, &b);
    }

    #[test]
    fn a_batch_goes_out_and_comes_in_with_its_sources_over_ipv6() {
        let (a, b) = pair("[::1]:0").expect("IPv6 on loopback (::1)");
        round_trip(&a, &b);
    }

    #[test]
    fn an_unreachable_destination_loses_its_datagram_only() {
        let (a, b) = pair("127.0.0.1:0").unwrap();
        let mut tx = DatagramBatch::new();
        tx.queue(&a, "[::1]:9".parse().unwrap(), b"wrong family");
        tx.queue(&a, b.local_addr().unwrap(), b"fine");
        tx.flush(&a);
        let mut rx = DatagramBatch::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while rx.recv(&b) == 0 && std::time::Instant::now() < deadline {}
        assert_eq!(rx.received(0).unwrap().1, b"fine");
    }
}
