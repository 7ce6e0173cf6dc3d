//! ZRTP packet framing and the codecs of every message (RFC 6189 §5).
//!
//! A ZRTP packet shares the RTP port. It is a 12-byte header (first byte `0x10`,
//! sequence number, the magic cookie `"ZRTP"`, the sender's SSRC), one message, and a
//! CRC-32C over everything before it. Each message starts with the preamble `0x505a`,
//! its length in 32-bit words, and an eight-character type block.
//!
//! [`parse_packet`] checks all of that strictly and returns the typed [`Message`]
//! together with the raw message bytes, which the session needs verbatim (hashes and
//! MACs are computed over them). [`Message::encode`] writes a message and
//! [`encode_packet`] frames it. Nothing here panics on any input: every length is
//! checked before it is used, and a bad packet is a [`PacketError`].

use super::algorithm::{AlgorithmId, MULTISTREAM, PRESHARED};
use super::Zid;

/// The magic cookie at offset 4 of every ZRTP packet: ASCII "ZRTP" (RFC 6189 §5).
pub const MAGIC_COOKIE: [u8; 4] = *b"ZRTP";

/// The message preamble `0x505a` ("PZ") that starts every message (RFC 6189 §5.1.1).
const PREAMBLE: [u8; 2] = [0x50, 0x5a];

/// Packet header: first word, magic cookie, source identifier (RFC 6189 §5).
const HEADER_LEN: usize = 12;

/// The CRC-32C at the end of the packet (RFC 6189 §5).
const CRC_LEN: usize = 4;

/// Preamble, length and type block: the shortest message (HelloACK and friends).
const MESSAGE_HEADER_LEN: usize = 12;

/// Longest packet we accept: a DH3k DHPart message is 117 words (468 bytes) plus 16
/// bytes of framing; a Hello lists at most 35 algorithms (228 bytes). Anything past an
/// Ethernet MTU is not ZRTP as we speak it, and refusing it early bounds the work a
/// junk packet can cause.
pub const MAX_PACKET_LEN: usize = 1500;

/// Most algorithms per category in a Hello (RFC 6189 §5.2: counts are 0 to 7).
const MAX_ALGORITHMS_PER_KIND: usize = 7;

/// The MAC of Hello, Commit, DHPart1/2 and GoClear, and the confirm_mac: HMAC-SHA-256
/// truncated to 64 bits (RFC 6189 §5.2, §5.7).
pub const MAC_LEN: usize = 8;

/// The ZRTP protocol version we speak and write in Hello and Ping (RFC 6189 §4.1.1).
pub const VERSION: [u8; 4] = *b"1.10";

/// CRC-32C (Castagnoli, the iSCSI/SCTP polynomial) as RFC 6189 §5 asks.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// CRC-32C of `bytes` (RFC 3309 parameters: reflected, initial and final XOR all ones).
pub fn crc32c(bytes: &[u8]) -> u32 {
    CRC32C.checksum(bytes)
}

/// Whether a datagram on the media port is ZRTP rather than RTP/RTCP (RFC 6189 §5):
/// its first four bits are `0001` (RTP and RTCP start with version bits `10`) and the
/// magic cookie sits where RTP carries its timestamp. Cheap; [`parse_packet`] then
/// checks everything else.
pub fn is_zrtp(packet: &[u8]) -> bool {
    packet.len() >= 8 && packet[0] >> 4 == 0x1 && packet[4..8] == MAGIC_COOKIE
}

/// Why a datagram is not a well-formed ZRTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than header, message header and CRC, or not a whole number of words.
    #[error("ZRTP packet of {0} bytes is too short or not word-aligned")]
    BadSize(usize),
    /// Longer than [`MAX_PACKET_LEN`].
    #[error("ZRTP packet of {0} bytes is too long")]
    TooLong(usize),
    /// The first byte is not `0x10` or the magic cookie is missing (fragmented ZRTP,
    /// `0x11`, is an extension we do not speak).
    #[error("not a ZRTP packet")]
    NotZrtp,
    /// The CRC-32C does not match: corrupted on the way, or not ZRTP at all.
    #[error("ZRTP CRC mismatch")]
    BadCrc,
    /// The message does not start with the preamble 0x505a.
    #[error("ZRTP message preamble missing")]
    BadPreamble,
    /// The message's length field does not match the bytes that carry it.
    #[error("ZRTP message length field says {declared} words, packet carries {actual}")]
    LengthMismatch {
        /// Words the length field declares.
        declared: usize,
        /// Words present between header and CRC.
        actual: usize,
    },
    /// A type block we do not know.
    #[error("unknown ZRTP message type")]
    UnknownType,
    /// A known message whose length is wrong for its type (or, for Hello, for its
    /// algorithm counts).
    #[error("ZRTP {0} message has the wrong length")]
    BadLength(&'static str),
    /// A Hello lists more than seven algorithms of one kind (RFC 6189 §5.2).
    #[error("ZRTP Hello lists too many algorithms")]
    TooManyAlgorithms,
    /// A decrypted Confirm body whose signature length disagrees with its size.
    #[error("ZRTP Confirm body has the wrong length")]
    BadConfirmBody,
}

/// The eight-character type block of each message (RFC 6189 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// `Hello   ` (§5.2).
    Hello,
    /// `HelloACK` (§5.3).
    HelloAck,
    /// `Commit  ` (§5.4).
    Commit,
    /// `DHPart1 ` (§5.5).
    DhPart1,
    /// `DHPart2 ` (§5.6).
    DhPart2,
    /// `Confirm1` (§5.7).
    Confirm1,
    /// `Confirm2` (§5.7).
    Confirm2,
    /// `Conf2ACK` (§5.8).
    Conf2Ack,
    /// `Error   ` (§5.9).
    Error,
    /// `ErrorACK` (§5.10).
    ErrorAck,
    /// `GoClear ` (§5.11).
    GoClear,
    /// `ClearACK` (§5.12).
    ClearAck,
    /// `SASrelay` (§5.13).
    SasRelay,
    /// `RelayACK` (§5.14).
    RelayAck,
    /// `Ping    ` (§5.15).
    Ping,
    /// `PingACK ` (§5.16).
    PingAck,
}

impl MessageType {
    /// Every message type.
    pub const ALL: [MessageType; 16] = [
        MessageType::Hello,
        MessageType::HelloAck,
        MessageType::Commit,
        MessageType::DhPart1,
        MessageType::DhPart2,
        MessageType::Confirm1,
        MessageType::Confirm2,
        MessageType::Conf2Ack,
        MessageType::Error,
        MessageType::ErrorAck,
        MessageType::GoClear,
        MessageType::ClearAck,
        MessageType::SasRelay,
        MessageType::RelayAck,
        MessageType::Ping,
        MessageType::PingAck,
    ];

    /// The type block on the wire.
    pub fn block(self) -> &'static [u8; 8] {
        match self {
            MessageType::Hello => b"Hello   ",
            MessageType::HelloAck => b"HelloACK",
            MessageType::Commit => b"Commit  ",
            MessageType::DhPart1 => b"DHPart1 ",
            MessageType::DhPart2 => b"DHPart2 ",
            MessageType::Confirm1 => b"Confirm1",
            MessageType::Confirm2 => b"Confirm2",
            MessageType::Conf2Ack => b"Conf2ACK",
            MessageType::Error => b"Error   ",
            MessageType::ErrorAck => b"ErrorACK",
            MessageType::GoClear => b"GoClear ",
            MessageType::ClearAck => b"ClearACK",
            MessageType::SasRelay => b"SASrelay",
            MessageType::RelayAck => b"RelayACK",
            MessageType::Ping => b"Ping    ",
            MessageType::PingAck => b"PingACK ",
        }
    }

    /// The type a block names, if any.
    pub fn from_block(block: &[u8]) -> Option<MessageType> {
        MessageType::ALL
            .into_iter()
            .find(|t| t.block().as_slice() == block)
    }

    /// A short name for errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            MessageType::Hello => "Hello",
            MessageType::HelloAck => "HelloACK",
            MessageType::Commit => "Commit",
            MessageType::DhPart1 => "DHPart1",
            MessageType::DhPart2 => "DHPart2",
            MessageType::Confirm1 => "Confirm1",
            MessageType::Confirm2 => "Confirm2",
            MessageType::Conf2Ack => "Conf2ACK",
            MessageType::Error => "Error",
            MessageType::ErrorAck => "ErrorACK",
            MessageType::GoClear => "GoClear",
            MessageType::ClearAck => "ClearACK",
            MessageType::SasRelay => "SASrelay",
            MessageType::RelayAck => "RelayACK",
            MessageType::Ping => "Ping",
            MessageType::PingAck => "PingACK",
        }
    }
}

/// Hello (RFC 6189 §5.2): version, identity, H3 and the algorithms offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version, e.g. `"1.10"`.
    pub version: [u8; 4],
    /// Free-form client identifier (16 octets, space padded).
    pub client_id: [u8; 16],
    /// H3, the top of the sender's hash chain.
    pub h3: [u8; 32],
    /// The sender's ZID.
    pub zid: Zid,
    /// S: the sender can sign the SAS.
    pub signature_capable: bool,
    /// M: the sender is a trusted MiTM (a PBX).
    pub mitm: bool,
    /// P: the sender is passive (will not send Commit).
    pub passive: bool,
    /// Hash types offered, in preference order.
    pub hashes: Vec<AlgorithmId>,
    /// Ciphers offered.
    pub ciphers: Vec<AlgorithmId>,
    /// SRTP authentication tags offered.
    pub auth_tags: Vec<AlgorithmId>,
    /// Key agreements offered.
    pub key_agreements: Vec<AlgorithmId>,
    /// SAS types offered.
    pub sas_types: Vec<AlgorithmId>,
    /// HMAC keyed with H2, truncated to 64 bits.
    pub mac: [u8; MAC_LEN],
}

/// What a Commit commits to (RFC 6189 §5.4): DH mode carries hvi, the other modes a
/// nonce. Only [`CommitMode::Dh`] is supported by the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitMode {
    /// DH mode: hvi = hash(initiator's DHPart2 || responder's Hello).
    Dh {
        /// The hash commitment.
        hvi: [u8; 32],
    },
    /// Multistream mode (key agreement `Mult`).
    Multistream {
        /// The initiator's nonce.
        nonce: [u8; 16],
    },
    /// Preshared mode (key agreement `Prsh`).
    Preshared {
        /// The initiator's nonce.
        nonce: [u8; 16],
        /// Key identifier of the preshared secret.
        key_id: [u8; 8],
    },
}

/// Commit (RFC 6189 §5.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// H2 of the initiator's hash chain.
    pub h2: [u8; 32],
    /// The initiator's ZID.
    pub zid: Zid,
    /// Chosen hash type.
    pub hash: AlgorithmId,
    /// Chosen cipher.
    pub cipher: AlgorithmId,
    /// Chosen SRTP authentication tag.
    pub auth_tag: AlgorithmId,
    /// Chosen key agreement (or `Mult`/`Prsh`).
    pub key_agreement: AlgorithmId,
    /// Chosen SAS type.
    pub sas_type: AlgorithmId,
    /// The mode and its commitment.
    pub mode: CommitMode,
    /// HMAC keyed with H1, truncated to 64 bits.
    pub mac: [u8; MAC_LEN],
}

/// DHPart1 or DHPart2 (RFC 6189 §5.5, §5.6): H1, the shared-secret IDs and the public
/// value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhPart {
    /// H1 of the sender's hash chain.
    pub h1: [u8; 32],
    /// rs1IDr (DHPart1) or rs1IDi (DHPart2).
    pub rs1_id: [u8; 8],
    /// rs2IDr or rs2IDi.
    pub rs2_id: [u8; 8],
    /// auxsecretIDr or auxsecretIDi.
    pub aux_secret_id: [u8; 8],
    /// pbxsecretIDr or pbxsecretIDi.
    pub pbx_secret_id: [u8; 8],
    /// The public value pvr or pvi, big-endian for DH3k, RFC 7748 encoding for X25519.
    pub public_value: Vec<u8>,
    /// HMAC keyed with H0, truncated to 64 bits.
    pub mac: [u8; MAC_LEN],
}

/// Confirm1 or Confirm2 as carried (RFC 6189 §5.7): the body is encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    /// HMAC of the encrypted body with mackeyi/mackeyr, truncated to 64 bits.
    pub confirm_mac: [u8; MAC_LEN],
    /// The AES-CFB initialisation vector.
    pub iv: [u8; 16],
    /// The encrypted [`ConfirmBody`].
    pub encrypted: Vec<u8>,
}

/// The plaintext of a Confirm message (RFC 6189 §5.7).
#[derive(Clone, PartialEq, Eq)]
pub struct ConfirmBody {
    /// H0, the bottom of the sender's hash chain.
    pub h0: [u8; 32],
    /// E: PBX enrollment.
    pub pbx_enrollment: bool,
    /// V: the SAS was verified in an earlier call.
    pub sas_verified: bool,
    /// A: the sender allows GoClear.
    pub allow_clear: bool,
    /// D: the sender discloses keys (e.g. to law enforcement).
    pub disclosure: bool,
    /// Cache expiration interval in seconds; 0xFFFFFFFF is "forever", 0 "do not cache".
    pub cache_expiry: u32,
    /// Signature type block and signature, if the sender signed the SAS (ignored).
    pub signature: Vec<u8>,
}

impl std::fmt::Debug for ConfirmBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // H0 authenticates the sender's earlier messages; keep it out of logs.
        f.debug_struct("ConfirmBody")
            .field("pbx_enrollment", &self.pbx_enrollment)
            .field("sas_verified", &self.sas_verified)
            .field("allow_clear", &self.allow_clear)
            .field("disclosure", &self.disclosure)
            .field("cache_expiry", &self.cache_expiry)
            .field("signature_len", &self.signature.len())
            .finish_non_exhaustive()
    }
}

impl Drop for ConfirmBody {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.h0);
    }
}

/// Fixed part of a Confirm body: H0, the flags word and the cache expiration word.
const CONFIRM_BODY_LEN: usize = 32 + 4 + 4;

/// Longest signature a Confirm body may carry: the 9-bit sig len counts words
/// (RFC 6189 §5.7).
const MAX_SIGNATURE_WORDS: usize = 511;

impl ConfirmBody {
    /// The plaintext bytes to encrypt.
    pub fn encode(&self) -> Vec<u8> {
        // Signatures are never sent by us; a caller-built one is cut to whole words.
        let sig_words = (self.signature.len() / 4).min(MAX_SIGNATURE_WORDS);
        let mut out = Vec::with_capacity(CONFIRM_BODY_LEN + sig_words * 4);
        out.extend_from_slice(&self.h0);
        let flags = u8::from(self.pbx_enrollment) << 3
            | u8::from(self.sas_verified) << 2
            | u8::from(self.allow_clear) << 1
            | u8::from(self.disclosure);
        // 15 unused bits, the 9-bit signature length, 4 unused bits, E V A D.
        let word = (sig_words as u32) << 8 | u32::from(flags);
        out.extend_from_slice(&word.to_be_bytes());
        out.extend_from_slice(&self.cache_expiry.to_be_bytes());
        out.extend_from_slice(&self.signature[..sig_words * 4]);
        out
    }

    /// Reads a decrypted body.
    pub fn decode(bytes: &[u8]) -> Result<ConfirmBody, PacketError> {
        if bytes.len() < CONFIRM_BODY_LEN || !bytes.len().is_multiple_of(4) {
            return Err(PacketError::BadConfirmBody);
        }
        let mut h0 = [0u8; 32];
        h0.copy_from_slice(&bytes[..32]);
        let word = u32::from_be_bytes([bytes[32], bytes[33], bytes[34], bytes[35]]);
        let sig_words = ((word >> 8) & 0x1ff) as usize;
        if bytes.len() != CONFIRM_BODY_LEN + sig_words * 4 {
            zeroize::Zeroize::zeroize(&mut h0);
            return Err(PacketError::BadConfirmBody);
        }
        let flags = (word & 0x0f) as u8;
        Ok(ConfirmBody {
            h0,
            pbx_enrollment: flags & 0x08 != 0,
            sas_verified: flags & 0x04 != 0,
            allow_clear: flags & 0x02 != 0,
            disclosure: flags & 0x01 != 0,
            cache_expiry: u32::from_be_bytes([bytes[36], bytes[37], bytes[38], bytes[39]]),
            signature: bytes[CONFIRM_BODY_LEN..].to_vec(),
        })
    }
}

/// Ping (RFC 6189 §5.15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    /// Protocol version.
    pub version: [u8; 4],
    /// The sender's endpoint hash.
    pub endpoint_hash: [u8; 8],
}

/// PingACK (RFC 6189 §5.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingAck {
    /// Protocol version.
    pub version: [u8; 4],
    /// The endpoint hash of the PingACK's sender.
    pub sender_endpoint_hash: [u8; 8],
    /// The endpoint hash the Ping carried.
    pub received_endpoint_hash: [u8; 8],
    /// The source identifier (SSRC) of the Ping packet.
    pub ssrc: u32,
}

/// One ZRTP message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Hello.
    Hello(Hello),
    /// HelloACK.
    HelloAck,
    /// Commit.
    Commit(Commit),
    /// DHPart1 (from the responder).
    DhPart1(DhPart),
    /// DHPart2 (from the initiator).
    DhPart2(DhPart),
    /// Confirm1 (from the responder).
    Confirm1(Confirm),
    /// Confirm2 (from the initiator).
    Confirm2(Confirm),
    /// Conf2ACK.
    Conf2Ack,
    /// Error with its code (RFC 6189 §5.9).
    Error {
        /// The error code.
        code: u32,
    },
    /// ErrorACK.
    ErrorAck,
    /// GoClear with its clear_mac (parsed so that it can be refused).
    GoClear {
        /// HMAC of "GoClear " with the sender's mackey, truncated to 64 bits.
        clear_mac: [u8; MAC_LEN],
    },
    /// ClearACK.
    ClearAck,
    /// SASrelay: only its size is checked; the session ignores it (we relay no SAS and
    /// trust no MiTM).
    SasRelay {
        /// Everything after the type block.
        body: Vec<u8>,
    },
    /// RelayACK.
    RelayAck,
    /// Ping.
    Ping(Ping),
    /// PingACK.
    PingAck(PingAck),
}

/// A parsed packet: header fields, the message, and its raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The packet's sequence number.
    pub sequence: u16,
    /// The source identifier (the sender's SSRC).
    pub ssrc: u32,
    /// The message.
    pub message: Message,
    /// The message bytes exactly as received, preamble to last word (no header, no CRC).
    pub raw_message: &'a [u8],
}

/// Checks and parses one ZRTP packet.
pub fn parse_packet(packet: &[u8]) -> Result<Packet<'_>, PacketError> {
    if packet.len() > MAX_PACKET_LEN {
        return Err(PacketError::TooLong(packet.len()));
    }
    if packet.len() < HEADER_LEN + MESSAGE_HEADER_LEN + CRC_LEN || !packet.len().is_multiple_of(4) {
        return Err(PacketError::BadSize(packet.len()));
    }
    // The four bits after 0001 are "not used, set to zero"; 0x11 is the fragmented
    // form of later drafts, which needs a header we do not parse.
    if packet[0] != 0x10 || packet[4..8] != MAGIC_COOKIE {
        return Err(PacketError::NotZrtp);
    }
    let (body, crc) = packet.split_at(packet.len() - CRC_LEN);
    // RFC 6189 §5 takes CRC-32C from RFC 3309, whose CRC goes on the wire least
    // significant byte first; bzrtp and libzrtpcpp do the same (see the captured
    // packets in the tests).
    if crc32c(body).to_le_bytes() != crc {
        return Err(PacketError::BadCrc);
    }
    let sequence = u16::from_be_bytes([packet[2], packet[3]]);
    let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
    let raw_message = &body[HEADER_LEN..];
    let message = Message::parse(raw_message)?;
    Ok(Packet {
        sequence,
        ssrc,
        message,
        raw_message,
    })
}

/// Frames message bytes (from [`Message::encode`]) into a packet with header and CRC.
pub fn encode_packet(sequence: u16, ssrc: u32, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + message.len() + CRC_LEN);
    out.extend_from_slice(&[0x10, 0x00]);
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(message);
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A bounds-checked reader over a message body; every read returns `None` past the end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Some(out)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array::<4>().map(u32::from_be_bytes)
    }

    fn algorithm(&mut self) -> Option<AlgorithmId> {
        self.array::<4>().map(AlgorithmId)
    }

    fn algorithms(&mut self, count: usize) -> Option<Vec<AlgorithmId>> {
        (0..count).map(|_| self.algorithm()).collect()
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

/// Message lengths in words, including the three words of preamble, length and type
/// (RFC 6189 §5.2 to §5.16).
const HELLO_FIXED_WORDS: usize = 22;
const COMMIT_DH_WORDS: usize = 29;
const COMMIT_MULTISTREAM_WORDS: usize = 25;
const COMMIT_PRESHARED_WORDS: usize = 27;
const DHPART_FIXED_WORDS: usize = 21;
const CONFIRM_MIN_WORDS: usize = 19;
const ERROR_WORDS: usize = 4;
const GOCLEAR_WORDS: usize = 5;
const SASRELAY_MIN_WORDS: usize = 19;
const PING_WORDS: usize = 6;
const PINGACK_WORDS: usize = 9;
const ACK_WORDS: usize = 3;

impl Message {
    /// The message's type.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Hello(_) => MessageType::Hello,
            Message::HelloAck => MessageType::HelloAck,
            Message::Commit(_) => MessageType::Commit,
            Message::DhPart1(_) => MessageType::DhPart1,
            Message::DhPart2(_) => MessageType::DhPart2,
            Message::Confirm1(_) => MessageType::Confirm1,
            Message::Confirm2(_) => MessageType::Confirm2,
            Message::Conf2Ack => MessageType::Conf2Ack,
            Message::Error { .. } => MessageType::Error,
            Message::ErrorAck => MessageType::ErrorAck,
            Message::GoClear { .. } => MessageType::GoClear,
            Message::ClearAck => MessageType::ClearAck,
            Message::SasRelay { .. } => MessageType::SasRelay,
            Message::RelayAck => MessageType::RelayAck,
            Message::Ping(_) => MessageType::Ping,
            Message::PingAck(_) => MessageType::PingAck,
        }
    }

    /// Parses message bytes (preamble to last word, no packet header or CRC).
    pub fn parse(bytes: &[u8]) -> Result<Message, PacketError> {
        if bytes.len() < MESSAGE_HEADER_LEN || !bytes.len().is_multiple_of(4) {
            return Err(PacketError::BadSize(bytes.len()));
        }
        if bytes[..2] != PREAMBLE {
            return Err(PacketError::BadPreamble);
        }
        let declared = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        let words = bytes.len() / 4;
        if declared != words {
            return Err(PacketError::LengthMismatch {
                declared,
                actual: words,
            });
        }
        let kind = MessageType::from_block(&bytes[4..12]).ok_or(PacketError::UnknownType)?;
        let mut r = Reader {
            bytes: &bytes[MESSAGE_HEADER_LEN..],
        };
        let bad = || PacketError::BadLength(kind.name());
        let exact = |expected: usize| {
            if words == expected {
                Ok(())
            } else {
                Err(PacketError::BadLength(kind.name()))
            }
        };
        let message = match kind {
            MessageType::Hello => Message::Hello(parse_hello(&mut r, words)?),
            MessageType::HelloAck => {
                exact(ACK_WORDS)?;
                Message::HelloAck
            }
            MessageType::Commit => Message::Commit(parse_commit(&mut r, words)?),
            MessageType::DhPart1 | MessageType::DhPart2 => {
                if words <= DHPART_FIXED_WORDS {
                    return Err(bad());
                }
                let part = DhPart {
                    h1: r.array().ok_or_else(bad)?,
                    rs1_id: r.array().ok_or_else(bad)?,
                    rs2_id: r.array().ok_or_else(bad)?,
                    aux_secret_id: r.array().ok_or_else(bad)?,
                    pbx_secret_id: r.array().ok_or_else(bad)?,
                    public_value: r
                        .take((words - DHPART_FIXED_WORDS) * 4)
                        .ok_or_else(bad)?
                        .to_vec(),
                    mac: r.array().ok_or_else(bad)?,
                };
                if kind == MessageType::DhPart1 {
                    Message::DhPart1(part)
                } else {
                    Message::DhPart2(part)
                }
            }
            MessageType::Confirm1 | MessageType::Confirm2 => {
                if words < CONFIRM_MIN_WORDS {
                    return Err(bad());
                }
                let confirm = Confirm {
                    confirm_mac: r.array().ok_or_else(bad)?,
                    iv: r.array().ok_or_else(bad)?,
                    encrypted: r.rest().to_vec(),
                };
                if kind == MessageType::Confirm1 {
                    Message::Confirm1(confirm)
                } else {
                    Message::Confirm2(confirm)
                }
            }
            MessageType::Conf2Ack => {
                exact(ACK_WORDS)?;
                Message::Conf2Ack
            }
            MessageType::Error => {
                exact(ERROR_WORDS)?;
                Message::Error {
                    code: r.u32().ok_or_else(bad)?,
                }
            }
            MessageType::ErrorAck => {
                exact(ACK_WORDS)?;
                Message::ErrorAck
            }
            MessageType::GoClear => {
                exact(GOCLEAR_WORDS)?;
                Message::GoClear {
                    clear_mac: r.array().ok_or_else(bad)?,
                }
            }
            MessageType::ClearAck => {
                exact(ACK_WORDS)?;
                Message::ClearAck
            }
            MessageType::SasRelay => {
                if words < SASRELAY_MIN_WORDS {
                    return Err(bad());
                }
                Message::SasRelay {
                    body: r.rest().to_vec(),
                }
            }
            MessageType::RelayAck => {
                exact(ACK_WORDS)?;
                Message::RelayAck
            }
            MessageType::Ping => {
                exact(PING_WORDS)?;
                Message::Ping(Ping {
                    version: r.array().ok_or_else(bad)?,
                    endpoint_hash: r.array().ok_or_else(bad)?,
                })
            }
            MessageType::PingAck => {
                exact(PINGACK_WORDS)?;
                Message::PingAck(PingAck {
                    version: r.array().ok_or_else(bad)?,
                    sender_endpoint_hash: r.array().ok_or_else(bad)?,
                    received_endpoint_hash: r.array().ok_or_else(bad)?,
                    ssrc: r.u32().ok_or_else(bad)?,
                })
            }
        };
        // Each arm consumed exactly its declared length; anything left is a bug in the
        // tables above, reported as a length error rather than a panic.
        if !r.rest().is_empty() {
            return Err(bad());
        }
        Ok(message)
    }

    /// Writes the message bytes (preamble to last word). MAC fields are written as
    /// they are; the session computes them over the bytes before them and patches the
    /// last eight bytes (see `kdf::truncated_mac`).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(128);
        match self {
            Message::Hello(h) => {
                body.extend_from_slice(&h.version);
                body.extend_from_slice(&h.client_id);
                body.extend_from_slice(&h.h3);
                body.extend_from_slice(&h.zid.0);
                let lists = [
                    &h.hashes,
                    &h.ciphers,
                    &h.auth_tags,
                    &h.key_agreements,
                    &h.sas_types,
                ];
                // Longer lists than the 4-bit counts allow are cut to the RFC's 7.
                let count = |list: &Vec<AlgorithmId>| list.len().min(MAX_ALGORITHMS_PER_KIND);
                let flags = u32::from(h.signature_capable) << 30
                    | u32::from(h.mitm) << 29
                    | u32::from(h.passive) << 28;
                let counts = lists
                    .iter()
                    .fold(0u32, |acc, list| acc << 4 | count(list) as u32);
                body.extend_from_slice(&(flags | counts).to_be_bytes());
                for list in lists {
                    for id in list.iter().take(MAX_ALGORITHMS_PER_KIND) {
                        body.extend_from_slice(&id.0);
                    }
                }
                body.extend_from_slice(&h.mac);
            }
            Message::Commit(c) => {
                body.extend_from_slice(&c.h2);
                body.extend_from_slice(&c.zid.0);
                for id in [c.hash, c.cipher, c.auth_tag, c.key_agreement, c.sas_type] {
                    body.extend_from_slice(&id.0);
                }
                match &c.mode {
                    CommitMode::Dh { hvi } => body.extend_from_slice(hvi),
                    CommitMode::Multistream { nonce } => body.extend_from_slice(nonce),
                    CommitMode::Preshared { nonce, key_id } => {
                        body.extend_from_slice(nonce);
                        body.extend_from_slice(key_id);
                    }
                }
                body.extend_from_slice(&c.mac);
            }
            Message::DhPart1(p) | Message::DhPart2(p) => {
                body.extend_from_slice(&p.h1);
                body.extend_from_slice(&p.rs1_id);
                body.extend_from_slice(&p.rs2_id);
                body.extend_from_slice(&p.aux_secret_id);
                body.extend_from_slice(&p.pbx_secret_id);
                body.extend_from_slice(&p.public_value);
                body.extend_from_slice(&p.mac);
            }
            Message::Confirm1(c) | Message::Confirm2(c) => {
                body.extend_from_slice(&c.confirm_mac);
                body.extend_from_slice(&c.iv);
                body.extend_from_slice(&c.encrypted);
            }
            Message::Error { code } => body.extend_from_slice(&code.to_be_bytes()),
            Message::GoClear { clear_mac } => body.extend_from_slice(clear_mac),
            Message::SasRelay { body: relay } => body.extend_from_slice(relay),
            Message::Ping(p) => {
                body.extend_from_slice(&p.version);
                body.extend_from_slice(&p.endpoint_hash);
            }
            Message::PingAck(p) => {
                body.extend_from_slice(&p.version);
                body.extend_from_slice(&p.sender_endpoint_hash);
                body.extend_from_slice(&p.received_endpoint_hash);
                body.extend_from_slice(&p.ssrc.to_be_bytes());
            }
            Message::HelloAck
            | Message::Conf2Ack
            | Message::ErrorAck
            | Message::ClearAck
            | Message::RelayAck => {}
        }
        // Variable parts we were handed (public values, encrypted bodies) are padded to
        // whole words so that the length field is exact.
        while body.len() % 4 != 0 {
            body.push(0);
        }
        let words = (MESSAGE_HEADER_LEN + body.len()) / 4;
        let mut out = Vec::with_capacity(MESSAGE_HEADER_LEN + body.len());
        out.extend_from_slice(&PREAMBLE);
        // Our messages are at most a few hundred bytes, far below 2^16 words.
        out.extend_from_slice(&(words.min(usize::from(u16::MAX)) as u16).to_be_bytes());
        out.extend_from_slice(self.message_type().block());
        out.extend_from_slice(&body);
        out
    }
}

fn parse_hello(r: &mut Reader<'_>, words: usize) -> Result<Hello, PacketError> {
    let bad = || PacketError::BadLength("Hello");
    if words < HELLO_FIXED_WORDS {
        return Err(bad());
    }
    let version = r.array().ok_or_else(bad)?;
    let client_id = r.array().ok_or_else(bad)?;
    let h3 = r.array().ok_or_else(bad)?;
    let zid = Zid(r.array().ok_or_else(bad)?);
    let word = r.u32().ok_or_else(bad)?;
    let counts: [usize; 5] = [16, 12, 8, 4, 0].map(|shift| ((word >> shift) & 0x0f) as usize);
    if counts.iter().any(|&n| n > MAX_ALGORITHMS_PER_KIND) {
        return Err(PacketError::TooManyAlgorithms);
    }
    if words != HELLO_FIXED_WORDS + counts.iter().sum::<usize>() {
        return Err(bad());
    }
    Ok(Hello {
        version,
        client_id,
        h3,
        zid,
        signature_capable: word & 1 << 30 != 0,
        mitm: word & 1 << 29 != 0,
        passive: word & 1 << 28 != 0,
        hashes: r.algorithms(counts[0]).ok_or_else(bad)?,
        ciphers: r.algorithms(counts[1]).ok_or_else(bad)?,
        auth_tags: r.algorithms(counts[2]).ok_or_else(bad)?,
        key_agreements: r.algorithms(counts[3]).ok_or_else(bad)?,
        sas_types: r.algorithms(counts[4]).ok_or_else(bad)?,
        mac: r.array().ok_or_else(bad)?,
    })
}

fn parse_commit(r: &mut Reader<'_>, words: usize) -> Result<Commit, PacketError> {
    let bad = || PacketError::BadLength("Commit");
    let h2 = r.array().ok_or_else(bad)?;
    let zid = Zid(r.array().ok_or_else(bad)?);
    let hash = r.algorithm().ok_or_else(bad)?;
    let cipher = r.algorithm().ok_or_else(bad)?;
    let auth_tag = r.algorithm().ok_or_else(bad)?;
    let key_agreement = r.algorithm().ok_or_else(bad)?;
    let sas_type = r.algorithm().ok_or_else(bad)?;
    // The key agreement decides which commitment follows, and so the length.
    let mode = if key_agreement == MULTISTREAM {
        if words != COMMIT_MULTISTREAM_WORDS {
            return Err(bad());
        }
        CommitMode::Multistream {
            nonce: r.array().ok_or_else(bad)?,
        }
    } else if key_agreement == PRESHARED {
        if words != COMMIT_PRESHARED_WORDS {
            return Err(bad());
        }
        CommitMode::Preshared {
            nonce: r.array().ok_or_else(bad)?,
            key_id: r.array().ok_or_else(bad)?,
        }
    } else {
        if words != COMMIT_DH_WORDS {
            return Err(bad());
        }
        CommitMode::Dh {
            hvi: r.array().ok_or_else(bad)?,
        }
    };
    Ok(Commit {
        h2,
        zid,
        hash,
        cipher,
        auth_tag,
        key_agreement,
        sas_type,
        mode,
        mac: r.array().ok_or_else(bad)?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};

    pub(crate) fn hex(text: &str) -> Vec<u8> {
        let clean: Vec<u8> = text.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
        clean
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn crc32c_check_value() {
        // The CRC catalogue's check value for CRC-32/ISCSI.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn captured_packets_parse_and_reencode_identically() {
        use super::super::algorithm::{AuthTag, Cipher, KeyAgreement, SasType};
        use super::super::captured as c;
        for text in [
            c::HELLO_RESPONDER,
            c::HELLO_INITIATOR,
            c::COMMIT,
            c::DHPART1,
            c::DHPART2,
            c::CONFIRM1,
            c::CONFIRM2,
            c::HELLO_LIBZRTPCPP,
        ] {
            let bytes = hex(text);
            assert!(is_zrtp(&bytes));
            let packet = parse_packet(&bytes).unwrap();
            let again = encode_packet(packet.sequence, packet.ssrc, &packet.message.encode());
            assert_eq!(again, bytes);
        }
        let Message::Hello(hello) = parse_packet(&hex(c::HELLO_INITIATOR)).unwrap().message else {
            panic!("not a Hello")
        };
        assert_eq!(&hello.version, b"1.10");
        assert_eq!(&hello.client_id, b"LINPHONE-ZRTPCPP");
        assert_eq!(hello.ciphers, [Cipher::Aes1.id()]);
        assert_eq!(hello.auth_tags, [AuthTag::Hs32.id(), AuthTag::Hs80.id()]);
        assert_eq!(hello.key_agreements[0], KeyAgreement::Dh3k.id());
        assert_eq!(hello.key_agreements.len(), 3, "DH3k, DH2k, Mult");
        assert_eq!(hello.sas_types, [SasType::B32.id()]);
        let Message::DhPart2(part) = parse_packet(&hex(c::DHPART2)).unwrap().message else {
            panic!("not a DHPart2")
        };
        assert_eq!(part.public_value.len(), 384);
    }

    #[test]
    fn captured_acks_parse_and_reencode_identically() {
        use super::super::captured;
        for (text, expected) in [
            (captured::HELLO_ACK, Message::HelloAck),
            (captured::CONF2ACK, Message::Conf2Ack),
        ] {
            let bytes = hex(text);
            assert!(is_zrtp(&bytes));
            let packet = parse_packet(&bytes).unwrap();
            assert_eq!(packet.message, expected);
            assert_eq!(packet.ssrc, 0x1234_5678);
            let again = encode_packet(packet.sequence, packet.ssrc, &packet.message.encode());
            assert_eq!(again, bytes);
        }
    }

    fn sample_messages() -> Vec<Message> {
        let id = |s: &[u8; 4]| AlgorithmId(*s);
        vec![
            Message::Hello(Hello {
                version: VERSION,
                client_id: *b"sotto           ",
                h3: [3; 32],
                zid: Zid([9; 12]),
                signature_capable: false,
                mitm: true,
                passive: false,
                hashes: vec![id(b"S256")],
                ciphers: vec![id(b"AES1"), id(b"AES3")],
                auth_tags: vec![id(b"HS80"), id(b"HS32")],
                key_agreements: vec![id(b"X255"), id(b"DH3k")],
                sas_types: vec![id(b"B32 "), id(b"B256")],
                mac: [7; 8],
            }),
            Message::HelloAck,
            Message::Commit(Commit {
                h2: [2; 32],
                zid: Zid([1; 12]),
                hash: id(b"S256"),
                cipher: id(b"AES1"),
                auth_tag: id(b"HS80"),
                key_agreement: id(b"X255"),
                sas_type: id(b"B32 "),
                mode: CommitMode::Dh { hvi: [5; 32] },
                mac: [6; 8],
            }),
            Message::Commit(Commit {
                h2: [2; 32],
                zid: Zid([1; 12]),
                hash: id(b"S256"),
                cipher: id(b"AES1"),
                auth_tag: id(b"HS80"),
                key_agreement: MULTISTREAM,
                sas_type: id(b"B32 "),
                mode: CommitMode::Multistream { nonce: [4; 16] },
                mac: [6; 8],
            }),
            Message::Commit(Commit {
                h2: [2; 32],
                zid: Zid([1; 12]),
                hash: id(b"S256"),
                cipher: id(b"AES1"),
                auth_tag: id(b"HS80"),
                key_agreement: PRESHARED,
                sas_type: id(b"B32 "),
                mode: CommitMode::Preshared {
                    nonce: [4; 16],
                    key_id: [8; 8],
                },
                mac: [6; 8],
            }),
            Message::DhPart1(DhPart {
                h1: [1; 32],
                rs1_id: [2; 8],
                rs2_id: [3; 8],
                aux_secret_id: [4; 8],
                pbx_secret_id: [5; 8],
                public_value: vec![0xaa; 32],
                mac: [6; 8],
            }),
            Message::DhPart2(DhPart {
                h1: [1; 32],
                rs1_id: [2; 8],
                rs2_id: [3; 8],
                aux_secret_id: [4; 8],
                pbx_secret_id: [5; 8],
                public_value: vec![0xbb; 384],
                mac: [6; 8],
            }),
            Message::Confirm1(Confirm {
                confirm_mac: [1; 8],
                iv: [2; 16],
                encrypted: vec![3; 40],
            }),
            Message::Confirm2(Confirm {
                confirm_mac: [1; 8],
                iv: [2; 16],
                encrypted: vec![3; 48],
            }),
            Message::Conf2Ack,
            Message::Error { code: 0x62 },
            Message::ErrorAck,
            Message::GoClear { clear_mac: [9; 8] },
            Message::ClearAck,
            Message::SasRelay { body: vec![1; 64] },
            Message::RelayAck,
            Message::Ping(Ping {
                version: VERSION,
                endpoint_hash: [4; 8],
            }),
            Message::PingAck(PingAck {
                version: VERSION,
                sender_endpoint_hash: [4; 8],
                received_endpoint_hash: [5; 8],
                ssrc: 0xdead_beef,
            }),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        let messages = sample_messages();
        let mut seen = std::collections::HashSet::new();
        for message in messages {
            seen.insert(message.message_type());
            let bytes = message.encode();
            assert_eq!(Message::parse(&bytes).as_ref(), Ok(&message));
            let packet = encode_packet(0x1234, 0x5566_7788, &bytes);
            assert!(is_zrtp(&packet));
            let parsed = parse_packet(&packet).unwrap();
            assert_eq!(parsed.sequence, 0x1234);
            assert_eq!(parsed.ssrc, 0x5566_7788);
            assert_eq!(parsed.message, message);
            assert_eq!(parsed.raw_message, &bytes[..]);
        }
        assert_eq!(
            seen.len(),
            MessageType::ALL.len(),
            "a message type is untested"
        );
    }

    #[test]
    fn lengths_are_checked_per_type() {
        // The fixed sizes of RFC 6189 §5, in words.
        let expect = [
            (Message::HelloAck, 3),
            (Message::Conf2Ack, 3),
            (Message::Error { code: 1 }, 4),
            (Message::GoClear { clear_mac: [0; 8] }, 5),
        ];
        for (message, words) in expect {
            assert_eq!(message.encode().len(), words * 4);
        }
        for message in sample_messages() {
            let bytes = message.encode();
            // One word more or less, with the length field fixed up, is refused.
            let mut longer = bytes.clone();
            longer.extend_from_slice(&[0; 4]);
            let words = (longer.len() / 4) as u16;
            longer[2..4].copy_from_slice(&words.to_be_bytes());
            let mut shorter = bytes[..bytes.len() - 4].to_vec();
            shorter[2..4].copy_from_slice(&(words - 2).to_be_bytes());
            for changed in [longer, shorter] {
                let result = Message::parse(&changed);
                // SASrelay and Confirm have variable tails; those may still parse,
                // but never as something else.
                match result {
                    Ok(m) => assert_eq!(m.message_type(), message.message_type()),
                    Err(e) => assert!(matches!(
                        e,
                        PacketError::BadLength(_)
                            | PacketError::BadSize(_)
                            | PacketError::TooManyAlgorithms
                    )),
                }
            }
            // A length field that disagrees with the bytes is refused.
            let mut lying = bytes.clone();
            lying[3] ^= 1;
            assert!(matches!(
                Message::parse(&lying),
                Err(PacketError::LengthMismatch { .. })
            ));
        }
    }

    #[test]
    fn framing_errors() {
        let good = encode_packet(1, 2, &Message::HelloAck.encode());
        assert_eq!(
            parse_packet(&good[..good.len() - 4]),
            Err(PacketError::BadSize(24))
        );
        let mut bad_crc = good.clone();
        bad_crc[14] ^= 0x01;
        assert_eq!(parse_packet(&bad_crc), Err(PacketError::BadCrc));
        let mut fragmented = good.clone();
        fragmented[0] = 0x11;
        assert!(is_zrtp(&fragmented));
        assert_eq!(parse_packet(&fragmented), Err(PacketError::NotZrtp));
        let mut rtp = good.clone();
        rtp[0] = 0x80;
        assert!(!is_zrtp(&rtp));
        assert!(!is_zrtp(&good[..7]));
        assert_eq!(
            parse_packet(&vec![0x10; MAX_PACKET_LEN + 4]),
            Err(PacketError::TooLong(MAX_PACKET_LEN + 4))
        );
        // An unknown type block with a correct CRC.
        let mut unknown = Message::HelloAck.encode();
        unknown[4..12].copy_from_slice(b"Goodbye ");
        assert_eq!(
            parse_packet(&encode_packet(1, 2, &unknown)),
            Err(PacketError::UnknownType)
        );
        // Hello counts above 7 are refused.
        let mut hello = sample_messages()[0].encode();
        hello[12 + 4 + 16 + 32 + 12 + 1] |= 0x0f;
        assert!(Message::parse(&hello).is_err());
    }

    #[test]
    fn confirm_body_round_trips_and_checks_signature_length() {
        let body = ConfirmBody {
            h0: [0x42; 32],
            pbx_enrollment: false,
            sas_verified: true,
            allow_clear: false,
            disclosure: true,
            cache_expiry: 0xffff_ffff,
            signature: vec![],
        };
        let bytes = body.encode();
        assert_eq!(bytes.len(), 40);
        assert_eq!(&bytes[32..36], &[0, 0, 0, 0x05]);
        assert_eq!(ConfirmBody::decode(&bytes), Ok(body.clone()));
        let mut with_sig = body.clone();
        with_sig.signature = vec![1; 8];
        assert_eq!(ConfirmBody::decode(&with_sig.encode()), Ok(with_sig));
        let mut lying = bytes.clone();
        lying[34] = 1; // claims a 1-word signature that is not there
        assert_eq!(
            ConfirmBody::decode(&lying),
            Err(PacketError::BadConfirmBody)
        );
        assert_eq!(
            ConfirmBody::decode(&bytes[..36]),
            Err(PacketError::BadConfirmBody)
        );
    }

    #[test]
    fn random_and_mutated_inputs_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5a52_5450);
        let seeds: Vec<Vec<u8>> = sample_messages()
            .iter()
            .map(|m| encode_packet(7, 8, &m.encode()))
            .collect();
        for round in 0..20_000 {
            let mut bytes = if round % 2 == 0 {
                let len = rng.gen_range(0..600);
                let mut v = vec![0u8; len];
                rng.fill_bytes(&mut v);
                if len >= 8 && rng.gen_bool(0.5) {
                    v[0] = 0x10;
                    v[4..8].copy_from_slice(&MAGIC_COOKIE);
                }
                v
            } else {
                let mut v = seeds[rng.gen_range(0..seeds.len())].clone();
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..v.len());
                    v[at] ^= rng.gen::<u8>() | 1;
                }
                if rng.gen_bool(0.3) {
                    v.truncate(rng.gen_range(0..v.len()));
                }
                v
            };
            // Fix the CRC half of the time so that the message parser is reached.
            if bytes.len() >= 16 && rng.gen_bool(0.5) {
                let n = bytes.len();
                let crc = crc32c(&bytes[..n - 4]).to_le_bytes();
                bytes[n - 4..].copy_from_slice(&crc);
            }
            if let Ok(packet) = parse_packet(&bytes) {
                // Whatever parses re-encodes to a message that parses the same (unused
                // bits are not kept, so the bytes may differ).
                assert_eq!(Message::parse(&packet.message.encode()), Ok(packet.message));
            }
        }
    }
}
