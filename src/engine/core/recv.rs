//! The receiving half of a channel: the frame decoder, the stash, and the
//! policy that decides which frame may take a pool message.
//!
//! Bytes come in as the socket gives them; every complete frame is decoded
//! straight into a pool message. When the pool has no message for a frame,
//! the undecoded rest waits in the stash (bounded: at most the frame being
//! decoded plus one read) until messages come back. A frame that has not
//! fully arrived takes a message only while more than the
//! [partial reserve](super::backpressure::partial_reserve) are free; its
//! bytes collect in the stash until it is complete.

use std::cell::Cell;

use crate::message::{Allocation, Message, Pool};
use crate::wire::{Decoded, Decoder, FrameError};

use super::backpressure::{StashBudget, partial_reserve};

/// What decoding some bytes came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decode {
    /// All input consumed (or stashed while the frame completes).
    Continue,
    /// No message for a frame: the rest is stashed and the pool's
    /// notification is armed.
    Starved,
    /// The frame handler asked to stop (the channel closes).
    Stop,
    /// The peer broke the framing.
    Invalid(FrameError),
}

/// Decoder plus stash.
#[derive(Default)]
pub(crate) struct Receiver {
    decoder: Decoder,
    /// Bytes read but not decoded because the pool ran dry, or the part of a
    /// frame that waits for the rest before it takes a message: those from
    /// `start` on. The decoded prefix is dropped only when bytes are added,
    /// so resuming after each refill costs no copy (a small pool refills
    /// many times per read).
    stash: Vec<u8>,
    start: usize,
    /// Stash bytes counted in the engine's [`StashBudget`].
    charged: usize,
}

impl Receiver {
    /// A frame is being filled: reading needs no new message.
    pub(crate) fn has_message(&self) -> bool {
        self.decoder.has_message()
    }

    /// Stashed bytes or a complete header wait to be decoded.
    pub(crate) fn has_backlog(&self) -> bool {
        self.stash.len() > self.start || self.decoder.needs_message()
    }

    /// Brings the budget up to date with the stash (its bytes not decoded
    /// yet; the decoded prefix, at most one read, goes with the next read).
    pub(crate) fn settle(&mut self, budget: &mut StashBudget) {
        budget.update(self.charged, self.live());
        self.charged = self.live();
    }

    /// Gives the stash's share of the budget back (the channel closed).
    pub(crate) fn release(&mut self, budget: &mut StashBudget) {
        budget.update(self.charged, 0);
        self.charged = 0;
        self.stash = Vec::new();
        self.start = 0;
    }

    /// With a frame held back (its header complete, no message yet): the
    /// bytes still to come before it is complete.
    pub(crate) fn rest_of_held_frame(&self) -> Option<usize> {
        let rest = self.decoder.pending_len()?;
        Some(rest.saturating_sub(self.live()))
    }

    /// Stashed bytes not decoded yet.
    fn live(&self) -> usize {
        self.stash.len() - self.start
    }

    /// Bytes held in the stash, not decoded yet.
    #[cfg(any(test, feature = "unstable"))]
    pub(crate) fn stashed(&self) -> usize {
        self.live()
    }

    #[cfg(test)]
    pub(crate) fn stash_capacity(&self) -> usize {
        self.stash.capacity()
    }

    /// Bytes just read from the socket. `on_frame` gets each complete frame
    /// and returns `false` to stop.
    pub(crate) fn read(
        &mut self,
        bytes: &[u8],
        pool: &Pool,
        on_frame: &mut dyn FnMut(Message) -> bool,
    ) -> Decode {
        // A frame whose message is held back collects in the stash until it
        // is complete.
        let held = self
            .decoder
            .pending_len()
            .is_some_and(|rest| self.live() + bytes.len() < rest);
        if !held && self.live() == 0 {
            // Nothing stashed (the common case): decode in place, and stash
            // only what is left over.
            self.stash.clear();
            self.start = 0;
            let mut input = bytes;
            let d = self.decode(&mut input, pool, on_frame);
            if matches!(d, Decode::Continue | Decode::Starved) {
                self.stash.extend_from_slice(input);
            }
            return d;
        }
        // The bytes go behind the stash (its decoded prefix dropped first).
        self.stash.drain(..self.start);
        self.start = 0;
        self.stash.extend_from_slice(bytes);
        if held {
            return Decode::Continue;
        }
        self.decode_stash(pool, on_frame)
    }

    /// Decodes the backlog (after the pool refilled); the header may be all
    /// there is, with nothing left to read.
    pub(crate) fn resume(
        &mut self,
        pool: &Pool,
        on_frame: &mut dyn FnMut(Message) -> bool,
    ) -> Decode {
        self.decode_stash(pool, on_frame)
    }

    /// Decodes from the stash; what stays is still stashed (from `start`).
    fn decode_stash(&mut self, pool: &Pool, on_frame: &mut dyn FnMut(Message) -> bool) -> Decode {
        let stash = std::mem::take(&mut self.stash);
        let mut input = &stash[self.start..];
        let d = self.decode(&mut input, pool, on_frame);
        let left = input.len();
        self.stash = stash;
        if matches!(d, Decode::Continue | Decode::Starved) && left > 0 {
            self.start = self.stash.len() - left;
        } else {
            self.stash.clear();
            self.start = 0;
        }
        d
    }

    /// Decodes every complete frame in `input`. On `Continue` and `Starved`,
    /// `input` holds what must wait in the stash (nothing, a frame still
    /// arriving, or what a dry pool left undecoded).
    fn decode(
        &mut self,
        input: &mut &[u8],
        pool: &Pool,
        on_frame: &mut dyn FnMut(Message) -> bool,
    ) -> Decode {
        let reserve = partial_reserve(pool.capacity());
        // Set once the whole frame is known to be in `input`: then any free
        // message will do, the reserve included.
        let complete = Cell::new(false);
        loop {
            let step = self.decoder.decode(input, &mut || {
                if complete.get() || pool.len() > reserve {
                    pool.get(Allocation::PoolOnly)
                } else {
                    None
                }
            });
            match step {
                Ok(Decoded::Frame(msg)) => {
                    complete.set(false);
                    if !on_frame(msg) {
                        return Decode::Stop;
                    }
                }
                Ok(Decoded::NeedBytes) => {
                    *input = &[];
                    return Decode::Continue;
                }
                Ok(Decoded::NeedMessage) => {
                    let rest = self.decoder.pending_len().unwrap_or(0);
                    if input.len() >= rest {
                        if !complete.replace(true) && !pool.is_empty() {
                            continue;
                        }
                    } else if !pool.is_empty() {
                        // Not all here: wait for the rest without a message.
                        return Decode::Continue;
                    }
                    // Needs memory: grow the pool up to its capacity, or arm
                    // its notification (a message returned from now on
                    // wakes the poller), then look again — one may have
                    // come back meanwhile.
                    if pool.grow() > 0 {
                        continue;
                    }
                    pool.arm();
                    if pool.is_empty() {
                        return Decode::Starved;
                    }
                    // A message came back meanwhile: decode on.
                }
                Err(e) => return Decode::Invalid(e),
            }
        }
    }
}
