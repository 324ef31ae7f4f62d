//! The chart next to `docs/benchmarks.md`: every system's figure relative to
//! raw sockets in the same run (raw = 1, higher is better), one panel per
//! transport. SVG, text as SVG text elements (no font files needed).

use plotters::prelude::*;

use crate::CASES;
use crate::common::{BIG, Transport, Workload};
use crate::report::Row;

const COLORS: [RGBColor; 8] = [
    RGBColor(120, 120, 120), // raw
    RGBColor(214, 39, 40),   // tofu
    RGBColor(140, 20, 60),   // tofu-tuned
    RGBColor(247, 129, 191), // tofu-spin
    RGBColor(31, 119, 180),  // tokio
    RGBColor(44, 160, 44),   // zeromq
    RGBColor(255, 127, 14),  // message-io
    RGBColor(148, 103, 189), // nng
];

fn color(system: &str) -> RGBColor {
    let i = [
        "raw",
        "tofu",
        "tofu-tuned",
        "tofu-spin",
        "tokio",
        "zeromq",
        "message-io",
        "nng",
    ]
    .iter()
    .position(|s| *s == system)
    .unwrap_or(0);
    COLORS[i]
}

fn case_label(w: Workload, size: usize) -> String {
    let size = match size {
        BIG => "64 KiB".to_string(),
        1024 => "1 KiB".to_string(),
        s => format!("{s} B"),
    };
    match w {
        Workload::Rtt => format!("RTT {size} (1/p50)"),
        Workload::Pipelined => format!("pipelined {size}"),
        Workload::Stream => format!("stream {size}"),
        Workload::Connections => "1000 conns".to_string(),
    }
}

/// Performance relative to raw: raw p50 / p50 for round trips, msgs/s over
/// raw msgs/s otherwise.
fn relative(rows: &[Row], r: &Row) -> Option<f64> {
    let raw = rows.iter().find(|b| {
        b.system == "raw"
            && b.transport == r.transport
            && b.workload == r.workload
            && b.size == r.size
    })?;
    match r.workload {
        Workload::Rtt => Some(raw.rtt_p50_us? / r.rtt_p50_us?),
        _ => Some(r.msgs_per_s? / raw.msgs_per_s?),
    }
}

pub(crate) fn draw(path: &str, rows: &[Row]) -> Result<(), Box<dyn std::error::Error>> {
    let mut systems: Vec<&str> = Vec::new();
    for r in rows {
        if !systems.contains(&r.system.as_str()) {
            systems.push(&r.system);
        }
    }
    let cases: Vec<(Workload, usize)> = CASES
        .iter()
        .copied()
        .filter(|(w, s)| rows.iter().any(|r| r.workload == *w && r.size == *s))
        .collect();
    let root = SVGBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "tofu-bench: each system relative to raw blocking sockets in the same run (raw = 1, higher is better)",
        ("sans-serif", 20),
    )?;
    let panels = root.split_evenly((2, 1));
    for (area, t) in panels.iter().zip([Transport::Tcp, Transport::Uds]) {
        let vals: Vec<(usize, usize, f64)> = cases
            .iter()
            .enumerate()
            .flat_map(|(ci, &(w, size))| {
                systems.iter().enumerate().filter_map(move |(si, s)| {
                    let r = rows.iter().find(|r| {
                        r.system == *s && r.transport == t && r.workload == w && r.size == size
                    })?;
                    if !r.comparable {
                        return None;
                    }
                    Some((ci, si, relative(rows, r)?))
                })
            })
            .collect();
        let not_comparable: Vec<(usize, usize)> = cases
            .iter()
            .enumerate()
            .flat_map(|(ci, &(w, size))| {
                systems.iter().enumerate().filter_map(move |(si, s)| {
                    rows.iter()
                        .any(|r| {
                            r.system == *s
                                && r.transport == t
                                && r.workload == w
                                && r.size == size
                                && !r.comparable
                        })
                        .then_some((ci, si))
                })
            })
            .collect();
        let ymax = vals.iter().map(|v| v.2).fold(1.2f64, f64::max) * 1.1;
        let ymin = -0.12 * ymax;
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!(
                    "{} (message-io: TCP only; n/c = not comparable, no TCP_NODELAY)",
                    t.name().to_uppercase()
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(10)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..cases.len() as f64 + 1.0, ymin..ymax)?; // room for the legend
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("relative to raw")
            .y_label_formatter(&|v| {
                if *v < 0.0 {
                    String::new()
                } else {
                    format!("{v:.1}")
                }
            })
            .draw()?;
        // raw = 1
        chart.draw_series(LineSeries::new(
            [(0.0, 1.0), (cases.len() as f64, 1.0)],
            BLACK.mix(0.5),
        ))?;
        let width = 0.8 / systems.len().max(1) as f64;
        for (si, s) in systems.iter().enumerate() {
            let c = color(s);
            chart
                .draw_series(vals.iter().filter(|v| v.1 == si).map(|&(ci, _, v)| {
                    let x0 = ci as f64 + 0.1 + si as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], c.filled())
                }))?
                .label(*s)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
            // Rows that are not comparable (message-io's latency-bound ones,
            // no TCP_NODELAY) get no bar, only "n/c".
            chart.draw_series(not_comparable.iter().filter(|v| v.1 == si).map(|&(ci, _)| {
                let x0 = ci as f64 + 0.1 + si as f64 * width;
                Text::new("n/c", (x0, 0.03 * ymax), ("sans-serif", 11))
            }))?;
            if s.starts_with("tofu") {
                chart.draw_series(vals.iter().filter(|v| v.1 == si).map(|&(ci, _, v)| {
                    let x0 = ci as f64 + 0.1 + si as f64 * width;
                    Text::new(format!("{v:.2}"), (x0, v + 0.02 * ymax), ("sans-serif", 12))
                }))?;
            }
        }
        chart.draw_series(cases.iter().enumerate().map(|(ci, &(w, size))| {
            Text::new(
                case_label(w, size),
                (ci as f64 + 0.12, ymin * 0.45),
                ("sans-serif", 13),
            )
        }))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
