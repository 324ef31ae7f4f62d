//! Benchmark results: one row per transport and body size, printed as a table
//! or as JSON objects.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;
use tofu::Stats;

use crate::fail::Failure;

/// One transport and body size. Figures not measured for that size are
/// `None` (JSON `null`).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Row {
    /// The system measured: always `"tofu"` here.
    pub(crate) system: &'static str,
    /// `"tcp"` or `"uds"`.
    pub(crate) transport: &'static str,
    /// Body bytes per message.
    pub(crate) size: usize,
    /// Concurrent channels.
    pub(crate) connections: usize,
    /// Median round trip, microseconds.
    pub(crate) rtt_p50_us: Option<f64>,
    /// 99th percentile round trip, microseconds.
    pub(crate) rtt_p99_us: Option<f64>,
    /// 99.9th percentile round trip, microseconds.
    pub(crate) rtt_p999_us: Option<f64>,
    /// One-way messages per second (all connections together).
    pub(crate) msgs_per_s: Option<f64>,
    /// One-way body megabytes (10^6 bytes) per second.
    pub(crate) mb_per_s: Option<f64>,
}

impl Row {
    /// A row with nothing measured yet.
    pub(crate) fn new(transport: &'static str, size: usize, connections: usize) -> Row {
        Row {
            system: "tofu",
            transport,
            size,
            connections,
            rtt_p50_us: None,
            rtt_p99_us: None,
            rtt_p999_us: None,
            msgs_per_s: None,
            mb_per_s: None,
        }
    }

    /// Fills the latency figures from round-trip samples (sorted here).
    pub(crate) fn set_round_trips(&mut self, samples: &mut [Duration]) {
        samples.sort_unstable();
        let us = |q| percentile(samples, q).map(|d| round(d.as_secs_f64() * 1e6, 1));
        self.rtt_p50_us = us(0.50);
        self.rtt_p99_us = us(0.99);
        self.rtt_p999_us = us(0.999);
    }

    /// Fills the throughput figures: `count` messages in `elapsed`.
    pub(crate) fn set_one_way(&mut self, count: u64, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if secs > 0.0 {
            let msgs = count as f64 / secs;
            self.msgs_per_s = Some(msgs.round());
            self.mb_per_s = Some(round(msgs * self.size as f64 / 1e6, 2));
        }
    }
}

/// The nearest-rank percentile `q` (0..=1) of sorted samples.
pub(crate) fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn round(x: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    (x * k).round() / k
}

/// Engine statistics under a label (`tcp client`, `uds server`).
pub(crate) struct StatsLine {
    /// What the statistics are of.
    pub(crate) label: String,
    /// The snapshot.
    pub(crate) stats: Stats,
}

/// The rows as a JSON array, one object per line.
pub(crate) fn json(rows: &[Row], out: &mut dyn Write) -> Result<(), Failure> {
    writeln!(out, "[")?;
    for (i, row) in rows.iter().enumerate() {
        let text = serde_json::to_string(row)
            .map_err(|e| Failure::Other(format!("cannot write JSON: {e}")))?;
        let comma = if i + 1 < rows.len() { "," } else { "" };
        writeln!(out, "  {text}{comma}")?;
    }
    writeln!(out, "]")?;
    Ok(())
}

/// The rows as a table, then the engine statistics.
pub(crate) fn table(rows: &[Row], stats: &[StatsLine], out: &mut dyn Write) -> Result<(), Failure> {
    writeln!(
        out,
        "{:<9} {:>8} {:>11} {:>11} {:>11} {:>12} {:>9}",
        "transport", "body", "rtt p50", "rtt p99", "rtt p99.9", "msgs/s", "MB/s"
    )?;
    let us = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.1} us"));
    let num = |v: Option<f64>, d: usize| v.map_or_else(|| "-".to_string(), |x| format!("{x:.d$}"));
    for r in rows {
        writeln!(
            out,
            "{:<9} {:>8} {:>11} {:>11} {:>11} {:>12} {:>9}",
            r.transport,
            format!("{} B", r.size),
            us(r.rtt_p50_us),
            us(r.rtt_p99_us),
            us(r.rtt_p999_us),
            num(r.msgs_per_s, 0),
            num(r.mb_per_s, 1),
        )?;
    }
    writeln!(
        out,
        "\nround trips: Request -> Response, one at a time per connection\n\
         one-way: Signals, timed until the server confirmed it had them all\n\
         MB = 10^6 body bytes; 64 KiB = 65535 B, the largest body\n"
    )?;
    writeln!(
        out,
        "{:<11} {:>10} {:>9} {:>7} {:>10} {:>9} {:>7} {:>9} {:>10}",
        "engine",
        "msgs sent",
        "writes",
        "/write",
        "msgs recv",
        "reads",
        "/read",
        "polls",
        "pool_empty"
    )?;
    for s in stats {
        let st = &s.stats;
        let per = |a: u64, b: u64| format!("{:.1}", a as f64 / b.max(1) as f64);
        writeln!(
            out,
            "{:<11} {:>10} {:>9} {:>7} {:>10} {:>9} {:>7} {:>9} {:>10}",
            s.label,
            st.messages_sent,
            st.write_calls,
            per(st.messages_sent, st.write_calls),
            st.messages_received,
            st.read_calls,
            per(st.messages_received, st.read_calls),
            st.polls,
            st.pool_empty_events,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| Duration::from_micros(x)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = us(&(1..=1000).collect::<Vec<_>>());
        assert_eq!(percentile(&s, 0.5), Some(Duration::from_micros(500)));
        assert_eq!(percentile(&s, 0.99), Some(Duration::from_micros(990)));
        assert_eq!(percentile(&s, 0.999), Some(Duration::from_micros(999)));
        assert_eq!(percentile(&us(&[7]), 0.999), Some(Duration::from_micros(7)));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn unmeasured_figures_are_null() {
        let mut r = Row::new("tcp", 64, 1);
        r.set_one_way(1000, Duration::from_millis(500));
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["system"], "tofu");
        assert_eq!(v["size"], 64);
        assert!(v["rtt_p50_us"].is_null());
        assert!(v["rtt_p99_us"].is_null());
        assert_eq!(v["msgs_per_s"], 2000.0);
        assert_eq!(v["mb_per_s"], 0.13);
    }
}
