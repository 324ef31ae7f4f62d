//! Statuses (SPEC §4), the [`Error`] type and [`PostError`].

use std::fmt;

use crate::message::Message;

macro_rules! statuses {
    ($( $(#[$doc:meta])* $raw:literal => $name:ident, $text:literal; )*) => {
        /// The status byte of a message (SPEC §4), shared with the original tofu.
        ///
        /// `0` is [`Status::Success`]; every other value names a condition. A non-zero
        /// status is not always a failure: [`Status::ChannelClosed`] after your own
        /// `ByeRequest` is the expected outcome.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Status {
            /// The operation succeeded.
            #[default]
            Success = 0,
            $( $(#[$doc])* $name = $raw, )*
        }

        /// Every non-success [`Status`] as an error value.
        ///
        /// Converts both ways with [`Status`]: [`Error::status`] and
        /// `Error::try_from(status)` / [`Status::error`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
        pub enum Error {
            $( $(#[$doc])* #[error($text)] $name, )*
        }

        impl Status {
            /// Reads a raw status byte; any unknown value (≥ 31) reads as
            /// [`Status::UnknownError`].
            pub const fn from_raw(raw: u8) -> Status {
                match raw {
                    0 => Status::Success,
                    $( $raw => Status::$name, )*
                    _ => Status::UnknownError,
                }
            }

            /// The error for this status, or `None` for [`Status::Success`].
            pub const fn error(self) -> Option<Error> {
                match self {
                    Status::Success => None,
                    $( Status::$name => Some(Error::$name), )*
                }
            }

            /// The snake_case name used by the original tofu (`"channel_closed"`).
            pub const fn name(self) -> &'static str {
                match self {
                    Status::Success => "success",
                    $( Status::$name => $text, )*
                }
            }
        }

        impl Error {
            /// The status this error stands for (never [`Status::Success`]).
            pub const fn status(self) -> Status {
                match self {
                    $( Error::$name => Status::$name, )*
                }
            }
        }
    };
}

statuses! {
    /// The operation is not implemented (yet) on this platform.
    1 => NotImplementedYet, "not_implemented_yet";
    /// A WelcomeRequest/HelloRequest without an address header.
    2 => WrongAddress, "wrong_address";
    /// The operation is not allowed in the current state.
    3 => NotAllowed, "not_allowed";
    /// A message was expected but none was given.
    4 => NullMessage, "null_message";
    /// The message (or a frame from the network) is invalid.
    5 => InvalidMessage, "invalid_message";
    /// The opcode is not a valid operation (10–15) or not allowed here.
    6 => InvalidOpCode, "invalid_op_code";
    /// The text headers are longer than 65535 bytes or malformed.
    7 => InvalidHeadersLen, "invalid_headers_len";
    /// The body is longer than 65535 bytes.
    8 => InvalidBodyLen, "invalid_body_len";
    /// `more` was set on a message that is not Request, Response or Signal.
    9 => InvalidMoreUsage, "invalid_more_usage";
    /// The channel number is not open in this engine (or 0 where not allowed).
    10 => InvalidChannelNumber, "invalid_channel_number";
    /// The channel belongs to another channel group.
    11 => InvalidChannelGroup, "invalid_channel_group";
    /// A response-role message was posted with message_id 0.
    12 => InvalidMessageId, "invalid_message_id";
    /// The address could not be parsed or is not usable.
    13 => InvalidAddress, "invalid_address";
    /// The Unix-domain socket path does not exist.
    14 => UdsPathNotFound, "uds_path_not_found";
    /// Notifications are disabled.
    15 => NotificationDisabled, "notification_disabled";
    /// A notification could not be delivered.
    16 => NotificationFailed, "notification_failed";
    /// The peer closed the connection.
    17 => PeerDisconnected, "peer_disconnected";
    /// The connection failed.
    18 => CommunicationFailed, "communication_failed";
    /// The message pool is empty (reading is paused until messages come back).
    19 => PoolEmpty, "pool_empty";
    /// Memory could not be allocated.
    20 => AllocationFailed, "allocation_failed";
    /// A message put into the receive queue by `update_receiver`.
    21 => ReceiverUpdate, "receiver_update";
    /// The channel is closed (the normal outcome of a Bye handshake).
    22 => ChannelClosed, "channel_closed";
    /// The engine has been shut down.
    23 => ShutdownStarted, "shutdown_started";
    /// Connecting to the peer failed.
    24 => ConnectFailed, "connect_failed";
    /// Listening on the address failed.
    25 => ListenFailed, "listen_failed";
    /// Accepting a connection failed.
    26 => AcceptFailed, "accept_failed";
    /// Writing to the socket failed.
    27 => SendFailed, "send_failed";
    /// Reading from the socket failed.
    28 => RecvFailed, "recv_failed";
    /// A socket option could not be set.
    29 => SetsockoptFailed, "setsockopt_failed";
    /// Processing failed.
    30 => ProcessingFailed, "processing_failed";
    /// An unknown error (also any raw status ≥ 31).
    31 => UnknownError, "unknown_error";
}

impl Status {
    /// `true` for [`Status::Success`].
    pub const fn is_success(self) -> bool {
        matches!(self, Status::Success)
    }

    /// The raw byte of this status.
    pub const fn raw(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Status> for u8 {
    fn from(s: Status) -> u8 {
        s as u8
    }
}

impl From<u8> for Status {
    fn from(raw: u8) -> Status {
        Status::from_raw(raw)
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        e.status()
    }
}

impl TryFrom<Status> for Error {
    /// The status was [`Status::Success`].
    type Error = Status;

    fn try_from(s: Status) -> Result<Error, Status> {
        s.error().ok_or(s)
    }
}

/// A rejected [`post`](crate::ChannelGroup::post): the reason and the message, given back.
///
/// Nothing is lost: the caller owns the message again and may fix and re-post it.
#[derive(Debug)]
pub struct PostError {
    /// Why the message was rejected.
    pub error: Error,
    /// The message, unchanged.
    pub message: Message,
}

impl PostError {
    /// Takes the message back, dropping the error.
    pub fn into_message(self) -> Message {
        self.message
    }
}

impl fmt::Display for PostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "post rejected: {}", self.error)
    }
}

impl std::error::Error for PostError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<PostError> for Error {
    fn from(e: PostError) -> Error {
        e.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_matches_the_spec() {
        assert_eq!(Status::Success as u8, 0);
        assert_eq!(Status::WrongAddress as u8, 2);
        assert_eq!(Status::InvalidMessage as u8, 5);
        assert_eq!(Status::InvalidAddress as u8, 13);
        assert_eq!(Status::PoolEmpty as u8, 19);
        assert_eq!(Status::ChannelClosed as u8, 22);
        assert_eq!(Status::ShutdownStarted as u8, 23);
        assert_eq!(Status::ConnectFailed as u8, 24);
        assert_eq!(Status::UnknownError as u8, 31);
    }

    #[test]
    fn raw_round_trip_and_unknown() {
        for raw in 0..=31u8 {
            assert_eq!(Status::from_raw(raw) as u8, raw);
        }
        for raw in 31..=255u8 {
            assert_eq!(Status::from_raw(raw), Status::UnknownError);
        }
    }

    #[test]
    fn error_conversions() {
        assert_eq!(Status::Success.error(), None);
        assert_eq!(Error::try_from(Status::Success), Err(Status::Success));
        for raw in 1..=31u8 {
            let s = Status::from_raw(raw);
            let e = Error::try_from(s).unwrap();
            assert_eq!(e.status(), s);
            assert_eq!(Status::from(e), s);
            assert_eq!(e.to_string(), s.name());
        }
        assert_eq!(Error::ChannelClosed.to_string(), "channel_closed");
    }
}
