//! The server side of a measurement: on a thread of this process, or (with
//! `--processes`) in a child process — this binary re-executed with the
//! hidden `--serve SYSTEM TRANSPORT ADDR WORKLOAD` arguments, as a user would
//! run a server program and a client program.
//!
//! Either way the measuring side gets the same handle: it waits (bounded)
//! for the server's `ready` line, may wait for further lines (a PUSH/PULL
//! sink saying a stream ended), and stops the server at the end, again with
//! a deadline: a child that has not exited by then is killed.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::*;

/// How long a server may take to listen.
const READY_WAIT: Duration = Duration::from_secs(10);
/// How long a server may take to stop once told.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// A running server.
pub(crate) struct Server {
    lines: mpsc::Receiver<String>,
    side: Option<Side>,
}

enum Side {
    Thread {
        stop: Arc<AtomicBool>,
        handle: JoinHandle<Res<()>>,
    },
    Child {
        child: Child,
        stdin: Option<ChildStdin>,
    },
}

impl Server {
    /// Starts `system`'s server for `w` on `ep` (a thread, or a child process
    /// when `processes`) and waits for it to listen.
    pub(crate) fn start(system: &str, w: Workload, ep: &Endpoint, processes: bool) -> Res<Server> {
        let (tx, lines) = mpsc::channel();
        let side = if processes {
            let [transport, addr] = ep.to_args();
            let mut child = Command::new(std::env::current_exe()?)
                .args(["--serve", system, &transport, &addr, w.name()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            let stdin = child.stdin.take();
            let Some(stdout) = child.stdout.take() else {
                let _ = child.kill();
                let _ = child.wait();
                return Err("no stdout from the server process".into());
            };
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            Side::Child { child, stdin }
        } else {
            let stop = Arc::new(AtomicBool::new(false));
            let ctl = Ctl::new(stop.clone(), Some(tx));
            let (system, ep) = (system.to_string(), ep.clone());
            let handle = thread::spawn(move || {
                let r = crate::serve(&system, w, &ep, &ctl);
                if let Err(e) = &r {
                    ctl.say(&format!("error: {e}"));
                }
                r
            });
            Side::Thread { stop, handle }
        };
        let mut server = Server {
            lines,
            side: Some(side),
        };
        match server.line("the ready line", READY_WAIT) {
            Ok(l) if l == "ready" => Ok(server),
            Ok(other) => {
                let _ = server.finish();
                Err(format!("server said {other:?} instead of ready").into())
            }
            Err(e) => {
                let _ = server.finish();
                Err(e)
            }
        }
    }

    /// The server's next line, waiting at most `timeout`.
    pub(crate) fn line(&self, what: &str, timeout: Duration) -> Res<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) if l.starts_with("error:") => Err(format!("server {l}").into()),
            Ok(l) => Ok(l),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(format!("server: no {what} within {timeout:?}").into())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(format!("server stopped before {what}").into())
            }
        }
    }

    /// Stops the server: sets its stop flag (thread) or closes its stdin
    /// (child), then waits up to 5 s; a child still running is killed.
    pub(crate) fn finish(&mut self) -> Res<()> {
        let Some(side) = self.side.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + STOP_WAIT;
        match side {
            Side::Thread { stop, handle } => {
                stop.store(true, Ordering::Release);
                while !handle.is_finished() {
                    if Instant::now() > deadline {
                        return Err("server thread did not stop within 5 s (left running)".into());
                    }
                    thread::sleep(Duration::from_millis(2));
                }
                handle.join().map_err(|_| "server thread panicked")?
            }
            Side::Child { mut child, stdin } => {
                drop(stdin); // EOF: the child's signal to stop
                loop {
                    if let Some(status) = child.try_wait()? {
                        if status.success() {
                            return Ok(());
                        }
                        return Err(format!("server process exited with {status}").into());
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err("server process did not stop within 5 s (killed)".into());
                    }
                    thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The child's side of `--processes`: `args` = SYSTEM TRANSPORT ADDR
/// WORKLOAD. Serves until stdin closes (the parent is done, or gone), then
/// exits: 0 after a clean stop, 1 on an error, 3 when the server did not
/// stop within 5 s of being told.
pub(crate) fn child_main(args: &[String]) -> ! {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        flag.store(true, Ordering::Release);
        thread::sleep(STOP_WAIT);
        std::process::exit(3);
    });
    let ctl = Ctl::new(stop, None);
    let r = (|| -> Res<()> {
        let [system, transport, addr, workload] = args else {
            return Err("--serve needs SYSTEM TRANSPORT ADDR WORKLOAD".into());
        };
        let ep = Endpoint::from_args(transport, addr)?;
        let w = Workload::from_name(workload).ok_or("unknown workload")?;
        crate::serve(system, w, &ep, &ctl)
    })();
    match r {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            ctl.say(&format!("error: {e}"));
            eprintln!("tofu-bench --serve: {e}");
            std::process::exit(1);
        }
    }
}
