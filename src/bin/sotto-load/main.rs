//! `sotto-load`: the load generator. Reads the command line, runs
//! [`sotto::load::run`] on a tokio runtime, prints progress on stderr and the
//! figures on stdout (and as JSON with `--json`). See `--help` and
//! docs/performance.md ("Load generator").

mod args;

use anyhow::{Context, Result};
use args::{Command, USAGE};

fn main() {
    if let Err(e) = real_main() {
        eprintln!("sotto-load: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args = match args::parse(std::env::args().skip(1))? {
        Command::Help => {
            print!("{USAGE}");
            return Ok(());
        }
        Command::Run(args) => args,
    };
    raise_file_limit(args.config.calls);
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .context("tokio runtime")?;
    let quiet = args.quiet;
    let report = runtime.block_on(sotto::load::run(args.config, move |p| {
        if !quiet {
            eprintln!("{}", p.line());
        }
    }))?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Each call holds two sockets (SIP and RTP): raise the soft limit on open files to
/// the hard one when the default (often 1,024) is too few.
fn raise_file_limit(calls: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let wanted = (calls as u64).saturating_mul(2).saturating_add(64);
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < wanted {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                eprintln!("sotto-load: could not raise the open-file limit: {e}");
            }
            if hard < wanted {
                eprintln!(
                    "sotto-load: warning: {calls} calls need about {wanted} open files, the limit is {hard}"
                );
            }
        }
    }
}
