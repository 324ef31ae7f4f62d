//! The `tofu` binary, run as a person would: bench, serve + send, and the
//! failures (nothing listening, bad address, timeout) with their exit codes.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tofu::testing::{free_tcp_port, temp_uds_path};

/// Upper bound for one command (a debug build on a busy machine).
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// Upper bound for a server to say it is listening.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

const EXIT_USAGE: i32 = 2;
const EXIT_CONNECT: i32 = 3;
const EXIT_TIMEOUT: i32 = 4;
const EXIT_FAILURE: i32 = 1;

fn tofu() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tofu"))
}

/// A finished command.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn code(&self) -> i32 {
        self.status.code().expect("exited, not killed")
    }
}

/// Kills the child when dropped (also when a test fails).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes a socket file left by a killed server.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `tofu ARGS` to completion, killing it after [`RUN_TIMEOUT`].
#[track_caller]
fn run(args: &[&str]) -> Run {
    let child = tofu()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tofu");
    let mut child = KillOnDrop(child);
    let stdout = reader(child.0.stdout.take().expect("stdout"));
    let stderr = reader(child.0.stderr.take().expect("stderr"));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "tofu {args:?} did not finish within {RUN_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// A `tofu serve` child: started, waited for until it listens, killed on drop.
struct Server {
    /// Held for its `Drop`: kills the server.
    _child: KillOnDrop,
    /// Log lines read so far from its stdout.
    lines: mpsc::Receiver<String>,
}

impl Server {
    #[track_caller]
    fn start(listen: &[&str], extra: &[&str]) -> Server {
        let mut cmd = tofu();
        cmd.arg("serve");
        for l in listen {
            cmd.args(["--listen", l]);
        }
        let child = cmd
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tofu serve");
        let mut child = KillOnDrop(child);
        let out = BufReader::new(child.0.stdout.take().expect("stdout"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let server = Server {
            _child: child,
            lines,
        };
        for l in listen {
            let line = server.next_line();
            assert!(
                line.starts_with("listening on ")
                    && line.contains(l.split('|').next_back().unwrap()),
                "expected 'listening on {l}', got {line:?}"
            );
        }
        server
    }

    #[track_caller]
    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(READY_TIMEOUT)
            .expect("a line from tofu serve in time")
    }

    /// Reads log lines until one contains all of `parts`.
    #[track_caller]
    fn expect_log(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if parts.iter().all(|p| line.contains(p)) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line containing {parts:?}"),
            }
        }
    }
}

fn tcp(port: u16) -> String {
    format!("tcp|127.0.0.1|{port}")
}

fn uds(path: &Path) -> String {
    format!("uds|{}", path.display())
}

#[test]
fn bench_quick_json_has_the_rows_and_fields() {
    let r = run(&["bench", "--quick", "--json"]);
    assert_eq!(r.code(), 0, "stderr: {}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", r.stdout));
    let rows = v.as_array().expect("an array of rows");
    let transports: &[&str] = if tofu::testing::uds_unavailable().is_none() {
        &["tcp", "uds"]
    } else {
        &["tcp"]
    };
    assert_eq!(rows.len(), 4 * transports.len(), "{rows:?}");
    for row in rows {
        for field in [
            "system",
            "transport",
            "size",
            "rtt_p50_us",
            "rtt_p99_us",
            "msgs_per_s",
            "mb_per_s",
        ] {
            assert!(row.get(field).is_some(), "{field} missing in {row}");
        }
        assert_eq!(row["system"], "tofu");
        let size = row["size"].as_u64().expect("size");
        let rtt = [16, 1024].contains(&size);
        let one_way = [64, 1024, 65535].contains(&size);
        assert!(rtt || one_way, "unexpected size {size}");
        for f in ["rtt_p50_us", "rtt_p99_us"] {
            if rtt {
                assert!(row[f].as_f64().expect(f) > 0.0, "{row}");
            } else {
                assert!(row[f].is_null(), "{f} should be null: {row}");
            }
        }
        for f in ["msgs_per_s", "mb_per_s"] {
            if one_way {
                assert!(row[f].as_f64().expect(f) > 0.0, "{row}");
            } else {
                assert!(row[f].is_null(), "{f} should be null: {row}");
            }
        }
    }
    for t in transports {
        let sizes: Vec<u64> = rows
            .iter()
            .filter(|r| r["transport"] == *t)
            .map(|r| r["size"].as_u64().unwrap())
            .collect();
        assert_eq!(sizes, [16, 64, 1024, 65535], "{t}");
    }
}

#[test]
fn bench_connect_measures_against_tofu_serve() {
    let port = free_tcp_port().unwrap();
    let addr = tcp(port);
    let _server = Server::start(&[&addr], &["--quiet"]);
    let r = run(&[
        "bench",
        "--connect",
        &addr,
        "--duration",
        "200ms",
        "--sizes",
        "32",
        "--connections",
        "2",
        "--json",
    ]);
    assert_eq!(r.code(), 0, "stderr: {}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["transport"], "tcp");
    assert_eq!(row["size"], 32);
    assert_eq!(row["connections"], 2);
    for f in ["rtt_p50_us", "rtt_p99_us", "msgs_per_s", "mb_per_s"] {
        assert!(row[f].as_f64().expect(f) > 0.0, "{row}");
    }
}

fn round_trip(addr: &str) {
    let server = Server::start(&[addr], &[]);
    let r = run(&[
        "send",
        "--connect",
        addr,
        "--header",
        "colour: blue",
        "-H",
        "n:7",
        "--body",
        "hello tofu",
    ]);
    assert_eq!(r.code(), 0, "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "colour: blue\nn: 7\n\nhello tofu");
    server.expect_log(&["HelloRequest"]);
    server.expect_log(&["Request", "colour: blue, n: 7", "10 B", "\"hello tofu\""]);
    server.expect_log(&["ByeRequest"]);
    server.expect_log(&["channel_closed"]);
}

#[test]
fn serve_and_send_round_trip_tcp() {
    round_trip(&tcp(free_tcp_port().unwrap()));
}

#[test]
fn serve_and_send_round_trip_uds() {
    if tofu::testing::uds_not_applicable() {
        return;
    }
    let path = RemoveOnDrop(temp_uds_path());
    round_trip(&uds(&path.0));
}

#[test]
fn one_server_two_listeners_body_file_and_signal() {
    if tofu::testing::uds_not_applicable() {
        return;
    }
    let (port, path) = (free_tcp_port().unwrap(), RemoveOnDrop(temp_uds_path()));
    let (t, u) = (tcp(port), uds(&path.0));
    let server = Server::start(&[&t, &u], &[]);

    let file = std::env::temp_dir().join(format!("tofu-cli-body-{}", std::process::id()));
    std::fs::write(&file, b"bytes\x00\x01 from a file").unwrap();
    let r = run(&[
        "send",
        "--connect",
        &u,
        "--body-file",
        file.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(r.code(), 0, "stderr: {}", r.stderr);
    assert_eq!(r.stdout.as_bytes(), b"\nbytes\x00\x01 from a file");
    server.expect_log(&["Request", "\"bytes\\x00\\x01 from a file\""]);

    let r = run(&["send", "--connect", &t, "--signal", "--body", "ping"]);
    assert_eq!(r.code(), 0, "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "", "a Signal has no Response");
    server.expect_log(&["Signal", "\"ping\""]);
}

#[test]
fn send_to_nothing_listening_exits_3() {
    let addr = tcp(free_tcp_port().unwrap());
    let r = run(&["send", "--connect", &addr, "--body", "x"]);
    assert_eq!(r.code(), EXIT_CONNECT, "stderr: {}", r.stderr);
    assert!(
        r.stderr.contains("cannot connect") && r.stderr.contains(&addr),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "");
}

#[test]
fn send_to_missing_uds_path_exits_3() {
    if tofu::testing::uds_not_applicable() {
        return;
    }
    let addr = uds(&temp_uds_path());
    let r = run(&["send", "--connect", &addr]);
    assert_eq!(r.code(), EXIT_CONNECT, "stderr: {}", r.stderr);
    assert!(r.stderr.contains("uds_path_not_found"), "{}", r.stderr);
}

#[test]
fn bench_connect_to_nothing_listening_exits_3() {
    let addr = tcp(free_tcp_port().unwrap());
    let r = run(&["bench", "--connect", &addr, "--json"]);
    assert_eq!(r.code(), EXIT_CONNECT, "stderr: {}", r.stderr);
    assert!(r.stderr.contains("cannot connect"), "{}", r.stderr);
}

#[test]
fn bad_address_syntax_exits_2() {
    for (args, what) in [
        (
            &["send", "--connect", "127.0.0.1:7099"][..],
            "not a tofu address",
        ),
        (
            &["send", "--connect", "tcp|127.0.0.1|0"][..],
            "not a tofu address",
        ),
        (&["bench", "--connect", "udp|x|1"][..], "not a tofu address"),
        (
            &["serve", "--listen", "tcp|local host|7099"][..],
            "not a tofu listen address",
        ),
    ] {
        let r = run(args);
        assert_eq!(r.code(), EXIT_USAGE, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(what), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("tcp|HOST|PORT") || r.stderr.contains("tcp|IP|PORT"));
    }
}

#[test]
fn other_usage_errors_exit_2() {
    // Too big a body, from a file (a 70,000-byte argument would not fit on a
    // Windows command line, whose limit is 32,767 characters).
    let file = std::env::temp_dir().join(format!("tofu-cli-big-{}", std::process::id()));
    std::fs::write(&file, "x".repeat(70_000)).unwrap();
    let r = run(&[
        "send",
        "--connect",
        "tcp|127.0.0.1|7099",
        "--body-file",
        file.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(r.code(), EXIT_USAGE, "{}", r.stderr);
    assert!(r.stderr.contains("at most 65535"), "{}", r.stderr);

    let r = run(&["send", "--connect", "tcp|127.0.0.1|7099", "-H", "novalue"]);
    assert_eq!(r.code(), EXIT_USAGE, "{}", r.stderr);

    let r = run(&["bench", "--quick", "--duration", "1s"]);
    assert_eq!(r.code(), EXIT_USAGE, "{}", r.stderr);

    let r = run(&["bench", "--sizes", "100k"]);
    assert_eq!(r.code(), EXIT_USAGE, "{}", r.stderr);
}

#[test]
fn silent_peer_times_out_with_exit_4() {
    // A listener that never answers: the kernel completes the connection, no
    // HelloResponse ever comes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp(listener.local_addr().unwrap().port());
    let r = run(&["send", "--connect", &addr, "--timeout", "500ms"]);
    assert_eq!(r.code(), EXIT_TIMEOUT, "stderr: {}", r.stderr);
    assert!(
        r.stderr.contains("no answer") && r.stderr.contains(&addr),
        "{}",
        r.stderr
    );
    drop(listener);
}

#[test]
fn serve_on_a_busy_port_exits_1() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp(listener.local_addr().unwrap().port());
    let r = run(&["serve", "--listen", &addr]);
    assert_eq!(r.code(), EXIT_FAILURE, "stderr: {}", r.stderr);
    assert!(r.stderr.contains("cannot listen"), "{}", r.stderr);
    drop(listener);
}

#[test]
fn help_documents_the_exit_codes() {
    for cmd in ["bench", "serve", "send"] {
        let r = run(&[cmd, "--help"]);
        assert_eq!(r.code(), 0);
        for code in ["2  usage", "3  cannot connect", "4  timeout"] {
            assert!(r.stdout.contains(code), "{cmd} --help lacks '{code}'");
        }
    }
}
