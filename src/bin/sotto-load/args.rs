//! The command line of `sotto-load`, parsed by hand into a [`LoadConfig`].

use anyhow::{anyhow, bail, Context, Result};
use sotto::config::Codec;
use sotto::load::{LoadConfig, SipTransport};
use sotto::media::srtp::Suite;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Most source addresses one `--source-ips` may name (a /16).
const MAX_SOURCES: usize = 65_536;

/// `--help`.
pub const USAGE: &str = "\
usage: sotto-load [options]

Places calls into a sotto bridge over loopback, types the room PIN as RFC 4733
events, streams audio at 20 ms and measures: call setup (INVITE to 200, p50/p99),
'#' to hearing the room, gaps over 40 ms per member-minute, lost and late packets,
the delay the bridge adds (a marker burst timed at up to 32 listeners, p50/p99),
and, with --bridge-pid, the bridge's CPU per member-second and RSS per member over
the steady window. Phases: ramp (calls at --rate), hold (--hold seconds of steady
load: the measurements), hang-up (BYEs at --rate). Progress once a second on
stderr, a table on stdout, the same figures as JSON with --json.

Loopback only: any other target or source is refused. Over TLS every server
certificate is accepted (the bridge's default one is self-signed): this is a test
tool, not a phone.

options:
  --target ADDR        the bridge's SIP address            [127.0.0.1:5060]
  --transport T        udp | tcp | tls                      [udp]
  --srtp S             none | aes-cm-128-hmac-sha1-80 | aes-cm-128-hmac-sha1-32
                       | aead-aes-128-gcm | aead-aes-256-gcm (SDES keys in SIP;
                       over UDP/TCP the bridge needs allow_sdes_without_tls)
                                                            [none]
  --codec C            pcma | pcmu | g722 | opus (48 kHz, FEC) [pcma]
  --calls N            calls to place                       [10]
  --rate R             calls per second in the ramp (and BYEs per second)
                                                            [10]
  --hold SECS          length of the steady window          [10]
  --talkers F          share of members that talk (0-1); member 0 always does:
                       it sends the marker bursts; the rest send quiet noise
                                                            [0.1]
  --pin DIGITS         the room PIN ('#' is added)          [31415926]
  --room USER          Request-URI user part                [conference]
  --bridge-pid PID     the bridge's process, for CPU and RSS (/proc/PID)
  --local-ip IP        one source address for every call    [127.0.0.1]
  --source-ips LIST    source addresses used in turn: ranges and commas, e.g.
                       127.0.1.1-127.0.1.254 (the bridge limits each source to
                       50 SIP messages/s and 16 calls in setup: spread big runs)
  --json FILE          write the figures as JSON
  --threads N          tokio worker threads (1: one thread does everything) [1]
  --quiet              no progress lines
  -h, --help           this text

example (bridge pinned to core 0, generator to core 1):
  taskset -c 0 target/release/sotto run --config sip-tests/config/plain-udp.toml &
  taskset -c 1 target/release/sotto-load --calls 200 --rate 20 --hold 30 \\
      --source-ips 127.0.1.1-127.0.1.254 --bridge-pid $! --json run.json
";

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run a load test.
    Run(Box<Args>),
    /// Print the usage.
    Help,
}

/// A run's settings and the binary's own options.
#[derive(Debug)]
pub struct Args {
    /// The engine's settings.
    pub config: LoadConfig,
    /// Where to write JSON.
    pub json: Option<PathBuf>,
    /// tokio worker threads.
    pub threads: usize,
    /// No progress lines.
    pub quiet: bool,
}

/// Parses the arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command> {
    let default_target = SocketAddr::from((Ipv4Addr::LOCALHOST, 5060));
    let mut config = LoadConfig::new(default_target);
    let mut json = None;
    let mut threads = 1;
    let mut quiet = false;
    let mut sources_given = false;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        if flag == "--quiet" {
            quiet = true;
            continue;
        }
        let value = args
            .next()
            .ok_or_else(|| anyhow!("{flag} needs a value (see --help)"))?;
        let context = || format!("{flag} {value}");
        match flag.as_str() {
            "--target" => config.target = value.parse().with_context(context)?,
            "--transport" => {
                config.transport = match value.as_str() {
                    "udp" => SipTransport::Udp,
                    "tcp" => SipTransport::Tcp,
                    "tls" => SipTransport::Tls,
                    _ => bail!("{}: udp, tcp or tls", context()),
                }
            }
            "--srtp" => {
                config.srtp = match value.as_str() {
                    "none" => None,
                    "aes-cm-128-hmac-sha1-80" => Some(Suite::AesCm128HmacSha1_80),
                    "aes-cm-128-hmac-sha1-32" => Some(Suite::AesCm128HmacSha1_32),
                    "aead-aes-128-gcm" => Some(Suite::AeadAes128Gcm),
                    "aead-aes-256-gcm" => Some(Suite::AeadAes256Gcm),
                    _ => bail!("{}: unknown suite (see --help)", context()),
                }
            }
            "--codec" => {
                config.codec = match value.as_str() {
                    "pcma" => Codec::Pcma,
                    "pcmu" => Codec::Pcmu,
                    "g722" => Codec::G722,
                    "opus" => Codec::Opus,
                    _ => bail!("{}: pcma, pcmu, g722 or opus", context()),
                }
            }
            "--calls" => config.calls = value.parse().with_context(context)?,
            "--rate" => config.rate = value.parse().with_context(context)?,
            "--hold" => {
                let secs: f64 = value.parse().with_context(context)?;
                config.hold = Duration::try_from_secs_f64(secs).with_context(context)?;
            }
            "--talkers" => config.talkers = value.parse().with_context(context)?,
            "--pin" => config.pin = value,
            "--room" => config.room = value,
            "--bridge-pid" => config.bridge_pid = Some(value.parse().with_context(context)?),
            "--local-ip" | "--source-ips" => {
                if sources_given {
                    bail!("give --local-ip or --source-ips once");
                }
                sources_given = true;
                config.sources = if flag == "--local-ip" {
                    vec![value.parse().with_context(context)?]
                } else {
                    parse_sources(&value).with_context(context)?
                };
            }
            "--json" => json = Some(PathBuf::from(value)),
            "--threads" => {
                threads = value.parse().with_context(context)?;
                if !(1..=64).contains(&threads) {
                    bail!("{}: 1 to 64", context());
                }
            }
            _ => bail!("unknown option {flag} (see --help)"),
        }
    }
    config.validate()?;
    Ok(Command::Run(Box::new(Args {
        config,
        json,
        threads,
        quiet,
    })))
}

/// Parses `127.0.1.1-127.0.1.254,127.0.2.1`: IPv4 ranges (inclusive) and single
/// addresses, separated by commas.
pub fn parse_sources(text: &str) -> Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let first: Ipv4Addr = first.trim().parse().context("range start")?;
                let last: Ipv4Addr = last.trim().parse().context("range end")?;
                let (first, last) = (u32::from(first), u32::from(last));
                if last < first {
                    bail!("range {part} runs backwards");
                }
                if (last - first) as usize >= MAX_SOURCES - out.len() {
                    bail!("more than {MAX_SOURCES} source addresses");
                }
                out.extend((first..=last).map(|a| IpAddr::V4(Ipv4Addr::from(a))));
            }
            None => out.push(part.parse().context("source address")?),
        }
        if out.len() > MAX_SOURCES {
            bail!("more than {MAX_SOURCES} source addresses");
        }
    }
    if out.is_empty() {
        bail!("no source address");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Args> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Command::Run(a) => Ok(*a),
            Command::Help => bail!("help"),
        }
    }

    #[test]
    fn every_option_is_read() {
        let a = run(&[
            "--target",
            "127.0.0.1:5061",
            "--transport",
            "tls",
            "--srtp",
            "aead-aes-128-gcm",
            "--codec",
            "opus",
            "--calls",
            "200",
            "--rate",
            "50",
            "--hold",
            "30.5",
            "--talkers",
            "0.25",
            "--pin",
            "1234",
            "--room",
            "team",
            "--bridge-pid",
            "42",
            "--source-ips",
            "127.0.1.1-127.0.1.10",
            "--json",
            "/tmp/x.json",
            "--threads",
            "2",
            "--quiet",
        ])
        .unwrap();
        let c = &a.config;
        assert_eq!(c.target, "127.0.0.1:5061".parse().unwrap());
        assert_eq!(c.transport, SipTransport::Tls);
        assert_eq!(c.srtp, Some(Suite::AeadAes128Gcm));
        assert_eq!(c.codec, Codec::Opus);
        assert_eq!((c.calls, c.rate, c.talkers), (200, 50.0, 0.25));
        assert_eq!(c.hold, Duration::from_millis(30_500));
        assert_eq!((c.pin.as_str(), c.room.as_str()), ("1234", "team"));
        assert_eq!(c.bridge_pid, Some(42));
        assert_eq!(c.sources.len(), 10);
        assert_eq!(a.json, Some(PathBuf::from("/tmp/x.json")));
        assert_eq!((a.threads, a.quiet), (2, true));
    }

    #[test]
    fn defaults_and_help() {
        let a = run(&[]).unwrap();
        assert_eq!(a.config.target, "127.0.0.1:5060".parse().unwrap());
        assert_eq!(
            a.config.sources,
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(matches!(
            parse(["--calls".to_string(), "5".into(), "-h".into()]).unwrap(),
            Command::Help
        ));
    }

    #[test]
    fn mistakes_are_refused_with_the_option_named() {
        let cases: [&[&str]; 8] = [
            &["--calls"],
            &["--calls", "many"],
            &["--transport", "sctp"],
            &["--target", "192.0.2.1:5060"],
            &["--local-ip", "127.0.0.2", "--source-ips", "127.0.1.1"],
            &["--bogus", "1"],
            &["--hold", "-1"],
            &["--threads", "0"],
        ];
        for args in cases {
            assert!(run(args).is_err(), "{args:?} was accepted");
        }
        let e = run(&["--codec", "gsm"]).unwrap_err();
        assert!(format!("{e:#}").contains("--codec gsm"), "{e:#}");
    }

    #[test]
    fn source_lists_take_ranges_and_commas() {
        let s = parse_sources("127.0.1.254-127.0.2.1, 127.0.0.9").unwrap();
        let want: Vec<IpAddr> = [
            "127.0.1.254",
            "127.0.1.255",
            "127.0.2.0",
            "127.0.2.1",
            "127.0.0.9",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        assert_eq!(s, want);
        assert!(parse_sources("127.0.1.9-127.0.1.1").is_err());
        assert!(parse_sources("127.0.0.0-127.255.255.255").is_err());
        assert!(parse_sources("").is_err());
        assert!(parse_sources("::1").is_ok());
    }
}
