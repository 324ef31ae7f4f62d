//! The write-through path (SPEC §7): a batch posted inline writes its
//! small frames on an idle channel straight from the engine's write buffer,
//! without the channel's send queue. The protocol side (which message may
//! go, what a partial write leaves queued) is the core's
//! ([`ChannelCore::encode_through`](super::super::core::channel::ChannelCore::encode_through),
//! [`ChannelCore::handle_written_through`](super::super::core::channel::ChannelCore::handle_written_through));
//! this carries out the system call.

use std::io;

use tracing::debug;

use super::super::core::End;
use super::super::slab::Key;
use super::io::end_of;
use super::{Reactor, stream_of};
use crate::message::Message;
use crate::sys;

/// Written messages the write-through runs of a batch keep before they give
/// them back to the pool on the way (one lock per batch of them).
const RECYCLE_AT: usize = 256;

impl Reactor {
    /// The write-through path of a batch posted inline: the message at the
    /// front of `msgs` and those after it on the same channel, as long as
    /// they are small frames and the channel idle ([`ChannelCore::may_write_through`](super::super::core::channel::ChannelCore::may_write_through)),
    /// are encoded straight into the engine's write buffer and written
    /// with one system call per [`sys::Stream::write_through_max`] bytes —
    /// no send queue, no vectored slices. What the socket did not take is
    /// queued, in order, as if posted (the queue then writes it when the
    /// socket has room), and the run ends there; a failed write closes the
    /// channel, which gives those messages back. The messages taken leave
    /// `msgs` (`posts` counts them); none are taken when the path does not
    /// apply, or when the channel was written through earlier in the same
    /// inline batch, so that the rest of its messages go out together from
    /// its queue: then the front message takes the ordinary path.
    pub(super) fn write_through(
        &mut self,
        group: u32,
        msgs: &mut std::vec::Drain<'_, Message>,
        posts: &mut u64,
    ) {
        let Some(number) = msgs.as_slice().first().map(|m| m.header.channel_number) else {
            return;
        };
        let Some(key) = self.through_key(group, number) else {
            return;
        };
        let s = stream_of(&mut self.slab, key).expect("checked by through_key");
        if s.through_batch == self.through_batch {
            // Written through earlier in this batch: the rest of its
            // messages are queued and go out together.
            return;
        }
        s.through_batch = self.through_batch;
        let mut buf = std::mem::take(&mut self.write_buf);
        let mut held = std::mem::take(&mut self.spent);
        buf.clear();
        // One write per turn; a turn ends the run unless the write was
        // only full, the socket took everything and the channel may still
        // be written through.
        loop {
            let s = stream_of(&mut self.slab, key).expect("checked by through_key");
            let sock = s.sock.as_mut().expect("checked by through_key");
            let max = sock.write_through_max();
            let from = held.len();
            let run_over = s.core.encode_write(msgs, &mut buf, &mut held, max);
            let taken = held.len() - from;
            if taken == 0 {
                break;
            }
            *posts += taken as u64;
            // At most one write's worth (64 KiB of frames: 4,096).
            self.shared
                .directory
                .arrived_many(number, u32::try_from(taken).unwrap_or(u32::MAX));
            let result = loop {
                match sock.write_vectored(&[std::io::IoSlice::new(&buf)]) {
                    Ok(0) => break Err(End::Failed),
                    Ok(n) => break Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(0),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        debug!(channel = number, "write failed: {e}");
                        break Err(end_of(&e));
                    }
                }
            };
            let n = result.unwrap_or(0);
            let whole = n == buf.len();
            buf.clear();
            if n == 0 || (sys::SHORT_IO_DRAINS && !whole) {
                s.writable = false;
            }
            let done = s.core.handle_written_through(n, &mut held, from);
            let released = s.core.take_released();
            if s.core.wants_write() && s.writable {
                // A partial write where the selector does not say "full".
                self.dirty.add(key, &mut s.listed);
            }
            self.tally.messages_sent += done as u64;
            self.tally.bytes_sent += n as u64;
            self.tally.write_calls += 1;
            self.release(number, released);
            if held.len() >= RECYCLE_AT {
                // A long run: back to the pool on the way, so that `spent`
                // stays small.
                self.shared.pool.recycle_many(&mut held);
            }
            if let Err(end) = result {
                if let Some(s) = self.stream_mut(key) {
                    let close = s.core.handle_write_failed(end);
                    self.close(key, close);
                }
                break;
            }
            self.deliver_from(key);
            if !whole || run_over || self.through_key(group, number) != Some(key) {
                break;
            }
        }
        self.write_buf = buf;
        // The written messages stay in `spent` until the batch ends
        // ([`post_inline_batch`](Self::post_inline_batch)), and go back to
        // the pool together: a batch of one message for each of many
        // channels otherwise returns them one lock at a time.
        self.spent = held;
    }

    /// The channel `number` of `group`, when a post on it may be written
    /// through: an open stream whose socket is not known to be full.
    /// (A closed number is not in `by_number`, so a zombie never matches.)
    fn through_key(&mut self, group: u32, number: u16) -> Option<Key> {
        let key = *self.by_number.get(&number)?;
        let ch = self.slab.get(key)?;
        if ch.group != group {
            return None;
        }
        let super::State::Stream(s) = &ch.state else {
            return None;
        };
        (s.sock.is_some() && s.writable && s.core.may_write_through()).then_some(key)
    }
}
