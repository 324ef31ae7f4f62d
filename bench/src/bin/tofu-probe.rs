//! A fixed-count probe of tofu's per-message cost, for instruction counts
//! (`valgrind --tool=callgrind`, stable on a noisy machine) and quick
//! before/after checks. Two engines in one process over loopback, default
//! options unless `--pool` or `--spin` (`Options::receive_spin`, in µs).
//!
//! ```text
//! tofu-probe stream [--count N] [--size B] [--uds] [--batch [--batch-size N]] [--pace N] [--pool I,M] [--spin US] [--recv-work N]
//! tofu-probe rtt    [--count N] [--size B] [--uds] [--pool I,M] [--spin US]
//! tofu-probe raw    [--count N] [--size B] [--uds] [--write-buffer B]
//! tofu-probe pair   [--chunk B] [--mib N]
//! ```
//!
//! `stream`: the client posts N Signals then a marker Request; the server
//! receives them all and answers the marker. `--batch` posts with
//! `post_batch` and receives with `receive_many` (64 at a time). `--pace N`
//! paces the stream in-band as `tofu-bench` does: a marker Request after
//! every N Signals, at most two markers unanswered.
//! `raw`: the stream without tofu, as the benchmark's raw baseline does it
//! (blocking std sockets, a 128 KiB `BufWriter` and `BufReader`, the same
//! frames), for `perf stat` beside `stream`. `--write-buffer B` gives the
//! writer a `B`-byte `BufWriter` instead (4096: writes as large as the
//! engine's for a 64-message batch of 64 B Signals).
//! `pair`: no frames at all: `N` MiB in `B`-byte writes over a blocking
//! Unix socket pair to a thread that reads 64 KiB at a time and does
//! nothing else; prints the rate and bytes per read of every 32 MiB. It
//! shows what the kernel and the machine do with a reader that keeps up
//! (on our VM the rate has states, whatever runs above the socket).
//! `rtt`: N Requests, one outstanding. Per-message instructions: run two
//! counts under callgrind and divide the difference of the totals by the
//! difference of the counts (set-up cancels out).

use std::time::{Duration, Instant};

use tofu::{Address, Allocation, ChannelGroup, Engine, Message, OpCode, Options, testing};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

struct Args {
    mode: String,
    count: usize,
    size: usize,
    uds: bool,
    batch: bool,
    batch_size: usize,
    pace: Option<usize>,
    pool: Option<(u16, u16)>,
    spin: Duration,
    write_buffer: usize,
    recv_work: u64,
    chunk: usize,
    mib: usize,
}

fn args() -> Res<Args> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        mode: it.next().unwrap_or_else(|| "stream".into()),
        count: 100_000,
        size: 64,
        uds: false,
        batch: false,
        batch_size: 64,
        pace: None,
        pool: None,
        spin: Duration::ZERO,
        write_buffer: 128 * 1024,
        recv_work: 0,
        chunk: 16 * 1024,
        mib: 640,
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--count" => a.count = it.next().ok_or("--count N")?.parse()?,
            "--size" => a.size = it.next().ok_or("--size B")?.parse()?,
            "--uds" => a.uds = true,
            "--batch" => a.batch = true,
            "--batch-size" => a.batch_size = it.next().ok_or("--batch-size N")?.parse()?,
            "--write-buffer" => {
                a.write_buffer = it.next().ok_or("--write-buffer B")?.parse()?;
            }
            "--chunk" => a.chunk = it.next().ok_or("--chunk B")?.parse()?,
            "--mib" => a.mib = it.next().ok_or("--mib N")?.parse()?,
            "--recv-work" => a.recv_work = it.next().ok_or("--recv-work N")?.parse()?,
            "--pace" => a.pace = Some(it.next().ok_or("--pace N")?.parse()?),
            "--spin" => {
                let us = it.next().ok_or("--spin US")?.parse()?;
                a.spin = Duration::from_micros(us);
            }
            "--pool" => {
                let v = it.next().ok_or("--pool I,M")?;
                let (i, m) = v.split_once(',').ok_or("--pool I,M")?;
                a.pool = Some((i.parse()?, m.parse()?));
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

fn recv(group: &ChannelGroup) -> Res<Message> {
    loop {
        let m = group.wait_receive(WAIT)?.ok_or("timeout")?;
        if !(m.is_from_engine() && m.status() == tofu::Status::PoolEmpty) {
            return Ok(m);
        }
    }
}

fn main() -> Res<()> {
    let a = args()?;
    if a.mode == "pair" {
        return pair(a.chunk, a.mib);
    }
    if a.mode == "raw" {
        return raw_stream(a.count, a.size, a.uds, a.write_buffer);
    }
    let opts = match a.pool {
        Some((initial_pool_msgs, max_pool_msgs)) => Options {
            initial_pool_msgs,
            max_pool_msgs,
            receive_spin: a.spin,
            ..Options::default()
        },
        None => Options {
            receive_spin: a.spin,
            ..Options::default()
        },
    };
    let (listen, connect) = if a.uds {
        let p = testing::temp_uds_path();
        (Address::uds_server(p.clone()), Address::uds_client(p))
    } else {
        let port = testing::free_tcp_port()?;
        (
            Address::tcp_server("127.0.0.1", port),
            Address::tcp_client("127.0.0.1", port),
        )
    };
    let server = Engine::new(opts.clone())?;
    let sgroup = server.create_group()?;
    let mut welcome = server.get(Allocation::Always)?.ok_or("no message")?;
    listen.format(&mut welcome)?;
    sgroup.post(welcome).map_err(|e| e.error)?;
    let w = recv(&sgroup)?;
    if w.status() != tofu::Status::Success {
        return Err(format!("listen: {}", w.status()).into());
    }

    let client = Engine::new(opts)?;
    let cgroup = client.create_group()?;
    let mut hello = client.get(Allocation::Always)?.ok_or("no message")?;
    connect.format(&mut hello)?;
    let ch = cgroup.post(hello).map_err(|e| e.error)?.channel_number;

    let (count, size, batch, mode, work) = (a.count, a.size, a.batch, a.mode.clone(), a.recv_work);
    // The server's group comes back with its result and lives until the
    // client is done: destroying a group frees what it still has queued
    // (SPEC §5.9), the last answer included.
    let srv = std::thread::spawn(move || (serve(&sgroup, &mode, count, batch, work), sgroup));
    let h = recv(&cgroup)?;
    if h.opcode() != OpCode::HelloResponse {
        return Err(format!("connect: {}", h.status()).into());
    }
    let start = Instant::now();
    match a.mode.as_str() {
        "stream" => stream(
            &client,
            &cgroup,
            ch,
            a.count,
            a.size,
            a.batch.then_some(a.batch_size),
            a.pace,
        )?,
        "rtt" => rtt(&client, &cgroup, ch, a.count, size)?,
        m => return Err(format!("unknown mode {m}").into()),
    }
    let secs = start.elapsed().as_secs_f64();
    let (served, _sgroup) = srv.join().map_err(|_| "server panicked")?;
    served?;
    println!(
        "{} {} x {} B{}: {:.3} s, {:.0} msgs/s, {:.2} us each",
        a.mode,
        a.count,
        a.size,
        if a.batch { " (batch)" } else { "" },
        secs,
        a.count as f64 / secs,
        secs * 1e6 / a.count as f64
    );
    let (cs, ss) = (client.stats(), server.stats());
    println!(
        "client: inline_posts {} polls {} waiter_polls {}; server: polls {} waiter_polls {}",
        cs.inline_posts, cs.polls, cs.waiter_polls, ss.polls, ss.waiter_polls
    );
    println!(
        "client: writes {} ({} B each); server: reads {} ({} B each, {} % in place), empty {}, pool empty {}",
        cs.write_calls,
        cs.bytes_sent / cs.write_calls.max(1),
        ss.read_calls,
        ss.bytes_received / ss.read_calls.max(1),
        ss.bytes_read_in_place * 100 / ss.bytes_received.max(1),
        ss.empty_reads,
        ss.pool_empty_events
    );
    Ok(())
}

fn message(engine: &Engine, ch: u16, op: OpCode, size: usize) -> Res<Message> {
    let mut m = engine.get(Allocation::Always)?.ok_or("no message")?;
    m.header.channel_number = ch;
    m.header.proto.opcode = op;
    m.body.resize(size, 0xab);
    Ok(m)
}

fn stream(
    engine: &Engine,
    group: &ChannelGroup,
    ch: u16,
    count: usize,
    size: usize,
    batch: Option<usize>,
    pace: Option<usize>,
) -> Res<()> {
    let t = Duration::from_secs(10);
    let mut markers = std::collections::VecDeque::new();
    let mut since_marker = 0;
    if let Some(batch) = batch {
        let mut msgs = Vec::with_capacity(batch);
        let mut left = count;
        while left > 0 {
            if let Some(pace) = pace.filter(|&p| since_marker >= p) {
                since_marker -= pace;
                let id = group
                    .post_timeout(message(engine, ch, OpCode::Request, 0)?, t)
                    .map_err(|e| e.error)?
                    .message_id;
                markers.push_back(id);
                if markers.len() > 2 {
                    let want = markers.pop_front().unwrap_or_default();
                    let r = recv(group)?;
                    if r.header.message_id != want {
                        return Err("marker answered out of order".into());
                    }
                }
            }
            let n = left
                .min(batch)
                .min(pace.map_or(usize::MAX, |p| p - since_marker));
            since_marker += n;
            engine.get_many(Allocation::Always, n, &mut msgs)?;
            for m in &mut msgs {
                m.header.channel_number = ch;
                m.header.proto.opcode = OpCode::Signal;
                m.body.resize(size, 0xab);
            }
            left -= msgs.len();
            group
                .post_batch_timeout(&mut msgs, t)
                .map_err(|e| format!("post_batch: {e}"))?;
        }
    } else {
        for _ in 0..count {
            group
                .post_timeout(message(engine, ch, OpCode::Signal, size)?, t)
                .map_err(|e| e.error)?;
        }
    }
    for want in markers {
        if recv(group)?.header.message_id != want {
            return Err("marker answered out of order".into());
        }
    }
    let id = group
        .post_timeout(message(engine, ch, OpCode::Request, 0)?, t)
        .map_err(|e| e.error)?
        .message_id;
    let r = recv(group)?;
    if r.header.message_id != id || r.opcode() != OpCode::Response {
        return Err(format!("unexpected {:?} {}", r.opcode(), r.status()).into());
    }
    Ok(())
}

fn rtt(engine: &Engine, group: &ChannelGroup, ch: u16, count: usize, size: usize) -> Res<()> {
    for _ in 0..count {
        let id = group
            .post(message(engine, ch, OpCode::Request, size)?)
            .map_err(|e| e.error)?
            .message_id;
        let r = recv(group)?;
        if r.header.message_id != id {
            return Err("wrong response".into());
        }
    }
    Ok(())
}

/// Receives until the stream's marker (answered) or `count` requests
/// (each answered), then until the client's channel closes.
fn serve(group: &ChannelGroup, mode: &str, count: usize, batch: bool, work: u64) -> Res<()> {
    let mut signals = 0usize;
    let mut answered = 0usize;
    let mut got = Vec::with_capacity(64);
    let mut spent = Vec::with_capacity(64);
    loop {
        if batch {
            if group.receive_many(&mut got, 64, WAIT)? == 0 {
                return Err("server: timeout".into());
            }
        } else {
            got.push(recv(group)?);
        }
        for mut m in got.drain(..) {
            if m.is_from_engine() {
                continue; // pool_empty reports
            }
            match m.opcode() {
                OpCode::HelloRequest => {
                    m.header.proto.opcode = OpCode::HelloResponse;
                    group.post(m).map_err(|e| e.error)?;
                }
                OpCode::Signal => {
                    signals += 1;
                    busy(work);
                    spent.push(m);
                }
                OpCode::Request => {
                    m.header.proto.opcode = OpCode::Response;
                    group.post(m).map_err(|e| e.error)?;
                    answered += 1;
                    if mode == "stream" {
                        // A pacing marker, or the last one.
                        if signals == count {
                            return Ok(());
                        }
                        continue;
                    }
                    if answered == count {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        // Back to the pool together (one lock).
        group.engine().put_many(&mut spent);
    }
}

/// The `raw` mode: N Signals of `size` bytes and an end marker over a
/// blocking socket, written through a `write_buffer`-byte `BufWriter`; a
/// thread reads them through a 128 KiB `BufReader` and answers the marker.
fn raw_stream(count: usize, size: usize, uds: bool, write_buffer: usize) -> Res<()> {
    use std::io::{BufReader, BufWriter, Read, Write};
    use tofu::wire::{FrameHeader, HEADER_LEN};
    trait Conn: Read + Write + Send {}
    impl<T: Read + Write + Send> Conn for T {}
    let frame = |op: OpCode, size: usize| -> Res<Vec<u8>> {
        let mut m = Message::new();
        m.header.proto.opcode = op;
        m.body.resize(size, 0xab);
        let mut v = Vec::new();
        tofu::wire::encode_to_vec(&m, &mut v)?;
        Ok(v)
    };
    let (client, server): (Box<dyn Conn>, Box<dyn Conn>) = if uds {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        (Box::new(a), Box::new(b))
    } else {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let a = std::net::TcpStream::connect(l.local_addr()?)?;
        let (b, _) = l.accept()?;
        a.set_nodelay(true)?;
        b.set_nodelay(true)?;
        (Box::new(a), Box::new(b))
    };
    let srv = std::thread::spawn(move || -> Res<Box<dyn Conn>> {
        let mut r = BufReader::with_capacity(128 * 1024, server);
        let (mut hdr, mut body) = ([0u8; HEADER_LEN], Vec::new());
        loop {
            r.read_exact(&mut hdr)?;
            let fh = FrameHeader::decode(&hdr).map_err(|e| format!("{e:?}"))?;
            body.resize(fh.frame_len() - HEADER_LEN, 0);
            r.read_exact(&mut body)?;
            if fh.header.proto.opcode == OpCode::Request {
                let mut s = r.into_inner();
                s.write_all(&hdr)?;
                return Ok(s);
            }
        }
    });
    let f = frame(OpCode::Signal, size)?;
    let marker = frame(OpCode::Request, 0)?;
    let start = Instant::now();
    let mut w = BufWriter::with_capacity(write_buffer, client);
    for _ in 0..count {
        w.write_all(&f)?;
    }
    w.write_all(&marker)?;
    w.flush()?;
    let mut c = w.into_inner().map_err(|e| e.to_string())?;
    let mut hdr = [0u8; HEADER_LEN];
    c.read_exact(&mut hdr)?;
    let secs = start.elapsed().as_secs_f64();
    drop(srv.join().map_err(|_| "server panicked")??);
    println!(
        "raw {count} x {size} B: {secs:.3} s, {:.0} msgs/s, {:.2} us each",
        count as f64 / secs,
        secs * 1e6 / count as f64
    );
    Ok(())
}

/// The `pair` mode: `mib` MiB in `chunk`-byte writes over a blocking Unix
/// socket pair; the reader reads 64 KiB at a time and drops the bytes.
#[cfg(unix)]
fn pair(chunk: usize, mib: usize) -> Res<()> {
    use std::io::{Read, Write};
    const INTERVAL: usize = 32 << 20;
    if chunk == 0 {
        return Err("--chunk must be at least 1".into());
    }
    let total = mib << 20;
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair()?;
    let reader = std::thread::spawn(move || -> Res<Vec<(f64, usize)>> {
        let mut buf = vec![0u8; 64 * 1024];
        let (mut got, mut reads, mut mark) = (0usize, 0usize, Instant::now());
        let mut intervals = Vec::new();
        while got < total {
            let n = b.read(&mut buf)?;
            if n == 0 {
                return Err("writer closed early".into());
            }
            reads += 1;
            if (got + n) / INTERVAL != got / INTERVAL {
                let gbps = INTERVAL as f64 / mark.elapsed().as_secs_f64() / 1e9;
                intervals.push((gbps, INTERVAL / reads));
                (reads, mark) = (0, Instant::now());
            }
            got += n;
        }
        Ok(intervals)
    });
    let data = vec![0xabu8; chunk];
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = chunk.min(total - sent);
        a.write_all(&data[..n])?;
        sent += n;
    }
    let intervals = reader.join().map_err(|_| "reader panicked")??;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "pair {mib} MiB in {chunk} B writes: {secs:.3} s, {:.2} GB/s",
        total as f64 / secs / 1e9
    );
    let each: Vec<String> = intervals
        .iter()
        .map(|(gbps, per_read)| format!("{gbps:.2}/{per_read}"))
        .collect();
    println!("per 32 MiB, GB/s / bytes per read: {}", each.join(" "));
    Ok(())
}

#[cfg(not(unix))]
fn pair(_chunk: usize, _mib: usize) -> Res<()> {
    Err("pair: not applicable: Unix sockets only".into())
}

/// `--recv-work N`: N rounds of arithmetic per received Signal, a receiver
/// slower than its sender (the socket between them stays full).
fn busy(rounds: u64) {
    let mut x = 0u64;
    for i in 0..rounds {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
    }
    std::hint::black_box(x);
}
