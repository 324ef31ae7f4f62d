//! What can go wrong, and the exit code each failure maps to.

use std::fmt;
use std::process::ExitCode;

/// Exit code: a failure not covered below (listen failed, connection lost,
/// unexpected reply, I/O error).
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Exit code: bad usage — unknown option, bad address syntax, body too large
/// (clap uses 2 for its own usage errors too).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code: could not connect (nothing listening, host not found, UDS path
/// missing).
pub(crate) const EXIT_CONNECT: u8 = 3;
/// Exit code: the peer did not answer in time.
pub(crate) const EXIT_TIMEOUT: u8 = 4;

/// The exit codes, as printed at the end of `--help`.
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  failure: listen failed, connection lost, unexpected reply, I/O error
  2  usage: unknown option, bad address syntax, body too large
  3  cannot connect: nothing listening, host not found, UDS path missing
  4  timeout: the peer did not answer within --timeout

Addresses: tcp|HOST|PORT (e.g. 'tcp|127.0.0.1|7099', 'tcp|::1|7099') or uds|PATH
(e.g. 'uds|/tmp/tofu.sock'). Quote them: '|' is the shell's pipe.";

/// A failure with a message a person can act on.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Anything not covered below.
    Other(String),
    /// Bad usage detected after argument parsing.
    Usage(String),
    /// Connecting failed.
    Connect(String),
    /// A wait ran out of time.
    Timeout(String),
}

impl Failure {
    /// The process exit code for this failure.
    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Other(_) => EXIT_FAILURE,
            Failure::Usage(_) => EXIT_USAGE,
            Failure::Connect(_) => EXIT_CONNECT,
            Failure::Timeout(_) => EXIT_TIMEOUT,
        })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Other(m) | Failure::Usage(m) | Failure::Connect(m) | Failure::Timeout(m) => {
                f.write_str(m)
            }
        }
    }
}

impl From<tofu::Error> for Failure {
    fn from(e: tofu::Error) -> Failure {
        Failure::Other(format!("engine error: {e}"))
    }
}

impl From<tofu::PostError> for Failure {
    fn from(e: tofu::PostError) -> Failure {
        Failure::Other(format!("post rejected: {}", e.error))
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::Other(format!("I/O error: {e}"))
    }
}
