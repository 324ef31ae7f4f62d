//! The sans-IO engine core: every protocol decision, no sockets, no clock, no
//! threads.
//!
//! The I/O thread ([`reactor`](super::reactor)) owns the sockets and carries
//! out what this core asks for. It tells the core what happened through
//! `handle_*` calls — bytes read, bytes written, end of stream, a posted
//! message, time passed in as an [`Instant`](std::time::Instant) — and asks it
//! for work through `poll_*` calls: slices to write, messages to deliver, a
//! close with its cause, a need for pool memory. Because nothing here touches
//! the operating system, every behaviour is tested deterministically with two
//! cores back to back over in-memory byte pipes (`pair`, test builds only).
//!
//! * [`channel`]: one stream's state machine — phase, the Bye handshake,
//!   the send queue and its write cursor, the decoder and its stash.
//! * [`send`]: the send queue and the vectored-write slices.
//! * [`recv`]: decoding into pool messages under the backpressure policy.
//! * [`backpressure`]: when to read, how long a starved channel waits.
//! * [`lifecycle`]: channel numbers, zombies and late messages — the
//!   accounting that makes `channel_closed` the last word about a channel.

pub(crate) mod backpressure;
pub(crate) mod channel;
pub(crate) mod lifecycle;
pub(crate) mod recv;
pub(crate) mod send;

#[cfg(any(test, feature = "unstable"))]
pub(crate) mod fuzz;
#[cfg(any(test, feature = "unstable"))]
pub(crate) mod pair;

#[cfg(test)]
mod idle_tests;
#[cfg(test)]
mod in_place_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod through_tests;

use std::time::Duration;

use crate::error::Status;

/// How the transport ended, as the I/O layer saw it: the core decides what it
/// means for the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Orderly end of stream (read returned 0).
    Eof,
    /// The peer reset or vanished (`ECONNRESET`, `EPIPE`, …).
    Disconnect,
    /// Any other error, or a write that wrote nothing.
    Failed,
}

/// Why a channel closes. The reactor counts by cause; the application sees
/// only the [`Status`] (and, with `report`, its messages given back and the
/// `channel_closed` report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The application posted a ByeSignal (or closed a listener).
    Abort,
    /// The Bye handshake finished: we read the answer to our ByeRequest, or
    /// the peer's crossing ByeRequest.
    Handshake,
    /// The peer sent a frame that violates SPEC §3.
    InvalidFrame,
    /// The peer sent a ByeSignal (the original tofu's abort or rejection,
    /// SPEC §3): delivered, then the channel closes as after a disconnect.
    PeerAbort,
    /// An accepted connection's first frame was not a HelloRequest.
    NotHello,
    /// An accepted connection ended before its HelloRequest.
    LeftBeforeHello,
    /// The transport ended while reading.
    ReadEnded,
    /// The transport failed while writing.
    WriteFailed,
    /// Connecting failed (lookup, connect, registration).
    ConnectFailed,
    /// The group was destroyed or the engine shuts down.
    Local,
    /// An accepted connection sent no HelloRequest within the hello timeout.
    HelloTimeout,
    /// Our ByeRequest went unanswered for the bye timeout.
    ByeTimeout,
    /// The host-name lookup took longer than the lookup timeout.
    LookupTimeout,
    /// Nothing arrived from the peer for the idle timeout.
    IdleTimeout,
}

/// A channel's close, as decided by the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Close {
    /// The status given back messages carry (and the cause of the close).
    pub(crate) status: Status,
    /// `false` closes silently: an accepted connection the application never
    /// saw. Its queued messages are freed, no report is sent.
    pub(crate) report: bool,
    /// Why, for statistics and logs.
    pub(crate) cause: Cause,
}

impl Close {
    pub(crate) fn new(status: Status, report: bool, cause: Cause) -> Close {
        Close {
            status,
            report,
            cause,
        }
    }

    /// Closes because of an invalid frame (SPEC §3), counted as such.
    pub(crate) fn is_invalid_frame(&self) -> bool {
        matches!(self.cause, Cause::InvalidFrame | Cause::NotHello)
    }

    /// An accepted connection closed before the application saw it.
    pub(crate) fn is_silent(&self) -> bool {
        !self.report
            && matches!(
                self.cause,
                Cause::InvalidFrame
                    | Cause::NotHello
                    | Cause::LeftBeforeHello
                    | Cause::HelloTimeout
                    | Cause::IdleTimeout
            )
    }

    /// The `~cause` of the `channel_closed` report (SPEC §5.6): the status
    /// when the channel ended by a failure, a timeout or the peer's abort;
    /// `None` when it ended in order (the Bye handshake completed, this
    /// side's ByeSignal, group destroy, shutdown).
    pub(crate) fn report_cause(&self) -> Option<Status> {
        match self.cause {
            Cause::Abort | Cause::Handshake | Cause::Local => None,
            _ if self.status == Status::ChannelClosed => None,
            _ => Some(self.status),
        }
    }

    /// The handshake completed: the socket closes with a FIN, so no data the
    /// peer has not read yet is destroyed (SPEC §5.5). Every other close
    /// resets.
    pub(crate) fn is_graceful(&self) -> bool {
        self.report_cause().is_none() && matches!(self.cause, Cause::Handshake | Cause::ReadEnded)
    }
}

/// How long the core waits on a peer (SPEC §5.7a); `None` waits forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// An accepted connection's HelloRequest must arrive within this.
    pub(crate) hello: Option<Duration>,
    /// Our ByeRequest must be answered within this (counted from its post).
    pub(crate) bye: Option<Duration>,
    /// A host-name lookup must finish within this.
    pub(crate) lookup: Option<Duration>,
    /// Nothing received from the peer for this long closes the channel
    /// (counted from the start of the connect or the accept).
    pub(crate) idle: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            hello: Some(Duration::from_secs(10)),
            bye: Some(Duration::from_secs(10)),
            lookup: Some(Duration::from_secs(10)),
            idle: None,
        }
    }
}

/// What became of a channel after the core handled an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Go on.
    Continue,
    /// The pool had no message for a frame: reading stops until it refills.
    /// The undecoded bytes are stashed in the core, and the pool's
    /// notification is armed, so a returned message wakes the I/O thread.
    Starved,
    /// The channel must close. Deliver what the core queued first.
    Close(Close),
}
