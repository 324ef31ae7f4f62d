//! The idle timeout (`Options::idle_timeout`), deterministically: two cores
//! over byte pipes ([`Pair`]) and a virtual clock ([`Pair::advance`]).

use std::time::{Duration, Instant};

use super::channel::{ChannelCore, Posted};
use super::pair::{Pair, Side};
use super::{Cause, Timeouts};
use crate::error::Status;
use crate::message::{Message, OpCode};

const S: Duration = Duration::from_secs(1);

/// Hello and bye timeouts off, so only the idle timeout acts.
fn idle(secs: u32) -> Timeouts {
    Timeouts {
        hello: None,
        bye: None,
        lookup: None,
        idle: Some(secs * S),
    }
}

fn signal(p: &mut Pair, side: Side, id: u64) {
    let m = p.peer(side).message(OpCode::Signal, id, b"beat");
    assert_eq!(p.peer(side).post(m), Posted::Queued);
}

#[test]
fn a_silent_peer_closes_the_channel_after_the_idle_timeout() {
    let mut p = Pair::connected_with(16, idle(10));
    let t0 = p.client.now;
    p.advance(6 * S);
    // Only the client speaks.
    signal(&mut p, Side::Client, 1);
    p.settle();
    p.advance(4 * S);
    // The client heard nothing since the HelloResponse at t0: closed.
    let close = p
        .client
        .closed
        .expect("the client gave up on a silent server");
    assert_eq!(close.cause, Cause::IdleTimeout);
    assert!(close.report, "the application is told");
    assert_eq!(close.report_cause(), Some(Status::CommunicationFailed));
    assert!(!close.is_graceful(), "an abort: reset");
    // The server heard the client at t0 + 6 s: its check moved to t0 + 16 s.
    assert!(p.server.closed.is_none());
    assert_eq!(p.server.core.poll_timeout(), Some(t0 + 16 * S));
    p.advance(5 * S);
    assert!(p.server.closed.is_none(), "silent for 15 s only");
    p.advance(S);
    assert_eq!(p.server.closed.map(|c| c.cause), Some(Cause::IdleTimeout));
}

#[test]
fn traffic_keeps_the_channel_open_without_a_timer_per_read() {
    let mut p = Pair::connected_with(16, idle(10));
    let mut rearmed = 0;
    for beat in 0..40u64 {
        // Both ways every 3 s: neither side is ever silent for 10 s.
        let before = p.client.core.poll_timeout();
        signal(&mut p, Side::Client, 2 * beat + 1);
        signal(&mut p, Side::Server, 2 * beat + 2);
        p.settle();
        assert_eq!(
            p.client.core.poll_timeout(),
            before,
            "a read does not move the deadline"
        );
        p.advance(3 * S);
        if p.client.core.take_new_deadline().is_some() {
            rearmed += 1;
        }
        assert!(p.client.closed.is_none() && p.server.closed.is_none());
    }
    // 120 s of traffic: one look every 10 s or so, not one per read (80).
    assert!((10..=14).contains(&rearmed), "re-armed {rearmed} times");
    p.client.take_delivered();
    p.server.take_delivered();
    // Then silence (the last beat was 3 s ago): both close the timeout
    // after their last byte.
    p.advance(6 * S);
    assert!(p.client.closed.is_none(), "silent for 9 s");
    p.advance(S);
    assert_eq!(p.client.closed.map(|c| c.cause), Some(Cause::IdleTimeout));
    assert_eq!(p.server.closed.map(|c| c.cause), Some(Cause::IdleTimeout));
}

#[test]
fn a_server_that_accepts_the_connection_but_never_answers_times_out() {
    let mut p = Pair::with_timeouts(16, 16, idle(5));
    p.settle();
    // The HelloRequest arrived; the server application never answers.
    assert_eq!(p.server.take_delivered().len(), 1);
    p.advance(4 * S);
    assert!(p.client.closed.is_none());
    p.advance(S);
    let close = p.client.closed.expect("no HelloResponse for 5 s");
    assert_eq!(close.report_cause(), Some(Status::CommunicationFailed));
}

#[test]
fn an_accepted_connection_that_never_says_hello_closes_silently() {
    let mut p = Pair::with_timeouts(16, 16, idle(5));
    // Nothing moves: the client's HelloRequest is never written.
    p.advance(5 * S);
    let close = p.server.closed.expect("idle before its hello");
    assert_eq!(close.cause, Cause::IdleTimeout);
    assert!(close.is_silent(), "the application never saw it");
    assert!(p.server.delivered.is_empty());
}

#[test]
fn a_connect_that_takes_longer_than_the_idle_timeout_fails() {
    let t0 = Instant::now();
    let mut hello = Message::new();
    hello.header.proto.opcode = OpCode::HelloRequest;
    hello.header.message_id = 8;
    let mut core = ChannelCore::client(3, hello, idle(5));
    core.handle_connecting(t0);
    assert_eq!(core.take_new_deadline(), Some(t0 + 5 * S));
    assert_eq!(core.handle_timeout(t0 + 4 * S, false), None);
    let close = core.handle_timeout(t0 + 5 * S, false).expect("timed out");
    assert_eq!(close.cause, Cause::IdleTimeout);
    assert_eq!(close.report_cause(), Some(Status::ConnectFailed));
    core.give_back_unsent(&close);
    let back = core.poll_delivery().expect("the HelloRequest comes back");
    assert_eq!(
        (back.opcode(), back.status()),
        (OpCode::HelloRequest, Status::ConnectFailed)
    );
}

#[test]
fn a_cleared_hello_deadline_hands_over_to_the_idle_check() {
    // The hello timeout (5 s) is scheduled before the idle check (20 s):
    // when the hello arrives, the scheduled deadline must stay meaningful
    // (the reactor never learns of deadlines set by a read).
    let timeouts = Timeouts {
        hello: Some(5 * S),
        ..idle(20)
    };
    let mut p = Pair::with_timeouts(16, 16, timeouts);
    let t0 = p.server.now;
    assert_eq!(p.server.core.take_new_deadline(), Some(t0 + 5 * S));
    p.advance(2 * S);
    p.settle(); // the hello arrives at t0 + 2 s
    assert_eq!(p.server.core.poll_timeout(), Some(t0 + 5 * S));
    p.advance(3 * S);
    assert!(
        p.server.closed.is_none(),
        "the hello came: no hello timeout"
    );
    assert_eq!(p.server.core.take_new_deadline(), Some(t0 + 22 * S));
    p.advance(17 * S);
    assert_eq!(p.server.closed.map(|c| c.cause), Some(Cause::IdleTimeout));
}

#[test]
fn a_channel_not_read_for_want_of_memory_is_not_idle() {
    let mut p = Pair::connected_with(2, idle(10));
    // The server's application holds every message it gets: its pool runs
    // dry and reading stops with frames waiting.
    for id in 1..=6 {
        signal(&mut p, Side::Client, id);
    }
    p.settle();
    assert!(p.server.starved, "reading paused");
    let held = p.server.take_delivered();
    p.advance(30 * S);
    assert!(
        p.server.closed.is_none(),
        "bytes wait: the peer is not silent"
    );
    // Memory comes back: the rest is read, then silence counts again.
    drop(held);
    let mut got = 2;
    for _ in 0..10 {
        p.settle();
        got += p.server.take_delivered().len();
        if !p.server.starved {
            break;
        }
    }
    assert_eq!(got, 6, "every signal read");
    p.advance(10 * S);
    assert_eq!(p.server.closed.map(|c| c.cause), Some(Cause::IdleTimeout));
}

#[test]
fn without_an_idle_timeout_a_silent_channel_stays_open() {
    let mut p = Pair::connected_with(
        16,
        Timeouts {
            idle: None,
            ..idle(1)
        },
    );
    assert_eq!(p.client.core.poll_timeout(), None);
    p.advance(Duration::from_secs(1 << 30));
    assert!(p.client.closed.is_none() && p.server.closed.is_none());
}
