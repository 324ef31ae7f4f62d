//! What every system's driver shares: the plan, the measured figures, helpers.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Res<T> = Result<T, BoxError>;

/// Upper bound for any single wait inside a workload.
pub(crate) const WAIT: Duration = Duration::from_secs(30);
/// The largest body a tofu frame carries; the "64 KiB" size for every system.
pub(crate) const BIG: usize = 65535;
/// Requests in flight in the pipelined workload.
pub(crate) const WINDOW: usize = 256;
/// Body size of the pipelined and connections workloads.
pub(crate) const SMALL: usize = 64;
/// Connections in the connections workload.
pub(crate) const CONNECTIONS: usize = 1000;
/// The end-of-stream marker for systems without a frame header of their own
/// (tokio, ZeroMQ, message-io, NNG): a 1-byte message. No workload sends a
/// 1-byte body, so a sink tells it from the stream's messages by its length.
pub(crate) const MARKER: &[u8] = &[0x4d];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Transport {
    Tcp,
    Uds,
}

impl Transport {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Uds => "uds",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Workload {
    Rtt,
    Pipelined,
    Stream,
    Connections,
}

impl Workload {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Rtt => "rtt",
            Workload::Pipelined => "pipelined",
            Workload::Stream => "stream",
            Workload::Connections => "connections",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Workload> {
        [
            Workload::Rtt,
            Workload::Pipelined,
            Workload::Stream,
            Workload::Connections,
        ]
        .into_iter()
        .find(|w| w.name() == name)
    }
}

/// How much work each workload does.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Round trips per rtt measurement.
    pub(crate) rtt: usize,
    /// Responses per pipelined measurement.
    pub(crate) pipelined: usize,
    /// Bytes sent per streaming measurement (count = bytes / size, bounded).
    pub(crate) stream_bytes: usize,
    /// Fewest / most messages per streaming measurement.
    pub(crate) stream_min: usize,
    pub(crate) stream_max: usize,
    /// Request/response rounds per connection in the connections workload.
    pub(crate) conn_rounds: usize,
    /// Most time one round-trip measurement may take (it stops early, with
    /// fewer samples, when a system is very slow; message-io and NNG).
    #[cfg_attr(not(any(feature = "message-io", feature = "nng")), allow(dead_code))]
    pub(crate) budget: Duration,
    /// Least time every measurement runs: each keeps going until both its
    /// count and this time are reached.
    pub(crate) min_time: Duration,
}

impl Plan {
    pub(crate) fn quick() -> Plan {
        Plan {
            rtt: 2_000,
            pipelined: 50_000,
            stream_bytes: 64 << 20,
            stream_min: 2_000,
            stream_max: 200_000,
            conn_rounds: 5,
            budget: Duration::from_secs(1),
            min_time: Duration::from_millis(500),
        }
    }

    pub(crate) fn full() -> Plan {
        Plan {
            rtt: 10_000,
            pipelined: 200_000,
            stream_bytes: 512 << 20,
            stream_min: 8_000,
            stream_max: 2_000_000,
            conn_rounds: 20,
            budget: Duration::from_secs(10),
            min_time: Duration::from_secs(2),
        }
    }

    /// The fewest messages of one streaming measurement.
    pub(crate) fn stream_count(&self, size: usize) -> usize {
        (self.stream_bytes / size.max(1)).clamp(self.stream_min, self.stream_max)
    }

    /// Whether a measurement that began at `start` and has done `done` of
    /// its `count` may stop: both the count and the minimum time reached.
    pub(crate) fn enough(&self, done: usize, count: usize, start: Instant) -> bool {
        done >= count && start.elapsed() >= self.min_time
    }
}

/// The figures of one measurement (`None` where not measured).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Measure {
    pub(crate) rtt_p50_us: Option<f64>,
    pub(crate) rtt_p99_us: Option<f64>,
    pub(crate) msgs_per_s: Option<f64>,
    pub(crate) mb_per_s: Option<f64>,
    pub(crate) failures: Option<u64>,
}

impl Measure {
    /// From round-trip samples taken over `secs`, `size`-byte bodies.
    pub(crate) fn from_rtts(rtts: &mut [Duration], secs: f64, size: usize) -> Measure {
        let (p50, p99) = percentiles(rtts);
        let msgs = rtts.len() as f64 / secs;
        Measure {
            rtt_p50_us: Some(p50),
            rtt_p99_us: Some(p99),
            msgs_per_s: Some(msgs),
            mb_per_s: Some(msgs * size as f64 / 1e6),
            failures: None,
        }
    }

    /// From a count of messages delivered in `secs`.
    pub(crate) fn from_rate(count: usize, size: usize, secs: f64) -> Measure {
        let msgs = count as f64 / secs;
        Measure {
            msgs_per_s: Some(msgs),
            mb_per_s: Some(msgs * size as f64 / 1e6),
            ..Measure::default()
        }
    }
}

/// (p50, p99) in microseconds.
pub(crate) fn percentiles(v: &mut [Duration]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

/// A fresh loopback endpoint for one measurement.
#[derive(Clone, Debug)]
pub(crate) enum Endpoint {
    Tcp(u16),
    Uds(std::path::PathBuf),
}

impl Endpoint {
    pub(crate) fn new(t: Transport) -> Res<Endpoint> {
        Ok(match t {
            Transport::Tcp => Endpoint::Tcp(tofu::testing::free_tcp_port()?),
            Transport::Uds => Endpoint::Uds(tofu::testing::temp_uds_path()),
        })
    }

    /// The transport and address as given on the `--serve` command line:
    /// `tcp 127.0.0.1:PORT` or `uds PATH`.
    pub(crate) fn to_args(&self) -> [String; 2] {
        match self {
            Endpoint::Tcp(port) => ["tcp".into(), format!("127.0.0.1:{port}")],
            Endpoint::Uds(p) => ["uds".into(), p.display().to_string()],
        }
    }

    /// The inverse of [`to_args`](Self::to_args).
    pub(crate) fn from_args(transport: &str, addr: &str) -> Res<Endpoint> {
        match transport {
            "tcp" => {
                let port = addr
                    .strip_prefix("127.0.0.1:")
                    .ok_or("tcp address must be 127.0.0.1:PORT")?;
                Ok(Endpoint::Tcp(port.parse()?))
            }
            "uds" => Ok(Endpoint::Uds(addr.into())),
            other => Err(format!("unknown transport {other}").into()),
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Endpoint::Uds(p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Raises the soft limit on open files to the hard limit (1,000 connections
/// need more than the usual 1,024 descriptors).
pub(crate) fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(65_536);
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// What a server side is given: when to stop and where to say things (that
/// it is ready, and for PUSH/PULL sinks that a stream ended). In threads mode
/// the lines go to the measuring thread through a channel; in a `--serve`
/// child they go to stdout, one line each, which the parent reads.
#[derive(Clone)]
pub(crate) struct Ctl {
    stop: Arc<AtomicBool>,
    out: Option<mpsc::Sender<String>>,
}

impl Ctl {
    pub(crate) fn new(stop: Arc<AtomicBool>, out: Option<mpsc::Sender<String>>) -> Ctl {
        Ctl { stop, out }
    }

    /// Whether the server should stop (checked at least every 50 ms).
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Sends one line to the measuring side.
    pub(crate) fn say(&self, line: &str) {
        match &self.out {
            Some(tx) => {
                let _ = tx.send(line.to_string());
            }
            None => {
                let mut o = std::io::stdout().lock();
                let _ = writeln!(o, "{line}");
                let _ = o.flush();
            }
        }
    }

    /// The line every server says once it listens.
    pub(crate) fn ready(&self) {
        self.say("ready");
    }
}
