//! What a [`Reconnect`](super::Reconnect) tells the application:
//! [`ReconnectEvent`], written into and read from messages.

use std::time::Duration;

use crate::error::{Error, Status};
use crate::message::{Message, OpCode};

/// What a [`Reconnect`](super::Reconnect) tells the application, as a message in its group
/// ([`Reconnect::event`](super::Reconnect::event) reads it back).
///
/// Each is a Signal put in the group's receive queue with
/// [`ChannelGroup::update_receiver`](crate::ChannelGroup::update_receiver) (status `receiver_update`, origin
/// `Application`, never sent anywhere), in order with everything else the
/// group receives. Its `message_id` is the helper's [`id`](super::Reconnect::id),
/// its channel number the channel concerned (0 when none), and its text
/// headers say what happened: `~reconnect` (`attempt`, `connected`,
/// `disconnected`, `gave_up`, `stopped`), `~attempt`, `~delay_us`, `~cause`
/// (a status name, as in a `channel_closed` report) and `~was_connected`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReconnectEvent {
    /// A connect attempt started on `channel`: the `attempt`th since the
    /// last connection (1 = the first), after waiting `waited`.
    Attempt {
        /// 1 for the first attempt of a series.
        attempt: u32,
        /// The new channel's number.
        channel: u16,
        /// How long the helper waited before this attempt.
        waited: Duration,
    },
    /// The server answered: `channel` is connected (after `attempt`
    /// attempts). [`Reconnect::post`](super::Reconnect::post) sends on it from now on.
    Connected {
        /// The attempt that succeeded.
        attempt: u32,
        /// The connected channel's number (new on every connection).
        channel: u16,
    },
    /// `channel` closed — an attempt that failed, or a connection lost —
    /// and the helper tries again in `retry_in` (`None`: it does not; a
    /// [`GaveUp`](Self::GaveUp) or [`Stopped`](Self::Stopped) follows).
    Disconnected {
        /// The channel that closed (forget its number).
        channel: u16,
        /// Whether it had been connected (`false`: the attempt failed).
        was_connected: bool,
        /// How it ended, as in its `channel_closed` report
        /// ([`Message::close_cause`]); `None` for an orderly end. A
        /// server that did not answer within the handshake timeout reads
        /// `communication_failed`.
        cause: Option<Status>,
        /// The wait before the next attempt.
        retry_in: Option<Duration>,
    },
    /// `attempts` attempts in a row failed
    /// ([`ReconnectOptions::max_attempts`](super::ReconnectOptions::max_attempts)): the helper stopped.
    GaveUp {
        /// Failed attempts in a row.
        attempts: u32,
    },
    /// The helper stopped on request ([`Reconnect::stop`](super::Reconnect::stop)); its channel, if
    /// it had one, is closed.
    Stopped,
}

const EVENT: &str = "~reconnect";
const ATTEMPT: &str = "~attempt";
const DELAY: &str = "~delay_us";
const CAUSE: &str = "~cause";
const WAS_CONNECTED: &str = "~was_connected";

impl ReconnectEvent {
    /// Reads the event a [`Reconnect`](super::Reconnect) put in its group, with the id of the
    /// helper that sent it; `None` for every other message.
    ///
    /// ```
    /// let msg = tofu::Message::new();
    /// assert_eq!(tofu::ReconnectEvent::from_message(&msg), None);
    /// ```
    pub fn from_message(msg: &Message) -> Option<(u64, ReconnectEvent)> {
        if msg.status() != Status::ReceiverUpdate
            || msg.is_from_engine()
            || msg.opcode() != OpCode::Signal
        {
            return None;
        }
        let h = &msg.text_headers;
        let number = |name: &str| h.get(name).and_then(|v| v.parse::<u64>().ok());
        let attempt = number(ATTEMPT).unwrap_or(0).min(u32::MAX as u64) as u32;
        let delay = number(DELAY).map(Duration::from_micros);
        let channel = msg.channel_number();
        let event = match h.get(EVENT)? {
            "attempt" => ReconnectEvent::Attempt {
                attempt,
                channel,
                waited: delay.unwrap_or_default(),
            },
            "connected" => ReconnectEvent::Connected { attempt, channel },
            "disconnected" => ReconnectEvent::Disconnected {
                channel,
                was_connected: h.get(WAS_CONNECTED) == Some("true"),
                cause: h.get(CAUSE).map(status_named),
                retry_in: delay,
            },
            "gave_up" => ReconnectEvent::GaveUp { attempts: attempt },
            "stopped" => ReconnectEvent::Stopped,
            _ => return None,
        };
        Some((msg.header.message_id, event))
    }

    /// Writes the event into `msg` (a cleared message).
    pub(super) fn write(&self, id: u64, msg: &mut Message) -> Result<(), Error> {
        msg.header.proto.opcode = OpCode::Signal;
        msg.header.message_id = id;
        let h = &mut msg.text_headers;
        let micros = |d: &Duration| d.as_micros().min(u64::MAX as u128).to_string();
        match self {
            ReconnectEvent::Attempt {
                attempt,
                channel,
                waited,
            } => {
                msg.header.channel_number = *channel;
                h.append(EVENT, "attempt")?;
                h.append(ATTEMPT, &attempt.to_string())?;
                h.append(DELAY, &micros(waited))?;
            }
            ReconnectEvent::Connected { attempt, channel } => {
                msg.header.channel_number = *channel;
                h.append(EVENT, "connected")?;
                h.append(ATTEMPT, &attempt.to_string())?;
            }
            ReconnectEvent::Disconnected {
                channel,
                was_connected,
                cause,
                retry_in,
            } => {
                msg.header.channel_number = *channel;
                h.append(EVENT, "disconnected")?;
                h.append(WAS_CONNECTED, if *was_connected { "true" } else { "false" })?;
                if let Some(cause) = cause {
                    h.append(CAUSE, cause.name())?;
                }
                if let Some(d) = retry_in {
                    h.append(DELAY, &micros(d))?;
                }
            }
            ReconnectEvent::GaveUp { attempts } => {
                h.append(EVENT, "gave_up")?;
                h.append(ATTEMPT, &attempts.to_string())?;
            }
            ReconnectEvent::Stopped => h.append(EVENT, "stopped")?,
        }
        Ok(())
    }
}

fn status_named(name: &str) -> Status {
    (1..=31u8)
        .map(Status::from_raw)
        .find(|s| s.name() == name)
        .unwrap_or(Status::UnknownError)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn events_read_back_as_written() {
        let events = [
            ReconnectEvent::Attempt {
                attempt: 3,
                channel: 7,
                waited: 1234 * Duration::from_micros(1),
            },
            ReconnectEvent::Connected {
                attempt: 3,
                channel: 7,
            },
            ReconnectEvent::Disconnected {
                channel: 7,
                was_connected: true,
                cause: Some(Status::PeerDisconnected),
                retry_in: Some(100 * MS),
            },
            ReconnectEvent::Disconnected {
                channel: 8,
                was_connected: false,
                cause: None,
                retry_in: None,
            },
            ReconnectEvent::GaveUp { attempts: 5 },
            ReconnectEvent::Stopped,
        ];
        for e in events {
            let mut m = Message::new();
            e.write(42, &mut m).unwrap();
            m.header.status = Status::ReceiverUpdate as u8; // as update_receiver does
            assert_eq!(ReconnectEvent::from_message(&m), Some((42, e)));
        }
    }
}
