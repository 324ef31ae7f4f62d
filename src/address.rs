//! Addresses: `tcp|HOST|PORT` and `uds|PATH` (SPEC §2.3, §6).

use std::path::PathBuf;

/// Where to connect or listen.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// Connect over TCP to `host` (name or IP literal) and `port`.
    TcpClient {
        /// Host name or IP literal.
        host: String,
        /// Port.
        port: u16,
    },
    /// Listen on TCP at IP literal `host` and `port`.
    TcpServer {
        /// IP literal (`0.0.0.0` = all IPv4 interfaces).
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
        /// Socket file path.
        path: PathBuf,
    },
}
