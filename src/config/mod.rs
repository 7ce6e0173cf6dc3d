//! The admin config file (TOML): schema, defaults and validation.
//!
//! The file is parsed once into an immutable [`Config`]; every error names the key and
//! the line it stands on. Sections that later features fill (`[tls]`, `[[trunk]]`,
//! `[cluster]`, `media.encryption`) have their place in the schema already, so adding
//! them does not break existing files. Unknown keys are errors: a typo must not
//! silently fall back to a default.

pub mod room;
pub mod trunk;

use crate::room::dial_in::DialIn;
use crate::room::keys::KeyMap;
pub use room::RoomConfig;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use toml::Spanned;
pub use trunk::{Cidr, DigestCredentials, DtmfMode, TrunkConfig, TrunkId, Trunks};

/// Everything that can be wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// TOML syntax error or a value of the wrong type; the message carries line and column.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line, column and the offending key).
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{path}:{line}: `{key}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the value.
        line: usize,
        /// Dotted key, e.g. `room[0].pin`.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// SIP listeners.
    pub sip: SipConfig,
    /// Media (RTP) settings.
    pub media: MediaConfig,
    /// Mixer settings.
    pub mixer: MixerConfig,
    /// PIN entry (IVR) settings.
    pub ivr: IvrConfig,
    /// Prompt files.
    pub prompts: PromptsConfig,
    /// Logging.
    pub log: LogConfig,
    /// TLS certificate.
    pub tls: TlsConfig,
    /// Metrics endpoint.
    pub metrics: MetricsConfig,
    /// Privacy protections.
    pub privacy: PrivacyConfig,
    /// Abuse limits: PIN guessing and request rates.
    pub limits: LimitsConfig,
    /// Conference rooms.
    pub rooms: Vec<RoomConfig>,
    /// Dial-in targets of the rooms (Request-URI user → room index).
    pub dial_in: DialIn,
    /// In-call key bindings.
    pub controls: KeyMap,
    /// PBXs, gateways and proxies, matched by source address.
    pub trunks: Trunks,
}

/// The TLS certificate for SIP over TLS.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificate chain; `None` makes a self-signed certificate at start.
    pub certificate: Option<PathBuf>,
    /// PEM private key (with `certificate`).
    pub private_key: Option<PathBuf>,
    /// Names for the self-signed certificate.
    pub names: Vec<String>,
}

/// Where aggregate metrics are served.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// HTTP listen address for `GET /metrics`; `None` turns the endpoint off.
    pub listen: Option<SocketAddr>,
}

/// Abuse limits (see docs/security.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Wrong PINs one source may make before it is throttled.
    pub source_free_failures: u32,
    /// First throttle period in seconds; doubles with each further failure.
    pub source_backoff_secs: u64,
    /// Longest throttle period in seconds.
    pub source_backoff_max_secs: u64,
    /// Wrong PINs per hour, all sources together, before checks are spaced out.
    pub global_failures_per_hour: u32,
    /// SIP messages per second one source may send.
    pub source_messages_per_second: u32,
    /// Burst allowance of SIP messages per source.
    pub source_message_burst: u32,
    /// User-Agent fragments (case-insensitive) whose requests are dropped silently.
    pub scanner_user_agents: Vec<String>,
    /// Domains (Request-URI hosts) we serve; empty accepts any. Others are dropped silently.
    pub domains: Vec<String>,
    /// Members in all rooms of this node together; 0: no limit.
    pub max_members_total: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            source_free_failures: 5,
            source_backoff_secs: 60,
            source_backoff_max_secs: 24 * 3600,
            global_failures_per_hour: 100,
            source_messages_per_second: 50,
            source_message_burst: 200,
            scanner_user_agents: [
                "friendly-scanner",
                "sipcli",
                "sipvicious",
                "sip-scan",
                "sipsak",
                "sundayddr",
                "iwar",
                "smap",
                "vaxsipuseragent",
                "pplsip",
            ]
            .map(String::from)
            .to_vec(),
            domains: Vec::new(),
            max_members_total: 0,
        }
    }
}

/// Privacy protections.
#[derive(Debug, Clone)]
pub struct PrivacyConfig {
    /// Start even where the kernel has no Landlock (loudly warned). Default false.
    pub allow_unsandboxed: bool,
}

/// SIP listeners and transaction settings.
#[derive(Debug, Clone)]
pub struct SipConfig {
    /// UDP listen addresses (at most one for now).
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses.
    pub tcp: Vec<SocketAddr>,
    /// TLS listen addresses.
    pub tls: Vec<SocketAddr>,
    /// Stream connections open at once.
    pub max_connections: usize,
    /// Stream connections open at once from one IP address.
    pub max_connections_per_source: usize,
    /// Seconds a stream connection may take to complete its first (or any partial) message.
    pub message_timeout_secs: u64,
    /// Largest datagram or message accepted, in bytes (checked before parsing).
    pub max_message_size: usize,
    /// Most header lines accepted in one message (checked before typed parsing).
    pub max_headers: usize,
    /// What a call to a target that is no room's `dial_in` gets.
    pub unknown_target: UnknownTarget,
}

/// What happens to a call whose Request-URI user is no room's dial-in target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnknownTarget {
    /// The PIN prompt: the PIN says which room (the default).
    #[default]
    Pin,
    /// 404 Not Found.
    Reject,
}

/// Media settings.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Address the RTP sockets bind to.
    pub rtp_address: IpAddr,
    /// Address written into SDP (defaults to `rtp_address`).
    pub public_address: IpAddr,
    /// First port of the RTP range (inclusive).
    pub rtp_port_min: u16,
    /// Last port of the RTP range (inclusive).
    pub rtp_port_max: u16,
    /// `rtp_ports = "single:PORT"`: every call's RTP on one shared port, told apart by
    /// source address and SSRC, instead of a port per call from the range.
    pub rtp_single_port: Option<u16>,
    /// Seconds without any RTP before a call is treated as gone.
    pub rtp_timeout_secs: u64,
    /// Lower bound of the adaptive jitter buffer's target delay, in milliseconds.
    pub jitter_min_ms: u32,
    /// Upper bound of the adaptive jitter buffer's target delay, in milliseconds.
    pub jitter_max_ms: u32,
    /// Codecs offered and accepted, in order of preference.
    pub codecs: Vec<Codec>,
    /// Media encryption policy.
    pub encryption: Encryption,
    /// Accept SDES keys (which travel inside SIP) over UDP or TCP, not only over TLS.
    pub allow_sdes_without_tls: bool,
    /// Answer ZRTP (RFC 6189) to callers who offer it (`a=zrtp-hash`).
    pub zrtp: bool,
}

/// An audio codec the bridge speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// G.722 wideband (16 kHz audio, RTP clock 8000), static payload type 9.
    G722,
    /// Opus (RFC 7587), dynamic payload type, RTP clock 48000.
    Opus,
}

/// What the bridge demands of a caller's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    /// SRTP or nothing: a plain offer gets 488 (the default).
    Required,
    /// SRTP when the caller offers it, plain RTP otherwise.
    Preferred,
    /// Plain RTP only.
    Off,
}

/// Mixer settings.
#[derive(Debug, Clone)]
pub struct MixerConfig {
    /// Tick length in milliseconds (20).
    pub interval_ms: u32,
    /// Worker threads that own rooms; 0 means one per core.
    pub shards: usize,
    /// Most members mixed at once per room: the loudest ones (speaker selection).
    pub max_speakers: usize,
    /// Noise gate: a frame quieter than this (RMS, dB below full scale) does not make
    /// its member a speaker.
    pub noise_gate_dbov: f32,
    /// Per-member automatic gain towards a common speech level.
    pub auto_gain: bool,
}

/// PIN entry settings.
#[derive(Debug, Clone)]
pub struct IvrConfig {
    /// Wrong PINs allowed per call before the goodbye.
    pub pin_tries: u8,
    /// Seconds of silence on the keypad before an entry is taken as finished.
    pub digit_timeout_secs: u64,
    /// Most digits one entry may have.
    pub max_pin_digits: usize,
}

/// Prompt language and files.
#[derive(Debug, Clone)]
pub struct PromptsConfig {
    /// `de` or `en`.
    pub language: Language,
    /// Directory holding `de/` and `en/` (relative paths are taken from the config file's directory).
    pub directory: PathBuf,
}

/// A prompt language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// German.
    De,
    /// English.
    En,
}

impl Language {
    /// The directory name of this language's prompts.
    pub fn code(self) -> &'static str {
        match self {
            Language::De => "de",
            Language::En => "en",
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: tracing::Level,
}

// ---- raw file schema -------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    sip: RawSip,
    #[serde(default)]
    media: RawMedia,
    #[serde(default)]
    mixer: RawMixer,
    #[serde(default)]
    ivr: RawIvr,
    #[serde(default)]
    prompts: RawPrompts,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    privacy: RawPrivacy,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default, rename = "room")]
    rooms: Vec<room::RawRoom>,
    #[serde(default)]
    room_defaults: room::RawRoomOptions,
    #[serde(default)]
    controls: room::RawControls,
    #[serde(default, rename = "trunk")]
    trunks: Vec<trunk::RawTrunk>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSip {
    #[serde(default = "default_udp")]
    udp: Vec<Spanned<String>>,
    #[serde(default)]
    tcp: Vec<Spanned<String>>,
    #[serde(default)]
    tls: Vec<Spanned<String>>,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_max_per_source")]
    max_connections_per_source: usize,
    #[serde(default = "default_message_timeout")]
    message_timeout_secs: u64,
    #[serde(default = "default_max_message")]
    max_message_size: usize,
    #[serde(default = "default_max_headers")]
    max_headers: usize,
    #[serde(default)]
    unknown_target: UnknownTarget,
}

impl Default for RawSip {
    fn default() -> Self {
        RawSip {
            udp: default_udp(),
            tcp: Vec::new(),
            tls: Vec::new(),
            max_connections: default_max_connections(),
            max_connections_per_source: default_max_per_source(),
            message_timeout_secs: default_message_timeout(),
            max_message_size: default_max_message(),
            max_headers: default_max_headers(),
            unknown_target: UnknownTarget::Pin,
        }
    }
}

fn default_udp() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "127.0.0.1:5060".to_string())]
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_per_source() -> usize {
    // A PBX or a proxy may hold several; a phone needs one.
    32
}
fn default_message_timeout() -> u64 {
    10
}
fn default_max_message() -> usize {
    // RFC 3261 §18.1.1 keeps UDP requests under the path MTU; larger ones are rare
    // and 16 KiB leaves room for big SDP while bounding parse cost.
    16 * 1024
}
fn default_max_headers() -> usize {
    100
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMedia {
    #[serde(default = "default_rtp_address")]
    rtp_address: Spanned<String>,
    #[serde(default)]
    public_address: Option<Spanned<String>>,
    #[serde(default = "default_rtp_ports")]
    rtp_ports: Spanned<String>,
    #[serde(default = "default_rtp_timeout")]
    rtp_timeout_secs: u64,
    #[serde(default = "default_jitter_min")]
    jitter_min_ms: Spanned<u32>,
    #[serde(default = "default_jitter_max")]
    jitter_max_ms: Spanned<u32>,
    #[serde(default = "default_codecs")]
    codecs: Spanned<Vec<Codec>>,
    #[serde(default = "default_encryption")]
    encryption: Encryption,
    #[serde(default)]
    allow_sdes_without_tls: bool,
    #[serde(default = "answer_zrtp")]
    zrtp: bool,
}

impl Default for RawMedia {
    fn default() -> Self {
        RawMedia {
            rtp_address: default_rtp_address(),
            public_address: None,
            rtp_ports: default_rtp_ports(),
            rtp_timeout_secs: default_rtp_timeout(),
            jitter_min_ms: default_jitter_min(),
            jitter_max_ms: default_jitter_max(),
            codecs: default_codecs(),
            encryption: default_encryption(),
            allow_sdes_without_tls: false,
            zrtp: true,
        }
    }
}

fn default_rtp_address() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1".to_string())
}
fn answer_zrtp() -> bool {
    true
}

fn default_rtp_ports() -> Spanned<String> {
    Spanned::new(0..0, "30000-30999".to_string())
}
fn default_rtp_timeout() -> u64 {
    30
}
fn default_jitter_min() -> Spanned<u32> {
    Spanned::new(0..0, 20)
}
fn default_jitter_max() -> Spanned<u32> {
    Spanned::new(0..0, 200)
}
fn default_codecs() -> Spanned<Vec<Codec>> {
    // Wideband first: the bridge's own preference wins among what a caller offers.
    Spanned::new(
        0..0,
        vec![Codec::Opus, Codec::G722, Codec::Pcma, Codec::Pcmu],
    )
}
fn default_encryption() -> Encryption {
    Encryption::Required
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMixer {
    #[serde(default = "default_interval")]
    interval_ms: Spanned<u32>,
    #[serde(default)]
    shards: usize,
    #[serde(default = "default_max_speakers")]
    max_speakers: Spanned<usize>,
    #[serde(default = "default_noise_gate")]
    noise_gate_dbov: Spanned<f32>,
    #[serde(default)]
    auto_gain: bool,
}

impl Default for RawMixer {
    fn default() -> Self {
        RawMixer {
            interval_ms: default_interval(),
            shards: 0,
            max_speakers: default_max_speakers(),
            noise_gate_dbov: default_noise_gate(),
            auto_gain: false,
        }
    }
}

fn default_max_speakers() -> Spanned<usize> {
    Spanned::new(0..0, 3)
}
fn default_noise_gate() -> Spanned<f32> {
    Spanned::new(0..0, -50.0)
}

fn default_interval() -> Spanned<u32> {
    Spanned::new(0..0, 20)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIvr {
    #[serde(default = "default_tries")]
    pin_tries: Spanned<u8>,
    #[serde(default = "default_digit_timeout")]
    digit_timeout_secs: u64,
    #[serde(default = "default_max_digits")]
    max_pin_digits: usize,
}

impl Default for RawIvr {
    fn default() -> Self {
        RawIvr {
            pin_tries: default_tries(),
            digit_timeout_secs: default_digit_timeout(),
            max_pin_digits: default_max_digits(),
        }
    }
}

fn default_tries() -> Spanned<u8> {
    Spanned::new(0..0, 3)
}
fn default_digit_timeout() -> u64 {
    10
}
fn default_max_digits() -> usize {
    32
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrompts {
    #[serde(default = "default_language")]
    language: Language,
    #[serde(default = "default_prompt_dir")]
    directory: String,
}

impl Default for RawPrompts {
    fn default() -> Self {
        RawPrompts {
            language: default_language(),
            directory: default_prompt_dir(),
        }
    }
}

fn default_language() -> Language {
    Language::De
}
fn default_prompt_dir() -> String {
    "../prompts".to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default = "default_level")]
    level: Spanned<String>,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: default_level(),
        }
    }
}

fn default_level() -> Spanned<String> {
    Spanned::new(0..0, "info".to_string())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    certificate: Option<Spanned<String>>,
    #[serde(default)]
    private_key: Option<Spanned<String>>,
    #[serde(default)]
    names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// "" turns the endpoint off.
    #[serde(default = "default_metrics_listen")]
    listen: Spanned<String>,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            listen: default_metrics_listen(),
        }
    }
}

fn default_metrics_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:9464".to_string())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPrivacy {
    #[serde(default)]
    allow_unsandboxed: bool,
}

// ---- loading and validation ---------------------------------------------------------

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Config::parse(&text, path, base)
    }

    /// Parses and validates config text; `path` is used in messages, `base` resolves relative paths.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let v = Validator { text, path };

        let mut udp = Vec::new();
        for (i, a) in raw.sip.udp.iter().enumerate() {
            udp.push(v.parse::<SocketAddr>(
                a,
                &format!("sip.udp[{i}]"),
                "an address like 127.0.0.1:5060",
            )?);
        }
        if udp.len() > 1 {
            let span = raw.sip.udp.first().map_or(0..0, |a| a.span());
            return Err(v.invalid(
                span,
                "sip.udp",
                "at most one UDP listen address is supported so far",
            ));
        }
        let mut tcp = Vec::new();
        for (i, a) in raw.sip.tcp.iter().enumerate() {
            tcp.push(v.parse::<SocketAddr>(
                a,
                &format!("sip.tcp[{i}]"),
                "an address like 127.0.0.1:5060",
            )?);
        }
        let mut tls = Vec::new();
        for (i, a) in raw.sip.tls.iter().enumerate() {
            tls.push(v.parse::<SocketAddr>(
                a,
                &format!("sip.tls[{i}]"),
                "an address like 127.0.0.1:5061",
            )?);
        }
        if udp.is_empty() && tcp.is_empty() && tls.is_empty() {
            return Err(v.invalid(0..0, "sip", "no listener: set sip.udp, sip.tcp or sip.tls"));
        }
        let tls_paths = |field: &Option<Spanned<String>>| -> Option<PathBuf> {
            field
                .as_ref()
                .map(|p| p.get_ref().trim())
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let p = PathBuf::from(p);
                    if p.is_absolute() {
                        p
                    } else {
                        base.join(p)
                    }
                })
        };
        let certificate = tls_paths(&raw.tls.certificate);
        let private_key = tls_paths(&raw.tls.private_key);
        if certificate.is_some() != private_key.is_some() {
            let span = raw
                .tls
                .certificate
                .as_ref()
                .or(raw.tls.private_key.as_ref())
                .map_or(0..0, |s| s.span());
            return Err(v.invalid(
                span,
                "tls",
                "set both certificate and private_key, or neither (self-signed)",
            ));
        }

        let rtp_address =
            v.parse::<IpAddr>(&raw.media.rtp_address, "media.rtp_address", "an IP address")?;
        let public_address = match &raw.media.public_address {
            Some(a) => v.parse::<IpAddr>(a, "media.public_address", "an IP address")?,
            None => rtp_address,
        };
        if public_address.is_unspecified() {
            return Err(v.invalid(
                raw.media.rtp_address.span(),
                "media.public_address",
                "an unspecified address cannot be put in SDP; set media.public_address",
            ));
        }
        let (rtp_port_min, rtp_port_max, rtp_single_port) =
            parse_rtp_ports(raw.media.rtp_ports.get_ref()).ok_or_else(|| {
                v.invalid(
                    raw.media.rtp_ports.span(),
                    "media.rtp_ports",
                    "expected \"MIN-MAX\" with 1024 <= MIN < MAX <= 65534 and at least 4 ports, \
                     or \"single:PORT\" with an even PORT from 1024 to 65534",
                )
            })?;
        let jitter_min = *raw.media.jitter_min_ms.get_ref();
        if !(20..=200).contains(&jitter_min) {
            return Err(v.invalid(
                raw.media.jitter_min_ms.span(),
                "media.jitter_min_ms",
                "must be between 20 and 200",
            ));
        }
        let jitter_max = *raw.media.jitter_max_ms.get_ref();
        if !(jitter_min..=1000).contains(&jitter_max) {
            return Err(v.invalid(
                raw.media.jitter_max_ms.span(),
                "media.jitter_max_ms",
                "must be between media.jitter_min_ms and 1000",
            ));
        }
        let max_speakers = *raw.mixer.max_speakers.get_ref();
        if !(1..=16).contains(&max_speakers) {
            return Err(v.invalid(
                raw.mixer.max_speakers.span(),
                "mixer.max_speakers",
                "must be between 1 and 16",
            ));
        }
        let noise_gate = *raw.mixer.noise_gate_dbov.get_ref();
        if !(-96.0..=-20.0).contains(&noise_gate) {
            return Err(v.invalid(
                raw.mixer.noise_gate_dbov.span(),
                "mixer.noise_gate_dbov",
                "must be between -96 and -20 (dB below full scale)",
            ));
        }
        if raw.media.codecs.get_ref().is_empty() {
            return Err(v.invalid(
                raw.media.codecs.span(),
                "media.codecs",
                "name at least one codec",
            ));
        }
        if raw.media.rtp_timeout_secs == 0 {
            return Err(v.invalid(0..0, "media.rtp_timeout_secs", "must be at least 1"));
        }

        if *raw.mixer.interval_ms.get_ref() != 20 {
            return Err(v.invalid(
                raw.mixer.interval_ms.span(),
                "mixer.interval_ms",
                "only 20 is supported so far",
            ));
        }
        if *raw.ivr.pin_tries.get_ref() == 0 {
            return Err(v.invalid(
                raw.ivr.pin_tries.span(),
                "ivr.pin_tries",
                "must be at least 1",
            ));
        }

        let level = match raw.log.level.get_ref().as_str() {
            "error" => tracing::Level::ERROR,
            "warn" => tracing::Level::WARN,
            "info" => tracing::Level::INFO,
            "debug" => tracing::Level::DEBUG,
            "trace" => tracing::Level::TRACE,
            _ => {
                return Err(v.invalid(
                    raw.log.level.span(),
                    "log.level",
                    "one of error, warn, info, debug, trace",
                ))
            }
        };

        let trunks = trunk::trunk_configs(&raw.trunks, &v)?;
        let (rooms, dial_in) = room::room_configs(&raw.rooms, &raw.room_defaults, &v)?;
        room::check_pin_free(&raw.rooms, !trunks.is_empty() || !tls.is_empty(), &v)?;
        let controls = room::key_map(&raw.controls, &v)?;

        let metrics_listen = match raw.metrics.listen.get_ref().trim() {
            "" => None,
            _ => Some(v.parse::<SocketAddr>(
                &raw.metrics.listen,
                "metrics.listen",
                "an address like 127.0.0.1:9464, or \"\" to turn metrics off",
            )?),
        };

        let directory = {
            let d = PathBuf::from(&raw.prompts.directory);
            if d.is_absolute() {
                d
            } else {
                base.join(d)
            }
        };

        Ok(Config {
            sip: SipConfig {
                udp,
                tcp,
                tls: tls.clone(),
                max_connections: raw.sip.max_connections.clamp(1, 1_000_000),
                max_connections_per_source: raw.sip.max_connections_per_source.max(1),
                message_timeout_secs: raw.sip.message_timeout_secs.clamp(1, 3600),
                max_message_size: raw.sip.max_message_size.clamp(1024, 65_535),
                max_headers: raw.sip.max_headers.clamp(16, 1000),
                unknown_target: raw.sip.unknown_target,
            },
            media: MediaConfig {
                rtp_address,
                public_address,
                rtp_port_min,
                rtp_port_max,
                rtp_single_port,
                rtp_timeout_secs: raw.media.rtp_timeout_secs,
                jitter_min_ms: jitter_min,
                jitter_max_ms: jitter_max,
                codecs: raw.media.codecs.into_inner(),
                encryption: raw.media.encryption,
                allow_sdes_without_tls: raw.media.allow_sdes_without_tls,
                zrtp: raw.media.zrtp,
            },
            mixer: MixerConfig {
                interval_ms: 20,
                shards: raw.mixer.shards,
                max_speakers,
                noise_gate_dbov: noise_gate,
                auto_gain: raw.mixer.auto_gain,
            },
            ivr: IvrConfig {
                pin_tries: *raw.ivr.pin_tries.get_ref(),
                digit_timeout_secs: raw.ivr.digit_timeout_secs.max(1),
                max_pin_digits: raw.ivr.max_pin_digits.clamp(4, 64),
            },
            prompts: PromptsConfig {
                language: raw.prompts.language,
                directory,
            },
            log: LogConfig { level },
            tls: TlsConfig {
                certificate,
                private_key,
                names: if raw.tls.names.is_empty() {
                    let mut names = vec!["localhost".to_string()];
                    names.extend(tls.iter().map(|a| a.ip().to_string()));
                    names
                } else {
                    raw.tls.names.clone()
                },
            },
            metrics: MetricsConfig {
                listen: metrics_listen,
            },
            privacy: PrivacyConfig {
                allow_unsandboxed: raw.privacy.allow_unsandboxed,
            },
            limits: LimitsConfig {
                scanner_user_agents: raw
                    .limits
                    .scanner_user_agents
                    .iter()
                    .map(|s| s.to_ascii_lowercase())
                    .collect(),
                domains: raw
                    .limits
                    .domains
                    .iter()
                    .map(|s| s.to_ascii_lowercase())
                    .collect(),
                global_failures_per_hour: raw.limits.global_failures_per_hour.max(1),
                source_messages_per_second: raw.limits.source_messages_per_second.max(1),
                source_message_burst: raw.limits.source_message_burst.max(1),
                ..raw.limits.clone()
            },
            rooms,
            dial_in,
            controls,
            trunks,
        })
    }
}

struct Validator<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Validator<'_> {
    fn line_of(&self, span: std::ops::Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn invalid(&self, span: std::ops::Range<usize>, key: &str, message: &str) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: self.line_of(span),
            key: key.to_string(),
            message: message.to_string(),
        }
    }

    fn parse<T: std::str::FromStr>(
        &self,
        value: &Spanned<String>,
        key: &str,
        expected: &str,
    ) -> Result<T, ConfigError> {
        let text = value.get_ref().trim();
        // A bare IPv6 address may be written in brackets, as in URIs (`[2001:db8::1]`).
        let text = match text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            Some(inner) if !inner.contains(']') => inner,
            _ => text,
        };
        text.parse::<T>()
            .map_err(|_| self.invalid(value.span(), key, &format!("expected {expected}")))
    }
}

/// `"MIN-MAX"` (a port per call) or `"single:PORT"` (one shared, even port: RTCP would
/// be the next one, RFC 3550 §11): min, max and the single port.
fn parse_rtp_ports(s: &str) -> Option<(u16, u16, Option<u16>)> {
    if let Some(port) = s.trim().strip_prefix("single:") {
        let port: u16 = port.trim().parse().ok()?;
        return ((1024..=65_534).contains(&port) && port.is_multiple_of(2)).then_some((
            port,
            port,
            Some(port),
        ));
    }
    let (min, max) = parse_port_range(s)?;
    Some((min, max, None))
}

fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let min: u16 = a.trim().parse().ok()?;
    let max: u16 = b.trim().parse().ok()?;
    (min >= 1024 && max <= 65_534 && min < max && max - min >= 3).then_some((min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::room::pin::cheap_hash_for_tests;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("t.toml"), Path::new("/etc/sotto"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.sip.udp, vec!["127.0.0.1:5060".parse().unwrap()]);
        assert_eq!((c.media.rtp_port_min, c.media.rtp_port_max), (30000, 30999));
        assert_eq!(c.media.rtp_single_port, None);
        assert_eq!(c.prompts.language, Language::De);
        assert_eq!(c.prompts.directory, PathBuf::from("/etc/sotto/../prompts"));
        assert_eq!(c.ivr.pin_tries, 3);
        assert!(c.rooms.is_empty());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = parse("[media]\nrtp_address = \"127.0.0.1\"\nrtp_prots = \"1-2\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("rtp_prots"), "{msg}");
    }

    #[test]
    fn a_single_shared_rtp_port_is_an_even_port() {
        let c = parse("[media]\nrtp_ports = \"single:40000\"\n").unwrap();
        assert_eq!(c.media.rtp_single_port, Some(40000));
        for bad in ["single:40001", "single:80", "single:", "single:70000"] {
            let e = parse(&format!("[media]\nrtp_ports = \"{bad}\"\n")).unwrap_err();
            assert!(e.to_string().contains("single:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_value_names_key_and_line() {
        let e = parse("\n\n[media]\nrtp_ports = \"5000-4000\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.toml:4: `media.rtp_ports`: expected \"MIN-MAX\" with 1024 <= MIN < MAX <= 65534 and at least 4 ports, or \"single:PORT\" with an even PORT from 1024 to 65534"
        );
        let e = parse("[sip]\nudp = [\"127.0.0.1:5060\", \"nonsense\"]\n").unwrap_err();
        assert!(e.to_string().starts_with("t.toml:2: `sip.udp[1]`"), "{e}");
    }

    #[test]
    fn room_pin_must_be_a_hash() {
        let e = parse("[[room]]\nid = \"a\"\npin = \"1234\"\n").unwrap_err();
        assert!(e.to_string().starts_with("t.toml:3: `room[0].pin`"), "{e}");
        let h = cheap_hash_for_tests("12345678", b"saltsalt");
        let ok = parse(&format!("[[room]]\nid = \"a\"\npin = \"{h}\"\n")).unwrap();
        assert_eq!(ok.rooms.len(), 1);
    }

    #[test]
    fn duplicate_rooms_are_refused() {
        let h = cheap_hash_for_tests("12345678", b"saltsalt");
        let text =
            format!("[[room]]\nid = \"a\"\npin = \"{h}\"\n[[room]]\nid = \"a\"\npin = \"{h}\"\n");
        let e = parse(&text).unwrap_err();
        assert!(e.to_string().contains("room[1].id"), "{e}");
    }

    fn room(id: &str, pin: &str, extra: &str) -> String {
        let h = cheap_hash_for_tests(pin, b"saltsalt");
        format!("[[room]]\nid = \"{id}\"\npin = \"{h}\"\n{extra}\n")
    }

    const SHA: &str =
        "ha1_sha256 = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"";

    #[test]
    fn trunks_parse_with_their_defaults_and_overrides() {
        let text = format!(
            "[[trunk]]\nname = \"office-pbx\"\nnetworks = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n\
             digest = {{ user = \"pbx\", realm = \"sotto\", {SHA} }}\n\
             encryption = \"preferred\"\nallow_sdes_without_tls = true\ndtmf = \"inband\"\n\
             [[trunk]]\nname = \"carrier\"\nnetworks = [\"192.0.2.0/24\"]\nmax_calls = 50\n\
             max_calls_in_setup = 10\nmessages_per_second = 300\n"
        );
        let c = parse(&text).unwrap();
        let pbx = c.trunks.get(0).unwrap();
        assert_eq!(pbx.name, "office-pbx");
        assert_eq!(pbx.networks.len(), 2);
        assert_eq!(pbx.encryption, Some(Encryption::Preferred));
        assert_eq!(pbx.allow_sdes_without_tls, Some(true));
        assert_eq!(pbx.dtmf, DtmfMode::Inband);
        let d = pbx.digest.as_ref().unwrap();
        assert_eq!((d.user.as_str(), d.realm.as_str()), ("pbx", "sotto"));
        assert_eq!(d.ha1_sha256.unwrap()[1], 0x11);
        assert!(d.ha1_md5.is_none());
        assert!(!format!("{d:?}").contains("0011"), "HA1 is never printed");
        assert_eq!(
            pbx.messages_per_second,
            trunk::DEFAULT_TRUNK_MESSAGES_PER_SECOND
        );
        let carrier = c.trunks.get(1).unwrap();
        assert_eq!((carrier.max_calls, carrier.max_calls_in_setup), (50, 10));
        assert_eq!(carrier.dtmf, DtmfMode::Auto);
        assert_eq!(carrier.encryption, None);
        assert_eq!(c.trunks.match_source("192.0.2.1".parse().unwrap()), Some(1));
    }

    #[test]
    fn bad_trunks_are_refused_with_key_and_line() {
        let cases = [
            (
                "[[trunk]]\nname = \"a\"\nnetworks = [\"10.0.0.0/8\"]\n[[trunk]]\nname = \"b\"\n\
                 networks = [\"10.1.0.0/16\"]\n",
                "t.toml:6: `trunk[1].networks[0]`: 10.1.0.0/16 overlaps 10.0.0.0/8 of trunk `a`",
            ),
            (
                "[[trunk]]\nname = \"a\"\nnetworks = [\"10.0.0.1/8\"]\n",
                "t.toml:3: `trunk[0].networks[0]`: host bits set below the prefix; did you mean 10.0.0.0/8?",
            ),
            (
                "[[trunk]]\nname = \"a\"\nnetworks = [\"10.0.0.0/8\"]\n\
                 digest = { user = \"u\", realm = \"r\", password = \"secret\" }\n",
                "t.toml:4: `trunk[0].digest`: a plaintext password is never stored",
            ),
            (
                "[[trunk]]\nname = \"a\"\nnetworks = [\"10.0.0.0/8\"]\n\
                 digest = { user = \"u\", realm = \"r\", ha1_md5 = \"abc\" }\n",
                "t.toml:4: `trunk[0].digest.ha1_md5`: expected 32 hex digits",
            ),
            (
                "[[trunk]]\nname = \"a\"\nnetworks = []\n",
                "t.toml:3: `trunk[0].networks`: list at least one",
            ),
            (
                "[[trunk]]\nname = \"my pbx\"\nnetworks = [\"10.0.0.0/8\"]\n",
                "t.toml:2: `trunk[0].name`: 1 to 64 characters",
            ),
            (
                "[[trunk]]\nname = \"a\"\nnetworks = [\"10.0.0.0/8\"]\nmax_calls = 5\n\
                 max_calls_in_setup = 6\n",
                "t.toml:5: `trunk[0].max_calls_in_setup`: must be between 1 and max_calls",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}\n  wanted: {want}");
        }
    }

    #[test]
    fn dial_in_targets_are_unique_and_pin_free_rooms_need_a_trunk_or_tls() {
        let dup = room("a", "12345678", "dial_in = [\"+4930123456\"]")
            + &room("b", "87654321", "dial_in = [\"board\", \"0049 30 123456\"]");
        let e = parse(&dup).unwrap_err().to_string();
        assert!(
            e.starts_with("t.toml:8: `room[1].dial_in[1]`: already leads to room `a`"),
            "{e}"
        );
        let c = parse(&(room("a", "12345678", "dial_in = [\"+4930123456\", \"board\"]"))).unwrap();
        assert_eq!(c.dial_in.lookup("004930123456"), Some(0));
        assert_eq!(c.dial_in.lookup("BOARD"), Some(0));
        assert!(c.rooms[0].pin_required);

        let open = room(
            "a",
            "12345678",
            "dial_in = [\"board\"]\npin_required = false",
        );
        let e = parse(&open).unwrap_err().to_string();
        assert!(
            e.starts_with("t.toml:5: `room[0].pin_required`: false needs a [[trunk]]"),
            "{e}"
        );
        let with_tls = format!("[sip]\ntls = [\"127.0.0.1:5061\"]\n{open}");
        assert!(!parse(&with_tls).unwrap().rooms[0].pin_required);
        let with_trunk = format!("{open}[[trunk]]\nname = \"pbx\"\nnetworks = [\"10.0.0.0/8\"]\n");
        assert!(parse(&with_trunk).is_ok());
        let no_alias = format!(
            "[sip]\ntls = [\"127.0.0.1:5061\"]\n{}",
            room("a", "12345678", "pin_required = false")
        );
        let e = parse(&no_alias).unwrap_err().to_string();
        assert!(
            e.contains("only applies to calls to the room's dial_in"),
            "{e}"
        );
    }

    #[test]
    fn ipv6_addresses_with_and_without_brackets() {
        let c = parse(
            "[sip]\nudp = [\"[::1]:5060\"]\ntls = [\"[2001:db8::5]:5061\"]\n\
             [media]\nrtp_address = \"[::1]\"\npublic_address = \"2001:db8::5\"\n",
        )
        .unwrap();
        assert_eq!(c.sip.udp, vec!["[::1]:5060".parse().unwrap()]);
        assert_eq!(c.media.rtp_address, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            c.media.public_address,
            "2001:db8::5".parse::<IpAddr>().unwrap()
        );
        assert!(
            parse("[sip]\nudp = [\"::1:5060\"]\n").is_err(),
            "a port needs brackets"
        );
    }

    #[test]
    fn unknown_target_is_pin_or_reject() {
        assert_eq!(parse("").unwrap().sip.unknown_target, UnknownTarget::Pin);
        let c = parse("[sip]\nunknown_target = \"reject\"\n").unwrap();
        assert_eq!(c.sip.unknown_target, UnknownTarget::Reject);
        assert!(parse("[sip]\nunknown_target = \"drop\"\n").is_err());
    }

    #[test]
    fn shipped_config_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let c = Config::load(&dir.join("sotto.toml")).unwrap();
        assert_eq!(c.rooms.len(), 1);
        assert!(c.rooms[0].pin.verify(b"31415926"));
    }
}
