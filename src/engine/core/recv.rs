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
    /// frame that waits for the rest before it takes a message.
    stash: Vec<u8>,
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
        !self.stash.is_empty() || self.decoder.needs_message()
    }

    /// Brings the budget up to date with the stash.
    pub(crate) fn settle(&mut self, budget: &mut StashBudget) {
        budget.update(self.charged, self.stash.len());
        self.charged = self.stash.len();
    }

    /// Gives the stash's share of the budget back (the channel closed).
    pub(crate) fn release(&mut self, budget: &mut StashBudget) {
        budget.update(self.charged, 0);
        self.charged = 0;
        self.stash = Vec::new();
    }

    /// With a frame held back (its header complete, no message yet): the
    /// bytes still to come before it is complete.
    pub(crate) fn rest_of_held_frame(&self) -> Option<usize> {
        let rest = self.decoder.pending_len()?;
        Some(rest.saturating_sub(self.stash.len()))
    }

    /// Bytes held in the stash.
    #[cfg(any(test, feature = "unstable"))]
    pub(crate) fn stashed(&self) -> usize {
        self.stash.len()
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
        match self.decoder.pending_len() {
            Some(rest) if self.stash.len() + bytes.len() < rest => {
                self.stash.extend_from_slice(bytes);
                Decode::Continue
            }
            Some(_) => {
                let mut all = std::mem::take(&mut self.stash);
                all.extend_from_slice(bytes);
                self.decode(&all, pool, on_frame)
            }
            None => self.decode(bytes, pool, on_frame),
        }
    }

    /// Decodes the backlog (after the pool refilled); the header may be all
    /// there is, with nothing left to read.
    pub(crate) fn resume(
        &mut self,
        pool: &Pool,
        on_frame: &mut dyn FnMut(Message) -> bool,
    ) -> Decode {
        let stash = std::mem::take(&mut self.stash);
        self.decode(&stash, pool, on_frame)
    }

    /// Decodes every complete frame in `input`; on a dry pool the rest is
    /// stashed.
    fn decode(
        &mut self,
        mut input: &[u8],
        pool: &Pool,
        on_frame: &mut dyn FnMut(Message) -> bool,
    ) -> Decode {
        let reserve = partial_reserve(pool.capacity());
        // Set once the whole frame is known to be in `input`: then any free
        // message will do, the reserve included.
        let complete = Cell::new(false);
        loop {
            let step = self.decoder.decode(&mut input, &mut || {
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
                Ok(Decoded::NeedBytes) => return Decode::Continue,
                Ok(Decoded::NeedMessage) => {
                    let rest = self.decoder.pending_len().unwrap_or(0);
                    if input.len() >= rest {
                        if !complete.replace(true) && !pool.is_empty() {
                            continue;
                        }
                    } else if !pool.is_empty() {
                        // Not all here: wait for the rest without a message.
                        self.stash_rest(input);
                        return Decode::Continue;
                    }
                    // Needs memory: arm the pool's notification (a message
                    // returned from now on wakes the I/O thread), then look
                    // again — one may have come back meanwhile.
                    pool.arm();
                    if pool.is_empty() {
                        self.stash_rest(input);
                        return Decode::Starved;
                    }
                    // A message came back meanwhile: decode on.
                }
                Err(e) => return Decode::Invalid(e),
            }
        }
    }

    fn stash_rest(&mut self, input: &[u8]) {
        self.stash.clear();
        self.stash.extend_from_slice(input);
    }
}
