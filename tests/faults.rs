//! Faults (issue 5): a peer process killed with SIGKILL mid-stream, a listener
//! engine shut down under 100 streaming clients, a group destroyed while its
//! channels are busy, and an engine shut down under threads blocked in
//! `wait_receive` and posting. Each ends with the right reports, no hang, no
//! panic, and the nothing-is-lost accounting of SPEC §5.5 checked message by
//! message: what the peer received is an in-order prefix of what was posted,
//! what came back (origin Engine, non-zero status) is the rest, in order, and
//! nothing is both.
#![cfg(target_os = "linux")]

#[macro_use]
mod util;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tofu::testing::free_tcp_port;
use tofu::{Address, Engine, Error, Message, OpCode, Options, Status};
use util::*;

/// Statuses a message may come back with when its channel failed.
fn is_failure(s: Status) -> bool {
    matches!(
        s,
        Status::PeerDisconnected
            | Status::SendFailed
            | Status::RecvFailed
            | Status::CommunicationFailed
    )
}

/// Checks SPEC §5.5 for one channel: `received` (in arrival order) is
/// `0..k`, `returned` (in arrival order) is `j..posted`, and `k <= j`.
/// Returns `(k, j)`.
#[track_caller]
fn check_prefix_suffix(what: &str, posted: u64, received: &[u64], returned: &[u64]) -> (u64, u64) {
    let k = received.len() as u64;
    assert_eq!(
        received,
        (0..k).collect::<Vec<_>>().as_slice(),
        "{what}: received is an in-order prefix"
    );
    let j = posted - returned.len() as u64;
    assert_eq!(
        returned,
        (j..posted).collect::<Vec<_>>().as_slice(),
        "{what}: returned is the in-order suffix"
    );
    assert!(
        k <= j,
        "{what}: {k} received but only {j} not returned: duplicates"
    );
    (k, j)
}

/// A message from no pool: once written it is freed, not put back in a pool
/// where the engine could read more into it (that would let a peer that also
/// sends read on without its application receiving anything).
fn unpooled(channel: u16, op: OpCode, body: Vec<u8>) -> Message {
    let mut m = Message::new();
    m.header.channel_number = channel;
    m.header.proto.opcode = op;
    m.body = body;
    m
}

// ----- a peer process killed mid-stream ----------------------------------------------

const KILL_MSGS: u64 = 3000;
const KILL_LEN: usize = 16 * 1024;
const CHILD_LEN: usize = 1000;

/// The child: connects to the parent, streams Signals to it (seq bodies, a
/// bounded window in flight) and reads the parent's stream slowly, printing
/// `TOFU_R <seq>` for each message received — until it is killed.
fn run_stream_peer() {
    let port: u16 = std::env::var("TOFU_PORT").unwrap().parse().unwrap();
    let engine = tiny_pool_engine();
    let group = Arc::new(engine.create_group().unwrap());
    let h = group
        .post(opening(&engine, &Address::tcp_client("127.0.0.1", port)))
        .unwrap();
    let ch = h.channel_number;
    let r = recv(&group);
    assert_eq!(r.opcode(), OpCode::HelloResponse, "{r:?}");
    drop(r);
    {
        let (engine, group) = (engine.clone(), group.clone());
        std::thread::spawn(move || {
            for seq in 0u64.. {
                while seq.saturating_sub(engine.stats().messages_sent) > 64 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let m = unpooled(ch, OpCode::Signal, fast_seq_body(seq, CHILD_LEN));
                if group.post(m).is_err() {
                    return;
                }
            }
        });
    }
    for n in 0u64.. {
        let m = recv_skip_pool_empty(&group);
        assert!(m.is_from_application(), "child: {m:?}");
        let seq = check_fast_seq_body(&m.body, KILL_LEN);
        tell_parent(&format!("TOFU_R {seq}"));
        if n % 4 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Collects the sequence numbers the child printed so far. (The harness may
/// have started the first line: "test child_entry ... TOFU_R 0".)
fn printed_seqs(child: &ChildProc, into: &mut Vec<u64>) {
    for l in child.drain_lines() {
        if let Some(at) = l.find("TOFU_R ") {
            into.push(l[at + 7..].trim().parse().expect("a sequence number"));
        }
    }
}

#[test]
#[ignore = "entry point of the child processes (runs only with TOFU_CHILD_ROLE set)"]
fn child_entry() {
    match child_role().as_deref() {
        None => println!(
            "not applicable: the entry point of this file's child processes, run by its tests"
        ),
        Some("stream_peer") => run_stream_peer(),
        Some(other) => panic!("unknown child role {other}"),
    }
}

/// The parent streams 3000 x 16 KiB to a child that streams back; the child
/// is killed with SIGKILL mid-stream.
#[test]
fn peer_killed_mid_stream() {
    // Everything is queued up front (48 MiB): above the default limits.
    let engine = Engine::new(Options {
        channel_send_limit: 64 << 20,
        engine_send_limit: 64 << 20,
        ..Options::default()
    })
    .unwrap();
    let server = engine.create_group().unwrap();
    let port = free_tcp_port().unwrap();
    listen(&engine, &server, &Address::tcp_server("127.0.0.1", port));
    let mut child = ChildProc::spawn(
        "child_entry",
        "stream_peer",
        &[("TOFU_PORT", port.to_string())],
    );
    let hello = recv(&server);
    assert_eq!(hello.opcode(), OpCode::HelloRequest, "{hello:?}");
    let sch = hello.header.channel_number;
    let mut accept = hello;
    accept.header.proto.opcode = OpCode::HelloResponse;
    server.post(accept).unwrap();
    for seq in 0..KILL_MSGS {
        server
            .post(msg(
                &engine,
                sch,
                OpCode::Request,
                &fast_seq_body(seq, KILL_LEN),
            ))
            .unwrap();
    }
    // Mid-stream in both directions: then SIGKILL.
    let mut from_child = Vec::new();
    let mut printed = Vec::new();
    while from_child.len() < 300 || printed.len() < 100 {
        let m = recv_skip_pool_empty(&server);
        assert!(
            m.is_from_application() && m.opcode() == OpCode::Signal,
            "{m:?}"
        );
        from_child.push(check_fast_seq_body(&m.body, CHILD_LEN));
        printed_seqs(&child, &mut printed);
    }
    child.kill();
    let mut returned = Vec::new();
    loop {
        let m = recv_skip_pool_empty(&server);
        assert_eq!(m.header.channel_number, sch, "{m:?}");
        if m.is_from_application() {
            assert!(returned.is_empty(), "data after a returned message: {m:?}");
            from_child.push(check_fast_seq_body(&m.body, CHILD_LEN));
            continue;
        }
        if m.opcode() == OpCode::Signal {
            assert_report(&m, sch, Status::ChannelClosed);
            break;
        }
        assert_eq!(m.opcode(), OpCode::Request, "{m:?}");
        assert!(is_failure(m.status()), "failure status: {m:?}");
        returned.push(check_fast_seq_body(&m.body, KILL_LEN));
    }
    recv_nothing(&server, Duration::from_millis(50));
    // What the child printed before it died is a prefix of what it received.
    std::thread::sleep(Duration::from_millis(50));
    printed_seqs(&child, &mut printed);
    let (k, j) = check_prefix_suffix("parent -> killed child", KILL_MSGS, &printed, &returned);
    assert!(
        !returned.is_empty(),
        "48 MB cannot all fit in socket buffers"
    );
    // The child's stream: an in-order prefix, nothing lost in between.
    check_prefix_suffix("child -> parent", from_child.len() as u64, &from_child, &[]);
    println!(
        "KILL: child saw {k} of {KILL_MSGS} (printed), {} returned, {} in flight when killed; \
         parent got {} from the child",
        returned.len(),
        j - k,
        from_child.len()
    );
    // The engine is fine afterwards.
    let client = engine.create_group().unwrap();
    let (cch, sch2) = connect_pair(
        &engine,
        &client,
        &server,
        &Address::tcp_client("127.0.0.1", port),
    );
    round_trip(&engine, &client, &server, cch, sch2, b"after the kill");
}

// ----- listener engine shut down under 100 streaming clients --------------------------

const CLIENTS: usize = 100;
const MAX_PER_CHANNEL: u64 = 500;
const STREAM_LEN: usize = 1024;

/// Over TCP the kernel buffers of 100 loopback connections (about 4 MB each)
/// can hold the whole stream, so nothing may be left to come back; over a
/// Unix-domain socket with the kernel's default buffer (about 200 KB each:
/// `unix_send_buffer` 0 on the clients' engine) the shutdown waits until the
/// clients' engine holds a backlog (the server application is slow), and
/// those messages must come back.
fn listener_shutdown_under_100_streaming_clients(t: Transport) {
    let server_engine = tiny_pool_engine();
    let server = server_engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&server_engine, &server, &saddr);
    // The server application: accepts, then records every message per hello id.
    let by_hello: Arc<Mutex<HashMap<u64, Vec<u64>>>> = Arc::default();
    let total_received = Arc::new(AtomicU64::new(0));
    let server_app = {
        let (by_hello, total) = (by_hello.clone(), total_received.clone());
        std::thread::spawn(move || {
            let mut hello_of: HashMap<u16, u64> = HashMap::new();
            loop {
                let m = match server.wait_receive(None) {
                    Ok(Some(m)) => m,
                    Ok(None) => continue,
                    Err(e) => {
                        assert_eq!(e, Error::ShutdownStarted);
                        return;
                    }
                };
                if m.is_from_engine() {
                    assert_eq!(m.status(), Status::PoolEmpty, "server: {m:?}");
                    continue;
                }
                if m.opcode() == OpCode::HelloRequest {
                    hello_of.insert(m.header.channel_number, m.header.message_id);
                    by_hello
                        .lock()
                        .unwrap()
                        .insert(m.header.message_id, Vec::new());
                    let mut a = m;
                    a.header.proto.opcode = OpCode::HelloResponse;
                    server.post(a).unwrap();
                    continue;
                }
                let id = hello_of[&m.header.channel_number];
                let seq = check_fast_seq_body(&m.body, STREAM_LEN);
                by_hello.lock().unwrap().get_mut(&id).unwrap().push(seq);
                // A slow consumer (at most ~100 k messages/s), so that the
                // clients' backlog outgrows the kernel buffers.
                if total.fetch_add(1, Ordering::Relaxed) % 100 == 99 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };
    let client_engine = Engine::new(Options {
        unix_send_buffer: 0,
        ..Options::default()
    })
    .unwrap();
    let client = Arc::new(client_engine.create_group().unwrap());
    let mut channels = Vec::new(); // (client channel, hello id)
    for _ in 0..CLIENTS {
        let h = client.post(opening(&client_engine, &caddr)).unwrap();
        channels.push((h.channel_number, h.message_id));
    }
    for _ in 0..CLIENTS {
        let r = recv_skip_pool_empty(&client);
        assert_eq!(r.opcode(), OpCode::HelloResponse, "{r:?}");
    }
    // Stream on every channel, round robin, until each is closed (or the cap).
    let poster = {
        let (client, engine, channels) = (client.clone(), client_engine.clone(), channels.clone());
        std::thread::spawn(move || {
            let mut posted = vec![0u64; CLIENTS];
            let mut open = [true; CLIENTS];
            while open.iter().any(|&o| o) {
                for (i, &(ch, _)) in channels.iter().enumerate() {
                    if !open[i] || posted[i] == MAX_PER_CHANNEL {
                        open[i] = false;
                        continue;
                    }
                    let m = msg(
                        &engine,
                        ch,
                        OpCode::Request,
                        &fast_seq_body(posted[i], STREAM_LEN),
                    );
                    match client.post(m) {
                        Ok(_) => posted[i] += 1,
                        Err(e) => {
                            assert_eq!(e.error, Error::InvalidChannelNumber, "{e}");
                            assert_eq!(check_fast_seq_body(&e.message.body, STREAM_LEN), posted[i]);
                            open[i] = false;
                        }
                    }
                }
            }
            posted
        })
    };
    // Generous: the machine may be busy. Over UDS, also wait until the
    // client engine holds a backlog the kernel buffers could not take (how
    // soon depends on how fast each side runs), so that the shutdown
    // happens mid-stream for sure.
    let deadline = std::time::Instant::now() + timeout() * 3;
    let backlog = matches!(t, Transport::Uds).then_some(1000);
    while total_received.load(Ordering::Relaxed) < 3000
        || backlog.is_some_and(|b| client_engine.stats().queued_messages < b)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never got mid-stream: {:?}",
            client_engine.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    within(timeout(), move || server_engine.shutdown());
    join_within(server_app);

    // Every client channel: its returned messages, then one report.
    let mut returned: HashMap<u16, Vec<u64>> = HashMap::new();
    let mut closed = 0;
    while closed < CLIENTS {
        let m = recv_skip_pool_empty(&client);
        let ch = m.header.channel_number;
        assert!(m.is_from_engine(), "{m:?}");
        if m.opcode() == OpCode::Signal {
            assert_report(&m, ch, Status::ChannelClosed);
            closed += 1;
            continue;
        }
        assert_eq!(m.opcode(), OpCode::Request, "{m:?}");
        assert!(is_failure(m.status()), "failure status: {m:?}");
        returned
            .entry(ch)
            .or_default()
            .push(check_fast_seq_body(&m.body, STREAM_LEN));
    }
    let posted = join_within(poster);
    recv_nothing(&client, Duration::from_millis(50));
    let by_hello = by_hello.lock().unwrap();
    let (mut got, mut back, mut lost_in_abort) = (0, 0, 0);
    for (i, &(ch, id)) in channels.iter().enumerate() {
        let received = &by_hello[&id];
        let ret = returned.get(&ch).map(Vec::as_slice).unwrap_or(&[]);
        let (k, j) = check_prefix_suffix(&format!("channel {ch}"), posted[i], received, ret);
        got += k;
        back += posted[i] - j;
        lost_in_abort += j - k;
    }
    let total_posted: u64 = posted.iter().sum();
    println!(
        "SHUTDOWN: {CLIENTS} clients posted {total_posted}; server app got {got}, \
         {back} came back, {lost_in_abort} written but destroyed by the abort"
    );
    if matches!(t, Transport::Uds) {
        assert!(back > 0, "the shutdown happened mid-stream");
    }
    assert_eq!(client_engine.stats().open_channels, 0);
}

tcp_and_uds!(listener_shutdown_under_100_streaming_clients);

// ----- a group destroyed while its channels are busy --------------------------------

/// As above, the returned suffix is certain only over a Unix-domain socket.
fn group_destroyed_while_busy(t: Transport) {
    const DOOMED: usize = 10;
    const N: u64 = 1000;
    const LEN: usize = 4096;
    let server_engine = engine();
    let doomed = server_engine.create_group().unwrap();
    let survivor = server_engine.create_group().unwrap();
    let (s1, c1) = addresses(t);
    let (s2, c2) = addresses(t);
    listen(&server_engine, &doomed, &s1);
    listen(&server_engine, &survivor, &s2);
    let client_engine = engine();
    let client = client_engine.create_group().unwrap();
    let pairs: Vec<(u16, u16)> = (0..DOOMED)
        .map(|_| connect_pair(&client_engine, &client, &doomed, &c1))
        .collect();
    let (scch, ssch) = connect_pair(&client_engine, &client, &survivor, &c2);
    // The survivor's application keeps receiving (messages it left unread
    // would hold the pool the doomed group needs).
    let survivor_app = std::thread::spawn(move || {
        for seq in 0..N {
            let m = recv_skip_pool_empty(&survivor);
            assert_eq!(m.header.channel_number, ssch);
            assert_eq!(check_fast_seq_body(&m.body, LEN), seq, "survivor: in order");
        }
        survivor
    });
    // Busy both ways on the doomed channels, and on the survivor.
    for seq in 0..N {
        for &(cch, sch) in &pairs {
            client
                .post(msg(
                    &client_engine,
                    cch,
                    OpCode::Request,
                    &fast_seq_body(seq, LEN),
                ))
                .unwrap();
            doomed
                .post(unpooled(sch, OpCode::Signal, fast_seq_body(seq, LEN)))
                .unwrap();
        }
        client
            .post(msg(
                &client_engine,
                scch,
                OpCode::Signal,
                &fast_seq_body(seq, LEN),
            ))
            .unwrap();
    }
    let mut got: HashMap<u16, Vec<u64>> = HashMap::new();
    for _ in 0..(DOOMED as u64 * N / 4) {
        let m = recv_skip_pool_empty(&doomed);
        assert!(m.is_from_application(), "{m:?}");
        got.entry(m.header.channel_number)
            .or_default()
            .push(check_fast_seq_body(&m.body, LEN));
    }
    within(timeout(), move || doomed.destroy()).unwrap();

    // The client: per doomed channel, the server's stream (a prefix), its own
    // messages coming back (a suffix), one report.
    let mut from_server: HashMap<u16, Vec<u64>> = HashMap::new();
    let mut returned: HashMap<u16, Vec<u64>> = HashMap::new();
    let mut closed = 0;
    while closed < DOOMED {
        let m = recv_skip_pool_empty(&client);
        let ch = m.header.channel_number;
        assert_ne!(ch, scch, "the survivor's channel is untouched: {m:?}");
        if m.is_from_application() {
            assert!(!returned.contains_key(&ch), "data after failure: {m:?}");
            assert_eq!(m.opcode(), OpCode::Signal, "{m:?}");
            from_server
                .entry(ch)
                .or_default()
                .push(check_fast_seq_body(&m.body, LEN));
        } else if m.opcode() == OpCode::Signal {
            assert_report(&m, ch, Status::ChannelClosed);
            closed += 1;
        } else {
            assert_eq!(m.opcode(), OpCode::Request, "{m:?}");
            assert!(is_failure(m.status()), "{m:?}");
            returned
                .entry(ch)
                .or_default()
                .push(check_fast_seq_body(&m.body, LEN));
        }
    }
    let (mut back, mut delivered) = (0, 0);
    for &(cch, sch) in &pairs {
        let received = got.get(&sch).map(Vec::as_slice).unwrap_or(&[]);
        let ret = returned.get(&cch).map(Vec::as_slice).unwrap_or(&[]);
        let (_, j) = check_prefix_suffix(&format!("client {cch} -> doomed"), N, received, ret);
        back += N - j;
        // The doomed group's own queued messages are freed (SPEC §5.9): what
        // the client got of them is an in-order prefix.
        let fs = from_server.get(&cch).map(Vec::as_slice).unwrap_or(&[]);
        check_prefix_suffix(&format!("doomed -> client {cch}"), fs.len() as u64, fs, &[]);
        delivered += fs.len();
    }
    println!(
        "DESTROY: {DOOMED} busy channels; {back} client messages came back; client got {delivered} of the doomed group's"
    );
    // The survivor got everything, in order, and still answers.
    let survivor = join_within(survivor_app);
    round_trip(
        &client_engine,
        &client,
        &survivor,
        scch,
        ssch,
        b"still here",
    );
    assert_eq!(
        server_engine.stats().open_channels,
        2,
        "survivor's listener and channel"
    );
    if matches!(t, Transport::Uds) {
        assert!(back > 0, "the destroy happened mid-stream");
    }
}

tcp_and_uds!(group_destroyed_while_busy);

// ----- an engine shut down under blocked and posting threads ------------------------

#[test]
fn engine_shutdown_under_blocked_and_posting_threads() {
    const POSTERS: u64 = 2;
    let peer_engine = engine();
    let peer = peer_engine.create_group().unwrap();
    let port = free_tcp_port().unwrap();
    listen(&peer_engine, &peer, &Address::tcp_server("127.0.0.1", port));
    let victim = engine();
    let busy = Arc::new(victim.create_group().unwrap());
    let idle = Arc::new(victim.create_group().unwrap());
    let (ch, pch) = connect_pair(
        &victim,
        &busy,
        &peer,
        &Address::tcp_client("127.0.0.1", port),
    );

    let waiters: Vec<_> = [idle.clone(), idle.clone(), busy.clone()]
        .into_iter()
        .map(|g| std::thread::spawn(move || g.wait_receive(None)))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let posters: Vec<_> = (0..POSTERS)
        .map(|t| {
            let (g, stop) = (busy.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut posted = 0u64;
                // Not from the pool: `get` fails once the engine is shut down.
                let mut next = None;
                loop {
                    let m = next.take().unwrap_or_else(|| {
                        let mut m = unpooled(ch, OpCode::Signal, seq_body(posted, 512));
                        m.text_headers.append("t", &t.to_string()).unwrap();
                        m
                    });
                    match g.post(m) {
                        Ok(_) => posted += 1,
                        // The channel's outgoing queue is full: the same
                        // message again, once the engine wrote some.
                        Err(err) if err.error == Error::PoolEmpty => {
                            next = Some(err.message);
                            std::thread::yield_now();
                        }
                        Err(err) => {
                            assert_eq!(err.error, Error::ShutdownStarted, "{err}");
                            assert_eq!(
                                check_fast_seq_body(&err.message.body, 512),
                                posted,
                                "given back"
                            );
                            return posted;
                        }
                    }
                    if stop.load(Ordering::Relaxed) {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    // The peer receives a while, then the victim engine shuts down.
    let mut got: Vec<Vec<u64>> = vec![Vec::new(); POSTERS as usize];
    let record = |m: Message, got: &mut Vec<Vec<u64>>| {
        let t: usize = m.text_headers.get("t").unwrap().parse().unwrap();
        got[t].push(check_fast_seq_body(&m.body, 512));
    };
    for _ in 0..2000 {
        let m = recv_skip_pool_empty(&peer);
        record(m, &mut got);
    }
    let v = victim.clone();
    within(timeout(), move || v.shutdown());
    drop(victim);
    for w in waiters {
        assert_eq!(join_within(w).unwrap_err(), Error::ShutdownStarted);
    }
    let posted: Vec<u64> = posters.into_iter().map(join_within).collect();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        busy.wait_receive(Some(Duration::ZERO)).unwrap_err(),
        Error::ShutdownStarted
    );
    // The peer: the rest of what arrived, then the report.
    loop {
        let m = recv_skip_pool_empty(&peer);
        if m.is_from_engine() {
            assert_report(&m, pch, Status::ChannelClosed);
            break;
        }
        record(m, &mut got);
    }
    // After a shutdown nothing can come back (SPEC §5.1: the groups are gone):
    // what the peer got from each thread is an in-order prefix.
    for t in 0..POSTERS as usize {
        assert!(got[t].len() as u64 <= posted[t]);
        check_prefix_suffix(&format!("poster {t}"), got[t].len() as u64, &got[t], &[]);
    }
    println!(
        "SHUTDOWN UNDER LOAD: posted {posted:?}, peer got {:?}",
        got.iter().map(Vec::len).collect::<Vec<_>>()
    );
}
