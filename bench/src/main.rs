//! Side-by-side benchmarks: tofu against raw blocking sockets (the ceiling),
//! tokio + `LengthDelimitedCodec`, ZeroMQ, message-io and (optionally) NNG,
//! the same workloads, in the same run, on the same machine.
//!
//! ```text
//! $ cargo run --release -p tofu-bench -- --help
//! tofu side by side with raw sockets, tokio, ZeroMQ, message-io and NNG
//!
//! Usage: tofu-bench [OPTIONS]
//!
//! Options:
//!       --quick               Smaller counts; every figure still runs at least 0.5 s (full run: 2 s)
//!       --processes           Server and client in separate processes (default: threads of one process)
//!       --json                JSON rows instead of the text table
//!       --runs <N>            Repeat the matrix N times, report medians [default: 3]
//!       --markdown <FILE>     Rewrite FILE's generated results section
//!       --chart <FILE.svg>    Draw the SVG chart
//!       --only <SYSTEM,..>    Systems to run, comma-separated: raw, tofu, tofu-tuned, tofu-spin, tokio, zeromq, message-io
//!       --workload <NAME,..>  Workloads: rtt, pipelined, stream, connections (comma-separated)
//!   -h, --help                Print help
//!
//! tofu runs with Options::default(); tofu-tuned with initial_pool_msgs 1024, max_pool_msgs 16384 (default 16 / 64); every other option default; tofu-spin with receive_spin 50 µs (default 0: no spinning); every other option default.
//! ```
//!
//! Usage errors (an unknown flag, `--runs 0`, an unknown system or
//! workload) exit with status 2.
//!
//! Every measurement starts its server side first — on a thread, or with
//! `--processes` in a child process (this binary, re-executed with the hidden
//! `--serve SYSTEM TRANSPORT ADDR WORKLOAD`) — and measures from the client
//! side. The systems of a row are measured one after another, in an order
//! that rotates from run to run (`run_order`). See `docs/benchmarks.md`
//! for what each workload does and the rules that keep the systems
//! comparable.

mod chart;
mod common;
mod raw;
mod report;
mod server;
mod tofu_sys;
mod tokio_sys;

#[cfg(feature = "message-io")]
mod mio_sys;
#[cfg(feature = "nng")]
mod nng_sys;
#[cfg(feature = "zeromq")]
mod zmq_sys;

use std::time::Instant;

use clap::{CommandFactory, FromArgMatches, Parser};
use common::*;
use report::Row;

/// The systems compiled into this binary, in report order.
fn systems() -> Vec<&'static str> {
    let mut v = vec!["raw", "tofu", "tofu-tuned", "tofu-spin", "tokio"];
    if cfg!(feature = "zeromq") {
        v.push("zeromq");
    }
    if cfg!(feature = "message-io") {
        v.push("message-io");
    }
    if cfg!(feature = "nng") {
        v.push("nng");
    }
    v
}

/// The order of one run's measurements: every block (the systems of one
/// workload, size and transport) in turn, its systems rotated by `run`, so
/// that over the runs each system also runs first in its block, and the
/// one that ran first before no longer always starts on what the previous
/// block left behind (a machine that hands freed memory back to its host,
/// say). A rotation keeps each system's predecessor within the block. The
/// report keeps its order.
fn run_order(blocks: &[Vec<usize>], run: usize) -> Vec<usize> {
    let mut order = Vec::new();
    for block in blocks {
        let mut b = block.clone();
        let n = b.len();
        if n > 0 {
            b.rotate_left(run % n);
        }
        order.extend(b);
    }
    order
}

/// The workloads, in report order: (workload, body size).
pub(crate) const CASES: [(Workload, usize); 7] = [
    (Workload::Rtt, 16),
    (Workload::Rtt, 1024),
    (Workload::Pipelined, SMALL),
    (Workload::Stream, 64),
    (Workload::Stream, 1024),
    (Workload::Stream, BIG),
    (Workload::Connections, SMALL),
];

fn supports(system: &str, t: Transport) -> bool {
    !(system == "message-io" && t == Transport::Uds)
}

/// The server side of `system` for workload `w` on `ep`, until `ctl` says
/// stop (on a thread, or in a `--serve` child process).
pub(crate) fn serve(system: &str, w: Workload, ep: &Endpoint, ctl: &Ctl) -> Res<()> {
    match system {
        "raw" => raw::serve(w, ep, ctl),
        "tofu" | "tofu-tuned" | "tofu-spin" => tofu_sys::serve(tofu_sys::options(system), ep, ctl),
        "tokio" => tokio_sys::serve(w, ep, ctl),
        #[cfg(feature = "zeromq")]
        "zeromq" => zmq_sys::serve(w, ep, ctl),
        #[cfg(feature = "message-io")]
        "message-io" => mio_sys::serve(w, ep, ctl),
        #[cfg(feature = "nng")]
        "nng" => nng_sys::serve(w, ep, ctl),
        _ => Err(format!("unknown system {system}").into()),
    }
}

/// One measurement: a fresh endpoint, the server side started (thread or
/// process), the client side measured here, the server stopped.
fn measure(
    system: &str,
    t: Transport,
    w: Workload,
    size: usize,
    plan: &Plan,
    processes: bool,
) -> Res<Measure> {
    let ep = Endpoint::new(t)?;
    let mut server = server::Server::start(system, w, &ep, processes)?;
    let m = client(system, w, size, plan, &ep, &server);
    let stopped = server.finish();
    let m = m?;
    stopped?;
    Ok(m)
}

#[cfg_attr(not(any(feature = "zeromq", feature = "nng")), allow(unused_variables))]
fn client(
    system: &str,
    w: Workload,
    size: usize,
    plan: &Plan,
    ep: &Endpoint,
    server: &server::Server,
) -> Res<Measure> {
    match system {
        "raw" => raw::run(w, size, plan, ep),
        "tofu" | "tofu-tuned" | "tofu-spin" => {
            tofu_sys::run(tofu_sys::options(system), w, size, plan, ep)
        }
        "tokio" => tokio_sys::run(w, size, plan, ep),
        #[cfg(feature = "zeromq")]
        "zeromq" => zmq_sys::run(w, size, plan, ep, server),
        #[cfg(feature = "message-io")]
        "message-io" => mio_sys::run(w, size, plan, ep),
        #[cfg(feature = "nng")]
        "nng" => nng_sys::run(w, size, plan, ep, server),
        _ => Err(format!("unknown system {system}").into()),
    }
}

/// `tofu-bench`'s command line (clap derive, as `cli/`). The help texts
/// that name figures from the code (the quick plan's minimum time, the
/// systems compiled in, the tuned options) are filled in by [`command`].
#[derive(Parser, Debug)]
#[command(
    name = "tofu-bench",
    about = "tofu side by side with raw sockets, tokio, ZeroMQ, message-io and NNG"
)]
struct Args {
    /// Smaller counts (the full text is set in `command`).
    #[arg(long)]
    quick: bool,
    /// Server and client in separate processes (default: threads of one process).
    #[arg(long)]
    processes: bool,
    /// JSON rows instead of the text table.
    #[arg(long)]
    json: bool,
    /// Repeat the matrix N times, report medians.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = at_least_one)]
    runs: usize,
    /// Rewrite FILE's generated results section.
    #[arg(long, value_name = "FILE")]
    markdown: Option<String>,
    /// Draw the SVG chart.
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<String>,
    /// Systems to run, comma-separated (the full text is set in `command`).
    #[arg(long, value_name = "SYSTEM,..", value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Workloads: rtt, pipelined, stream, connections (comma-separated).
    #[arg(long = "workload", value_name = "NAME,..", value_delimiter = ',')]
    workloads: Option<Vec<String>>,
}

/// `--runs`: a whole number, at least 1.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("needs a number".into()),
    }
}

/// The command with the help texts that depend on the build and the plans.
fn command() -> clap::Command {
    Args::command()
        .mut_arg("quick", |a| {
            a.help(format!(
                "Smaller counts; every figure still runs at least {:.1} s (full run: {:.0} s)",
                Plan::quick().min_time.as_secs_f64(),
                Plan::full().min_time.as_secs_f64(),
            ))
        })
        .mut_arg("only", |a| {
            a.help(format!(
                "Systems to run, comma-separated: {}",
                systems().join(", ")
            ))
        })
        .after_help(format!(
            "tofu runs with Options::default(); tofu-tuned with {}; tofu-spin with {}.",
            tofu_sys::tuned_description(),
            tofu_sys::spin_description()
        ))
}

/// Parses the command line; usage errors exit with status 2 (clap's, and
/// an unknown system or workload), `--help` prints and exits with 0.
fn parse_args() -> Args {
    let args = match Args::from_arg_matches(&command().get_matches()) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let usage = |e: String| -> ! {
        eprintln!("tofu-bench: {e}");
        std::process::exit(2);
    };
    for s in args.only.iter().flatten() {
        if !systems().contains(&s.as_str()) {
            usage(format!(
                "unknown system {s} (compiled in: {})",
                systems().join(", ")
            ));
        }
    }
    for w in args.workloads.iter().flatten() {
        if Workload::from_name(w).is_none() {
            usage(format!(
                "unknown workload {w} (rtt, pipelined, stream, connections)"
            ));
        }
    }
    args
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("--serve") {
        raise_fd_limit();
        server::child_main(&argv[1..]);
    }
    let args = parse_args();
    raise_fd_limit();
    let plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let systems: Vec<&str> = systems()
        .into_iter()
        .filter(|s| args.only.as_ref().is_none_or(|o| o.iter().any(|x| x == s)))
        .collect();
    let cases: Vec<(Workload, usize)> = CASES
        .iter()
        .copied()
        .filter(|(w, _)| {
            args.workloads
                .as_ref()
                .is_none_or(|o| o.iter().any(|x| x == w.name()))
        })
        .collect();
    if !args.json {
        eprintln!(
            "tofu-bench: {}, server and client {}; minimum {:.1} s per figure; \
             tofu = Options::default(), tofu-tuned = {}, tofu-spin = {}",
            if args.quick { "--quick" } else { "full run" },
            if args.processes {
                "in separate processes"
            } else {
                "on threads of one process"
            },
            plan.min_time.as_secs_f64(),
            tofu_sys::tuned_description(),
            tofu_sys::spin_description()
        );
    }
    let load_before = report::loadavg();
    let started = Instant::now();
    // samples[i] = the measurements of row i, one per run.
    let mut keys: Vec<(&str, Transport, Workload, usize)> = Vec::new();
    // The rows of one workload, size and transport (indices into `keys`):
    // measured one after another, in an order that rotates from run to run.
    let mut blocks: Vec<Vec<usize>> = Vec::new();
    for &(w, size) in &cases {
        for t in [Transport::Tcp, Transport::Uds] {
            let mut block = Vec::new();
            for &s in &systems {
                if supports(s, t) {
                    block.push(keys.len());
                    keys.push((s, t, w, size));
                }
            }
            blocks.push(block);
        }
    }
    let mut samples: Vec<Vec<Result<Measure, String>>> = vec![Vec::new(); keys.len()];
    for run in 0..args.runs {
        eprintln!("tofu-bench: run {} of {}", run + 1, args.runs);
        for i in run_order(&blocks, run) {
            let (s, t, w, size) = keys[i];
            let t0 = Instant::now();
            let m = measure(s, t, w, size, &plan, args.processes).map_err(|e| e.to_string());
            match &m {
                Ok(m) => eprintln!(
                    "  {s:<10} {:<3} {:<11} {size:>5} B  p50 {:>8}  msgs/s {:>11}  ({:.1}s)",
                    t.name(),
                    w.name(),
                    report::fmt_opt(m.rtt_p50_us, 1),
                    report::fmt_opt(m.msgs_per_s, 0),
                    t0.elapsed().as_secs_f64()
                ),
                Err(e) => eprintln!(
                    "  {s:<10} {:<3} {:<11} {size:>5} B  FAILED: {e}",
                    t.name(),
                    w.name()
                ),
            }
            samples[i].push(m);
        }
    }
    let rows: Vec<Row> = keys
        .iter()
        .zip(&samples)
        .map(|(&(s, t, w, size), runs)| Row::median(s, t, w, size, runs))
        .collect();
    let load_after = report::loadavg();
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("tofu-bench: done in {elapsed:.0}s");
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialize")
        );
    } else {
        print!("{}", report::text_table(&rows));
        if systems.contains(&"tofu-tuned") {
            println!("tofu-tuned: {}", tofu_sys::tuned_description());
        }
        if systems.contains(&"tofu-spin") {
            println!("tofu-spin: {}", tofu_sys::spin_description());
        }
        if systems.contains(&"message-io") {
            println!("{}", report::NOT_COMPARABLE_NOTE);
        }
    }
    let info = report::RunInfo {
        quick: args.quick,
        processes: args.processes,
        runs: args.runs,
        systems: systems.iter().map(|s| s.to_string()).collect(),
        load_before,
        load_after,
        elapsed,
    };
    if let Some(path) = &args.markdown {
        if let Err(e) = report::write_markdown(path, &rows, &info) {
            eprintln!("tofu-bench: writing {path}: {e}");
            std::process::exit(1);
        }
    }
    if let Some(path) = &args.chart {
        if let Err(e) = chart::draw(path, &rows) {
            eprintln!("tofu-bench: drawing {path}: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        let m = command()
            .try_get_matches_from(std::iter::once("tofu-bench").chain(argv.iter().copied()))?;
        Args::from_arg_matches(&m)
    }

    #[test]
    fn command_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn run_order_rotates_each_block_and_covers_every_row_once() {
        let blocks = vec![vec![0, 1, 2], vec![], vec![3, 4]];
        assert_eq!(run_order(&blocks, 0), vec![0, 1, 2, 3, 4]);
        assert_eq!(run_order(&blocks, 1), vec![1, 2, 0, 4, 3]);
        assert_eq!(run_order(&blocks, 2), vec![2, 0, 1, 3, 4]);
        assert_eq!(run_order(&blocks, 3), vec![0, 1, 2, 4, 3]);
    }

    #[test]
    fn flags_parse_as_before() {
        let a = parse(&[]).unwrap();
        assert!(!a.quick && !a.processes && !a.json);
        assert_eq!(a.runs, 3);
        assert!(a.only.is_none() && a.workloads.is_none());
        let a = parse(&[
            "--quick",
            "--processes",
            "--json",
            "--runs",
            "5",
            "--markdown",
            "m.md",
            "--chart",
            "c.svg",
            "--only",
            "tofu,raw",
            "--workload",
            "rtt,stream",
        ])
        .unwrap();
        assert!(a.quick && a.processes && a.json);
        assert_eq!(a.runs, 5);
        assert_eq!(a.markdown.as_deref(), Some("m.md"));
        assert_eq!(a.chart.as_deref(), Some("c.svg"));
        assert_eq!(a.only, Some(vec!["tofu".to_string(), "raw".to_string()]));
        assert_eq!(
            a.workloads,
            Some(vec!["rtt".to_string(), "stream".to_string()])
        );
        assert!(parse(&["--runs", "0"]).is_err());
        assert!(parse(&["--runs", "x"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }
}
