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
    drop((client, server));
}
