//! SPEC §5.7: incoming memory is bounded by the pool plus one engine-wide
//! budget, however many peers stall in the middle of a frame. Measured as the
//! RSS of this test binary (its own process; the tests that measure are
//! serialized), on Linux where /proc tells.

mod util;

#[cfg(target_os = "linux")]
mod linux_only {
    use std::io::Write;
    use std::time::{Duration, Instant};

    use tofu::{Address, Engine, Options};

    use super::util::*;

    /// A HelloRequest announcing 65535 + 65535 bytes, all but its last byte.
    fn stalled_hello() -> Vec<u8> {
        let text = vec![b'a'; 65535];
        let body = vec![b'b'; 65535];
        let mut f = raw_frame(1, 3, 0, 1, &text, &body);
        f.pop();
        f
    }

    /// Opens `n` raw peers that each stall one byte short of a huge first
    /// frame; returns them and the RSS growth (KiB) once the engine has read
    /// all it is willing to.
    fn stall(engine: &Engine, caddr: &Address, n: usize) -> (Vec<std::net::TcpStream>, u64) {
        let rss0 = rss_kib();
        let frame = stalled_hello();
        let mut peers = Vec::with_capacity(n);
        for _ in 0..n {
            let Address::TcpClient { host, port } = caddr else {
                unreachable!()
            };
            let mut s = std::net::TcpStream::connect((host.as_str(), *port)).unwrap();
            s.set_nonblocking(true).unwrap();
            // As much as the kernel takes now; the rest never comes.
            let mut sent = 0;
            while sent < frame.len() {
                match s.write(&frame[sent..]) {
                    Ok(k) => sent += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
            peers.push(s);
        }
        // Wait until the engine stops reading (bounded).
        let start = Instant::now();
        let mut last = engine.stats().bytes_received;
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = engine.stats().bytes_received;
            if now == last || start.elapsed() > Duration::from_secs(20) {
                break;
            }
            last = now;
        }
        (peers, rss_kib().saturating_sub(rss0))
    }

    #[test]
    fn a_thousand_stalled_peers_grow_memory_by_less_than_16_mib() {
        let _serial = serial();
        const N: usize = 1000;
        let limit = raise_nofile(u64::MAX);
        assert!(
            limit as usize > 2 * N + 200,
            "open-files limit {limit} too low"
        );
        // No hello timeout: the budget alone must hold.
        let engine = Engine::new(Options {
            hello_timeout: None,
            ..Options::default()
        })
        .unwrap();
        let server = engine.create_group().unwrap();
        let (saddr, caddr) = addresses(Transport::Tcp);
        listen(&engine, &server, &saddr);
        let (peers, grown) = stall(&engine, &caddr, N);
        let s = engine.stats();
        println!(
            "MEMORY {N} stalled peers: RSS +{} KiB; engine read {} B, holds {} B of partial frames",
            grown, s.bytes_received, s.partial_frame_bytes
        );
        assert!(
            grown < 16 * 1024,
            "RSS grew by {grown} KiB with {N} stalled peers ({s:?})"
        );
        // A well-behaved client still gets through.
        let client_engine = engine_small();
        let client = client_engine.create_group().unwrap();
        let (cch, sch) = connect_pair(&client_engine, &client, &server, &caddr);
        round_trip(&client_engine, &client, &server, cch, sch, b"still served");
        drop(peers);
        eventually("the stalled peers' channels to close", || {
            engine.stats().open_channels == 2
        });
        assert_eq!(
            engine.stats().partial_frame_bytes,
            0,
            "the budget is returned"
        );
    }

    /// SPEC §5.7, outgoing: 3,000 × 60 kB Signals posted to a peer that
    /// never reads. The channel's limit refuses what does not fit, so memory
    /// stays near the limit (8 MiB by default) instead of growing with every
    /// post; every message is refused, written or returned, once.
    #[test]
    fn a_peer_that_never_reads_grows_memory_by_less_than_32_mib() {
        let _serial = serial();
        const N: u64 = 3000;
        const LEN: usize = 60_000;
        let engine = Engine::new(Options::default()).unwrap();
        let group = engine.create_group().unwrap();
        let (accept, caddr) = raw_server(Transport::Tcp);
        let mut hello = engine.get(tofu::Allocation::Always).unwrap().unwrap();
        caddr.format(&mut hello).unwrap();
        let ch = group.post(hello).unwrap().channel_number;
        let raw = accept(); // never read
        let rss0 = rss_kib();
        let (mut accepted, mut refused) = (0u64, 0u64);
        for seq in 0..N {
            let m = msg(&engine, ch, tofu::OpCode::Signal, &fast_seq_body(seq, LEN));
            match group.post(m) {
                Ok(_) => accepted += 1,
                Err(e) => {
                    assert_eq!(e.error, tofu::Error::PoolEmpty);
                    refused += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        let grown = rss_kib().saturating_sub(rss0);
        let s = engine.stats();
        println!(
            "MEMORY {N} x {LEN} B to a peer that never reads: RSS +{grown} KiB; \
             {accepted} accepted, {refused} refused, {} written, {} B queued",
            s.messages_sent - 1,
            s.queued_bytes
        );
        assert!(grown < 32 * 1024, "RSS grew by {grown} KiB ({s:?})");
        drop(raw);
        let mut returned = 0;
        loop {
            let m = recv_skip_pool_empty(&group);
            if m.is_from_engine() && m.body.is_empty() {
                assert_report(&m, ch, tofu::Status::ChannelClosed);
                break;
            }
            check_fast_seq_body(&m.body, LEN);
            returned += 1;
        }
        let written = engine.stats().messages_sent - 1; // the HelloRequest
        assert_eq!(accepted + refused, N);
        assert_eq!(written + returned, accepted, "written or returned, once");
    }

    fn engine_small() -> Engine {
        Engine::new(Options::default()).unwrap()
    }
}

#[cfg(not(target_os = "linux"))]
#[test]
fn a_thousand_stalled_peers_grow_memory_by_less_than_16_mib() {
    println!("not applicable: measures RSS through /proc (Linux only)");
}

#[cfg(not(target_os = "linux"))]
#[test]
fn a_peer_that_never_reads_grows_memory_by_less_than_32_mib() {
    println!("not applicable: measures RSS through /proc (Linux only)");
}
