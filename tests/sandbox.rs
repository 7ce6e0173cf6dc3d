//! The sandbox of the real binary (`sotto run`), checked from outside the process:
//! `/proc` shows no-new-privs and a seccomp filter on every thread, the bridge is not
//! dumpable, strace sees no file written after the `sandbox:` line through a whole
//! call, SIGSEGV leaves no core, the core limit is 0 and memory is locked.
//!
//! Each test starts its own bridge (own SIP port, own RTP range 42000-42499) from a
//! fresh temporary directory and kills it on every path ([`Bridge`], also when it runs
//! under strace, kills on drop). strace is required: a missing one fails the test and
//! names `sip-tests/install.sh`.
#![allow(clippy::disallowed_methods)] // waits with real deadlines

mod common;

use common::{tone_share, Phone};
use nix::libc;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sotto");
const PIN: &str = "27182818";
/// `nobody` on Debian; any unprivileged uid/gid works.
const NOBODY: u32 = 65534;
/// How long a bridge may take to print `sotto ready` (debug build, under strace).
const START_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------
// Test kit: temp dirs, configs, a bridge process that is killed on drop.

/// A fresh directory under the system temp dir (mode 0755, so an unprivileged
/// bridge can read its config), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sotto-sandbox-it-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The argon2 hash of [`PIN`], made once by the binary's own `hash-pin`.
fn pin_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let mut child = Command::new(BIN)
            .arg("hash-pin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running sotto hash-pin");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{PIN}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "hash-pin: {out:?}");
        let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        hash
    })
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `sotto.toml` into `dir` (the shape of config/sotto.toml) and returns the
/// SIP address it listens on.
fn write_config(dir: &Path, rtp_ports: &str) -> SocketAddr {
    let sip: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let prompts = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
    let text = format!(
        r#"[sip]
udp = ["{sip}"]

[media]
rtp_address = "127.0.0.1"
rtp_ports = "{rtp_ports}"
codecs = ["pcmu", "pcma"]
# The test phones speak plain RTP.
encryption = "off"

[mixer]
shards = 1

[prompts]
language = "en"
directory = "{prompts}"

[log]
level = "info"

[metrics]
listen = ""

[privacy]
allow_unsandboxed = false

[[room]]
id = "sandbox"
pin = "{hash}"
"#,
        prompts = prompts.display(),
        hash = pin_hash(),
    );
    let path = dir.join("sotto.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    sip
}

/// How to start the bridge.
#[derive(Default)]
struct Launch {
    /// Run as `nobody` (when the tests run as root) with an 8 MiB memlock limit.
    unprivileged: bool,
    /// Raise `RLIMIT_CORE` to unlimited first, so only the bridge can lower it.
    core_unlimited: bool,
    /// Run under `strace` writing this trace file.
    strace_to: Option<PathBuf>,
}

/// stderr lines of a child, collected by a thread.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn collect_from(child: &mut Child) -> Lines {
        let lines = Lines::default();
        let sink = lines.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.0.lock().unwrap().push(line);
            }
        });
        lines
    }

    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn count(&self, needle: &str) -> usize {
        self.all().iter().filter(|l| l.contains(needle)).count()
    }
}

/// A running bridge (possibly under strace). Dropping it kills whatever still runs.
struct Bridge {
    /// The process we spawned: the bridge, or strace.
    child: Child,
    /// The bridge's pid (the strace child's when traced).
    pid: u32,
    stderr: Lines,
    sip: SocketAddr,
    dir: TempDir,
}

impl Bridge {
    fn start(tag: &str, rtp_ports: &str, launch: Launch) -> Bridge {
        let dir = TempDir::new(tag);
        let sip = write_config(dir.path(), rtp_ports);
        let mut cmd = match &launch.strace_to {
            Some(trace) => {
                let mut c = Command::new(require_tool("strace"));
                c.args(["-f", "-s", "512", "-o"]).arg(trace).args([
                    "-e",
                    "trace=%file,write,sendto,sendmsg,sendmmsg,memfd_create,ftruncate",
                    "--",
                    BIN,
                ]);
                c
            }
            None => Command::new(BIN),
        };
        cmd.args(["run", "--config"])
            .arg(dir.path().join("sotto.toml"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let drop_to_nobody = launch.unprivileged && unsafe { libc::geteuid() } == 0;
        let (unprivileged, core_unlimited) = (launch.unprivileged, launch.core_unlimited);
        // SAFETY: only async-signal-safe system calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let check = |rc: libc::c_int| {
                    if rc == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                };
                if core_unlimited {
                    let unlimited = libc::rlimit {
                        rlim_cur: libc::RLIM_INFINITY,
                        rlim_max: libc::RLIM_INFINITY,
                    };
                    check(libc::setrlimit(libc::RLIMIT_CORE, &unlimited))?;
                }
                if unprivileged {
                    let eight_mib = libc::rlimit {
                        rlim_cur: 8 << 20,
                        rlim_max: 8 << 20,
                    };
                    check(libc::setrlimit(libc::RLIMIT_MEMLOCK, &eight_mib))?;
                }
                if drop_to_nobody {
                    check(libc::setgroups(0, std::ptr::null()))?;
                    check(libc::setgid(NOBODY))?;
                    check(libc::setuid(NOBODY))?;
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("starting the bridge");
        let stderr = Lines::collect_from(&mut child);
        let pid = match launch.strace_to {
            Some(_) => wait_for_child_of(child.id(), Duration::from_secs(10)),
            None => child.id(),
        };
        let mut bridge = Bridge {
            child,
            pid,
            stderr,
            sip,
            dir,
        };
        bridge.wait_for("sotto ready", START_TIMEOUT);
        bridge
    }

    /// Waits until a stderr line contains `needle`; panics (showing stderr) if the
    /// process ends or the time runs out.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.stderr.all().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "bridge ended ({status}) before printing {needle:?}; stderr:\n{}",
                    self.stderr.all().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {timeout:?}; stderr:\n{}",
                self.stderr.all().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The summary line (`sandbox: landlock=… mlock=…`), from its first `sandbox:`.
    fn summary(&mut self) -> String {
        let line = self.wait_for("sandbox: landlock=", Duration::from_secs(1));
        line[line.find("sandbox: ").unwrap()..].to_string()
    }

    fn proc_file(&self, name: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{name}", self.pid))
            .unwrap_or_else(|e| panic!("reading /proc/{}/{name}: {e}", self.pid))
    }

    /// Sends `signal` to the bridge.
    fn signal(&self, signal: libc::c_int) {
        // SAFETY: signals a process this test started.
        unsafe { libc::kill(self.pid as libc::pid_t, signal) };
    }

    /// Waits for the spawned process to end; after `timeout`, kills it and returns
    /// what is known (the bridge's state, its stderr) as the error.
    fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let state = std::fs::read_to_string(format!("/proc/{}/stat", self.pid));
                self.signal(libc::SIGKILL);
                let _ = self.child.kill();
                return Err(format!(
                    "process did not end within {timeout:?} (bridge /proc/{}/stat: {state:?}); \
                     stderr:\n{}",
                    self.pid,
                    self.stderr.all().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            if self.pid != self.child.id() {
                self.signal(libc::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The path of a tool the test needs, or a failure naming the installer.
fn require_tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{name}` is not installed: run sip-tests/install.sh (Debian package `{name}`)")
    })
}

/// The pid of the bridge started by strace `parent`: a child of it running [`BIN`].
/// (strace also forks short-lived children of its own to probe the kernel.)
fn wait_for_child_of(parent: u32, timeout: Duration) -> u32 {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            // /proc/<pid>/cmdline stays world-readable for a non-dumpable process.
            let runs_bridge = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).next() == Some(BIN.as_bytes()));
            if ppid == Some(parent) && runs_bridge {
                return pid;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("strace ({parent}) started no bridge within {timeout:?}");
}

/// The value of a `Name:\tvalue` line of a `/proc/<pid>/status` text.
fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Soft and hard limit of `Max core file size` from a `/proc/<pid>/limits` text.
fn core_limits(limits: &str) -> (String, String) {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_else(|| panic!("no core limit in:\n{limits}"));
    let mut fields = line["Max core file size".len()..].split_whitespace();
    (
        fields.next().unwrap().to_string(),
        fields.next().unwrap().to_string(),
    )
}

/// Two phones dial in, type the PIN, and each hears the other's tone; then both
/// hang up. This drives SIP, RTP, RFC 4733, the PIN check on a thread started after
/// lock-down, and the mixer.
fn full_call(bridge: &mut Bridge, check_audio: bool) {
    let mut a = Phone::new(bridge.sip, 440.0);
    let mut b = Phone::new(bridge.sip, 620.0);
    assert_eq!(a.call(), 200, "phone a was not answered");
    a.dial_digits(&format!("{PIN}#"));
    assert_eq!(b.call(), 200, "phone b was not answered");
    b.dial_digits(&format!("{PIN}#"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while bridge.stderr.count("caller admitted to a room") < 2 {
        assert!(
            Instant::now() < deadline,
            "the callers were not admitted; stderr:\n{}",
            bridge.stderr.all().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each hears the join tone and "first participant" (a also b's join tone) first.
    std::thread::sleep(Duration::from_secs(5));
    if check_audio {
        let heard_by_a = a.last_heard(1.0);
        let heard_by_b = b.last_heard(1.0);
        assert!(
            heard_by_a.len() >= 4000 && tone_share(&heard_by_a, 620.0, 8000.0) > 0.2,
            "a does not hear b"
        );
        assert!(
            heard_by_b.len() >= 4000 && tone_share(&heard_by_b, 440.0, 8000.0) > 0.2,
            "b does not hear a"
        );
    }
    assert_eq!(a.hangup(), 200);
    assert_eq!(b.hangup(), 200);
}

// ---------------------------------------------------------------------------------
// 1. no_new_privs and seccomp on every thread, and the bridge still works.

#[test]
fn every_thread_has_no_new_privs_and_the_seccomp_filter_and_calls_work() {
    let mut bridge = Bridge::start("nnp", "42000-42099", Launch::default());
    let summary = bridge.summary();
    assert!(
        summary.contains("seccomp=on") && summary.contains("no_new_privs=on"),
        "{summary}"
    );
    assert!(!summary.contains("landlock=off"), "{summary}");

    // A whole call, so the threads started late (PIN check pool, media) exist too.
    full_call(&mut bridge, true);

    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{}/task", bridge.pid))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        tasks.len() >= 3,
        "expected the runtime and mixer threads: {tasks:?}"
    );
    // The bridge inherits any filters this test runs under (a container's), plus one
    // of its own.
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let own_filters: Option<u32> =
        status_field(&own, "Seccomp_filters").and_then(|n| n.parse().ok());
    for tid in &tasks {
        let status = bridge.proc_file(&format!("task/{tid}/status"));
        assert_eq!(
            status_field(&status, "NoNewPrivs"),
            Some("1"),
            "thread {tid}"
        );
        // 2 = SECCOMP_MODE_FILTER.
        assert_eq!(status_field(&status, "Seccomp"), Some("2"), "thread {tid}");
        if let Some(own_filters) = own_filters {
            let filters = own_filters + 1;
            assert_eq!(
                status_field(&status, "Seccomp_filters"),
                Some(filters.to_string().as_str()),
                "thread {tid}: the bridge's own filter is missing"
            );
        }
    }
}

// 1b. Not dumpable.
//
// PR_GET_DUMPABLE cannot be read from outside, and root may ptrace anything, so the
// check uses the rule the kernel applies to /proc: the files of a non-dumpable
// process are owned by root, whoever runs it. The bridge therefore runs as `nobody`
// here; as a control, the same binary as `nobody` without lock-down (`hash-pin`
// waiting on stdin) has its /proc files owned by `nobody`.

#[test]
fn the_bridge_is_not_dumpable_and_warns_about_memlock_when_unprivileged() {
    let as_root = unsafe { libc::geteuid() } == 0;
    let expected_uid = if as_root {
        NOBODY
    } else {
        unsafe { libc::geteuid() }
    };

    // Control: not locked down, so its /proc files belong to its user.
    let mut control = Command::new(BIN);
    control
        .arg("hash-pin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if as_root {
        // SAFETY: only async-signal-safe system calls between fork and exec.
        unsafe {
            control.pre_exec(|| {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(NOBODY) != 0
                    || libc::setuid(NOBODY) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut control = control.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let control_owner =
        std::fs::metadata(format!("/proc/{}/status", control.id())).map(|m| m.uid());
    drop(control.stdin.take());
    let _ = control.kill();
    let _ = control.wait();
    assert_eq!(
        control_owner.unwrap(),
        expected_uid,
        "control: a dumpable process's /proc files belong to its user"
    );

    let mut bridge = Bridge::start(
        "dumpable",
        "42100-42199",
        Launch {
            unprivileged: true,
            ..Launch::default()
        },
    );
    let summary = bridge.summary();
    assert!(summary.contains("dumpable=off"), "{summary}");
    let status = bridge.proc_file("status");
    let uid_line = status_field(&status, "Uid").unwrap().to_string();
    assert!(
        uid_line.starts_with(&expected_uid.to_string()),
        "the bridge should run as {expected_uid}: Uid {uid_line}"
    );
    let owner = std::fs::metadata(format!("/proc/{}/status", bridge.pid))
        .unwrap()
        .uid();
    assert_eq!(
        owner, 0,
        "/proc/{}/status should belong to root: the bridge is still dumpable",
        bridge.pid
    );

    // Unprivileged with an 8 MiB memlock limit: no mlock, and a warning naming the fix.
    assert!(summary.ends_with("mlock=off"), "{summary}");
    assert!(
        bridge.stderr.count("LimitMEMLOCK=infinity") >= 1,
        "no warning naming LimitMEMLOCK=infinity; stderr:\n{}",
        bridge.stderr.all().join("\n")
    );
    // Everything else holds without privileges.
    assert_eq!(status_field(&status, "NoNewPrivs"), Some("1"));
    assert_eq!(status_field(&status, "Seccomp"), Some("2"));
    assert!(!summary.contains("landlock=off"), "{summary}");
}

// ---------------------------------------------------------------------------------
// 2. strace: nothing is written after the sandbox line, through a whole call.

/// System calls that create, change or remove files, or start programs.
const FILE_CHANGING: &[&str] = &[
    "creat",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "rmdir",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "truncate",
    "ftruncate",
    "memfd_create",
    "execve",
    "execveat",
];

/// Open flags that mean writing.
const WRITE_FLAGS: &[&str] = &["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND"];

/// One completed system call from an `strace -f` trace.
#[derive(Debug, Clone)]
struct Call {
    /// Index of the line where it completed.
    line: usize,
    name: String,
    /// The whole text after the pid, `unfinished`/`resumed` halves joined.
    text: String,
    /// Return value as printed (`3`, `-1 EACCES (Permission denied)`, `?`).
    result: String,
}

impl Call {
    fn succeeded(&self) -> bool {
        self.result
            .split_whitespace()
            .next()
            .is_some_and(|r| r.parse::<i64>().is_ok_and(|n| n >= 0) || r.starts_with("0x"))
    }

    /// Whether this call, had it succeeded, created or changed a file.
    fn changes_files(&self) -> bool {
        match self.name.as_str() {
            "open" | "openat" | "openat2" => WRITE_FLAGS.iter().any(|f| self.text.contains(f)),
            name => FILE_CHANGING.contains(&name),
        }
    }
}

/// Parses `strace -f` output: `PID name(args) = result`, with calls interrupted by
/// other threads split into `PID name(args <unfinished ...>` and
/// `PID <... name resumed>rest) = result`.
fn parse_trace(trace: &str) -> Vec<Call> {
    let mut pending: std::collections::HashMap<&str, String> = Default::default();
    let mut calls = Vec::new();
    for (line, raw) in trace.lines().enumerate() {
        let Some((pid, rest)) = raw.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        let text = if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid, head.to_string());
            continue;
        } else if let Some(after) = rest.strip_prefix("<... ") {
            let Some((_, tail)) = after.split_once("resumed>") else {
                continue;
            };
            pending.remove(pid).unwrap_or_default() + tail
        } else {
            rest.to_string()
        };
        if text.starts_with("---") || text.starts_with("+++") {
            continue;
        }
        let Some((name, _)) = text.split_once('(') else {
            continue;
        };
        // strace pads the result to a column: `...)      = 3`.
        let Some((call, result)) = text.rsplit_once(" = ") else {
            continue;
        };
        if !call.trim_end().ends_with(')') {
            continue;
        }
        calls.push(Call {
            line,
            name: name.to_string(),
            result: result.trim().to_string(),
            text: text.clone(),
        });
    }
    calls
}

/// The line index of the write of the `sandbox:` summary to stderr.
fn sandbox_line(trace: &str) -> Option<usize> {
    trace
        .lines()
        .position(|l| l.contains(" write(2, ") && l.contains("sandbox: landlock="))
}

/// Successful file-changing calls after the sandbox line.
fn writes_after_sandbox(trace: &str) -> Result<Vec<Call>, String> {
    let start = sandbox_line(trace).ok_or("no write of the sandbox: line in the trace")?;
    Ok(parse_trace(trace)
        .into_iter()
        .filter(|c| c.line > start && c.changes_files() && c.succeeded())
        .collect())
}

#[test]
fn the_trace_checker_finds_writes_after_the_sandbox_line() {
    let trace = "\
100 openat(AT_FDCWD, \"/tmp/before\", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 3
100 write(2, \"2026-01-01T00:00:00Z  INFO sandbox: landlock=full seccomp=on\\n\", 60) = 60
100 openat(AT_FDCWD, \"/etc/hosts\", O_RDONLY|O_CLOEXEC) = 4
101 openat(AT_FDCWD, \"/tmp/denied\", O_WRONLY|O_CREAT|O_CLOEXEC, 0666) = -1 EACCES (Permission denied)
101 openat(AT_FDCWD, \"/tmp/rec.wav\", O_RDWR|O_CREAT|O_CLOEXEC, 0666 <unfinished ...>
100 write(2, \"x\", 1)                  = 1
101 <... openat resumed>)             = 5
102 unlink(\"/tmp/x\")                  = -1 EACCES (Permission denied)
102 memfd_create(\"audio\", MFD_CLOEXEC) = 6
102 --- SIGTERM {si_signo=SIGTERM, si_code=SI_USER} ---
102 +++ exited with 0 +++
";
    let found = writes_after_sandbox(trace).unwrap();
    let names: Vec<_> = found.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(found.len(), 2, "{names:#?}");
    assert!(found[0].text.contains("/tmp/rec.wav") && found[0].result == "5");
    assert_eq!(found[1].name, "memfd_create");
    // Before the line, writes are fine; failed attempts after it are fine too.
    assert!(!names
        .iter()
        .any(|t| t.contains("/tmp/before") || t.contains("/tmp/denied")));
    assert!(writes_after_sandbox("100 openat(AT_FDCWD, \"a\", O_RDONLY) = 3\n").is_err());
}

#[test]
fn strace_sees_no_file_written_after_the_sandbox_line_through_a_call() {
    let trace_dir = TempDir::new("trace");
    let trace_path = trace_dir.path().join("bridge.strace");
    let mut bridge = Bridge::start(
        "strace",
        "42200-42299",
        Launch {
            strace_to: Some(trace_path.clone()),
            ..Launch::default()
        },
    );
    full_call(&mut bridge, false);
    bridge.signal(libc::SIGTERM);
    let exit = bridge.wait_exit(Duration::from_secs(20));
    let trace = std::fs::read_to_string(&trace_path).unwrap();
    match exit {
        Ok(status) => assert!(status.success(), "strace/bridge exit: {status}"),
        Err(e) => panic!("{e}\ntrace tail:\n{}", tail(&trace)),
    }

    let start = sandbox_line(&trace).unwrap_or_else(|| {
        panic!(
            "the trace has no write of the `sandbox:` line:\n{}",
            tail(&trace)
        )
    });
    let calls = parse_trace(&trace);
    // The trace is parsed: before the line, the config was read...
    assert!(
        calls.iter().any(|c| c.line < start
            && c.name == "openat"
            && c.text.contains("sotto.toml")
            && c.succeeded()),
        "the trace checker did not see the config being opened:\n{}",
        tail(&trace)
    );
    // ... and after it, the call's packets went out.
    let sends = calls
        .iter()
        .filter(|c| c.line > start && c.name.starts_with("send") && c.succeeded())
        .count();
    assert!(
        sends > 100,
        "only {sends} sends after the sandbox line: the call is not in the trace"
    );

    let writes = writes_after_sandbox(&trace).unwrap();
    assert!(
        writes.is_empty(),
        "files created or changed after the sandbox line:\n{}",
        writes
            .iter()
            .map(|c| c.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Nothing landed in the bridge's working directory either.
    assert_eq!(bridge.dir.entries(), vec!["sotto.toml".to_string()]);
}

fn tail(text: &str) -> String {
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

// ---------------------------------------------------------------------------------
// 3. SIGSEGV leaves no core.

/// Control for the core test: a plain process with an unlimited core limit, killed
/// by SIGSEGV in `dir`. Returns whether the kernel dumped a core.
fn control_dumps_core(dir: &Path) -> bool {
    let mut cmd = Command::new("sleep");
    cmd.arg("30").current_dir(dir);
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let unlimited = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &unlimited) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("starting sleep");
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGSEGV) };
    let status = child.wait().unwrap();
    status.core_dumped()
}

#[test]
fn sigsegv_leaves_no_core_file() {
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern")
        .unwrap()
        .trim()
        .to_string();
    let piped = pattern.starts_with('|');
    // Where cores go here, the same kill does leave one (so "no core" below means
    // something). Not with a pipe helper: that would hand a core to the system.
    if !piped && !pattern.starts_with('/') {
        let control = TempDir::new("segv-control");
        assert!(
            control_dumps_core(control.path()),
            "control: a process with RLIMIT_CORE unlimited left no core (core_pattern \
             {pattern:?}); this environment cannot show the bridge's protection"
        );
    }
    // Where a plain pattern puts cores, besides the working directory.
    let pattern_dir = (!piped && pattern.starts_with('/'))
        .then(|| Path::new(&pattern).parent().map(Path::to_path_buf))
        .flatten();
    let listing = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = pattern_dir.as_deref().map(listing).unwrap_or_default();

    let mut bridge = Bridge::start(
        "segv",
        "42300-42399",
        Launch {
            core_unlimited: true,
            ..Launch::default()
        },
    );
    bridge.summary();
    // Read before the kill: the limit the kernel will apply.
    assert_eq!(
        core_limits(&bridge.proc_file("limits")),
        ("0".to_string(), "0".to_string()),
        "RLIMIT_CORE was raised before start; the bridge must lower it to 0"
    );

    // Rust's runtime catches the first SIGSEGV (stack-overflow guard), resets it to
    // the default action and returns; so keep sending until the process dies.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        bridge.signal(libc::SIGSEGV);
        std::thread::sleep(Duration::from_millis(200));
        if let Some(status) = bridge.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the bridge survived SIGSEGV");
    };
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status}");
    // The kernel sets the core-dumped bit whenever a core was written, to a file or
    // to a pipe helper.
    assert!(
        !status.core_dumped(),
        "a core was dumped (core_pattern {pattern:?}{})",
        if piped { ", a pipe to a helper" } else { "" }
    );
    assert_eq!(
        bridge.dir.entries(),
        vec!["sotto.toml".to_string()],
        "a file appeared in the bridge's working directory (core_pattern {pattern:?})"
    );
    if let Some(dir) = &pattern_dir {
        let new: Vec<_> = listing(dir)
            .into_iter()
            .filter(|n| !before.contains(n))
            .collect();
        assert!(new.is_empty(), "new files in {}: {new:?}", dir.display());
    }
}

// ---------------------------------------------------------------------------------
// 4. Core limit 0 and memory locked, from /proc.

#[test]
fn core_limit_is_zero_and_memory_is_locked() {
    let mut bridge = Bridge::start(
        "limits",
        "42400-42499",
        Launch {
            core_unlimited: true,
            ..Launch::default()
        },
    );
    let summary = bridge.summary();
    assert!(summary.contains("core=0"), "{summary}");
    assert_eq!(
        core_limits(&bridge.proc_file("limits")),
        ("0".to_string(), "0".to_string()),
    );
    let status = bridge.proc_file("status");
    let locked_kib: u64 = status_field(&status, "VmLck")
        .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
        .expect("VmLck in /proc/<pid>/status");
    if summary.ends_with("mlock=on") {
        // The binary's text and data alone are megabytes; every new mapping is
        // locked too (MCL_FUTURE).
        let rss_kib: u64 = status_field(&status, "VmRSS")
            .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        assert!(locked_kib > 1024, "VmLck {locked_kib} kB with mlock=on");
        assert!(
            locked_kib * 10 >= rss_kib * 9,
            "only {locked_kib} of {rss_kib} kB resident are locked"
        );
    } else {
        assert_eq!(locked_kib, 0, "{summary}");
        assert!(
            bridge.stderr.count("LimitMEMLOCK=infinity") >= 1,
            "mlock=off without a warning naming the fix"
        );
    }
    // As root (CAP_IPC_LOCK), locking must have worked.
    if unsafe { libc::geteuid() } == 0 {
        assert!(summary.ends_with("mlock=on"), "{summary}");
    }
}
