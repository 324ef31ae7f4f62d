//! Unix-domain (AF_UNIX) stream sockets on Windows (10 1803 and later).
//!
//! Neither std nor mio 1.x has AF_UNIX on Windows, so the sockets are created
//! with `socket2` and driven by mio as if they were TCP streams: mio's Windows
//! selector polls any AFD-based socket, whatever its address family, and a
//! `std::net::TcpStream` is only a socket handle whose `read`, `write`, `peek`
//! and `take_error` are the plain Winsock calls. The conversions are the safe
//! `From<socket2::Socket>` ones: no `unsafe` here. Only what goes through
//! addresses differs from TCP, and is done with `socket2` instead:
//! `peer_addr` (see `Stream::is_connected`), `accept` and `connect`.
//!
//! What Windows does differently from Unix:
//! * a socket file is an NTFS reparse point, not a file of type "socket";
//! * paths only (no abstract names, as on every platform here), and
//!   `sun_path` holds at most 107 bytes of UTF-8 (the address parser enforces
//!   it);
//! * platforms without AF_UNIX (Windows before 10 1803, Wine 8 and 10) fail at
//!   `socket()` with WSAEAFNOSUPPORT (10047): connecting then reports
//!   `not_implemented_yet`, listening `listen_failed`;
//! * Winsock start-up (`WSAStartup`) is left to std, which socket2 triggers.

use std::io;
use std::path::Path;

use mio::event::Source;
use mio::{Interest, Registry, Token};
use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use super::BACKLOG;
use crate::error::Error;

/// WSAEAFNOSUPPORT: the address family (AF_UNIX) is not supported here.
const WSAEAFNOSUPPORT: i32 = 10047;
/// `FILE_ATTRIBUTE_REPARSE_POINT`: what a socket file looks like on NTFS.
const FILE_ATTRIBUTE_REPARSE_POINT: u32 = 0x400;

/// A connected AF_UNIX stream, driven by mio's AFD poller like a TCP stream.
pub(crate) type UnixStream = mio::net::TcpStream;

/// A listening AF_UNIX socket. Held as a mio stream so that `accept` can go
/// through [`mio::net::TcpStream::try_io`] (mio's listener would try to turn
/// the peer address into an IP address and drop the connection).
#[derive(Debug)]
pub(crate) struct UnixListener(mio::net::TcpStream);

impl UnixListener {
    /// Accepts one connection, non-blocking.
    pub(crate) fn accept(&self) -> io::Result<(UnixStream, SockAddr)> {
        let (socket, addr) = self.0.try_io(|| SockRef::from(&self.0).accept())?;
        socket.set_nonblocking(true)?;
        Ok((wrap(socket), addr))
    }
}

impl Source for UnixListener {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.0.register(r, t, i)
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.0.reregister(r, t, i)
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.0.deregister(r)
    }
}

fn wrap(socket: Socket) -> mio::net::TcpStream {
    mio::net::TcpStream::from_std(socket.into())
}

fn new_socket() -> io::Result<Socket> {
    Socket::new(Domain::UNIX, Type::STREAM, None)
}

/// `true` when `e` says the platform has no AF_UNIX sockets.
pub(crate) fn is_af_unix_unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(WSAEAFNOSUPPORT)
}

/// Binds and listens, removing a stale socket file first. A socket file with a
/// live listener behind it is left alone (the bind then fails), and so is
/// anything that is not a reparse point (a regular file, a directory).
pub(crate) fn listen_uds(path: &Path) -> io::Result<super::Listener> {
    let socket = new_socket()?;
    let addr = SockAddr::unix(path)?;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::windows::fs::MetadataExt;
        let reparse = meta.file_attributes() & FILE_ATTRIBUTE_REPARSE_POINT != 0;
        // A blocking connect to a Unix-domain socket never waits on the network.
        let live = new_socket().and_then(|s| s.connect(&addr)).is_ok();
        if reparse && !meta.is_dir() && !live {
            let _ = std::fs::remove_file(path);
        }
    }
    socket.bind(&addr)?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(super::Listener::Unix(UnixListener(wrap(socket))))
}

/// Starts a non-blocking connect.
pub(crate) fn connect_uds(path: &Path) -> Result<super::Stream, (Error, io::Error)> {
    let socket = new_socket().map_err(|e| {
        let kind = if is_af_unix_unsupported(&e) {
            Error::NotImplementedYet
        } else {
            Error::ConnectFailed
        };
        (kind, e)
    })?;
    // A non-blocking connect may report a missing path only later, as a
    // refused connection: look first (and again if it fails at once).
    let missing =
        || std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == io::ErrorKind::NotFound);
    if missing() {
        let e = io::Error::new(io::ErrorKind::NotFound, "no socket file at this path");
        return Err((Error::UdsPathNotFound, e));
    }
    let connected = SockAddr::unix(path).and_then(|addr| {
        socket.set_nonblocking(true)?;
        match socket.connect(&addr) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    });
    match connected {
        Ok(()) => Ok(super::Stream::Unix(wrap(socket))),
        Err(e) if missing() => Err((Error::UdsPathNotFound, e)),
        Err(e) => Err((Error::ConnectFailed, e)),
    }
}
