//! `tofu bench`: round-trip latency and one-way throughput, against a server
//! started here on loopback (TCP and UDS) or against any tofu server
//! (`--connect`).
//!
//! Every connection is a channel in its own group, driven by its own thread
//! ([`measure::worker`]); the server (ours: [`serve::serve`]) echoes Requests and
//! counts Signals. A one-way run is timed until the server has confirmed it
//! received everything (see [`measure`]), and against our own server the
//! count the server saw is checked against the count sent.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tofu::{Address, ChannelGroup, Engine, Options, Stats};

use crate::fail::Failure;
use crate::measure::{self, Kind, Order, Outcome, Phase};
use crate::report::{self, Row, StatsLine};
use crate::serve;
use crate::session::Session;

/// The largest body a frame carries: what "64 KiB" means here.
pub(crate) const BIG: usize = tofu::MAX_SECTION_LEN;
/// Time between orders being sent and the workers starting together.
const START_DELAY: Duration = Duration::from_millis(20);

/// `tofu bench` settings.
pub(crate) struct BenchArgs {
    /// Measure against this server instead of starting our own.
    pub(crate) connect: Option<Address>,
    /// How long each measurement runs.
    pub(crate) duration: Duration,
    /// Body sizes to measure both ways; `None` = the default plan.
    pub(crate) sizes: Option<Vec<usize>>,
    /// Concurrent channels.
    pub(crate) connections: usize,
    /// JSON rows instead of the table.
    pub(crate) json: bool,
    /// Bound on every wait for the peer.
    pub(crate) timeout: Duration,
    /// `Options::receive_spin` of both engines.
    pub(crate) spin: Duration,
}

/// The measurements to make, in order.
pub(crate) fn plan(sizes: Option<&[usize]>) -> Vec<Phase> {
    let (rtt, one_way): (Vec<usize>, Vec<usize>) = match sizes {
        Some(s) => (s.to_vec(), s.to_vec()),
        None => (vec![16, 1024], vec![64, 1024, BIG]),
    };
    let rtt = rtt.into_iter().map(|size| Phase {
        kind: Kind::RoundTrip,
        size,
    });
    let one_way = one_way.into_iter().map(|size| Phase {
        kind: Kind::OneWay,
        size,
    });
    rtt.chain(one_way).collect()
}

/// Runs `tofu bench`; the table or the JSON rows go to `out`.
///
/// # Errors
///
/// See [`Failure`].
pub(crate) fn run(args: &BenchArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let phases = plan(args.sizes.as_deref());
    let transports: Vec<&'static str> = match &args.connect {
        Some(addr) => vec![transport_of(addr)],
        // UDS wherever the platform has AF_UNIX (on Windows: 10 1803 and later).
        None if tofu::testing::uds_unavailable().is_none() => vec!["tcp", "uds"],
        None => vec!["tcp"],
    };
    if !args.json {
        let what = match &args.connect {
            Some(addr) => format!("against {addr}"),
            None => format!(
                "loopback {}",
                transports
                    .iter()
                    .map(|t| t.to_uppercase())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        };
        let opts = engine_options(args.spin);
        writeln!(
            out,
            "tofu bench: {what}, {} connection{}, {:.1} s per measurement\n\
             engine options here: initial_pool_msgs {}, max_pool_msgs {} \
             (Options::default(): {} / {}), receive_spin {} µs (default 0), \
             everything else default\n",
            args.connections,
            if args.connections == 1 { "" } else { "s" },
            args.duration.as_secs_f64(),
            opts.initial_pool_msgs,
            opts.max_pool_msgs,
            tofu::DEFAULT_INITIAL_POOL_MSGS,
            tofu::DEFAULT_MAX_POOL_MSGS,
            opts.receive_spin.as_micros(),
        )?;
        out.flush()?;
    }
    let per_phase = args.duration.as_millis().max(1) as u64;
    let bar = progress_bar(
        args.json,
        per_phase * (phases.len() * transports.len()) as u64,
    );
    let measured = measure_all(&transports, &phases, args, &bar, per_phase);
    bar.finish_and_clear();
    let (rows, stats) = measured?;
    if args.json {
        report::json(&rows, out)?;
    } else {
        report::table(&rows, &stats, out)?;
    }
    out.flush()?;
    Ok(())
}

/// Runs every phase against every transport; returns the rows and the
/// engines' statistics.
fn measure_all(
    transports: &[&'static str],
    phases: &[Phase],
    args: &BenchArgs,
    bar: &ProgressBar,
    per_phase: u64,
) -> Result<(Vec<Row>, Vec<StatsLine>), Failure> {
    let mut rows = Vec::new();
    let mut stats = Vec::new();
    let mut done = 0;
    for &transport in transports {
        let mut target = match &args.connect {
            Some(addr) => Target {
                transport,
                addr: addr.clone(),
                server: None,
            },
            None => Target::local(transport, args.spin, args.timeout)?,
        };
        let progress = Progress {
            bar,
            done: &mut done,
            per_phase,
        };
        let result = target.run(phases, args, progress);
        let server_stats = target.server.take().map(LocalServer::stop).transpose();
        let (r, client) = result?;
        rows.extend(r);
        stats.push(StatsLine {
            label: format!("{transport} client"),
            stats: client,
        });
        if let Some(s) = server_stats? {
            stats.push(StatsLine {
                label: format!("{transport} server"),
                stats: s,
            });
        }
    }
    Ok((rows, stats))
}

/// `tcp` or `uds`.
pub(crate) fn transport_of(addr: &Address) -> &'static str {
    match addr {
        Address::TcpClient { .. } | Address::TcpServer { .. } => "tcp",
        Address::UdsClient { .. } | Address::UdsServer { .. } => "uds",
    }
}

fn progress_bar(hidden: bool, len: u64) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:32} {percent:>3}% {msg}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// The progress bar and how much of it is done (milliseconds of measurement).
struct Progress<'a> {
    bar: &'a ProgressBar,
    done: &'a mut u64,
    per_phase: u64,
}

/// What to measure against: a transport and an address, and our own server
/// when we started one.
struct Target {
    transport: &'static str,
    addr: Address,
    server: Option<LocalServer>,
}

impl Target {
    /// Starts a local server on loopback for `transport`.
    fn local(
        transport: &'static str,
        spin: Duration,
        timeout: Duration,
    ) -> Result<Target, Failure> {
        let listen = match transport {
            "uds" => Address::uds_server(tofu::testing::temp_uds_path()),
            _ => Address::tcp_server("127.0.0.1", 0),
        };
        let (server, addr) = LocalServer::start(&listen, spin, timeout)?;
        Ok(Target {
            transport,
            addr,
            server: Some(server),
        })
    }

    /// Connects, runs every phase, closes; returns the rows and the client
    /// engine's statistics.
    fn run(
        &self,
        phases: &[Phase],
        args: &BenchArgs,
        mut progress: Progress<'_>,
    ) -> Result<(Vec<Row>, Stats), Failure> {
        let engine = Engine::new(engine_options(args.spin))?;
        let (results_tx, results) = mpsc::channel();
        let mut orders = Vec::with_capacity(args.connections);
        let mut workers: Vec<JoinHandle<()>> = Vec::with_capacity(args.connections);
        for _ in 0..args.connections {
            let session = Session::connect(&engine, &self.addr, args.timeout)?;
            let (tx, rx) = mpsc::channel();
            let results_tx = results_tx.clone();
            orders.push(tx);
            workers.push(std::thread::spawn(move || {
                measure::worker(session, rx, results_tx)
            }));
        }
        drop(results_tx);
        let mut rows: BTreeMap<usize, Row> = BTreeMap::new();
        for &phase in phases {
            progress.bar.set_message(format!(
                "{}: {} {} B",
                self.transport,
                match phase.kind {
                    Kind::RoundTrip => "round trips",
                    Kind::OneWay => "one-way",
                },
                phase.size
            ));
            let signals_before = self.server_signals();
            let start = Instant::now() + START_DELAY;
            for tx in &orders {
                tx.send(Order {
                    phase,
                    start,
                    duration: args.duration,
                })
                .map_err(|_| Failure::Other("a benchmark thread stopped".into()))?;
            }
            let outcomes = collect(&results, args, start, &mut progress)?;
            *progress.done += progress.per_phase;
            progress.bar.set_position(*progress.done);
            let row = rows
                .entry(phase.size)
                .or_insert_with(|| Row::new(self.transport, phase.size, args.connections));
            match phase.kind {
                Kind::RoundTrip => {
                    let mut all: Vec<Duration> = outcomes
                        .into_iter()
                        .flat_map(|o| match o {
                            Outcome::RoundTrips(v) => v,
                            _ => Vec::new(),
                        })
                        .collect();
                    row.set_round_trips(&mut all);
                }
                Kind::OneWay => {
                    let (mut count, mut elapsed) = (0, Duration::ZERO);
                    for o in outcomes {
                        if let Outcome::OneWay {
                            count: c,
                            elapsed: e,
                        } = o
                        {
                            count += c;
                            elapsed = elapsed.max(e);
                        }
                    }
                    if let (Some(before), Some(after)) = (signals_before, self.server_signals()) {
                        if after - before != count {
                            return Err(Failure::Other(format!(
                                "{}: the server received {} signals of the {count} sent",
                                self.transport,
                                after - before
                            )));
                        }
                    }
                    row.set_one_way(count, elapsed);
                }
            }
        }
        // Close every session (Bye handshake) and wait for the workers.
        drop(orders);
        let deadline = Instant::now() + args.timeout + Duration::from_secs(1);
        for _ in 0..args.connections {
            let left = deadline.saturating_duration_since(Instant::now());
            match results.recv_timeout(left) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(Failure::Timeout(format!(
                        "closing the connections to {} took longer than {:?}",
                        self.addr, args.timeout
                    )));
                }
            }
        }
        for w in workers {
            let _ = w.join();
        }
        let stats = engine.stats();
        engine.shutdown();
        Ok((rows.into_values().collect(), stats))
    }

    fn server_signals(&self) -> Option<u64> {
        self.server
            .as_ref()
            .map(|s| s.signals.load(Ordering::Acquire))
    }
}

/// Waits for one outcome per connection, moving the progress bar meanwhile.
fn collect(
    results: &mpsc::Receiver<Result<Outcome, Failure>>,
    args: &BenchArgs,
    start: Instant,
    progress: &mut Progress<'_>,
) -> Result<Vec<Outcome>, Failure> {
    // Workers bound each of their waits by the timeout; this only guards
    // against a worker that died without a word.
    let guard = start + args.duration + 3 * args.timeout;
    let mut outcomes = Vec::with_capacity(args.connections);
    while outcomes.len() < args.connections {
        match results.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(o)) => outcomes.push(o),
            Ok(Err(e)) => return Err(e),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() > guard {
                    return Err(Failure::Timeout("the benchmark stalled".into()));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Failure::Other("a benchmark thread stopped".into()));
            }
        }
        let ran = Instant::now().saturating_duration_since(start).as_millis() as u64;
        progress
            .bar
            .set_position(*progress.done + ran.min(progress.per_phase));
    }
    Ok(outcomes)
}

/// Bigger pools than the default: a benchmark keeps many messages in flight;
/// and the spin budget asked for (`--spin`). The text report prints them
/// (the header's second line).
fn engine_options(spin: Duration) -> Options {
    Options {
        initial_pool_msgs: 256,
        max_pool_msgs: 1024,
        receive_spin: spin,
        ..Options::default()
    }
}

/// Our own echo server on its own engine and thread.
struct LocalServer {
    engine: Engine,
    group: Arc<ChannelGroup>,
    signals: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<(), Failure>>>,
}

impl LocalServer {
    /// Listens on `listen`; returns the server and the address to connect to.
    fn start(
        listen: &Address,
        spin: Duration,
        timeout: Duration,
    ) -> Result<(LocalServer, Address), Failure> {
        let engine = Engine::new(engine_options(spin))?;
        let group = Arc::new(engine.create_group()?);
        let bound = serve::listen(&engine, &group, std::slice::from_ref(listen), timeout)?;
        let addr = bound
            .first()
            .map_or_else(|| listen.to_client(), Address::to_client);
        let signals = Arc::new(AtomicU64::new(0));
        let thread = {
            let (group, signals) = (group.clone(), signals.clone());
            std::thread::spawn(move || serve::serve(&group, None, &signals))
        };
        let server = LocalServer {
            engine,
            group,
            signals,
            thread: Some(thread),
        };
        Ok((server, addr))
    }

    /// Stops the server thread; returns the server engine's statistics.
    fn stop(mut self) -> Result<Stats, Failure> {
        self.join()?;
        Ok(self.engine.stats())
    }

    fn join(&mut self) -> Result<(), Failure> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let _ = self.group.update_receiver(None);
        thread
            .join()
            .map_err(|_| Failure::Other("the server thread panicked".into()))?
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.join();
        self.engine.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_and_sizes() {
        let p = plan(None);
        let rt: Vec<usize> = p
            .iter()
            .filter(|p| p.kind == Kind::RoundTrip)
            .map(|p| p.size)
            .collect();
        let ow: Vec<usize> = p
            .iter()
            .filter(|p| p.kind == Kind::OneWay)
            .map(|p| p.size)
            .collect();
        assert_eq!((rt, ow), (vec![16, 1024], vec![64, 1024, BIG]));
        let p = plan(Some(&[32, 0]));
        assert_eq!(p.len(), 4);
        assert!(p.iter().filter(|p| p.kind == Kind::OneWay).count() == 2);
    }

    #[test]
    fn transports() {
        assert_eq!(transport_of(&Address::tcp_client("::1", 1)), "tcp");
        assert_eq!(transport_of(&Address::uds_client("/tmp/x")), "uds");
    }
}
