//! Addresses: `tcp|HOST|PORT` and `uds|PATH` (SPEC §2.3, §6).
//!
//! The same syntax is used in the `~connect_to` / `~listen_on` text headers, by
//! `Display` and by `FromStr`; the rules are documented on [`Address`].

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::Error;
use crate::message::{BinaryHeader, MAX_SECTION_LEN, Message, OpCode, TextHeaders};
use crate::sys::MAX_UDS_PATH_LEN;

/// The text header a `HelloRequest` carries.
const CONNECT_TO: &str = "~connect_to";
/// The text header a `WelcomeRequest` carries.
const LISTEN_ON: &str = "~listen_on";
const SEP: char = '|';
const TCP: &str = "tcp";
const UDS: &str = "uds";

/// Where to connect or listen.
///
/// Build one with [`Address::tcp_client`], [`Address::tcp_server`],
/// [`Address::uds_client`] or [`Address::uds_server`], or parse the header syntax
/// with [`str::parse`] (client variants) or [`Address::parse_server`]. Put it into
/// a message with [`Address::format`] and read it back with [`Address::parse`].
///
/// # Syntax
///
/// `tcp|HOST|PORT` or `uds|PATH`, as in the `~connect_to` / `~listen_on` text
/// headers. Parsing is strict, so that whatever is accepted can be written into a
/// text header and read back unchanged:
///
/// * fields are separated by `|`; the scheme is `tcp` or `uds`, lower case only;
/// * `tcp` takes exactly three fields. The host is without whitespace or
///   control characters, and non-empty except on a server (below). An IPv6 literal is written bare (`tcp|::1|7099`, as
///   on the wire) or in brackets (`tcp|[::1]|7099`) and is stored bare; any other
///   host containing `:` is rejected (no `host:port`, no zone ids). The port is
///   decimal digits only and fits in a `u16`;
/// * a client port must not be 0; a server port may be (the OS picks one);
/// * a host may be a name, resolved off the I/O thread when connecting or
///   listening (a listener binds the first address the name yields that it
///   can). A server host may also be empty: `tcp||PORT`, as the original tofu
///   allows, and `tcp|0.0.0.0|PORT` both mean all IPv4 interfaces (`::` = all
///   IPv6 interfaces);
/// * `uds` takes the path as everything after `uds|`. The path is at most 107
///   bytes long (103 on macOS, iOS and the BSDs, whose
///   `sockaddr_un` is smaller). It must not contain `|` (so that an address never
///   has two readings) or control characters (NUL, CR, LF, tab, …), nor end with
///   a space (text header values are trimmed when read). [`Address::format`] also
///   requires it to be valid UTF-8. A client path is non-empty; a server path
///   may be empty (`uds|`): the listener then binds a fresh path in the temp
///   dir ([`std::env::temp_dir`]).
///
/// A listener's WelcomeResponse names the address actually bound in its
/// `~listen_on` — the IP and port for `tcp||0` or a host name, the path for
/// `uds|` — in this same syntax, so [`Address::parse`] reads it back and its
/// [`Display`](fmt::Display) form is what the header says.
///
/// Anything else is [`Error::InvalidAddress`].
///
/// # Examples
///
/// ```
/// use tofu::{Address, Message, OpCode};
///
/// let addr: Address = "tcp|127.0.0.1|7099".parse()?;
/// assert_eq!(addr, Address::tcp_client("127.0.0.1", 7099));
/// assert_eq!(addr.to_string(), "tcp|127.0.0.1|7099");
///
/// let mut hello = Message::new();
/// addr.format(&mut hello)?;
/// assert_eq!(hello.header.proto.opcode, OpCode::HelloRequest);
/// assert_eq!(hello.text_headers.get("~connect_to"), Some("tcp|127.0.0.1|7099"));
/// assert_eq!(Address::parse(&hello)?, addr);
/// # Ok::<(), tofu::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// Connect over TCP to `host` (name or IP literal) and `port`.
    TcpClient {
        /// Host name or IP literal.
        host: String,
        /// Port.
        port: u16,
    },
    /// Listen on TCP at `host` and `port`.
    TcpServer {
        /// IP literal (`0.0.0.0` = all IPv4 interfaces), host name, or empty
        /// (all IPv4 interfaces, as `0.0.0.0`).
        host: String,
        /// Port.
        port: u16,
    },
    /// Connect to the Unix-domain socket at `path`.
    UdsClient {
        /// Socket file path.
        path: PathBuf,
    },
    /// Listen on a Unix-domain socket at `path`.
    UdsServer {
        /// Socket file path; empty for a fresh path in the temp dir.
        path: PathBuf,
    },
}

impl Address {
    /// A TCP client address: connect to `host` (a name or an IP literal) and
    /// `port`.
    ///
    /// An IPv6 literal in brackets (`"[::1]"`) is stored without them. Nothing
    /// else is checked here; [`Address::format`] validates.
    pub fn tcp_client(host: impl Into<String>, port: u16) -> Address {
        Address::TcpClient {
            host: unbracket(host.into()),
            port,
        }
    }

    /// A TCP server address: listen on `host` — an IP literal, `"0.0.0.0"` or
    /// `""` for all IPv4 interfaces, or a host name — and `port` (0 lets the
    /// OS pick one).
    ///
    /// An IPv6 literal in brackets (`"[::1]"`) is stored without them. Nothing
    /// else is checked here; [`Address::format`] validates.
    pub fn tcp_server(host: impl Into<String>, port: u16) -> Address {
        Address::TcpServer {
            host: unbracket(host.into()),
            port,
        }
    }

    /// A Unix-domain socket client address: connect to the socket file at `path`.
    ///
    /// Nothing is checked here; [`Address::format`] validates.
    pub fn uds_client(path: impl Into<PathBuf>) -> Address {
        Address::UdsClient { path: path.into() }
    }

    /// A Unix-domain socket server address: listen on the socket file at `path`
    /// (an empty path: a fresh one in the temp dir).
    ///
    /// Nothing is checked here; [`Address::format`] validates.
    pub fn uds_server(path: impl Into<PathBuf>) -> Address {
        Address::UdsServer { path: path.into() }
    }

    /// Prepares `msg` to open a channel to (or a listener at) this address.
    ///
    /// Resets the binary header to its default, sets the opcode to
    /// [`OpCode::HelloRequest`] for client addresses or [`OpCode::WelcomeRequest`]
    /// for server addresses, removes any `~connect_to` and `~listen_on` text
    /// headers and appends `~connect_to` (clients) or `~listen_on` (servers) with
    /// this address in header syntax. Other text headers and the body are kept.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAddress`] when the address breaks the syntax rules (for
    /// example an empty client host, client port 0, a host with whitespace, a
    /// client UDS path that is empty, a path too long or not UTF-8);
    /// [`Error::InvalidHeadersLen`] when the text headers would exceed 65535
    /// bytes. On error `msg` is left untouched.
    ///
    /// # Examples
    ///
    /// ```
    /// use tofu::{Address, Message, OpCode};
    ///
    /// let mut welcome = Message::new();
    /// Address::tcp_server("0.0.0.0", 7099).format(&mut welcome)?;
    /// assert_eq!(welcome.header.proto.opcode, OpCode::WelcomeRequest);
    /// assert_eq!(welcome.text_headers.get("~listen_on"), Some("tcp|0.0.0.0|7099"));
    ///
    /// let mut hello = Message::new();
    /// assert!(Address::tcp_client("127.0.0.1", 0).format(&mut hello).is_err());
    /// assert_eq!(hello, Message::new());
    /// # Ok::<(), tofu::Error>(())
    /// ```
    pub fn format(&self, msg: &mut Message) -> Result<(), Error> {
        self.validate()?;
        let value = self.to_string();
        let (opcode, name) = if self.is_server() {
            (OpCode::WelcomeRequest, LISTEN_ON)
        } else {
            (OpCode::HelloRequest, CONNECT_TO)
        };
        // `append` adds `name:value\r\n`, plus `\r\n` to end an unterminated
        // last line: at most 5 bytes besides name and value.
        if msg.text_headers.byte_len() + name.len() + value.len() + 5 <= MAX_SECTION_LEN {
            // Fits even before removing old address headers: append cannot fail
            // on a validated value, so work in place.
            remove_address_headers(&mut msg.text_headers);
            msg.text_headers.append(name, &value)?;
        } else {
            // May fit only once old address headers are gone; try on a copy so
            // that a failure leaves the message untouched.
            let mut th = msg.text_headers.clone();
            remove_address_headers(&mut th);
            th.append(name, &value)?;
            msg.text_headers = th;
        }
        msg.header = BinaryHeader::default();
        msg.header.proto.opcode = opcode;
        Ok(())
    }

    /// Reads the address from a message's text headers.
    ///
    /// A [`OpCode::HelloRequest`] is read from `~connect_to` (client variants), a
    /// [`OpCode::WelcomeRequest`] from `~listen_on` (server variants). For any
    /// other opcode `~connect_to` is used if present (client variants), otherwise
    /// `~listen_on` (server variants).
    ///
    /// # Errors
    ///
    /// [`Error::WrongAddress`] when the header is missing;
    /// [`Error::InvalidAddress`] when its value is malformed.
    ///
    /// # Examples
    ///
    /// ```
    /// use tofu::{Address, Error, Message};
    ///
    /// let mut msg = Message::new();
    /// Address::uds_server("/tmp/tofu.sock").format(&mut msg)?;
    /// assert_eq!(Address::parse(&msg)?, Address::uds_server("/tmp/tofu.sock"));
    ///
    /// assert_eq!(Address::parse(&Message::new()), Err(Error::WrongAddress));
    /// # Ok::<(), tofu::Error>(())
    /// ```
    pub fn parse(msg: &Message) -> Result<Address, Error> {
        let th = &msg.text_headers;
        let (value, server) = match msg.header.proto.opcode {
            OpCode::HelloRequest => (th.get(CONNECT_TO), false),
            OpCode::WelcomeRequest => (th.get(LISTEN_ON), true),
            _ => match th.get(CONNECT_TO) {
                Some(v) => (Some(v), false),
                None => (th.get(LISTEN_ON), true),
            },
        };
        parse_str(value.ok_or(Error::WrongAddress)?, server)
    }

    /// Parses the header syntax into a *server* variant ([`Address::TcpServer`]
    /// or [`Address::UdsServer`]); [`str::parse`] gives client variants.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAddress`] when `s` is malformed (see
    /// [Syntax](Address#syntax)).
    ///
    /// # Examples
    ///
    /// ```
    /// use tofu::{Address, Error};
    ///
    /// assert_eq!(Address::parse_server("tcp|[::]|0")?, Address::tcp_server("::", 0));
    /// // As the original tofu writes them: all IPv4 interfaces, a host name,
    /// // a fresh path in the temp dir.
    /// assert_eq!(Address::parse_server("tcp||7099")?, Address::tcp_server("", 7099));
    /// assert_eq!(Address::parse_server("tcp|localhost|7099")?.to_string(), "tcp|localhost|7099");
    /// assert_eq!(Address::parse_server("uds|")?, Address::uds_server(""));
    /// assert_eq!("tcp||7099".parse::<Address>(), Err(Error::InvalidAddress)); // not to connect
    /// # Ok::<(), tofu::Error>(())
    /// ```
    pub fn parse_server(s: &str) -> Result<Address, Error> {
        parse_str(s, true)
    }

    /// `true` for [`Address::TcpServer`] and [`Address::UdsServer`].
    #[must_use]
    pub const fn is_server(&self) -> bool {
        matches!(self, Address::TcpServer { .. } | Address::UdsServer { .. })
    }

    /// The server variant with the same host and port, or path. A server
    /// address is returned as is.
    #[must_use]
    pub fn to_server(&self) -> Address {
        match self {
            Address::TcpClient { host, port } | Address::TcpServer { host, port } => {
                Address::TcpServer {
                    host: host.clone(),
                    port: *port,
                }
            }
            Address::UdsClient { path } | Address::UdsServer { path } => {
                Address::UdsServer { path: path.clone() }
            }
        }
    }

    /// The client variant with the same host and port, or path. A client
    /// address is returned as is.
    ///
    /// Useful to connect to a listener: `0.0.0.0` and `::` are valid to connect
    /// to on most systems, but a specific address is more portable. An empty
    /// host or path (a server's "any interface", "a fresh path") stays empty,
    /// which [`Address::format`] then rejects: connect to the address the
    /// WelcomeResponse names instead.
    #[must_use]
    pub fn to_client(&self) -> Address {
        match self {
            Address::TcpClient { host, port } | Address::TcpServer { host, port } => {
                Address::TcpClient {
                    host: host.clone(),
                    port: *port,
                }
            }
            Address::UdsClient { path } | Address::UdsServer { path } => {
                Address::UdsClient { path: path.clone() }
            }
        }
    }

    /// Checks this address against the syntax rules (see the module docs).
    pub(crate) fn validate(&self) -> Result<(), Error> {
        match self {
            Address::TcpClient { host, port } => {
                check_host(host, false)?;
                if *port == 0 {
                    return Err(Error::InvalidAddress);
                }
                Ok(())
            }
            Address::TcpServer { host, .. } => check_host(host, true).map(drop),
            Address::UdsClient { path } => {
                check_path(path.to_str().ok_or(Error::InvalidAddress)?, false)
            }
            Address::UdsServer { path } => {
                check_path(path.to_str().ok_or(Error::InvalidAddress)?, true)
            }
        }
    }

    /// The socket address to bind for a [`Address::TcpServer`] whose host is
    /// an IP literal or empty (all IPv4 interfaces).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAddress`] for any other variant or a host name (which
    /// needs resolving).
    pub(crate) fn server_socket_addr(&self) -> Result<SocketAddr, Error> {
        match self {
            Address::TcpServer { host, port } if host.is_empty() => {
                Ok(SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, *port)))
            }
            Address::TcpServer { host, port } => ip_literal(host)
                .map(|ip| SocketAddr::new(ip, *port))
                .ok_or(Error::InvalidAddress),
            _ => Err(Error::InvalidAddress),
        }
    }

    /// The socket address to connect to for a [`Address::TcpClient`] whose host
    /// is an IP literal; `None` for other variants or a host name that needs
    /// resolving. The port is not checked: see [`Address::validate`].
    #[allow(dead_code)]
    pub(crate) fn ip_literal_client(&self) -> Option<SocketAddr> {
        match self {
            Address::TcpClient { host, port } => {
                ip_literal(host).map(|ip| SocketAddr::new(ip, *port))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Address {
    /// Writes the header syntax: `tcp|HOST|PORT` (IPv6 literals bare, as on the
    /// wire) or `uds|PATH` (a non-UTF-8 path is written lossily).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::TcpClient { host, port } | Address::TcpServer { host, port } => {
                write!(f, "{TCP}{SEP}{}{SEP}{port}", bare_host(host))
            }
            Address::UdsClient { path } | Address::UdsServer { path } => {
                write!(f, "{UDS}{SEP}{}", path.display())
            }
        }
    }
}

impl FromStr for Address {
    type Err = Error;

    /// Parses the header syntax into a *client* variant ([`Address::TcpClient`]
    /// or [`Address::UdsClient`]); use [`Address::parse_server`] for server
    /// variants.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAddress`] when `s` is malformed: empty, an unknown scheme
    /// (schemes are case-sensitive: `tcp`, `uds`), missing or extra fields, an
    /// empty host or one with whitespace, a port that is not a decimal `u16` or is
    /// 0, a UDS path that is empty, too long, or contains `|` or control
    /// characters.
    fn from_str(s: &str) -> Result<Address, Error> {
        parse_str(s, false)
    }
}

/// Parses the header syntax into a server (`server`) or client variant.
fn parse_str(s: &str, server: bool) -> Result<Address, Error> {
    let (scheme, rest) = s.split_once(SEP).ok_or(Error::InvalidAddress)?;
    match scheme {
        TCP => {
            let (host, port) = rest.split_once(SEP).ok_or(Error::InvalidAddress)?;
            let host = check_host(host, server)?.to_owned();
            let port = parse_port(port)?;
            if server {
                Ok(Address::TcpServer { host, port })
            } else if port == 0 {
                Err(Error::InvalidAddress)
            } else {
                Ok(Address::TcpClient { host, port })
            }
        }
        UDS => {
            check_path(rest, server)?;
            let path = PathBuf::from(rest);
            Ok(if server {
                Address::UdsServer { path }
            } else {
                Address::UdsClient { path }
            })
        }
        _ => Err(Error::InvalidAddress),
    }
}

/// A decimal `u16`: digits only (no sign, no spaces; `u16::from_str` alone would
/// accept `+80`).
fn parse_port(s: &str) -> Result<u16, Error> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::InvalidAddress);
    }
    s.parse().map_err(|_| Error::InvalidAddress)
}

/// Checks a TCP host and returns it without IPv6 brackets. Only a server's
/// may be empty (all IPv4 interfaces, as in the original's `tcp||PORT`).
fn check_host(host: &str, server: bool) -> Result<&str, Error> {
    if server && host.is_empty() {
        return Ok(host);
    }
    if let Some(inner) = bracketed(host) {
        return match inner.parse::<Ipv6Addr>() {
            Ok(_) => Ok(inner),
            Err(_) => Err(Error::InvalidAddress),
        };
    }
    let bad_char = |c: char| c.is_whitespace() || c.is_control() || c == SEP;
    if host.is_empty() || host.contains(bad_char) {
        return Err(Error::InvalidAddress);
    }
    // A ':' only makes sense in an IPv6 literal; anything else (`host:port`, a
    // zone id) would not mean what the user expects.
    if host.contains(':') && host.parse::<IpAddr>().is_err() {
        return Err(Error::InvalidAddress);
    }
    Ok(host)
}

/// Checks a UDS path (as it appears after `uds|`). Only a server's may be
/// empty (a fresh path in the temp dir, as in the original's `uds|`).
fn check_path(path: &str, server: bool) -> Result<(), Error> {
    let ok = (server || !path.is_empty())
        && path.len() <= MAX_UDS_PATH_LEN
        && !path.contains(|c: char| c == SEP || c.is_control())
        && !path.ends_with(' ');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidAddress)
    }
}

/// The inside of `[...]`, if `host` is written that way.
fn bracketed(host: &str) -> Option<&str> {
    host.strip_prefix('[')?.strip_suffix(']')
}

/// `host` without brackets when it is a bracketed IPv6 literal.
fn bare_host(host: &str) -> &str {
    match bracketed(host) {
        Some(inner) if inner.parse::<Ipv6Addr>().is_ok() => inner,
        _ => host,
    }
}

/// [`bare_host`] for an owned string, reusing it when nothing changes.
fn unbracket(host: String) -> String {
    match bracketed(&host) {
        Some(inner) if inner.parse::<Ipv6Addr>().is_ok() => inner.to_owned(),
        _ => host,
    }
}

/// `host` as an IP address: IPv4, bare IPv6 or bracketed IPv6.
fn ip_literal(host: &str) -> Option<IpAddr> {
    match bracketed(host) {
        Some(inner) => inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse().ok(),
    }
}

/// A fresh path for a Unix-domain socket in the temp dir, unique per call in
/// this process (what a listener on `uds|` binds, and
/// [`testing::temp_uds_path`](crate::testing::temp_uds_path)).
pub(crate) fn temp_uds_path() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Short names: the platform limit on socket paths is ~104-108 bytes.
    std::env::temp_dir().join(format!("tofu-{}-{n}-{nanos:x}.sock", std::process::id()))
}

fn remove_address_headers(th: &mut TextHeaders) {
    th.remove(CONNECT_TO);
    th.remove(LISTEN_ON);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{More, Origin};

    #[track_caller]
    fn invalid(s: &str) {
        assert_eq!(
            s.parse::<Address>(),
            Err(Error::InvalidAddress),
            "client {s:?}"
        );
        assert_eq!(
            Address::parse_server(s),
            Err(Error::InvalidAddress),
            "server {s:?}"
        );
    }

    #[track_caller]
    fn format_parse_round_trip(addr: Address, opcode: OpCode, header: &str, value: &str) {
        let mut msg = Message::new();
        addr.format(&mut msg).unwrap();
        assert_eq!(msg.header.proto.opcode, opcode);
        assert_eq!(msg.text_headers.get(header), Some(value));
        assert_eq!(msg.text_headers.len(), 1);
        assert_eq!(Address::parse(&msg), Ok(addr));
    }

    fn path_of_len(len: usize) -> String {
        let mut p = String::from("/tmp/");
        p.push_str(&"x".repeat(len - p.len()));
        p
    }

    fn msg_with(opcode: OpCode, headers: &[(&str, &str)]) -> Message {
        let mut msg = Message::new();
        msg.header.proto.opcode = opcode;
        for (n, v) in headers {
            msg.text_headers.append(n, v).unwrap();
        }
        msg
    }

    #[test]
    fn format_parse_all_four_variants() {
        format_parse_round_trip(
            Address::tcp_client("localhost", 7099),
            OpCode::HelloRequest,
            CONNECT_TO,
            "tcp|localhost|7099",
        );
        format_parse_round_trip(
            Address::tcp_server("0.0.0.0", 0),
            OpCode::WelcomeRequest,
            LISTEN_ON,
            "tcp|0.0.0.0|0",
        );
        format_parse_round_trip(
            Address::uds_client("/tmp/tofu.sock"),
            OpCode::HelloRequest,
            CONNECT_TO,
            "uds|/tmp/tofu.sock",
        );
        format_parse_round_trip(
            Address::uds_server("relative/dir/s.sock"),
            OpCode::WelcomeRequest,
            LISTEN_ON,
            "uds|relative/dir/s.sock",
        );
    }

    #[test]
    fn format_parse_ipv4_and_ipv6() {
        format_parse_round_trip(
            Address::tcp_client("127.0.0.1", 7099),
            OpCode::HelloRequest,
            CONNECT_TO,
            "tcp|127.0.0.1|7099",
        );
        format_parse_round_trip(
            Address::tcp_client("::1", 7099),
            OpCode::HelloRequest,
            CONNECT_TO,
            "tcp|::1|7099",
        );
        format_parse_round_trip(
            Address::tcp_client("[::1]", 7099),
            OpCode::HelloRequest,
            CONNECT_TO,
            "tcp|::1|7099",
        );
        format_parse_round_trip(
            Address::tcp_server("::", 65535),
            OpCode::WelcomeRequest,
            LISTEN_ON,
            "tcp|::|65535",
        );
        format_parse_round_trip(
            Address::tcp_server("fe80::1:2", 1),
            OpCode::WelcomeRequest,
            LISTEN_ON,
            "tcp|fe80::1:2|1",
        );
    }

    #[test]
    fn ipv6_literals_bare_and_bracketed() {
        let bare = Address::tcp_client("::1", 7099);
        assert_eq!("tcp|::1|7099".parse::<Address>(), Ok(bare.clone()));
        assert_eq!("tcp|[::1]|7099".parse::<Address>(), Ok(bare.clone()));
        assert_eq!(Address::tcp_client("[::1]", 7099), bare);
        assert_eq!(bare.to_string(), "tcp|::1|7099");
        assert_eq!(
            Address::parse_server("tcp|[::1]|0"),
            Ok(Address::TcpServer {
                host: "::1".into(),
                port: 0
            })
        );
        // Built by hand with brackets: still written bare.
        let by_hand = Address::TcpServer {
            host: "[::]".into(),
            port: 80,
        };
        assert_eq!(by_hand.to_string(), "tcp|::|80");
        let mut msg = Message::new();
        by_hand.format(&mut msg).unwrap();
        assert_eq!(msg.text_headers.get(LISTEN_ON), Some("tcp|::|80"));
        // Brackets are for IPv6 only and must be complete.
        invalid("tcp|[1.2.3.4]|80");
        invalid("tcp|[localhost]|80");
        invalid("tcp|[::1|80");
        invalid("tcp|::1]|80");
        invalid("tcp|[]|80");
        invalid("tcp|1::2::3|80");
        invalid("tcp|fe80::1%eth0|80");
        invalid("tcp|example.com:80|80");
    }

    #[test]
    fn display_from_str_round_trips() {
        for s in [
            "tcp|127.0.0.1|7099",
            "tcp|localhost|1",
            "tcp|my-host.example.com|65535",
            "tcp|::1|7099",
            "tcp|2001:db8::8a2e:370:7334|443",
            "uds|/tmp/tofu.sock",
            "uds|C:\\Users\\me\\AppData\\Local\\Temp\\t.sock",
            "uds|rel ative/with space.sock",
        ] {
            let client: Address = s.parse().unwrap();
            assert!(!client.is_server());
            assert_eq!(client.to_string(), s);
            assert_eq!(client.to_string().parse::<Address>(), Ok(client.clone()));
        }
        for s in [
            "tcp|0.0.0.0|0",
            "tcp|127.0.0.1|7099",
            "tcp|::|1",
            "uds|/tmp/srv.sock",
        ] {
            let server = Address::parse_server(s).unwrap();
            assert!(server.is_server());
            assert_eq!(server.to_string(), s);
            assert_eq!(Address::parse_server(&server.to_string()), Ok(server));
        }
        // Non-canonical input is accepted and written canonically.
        assert_eq!(
            "tcp|h|0080".parse::<Address>().unwrap().to_string(),
            "tcp|h|80"
        );
    }

    #[test]
    fn malformed_strings() {
        invalid("");
        invalid("tcp");
        invalid("uds");
        invalid("|");
        invalid("||");
        // unknown or miscased scheme
        invalid("udp|127.0.0.1|80");
        invalid("TCP|127.0.0.1|80");
        invalid("Uds|/tmp/x");
        invalid("|127.0.0.1|80");
        invalid(" tcp|127.0.0.1|80");
        // missing fields
        invalid("tcp|");
        invalid("tcp|127.0.0.1");
        invalid("tcp|127.0.0.1|");
        // extra fields
        invalid("tcp|127.0.0.1|80|");
        invalid("tcp|127.0.0.1|80|90");
        invalid("tcp|a|b|80");
        // bad port
        invalid("tcp|127.0.0.1|http");
        invalid("tcp|127.0.0.1|+80");
        invalid("tcp|127.0.0.1|-1");
        invalid("tcp|127.0.0.1| 80");
        invalid("tcp|127.0.0.1|80 ");
        invalid("tcp|127.0.0.1|8.0");
        invalid("tcp|127.0.0.1|0x50");
        // port out of range
        invalid("tcp|127.0.0.1|65536");
        invalid("tcp|127.0.0.1|99999999999999999999");
        // empty or bad host
        invalid("tcp| |80");
        invalid("tcp| 127.0.0.1|80");
        invalid("tcp|my host|80");
        invalid("tcp|a\tb|80");
        invalid("tcp|a\0b|80");
        // uds
        invalid("uds|/tmp/a|b");
        invalid("uds|/tmp/a\0b");
        invalid("uds|/tmp/a\nb");
        invalid("uds|/tmp/a\rb");
        invalid("uds|/tmp/a\tb");
        invalid("uds|/tmp/a ");
    }

    #[test]
    fn client_port_zero_is_invalid_server_port_zero_is_not() {
        assert_eq!(
            "tcp|127.0.0.1|0".parse::<Address>(),
            Err(Error::InvalidAddress)
        );
        assert_eq!(
            Address::parse_server("tcp|127.0.0.1|0"),
            Ok(Address::tcp_server("127.0.0.1", 0))
        );
        let mut msg = Message::new();
        assert_eq!(
            Address::tcp_client("127.0.0.1", 0).format(&mut msg),
            Err(Error::InvalidAddress)
        );
        Address::tcp_server("127.0.0.1", 0)
            .format(&mut msg)
            .unwrap();
    }

    /// What the original tofu listens on (SPEC §2.3): `tcp||PORT` (all IPv4
    /// interfaces), a host name, `uds|` (a fresh temp path). Only servers take
    /// an empty host or path.
    #[test]
    fn server_hosts_as_the_original_writes_them() {
        for (s, addr) in [
            ("tcp||7099", Address::tcp_server("", 7099)),
            ("tcp||0", Address::tcp_server("", 0)),
            ("tcp|localhost|80", Address::tcp_server("localhost", 80)),
            ("tcp|example.com|80", Address::tcp_server("example.com", 80)),
            ("uds|", Address::uds_server("")),
        ] {
            assert_eq!(Address::parse_server(s), Ok(addr.clone()), "{s}");
            assert_eq!(addr.to_string(), s);
            format_parse_round_trip(addr.clone(), OpCode::WelcomeRequest, LISTEN_ON, s);
            // Not to connect to.
            if s.contains("||") || s == "uds|" {
                assert_eq!(s.parse::<Address>(), Err(Error::InvalidAddress), "{s}");
                let mut msg = Message::new();
                assert_eq!(
                    addr.to_client().format(&mut msg),
                    Err(Error::InvalidAddress)
                );
            }
        }
        assert_eq!(
            Address::tcp_server("", 7).server_socket_addr(),
            Ok(SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 7)))
        );
        assert_eq!(
            Address::tcp_server("localhost", 7).server_socket_addr(),
            Err(Error::InvalidAddress),
            "a name needs resolving"
        );
        // Still malformed, for servers too.
        for s in [
            "tcp| |80",
            "tcp|a b|80",
            "tcp|1::2::3|80",
            "tcp||",
            "tcp||x",
        ] {
            assert_eq!(Address::parse_server(s), Err(Error::InvalidAddress), "{s}");
        }
    }

    #[test]
    fn uds_path_length_limit() {
        let at_limit = path_of_len(MAX_UDS_PATH_LEN);
        let over = path_of_len(MAX_UDS_PATH_LEN + 1);
        assert_eq!(at_limit.len(), MAX_UDS_PATH_LEN);

        let ok = format!("uds|{at_limit}");
        assert_eq!(
            ok.parse::<Address>(),
            Ok(Address::uds_client(at_limit.clone()))
        );
        assert_eq!(
            Address::parse_server(&ok),
            Ok(Address::uds_server(at_limit.clone()))
        );
        let mut msg = Message::new();
        Address::uds_server(&at_limit).format(&mut msg).unwrap();
        assert_eq!(Address::parse(&msg), Ok(Address::uds_server(&at_limit)));

        invalid(&format!("uds|{over}"));
        let mut msg = Message::new();
        assert_eq!(
            Address::uds_client(&over).format(&mut msg),
            Err(Error::InvalidAddress)
        );
        assert_eq!(msg, Message::new());
    }

    #[test]
    fn uds_path_limit_counts_bytes_not_chars() {
        // 'é' is two bytes in UTF-8.
        let mut p = path_of_len(MAX_UDS_PATH_LEN - 1);
        p.push('é');
        assert_eq!(p.len(), MAX_UDS_PATH_LEN + 1);
        invalid(&format!("uds|{p}"));
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_uds_path_is_rejected_by_format() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;

        let addr = Address::uds_client(OsStr::from_bytes(b"/tmp/\xff.sock"));
        let mut msg = Message::new();
        assert_eq!(addr.format(&mut msg), Err(Error::InvalidAddress));
        assert_eq!(msg, Message::new());
    }

    #[test]
    fn format_rejects_hand_built_invalid_addresses_and_leaves_msg_alone() {
        let mut msg = msg_with(OpCode::Signal, &[("keep", "me")]);
        msg.header.channel_number = 3;
        msg.body.extend_from_slice(b"body");
        let before = msg.clone();
        for addr in [
            Address::tcp_client("", 80),
            Address::tcp_client("a b", 80),
            Address::tcp_client("a|b", 80),
            Address::tcp_client("a\r\nb", 80),
            Address::tcp_client("host:80", 80),
            Address::tcp_server(" ", 80),
            Address::tcp_server("na me", 80),
            Address::uds_client(""),
            Address::uds_server("/tmp/a|b"),
            Address::uds_server("/tmp/a\nb"),
        ] {
            assert_eq!(
                addr.format(&mut msg),
                Err(Error::InvalidAddress),
                "{addr:?}"
            );
            assert_eq!(msg, before, "{addr:?}");
        }
    }

    #[test]
    fn format_resets_header_and_replaces_older_address_headers() {
        let mut msg = msg_with(
            OpCode::Signal,
            &[
                (CONNECT_TO, "tcp|old|1"),
                ("x", "1"),
                (LISTEN_ON, "uds|/tmp/old"),
                (CONNECT_TO, "tcp|older|2"),
            ],
        );
        msg.header.channel_number = 5;
        msg.header.message_id = 9;
        msg.header.status = 22;
        msg.header.proto.origin = Origin::Engine;
        msg.header.proto.more = More::More;
        msg.body.extend_from_slice(b"payload");

        Address::tcp_client("new", 3).format(&mut msg).unwrap();
        let mut expected = BinaryHeader::default();
        expected.proto.opcode = OpCode::HelloRequest;
        assert_eq!(msg.header, expected);
        assert_eq!(
            msg.text_headers.to_str().unwrap(),
            "x:1\r\n~connect_to:tcp|new|3\r\n"
        );
        assert_eq!(msg.body, b"payload");

        // Re-formatting the same message as a server swaps the header.
        Address::uds_server("/tmp/s").format(&mut msg).unwrap();
        assert_eq!(msg.header.proto.opcode, OpCode::WelcomeRequest);
        assert_eq!(
            msg.text_headers.to_str().unwrap(),
            "x:1\r\n~listen_on:uds|/tmp/s\r\n"
        );
        assert_eq!(Address::parse(&msg), Ok(Address::uds_server("/tmp/s")));
    }

    #[test]
    fn format_near_the_text_header_limit() {
        let new = Address::tcp_client("127.0.0.1", 7099);
        let line = |n: &str, v: &str| n.len() + v.len() + 3;
        let old_value = "tcp|some.old.host.example|7099";
        let new_len = line(CONNECT_TO, &new.to_string());
        assert!(line(CONNECT_TO, old_value) >= new_len);

        // Full, but removing the old address header makes room.
        let filler = MAX_SECTION_LEN - line(CONNECT_TO, old_value) - line("f", "") - 1;
        let mut msg = msg_with(
            OpCode::Request,
            &[("f", &"y".repeat(filler)), (CONNECT_TO, old_value)],
        );
        assert!(msg.text_headers.byte_len() + new_len > MAX_SECTION_LEN);
        new.format(&mut msg).unwrap();
        assert_eq!(Address::parse(&msg), Ok(new.clone()));
        assert_eq!(msg.text_headers.len(), 2);

        // Full, and nothing to remove: rejected, message untouched.
        let filler = MAX_SECTION_LEN - line("f", "") - new_len + 1;
        let mut msg = msg_with(OpCode::Request, &[("f", &"y".repeat(filler))]);
        let before = msg.clone();
        assert_eq!(new.format(&mut msg), Err(Error::InvalidHeadersLen));
        assert_eq!(msg, before);

        // Exactly at the limit still fits.
        let filler = MAX_SECTION_LEN - line("f", "") - new_len;
        let mut msg = msg_with(OpCode::Request, &[("f", &"y".repeat(filler))]);
        new.format(&mut msg).unwrap();
        assert_eq!(msg.text_headers.byte_len(), MAX_SECTION_LEN);
    }

    /// Found by the `address` fuzz target: a message whose raw text headers
    /// ended without a line break (as a peer may send them) got the address
    /// header glued to that line, and `parse` then found no address.
    #[test]
    fn format_after_raw_headers_without_final_line_break() {
        let addr = Address::uds_client("/tmp/tofu.sock");
        let mut msg = Message::new();
        msg.text_headers
            .set_raw("~connect_to: tcp|h|1\r\nx")
            .unwrap();
        addr.format(&mut msg).unwrap();
        assert_eq!(Address::parse(&msg), Ok(addr));
        assert_eq!(
            msg.text_headers.to_str().unwrap(),
            "x\r\n~connect_to:uds|/tmp/tofu.sock\r\n"
        );

        // Near the limit, the extra line break is counted: an address that
        // does not fit is refused and the message left untouched.
        let new = Address::tcp_client("127.0.0.1", 7099);
        let room = MAX_SECTION_LEN - (CONNECT_TO.len() + new.to_string().len() + 3);
        let mut msg = Message::new();
        msg.text_headers.set_raw("x".repeat(room)).unwrap();
        let before = msg.clone();
        assert_eq!(new.format(&mut msg), Err(Error::InvalidHeadersLen));
        assert_eq!(msg, before);
        msg.text_headers.set_raw("x".repeat(room - 2)).unwrap();
        new.format(&mut msg).unwrap();
        assert_eq!(msg.text_headers.byte_len(), MAX_SECTION_LEN);
        assert_eq!(Address::parse(&msg), Ok(new));
    }

    #[test]
    fn parse_missing_header_is_wrong_address() {
        for opcode in [OpCode::HelloRequest, OpCode::WelcomeRequest, OpCode::Signal] {
            let msg = msg_with(opcode, &[("other", "tcp|127.0.0.1|80")]);
            assert_eq!(Address::parse(&msg), Err(Error::WrongAddress), "{opcode:?}");
        }
        // The header of the other kind does not count.
        let msg = msg_with(OpCode::HelloRequest, &[(LISTEN_ON, "tcp|127.0.0.1|80")]);
        assert_eq!(Address::parse(&msg), Err(Error::WrongAddress));
        let msg = msg_with(OpCode::WelcomeRequest, &[(CONNECT_TO, "tcp|127.0.0.1|80")]);
        assert_eq!(Address::parse(&msg), Err(Error::WrongAddress));
    }

    #[test]
    fn parse_malformed_header_is_invalid_address() {
        for (opcode, name, value) in [
            (OpCode::HelloRequest, CONNECT_TO, "tcp|127.0.0.1|0"),
            (OpCode::HelloRequest, CONNECT_TO, "nope"),
            (OpCode::WelcomeRequest, LISTEN_ON, "tcp| |80"),
            (OpCode::HelloRequest, CONNECT_TO, "uds|"),
            (OpCode::HelloRequest, CONNECT_TO, "tcp||80"),
            (OpCode::Request, CONNECT_TO, "tcp|h|70000"),
        ] {
            let msg = msg_with(opcode, &[(name, value)]);
            assert_eq!(Address::parse(&msg), Err(Error::InvalidAddress), "{value}");
        }
        // An empty value (only possible from the wire) is malformed, not missing.
        let mut msg = msg_with(OpCode::HelloRequest, &[]);
        msg.text_headers.set_raw("~connect_to:\r\n").unwrap();
        assert_eq!(Address::parse(&msg), Err(Error::InvalidAddress));
    }

    #[test]
    fn parse_trims_header_values() {
        let mut msg = msg_with(OpCode::HelloRequest, &[]);
        msg.text_headers
            .set_raw("~connect_to: \ttcp|127.0.0.1|80 \r\n")
            .unwrap();
        assert_eq!(
            Address::parse(&msg),
            Ok(Address::tcp_client("127.0.0.1", 80))
        );
    }

    #[test]
    fn parse_other_opcodes_use_whichever_header_is_present() {
        let msg = msg_with(OpCode::Response, &[(CONNECT_TO, "uds|/tmp/c")]);
        assert_eq!(Address::parse(&msg), Ok(Address::uds_client("/tmp/c")));
        let msg = msg_with(OpCode::HelloResponse, &[(LISTEN_ON, "tcp|0.0.0.0|80")]);
        assert_eq!(Address::parse(&msg), Ok(Address::tcp_server("0.0.0.0", 80)));
        // Both present: ~connect_to wins.
        let msg = msg_with(
            OpCode::WelcomeResponse,
            &[(LISTEN_ON, "uds|/tmp/s"), (CONNECT_TO, "uds|/tmp/c")],
        );
        assert_eq!(Address::parse(&msg), Ok(Address::uds_client("/tmp/c")));
    }

    #[test]
    fn client_server_conversions() {
        let tc = Address::tcp_client("127.0.0.1", 80);
        let ts = Address::tcp_server("127.0.0.1", 80);
        let uc = Address::uds_client("/tmp/x");
        let us = Address::uds_server("/tmp/x");
        assert!(!tc.is_server() && !uc.is_server());
        assert!(ts.is_server() && us.is_server());
        assert_eq!(tc.to_server(), ts);
        assert_eq!(ts.to_server(), ts);
        assert_eq!(ts.to_client(), tc);
        assert_eq!(tc.to_client(), tc);
        assert_eq!(uc.to_server(), us);
        assert_eq!(us.to_server(), us);
        assert_eq!(us.to_client(), uc);
        assert_eq!(uc.to_client(), uc);
    }

    #[test]
    fn socket_addr_helpers() {
        use std::net::{Ipv4Addr, SocketAddrV6};

        assert_eq!(
            Address::tcp_server("0.0.0.0", 0).server_socket_addr(),
            Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
        );
        assert_eq!(
            Address::TcpServer {
                host: "[::1]".into(),
                port: 7
            }
            .server_socket_addr(),
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::LOCALHOST,
                7,
                0,
                0
            )))
        );
        for not in [
            Address::tcp_server("localhost", 1),
            Address::tcp_server("[localhost]", 1),
            Address::tcp_client("127.0.0.1", 1),
            Address::uds_server("/tmp/x"),
        ] {
            assert_eq!(not.server_socket_addr(), Err(Error::InvalidAddress));
        }

        assert_eq!(
            Address::tcp_client("127.0.0.1", 7099).ip_literal_client(),
            Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 7099)))
        );
        assert_eq!(
            Address::tcp_client("::1", 7099).ip_literal_client(),
            Some(SocketAddr::from((Ipv6Addr::LOCALHOST, 7099)))
        );
        assert_eq!(
            Address::tcp_client("localhost", 1).ip_literal_client(),
            None
        );
        assert_eq!(
            Address::tcp_server("127.0.0.1", 1).ip_literal_client(),
            None
        );
        assert_eq!(Address::uds_client("/tmp/x").ip_literal_client(), None);
    }
}
