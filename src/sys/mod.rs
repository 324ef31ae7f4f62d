//! Platform sockets: the only module with `cfg(unix)`/`cfg(windows)` or
//! `cfg(target_os = ...)` code.
//!
//! Each platform provides, on top of `std::net`, `socket2` and `mio`:
//! * [`Stream`]: a non-blocking connected stream (TCP everywhere, Unix-domain
//!   where the platform and mio support it) that is a [`mio::event::Source`];
//! * [`Listener`]: the listening counterpart;
//! * [`listen_tcp`], [`listen_uds`], [`connect_tcp`], [`connect_uds`]: socket
//!   creation with the options SPEC §5 requires — SO_REUSEADDR on listeners
//!   (not on Windows, where it would let a listener take a port in use),
//!   TCP_NODELAY and SO_LINGER 0 on TCP streams, stale UDS socket files removed
//!   before bind;
//! * [`is_disconnect`]: which I/O errors mean "the peer went away";
//! * [`MAX_UDS_PATH_LEN`]: the longest Unix-domain socket path.
//!
//! On Unix, Unix-domain sockets are mio's own. On Windows (`windows.rs`) they
//! are AF_UNIX sockets made with socket2 and driven by mio as TCP streams; where
//! the platform has no AF_UNIX (before Windows 10 1803, Wine 8 and 10)
//! connecting reports [`not_implemented_yet`](crate::Status::NotImplementedYet) and
//! listening `listen_failed`.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mio::event::Source;
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

#[cfg(not(windows))]
use crate::error::Error;
#[cfg(unix)]
use mio::net::{UnixListener, UnixStream};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows::{UnixListener, UnixStream};
#[cfg(windows)]
pub(crate) use windows::{connect_uds, listen_uds};

/// Whether a read that returned fewer bytes than asked shows that the
/// socket's receive buffer was empty at that moment (and a write that took
/// fewer bytes than offered that its send buffer was full), so that the
/// next call would only return `WouldBlock`: true for mio's edge-triggered
/// selectors (epoll, kqueue), which report new data (or room) arriving
/// after that call as a new event. Not for level-triggered emulations
/// (mio's poll(2) backend, Windows' AFD), which re-arm only on
/// `WouldBlock`. Saves one system call per read event (tokio does the
/// same, tokio-rs/tokio#5866).
pub(crate) const SHORT_IO_DRAINS: bool = cfg!(all(
    not(mio_unsupported_force_poll_poll),
    any(
        target_os = "android",
        target_os = "illumos",
        target_os = "linux",
        target_os = "redox",
        target_os = "dragonfly",
        target_os = "freebsd",
        target_os = "ios",
        target_os = "macos",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "tvos",
        target_os = "visionos",
        target_os = "watchos",
    )
));

/// Backlog for listening sockets.
const BACKLOG: i32 = 1024;

/// The longest Unix-domain socket path, in bytes, without the terminating NUL.
///
/// `sockaddr_un.sun_path` is 104 bytes on Apple platforms and the BSDs and 108
/// on Linux and Windows (SPEC §7), and we assume 108 elsewhere; one byte is
/// kept for the NUL that the OS expects at the end of the path.
pub(crate) const MAX_UDS_PATH_LEN: usize = SUN_PATH_LEN - 1;

/// The size of `sockaddr_un.sun_path`: 104 bytes on Apple platforms and the
/// BSDs, 108 on Linux and Windows (and assumed elsewhere).
const SUN_PATH_LEN: usize = if cfg!(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "tvos",
    target_os = "watchos",
    target_os = "visionos",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly",
)) {
    104
} else {
    108
};

/// The most bytes of small frames one write-through write carries on a
/// Unix-domain stream on Linux (elsewhere, and over TCP, no limit beyond
/// the engine's own). Linux keeps a Unix-domain write of up to
/// `SKB_MAX_HEAD(0)` bytes (about 3,776 on x86-64) in one slab-allocated
/// buffer; a larger write puts the rest in page fragments, a page
/// allocation for every write. On an earlier 2-vCPU VM (free page
/// reporting on) a bare socket pair (`tofu-probe pair`) fell at times
/// into states about ten times slower with 5,100 and 8,192-byte writes,
/// never with 3,500, so this was 3.5 KiB. On the current one (Firecracker,
/// AMD EPYC) 3,500-byte writes fall too (0.8–0.9 GB/s against 2.0–2.8 in
/// another run), and 16 KiB took the 64 B Unix-domain stream from 8.3–9.9
/// to 10.6–11.4 M messages/s (0.49–0.54× tokio's to 0.60–0.63×, four
/// alternating pairs of `tofu-bench --runs 1 --workload stream --only
/// tofu,tokio`); 64 KiB did no better than 16. A write of 16 KiB is
/// about 200 frames of 64 B: the page allocation is shared by them.
#[cfg(target_os = "linux")]
pub(crate) const UNIX_WRITE_THROUGH_MAX: usize = 16 * 1024;

/// A connected (or connecting) non-blocking stream.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(mio::net::TcpStream),
    #[cfg(any(unix, windows))]
    Unix(UnixStream),
}

/// What the engine sets on every stream it accepts or connects
/// ([`Stream::configure`]), from its `Options`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StreamSettings {
    /// `Options::tcp_keepalive`.
    pub(crate) keepalive: Option<Duration>,
    /// `Options::unix_send_buffer` (0: the kernel's default).
    pub(crate) unix_send_buffer: usize,
}

/// A listening socket.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(mio::net::TcpListener),
    #[cfg(any(unix, windows))]
    Unix(UnixListener),
}

impl Stream {
    /// The most bytes one write-through write carries on this stream
    /// ([`UNIX_WRITE_THROUGH_MAX`] for a Unix-domain stream on Linux).
    pub(crate) fn write_through_max(&self) -> usize {
        #[cfg(target_os = "linux")]
        if let Stream::Unix(_) = self {
            return UNIX_WRITE_THROUGH_MAX;
        }
        usize::MAX
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            #[cfg(any(unix, windows))]
            Stream::Unix(s) => s.read(buf),
        }
    }

    /// Reads into `bufs` in order (`readv`).
    pub(crate) fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read_vectored(bufs),
            #[cfg(any(unix, windows))]
            Stream::Unix(s) => s.read_vectored(bufs),
        }
    }

    /// Writes `bufs` in order; one slice goes with a plain `write`, which
    /// the kernel serves with less work than `writev` (no vector to copy
    /// in and walk).
    pub(crate) fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if let [one] = bufs {
            return match self {
                Stream::Tcp(s) => s.write(one),
                #[cfg(any(unix, windows))]
                Stream::Unix(s) => s.write(one),
            };
        }
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            #[cfg(any(unix, windows))]
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    /// Whether data (or the end of the stream) is waiting, without taking it:
    /// `Ok(0)` at end of stream, `Ok(n > 0)` when bytes wait, `WouldBlock` when
    /// nothing does. Lets the engine tell "needs memory" from "nothing to do"
    /// while its pool is empty.
    pub(crate) fn peek(&self) -> io::Result<usize> {
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
        match self {
            // Through `try_io`: on Windows, mio re-arms a source's readiness
            // only when one of its own calls reports WouldBlock.
            Stream::Tcp(s) => s.try_io(|| SockRef::from(s).peek(&mut byte)),
            #[cfg(any(unix, windows))]
            Stream::Unix(s) => s.try_io(|| SockRef::from(s).peek(&mut byte)),
        }
    }

    /// Turns TCP keepalive on, first probe after `idle` without traffic (a
    /// no-op on Unix-domain streams). Failure is not fatal: the stream works
    /// without it.
    pub(crate) fn set_keepalive(&self, idle: Duration) {
        if let Stream::Tcp(s) = self {
            let keepalive = socket2::TcpKeepalive::new().with_time(idle);
            let _ = SockRef::from(s).set_tcp_keepalive(&keepalive);
        }
    }

    /// Applies the engine's per-stream settings to a new stream (accepted
    /// or being connected): TCP keepalive on a TCP stream, the send buffer
    /// on a Unix-domain one. A setting the kernel refuses is left at its
    /// default (it is a tuning, not a promise).
    pub(crate) fn configure(&self, settings: &StreamSettings) {
        match self {
            Stream::Tcp(_) => {
                if let Some(idle) = settings.keepalive {
                    self.set_keepalive(idle);
                }
            }
            #[cfg(any(unix, windows))]
            Stream::Unix(s) => {
                if settings.unix_send_buffer > 0 {
                    let _ = SockRef::from(s).set_send_buffer_size(settings.unix_send_buffer);
                }
            }
        }
    }

    /// The socket's send buffer as the kernel reports it (tests).
    #[cfg(all(test, target_os = "linux"))]
    pub(crate) fn send_buffer(&self) -> usize {
        match self {
            Stream::Tcp(s) => SockRef::from(s).send_buffer_size().unwrap_or(0),
            Stream::Unix(s) => SockRef::from(s).send_buffer_size().unwrap_or(0),
        }
    }

    /// Whether TCP keepalive is on (tests).
    #[cfg(test)]
    pub(crate) fn keepalive(&self) -> bool {
        match self {
            Stream::Tcp(s) => SockRef::from(s).keepalive().unwrap_or(false),
            #[cfg(any(unix, windows))]
            Stream::Unix(_) => false,
        }
    }

    /// Makes the coming close a FIN instead of the reset every stream is set
    /// up for (SO_LINGER back to the default). Used only after a completed
    /// Bye handshake, so no data the peer has not read is destroyed.
    pub(crate) fn close_gracefully(&self) {
        match self {
            Stream::Tcp(s) => {
                let _ = SockRef::from(s).set_linger(None);
            }
            #[cfg(any(unix, windows))]
            Stream::Unix(_) => {} // a Unix-domain close never resets
        }
    }

    /// Copies the bytes waiting in the kernel into `buf` without taking them.
    /// TCP only: on a Unix-domain stream it fails with `Unsupported`.
    pub(crate) fn peek_into(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            // Through `try_io`, as `peek`.
            Stream::Tcp(s) => s.try_io(|| s.peek(buf)),
            #[cfg(any(unix, windows))]
            Stream::Unix(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no peek on Unix-domain streams here",
            )),
        }
    }

    /// The pending socket error, if any (SO_ERROR).
    pub(crate) fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            #[cfg(any(unix, windows))]
            Stream::Unix(s) => s.take_error(),
        }
    }

    /// `Ok(true)` once a non-blocking connect has completed.
    pub(crate) fn is_connected(&self) -> io::Result<bool> {
        let r = match self {
            Stream::Tcp(s) => s.peer_addr().map(|_| ()),
            #[cfg(any(unix, windows))]
            // socket2's: std's `peer_addr` only knows IP addresses (Windows).
            Stream::Unix(s) => SockRef::from(s).peer_addr().map(|_| ()),
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            // getpeername on a socket whose connect is still in progress (BSDs).
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Listener {
    /// Accepts one connection, configured and non-blocking.
    pub(crate) fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                configure_tcp(&s);
                Ok(Stream::Tcp(s))
            }
            #[cfg(any(unix, windows))]
            Listener::Unix(l) => Ok(Stream::Unix(l.accept()?.0)),
        }
    }

    /// The bound TCP address (for listeners on port 0).
    pub(crate) fn local_tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            #[cfg(any(unix, windows))]
            Listener::Unix(_) => None,
        }
    }
}

macro_rules! delegate_source {
    ($ty:ident) => {
        impl Source for $ty {
            fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
                match self {
                    $ty::Tcp(s) => s.register(r, t, i),
                    #[cfg(any(unix, windows))]
                    $ty::Unix(s) => s.register(r, t, i),
                }
            }
            fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
                match self {
                    $ty::Tcp(s) => s.reregister(r, t, i),
                    #[cfg(any(unix, windows))]
                    $ty::Unix(s) => s.reregister(r, t, i),
                }
            }
            fn deregister(&mut self, r: &Registry) -> io::Result<()> {
                match self {
                    $ty::Tcp(s) => s.deregister(r),
                    #[cfg(any(unix, windows))]
                    $ty::Unix(s) => s.deregister(r),
                }
            }
        }
    };
}
delegate_source!(Stream);
delegate_source!(Listener);

/// TCP_NODELAY, and SO_LINGER 0 so that closing never leaves TIME_WAIT behind
/// (graceful closing is the Bye handshake's job, SPEC §5.5). Failures are not
/// fatal: the stream works without them.
fn configure_tcp(s: &mio::net::TcpStream) {
    let _ = s.set_nodelay(true);
    let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
}

/// Binds and listens on TCP, with SO_REUSEADDR everywhere but Windows.
///
/// On Unix SO_REUSEADDR lets a listener rebind a port that closed connections
/// still hold in TIME_WAIT, and never a port another socket listens on. On
/// Windows it means something else: the listener may bind a port *in use*,
/// taking it over ("socket hijacking"). So there, as mio's
/// `TcpListener::bind` does, it is left unset, and a port in use fails the
/// listen on every platform (`tests/open.rs`).
pub(crate) fn listen_tcp(addr: SocketAddr) -> io::Result<Listener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(not(windows))]
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(true);
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    let std_listener: std::net::TcpListener = socket.into();
    Ok(Listener::Tcp(mio::net::TcpListener::from_std(std_listener)))
}

/// Starts a non-blocking TCP connect.
pub(crate) fn connect_tcp(addr: SocketAddr) -> io::Result<Stream> {
    let s = mio::net::TcpStream::connect(addr)?;
    configure_tcp(&s);
    Ok(Stream::Tcp(s))
}

/// Binds and listens on a Unix-domain socket, removing a stale socket file first.
/// A socket file with a live listener behind it is left alone (the bind then
/// fails with "address in use"), and so is a path that is not a socket.
#[cfg(unix)]
pub(crate) fn listen_uds(path: &Path) -> io::Result<Listener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() && !uds_listener_alive(path) {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(Listener::Unix(mio::net::UnixListener::bind(path)?))
}

/// Whether a live listener is behind a socket file, without ever waiting
/// (SPEC §5.7b): a *non-blocking* connect is accepted, or refused at once when
/// the listener is gone. A full backlog (`EAGAIN`; a blocking connect would
/// wait there for as long as the listener lives) and any other error (say,
/// no permission) count as alive, so nothing that may be in use is removed.
#[cfg(unix)]
fn uds_listener_alive(path: &Path) -> bool {
    match mio::net::UnixStream::connect(path) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
        ),
    }
}

/// Starts a non-blocking Unix-domain connect.
#[cfg(unix)]
pub(crate) fn connect_uds(path: &Path) -> Result<Stream, (Error, io::Error)> {
    match mio::net::UnixStream::connect(path) {
        Ok(s) => Ok(Stream::Unix(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err((Error::UdsPathNotFound, e)),
        Err(e) => Err((Error::ConnectFailed, e)),
    }
}

/// Unix-domain sockets are not supported on this platform yet.
#[cfg(not(any(unix, windows)))]
pub(crate) fn listen_uds(_path: &Path) -> io::Result<Listener> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "AF_UNIX not supported here",
    ))
}

/// Unix-domain sockets are not supported on this platform yet.
#[cfg(not(any(unix, windows)))]
pub(crate) fn connect_uds(_path: &Path) -> Result<Stream, (Error, io::Error)> {
    Err((
        Error::NotImplementedYet,
        io::Error::new(io::ErrorKind::Unsupported, "AF_UNIX not supported here"),
    ))
}

/// Why this platform cannot make Unix-domain sockets, or `None` when it can:
/// never on Unix; on Windows when `socket(AF_UNIX)` fails with
/// WSAEAFNOSUPPORT (before Windows 10 1803, and under Wine, 8 and 10 alike).
pub(crate) fn uds_unsupported() -> Option<String> {
    #[cfg(unix)]
    return None;
    #[cfg(windows)]
    return match Socket::new(Domain::UNIX, Type::STREAM, None) {
        Err(e) if windows::is_af_unix_unsupported(&e) => Some(
            "this platform has no AF_UNIX sockets \
             (socket(AF_UNIX) fails with WSAEAFNOSUPPORT, 10047)"
                .to_owned(),
        ),
        _ => None,
    };
    #[cfg(not(any(unix, windows)))]
    return Some("this platform has no AF_UNIX sockets".to_owned());
}

/// Removes a listener's socket file when it closes.
pub(crate) fn remove_socket_file(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// `true` when the error means the peer went away (reset, broken pipe, aborted).
pub(crate) fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Options::tcp_keepalive` reaches the socket (loopback).
    #[test]
    fn keepalive_is_set_on_tcp_streams() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = connect_tcp(listener.local_addr().unwrap()).unwrap();
        assert!(!stream.keepalive(), "off by default");
        stream.set_keepalive(Duration::from_secs(30));
        assert!(stream.keepalive());
    }

    /// `Options::unix_send_buffer` reaches a Unix-domain stream, as far as
    /// the kernel grants it (Linux: up to `net.core.wmem_max`, doubled);
    /// 0 leaves the kernel's default.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_send_buffer_is_set_on_unix_streams() {
        let path = crate::testing::temp_uds_path();
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let stream = connect_uds(&path).map_err(|(_, e)| e).unwrap();
        let default = stream.send_buffer();
        stream.configure(&StreamSettings::default());
        assert_eq!(stream.send_buffer(), default, "0 leaves the default");
        let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let want = 1024 * 1024;
        stream.configure(&StreamSettings {
            unix_send_buffer: want,
            ..StreamSettings::default()
        });
        let got = stream.send_buffer();
        println!("SNDBUF default {default}, asked {want}, got {got} (wmem_max {wmem_max})");
        assert_eq!(got, 2 * want.min(wmem_max));
        drop(listener);
        remove_socket_file(&path);
    }

    #[test]
    fn uds_path_limit_is_the_platform_one() {
        let expected = if cfg!(any(
            target_os = "macos",
            target_os = "ios",
            target_os = "tvos",
            target_os = "watchos",
            target_os = "visionos",
            target_os = "freebsd",
            target_os = "openbsd",
            target_os = "netbsd",
            target_os = "dragonfly"
        )) {
            103
        } else {
            107
        };
        assert_eq!(MAX_UDS_PATH_LEN, expected);
    }

    /// The limit leaves room for the NUL in the platform's own `sun_path`.
    #[cfg(unix)]
    #[test]
    fn uds_path_limit_matches_libc_sockaddr_un() {
        let sun_path = std::mem::size_of::<libc::sockaddr_un>()
            - std::mem::offset_of!(libc::sockaddr_un, sun_path);
        assert_eq!(MAX_UDS_PATH_LEN + 1, sun_path);
    }
}
