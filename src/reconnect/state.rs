//! What a helper did with a message, and where a [`Reconnect`](super::Reconnect) stands.

use std::time::{Duration, Instant};

use crate::message::Message;

/// What a helper did with a message the application received.
#[derive(Debug)]
pub enum Handled {
    /// The helper's own business (a handshake, a report about its channel,
    /// its own heartbeat): consumed, nothing for the application.
    Mine,
    /// Not the helper's: the message, for the application to handle.
    NotMine(Message),
}

/// Where the helper stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// A HelloRequest is out on `channel`; the server has until `deadline`.
    Connecting {
        channel: u16,
        deadline: Option<Instant>,
        /// We aborted it (handshake timeout): the report is on its way.
        aborted: bool,
    },
    Connected {
        channel: u16,
    },
    /// Waiting until `until` before the next attempt.
    Backoff {
        until: Instant,
        waited: Duration,
    },
    /// Stopping: our ByeRequest (or ByeSignal) is out on `channel`; the
    /// server has until `deadline` to answer.
    Closing {
        channel: u16,
        deadline: Option<Instant>,
        aborted: bool,
        was_connected: bool,
    },
    /// Stopped on request, gave up, or the engine shut down.
    Done,
}
