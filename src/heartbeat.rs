//! Regular Signals on quiet channels: [`Heartbeat`].
//!
//! Built on the public API only, with no thread: the application's receive
//! loop feeds it ([`Heartbeat::handle`]) and lets it post what is due
//! ([`Heartbeat::poll`], never waiting past [`Heartbeat::timeout`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::engine::ChannelGroup;
use crate::error::{Error, Status};
use crate::message::{Allocation, Message, OpCode, TextHeaders};
use crate::reconnect::Handled;

/// Sends a Signal every `interval` on each channel it is given, so the peer
/// hears from this side even when the application has nothing to say, and
/// swallows the peer's heartbeats.
///
/// A heartbeat is an ordinary Signal from the application (empty body, one
/// text header whose name the application chooses and whose value counts
/// the beats), so any tofu peer — the original Zig tofu too — can send and
/// receive it. Pair it with [`Options::idle_timeout`](crate::Options) on the
/// side that must notice a dead peer: an idle timeout a few intervals long
/// closes a channel whose peer stopped beating (a hung process, a cut
/// link), with `~cause:communication_failed` in its `channel_closed` report.
///
/// Bounded by construction: at most one beat per channel per interval; a
/// beat that `post` refuses (the outgoing queue is full: the channel is busy
/// anyway) is skipped, not queued. A channel leaves the helper when its
/// `channel_closed` report passes through [`handle`](Self::handle), when a
/// post says it is gone, or on [`remove`](Self::remove).
///
/// ```
/// use std::time::{Duration, Instant};
/// use tofu::{Engine, Handled, Heartbeat, Options};
///
/// let engine = Engine::new(Options::default())?;
/// let group = engine.create_group()?;
/// let mut beats = Heartbeat::new(&group, "hb", Duration::from_millis(500))?;
/// # let channel = 1;
/// beats.add(channel); // e.g. on a HelloResponse, or a Reconnect's Connected event
///
/// // The receive loop: wait no longer than the next beat, then let it post.
/// let until = Instant::now() + Duration::from_millis(10);
/// while Instant::now() < until {
///     let wait = beats.timeout().map(|t| t.min(Duration::from_millis(10)));
///     if let Some(msg) = group.wait_receive(wait)? {
///         if let Handled::NotMine(msg) = beats.handle(msg) {
///             // the application's message
/// #           drop(msg);
///         }
///     }
///     beats.poll()?;
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Heartbeat<'g> {
    group: &'g ChannelGroup,
    name: String,
    interval: Duration,
    /// Each channel and when its next beat is due.
    due: BTreeMap<u16, Instant>,
    beats: u64,
}

impl<'g> Heartbeat<'g> {
    /// A helper that beats every `interval` (at least 1 ms) with a Signal
    /// carrying the text header `name`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMessage`] for a name that cannot be a text header
    /// (empty, with `:`, CR or LF) or starts with `~` (reserved for the
    /// engine).
    pub fn new(
        group: &'g ChannelGroup,
        name: &str,
        interval: Duration,
    ) -> Result<Heartbeat<'g>, Error> {
        let name = name.trim_matches([' ', '\t']);
        if name.starts_with('~') {
            return Err(Error::InvalidMessage);
        }
        TextHeaders::new().append(name, "1")?;
        Ok(Heartbeat {
            group,
            name: name.to_owned(),
            interval: interval.max(Duration::from_millis(1)),
            due: BTreeMap::new(),
            beats: 0,
        })
    }

    /// Beats on `channel` from now on, the first beat one interval from now.
    pub fn add(&mut self, channel: u16) {
        self.due.insert(channel, Instant::now() + self.interval);
    }

    /// Stops beating on `channel`; whether it was beating.
    pub fn remove(&mut self, channel: u16) -> bool {
        self.due.remove(&channel).is_some()
    }

    /// The channels beating now, in order.
    pub fn channels(&self) -> impl Iterator<Item = u16> + '_ {
        self.due.keys().copied()
    }

    /// Beats posted so far, on all channels.
    pub fn beats(&self) -> u64 {
        self.beats
    }

    /// Whether `msg` is a heartbeat from a peer (a Signal from the
    /// application carrying this helper's header).
    pub fn is_heartbeat(&self, msg: &Message) -> bool {
        msg.is_from_application()
            && msg.status() == Status::Success
            && msg.opcode() == OpCode::Signal
            && msg.text_headers.get(&self.name).is_some()
    }

    /// Looks at a message the application received: a peer's heartbeat, or
    /// one of this helper's own given back by the engine at a close, is
    /// kept; everything else comes back — a `channel_closed` report too,
    /// after the helper forgot its channel.
    pub fn handle(&mut self, msg: Message) -> Handled {
        if self.is_heartbeat(&msg) {
            return Handled::Mine;
        }
        if msg.is_from_engine() && msg.opcode() == OpCode::Signal {
            if msg.status() == Status::ChannelClosed && msg.text_headers.get(&self.name).is_none() {
                self.due.remove(&msg.channel_number());
            } else if msg.text_headers.get(&self.name).is_some() {
                return Handled::Mine; // our beat, given back
            }
        }
        Handled::NotMine(msg)
    }

    /// How long the application may wait before it must call
    /// [`poll`](Self::poll) (`None`: no channel to beat on).
    pub fn timeout(&self) -> Option<Duration> {
        self.deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// When the next beat is due, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// Posts the beats that are due.
    ///
    /// # Errors
    ///
    /// [`Error::ShutdownStarted`] once the engine shut down.
    pub fn poll(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        let mut gone = Vec::new();
        for (&channel, due) in self.due.iter_mut() {
            if *due > now {
                continue;
            }
            // The next beat counts from now: a late loop does not burst.
            *due = now + self.interval;
            let mut beat: Message = self
                .group
                .engine()
                .get(Allocation::Always)?
                .unwrap_or_default();
            beat.header.channel_number = channel;
            beat.header.proto.opcode = OpCode::Signal;
            let count = (self.beats + 1).to_string();
            beat.text_headers.append(&self.name, &count)?;
            match self.group.post(beat) {
                Ok(_) => self.beats += 1,
                Err(e) => match e.error {
                    Error::ShutdownStarted => return Err(Error::ShutdownStarted),
                    Error::InvalidChannelNumber | Error::InvalidChannelGroup => gone.push(channel),
                    // Full outgoing queue: skipped, not queued.
                    _ => {}
                },
            }
        }
        for channel in gone {
            self.due.remove(&channel);
        }
        Ok(())
    }
}
