//! System-call economy over real sockets: what the engine's statistics say
//! about its reads.

#[macro_use]
mod util;

use util::*;

/// 200 round trips, one message at a time: each message arrives alone and is
/// read with one system call, not two (the data, then `WouldBlock`). A few
/// empty reads remain possible (readiness reported for data that another
/// read took first), so the bound is a quarter of the reads, where reading
/// until `WouldBlock` makes it one per read.
fn a_message_that_arrives_alone_costs_one_read(t: Transport) {
    if !tofu::testing::short_reads_end_reading() {
        println!("not applicable: a level-triggered selector reads until WouldBlock");
        return;
    }
    const N: u64 = 200;
    let c = connected(t);
    let before = c.engine.stats();
    for i in 0..N {
        round_trip(
            &c.engine,
            &c.client,
            &c.server,
            c.cch,
            c.sch,
            &seq_body(i, 16),
        );
    }
    let after = c.engine.stats();
    let received = after.messages_received - before.messages_received;
    let reads = after.read_calls - before.read_calls;
    let empty = after.empty_reads - before.empty_reads;
    eprintln!("{received} messages: {reads} reads with data, {empty} empty");
    // (The counters are updated just after a delivery: the set-up's last
    // message can land on either side of `before`.)
    assert!((2 * N..=2 * N + 1).contains(&received), "{received}");
    assert!(reads <= received, "{reads} reads for {received} messages");
    assert!(
        empty * 4 <= reads,
        "{empty} empty reads next to {reads} with data"
    );
}

tcp_and_uds!(a_message_that_arrives_alone_costs_one_read);
