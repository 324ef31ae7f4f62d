//! Rows, medians, the text table, and the generated part of `docs/benchmarks.md`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::common::{BIG, Measure, Transport, Workload};

/// Why some rows carry "not comparable".
pub(crate) const NOT_COMPARABLE_NOTE: &str = "not comparable: message-io sets no TCP_NODELAY \
     and offers no option for it, so its round-trip, pipelined and connections rows wait on \
     Nagle's algorithm and delayed ACKs (~40 ms); the other systems all set TCP_NODELAY.";

/// Whether `system`'s latency-bound figures for `w` can stand beside the
/// others (message-io's cannot: no TCP_NODELAY).
pub(crate) fn comparable(system: &str, w: Workload) -> bool {
    !(system == "message-io" && w != Workload::Stream)
}

/// One line of results: the medians over the runs of one system, transport,
/// workload and size.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Row {
    pub(crate) system: String,
    pub(crate) transport: Transport,
    pub(crate) workload: Workload,
    pub(crate) size: usize,
    pub(crate) rtt_p50_us: Option<f64>,
    pub(crate) rtt_p99_us: Option<f64>,
    pub(crate) msgs_per_s: Option<f64>,
    pub(crate) mb_per_s: Option<f64>,
    /// Connections workload: failed connections or requests (worst run).
    pub(crate) failures: Option<u64>,
    /// Runs that completed (the medians are over these).
    pub(crate) runs: usize,
    /// `false` where the row's conditions differ from the others' (see
    /// [`NOT_COMPARABLE_NOTE`]).
    pub(crate) comparable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl Row {
    pub(crate) fn median(
        system: &str,
        t: Transport,
        w: Workload,
        size: usize,
        runs: &[Result<Measure, String>],
    ) -> Row {
        let ok: Vec<&Measure> = runs.iter().filter_map(|r| r.as_ref().ok()).collect();
        let errors: Vec<&String> = runs.iter().filter_map(|r| r.as_ref().err()).collect();
        let field =
            |f: fn(&Measure) -> Option<f64>| median(ok.iter().filter_map(|m| f(m)).collect());
        Row {
            system: system.to_string(),
            transport: t,
            workload: w,
            size,
            rtt_p50_us: field(|m| m.rtt_p50_us),
            rtt_p99_us: field(|m| m.rtt_p99_us),
            msgs_per_s: field(|m| m.msgs_per_s),
            mb_per_s: field(|m| m.mb_per_s),
            failures: ok.iter().filter_map(|m| m.failures).max(),
            runs: ok.len(),
            comparable: comparable(system, w),
            error: errors
                .first()
                .map(|e| format!("{} of {} runs failed: {e}", errors.len(), runs.len())),
        }
    }

    /// The figure a workload is judged by: p50 latency for round trips,
    /// messages per second otherwise.
    fn figure(&self) -> Option<f64> {
        match self.workload {
            Workload::Rtt => self.rtt_p50_us,
            _ => self.msgs_per_s,
        }
    }
}

/// `row`'s figure divided by `base`'s for the same transport, workload and size.
pub(crate) fn ratio(rows: &[Row], row: &Row, base: &str) -> Option<f64> {
    let b = rows.iter().find(|r| {
        r.system == base
            && r.transport == row.transport
            && r.workload == row.workload
            && r.size == row.size
    })?;
    Some(row.figure()? / b.figure()?)
}

pub(crate) fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if digits == 0 => group(x),
        Some(x) => format!("{x:.digits$}"),
        None => "-".into(),
    }
}

/// 1234567.8 -> "1,234,568"
fn group(x: f64) -> String {
    let s = format!("{:.0}", x);
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn fmt_ratio(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.2}×"))
}

/// A ratio for the markdown tables: "n/c" where the row is not comparable.
fn ratio_cell(rows: &[Row], r: &Row, base: &str) -> String {
    if r.comparable {
        fmt_ratio(ratio(rows, r, base))
    } else {
        "n/c".into()
    }
}

fn size_name(size: usize) -> String {
    match size {
        BIG => "64 KiB".into(),
        s if s >= 1024 && s % 1024 == 0 => format!("{} KiB", s / 1024),
        s => format!("{s} B"),
    }
}

pub(crate) fn text_table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<4} {:<11} {:>7} {:>10} {:>10} {:>12} {:>10} {:>6} {:>8} {:>8}",
        "system",
        "tr",
        "workload",
        "size",
        "p50 us",
        "p99 us",
        "msgs/s",
        "MB/s",
        "fail",
        "x raw",
        "x zmq"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<10} {:<4} {:<11} {:>7} {:>10} {:>10} {:>12} {:>10} {:>6} {:>8} {:>8}{}",
            r.system,
            r.transport.name(),
            r.workload.name(),
            size_name(r.size),
            fmt_opt(r.rtt_p50_us, 1),
            fmt_opt(r.rtt_p99_us, 1),
            fmt_opt(r.msgs_per_s, 0),
            fmt_opt(r.mb_per_s, 1),
            r.failures.map_or("-".into(), |f| f.to_string()),
            fmt_ratio(ratio(rows, r, "raw")),
            fmt_ratio(ratio(rows, r, "zeromq")),
            r.error
                .as_ref()
                .map_or(String::new(), |e| format!("  ERROR: {e}")),
        );
        if !r.comparable {
            out.pop();
            out.push_str("  (not comparable: no TCP_NODELAY)\n");
        }
    }
    out
}

/// The 1-, 5- and 15-minute load averages.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// What the generated section says about the run.
pub(crate) struct RunInfo {
    pub(crate) quick: bool,
    pub(crate) processes: bool,
    pub(crate) runs: usize,
    pub(crate) systems: Vec<String>,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) elapsed: f64,
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_string(), |s| s.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kb: f64 = m.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.0} GiB RAM", kb / (1024.0 * 1024.0)))
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown".into(), |s| s.trim().to_string());
    format!("{cpu}, {cores} cores available, {mem}, Linux {kernel}")
}

fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or("unknown date".into(), |s| s.trim().to_string())
}

const BEGIN: &str = "<!-- tofu-bench results: begin (generated; edits here are overwritten) -->";
const END: &str = "<!-- tofu-bench results: end -->";

fn markdown_section(rows: &[Row], info: &RunInfo) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{BEGIN}\n");
    let _ = writeln!(
        o,
        "Generated {} by `tofu-bench`{}{}, {} run(s), medians per row; {:.0} s in all.\n",
        now_utc(),
        if info.quick { " --quick" } else { "" },
        if info.processes { " --processes" } else { "" },
        info.runs,
        info.elapsed
    );
    let _ = writeln!(
        o,
        "* Server and client: {}.",
        if info.processes {
            "separate processes (`--processes`)"
        } else {
            "threads of one process"
        }
    );
    let _ = writeln!(
        o,
        "* tofu: `Options::default()` on both engines; tofu-tuned: {}; tofu-spin: {}.",
        crate::tofu_sys::tuned_description(),
        crate::tofu_sys::spin_description()
    );
    let _ = writeln!(o, "* Machine: {}.", machine());
    let _ = writeln!(
        o,
        "* Load average (1, 5, 15 min) before: {}; after: {}.",
        info.load_before, info.load_after
    );
    let _ = writeln!(o, "* Systems in this run: {}.\n", info.systems.join(", "));

    let _ = writeln!(o, "### Targets (tofu, from this run)\n");
    for line in targets(rows) {
        let _ = writeln!(o, "* {line}");
    }
    let _ = writeln!(o);

    let sections: [(&str, Workload, &str); 4] = [
        (
            "Round trip, one message outstanding",
            Workload::Rtt,
            "`× raw` and `× ZeroMQ` divide this row's p50 latency by theirs (lower is better).",
        ),
        (
            "Pipelined request/response, window of 256 (64 B)",
            Workload::Pipelined,
            "`× raw` and `× ZeroMQ` divide this row's responses/s by theirs (higher is better).",
        ),
        (
            "One-way streaming",
            Workload::Stream,
            "`× raw` and `× ZeroMQ` divide this row's messages/s by theirs (higher is better).",
        ),
        (
            "1,000 concurrent connections, request/response (64 B)",
            Workload::Connections,
            "`× raw` and `× ZeroMQ` divide this row's responses/s by theirs (higher is better); \
             latency is per request, failures are the worst run's.",
        ),
    ];
    for (title, w, note) in sections {
        let rs: Vec<&Row> = rows.iter().filter(|r| r.workload == w).collect();
        if rs.is_empty() {
            continue;
        }
        let _ = writeln!(o, "### {title}\n\n{note}\n");
        let _ = writeln!(
            o,
            "| transport | size | system | p50 µs | p99 µs | msgs/s | MB/s | failures | × raw | × ZeroMQ |"
        );
        let _ = writeln!(o, "|---|---|---|--:|--:|--:|--:|--:|--:|--:|");
        for r in &rs {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.transport.name(),
                size_name(r.size),
                match (r.system.as_str(), r.comparable) {
                    ("tofu" | "tofu-tuned" | "tofu-spin", _) => format!("**{}**", r.system),
                    (_, false) => format!("{} (not comparable †)", r.system),
                    _ => r.system.clone(),
                },
                fmt_opt(r.rtt_p50_us, 1),
                fmt_opt(r.rtt_p99_us, 1),
                fmt_opt(r.msgs_per_s, 0),
                fmt_opt(r.mb_per_s, 1),
                match (&r.error, r.failures) {
                    (Some(e), _) => format!("error: {e}"),
                    (None, Some(f)) => f.to_string(),
                    (None, None) => "-".into(),
                },
                ratio_cell(rows, r, "raw"),
                ratio_cell(rows, r, "zeromq"),
            );
        }
        if rs.iter().any(|r| !r.comparable) {
            let _ = writeln!(o, "\n† {NOT_COMPARABLE_NOTE}");
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "{END}");
    o
}

fn find<'a>(rows: &'a [Row], s: &str, t: Transport, w: Workload, size: usize) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.system == s && r.transport == t && r.workload == w && r.size == size)
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "**met**",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

/// One line per target and transport.
pub(crate) fn targets(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    for t in [Transport::Tcp, Transport::Uds] {
        let n = t.name();
        let get = |s, w, size| find(rows, s, t, w, size);
        // 16 B round trip.
        let (tofu, raw, zmq) = (
            get("tofu", Workload::Rtt, 16),
            get("raw", Workload::Rtt, 16),
            get("zeromq", Workload::Rtt, 16),
        );
        if let Some(tofu) = tofu {
            let r = raw.and_then(|r| Some(tofu.rtt_p50_us? / r.rtt_p50_us?));
            let z = zmq.and_then(|z| Some(tofu.rtt_p50_us? / z.rtt_p50_us?));
            out.push(format!(
                "{n}: 16 B round trip p50 {} µs = {} raw (target ≤ 2.50×: {}), {} ZeroMQ (target < 1: {})",
                fmt_opt(tofu.rtt_p50_us, 1),
                fmt_ratio(r),
                verdict(r.map(|x| x <= 2.5)),
                fmt_ratio(z),
                verdict(z.map(|x| x < 1.0)),
            ));
        }
        // 64 B streaming.
        let (tofu, zmq) = (
            get("tofu", Workload::Stream, 64),
            get("zeromq", Workload::Stream, 64),
        );
        if let Some(tofu) = tofu {
            let z = zmq.and_then(|z| Some(tofu.msgs_per_s? / z.msgs_per_s?));
            out.push(format!(
                "{n}: 64 B streaming {} msgs/s (target ≥ 1,000,000: {}), {} ZeroMQ (target ≥ 1: {})",
                fmt_opt(tofu.msgs_per_s, 0),
                verdict(tofu.msgs_per_s.map(|x| x >= 1e6)),
                fmt_ratio(z),
                verdict(z.map(|x| x >= 1.0)),
            ));
        }
        // 64 KiB streaming.
        let (tofu, raw) = (
            get("tofu", Workload::Stream, BIG),
            get("raw", Workload::Stream, BIG),
        );
        if let Some(tofu) = tofu {
            let r = raw.and_then(|r| Some(tofu.mb_per_s? / r.mb_per_s?));
            out.push(format!(
                "{n}: 64 KiB streaming {} MB/s = {} of raw bandwidth (target ≥ 80 %: {})",
                fmt_opt(tofu.mb_per_s, 0),
                r.map_or("-".into(), |x| format!("{:.0} %", x * 100.0)),
                verdict(r.map(|x| x >= 0.8)),
            ));
        }
        // Connections.
        if let Some(tofu) = get("tofu", Workload::Connections, crate::common::SMALL) {
            let ok = tofu.error.is_none() && tofu.failures == Some(0);
            out.push(format!(
                "{n}: 1,000 concurrent connections: {} failures{} (target 0: {})",
                tofu.failures.map_or("-".into(), |f| f.to_string()),
                tofu.error
                    .as_ref()
                    .map_or(String::new(), |e| format!(", error: {e}")),
                verdict(Some(ok)),
            ));
        }
    }
    out
}

/// Replaces the generated section of `path` (between the markers), or writes
/// the file with only that section if it has none.
pub(crate) fn write_markdown(path: &str, rows: &[Row], info: &RunInfo) -> std::io::Result<()> {
    let section = markdown_section(rows, info);
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => {
            let rest = old[e + END.len()..].trim_start_matches('\n');
            if rest.is_empty() {
                format!("{}{}", &old[..b], section)
            } else {
                format!("{}{}\n{}", &old[..b], section, rest)
            }
        }
        _ => format!("# Benchmarks\n\n{section}"),
    };
    std::fs::write(path, new)
}
