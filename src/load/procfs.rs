//! The bridge's CPU time and memory, read from `/proc/PID/stat` and
//! `/proc/PID/status` (proc(5)).
//!
//! The parsers are pure and tested on sample text; [`read_cpu`] and [`read_rss_kib`]
//! read the files. CPU time is the whole process's (all threads): `utime + stime`.

use std::path::PathBuf;
use std::time::Duration;

/// Clock ticks per second of `utime`/`stime` (`USER_HZ`, `sysconf(_SC_CLK_TCK)`). The
/// kernel fixes it at 100 in its user ABI on x86 and ARM whatever `CONFIG_HZ` is, so
/// it is a constant here rather than a libc call.
pub const USER_HZ: u64 = 100;

/// Why a `/proc` figure could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read (no such process, or not ours to read).
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file did not have the expected shape.
    #[error("unexpected format of {0}")]
    Format(&'static str),
}

/// User and system CPU time of a process, in clock ticks ([`USER_HZ`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTicks {
    /// Time in user mode (field 14 of `stat`).
    pub user: u64,
    /// Time in kernel mode (field 15 of `stat`).
    pub system: u64,
}

impl CpuTicks {
    /// User plus system time.
    pub fn total(&self) -> Duration {
        let ticks = self.user.saturating_add(self.system);
        Duration::from_millis(ticks.saturating_mul(1000) / USER_HZ)
    }
}

/// Reads `utime` and `stime` from the text of `/proc/PID/stat`.
///
/// The second field is the command name in parentheses and may itself contain spaces
/// and parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Result<CpuTicks, ProcError> {
    let close = text.rfind(')').ok_or(ProcError::Format("stat"))?;
    // After the name: field 3 (state) onwards, so utime (14) is the 12th, stime (15)
    // the 13th.
    let mut fields = text[close + 1..].split_ascii_whitespace().skip(11);
    let mut next = || -> Result<u64, ProcError> {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or(ProcError::Format("stat"))
    };
    let user = next()?;
    let system = next()?;
    Ok(CpuTicks { user, system })
}

/// Reads `VmRSS` (resident memory, KiB) from the text of `/proc/PID/status`.
pub fn parse_vm_rss_kib(text: &str) -> Result<u64, ProcError> {
    text.lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            let mut it = rest.split_ascii_whitespace();
            let value = it.next()?.parse().ok()?;
            (it.next() == Some("kB")).then_some(value)
        })
        .ok_or(ProcError::Format("status"))
}

fn read(pid: u32, file: &str) -> Result<String, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/{file}"));
    std::fs::read_to_string(&path).map_err(|source| ProcError::Read { path, source })
}

/// The CPU time process `pid` has used so far (all threads, user plus system).
pub fn read_cpu(pid: u32) -> Result<Duration, ProcError> {
    Ok(parse_stat(&read(pid, "stat")?)?.total())
}

/// The resident memory of process `pid`, in KiB.
pub fn read_rss_kib(pid: u32) -> Result<u64, ProcError> {
    parse_vm_rss_kib(&read(pid, "status")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    // From a running `sotto run` (fields after stime shortened).
    const STAT: &str = "48213 (sotto) S 48190 48213 48190 34816 48213 4194560 2519 0 0 0 \
                        1234 567 0 0 20 0 6 0 1033360 84389888 3461 18446744073709551615";

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let t = parse_stat(STAT).unwrap();
        assert_eq!(
            t,
            CpuTicks {
                user: 1234,
                system: 567
            }
        );
        assert_eq!(t.total(), Duration::from_millis(18_010));
    }

    #[test]
    fn a_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let text = STAT.replace("(sotto)", "(my (odd) name)");
        assert_eq!(parse_stat(&text).unwrap().user, 1234);
    }

    #[test]
    fn short_or_garbled_stat_is_an_error() {
        assert!(parse_stat("48213 (sotto) S 1 2 3").is_err());
        assert!(parse_stat("no parenthesis here").is_err());
        assert!(parse_stat(&STAT.replace("1234", "x")).is_err());
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tsotto\nVmPeak:\t  120000 kB\nVmRSS:\t   13844 kB\nThreads:\t6\n";
        assert_eq!(parse_vm_rss_kib(status).unwrap(), 13_844);
        assert!(parse_vm_rss_kib("Name:\tsotto\n").is_err());
        assert!(parse_vm_rss_kib("VmRSS:\t12 MB\n").is_err());
    }

    #[test]
    fn our_own_process_can_be_read() {
        let pid = std::process::id();
        assert!(read_rss_kib(pid).unwrap() > 0);
        read_cpu(pid).unwrap();
        assert!(matches!(read_cpu(u32::MAX), Err(ProcError::Read { .. })));
    }
}
