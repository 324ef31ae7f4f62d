//! Helpers for tests that use the network: loopback only, free ports, unique
//! temporary UDS paths.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// A TCP port that is free on 127.0.0.1 right now (bound to port 0 and released).
///
/// # Errors
///
/// Any error from binding the probe socket.
pub fn free_tcp_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// A path for a Unix-domain socket, unique per call, in the temp dir
/// (`std::env::temp_dir()`); the file does not exist yet.
pub fn temp_uds_path() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Short names: the platform limit on socket paths is ~104-108 bytes.
    std::env::temp_dir().join(format!("tofu-{}-{n}-{nanos:x}.sock", std::process::id()))
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
}
