//! The measurements one connection makes, run on its own thread: round trips
//! and one-way streams, both answered by an echo server.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use tofu::OpCode;

use crate::fail::Failure;
use crate::session::Session;

/// Round trips made before the recorded ones (connection and caches warm up).
const WARM_UP_ROUND_TRIPS: usize = 10;
/// Body bytes a one-way batch aims at (the window is two batches).
const BATCH_BYTES: usize = 1024 * 1024;

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Request → Response, one at a time.
    RoundTrip,
    /// Signals as fast as the receiver takes them.
    OneWay,
}

/// One measurement: a kind and a body size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Phase {
    /// Round trip or one-way.
    pub(crate) kind: Kind,
    /// Body bytes per message.
    pub(crate) size: usize,
}

/// An order for a worker: run `phase` from `start` for about `duration`.
pub(crate) struct Order {
    pub(crate) phase: Phase,
    pub(crate) start: Instant,
    pub(crate) duration: Duration,
}

/// What a worker reports back.
pub(crate) enum Outcome {
    /// Round-trip times, in order.
    RoundTrips(Vec<Duration>),
    /// Signals delivered (the server has handled them all) and the time from
    /// the common start until the last was confirmed.
    OneWay {
        /// Signals sent and confirmed.
        count: u64,
        /// From the order's `start` to the last confirmation.
        elapsed: Duration,
    },
    /// The session closed gracefully (after the order channel closed).
    Closed,
}

/// A worker: runs each order on `session` and reports; when the order channel
/// closes, closes the session with the Bye handshake and reports `Closed`.
/// Stops at the first failure (after reporting it).
pub(crate) fn worker(
    session: Session,
    orders: Receiver<Order>,
    results: Sender<Result<Outcome, Failure>>,
) {
    for order in orders {
        std::thread::sleep(order.start.saturating_duration_since(Instant::now()));
        let end = order.start + order.duration;
        let r = match order.phase.kind {
            Kind::RoundTrip => round_trips(&session, order.phase.size, end),
            Kind::OneWay => one_way(&session, order.phase.size, order.start, end),
        };
        let failed = r.is_err();
        if results.send(r).is_err() || failed {
            return;
        }
    }
    let _ = results.send(session.close().map(|()| Outcome::Closed));
}

/// Requests with `size`-byte bodies, one at a time, until `end`.
fn round_trips(s: &Session, size: usize, end: Instant) -> Result<Outcome, Failure> {
    let body = vec![0x5a_u8; size];
    let mut samples = Vec::with_capacity(64 * 1024);
    let mut n = 0;
    loop {
        let mut m = s.message(OpCode::Request)?;
        m.body.extend_from_slice(&body);
        let t0 = Instant::now();
        let id = s.post(m)?;
        let resp = s.wait_response(id)?;
        let rtt = t0.elapsed();
        if resp.body.len() != size {
            return Err(Failure::Other(format!(
                "{} echoed a {}-byte body for a {size}-byte request",
                s.addr(),
                resp.body.len()
            )));
        }
        n += 1;
        if n > WARM_UP_ROUND_TRIPS {
            samples.push(rtt);
        }
        if !samples.is_empty() && Instant::now() >= end {
            return Ok(Outcome::RoundTrips(samples));
        }
    }
}

/// Signals with `size`-byte bodies until `end`, in batches; each batch is
/// followed by a marker Request. The server handles a channel's messages in
/// order, so the Response to a marker proves every Signal before it was
/// received; at most two batches are unconfirmed at any time (the window), so
/// the sender never runs ahead of the receiver by more than that. The time
/// runs until the last marker's Response.
fn one_way(s: &Session, size: usize, start: Instant, end: Instant) -> Result<Outcome, Failure> {
    let batch = (BATCH_BYTES / size.max(1)).clamp(16, 4096) as u64;
    let mut markers = VecDeque::with_capacity(2);
    let mut count = 0u64;
    loop {
        for _ in 0..batch {
            let mut m = s.message(OpCode::Signal)?;
            m.body.resize(size, 0xab);
            s.post(m)?;
        }
        count += batch;
        let marker = s.message(OpCode::Request)?;
        markers.push_back(s.post(marker)?);
        if markers.len() >= 2 {
            let id = markers.pop_front().unwrap_or_default();
            s.wait_response(id)?;
        }
        if Instant::now() >= end {
            break;
        }
    }
    while let Some(id) = markers.pop_front() {
        s.wait_response(id)?;
    }
    Ok(Outcome::OneWay {
        count,
        elapsed: start.elapsed(),
    })
}
