//! What every system's driver shares: the plan, the measured figures, helpers.

use std::time::Duration;

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
    /// fewer samples, when a system is very slow).
    pub(crate) budget: Duration,
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
        }
    }

    pub(crate) fn stream_count(&self, size: usize) -> usize {
        (self.stream_bytes / size.max(1)).clamp(self.stream_min, self.stream_max)
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
