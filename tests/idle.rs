//! SPEC §5.1: an idle engine uses no CPU (no periodic wake-ups). In a test binary
//! of its own so that no other engine's I/O thread is around.
#![cfg(target_os = "linux")] // reads /proc

mod util;

use std::time::Duration;

use util::*;

/// CPU ticks (user + system) of every thread of this process named `name`.
fn thread_ticks(name: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let tid = entry.file_name().to_string_lossy().into_owned();
        let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"));
        if !comm.is_ok_and(|c| c.trim() == name) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command: utime and stime are 12th and 13th.
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let utime: u64 = fields[11].parse().unwrap();
        let stime: u64 = fields[12].parse().unwrap();
        out.push((tid, utime + stime));
    }
    out
}

#[test]
fn idle_engine_uses_no_cpu() {
    let engine = engine();
    let server = engine.create_group().unwrap();
    let client = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(Transport::Tcp);
    listen(&engine, &server, &saddr);
    let (cch, sch) = connect_pair(&engine, &client, &server, &caddr);
    round_trip(&engine, &client, &server, cch, sch, b"x");
    std::thread::sleep(Duration::from_millis(50));

    let before = thread_ticks("tofu-io");
    assert_eq!(before.len(), 1, "one engine, one I/O thread: {before:?}");
    let polls = engine.stats().polls;
    std::thread::sleep(Duration::from_millis(500));
    // The exact measure: an idle engine does not even wake up (no timer is
    // due: the hello and bye timeouts only run while a peer owes an answer).
    assert_eq!(engine.stats().polls, polls, "the idle I/O thread woke up");
    let after = thread_ticks("tofu-io");
    assert_eq!(after.len(), 1);
    assert_eq!(before[0].0, after[0].0);
    let used = after[0].1 - before[0].1;
    // A busy loop burns ~50 ticks (at 100 Hz) in 500 ms.
    assert!(used <= 1, "the idle I/O thread used {used} ticks in 500 ms");

    // The same with a thread blocked in `wait_receive` right after a round
    // trip: it takes the poller (leader/follower) or follows; either way
    // nothing wakes up while nothing happens.
    let server = std::sync::Arc::new(server);
    round_trip(&engine, &client, &server, cch, sch, b"y");
    let waiter = {
        let server = server.clone();
        std::thread::Builder::new()
            .name("idle-waiter".into())
            .spawn(move || server.wait_receive(None))
            .unwrap()
    };
    std::thread::sleep(Duration::from_millis(50));
    let io_before = thread_ticks("tofu-io");
    let waiter_before = thread_ticks("idle-waiter");
    let stats = engine.stats();
    std::thread::sleep(Duration::from_millis(500));
    let after = engine.stats();
    assert_eq!(after.polls, stats.polls, "woke up while idle: {after:?}");
    let io_used = thread_ticks("tofu-io")[0].1 - io_before[0].1;
    let waiter_used = thread_ticks("idle-waiter")[0].1 - waiter_before[0].1;
    println!(
        "idle with a blocked receiver: I/O thread {io_used} ticks, receiver {waiter_used} ticks \
         in 500 ms; the receiver led {} polls before",
        stats.waiter_polls
    );
    assert!(io_used <= 1, "the idle I/O thread used {io_used} ticks");
    assert!(
        waiter_used <= 1,
        "the idle receiver used {waiter_used} ticks"
    );
    server.update_receiver(None).unwrap();
    let woken = join_within(waiter).unwrap().expect("the update");
    assert!(woken.is_from_engine());

    // The same with a pending `receive_async` on a tokio runtime: the I/O
    // thread keeps the poller for it (no lease) and sleeps in `poll`.
    round_trip(&engine, &client, &server, cch, sch, b"z");
    let waiter = {
        let server = server.clone();
        std::thread::Builder::new()
            .name("idle-async".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                rt.block_on(server.receive_async())
            })
            .unwrap()
    };
    std::thread::sleep(Duration::from_millis(50));
    let io_before = thread_ticks("tofu-io");
    let waiter_before = thread_ticks("idle-async");
    let stats = engine.stats();
    std::thread::sleep(Duration::from_millis(500));
    let after = engine.stats();
    assert_eq!(after.polls, stats.polls, "woke up while idle: {after:?}");
    let io_used = thread_ticks("tofu-io")[0].1 - io_before[0].1;
    let waiter_used = thread_ticks("idle-async")[0].1 - waiter_before[0].1;
    println!(
        "idle with a pending async receiver: I/O thread {io_used} ticks, executor {waiter_used} \
         ticks in 500 ms"
    );
    assert!(io_used <= 1, "the idle I/O thread used {io_used} ticks");
    assert!(
        waiter_used <= 1,
        "the idle executor used {waiter_used} ticks"
    );
    server.update_receiver(None).unwrap();
    let woken = join_within(waiter).unwrap();
    assert!(woken.is_from_engine());
    drop((client, server));
}
