//! Helpers for tests that use the network: loopback only, free ports, unique
//! temporary UDS paths, and whether Unix-domain sockets exist on this platform.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;

/// A TCP port that is free on 127.0.0.1 right now, taken from below the
/// ephemeral range (10,000–29,999).
///
/// A port the kernel hands out for port 0 comes from the ephemeral range,
/// the one outgoing connections take their source ports from: between
/// this call and the listener's bind, a connection of another test could
/// take it (a test then fails with `listen_failed`). No system's ephemeral
/// range reaches below 32,768 by default (Linux 32,768–60,999, Windows,
/// macOS and FreeBSD 49,152–65,535), so ports here are left alone by
/// connections; each process starts at its own place in the range and
/// takes the next port that binds.
///
/// # Errors
///
/// Any error from binding the probe socket, or `AddrInUse` when no port
/// of the range is free.
pub fn free_tcp_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 20_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        // Processes running tests side by side start far apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let start = (std::process::id().wrapping_mul(7_919) ^ nanos) % SPAN;
        let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = u16::try_from(FIRST + n).expect("below 30,000");
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(_) => return Ok(port),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free TCP port in 10,000-29,999",
    ))
}

/// A path for a Unix-domain socket, unique per call, in the temp dir
/// (`std::env::temp_dir()`); the file does not exist yet. (A listener on
/// `uds|` binds one of these.)
pub fn temp_uds_path() -> PathBuf {
    crate::address::temp_uds_path()
}

/// Whether this build's selector is edge-triggered (epoll, kqueue), so that
/// a read returning less than it asked for ends the reading without a read
/// that would only say `WouldBlock` ([`Stats::empty_reads`](crate::Stats)).
/// `false` on mio's `poll(2)` backend and on Windows, where the engine reads
/// until `WouldBlock`.
///
/// ```
/// if !tofu::testing::short_reads_end_reading() {
///     println!("not applicable: a level-triggered selector reads until WouldBlock");
/// }
/// ```
pub fn short_reads_end_reading() -> bool {
    crate::sys::SHORT_IO_DRAINS
}

/// The most bytes of small frames one write-through write carries on a
/// Unix-domain socket: `Some` on Linux, where each write past a page
/// adds a page allocation (see `docs/architecture.md`), `None` where only
/// the engine's 64 KiB limit applies.
///
/// ```
/// if let Some(max) = tofu::testing::unix_write_through_max() {
///     assert!(max < 64 * 1024);
/// }
/// ```
pub fn unix_write_through_max() -> Option<usize> {
    #[cfg(target_os = "linux")]
    return Some(crate::sys::UNIX_WRITE_THROUGH_MAX);
    #[cfg(not(target_os = "linux"))]
    return None;
}

/// Why Unix-domain sockets cannot be used on this platform, or `None` when they
/// can. Always `None` on Unix. On Windows, `Some` when creating an AF_UNIX
/// socket fails with WSAEAFNOSUPPORT (10047): Windows before 10 1803, and Wine,
/// which has no AF_UNIX.
pub fn uds_unavailable() -> Option<String> {
    crate::sys::uds_unsupported()
}

/// For a test over Unix-domain sockets, at its start: on a platform without
/// them ([`uds_unavailable`]), writes `<test>: not applicable: <reason>` to
/// stderr — past the test harness's output capture, so it always shows — and
/// returns `true`; the test then returns early. Never `true` on Unix.
///
/// ```
/// if tofu::testing::uds_not_applicable() {
///     return;
/// }
/// // … the test over a Unix-domain socket …
/// ```
pub fn uds_not_applicable() -> bool {
    use std::io::Write;
    let Some(reason) = uds_unavailable() else {
        return false;
    };
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    let _ = writeln!(std::io::stderr(), "{test}: not applicable: {reason}");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_paths() {
        let p = free_tcp_port().unwrap();
        assert_ne!(p, 0);
        let a = temp_uds_path();
        let b = temp_uds_path();
        assert_ne!(a, b);
        assert!(!a.exists());
        assert!(a.starts_with(std::env::temp_dir()));
    }

    #[cfg(unix)]
    #[test]
    fn uds_always_available_on_unix() {
        assert_eq!(uds_unavailable(), None);
        assert!(!uds_not_applicable());
    }

    /// Ports come from below the ephemeral range, one after another, and
    /// each binds.
    #[test]
    fn free_ports_are_outside_the_ephemeral_range() {
        let a = free_tcp_port().unwrap();
        let b = free_tcp_port().unwrap();
        assert_ne!(a, b);
        for port in [a, b] {
            assert!((10_000..30_000).contains(&port), "{port}");
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        }
    }
}
