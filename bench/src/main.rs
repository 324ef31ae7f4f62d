//! Side-by-side benchmarks: tofu against raw blocking sockets (the ceiling),
//! tokio + `LengthDelimitedCodec`, ZeroMQ, message-io and (optionally) NNG,
//! the same workloads, in the same run, on the same machine.
//!
//! ```text
//! cargo run --release -p tofu-bench -- [--quick] [--processes] [--json] [--runs N]
//!     [--markdown docs/benchmarks.md] [--chart docs/benchmarks.svg]
//!     [--only tofu,tofu-tuned,raw] [--workload rtt,stream]
//! ```
//!
//! Every measurement starts its server side first — on a thread, or with
//! `--processes` in a child process (this binary, re-executed with the hidden
//! `--serve SYSTEM TRANSPORT ADDR WORKLOAD`) — and measures from the client
//! side. See `docs/benchmarks.md` for what each workload does and the rules
//! that keep the systems comparable.

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

use common::*;
use report::Row;

/// The systems compiled into this binary, in report order.
fn systems() -> Vec<&'static str> {
    let mut v = vec!["raw", "tofu", "tofu-tuned", "tokio"];
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
        "tofu" | "tofu-tuned" => tofu_sys::serve(tofu_sys::options(system), ep, ctl),
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
        "tofu" | "tofu-tuned" => tofu_sys::run(tofu_sys::options(system), w, size, plan, ep),
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

struct Args {
    quick: bool,
    processes: bool,
    json: bool,
    runs: usize,
    markdown: Option<String>,
    chart: Option<String>,
    only: Option<Vec<String>>,
    workloads: Option<Vec<String>>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        quick: false,
        processes: false,
        json: false,
        runs: 3,
        markdown: None,
        chart: None,
        only: None,
        workloads: None,
    };
    let mut it = std::env::args().skip(1);
    let list = |s: String| s.split(',').map(str::to_string).collect::<Vec<_>>();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--processes" => a.processes = true,
            "--json" => a.json = true,
            "--runs" => {
                a.runs = value("--runs")?
                    .parse()
                    .map_err(|_| "--runs needs a number")?;
                if a.runs == 0 {
                    return Err("--runs must be at least 1".into());
                }
            }
            "--markdown" => a.markdown = Some(value("--markdown")?),
            "--chart" => a.chart = Some(value("--chart")?),
            "--only" => a.only = Some(list(value("--only")?)),
            "--workload" => a.workloads = Some(list(value("--workload")?)),
            "-h" | "--help" => {
                println!(
                    "usage: tofu-bench [--quick] [--processes] [--json] [--runs N] \
                     [--markdown FILE] [--chart FILE.svg] [--only SYSTEM,..] [--workload NAME,..]\n\
                     \n  --quick       smaller counts; every figure still runs at least {:.1} s (full run: {:.0} s)\
                     \n  --processes   server and client in separate processes (default: threads of one process)\
                     \n  --runs N      repeat the matrix N times, report medians (default 3)\
                     \n  --only LIST   systems: {}\
                     \n  --workload LIST  workloads: rtt, pipelined, stream, connections\
                     \n  --json        JSON rows instead of the text table\
                     \n  --markdown FILE  rewrite FILE's generated results section\
                     \n  --chart FILE  draw the SVG chart\
                     \n\ntofu runs with Options::default(); tofu-tuned with {}.",
                    Plan::quick().min_time.as_secs_f64(),
                    Plan::full().min_time.as_secs_f64(),
                    systems().join(", "),
                    tofu_sys::tuned_description(),
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other} (see --help)")),
        }
    }
    for s in a.only.iter().flatten() {
        if !systems().contains(&s.as_str()) {
            return Err(format!(
                "unknown system {s} (compiled in: {})",
                systems().join(", ")
            ));
        }
    }
    for w in a.workloads.iter().flatten() {
        if Workload::from_name(w).is_none() {
            return Err(format!(
                "unknown workload {w} (rtt, pipelined, stream, connections)"
            ));
        }
    }
    Ok(a)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("--serve") {
        raise_fd_limit();
        server::child_main(&argv[1..]);
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tofu-bench: {e}");
            std::process::exit(2);
        }
    };
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
             tofu = Options::default(), tofu-tuned = {}",
            if args.quick { "--quick" } else { "full run" },
            if args.processes {
                "in separate processes"
            } else {
                "on threads of one process"
            },
            plan.min_time.as_secs_f64(),
            tofu_sys::tuned_description()
        );
    }
    let load_before = report::loadavg();
    let started = Instant::now();
    // samples[i] = the measurements of row i, one per run.
    let mut keys: Vec<(&str, Transport, Workload, usize)> = Vec::new();
    for &(w, size) in &cases {
        for t in [Transport::Tcp, Transport::Uds] {
            for &s in &systems {
                if supports(s, t) {
                    keys.push((s, t, w, size));
                }
            }
        }
    }
    let mut samples: Vec<Vec<Result<Measure, String>>> = vec![Vec::new(); keys.len()];
    for run in 0..args.runs {
        eprintln!("tofu-bench: run {} of {}", run + 1, args.runs);
        for (i, &(s, t, w, size)) in keys.iter().enumerate() {
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
