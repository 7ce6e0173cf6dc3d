//! The `sotto` binary: run the bridge, check a config file, hash a PIN or a trunk's
//! digest password.

use anyhow::{bail, Context, Result};
use sotto::config::Config;
use sotto::metrics::Metrics;
use sotto::privacy::sandbox::{lock_down, SandboxOptions};
use sotto::room::pin::{hash_pin, PinLength, RECOMMENDED_PIN_DIGITS};
use sotto::room::prompts::Prompts;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

const USAGE: &str = "\
usage:
  sotto [run] [--config FILE]     run the bridge (default config: config/sotto.toml)
  sotto check-config FILE         validate a config file and exit
  sotto hash-pin [--salt B64]     read a PIN on stdin, print its argon2id hash
  sotto hash-digest --user USER --realm REALM
                                  read a trunk's password on stdin, print the
                                  ha1_sha256 and ha1_md5 lines for its [[trunk]] digest
";

const DEFAULT_CONFIG: &str = "config/sotto.toml";

fn main() {
    if let Err(e) = real_main() {
        eprintln!("sotto: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, rest)) if !c.starts_with('-') => (c.as_str(), rest),
        _ => ("run", &args[..]),
    };
    match cmd {
        "run" => {
            let config = match rest {
                [] => PathBuf::from(DEFAULT_CONFIG),
                [flag, path] if flag == "--config" || flag == "-c" => PathBuf::from(path),
                _ => bail!("{USAGE}"),
            };
            run(config)
        }
        "check-config" => {
            let [path] = rest else { bail!("{USAGE}") };
            let config = Config::load(path.as_ref())?;
            Prompts::load(&config.prompts.directory, config.prompts.language.code())
                .context("prompts")?;
            let listeners: Vec<String> = (config.sip.udp.iter().map(|a| format!("udp {a}")))
                .chain(config.sip.tcp.iter().map(|a| format!("tcp {a}")))
                .chain(config.sip.tls.iter().map(|a| format!("tls {a}")))
                .collect();
            // PINs under MIN_PIN_DIGITS do not even parse (Config::load refused them).
            for (i, room) in config.rooms.iter().enumerate() {
                match room.pin.length() {
                    PinLength::Short(n) => eprintln!(
                        "{path}: warning: `room[{i}].pin` has {n} digits; use \
                         {RECOMMENDED_PIN_DIGITS} or more (docs/security.md)"
                    ),
                    PinLength::Unknown => eprintln!(
                        "{path}: note: `room[{i}].pin` does not record its length, so it \
                         cannot be checked; make it again with `sotto hash-pin`"
                    ),
                    PinLength::Enough(_) => {}
                }
            }
            let rtp = match config.media.rtp_single_port {
                Some(port) => format!("single:{port}"),
                None => format!(
                    "{}-{}",
                    config.media.rtp_port_min, config.media.rtp_port_max
                ),
            };
            println!(
                "{path}: ok ({} room(s), {} trunk(s), SIP on {}, RTP {rtp})",
                config.rooms.len(),
                config.trunks.iter().count(),
                listeners.join(", "),
            );
            Ok(())
        }
        "hash-pin" => {
            let salt = match rest {
                [] => None,
                [flag, salt] if flag == "--salt" => Some(salt.as_str()),
                _ => bail!("{USAGE}"),
            };
            let mut input = zeroize::Zeroizing::new(String::new());
            std::io::stdin()
                .take(256)
                .read_to_string(&mut input)
                .context("reading the PIN from stdin")?;
            let hash = hash_pin(input.trim(), salt)?;
            println!("{hash}");
            Ok(())
        }
        "hash-digest" => {
            let (mut user, mut realm) = (None, None);
            let mut it = rest.iter();
            while let Some(flag) = it.next() {
                match (flag.as_str(), it.next()) {
                    ("--user", Some(u)) => user = Some(u.clone()),
                    ("--realm", Some(r)) => realm = Some(r.clone()),
                    _ => bail!("{USAGE}"),
                }
            }
            let (Some(user), Some(realm)) = (user, realm) else {
                bail!("{USAGE}")
            };
            let mut input = zeroize::Zeroizing::new(String::new());
            std::io::stdin()
                .take(1024)
                .read_to_string(&mut input)
                .context("reading the password from stdin")?;
            // One trailing line break is the shell's, not the password's.
            let password = input.strip_suffix('\n').unwrap_or(&input);
            let password = password.strip_suffix('\r').unwrap_or(password);
            if password.is_empty() {
                bail!("no password on stdin");
            }
            let (sha256, md5) = sotto::sip::digest::ha1_lines(&user, &realm, password);
            // The two lines of the trunk's digest table (`[trunk.digest]`, or inside
            // `digest = { user = ..., realm = ..., ... }`).
            println!("ha1_sha256 = \"{sha256}\"");
            println!("ha1_md5 = \"{md5}\"");
            Ok(())
        }
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n{USAGE}"),
    }
}

/// Lets the memory a burst took go back to the system once the burst is over.
///
/// The sandbox locks all memory (`mlockall`, no swap), and the kernel refuses
/// `madvise(MADV_DONTNEED)` on locked pages: memory glibc frees inside its heaps then
/// stays resident for good, and only whole mappings (`munmap`) or the top of the main
/// heap (`brk`) can shrink. A call's media buffers (about 80 KiB each) sat just below
/// glibc's default 128 KiB threshold, so an INVITE flood's unconfirmed calls left their
/// buffers resident after they ended. Measured with `sip-tests/run sipp_flood`
/// (docs/security.md): RSS baseline 37.6 → 18.8 MiB, growth after a 15 s flood 21 →
/// 7.6 MiB. Setting the threshold explicitly also stops glibc from raising it
/// dynamically. Must run before any thread starts.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// Allocations of at least this many bytes get a mapping of their own.
        const MMAP_THRESHOLD_BYTES: i32 = 64 * 1024;
        // SAFETY: mallopt only changes an allocator parameter; called before any other
        // thread exists, so no allocation runs concurrently with it.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) };
        if ok != 1 {
            eprintln!(
                "sotto: mallopt(M_MMAP_THRESHOLD) failed; memory may not shrink after bursts"
            );
        }
    }
}

fn run(config_path: PathBuf) -> Result<()> {
    tune_allocator();
    let config = Config::load(&config_path)?;
    tracing_subscriber::fmt()
        .with_max_level(config.log.level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let prompts = Prompts::load(&config.prompts.directory, config.prompts.language.code())
        .context("loading prompts")?;
    // Counted, not named: room ids stay out of the logs.
    let short = config
        .rooms
        .iter()
        .filter(|r| matches!(r.pin.length(), PinLength::Short(_)))
        .count();
    if short > 0 {
        tracing::warn!(
            "{short} room PIN(s) shorter than {RECOMMENDED_PIN_DIGITS} digits (see `sotto check-config`)"
        );
    }

    // Everything the process will ever open is open now: lock down before any thread
    // starts, so every thread inherits the sandbox.
    let listeners = sotto::server::bind(&config)?;
    let report = lock_down(&SandboxOptions {
        allow_unsandboxed: config.privacy.allow_unsandboxed,
    })
    .context("installing the sandbox (set privacy.allow_unsandboxed = true to run without)")?;
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!("{}", report.summary());
    let metrics = Arc::new(Metrics::new());
    metrics.sandbox_active.set(i64::from(report.is_active()));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let server = sotto::server::start_with(config, prompts, listeners, metrics).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        server.stop().await;
        Ok(())
    })
}
