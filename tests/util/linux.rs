//! Linux-only helpers for the reliability tests: descriptor and memory
//! accounting from /proc, the open-files limit, and child processes made by
//! re-running this very test binary in another role.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

/// Environment variable that tells a re-executed test binary which role to play.
pub const CHILD_ROLE: &str = "TOFU_CHILD_ROLE";

/// Open file descriptors of this process (the listing's own handle excluded).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| !t.to_string_lossy().ends_with("/fd"))
        })
        .count()
}

/// Serializes the tests of one binary that count descriptors or memory of the
/// whole process (the harness runs tests on parallel threads).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Resident set size of this process in KiB (VmRSS).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Raises the soft open-files limit to `want` (at most the hard limit);
/// returns the soft limit in force afterwards.
pub fn raise_nofile(want: u64) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    let target = libc::rlim_t::try_from(want)
        .unwrap_or(libc::rlim_t::MAX)
        .min(r.rlim_max);
    if r.rlim_cur < target {
        r.rlim_cur = target;
        // SAFETY: setrlimit reads the struct we own.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }, 0);
    }
    #[allow(clippy::useless_conversion)] // rlim_t is u32 on some targets
    u64::from(r.rlim_cur)
}

/// This test binary running one test (`entry`) in another process, with
/// [`CHILD_ROLE`] = `role` and the extra environment `env`. It talks through
/// lines on stdin/stdout; it is killed (SIGKILL) and reaped when dropped.
pub struct ChildProc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    /// Reads the child's stdout; holds the pipe until the child exits.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ChildProc {
    /// Starts the child; `entry` is the name of the test function acting as its
    /// entry point (run with `--exact --ignored`).
    pub fn spawn(entry: &str, role: &str, env: &[(&str, String)]) -> ChildProc {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.args([
            entry,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROLE, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn child test process");
        let stdin = child.stdin.take();
        let stdout: ChildStdout = child.stdout.take().expect("child stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChildProc {
            child,
            stdin,
            lines,
            reader: Some(reader),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (at most `limit`) for a stdout line containing `prefix`; returns
    /// the rest of it after the prefix. Other lines (the test harness's) are skipped.
    #[track_caller]
    pub fn expect_line(&self, prefix: &str, limit: std::time::Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                // The harness may have started the line ("test x ... ").
                Ok(l) => {
                    if let Some(at) = l.find(prefix) {
                        return l[at + prefix.len()..].trim().to_string();
                    }
                }
                Err(e) => panic!("child: no line starting with {prefix:?}: {e}"),
            }
        }
    }

    /// Every stdout line received so far (without waiting).
    pub fn drain_lines(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Sends one command line to the child.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("child stdin open");
        writeln!(stdin, "{line}").expect("write to child");
        stdin.flush().expect("flush to child");
    }

    /// Closes the child's stdin (it exits when it sees the end) and waits for it.
    #[track_caller]
    pub fn finish(mut self, limit: std::time::Duration) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                self.join_reader();
                return st;
            }
            assert!(Instant::now() < deadline, "child did not exit in time");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// SIGKILL now, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_reader();
    }

    /// Waits (boundedly) for the stdout reader to see the end of the pipe
    /// and close it, so that a test counting this process's descriptors
    /// after this one does not see it close late.
    fn join_reader(&mut self) {
        let Some(reader) = self.reader.take() else {
            return;
        };
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while !reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if reader.is_finished() {
            let _ = reader.join();
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        } else {
            self.join_reader();
        }
    }
}

/// In a child process: the role it was started for (`None` in a normal run).
pub fn child_role() -> Option<String> {
    std::env::var(CHILD_ROLE).ok()
}

/// In a child process: prints one line for the parent and flushes it.
pub fn tell_parent(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("stdout");
}

/// In a child process: a thread that calls `on_line` for each stdin line and
/// exits the process when stdin ends (the parent finished or died).
pub fn serve_parent_commands(mut on_line: impl FnMut(&str) + Send + 'static) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            on_line(line.trim());
        }
        std::process::exit(0);
    });
}
