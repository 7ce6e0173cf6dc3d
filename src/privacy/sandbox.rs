//! The process sandbox: once the bridge has started, it cannot write a file.
//!
//! The bridge promises that nobody records a conference through it, not even its
//! operator. Keeping audio in memory only is a property of the code; this module makes
//! it a property of the running process, enforced by the kernel: after [`lock_down`]
//! no code path, whatever its configuration, can create or write a file, start another
//! program, or leave a memory image behind. Only the descriptors opened before stay
//! writable (stderr for logs, the sockets), so nothing but those may be opened before.
//!
//! What [`lock_down`] enforces, in this order:
//!
//! 1. **No core dumps**: `RLIMIT_CORE` = 0 (soft and hard) and `PR_SET_DUMPABLE` = 0.
//!    A crash or a `kill -SEGV` leaves no image of memory, and being non-dumpable also
//!    keeps same-user processes from `ptrace`-attaching or reading `/proc/<pid>/mem`.
//! 2. **Memory locked** (`mlockall(MCL_CURRENT | MCL_FUTURE)`), so audio and PIN
//!    buffers are never written to swap. This needs `CAP_IPC_LOCK` or an unlimited
//!    `RLIMIT_MEMLOCK` (`LimitMEMLOCK=infinity` in the systemd unit); without either it
//!    is skipped with a warning, because with a finite limit `MCL_FUTURE` would make
//!    later allocations fail once the limit is reached.
//! 3. **`PR_SET_NO_NEW_PRIVS`**: no later `execve` can gain privileges (and Landlock
//!    and seccomp require it).
//! 4. **Landlock**: every write-like filesystem right the kernel knows (make a regular
//!    file, directory, symlink, socket, FIFO, block or char device; remove a file or
//!    directory; write; truncate; link or rename across directories) is handled and
//!    granted nowhere. Reading stays allowed everywhere, so a config reload can
//!    re-read the config and prompts. File descriptors opened before (stdout, stderr,
//!    sockets) keep working. On a kernel whose Landlock lacks some of these rights
//!    (before Linux 6.2: truncate; before 5.19: cross-directory link/rename) the rest is
//!    enforced and a warning names what is missing.
//! 5. **seccomp** (all threads): `execve`, `execveat`, `memfd_create`, `ptrace`,
//!    `process_vm_readv`, `process_vm_writev` and a few more (see [`DENIED_SYSCALLS`])
//!    fail with `EPERM`; everything else is allowed. No helper program can be started
//!    to record, no anonymous file can be created to hand audio over, and no data can
//!    be hidden in extended attributes (which Landlock does not cover).
//!
//! # Contract: call it before any other thread exists
//!
//! seccomp is applied to every thread of the process, but Landlock (before Linux 7.0,
//! Landlock ABI 8) restricts only the calling thread and the threads it creates
//! afterwards. So the binary must bind its sockets and read its config, prompts and
//! certificates first, then call [`lock_down`] while it is still single-threaded, and
//! only then start the tokio runtime and the mixer threads. [`lock_down`] checks this:
//! if other threads exist and the kernel cannot restrict them too, it returns
//! [`SandboxError::ThreadsRunning`].
//!
//! ```no_run
//! use sotto::privacy::sandbox::{lock_down, SandboxOptions};
//! // ... bind sockets, load config and prompts, no threads yet ...
//! let report = lock_down(&SandboxOptions { allow_unsandboxed: false })?;
//! for warning in &report.warnings {
//!     eprintln!("warning: {warning}");
//! }
//! eprintln!("{}", report.summary());
//! // ... now start the runtime and the mixer threads ...
//! # Ok::<(), sotto::privacy::sandbox::SandboxError>(())
//! ```
//!
//! On a kernel without Landlock, [`lock_down`] fails unless
//! [`SandboxOptions::allow_unsandboxed`] is set; then it still applies everything else
//! and says loudly, in [`SandboxReport::warnings`], that files can be written.
//!
//! What this does not stop: root on the host can still attach a debugger (root keeps
//! `CAP_SYS_PTRACE`), replace the binary, or capture the network traffic. The sandbox
//! guarantees what the bridge process itself can do, not what its host can.

use landlock::{
    AccessFs, RestrictSelfAttr, RestrictionStatus, Ruleset, RulesetAttr, RulesetStatus, ABI,
};
use nix::libc;
use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::sys::prctl;
use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use std::collections::BTreeMap;

/// How strict [`lock_down`] is where the kernel lacks a feature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SandboxOptions {
    /// Start even when Landlock (or seccomp) cannot be enforced by this kernel; the
    /// missing protection is then reported in [`SandboxReport::warnings`]. Default
    /// `false`: such a kernel is an error.
    pub allow_unsandboxed: bool,
}

/// How much of the Landlock write ban the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandlockStatus {
    /// Every write-like right is denied.
    FullyEnforced,
    /// The kernel's Landlock is older than this module: the rights it knows are
    /// denied, the newer ones (truncate, cross-directory link/rename) are not.
    PartiallyEnforced,
    /// The kernel has no Landlock (not built in, or not enabled at boot): files can be
    /// written.
    NotEnforced,
}

impl LandlockStatus {
    /// The word used in [`SandboxReport::summary`].
    fn word(self) -> &'static str {
        match self {
            LandlockStatus::FullyEnforced => "full",
            LandlockStatus::PartiallyEnforced => "partial",
            LandlockStatus::NotEnforced => "off",
        }
    }
}

/// What [`lock_down`] put in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxReport {
    /// The Landlock write ban.
    pub landlock: LandlockStatus,
    /// The Landlock ABI version in use: the kernel's, capped at the newest the
    /// `landlock` crate knows (`None`: no Landlock). Informational.
    pub landlock_abi: Option<u32>,
    /// The seccomp filter is installed on every thread.
    pub seccomp: bool,
    /// `PR_SET_NO_NEW_PRIVS` is set.
    pub no_new_privs: bool,
    /// `PR_SET_DUMPABLE` is 0.
    pub dumpable_off: bool,
    /// `RLIMIT_CORE` is 0 (soft and hard).
    pub core_limit_zero: bool,
    /// `mlockall(MCL_CURRENT | MCL_FUTURE)` succeeded.
    pub memory_locked: bool,
    /// Protections that could not be applied, each naming its consequence and fix.
    /// The caller should log every one at warning level.
    pub warnings: Vec<String>,
}

impl SandboxReport {
    /// One line for the log, always in this form (values vary):
    ///
    /// `sandbox: landlock=full seccomp=on no_new_privs=on dumpable=off core=0 mlock=on`
    ///
    /// `landlock` is `full`, `partial` or `off`; `core` is `0` or `kept`; the others
    /// are `on` or `off`.
    pub fn summary(&self) -> String {
        let on = |b: bool| if b { "on" } else { "off" };
        format!(
            "sandbox: landlock={} seccomp={} no_new_privs={} dumpable={} core={} mlock={}",
            self.landlock.word(),
            on(self.seccomp),
            on(self.no_new_privs),
            on(!self.dumpable_off),
            if self.core_limit_zero { "0" } else { "kept" },
            on(self.memory_locked),
        )
    }

    /// Whether the privacy guarantee holds: files cannot be written (Landlock, at
    /// least partially), no program can be started (seccomp), and no privilege can be
    /// gained. Memory locking and core settings are hardening on top.
    pub fn is_active(&self) -> bool {
        self.landlock != LandlockStatus::NotEnforced && self.seccomp && self.no_new_privs
    }
}

/// Why the process could not be locked down. On any error the process may be partly
/// locked down already; the caller should exit.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The kernel has no usable Landlock and the options do not allow running without.
    #[error(
        "this kernel cannot enforce the file-write ban (Landlock: {0}); refusing to run \
         unsandboxed (set `privacy.allow_unsandboxed = true` to start anyway)"
    )]
    LandlockUnavailable(String),
    /// Landlock is there but building or applying the ruleset failed.
    #[error("applying the Landlock ruleset failed: {0}")]
    Landlock(#[from] landlock::RulesetError),
    /// Other threads were running and the kernel can restrict only the calling thread
    /// with Landlock: lock-down must happen before any thread is started.
    #[error(
        "{threads} threads are running; lock-down must happen before the first thread is \
         started (this kernel's Landlock restricts only the calling thread)"
    )]
    ThreadsRunning {
        /// Threads in the process, counting the caller.
        threads: usize,
    },
    /// The seccomp filter could not be built or installed and the options do not allow
    /// running without.
    #[error("installing the seccomp filter failed: {0}")]
    Seccomp(#[source] seccompiler::Error),
    /// A `prctl` or `setrlimit` call that cannot fail on Linux failed.
    #[error("{what} failed: {source}")]
    Sys {
        /// The call.
        what: &'static str,
        /// The error.
        source: nix::Error,
    },
}

/// Locks the process down (see the module documentation). Call it once, after the
/// sockets are bound and every file is read, and **before any other thread is
/// started**: Landlock restricts only the calling thread and its future children on
/// kernels before Linux 7.0. Returns what was enforced; the caller logs
/// [`SandboxReport::summary`] and every warning.
pub fn lock_down(opts: &SandboxOptions) -> Result<SandboxReport, SandboxError> {
    let mut warnings = Vec::new();
    let threads = match count_threads() {
        Ok(n) => n,
        Err(e) => {
            warnings.push(format!(
                "cannot count threads ({e}); assuming lock-down runs single-threaded"
            ));
            1
        }
    };

    // 1. No core dumps.
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|source| SandboxError::Sys {
        what: "setrlimit(RLIMIT_CORE, 0)",
        source,
    })?;
    let core_limit_zero = getrlimit(Resource::RLIMIT_CORE) == Ok((0, 0));
    prctl::set_dumpable(false).map_err(|source| SandboxError::Sys {
        what: "prctl(PR_SET_DUMPABLE, 0)",
        source,
    })?;
    let dumpable_off = prctl::get_dumpable() == Ok(false);

    // 2. Memory out of swap.
    let memory_locked = match memlock_precondition(
        getrlimit(Resource::RLIMIT_MEMLOCK)
            .map(|(soft, _)| soft)
            .ok(),
        has_cap_ipc_lock(),
    ) {
        Err(why) => {
            warnings.push(format!(
                "memory not locked ({why}): call audio could be swapped to disk; set \
                 LimitMEMLOCK=infinity in the systemd unit"
            ));
            false
        }
        Ok(()) => match mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE) {
            Ok(()) => true,
            Err(e) => {
                warnings.push(format!(
                    "memory not locked (mlockall: {e}): call audio could be swapped to \
                     disk; set LimitMEMLOCK=infinity in the systemd unit"
                ));
                false
            }
        },
    };

    // 3. No new privileges (Landlock and seccomp would set it too; we check it).
    prctl::set_no_new_privs().map_err(|source| SandboxError::Sys {
        what: "prctl(PR_SET_NO_NEW_PRIVS, 1)",
        source,
    })?;

    // 4. Landlock: deny every write-like right, grant none.
    let status = restrict_writes(threads > 1)?;
    let landlock_abi = match status.landlock {
        landlock::LandlockStatus::Available { effective_abi, .. } => {
            Some(abi_number(effective_abi))
        }
        _ => None,
    };
    let landlock = landlock_outcome(
        &status.ruleset,
        landlock_abi,
        &describe_unavailable(&status.landlock),
        opts,
        &mut warnings,
    )?;
    if landlock != LandlockStatus::NotEnforced && threads > 1 && !status.all_threads {
        return Err(SandboxError::ThreadsRunning { threads });
    }

    // 5. seccomp on every thread.
    let seccomp = match install_seccomp() {
        Ok(()) => true,
        Err(e) if opts.allow_unsandboxed => {
            warnings.push(format!(
                "SANDBOX INCOMPLETE: seccomp filter not installed ({e}): this process \
                 could start other programs"
            ));
            false
        }
        Err(e) => return Err(SandboxError::Seccomp(e)),
    };

    Ok(SandboxReport {
        landlock,
        landlock_abi,
        seccomp,
        no_new_privs: prctl::get_no_new_privs() == Ok(true),
        dumpable_off,
        core_limit_zero,
        memory_locked,
        warnings,
    })
}

/// Syscalls the seccomp filter makes fail with `EPERM`, each with why the bridge must
/// never make it. The bridge itself calls none of them. Numbers are `i64`, as in
/// seccompiler, whose architectures (x86_64, aarch64, riscv64) are all 64-bit.
pub const DENIED_SYSCALLS: &[(&str, i64)] = &[
    // Start another program (a recorder, a shell).
    ("execve", libc::SYS_execve),
    ("execveat", libc::SYS_execveat),
    // An anonymous file that another process could be handed and read.
    ("memfd_create", libc::SYS_memfd_create),
    // Read or write another process's memory.
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    // Take a file descriptor (an open file) out of another process.
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    // Open a file by handle, without a path lookup.
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    // io_uring operations are not seen by seccomp filters.
    ("io_uring_setup", libc::SYS_io_uring_setup),
    // Load kernel programs (root only), e.g. to pin objects or observe other processes.
    ("bpf", libc::SYS_bpf),
    // Extended attributes carry data and are not a Landlock right.
    ("setxattr", libc::SYS_setxattr),
    ("lsetxattr", libc::SYS_lsetxattr),
    ("fsetxattr", libc::SYS_fsetxattr),
    ("setxattrat", SYS_SETXATTRAT),
];

/// `setxattrat` (Linux 6.13), the same number on every architecture; not yet in
/// `libc`. Older kernels answer `ENOSYS` anyway.
const SYS_SETXATTRAT: i64 = 463;

/// x32 system calls on x86_64 carry this bit and share the x86_64 audit
/// architecture, so each denied call is also denied under its x32 numbers.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

/// The x32-only numbers (512 and up) of the denied calls, from the kernel's
/// `arch/x86/entry/syscalls/syscall_64.tbl`.
#[cfg(target_arch = "x86_64")]
const X32_ONLY_NUMBERS: &[i64] = &[
    520, // execve
    521, // ptrace
    539, // process_vm_readv
    540, // process_vm_writev
    545, // execveat
];

/// The syscall numbers the filter denies on this architecture.
fn denied_numbers() -> Vec<i64> {
    #[allow(unused_mut)]
    let mut numbers: Vec<i64> = DENIED_SYSCALLS.iter().map(|&(_, nr)| nr).collect();
    #[cfg(target_arch = "x86_64")]
    {
        let native = numbers.clone();
        numbers.extend(native.iter().map(|&nr| nr | X32_SYSCALL_BIT));
        numbers.extend(X32_ONLY_NUMBERS.iter().map(|&nr| nr | X32_SYSCALL_BIT));
    }
    numbers
}

/// Builds the filter: the denied calls return `EPERM`, all others are allowed (a
/// foreign-architecture call kills the process, seccompiler's fixed rule).
fn seccomp_program() -> Result<BpfProgram, seccompiler::Error> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = denied_numbers()
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect();
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(seccompiler::Error::Backend)?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(seccompiler::Error::Backend)?;
    BpfProgram::try_from(filter).map_err(seccompiler::Error::Backend)
}

fn install_seccomp() -> Result<(), seccompiler::Error> {
    seccompiler::apply_filter_all_threads(&seccomp_program()?)
}

/// The filesystem rights Landlock ABI 3 (Linux 6.2) knows that modify anything: all
/// of them, without `IoctlDev` (ABI 5), which is not a write. Best-effort
/// compatibility drops those an older kernel lacks.
fn write_rights() -> landlock::BitFlags<AccessFs> {
    AccessFs::from_write(ABI::V3)
}

/// Creates a ruleset handling [`write_rights`] with no rule granting any of them,
/// and restricts the calling thread and its future children with it. Only when other
/// threads already run does it ask for all threads (`LANDLOCK_RESTRICT_SELF_TSYNC`,
/// Landlock ABI 8): an older kernel drops that request, which would otherwise turn
/// every single-threaded lock-down into "partially enforced".
fn restrict_writes(other_threads: bool) -> Result<RestrictionStatus, SandboxError> {
    let status = Ruleset::default()
        .handle_access(write_rights())?
        .create()?
        .all_threads(other_threads)?
        .restrict_self()?;
    Ok(status)
}

fn abi_number(abi: ABI) -> u32 {
    abi as u32
}

fn describe_unavailable(status: &landlock::LandlockStatus) -> String {
    match status {
        landlock::LandlockStatus::NotEnabled => {
            "built into the kernel but not enabled at boot (add landlock to the lsm= boot \
             parameter)"
                .to_string()
        }
        landlock::LandlockStatus::NotImplemented => {
            "not built into this kernel (needs Linux 5.13 with CONFIG_SECURITY_LANDLOCK)"
                .to_string()
        }
        landlock::LandlockStatus::Available { .. } => "ruleset not enforced".to_string(),
    }
}

/// Turns the ruleset status into ours: a warning for partial enforcement, an error
/// (or, if allowed, a loud warning) for none.
fn landlock_outcome(
    ruleset: &RulesetStatus,
    abi: Option<u32>,
    unavailable: &str,
    opts: &SandboxOptions,
    warnings: &mut Vec<String>,
) -> Result<LandlockStatus, SandboxError> {
    match ruleset {
        RulesetStatus::FullyEnforced => Ok(LandlockStatus::FullyEnforced),
        RulesetStatus::PartiallyEnforced => {
            warnings.push(format!(
                "Landlock partially enforced (kernel ABI {}): new files, writes and \
                 deletions are denied, but truncating an existing file (needs Linux 6.2) \
                 or linking/renaming across directories (needs 5.19) may not be",
                abi.map_or_else(|| "?".to_string(), |n| n.to_string())
            ));
            Ok(LandlockStatus::PartiallyEnforced)
        }
        RulesetStatus::NotEnforced if opts.allow_unsandboxed => {
            warnings.push(format!(
                "SANDBOX OFF: Landlock is not available ({unavailable}); this process CAN \
                 write files, so recording cannot be ruled out. Running only because \
                 allow_unsandboxed is set"
            ));
            Ok(LandlockStatus::NotEnforced)
        }
        RulesetStatus::NotEnforced => {
            Err(SandboxError::LandlockUnavailable(unavailable.to_string()))
        }
    }
}

/// Whether `mlockall(MCL_FUTURE)` is safe: with a finite `RLIMIT_MEMLOCK` and no
/// `CAP_IPC_LOCK`, every allocation past the limit would fail afterwards.
fn memlock_precondition(soft_limit: Option<u64>, cap_ipc_lock: bool) -> Result<(), String> {
    if cap_ipc_lock || soft_limit == Some(RLIM_INFINITY) {
        return Ok(());
    }
    Err(match soft_limit {
        Some(bytes) => format!(
            "RLIMIT_MEMLOCK is {} KiB and CAP_IPC_LOCK is missing",
            bytes / 1024
        ),
        None => "RLIMIT_MEMLOCK unknown and CAP_IPC_LOCK is missing".to_string(),
    })
}

/// `CAP_IPC_LOCK` (capability 14) in the effective set, from `/proc/self/status`.
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

fn count_threads() -> std::io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // waits for forked children with a real deadline
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    use std::io::{Read, Write};
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    fn report() -> SandboxReport {
        SandboxReport {
            landlock: LandlockStatus::FullyEnforced,
            landlock_abi: Some(7),
            seccomp: true,
            no_new_privs: true,
            dumpable_off: true,
            core_limit_zero: true,
            memory_locked: true,
            warnings: vec![],
        }
    }

    #[test]
    fn summary_has_the_documented_form() {
        assert_eq!(
            report().summary(),
            "sandbox: landlock=full seccomp=on no_new_privs=on dumpable=off core=0 mlock=on"
        );
        let weak = SandboxReport {
            landlock: LandlockStatus::NotEnforced,
            seccomp: false,
            no_new_privs: false,
            dumpable_off: false,
            core_limit_zero: false,
            memory_locked: false,
            ..report()
        };
        assert_eq!(
            weak.summary(),
            "sandbox: landlock=off seccomp=off no_new_privs=off dumpable=on core=kept mlock=off"
        );
        let partial = SandboxReport {
            landlock: LandlockStatus::PartiallyEnforced,
            ..report()
        };
        assert!(partial.summary().contains("landlock=partial "));
    }

    #[test]
    fn active_needs_landlock_seccomp_and_no_new_privs() {
        assert!(report().is_active());
        let partial = SandboxReport {
            landlock: LandlockStatus::PartiallyEnforced,
            memory_locked: false,
            ..report()
        };
        assert!(partial.is_active(), "mlock is hardening, not the guarantee");
        for weak in [
            SandboxReport {
                landlock: LandlockStatus::NotEnforced,
                ..report()
            },
            SandboxReport {
                seccomp: false,
                ..report()
            },
            SandboxReport {
                no_new_privs: false,
                ..report()
            },
        ] {
            assert!(!weak.is_active(), "{}", weak.summary());
        }
    }

    #[test]
    fn missing_landlock_is_an_error_unless_allowed() {
        let strict = SandboxOptions {
            allow_unsandboxed: false,
        };
        let lax = SandboxOptions {
            allow_unsandboxed: true,
        };
        let mut warnings = vec![];
        let err = landlock_outcome(
            &RulesetStatus::NotEnforced,
            None,
            "not built",
            &strict,
            &mut warnings,
        )
        .unwrap_err();
        assert!(matches!(err, SandboxError::LandlockUnavailable(_)));
        assert!(err.to_string().contains("allow_unsandboxed"), "{err}");
        assert!(warnings.is_empty());

        let status = landlock_outcome(
            &RulesetStatus::NotEnforced,
            None,
            "not built",
            &lax,
            &mut warnings,
        )
        .unwrap();
        assert_eq!(status, LandlockStatus::NotEnforced);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("SANDBOX OFF") && warnings[0].contains("not built"));

        warnings.clear();
        let status = landlock_outcome(
            &RulesetStatus::PartiallyEnforced,
            Some(2),
            "",
            &strict,
            &mut warnings,
        )
        .unwrap();
        assert_eq!(status, LandlockStatus::PartiallyEnforced);
        assert!(warnings[0].contains("ABI 2"), "{warnings:?}");

        warnings.clear();
        let status = landlock_outcome(
            &RulesetStatus::FullyEnforced,
            Some(7),
            "",
            &strict,
            &mut warnings,
        )
        .unwrap();
        assert_eq!(status, LandlockStatus::FullyEnforced);
        assert!(warnings.is_empty());
    }

    #[test]
    fn mlock_is_skipped_with_a_finite_limit_and_no_capability() {
        assert!(memlock_precondition(Some(RLIM_INFINITY), false).is_ok());
        assert!(memlock_precondition(Some(8 << 20), true).is_ok());
        let why = memlock_precondition(Some(8 << 20), false).unwrap_err();
        assert!(
            why.contains("8192 KiB") && why.contains("CAP_IPC_LOCK"),
            "{why}"
        );
        assert!(memlock_precondition(None, false).is_err());
    }

    #[test]
    fn write_rights_cover_every_write_and_no_read() {
        let rights = write_rights();
        for right in [
            AccessFs::MakeReg,
            AccessFs::MakeDir,
            AccessFs::MakeSym,
            AccessFs::MakeSock,
            AccessFs::MakeFifo,
            AccessFs::MakeBlock,
            AccessFs::MakeChar,
            AccessFs::RemoveFile,
            AccessFs::RemoveDir,
            AccessFs::WriteFile,
            AccessFs::Truncate,
            AccessFs::Refer,
        ] {
            assert!(rights.contains(right), "{right:?} not handled");
        }
        for right in [
            AccessFs::ReadFile,
            AccessFs::ReadDir,
            AccessFs::Execute,
            AccessFs::IoctlDev,
        ] {
            assert!(!rights.contains(right), "{right:?} must stay allowed");
        }
    }

    #[test]
    fn the_filter_denies_the_listed_calls() {
        let numbers = denied_numbers();
        for nr in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_memfd_create,
            libc::SYS_ptrace,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
        ] {
            assert!(numbers.contains(&nr), "{nr} missing");
        }
        assert!(!seccomp_program().unwrap().is_empty());
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "sotto-sandbox-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            TempDir(dir)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Runs `child` in a forked copy of this (single-threaded after the fork) process
    /// with its stdout on a pipe, and returns its exit status and what it printed. The
    /// test process itself is never locked down. The child must not take locks another
    /// test thread might hold; it writes with plain `write(2)`.
    fn in_child(child: impl FnOnce() -> Result<(), String>) -> (WaitStatus, String) {
        let (mut reader, writer) = std::io::pipe().unwrap();
        // SAFETY: the child only allocates (glibc malloc is fork-safe), makes system
        // calls and leaves with `_exit`; it never returns into the test harness.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                // SAFETY: plain fd operations on fds this process owns.
                let code = unsafe {
                    libc::dup2(writer.as_raw_fd(), 1);
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)) {
                        Ok(Ok(())) => 0,
                        Ok(Err(msg)) => {
                            let msg = format!("FAILED: {msg}\n");
                            libc::write(1, msg.as_ptr().cast(), msg.len());
                            1
                        }
                        Err(_) => 2,
                    }
                };
                // SAFETY: ends the child without running the harness's destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(writer);
                let deadline = Instant::now() + Duration::from_secs(30);
                let status = loop {
                    match waitpid(child, Some(WaitPidFlag::WNOHANG)).unwrap() {
                        WaitStatus::StillAlive if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        WaitStatus::StillAlive => {
                            // SAFETY: signals our own child.
                            unsafe { libc::kill(child.as_raw(), libc::SIGKILL) };
                            let _ = waitpid(child, None);
                            panic!("sandboxed child hung; killed it");
                        }
                        status => break status,
                    }
                };
                let mut out = String::new();
                reader.read_to_string(&mut out).unwrap();
                (status, out)
            }
        }
    }

    /// Writes to fd 1 with the system call (the child's stdout).
    fn raw_print(s: &str) -> Result<(), String> {
        // SAFETY: writes from a valid buffer to fd 1.
        let n = unsafe { libc::write(1, s.as_ptr().cast(), s.len()) };
        if n == s.len() as isize {
            Ok(())
        } else {
            Err(format!(
                "stdout write returned {n}: {}",
                std::io::Error::last_os_error()
            ))
        }
    }

    fn expect_denied<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>) -> Result<(), String> {
        match r {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => Ok(()),
            other => Err(format!("{what}: expected EACCES/EPERM, got {other:?}")),
        }
    }

    #[test]
    fn locked_down_process_cannot_write_files_but_reads_and_talks() {
        let dir = TempDir::new("writes");
        let existing = dir.path().join("existing.txt");
        std::fs::write(&existing, "hello").unwrap();
        let dir_path = dir.path().to_path_buf();
        let file = existing.clone();

        let (status, out) = in_child(move || {
            let existing = file;
            // Sockets bound before lock-down keep working; so does binding new ones.
            let before = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;

            let report = lock_down(&SandboxOptions::default()).map_err(|e| e.to_string())?;
            raw_print(&format!("{}\n", report.summary()))?;
            for w in &report.warnings {
                raw_print(&format!("warning: {w}\n"))?;
            }
            if report.landlock == LandlockStatus::NotEnforced || !report.is_active() {
                return Err(format!("not active: {}", report.summary()));
            }
            // Every right this module asks for exists since ABI 3 (Linux 6.2).
            if report.landlock_abi.is_some_and(|abi| abi >= 3)
                && report.landlock != LandlockStatus::FullyEnforced
            {
                return Err(format!("not fully enforced: {}", report.summary()));
            }

            expect_denied("create", std::fs::File::create(dir_path.join("new.txt")))?;
            expect_denied(
                "create_new",
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(dir_path.join("new2.txt")),
            )?;
            expect_denied(
                "append",
                std::fs::OpenOptions::new().append(true).open(&existing),
            )?;
            expect_denied(
                "open for writing",
                std::fs::OpenOptions::new().write(true).open(&existing),
            )?;
            expect_denied("unlink", std::fs::remove_file(&existing))?;
            expect_denied("mkdir", std::fs::create_dir(dir_path.join("sub")))?;
            expect_denied(
                "rename",
                std::fs::rename(&existing, dir_path.join("moved.txt")),
            )?;
            expect_denied(
                "hard link",
                std::fs::hard_link(&existing, dir_path.join("link.txt")),
            )?;
            expect_denied(
                "symlink",
                std::os::unix::fs::symlink(&existing, dir_path.join("sym.txt")),
            )?;
            if report.landlock == LandlockStatus::FullyEnforced {
                let path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes())
                    .map_err(|e| e.to_string())?;
                // SAFETY: a valid NUL-terminated path.
                let rc = unsafe { libc::truncate(path.as_ptr(), 0) };
                expect_denied(
                    "truncate",
                    if rc == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    },
                )?;
            }
            // Not even /dev/shm or /tmp.
            expect_denied(
                "create in /dev/shm",
                std::fs::File::create("/dev/shm/sotto-test"),
            )?;
            // Nor into extended attributes of an existing file.
            let path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes())
                .map_err(|e| e.to_string())?;
            // SAFETY: valid NUL-terminated strings and a valid value buffer.
            let rc = unsafe {
                libc::setxattr(
                    path.as_ptr(),
                    c"user.audio".as_ptr(),
                    b"pcm".as_ptr().cast(),
                    3,
                    0,
                )
            };
            expect_denied::<()>(
                "setxattr",
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                },
            )?;

            // seccomp: no anonymous files, no programs.
            // SAFETY: a valid NUL-terminated name; the fd, if any, is closed below.
            let fd = unsafe { libc::memfd_create(c"sotto".as_ptr(), 0) };
            if fd >= 0 {
                // SAFETY: closing the fd we just got.
                unsafe { libc::close(fd) };
                return Err("memfd_create succeeded".into());
            }
            expect_denied::<()>("memfd_create", Err(std::io::Error::last_os_error()))?;
            // The raw call: `Command` would take std's environment lock, which another
            // test thread may have held at the fork.
            let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null()];
            // SAFETY: NUL-terminated strings in NULL-terminated arrays; on success
            // the child becomes `true` and exits 0, which the checks below rule out.
            let rc = unsafe { libc::execve(argv[0], argv.as_ptr(), envp.as_ptr()) };
            expect_denied::<()>(
                "execve",
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                },
            )?;
            // SAFETY: PTRACE_TRACEME takes no pointers.
            let rc = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
            expect_denied::<()>(
                "ptrace",
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                },
            )?;

            // Reading still works, the file is untouched.
            let content = std::fs::read_to_string(&existing).map_err(|e| format!("read: {e}"))?;
            if content != "hello" {
                return Err(format!("file changed: {content:?}"));
            }
            std::fs::read_dir(&dir_path).map_err(|e| format!("read_dir: {e}"))?;

            // UDP on loopback: a new socket binds and sends to the old one.
            let after = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
            after
                .send_to(b"ping", before.local_addr().map_err(|e| e.to_string())?)
                .map_err(|e| format!("send: {e}"))?;
            before
                .set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 16];
            let (n, _) = before
                .recv_from(&mut buf)
                .map_err(|e| format!("recv: {e}"))?;
            if &buf[..n] != b"ping" {
                return Err("wrong datagram".into());
            }
            raw_print("child: all checks passed\n")
        });
        assert_eq!(
            status,
            WaitStatus::Exited(status.pid().unwrap(), 0),
            "child output:\n{out}"
        );
        assert!(out.contains("sandbox: landlock="), "{out}");
        assert!(out.contains("child: all checks passed"), "{out}");
        // The parent still can, and the child changed nothing.
        assert_eq!(std::fs::read_to_string(&existing).unwrap(), "hello");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("existing.txt")]);
        assert!(!Path::new("/dev/shm/sotto-test").exists());
    }

    #[test]
    fn lock_down_sets_core_dumpable_and_memory_state() {
        let (status, out) = in_child(|| {
            // A raised core limit must come down to 0.
            setrlimit(Resource::RLIMIT_CORE, RLIM_INFINITY, RLIM_INFINITY)
                .or_else(|_| setrlimit(Resource::RLIMIT_CORE, 4096, 4096))
                .map_err(|e| e.to_string())?;
            let report = lock_down(&SandboxOptions::default()).map_err(|e| e.to_string())?;
            raw_print(&format!("{}\n", report.summary()))?;
            if getrlimit(Resource::RLIMIT_CORE) != Ok((0, 0)) || !report.core_limit_zero {
                return Err("core limit not 0".into());
            }
            if prctl::get_dumpable() != Ok(false) || !report.dumpable_off {
                return Err("still dumpable".into());
            }
            if prctl::get_no_new_privs() != Ok(true) || !report.no_new_privs {
                return Err("no_new_privs not set".into());
            }
            let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
            if !status
                .lines()
                .any(|l| l.starts_with("Seccomp:") && l.ends_with('2'))
            {
                return Err("no seccomp filter in /proc/self/status".into());
            }
            let locked_kib: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmLck:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0);
            // Memory is locked exactly when the report says so, else a warning says why.
            match (report.memory_locked, locked_kib > 0) {
                (true, true) => {}
                (false, false)
                    if report
                        .warnings
                        .iter()
                        .any(|w| w.contains("LimitMEMLOCK=infinity")) => {}
                other => {
                    return Err(format!(
                        "mlock state {other:?}, warnings {:?}",
                        report.warnings
                    ))
                }
            }
            raw_print("child: ok\n")
        });
        assert!(
            matches!(status, WaitStatus::Exited(_, 0)),
            "{status:?}\n{out}"
        );
    }

    #[test]
    fn without_cap_ipc_lock_and_a_finite_memlock_limit_mlock_is_skipped_with_a_warning() {
        let (status, out) = in_child(|| {
            setrlimit(Resource::RLIMIT_MEMLOCK, 8 << 20, 8 << 20).map_err(|e| e.to_string())?;
            // SAFETY: plain credential calls in a single-threaded child.
            if unsafe { libc::geteuid() } == 0
                && unsafe { libc::setgid(65534) != 0 || libc::setuid(65534) != 0 }
            {
                return Err(format!(
                    "dropping root: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let report = lock_down(&SandboxOptions::default()).map_err(|e| e.to_string())?;
            raw_print(&format!("{}\n{:?}\n", report.summary(), report.warnings))?;
            if report.memory_locked || !report.summary().ends_with("mlock=off") {
                return Err("memory locked without CAP_IPC_LOCK".into());
            }
            if !report
                .warnings
                .iter()
                .any(|w| w.contains("LimitMEMLOCK=infinity") && w.contains("8192 KiB"))
            {
                return Err(format!("no warning naming the fix: {:?}", report.warnings));
            }
            // Unprivileged, everything else still applies.
            if !report.is_active() || !report.dumpable_off || !report.core_limit_zero {
                return Err(format!("incomplete: {}", report.summary()));
            }
            // And allocating well past the memlock limit still works.
            let big = vec![1u8; 64 << 20];
            if big.iter().map(|&b| b as usize).sum::<usize>() != 64 << 20 {
                return Err("allocation".into());
            }
            raw_print("child: ok\n")
        });
        assert!(
            matches!(status, WaitStatus::Exited(_, 0)),
            "{status:?}\n{out}"
        );
    }

    #[test]
    fn lock_down_refuses_when_threads_already_run_on_old_kernels() {
        let (status, out) = in_child(|| {
            let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
            let thread = std::thread::spawn(move || {
                let _ = stop_rx.recv();
            });
            let result = lock_down(&SandboxOptions::default());
            drop(stop_tx);
            let _ = thread.join();
            match result {
                Err(SandboxError::ThreadsRunning { threads: 2 }) => raw_print("refused\n"),
                // Linux 7.0+ (Landlock ABI 8) restricts every thread at once.
                Ok(r) if r.landlock_abi.is_some_and(|abi| abi >= 8) => raw_print("all threads\n"),
                other => Err(format!("unexpected: {other:?}")),
            }
        });
        assert!(
            matches!(status, WaitStatus::Exited(_, 0)),
            "{status:?}\n{out}"
        );
    }

    #[test]
    fn threads_started_after_lock_down_are_locked_down_too() {
        let dir = TempDir::new("threads");
        let target = dir.path().join("from-thread.txt");
        let (status, out) = in_child(move || {
            lock_down(&SandboxOptions::default()).map_err(|e| e.to_string())?;
            let result = std::thread::spawn(move || {
                let created = std::fs::File::create(&target).map(|mut f| f.write_all(b"x"));
                let fd = unsafe { libc::memfd_create(c"t".as_ptr(), 0) };
                (created, fd)
            })
            .join()
            .map_err(|_| "thread panicked".to_string())?;
            expect_denied("create from a new thread", result.0.and_then(|r| r))?;
            if result.1 >= 0 {
                return Err("memfd_create from a new thread succeeded".into());
            }
            raw_print("child: ok\n")
        });
        assert!(
            matches!(status, WaitStatus::Exited(_, 0)),
            "{status:?}\n{out}"
        );
        assert!(!dir.path().join("from-thread.txt").exists());
    }
}
