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
use std::collections::VecDeque;

use crate::message::{Allocation, Message, Pool};
use crate::wire::{Decoded, Decoder, FrameError, HEADER_LEN, fill_whole};

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

/// What the channel makes of a decoded frame, which waits at the back of
/// the output queue (filled there, in place: a filled message is not
/// moved again on its way in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Delivered; decoding goes on.
    Keep,
    /// Delivered, and decoding stops (the channel closes).
    KeepAndStop,
    /// Not delivered (it leaves the queue again), and decoding stops.
    DropAndStop,
}

/// `msg` joins the back of `out`, where `on_frame` judges it (and may
/// change it); `false`: decoding stops.
fn deliver<F: FnMut(&mut Message) -> Verdict>(
    out: &mut VecDeque<Message>,
    msg: Message,
    on_frame: &mut F,
) -> bool {
    out.push_back(msg);
    judge(out, on_frame)
}

/// `on_frame` judges the frame at the back of `out`; `false`: decoding
/// stops.
fn judge<F: FnMut(&mut Message) -> Verdict>(out: &mut VecDeque<Message>, on_frame: &mut F) -> bool {
    let msg = out.back_mut().expect("a frame waits");
    match on_frame(msg) {
        Verdict::Keep => true,
        Verdict::KeepAndStop => false,
        Verdict::DropAndStop => {
            out.pop_back();
            false
        }
    }
}

/// Decoder plus stash.
#[derive(Default)]
pub(crate) struct Receiver {
    decoder: Decoder,
    /// Bytes read but not decoded because the pool ran dry, or the part of a
    /// frame that waits for the rest before it takes a message: those from
    /// `start` to `end`. The decoded prefix is dropped only when bytes are
    /// added, so resuming after each refill costs no copy (a small pool
    /// refills many times per read). Its length is how much of it is
    /// initialised (at least `end`): a large rest of a read is not copied
    /// here, the read buffer itself becomes the stash and the reactor reads
    /// on into this one ([`Receiver::read`]), which must be initialised.
    stash: Vec<u8>,
    start: usize,
    end: usize,
    /// Stash bytes counted in the engine's [`StashBudget`].
    charged: usize,
    /// Pool messages taken together for the whole frames of one decode
    /// (one lock instead of one per frame); always empty between calls.
    spare: Vec<Message>,
}

/// The most messages one decode takes from the pool at once.
const SPARE_MAX: usize = 64;

/// The smallest rest of a read that is stashed by taking the read buffer
/// (swapping it with the stash) rather than by copying it.
const SWAP_MIN: usize = 4 * 1024;

/// The smallest body read straight into its message
/// ([`Receiver::body_space`]): a read of its own per frame costs less than
/// copying that much out of the read buffer.
pub(crate) const DIRECT_MIN: usize = 16 * 1024;

/// How many whole frames lie at the front of `input` (by their length
/// fields; their headers are checked when they are decoded), at most
/// [`SPARE_MAX`].
fn whole_frames(input: &[u8]) -> usize {
    let mut at = 0;
    let mut n = 0;
    while n < SPARE_MAX {
        let Some(h) = input.get(at..at + HEADER_LEN) else {
            break;
        };
        let len = HEADER_LEN
            + usize::from(u16::from_be_bytes([h[12], h[13]]))
            + usize::from(u16::from_be_bytes([h[14], h[15]]));
        if input.len() - at < len {
            break;
        }
        at += len;
        n += 1;
    }
    n
}

impl Receiver {
    /// A frame is being filled: reading needs no new message.
    pub(crate) fn has_message(&self) -> bool {
        self.decoder.has_message()
    }

    /// Stashed bytes or a complete header wait to be decoded.
    pub(crate) fn has_backlog(&self) -> bool {
        self.end > self.start || self.decoder.needs_message()
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
        self.end = 0;
    }

    /// With a frame held back (its header complete, no message yet): the
    /// bytes still to come before it is complete.
    pub(crate) fn rest_of_held_frame(&self) -> Option<usize> {
        let rest = self.decoder.pending_len()?;
        Some(rest.saturating_sub(self.live()))
    }

    /// Stashed bytes not decoded yet.
    fn live(&self) -> usize {
        self.end - self.start
    }

    /// Adds `bytes` behind the stashed ones (the decoded prefix dropped
    /// first), into initialised room where there is some.
    fn append(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.stash.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let end = self.end + bytes.len();
        if end <= self.stash.len() {
            self.stash[self.end..end].copy_from_slice(bytes);
        } else {
            self.stash.truncate(self.end);
            self.stash.extend_from_slice(bytes);
        }
        self.end = end;
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

    /// The missing part of a large body (of at least [`DIRECT_MIN`] bytes)
    /// of the frame being filled, for the socket to fill in place; `None`
    /// otherwise. Report what went in with [`Receiver::read_direct`].
    pub(crate) fn body_space(&mut self) -> Option<&mut [u8]> {
        let large = self.decoder.body_len().is_some_and(|n| n >= DIRECT_MIN);
        if !large || self.live() > 0 || self.decoder.body_remaining() == 0 {
            return None;
        }
        Some(self.decoder.body_space())
    }

    /// `n` bytes were read into [`body_space`](Receiver::body_space), and
    /// `len` after them into `buf` (as [`read`](Receiver::read) takes them).
    pub(crate) fn read_direct<F: FnMut(&mut Message) -> Verdict>(
        &mut self,
        n: usize,
        buf: &mut Vec<u8>,
        len: usize,
        pool: &Pool,
        out: &mut VecDeque<Message>,
        on_frame: &mut F,
    ) -> Decode {
        if let Some(msg) = self.decoder.body_filled(n) {
            if !deliver(out, msg, on_frame) {
                return Decode::Stop;
            }
        }
        if len == 0 {
            return Decode::Continue;
        }
        self.read(buf, len, pool, out, on_frame)
    }

    /// The first `len` bytes of `buf` were just read from the socket.
    /// Each complete frame joins the back of `out`, where `on_frame`
    /// judges it (and may stop decoding). A
    /// large rest that must wait (the pool ran dry) is not copied: `buf`
    /// becomes the stash, and `buf` is given the stash's old memory
    /// instead, as long as `buf` was (initialised: no zeroing once every
    /// buffer has been that long).
    pub(crate) fn read<F: FnMut(&mut Message) -> Verdict>(
        &mut self,
        buf: &mut Vec<u8>,
        len: usize,
        pool: &Pool,
        out: &mut VecDeque<Message>,
        on_frame: &mut F,
    ) -> Decode {
        // A frame whose message is held back collects in the stash until it
        // is complete.
        let held = self
            .decoder
            .pending_len()
            .is_some_and(|rest| self.live() + len < rest);
        if !held && self.live() == 0 {
            // Nothing stashed (the common case): decode in place, and stash
            // only what is left over.
            self.start = 0;
            self.end = 0;
            let mut input = &buf[..len];
            let d = self.decode(&mut input, pool, out, on_frame);
            let left = input.len();
            if matches!(d, Decode::Continue | Decode::Starved) && left > 0 {
                if left >= SWAP_MIN {
                    let size = buf.len();
                    std::mem::swap(&mut self.stash, buf);
                    self.start = len - left;
                    self.end = len;
                    buf.resize(size, 0);
                } else {
                    let rest = len - left;
                    self.append(&buf[rest..len]);
                }
            }
            return d;
        }
        self.append(&buf[..len]);
        if held {
            return Decode::Continue;
        }
        self.decode_stash(pool, out, on_frame)
    }

    /// Decodes the backlog (after the pool refilled); the header may be all
    /// there is, with nothing left to read.
    pub(crate) fn resume<F: FnMut(&mut Message) -> Verdict>(
        &mut self,
        pool: &Pool,
        out: &mut VecDeque<Message>,
        on_frame: &mut F,
    ) -> Decode {
        self.decode_stash(pool, out, on_frame)
    }

    /// Decodes from the stash; what stays is still stashed (from `start`).
    fn decode_stash<F: FnMut(&mut Message) -> Verdict>(
        &mut self,
        pool: &Pool,
        out: &mut VecDeque<Message>,
        on_frame: &mut F,
    ) -> Decode {
        let stash = std::mem::take(&mut self.stash);
        let mut input = &stash[self.start..self.end];
        let d = self.decode(&mut input, pool, out, on_frame);
        let left = input.len();
        self.stash = stash;
        if matches!(d, Decode::Continue | Decode::Starved) && left > 0 {
            self.start = self.end - left;
        } else {
            self.start = 0;
            self.end = 0;
        }
        d
    }

    /// Decodes every complete frame in `input`. On `Continue` and `Starved`,
    /// `input` holds what must wait in the stash (nothing, a frame still
    /// arriving, or what a dry pool left undecoded).
    fn decode<F: FnMut(&mut Message) -> Verdict>(
        &mut self,
        input: &mut &[u8],
        pool: &Pool,
        out: &mut VecDeque<Message>,
        on_frame: &mut F,
    ) -> Decode {
        let mut spare = std::mem::take(&mut self.spare);
        let d = self.decode_with_spare(input, pool, (out, on_frame), &mut spare);
        if !spare.is_empty() {
            // Taken for frames that did not come to be decoded (the
            // channel stops): back together.
            pool.put_many(&mut spare);
        }
        self.spare = spare;
        d
    }

    fn decode_with_spare<F: FnMut(&mut Message) -> Verdict>(
        &mut self,
        input: &mut &[u8],
        pool: &Pool,
        (out, on_frame): (&mut VecDeque<Message>, &mut F),
        spare: &mut Vec<Message>,
    ) -> Decode {
        let reserve = partial_reserve(pool.capacity());
        // Set once the whole frame is known to be in `input`: then any free
        // message will do, the reserve included.
        let complete = Cell::new(false);
        // Whole frames ahead not yet given a message: those take theirs
        // together, any free one (they are complete).
        let mut whole = match self.decoder.pending_len() {
            // A header waits for its message (the pool ran dry): its frame
            // first, if all here.
            Some(rest) if input.len() >= rest => 1 + whole_frames(&input[rest..]),
            Some(_) => 0,
            None if self.decoder.is_idle() => whole_frames(input),
            None => 0,
        };
        let mut alloc = || {
            if let Some(m) = spare.pop() {
                return Some(m);
            }
            if whole > 1 {
                let got = pool.get_many_for_decode(Allocation::PoolOnly, whole, spare);
                whole -= got;
                if let Some(m) = spare.pop() {
                    return Some(m);
                }
            }
            whole = whole.saturating_sub(1);
            if complete.get() || pool.len() > reserve {
                pool.get_for_decode(Allocation::PoolOnly)
            } else {
                None
            }
        };
        loop {
            if input.is_empty() && self.decoder.is_idle() {
                // Everything decoded, at a frame boundary (the usual end).
                return Decode::Continue;
            }
            let step = match self.decoder.whole_frame_ahead(input) {
                // The common case, a whole frame at a boundary: its message
                // joins `out` as it came from the pool and is filled there.
                Ok(Some(fh)) => match alloc() {
                    Some(msg) => {
                        complete.set(false);
                        out.push_back(msg);
                        fill_whole(&fh, input, out.back_mut().expect("just pushed"));
                        if !judge(out, on_frame) {
                            return Decode::Stop;
                        }
                        continue;
                    }
                    None => {
                        self.decoder.hold(fh, input);
                        Ok(Decoded::NeedMessage)
                    }
                },
                Ok(None) => self.decoder.decode(input, &mut alloc),
                Err(e) => Err(e),
            };
            match step {
                Ok(Decoded::Frame(msg)) => {
                    complete.set(false);
                    if !deliver(out, msg, on_frame) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;

    fn keep(_: &mut Message) -> Verdict {
        Verdict::Keep
    }

    fn frame(id: u64, body: &[u8]) -> Vec<u8> {
        let mut m = Message::new();
        m.header.proto.opcode = crate::message::OpCode::Signal;
        m.header.message_id = id;
        m.body.extend_from_slice(body);
        let mut v = Vec::new();
        wire::encode_to_vec(&m, &mut v).unwrap();
        v
    }

    #[test]
    fn whole_frames_counts_complete_frames_only() {
        let mut bytes = Vec::new();
        for i in 0..5u8 {
            bytes.extend(frame(u64::from(i), &vec![i; usize::from(i) * 7]));
        }
        assert_eq!(whole_frames(&bytes), 5);
        assert_eq!(whole_frames(&bytes[..bytes.len() - 1]), 4);
        assert_eq!(whole_frames(&bytes[..HEADER_LEN - 1]), 0);
        assert_eq!(whole_frames(&[]), 0);
        let many: Vec<u8> = (0..100).flat_map(|i| frame(i, b"x")).collect();
        assert_eq!(whole_frames(&many), SPARE_MAX);
    }

    /// The messages taken together for a read's frames all go to frames
    /// or back to the pool: when the handler stops after the second frame,
    /// the pool holds everything the two delivered frames do not.
    #[test]
    fn messages_taken_for_frames_not_decoded_go_back() {
        let pool = Pool::new(8, 8);
        let mut r = Receiver::default();
        let bytes: Vec<u8> = (1..=6).flat_map(|i| frame(i, b"body")).collect();
        let mut got = VecDeque::new();
        let len = bytes.len();
        let mut seen = 0;
        let d = r.read(&mut bytes.clone(), len, &pool, &mut got, &mut |_| {
            seen += 1;
            if seen < 2 {
                Verdict::Keep
            } else {
                Verdict::KeepAndStop
            }
        });
        assert_eq!(d, Decode::Stop);
        assert_eq!(got.len(), 2);
        assert_eq!(pool.len(), 6, "the four taken for the rest came back");
        assert!(r.spare.is_empty());
        drop(got);
        assert_eq!(pool.len(), 8);
    }

    /// A large rest of a read waits by taking the read buffer as the stash
    /// (no copy): the caller gets other memory of the same length back, and
    /// every frame still arrives, in order, as messages come back; bytes
    /// read while the rest waits go behind it.
    #[test]
    fn a_large_rest_takes_the_read_buffer_and_loses_nothing() {
        let pool = Pool::new(4, 4);
        let mut r = Receiver::default();
        let bytes: Vec<u8> = (1..=1000).flat_map(|i| frame(i, b"0123456789")).collect();
        assert!(bytes.len() > SWAP_MIN);
        let mut buf = bytes.clone();
        buf.resize(64 * 1024, 0);
        let read_buf = buf.as_ptr();
        let mut ids = Vec::new();
        let mut got = VecDeque::new();
        let d = r.read(&mut buf, bytes.len(), &pool, &mut got, &mut keep);
        assert_eq!(d, Decode::Starved);
        assert_eq!(buf.len(), 64 * 1024, "a buffer as long comes back");
        assert_ne!(buf.as_ptr(), read_buf, "the read buffer became the stash");
        // Four frames decoded, the fifth's header waits for a message.
        let flen = frame(1, b"0123456789").len();
        assert_eq!(r.stashed(), bytes.len() - 4 * flen - HEADER_LEN);
        // More bytes arrive behind the stashed ones (a read, reusing `buf`).
        let more: Vec<u8> = (1001..=1003).flat_map(|i| frame(i, b"x")).collect();
        ids.extend(got.drain(..).map(|m| m.header.message_id));
        buf[..more.len()].copy_from_slice(&more);
        r.read(&mut buf, more.len(), &pool, &mut got, &mut keep);
        for _ in 0..1000 {
            ids.extend(got.drain(..).map(|m| m.header.message_id));
            if !r.has_backlog() {
                break;
            }
            r.resume(&pool, &mut got, &mut keep);
        }
        ids.extend(got.drain(..).map(|m| m.header.message_id));
        assert_eq!(ids, (1..=1003).collect::<Vec<u64>>());
        assert_eq!(r.stashed(), 0);
        assert_eq!(pool.len(), 4);
    }

    /// A pool with fewer free messages than whole frames: as many frames as
    /// messages are decoded (the reserve included: they are complete), the
    /// rest wait in the stash, and decode once messages come back.
    #[test]
    fn a_read_larger_than_the_pool_decodes_what_it_can_then_resumes() {
        let pool = Pool::new(4, 4);
        let mut r = Receiver::default();
        let bytes: Vec<u8> = (1..=10).flat_map(|i| frame(i, b"0123456789")).collect();
        let mut got = VecDeque::new();
        let len = bytes.len();
        let d = r.read(&mut bytes.clone(), len, &pool, &mut got, &mut keep);
        assert_eq!(d, Decode::Starved);
        assert_eq!(got.len(), 4);
        for round in 0..3 {
            let ids: Vec<u64> = got.drain(..).map(|m| m.header.message_id).collect();
            assert_eq!(ids.first(), Some(&(round * 4 + 1)));
            let d = r.resume(&pool, &mut got, &mut keep);
            if round < 1 {
                assert_eq!(d, Decode::Starved);
            }
        }
        assert!(got.is_empty());
        assert!(!r.has_backlog());
        assert!(r.spare.is_empty());
        assert_eq!(pool.len(), 4);
    }
}
