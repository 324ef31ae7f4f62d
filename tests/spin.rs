//! `Options::receive_spin`: a thread in `wait_receive` with nothing queued
//! keeps looking for a while before it sleeps. These tests check what that
//! must not change — every message arrives exactly once and in order,
//! deadlines hold, and the thread does sleep once the budget is spent —
//! not how fast it is (`tofu-probe rtt --spin 50` measures that).

mod util;

use std::time::{Duration, Instant};

use tofu::{ChannelGroup, Engine, MAX_RECEIVE_SPIN, OpCode, Options};
use util::*;

fn spin_engine(spin: Duration) -> Engine {
    Engine::new(Options {
        receive_spin: spin,
        ..Options::default()
    })
    .expect("engine")
}

/// Two engines that spin `spin`, connected: (server engine, server group,
/// client engine, client group, client channel).
fn spinning_pair(spin: Duration) -> (Engine, ChannelGroup, Engine, ChannelGroup, u16) {
    let (server_engine, client_engine) = (spin_engine(spin), spin_engine(spin));
    let server = server_engine.create_group().unwrap();
    let client = client_engine.create_group().unwrap();
    let (saddr, caddr) = addresses(any_transport());
    listen(&server_engine, &server, &saddr);
    let (cch, _) = connect_pair(&client_engine, &client, &server, &caddr);
    (server_engine, server, client_engine, client, cch)
}

/// Two engines that both spin 50 µs, an echo thread on one: 500 round
/// trips, each answered once, in order, with its own body.
#[test]
fn round_trips_with_a_spin_budget_arrive_in_order() {
    const ROUNDS: u32 = 500;
    let (server_engine, server, client_engine, client, ch) =
        spinning_pair(Duration::from_micros(50));
    let echo = std::thread::spawn(move || {
        let mut echoed = 0u32;
        while echoed < ROUNDS {
            let Ok(Some(m)) = server.wait_receive(Some(timeout())) else {
                break;
            };
            if m.is_from_engine() || m.opcode() != OpCode::Request {
                continue;
            }
            let mut r = m;
            r.header.proto.opcode = OpCode::Response;
            server.post(r).expect("post response");
            echoed += 1;
        }
        // The group goes back with the count: dropped here, it would close
        // its channel while the last response may still wait to be written.
        (echoed, server)
    });
    for i in 0..ROUNDS {
        let body = i.to_le_bytes();
        checked_round_trip(&client_engine, &client, ch, &body);
    }
    let (echoed, _server) = join_within(echo);
    assert_eq!(echoed, ROUNDS);
    println!(
        "waiter polls: client {}, server {}",
        client_engine.stats().waiter_polls,
        server_engine.stats().waiter_polls
    );
}

/// Three threads that spin wait on one group (one may lead, the others
/// follow and watch the queue): each of 600 messages is received exactly
/// once.
#[test]
fn spinning_threads_sharing_a_group_receive_each_message_once() {
    let (_server_engine, server, client_engine, client, ch) =
        spinning_pair(Duration::from_micros(200));
    three_receivers_get_each_once(server, &client_engine, &client, ch, 600);
}

/// A budget never takes a call past its own timeout: with the longest
/// budget, a zero-timeout `wait_receive` polls once (a call that spun for
/// the budget would poll thousands of times), and timed waits return
/// nothing, no sooner than asked.
#[test]
fn a_spinning_wait_keeps_its_deadline() {
    let engine = spin_engine(MAX_RECEIVE_SPIN);
    let group = engine.create_group().unwrap();
    let other = engine.create_group().unwrap();
    for _ in 0..20 {
        prime(&engine, &other);
        let before = engine.stats().waiter_polls;
        assert!(group.wait_receive(Some(Duration::ZERO)).unwrap().is_none());
        let polls = engine.stats().waiter_polls - before;
        assert!(polls <= 1, "{polls} polls for a zero timeout");
    }
    for wait in [Duration::from_millis(1), Duration::from_millis(30)] {
        let t0 = Instant::now();
        assert!(group.wait_receive(Some(wait)).unwrap().is_none());
        let took = t0.elapsed();
        assert!(took >= wait, "returned after {took:?}, before {wait:?}");
        assert!(took < timeout(), "{took:?}");
    }
}

/// The budget is spent once per call, then the thread sleeps: a 300 ms
/// wait on an idle engine whose budget is asked as an hour (lowered to
/// [`MAX_RECEIVE_SPIN`], 10 ms) polls a bounded number of times. Spinning
/// for the whole wait would poll hundreds of thousands of times (a
/// non-blocking poll costs about a microsecond); 10 ms of it, about ten
/// thousand at most.
#[test]
fn a_spinning_thread_sleeps_once_the_budget_is_spent() {
    let engine = spin_engine(Duration::from_secs(3600));
    let group = engine.create_group().unwrap();
    let other = engine.create_group().unwrap();
    prime(&engine, &other);
    let before = engine.stats();
    let wait = Duration::from_millis(300);
    let t0 = Instant::now();
    assert!(group.wait_receive(Some(wait)).unwrap().is_none());
    assert!(t0.elapsed() >= wait);
    let after = engine.stats();
    let polls = after.polls - before.polls;
    println!(
        "{polls} polls in a {wait:?} wait ({} by the waiting thread)",
        after.waiter_polls - before.waiter_polls
    );
    assert!(polls < 100_000, "{polls} polls: the thread did not sleep");
}
