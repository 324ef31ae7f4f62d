//! `tofu`: the command line for the tofu messaging library.
//!
//! * `tofu bench` starts a tofu server and client on loopback (TCP and UDS,
//!   separate engines) and prints round-trip latency and one-way throughput;
//!   `tofu bench --connect ADDR` runs the client half against any tofu server.
//! * `tofu serve --listen ADDR` is an echo server that logs every message.
//! * `tofu send --connect ADDR` sends one Request (or Signal) and prints the
//!   Response: curl for tofu.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | failure: listen failed, connection lost, unexpected reply, I/O error |
//! | 2 | usage: unknown option, bad address syntax, body too large |
//! | 3 | cannot connect: nothing listening, host not found, UDS path missing |
//! | 4 | timeout: the peer did not answer within `--timeout` |

mod bench;
mod fail;
mod measure;
mod report;
mod send;
mod serve;
mod session;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tofu::Address;

use fail::{EXIT_CODES_HELP, Failure};

/// How long `--quick` measures each figure.
const QUICK: Duration = Duration::from_millis(500);
/// How long each figure is measured by default.
const DEFAULT_DURATION: Duration = Duration::from_secs(2);

const BENCH_HELP: &str = "\
Round trips: one Request at a time per connection, answered by a Response with
the same body; p50/p99/p99.9 over all connections. One-way: Signals sent in
batches, each batch followed by a marker Request; the server handles a
channel's messages in order, so the Response to a marker proves every Signal
before it was received. At most two batches are unconfirmed at a time, and
the clock stops at the last marker's Response, so msgs/s counts delivered
messages, not messages queued at the sender. Against our own server the
count the server received is checked as well. The engines here (client, and
our own server) run with larger pools than Options::default(): the header
prints them (tofu-bench's `tofu` row shows the defaults).

Default plan: round trips with 16 B and 1 KiB bodies, one-way with 64 B,
1 KiB and 64 KiB (65535 B, the largest body). --sizes measures both at each
size. --connect works with any tofu server, this implementation's or the
original Zig one's (the wire is the same), whose application accepts the
HelloRequest, answers each Request with a Response carrying the same body,
handles a channel's messages in order and answers ByeRequest: `tofu serve
--quiet` is one.

JSON (--json): an array of objects, one per transport and size, with the
fields system, transport, size, connections, rtt_p50_us, rtt_p99_us,
rtt_p999_us, msgs_per_s, mb_per_s (null where not measured; MB = 10^6 body
bytes).";

/// The tofu command line: benchmark, serve, send.
#[derive(Parser, Debug)]
#[command(name = "tofu", version, about, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure round-trip latency and one-way throughput (no set-up needed:
    /// starts its own server on loopback, TCP and UDS).
    #[command(after_help = format!("{BENCH_HELP}\n\n{EXIT_CODES_HELP}"))]
    Bench(BenchCmd),
    /// Run an echo server that logs each message and answers Hello, Request
    /// and Bye.
    #[command(after_help = EXIT_CODES_HELP)]
    Serve(ServeCmd),
    /// Connect, send one Request (or Signal), print the Response, say Bye.
    #[command(after_help = EXIT_CODES_HELP)]
    Send(SendCmd),
}

#[derive(Args, Debug)]
struct BenchCmd {
    /// Measure against the tofu server at ADDR (tcp|HOST|PORT or uds|PATH)
    /// instead of starting one here.
    #[arg(long, value_name = "ADDR", value_parser = parse_client)]
    connect: Option<Address>,
    /// A short run: 0.5 s per figure (a few seconds in all).
    #[arg(long, conflicts_with = "duration")]
    quick: bool,
    /// How long each figure is measured: 2s, 500ms, 1.5 (seconds).
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Body sizes to measure, comma-separated: 16,1k,64k (64k means 65535, the
    /// largest body).
    #[arg(long, value_name = "LIST", value_parser = parse_sizes)]
    sizes: Option<Sizes>,
    /// Concurrent channels (each with its own thread).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    connections: u16,
    /// Print the results as JSON (no table, no progress bar).
    #[arg(long)]
    json: bool,
    /// Give up when the server does not answer within TIME.
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Let a waiting thread spin this long before it sleeps
    /// (Options::receive_spin): 50us, 0.2ms; 0 (the default) never spins.
    #[arg(long, value_name = "TIME", default_value = "0", value_parser = parse_spin)]
    spin: Duration,
}

#[derive(Args, Debug)]
struct ServeCmd {
    /// Where to listen (repeatable): tcp|HOST|PORT (HOST an IP, a name, or
    /// empty for all IPv4 interfaces) or uds|PATH (empty: a fresh temp path).
    #[arg(long, value_name = "ADDR", value_parser = parse_server,
          default_value = "tcp|127.0.0.1|7099")]
    listen: Vec<Address>,
    /// Do not log each message (for benchmarks).
    #[arg(long, short)]
    quiet: bool,
    /// Let the serving thread spin this long before it sleeps
    /// (Options::receive_spin): 50us, 0.2ms; 0 (the default) never spins.
    #[arg(long, value_name = "TIME", default_value = "0", value_parser = parse_spin)]
    spin: Duration,
}

#[derive(Args, Debug)]
struct SendCmd {
    /// The server: tcp|HOST|PORT or uds|PATH.
    #[arg(long, value_name = "ADDR", value_parser = parse_client)]
    connect: Address,
    /// A text header NAME:VALUE (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// The body, as text.
    #[arg(long, value_name = "TEXT", conflicts_with = "body_file")]
    body: Option<String>,
    /// The body, read from a file (at most 65535 bytes).
    #[arg(long, value_name = "FILE")]
    body_file: Option<PathBuf>,
    /// Send a Signal (no Response expected) instead of a Request.
    #[arg(long)]
    signal: bool,
    /// Give up when the server does not answer within TIME.
    #[arg(long, value_name = "TIME", default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
}

/// A parsed `--sizes` list (a newtype: clap treats a bare `Vec` as repeats).
#[derive(Clone, Debug)]
struct Sizes(Vec<usize>);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout();
    let result = match cli.command {
        Command::Bench(b) => {
            let args = bench::BenchArgs {
                connect: b.connect,
                duration: match (b.quick, b.duration) {
                    (_, Some(d)) => d,
                    (true, None) => QUICK,
                    (false, None) => DEFAULT_DURATION,
                },
                sizes: b.sizes.map(|s| s.0),
                connections: b.connections.into(),
                json: b.json,
                timeout: b.timeout,
                spin: b.spin,
            };
            bench::run(&args, &mut stdout)
        }
        Command::Serve(s) => serve::run(
            &s.listen,
            s.quiet,
            s.spin,
            Duration::from_secs(5),
            &mut stdout,
        ),
        Command::Send(s) => send_command(s, &mut stdout),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("tofu: {f}");
            f.exit_code()
        }
    }
}

fn send_command(s: SendCmd, out: &mut dyn std::io::Write) -> Result<(), Failure> {
    let body = match (s.body, s.body_file) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(path)) => std::fs::read(&path).map_err(|e| {
            Failure::Usage(format!("cannot read --body-file {}: {e}", path.display()))
        })?,
        (None, None) => Vec::new(),
    };
    send::run(
        send::SendArgs {
            connect: s.connect,
            headers: s.headers,
            body,
            signal: s.signal,
            timeout: s.timeout,
        },
        out,
    )
}

const ADDRESS_SYNTAX: &str =
    "expected tcp|HOST|PORT (e.g. 'tcp|127.0.0.1|7099') or uds|PATH (e.g. 'uds|/tmp/tofu.sock')";

fn parse_client(s: &str) -> Result<Address, String> {
    s.parse::<Address>()
        .map_err(|_| format!("not a tofu address: {ADDRESS_SYNTAX}"))
}

fn parse_server(s: &str) -> Result<Address, String> {
    Address::parse_server(s).map_err(|_| {
        "not a tofu listen address: expected tcp|HOST|PORT (e.g. 'tcp|0.0.0.0|7099', \
         'tcp||7099', 'tcp|localhost|0') or uds|PATH (e.g. 'uds|/tmp/tofu.sock', 'uds|')"
            .to_string()
    })
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| "expected NAME:VALUE".to_string())?;
    let (name, value) = (name.trim(), value.trim());
    if name.is_empty() || value.is_empty() {
        return Err("expected NAME:VALUE, both non-empty".into());
    }
    if s.contains(['\r', '\n']) {
        return Err("a header cannot contain a line break".into());
    }
    Ok((name.to_string(), value.to_string()))
}

/// `2s`, `500ms`, `1.5` (seconds), `1m`.
/// A spin budget: `0`, or a time in µs (`50us`, `50µs`) or ms (`0.2ms`),
/// at most `tofu::MAX_RECEIVE_SPIN`.
fn parse_spin(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let (num, scale) = if let Some(n) = s.strip_suffix("us").or_else(|| s.strip_suffix("µs")) {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else {
        return Err(format!("not a spin budget: '{s}' (use 0, 50us or 0.2ms)"));
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a spin budget: '{s}' (use 0, 50us or 0.2ms)"))?;
    let max = tofu::MAX_RECEIVE_SPIN;
    if !(n >= 0.0 && n * scale <= max.as_secs_f64()) {
        return Err(format!("spin budget '{s}' out of range (0 to {max:?})"));
    }
    Ok(Duration::from_secs_f64(n * scale))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: '{s}' (use 2s, 500ms or 1.5)"))?;
    let secs = match unit.trim() {
        "s" | "sec" => n,
        "ms" => n / 1e3,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("unknown time unit in '{s}' (use s, ms or m)")),
    };
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "'{s}' is out of range (more than 0, at most a day)"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `16,1k,64k`: bytes, with `k` = 1024; 64k (65536) means 65535, the largest
/// body a message carries.
fn parse_sizes(s: &str) -> Result<Sizes, String> {
    let mut sizes = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let lower = part.to_ascii_lowercase();
        let (digits, k) = match lower
            .strip_suffix("kib")
            .or_else(|| lower.strip_suffix('k'))
        {
            Some(d) => (d.to_string(), 1024),
            None => (lower.trim_end_matches('b').to_string(), 1),
        };
        let n: usize = digits
            .trim()
            .parse()
            .map_err(|_| format!("not a size: '{part}' (use bytes, or k for KiB: 16,1k,64k)"))?;
        let n = n.saturating_mul(k);
        let n = match n {
            65536 => bench::BIG,
            n if n > bench::BIG => {
                return Err(format!(
                    "'{part}' is too large: a body holds at most {} bytes",
                    bench::BIG
                ));
            }
            n => n,
        };
        if !sizes.contains(&n) {
            sizes.push(n);
        }
    }
    if sizes.is_empty() {
        return Err("no sizes given (use e.g. 16,1k,64k)".into());
    }
    Ok(Sizes(sizes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("3h").is_err());
    }

    #[test]
    fn spin_budgets() {
        assert_eq!(parse_spin("0"), Ok(Duration::ZERO));
        assert_eq!(parse_spin("50us"), Ok(Duration::from_micros(50)));
        assert_eq!(parse_spin("50µs"), Ok(Duration::from_micros(50)));
        assert_eq!(parse_spin("0.2ms"), Ok(Duration::from_micros(200)));
        assert_eq!(parse_spin("10ms"), Ok(tofu::MAX_RECEIVE_SPIN));
        assert!(parse_spin("11ms").is_err());
        assert!(parse_spin("50").is_err());
        assert!(parse_spin("-1us").is_err());
        assert!(parse_spin("xus").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_sizes("16, 1k,64k").unwrap().0, vec![16, 1024, 65535]);
        assert_eq!(parse_sizes("64B,0").unwrap().0, vec![64, 0]);
        assert_eq!(parse_sizes("65535").unwrap().0, vec![65535]);
        assert!(parse_sizes("65537").is_err());
        assert!(parse_sizes("1m").is_err());
        assert!(parse_sizes("").is_err());
    }

    #[test]
    fn headers() {
        assert_eq!(
            parse_header("k: v:w"),
            Ok(("k".to_string(), "v:w".to_string()))
        );
        assert!(parse_header("novalue").is_err());
        assert!(parse_header(":v").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
