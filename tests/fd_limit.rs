//! Running out of file descriptors while accepting: the listener reports
//! `accept_failed` once and accepts the waiting connections when descriptors
//! are freed (a channel closes). Linux only: it lowers this process's
//! RLIMIT_NOFILE, so it lives in its own test binary with a single test.
#![cfg(target_os = "linux")]

mod util;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Socket, Type};
use tofu::testing::free_tcp_port;
use tofu::{Address, OpCode, Status};
use util::*;

fn nofile() -> libc::rlimit {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    r
}

fn set_soft_nofile(soft: u64) {
    let mut r = nofile();
    r.rlim_cur = soft as libc::rlim_t;
    // SAFETY: setrlimit reads the struct we own.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }, 0);
}

/// The soft limit that leaves exactly `free` descriptor numbers available.
fn limit_leaving(free: usize) -> u64 {
    // The listing's own directory handle is open while we read it: skip it,
    // it is closed again by the time the limit applies.
    let mut open: Vec<usize> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            if target.to_string_lossy().ends_with("/fd") {
                return None;
            }
            e.file_name().to_str()?.parse().ok()
        })
        .collect();
    open.sort_unstable();
    let mut left = free;
    let mut n = 0;
    loop {
        if open.binary_search(&n).is_err() {
            if left == 0 {
                return n as u64;
            }
            left -= 1;
        }
        n += 1;
    }
}

#[test]
fn accept_resumes_after_running_out_of_descriptors() {
    const CLIENTS: usize = 6;
    let engine = engine();
    let server = engine.create_group().unwrap();
    let port = free_tcp_port().unwrap();
    listen(&engine, &server, &Address::tcp_server("127.0.0.1", port));
    // Client sockets are created now: connecting later needs no descriptor.
    let clients: Vec<Socket> = (0..CLIENTS)
        .map(|_| Socket::new(Domain::IPV4, Type::STREAM, None).unwrap())
        .collect();
    let original = nofile().rlim_cur;
    set_soft_nofile(limit_leaving(2));
    let target: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
    for (i, c) in clients.iter().enumerate() {
        c.connect(&target.into()).unwrap();
        (&*c)
            .write_all(&raw_frame(
                1,
                OpCode::HelloRequest as u8,
                0,
                100 + i as u64,
                b"",
                b"",
            ))
            .unwrap();
    }

    let mut hellos = Vec::new();
    let mut failures = 0;
    // Two accepted, the rest wait in the backlog: one accept_failed report.
    while hellos.len() < 2 || failures < 1 {
        let m = recv(&server);
        if m.is_from_engine() {
            assert_eq!(m.status(), Status::AcceptFailed, "{m:?}");
            failures += 1;
        } else {
            assert_eq!(m.opcode(), OpCode::HelloRequest);
            hellos.push(m.header.channel_number);
        }
    }
    recv_nothing(&server, std::time::Duration::from_millis(100));

    // Descriptors back, and one channel closes: the rest are accepted.
    set_soft_nofile(original);
    abort(&engine, &server, hellos[0]);
    for _ in hellos.len()..CLIENTS {
        let m = recv(&server);
        assert_eq!(m.opcode(), OpCode::HelloRequest, "{m:?}");
        assert!(m.is_from_application());
    }
    recv_nothing(&server, std::time::Duration::from_millis(100));
    assert_eq!(failures, 1, "accept_failed is reported once per episode");
}
