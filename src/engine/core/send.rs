//! The send queue of one channel: frames waiting to be written, the write
//! cursor into the front one, and the slices of a vectored write.
//!
//! Large bodies are never copied: each queued message keeps its buffers and
//! its 16 header bytes, encoded once when it was posted, and a write hands
//! the kernel borrowed slices of them ([`wire::frame_slices`]). Small frames
//! at the front are copied once into the queue's own buffer and written
//! from there as one slice, however many writes that takes.

use std::collections::VecDeque;
use std::io::IoSlice;

use crate::message::{Message, OpCode};
use crate::wire::{self, FrameHeader, HEADER_LEN};

/// Slices per vectored write (three per frame at most).
pub(crate) const MAX_IOV: usize = 192;
/// Frames up to this long at the front of the queue are copied into the
/// engine's write buffer and written as one slice: for small frames the
/// kernel's cost per slice (two or three per frame) is larger than the
/// copy's (a 64-byte stream paid about 100 ns more per message in
/// `writev` of 192 slices than in `write` of the same bytes, copied).
pub(crate) const COALESCE_MAX_FRAME: usize = 1024;
/// The most bytes copied into the write buffer for one write.
pub(crate) const COALESCE_MAX: usize = 64 * 1024;
/// A send queue that grew beyond this many entries is shrunk once it drains, so
/// idle connections stay small.
const SEND_QUEUE_KEEP: usize = 64;
/// The encoded-frames buffer of a drained queue is freed when it grew past
/// this (a queue that only ever held a few small frames keeps its own).
const ENCODED_KEEP: usize = 4 * 1024;

/// A fixed-size buffer of slices for one vectored write. Slices past its
/// capacity are left out, which is safe: the write cursor counts only the
/// bytes the kernel actually took.
pub(crate) struct IoVec<'a> {
    slices: [IoSlice<'a>; MAX_IOV],
    len: usize,
}

impl<'a> IoVec<'a> {
    pub(crate) fn new() -> IoVec<'a> {
        IoVec {
            slices: [IoSlice::new(&[]); MAX_IOV],
            len: 0,
        }
    }

    /// The slices filled so far.
    pub(crate) fn as_slices(&self) -> &[IoSlice<'a>] {
        &self.slices[..self.len]
    }

    fn room(&self) -> usize {
        MAX_IOV - self.len
    }
}

impl<'a> Extend<IoSlice<'a>> for IoVec<'a> {
    fn extend<I: IntoIterator<Item = IoSlice<'a>>>(&mut self, iter: I) {
        for slice in iter {
            if self.len == MAX_IOV {
                return;
            }
            self.slices[self.len] = slice;
            self.len += 1;
        }
    }
}

/// One queued frame: the message, its encoded header and its total length.
struct Outgoing {
    header: [u8; HEADER_LEN],
    len: usize,
    /// Counted against the outgoing limits (everything the application
    /// posted on the open channel; not the HelloRequest that opened it).
    charged: bool,
    msg: Message,
}

/// Charged messages that left the queue (written or drained), not yet
/// released from the outgoing limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Released {
    pub(crate) bytes: usize,
    pub(crate) messages: usize,
}

impl Released {
    fn add(&mut self, out: &Outgoing) {
        if out.charged {
            self.bytes += out.len;
            self.messages += 1;
        }
    }
}

/// Frames queued on one channel, oldest first.
/// A ByeRequest or ByeResponse is the last frame of a write: what follows
/// waits until it is written (the core then decides what may still go).
/// Whether `msg`'s frame would take a write-through buffer holding
/// `buffered` bytes past `max` (or past [`COALESCE_MAX`]): then the buffer
/// is written first and the message offered again (to an empty buffer a
/// frame always goes).
pub(crate) fn write_is_full(buffered: usize, msg: &Message, max: usize) -> bool {
    buffered > 0 && buffered + wire_len(msg) > max.min(COALESCE_MAX)
}

fn ends_batch(msg: &Message) -> bool {
    matches!(
        msg.header.proto.opcode,
        OpCode::ByeRequest | OpCode::ByeResponse
    )
}

/// A message's frame length (its sections fit: it was encoded before).
fn wire_len(msg: &Message) -> usize {
    HEADER_LEN + msg.text_headers.byte_len() + msg.body.len()
}

/// Collects a frame's slices by copying them into a buffer.
struct Copying<'v>(&'v mut Vec<u8>);

impl<'s> Extend<IoSlice<'s>> for Copying<'_> {
    fn extend<I: IntoIterator<Item = IoSlice<'s>>>(&mut self, iter: I) {
        for slice in iter {
            self.0.extend_from_slice(&slice);
        }
    }
}

#[derive(Default)]
pub(crate) struct SendQueue {
    queue: VecDeque<Outgoing>,
    /// Bytes of the front frame already written.
    sent: usize,
    released: Released,
    /// The first `encoded_frames` queued frames (small ones), encoded:
    /// `encoded[encoded_at..]` starts with the front frame's first byte
    /// (of which `sent` are written). Written from here until done, so a
    /// small frame is copied once however many partial writes it takes;
    /// at most [`COALESCE_MAX`] plus one frame are added at a time.
    encoded: Vec<u8>,
    encoded_at: usize,
    encoded_frames: usize,
}

impl SendQueue {
    /// Queues `msg` (`charged`: counted against the outgoing limits); gives
    /// it back when a section is longer than 65535 bytes (`post` has already
    /// refused those, so this does not happen).
    #[inline]
    pub(crate) fn push(&mut self, msg: Message, charged: bool) -> Result<(), Message> {
        let Ok(fh) = FrameHeader::for_message(&msg) else {
            return Err(msg);
        };
        self.queue.push_back(Outgoing {
            header: fh.encode(),
            len: fh.frame_len(),
            charged,
            msg,
        });
        Ok(())
    }

    /// Charged messages that left since the last call.
    pub(crate) fn take_released(&mut self) -> Released {
        std::mem::take(&mut self.released)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    #[cfg(any(test, feature = "unstable"))]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    #[cfg(test)]
    /// Bytes of the front frame already written (0 at a frame boundary).
    pub(crate) fn cursor(&self) -> usize {
        self.sent
    }

    /// Encodes the small frames at the front of the queue that are not yet
    /// (up to [`COALESCE_MAX`] bytes unwritten, a ByeRequest or
    /// ByeResponse last), for [`fill`](Self::fill). Frames already encoded
    /// stay; their written prefix is dropped only when more frames are
    /// added, and more are added only when less than half of
    /// `COALESCE_MAX` is left to write, so each byte is moved about once.
    pub(crate) fn prepare(&mut self) {
        // With nothing encoded the buffer is empty (`clear_encoded`).
        debug_assert!(self.encoded_frames > 0 || self.encoded.is_empty());
        if self.encoded_frames > 0 {
            let last = &self.queue[self.encoded_frames - 1];
            let unwritten = self.encoded.len() - self.encoded_at - self.sent;
            if ends_batch(&last.msg)
                || self.encoded_frames == self.queue.len()
                || unwritten >= COALESCE_MAX / 2
            {
                return;
            }
            self.encoded.drain(..self.encoded_at);
            self.encoded_at = 0;
        }
        let mut unwritten = self.encoded.len().saturating_sub(self.sent);
        for out in self.queue.iter().skip(self.encoded_frames) {
            if out.len > COALESCE_MAX_FRAME || unwritten + out.len > COALESCE_MAX {
                break;
            }
            let offset = self.encoded.len();
            wire::frame_slices(&out.header, &out.msg, 0, &mut Copying(&mut self.encoded));
            unwritten += self.encoded.len() - offset;
            self.encoded_frames += 1;
            if ends_batch(&out.msg) {
                break;
            }
        }
    }

    /// Fills `iov` with the unwritten bytes of as many queued frames as fit:
    /// the encoded small frames at the front ([`prepare`](Self::prepare),
    /// called first) as one slice, then the frames after them as slices of
    /// their own. A ByeRequest or ByeResponse ends the batch, so the
    /// handshake state changes exactly when that frame is written.
    pub(crate) fn fill<'a>(&'a self, iov: &mut IoVec<'a>) {
        let mut offset = self.sent;
        if self.encoded_frames > 0 {
            let from = self.encoded_at + self.sent;
            iov.extend(std::iter::once(IoSlice::new(&self.encoded[from..])));
            if ends_batch(&self.queue[self.encoded_frames - 1].msg) {
                return;
            }
            offset = 0;
        }
        for out in self.queue.iter().skip(self.encoded_frames) {
            if iov.room() < 3 {
                break;
            }
            wire::frame_slices(&out.header, &out.msg, offset, iov);
            offset = 0;
            if ends_batch(&out.msg) {
                break;
            }
        }
    }

    /// Write-through (the posting thread's fast path for small frames):
    /// with nothing queued, a posted frame is encoded straight into the
    /// engine's write buffer `buf` — header, text headers, body — and the
    /// caller keeps its message until the write says what became of it
    /// ([`through_written`](Self::through_written)). The caller has
    /// checked that it fits in this write ([`write_is_full`]). `false`
    /// (nothing encoded): the message must take the queue instead: a
    /// ByeRequest or ByeResponse (the handshake follows its write), a
    /// frame over [`COALESCE_MAX_FRAME`] (or a section too long, which
    /// `post` refused). The message is only looked at, so that the caller
    /// moves it once, from the batch to where it goes.
    #[inline]
    pub(crate) fn encode_through(&self, msg: &Message, buf: &mut Vec<u8>) -> bool {
        debug_assert!(self.queue.is_empty(), "write-through overtook the queue");
        if ends_batch(msg) {
            return false;
        }
        let Ok(fh) = FrameHeader::for_message(msg) else {
            return false;
        };
        let len = fh.frame_len();
        if len > COALESCE_MAX_FRAME || buf.len() + len > COALESCE_MAX {
            return false;
        }
        buf.reserve(len);
        buf.extend_from_slice(&fh.encode());
        buf.extend_from_slice(msg.text_headers.as_bytes());
        buf.extend_from_slice(&msg.body);
        true
    }

    /// The socket took `written` bytes of the frames encoded from
    /// `held[from..]` (0: nothing, the write failed or would block).
    /// The messages of the frames written whole stay in `held` (spent, for
    /// the pool) and are released from the outgoing limits; the others
    /// leave `held` for the queue, in order, the cursor inside the first
    /// one. Returns how many frames were written whole.
    pub(crate) fn through_written(
        &mut self,
        written: usize,
        held: &mut Vec<Message>,
        from: usize,
        refused: &mut dyn FnMut(Message),
    ) -> usize {
        debug_assert!(self.queue.is_empty(), "write-through overtook the queue");
        let mut left = written;
        let mut done = from;
        let mut released = Released::default();
        while done < held.len() {
            let len = wire_len(&held[done]);
            if left < len {
                break;
            }
            left -= len;
            released.bytes += len;
            released.messages += 1;
            done += 1;
        }
        self.released.bytes += released.bytes;
        self.released.messages += released.messages;
        for msg in held.drain(done..) {
            // Every section fit when it was encoded, so this does not
            // refuse; if it did, the message would go back, not be lost.
            if let Err(msg) = self.push(msg, true) {
                refused(msg);
            }
        }
        debug_assert!(
            left == 0 || !self.queue.is_empty(),
            "wrote more than encoded"
        );
        self.sent = if self.queue.is_empty() { 0 } else { left };
        done - from
    }

    pub(crate) fn advance(
        &mut self,
        written: usize,
        spent: &mut Vec<Message>,
        mut on_done: impl FnMut(OpCode),
    ) -> usize {
        let mut done = self.sent + written;
        let mut frames = 0;
        while let Some(front) = self.queue.front() {
            if done < front.len {
                break;
            }
            done -= front.len;
            let out = self.queue.pop_front().expect("front exists");
            if self.encoded_frames > 0 {
                self.encoded_frames -= 1;
                self.encoded_at += out.len;
            }
            self.released.add(&out);
            on_done(out.msg.header.proto.opcode);
            spent.push(out.msg);
            frames += 1;
        }
        debug_assert!(
            self.queue.front().is_none_or(|f| done < f.len) && (done == 0 || !self.is_empty()),
            "wrote more bytes than were queued"
        );
        self.sent = if self.queue.is_empty() { 0 } else { done };
        if self.encoded_frames == 0 {
            self.clear_encoded();
        }
        if self.queue.is_empty() && self.queue.capacity() > SEND_QUEUE_KEEP {
            // A new small queue, the old one freed (not `shrink_to`: a
            // large queue is a mapping of its own, and shrinking it in
            // place remaps it — a TLB shootdown on every core — each time
            // a stream's bursts fill and drain it; freeing it also lets the
            // allocator keep the next burst's queue on its heap).
            self.queue = VecDeque::with_capacity(SEND_QUEUE_KEEP / 4);
        }
        frames
    }

    /// No frame is encoded any more: the buffer is emptied (freed if it
    /// grew large).
    fn clear_encoded(&mut self) {
        self.encoded_frames = 0;
        self.encoded_at = 0;
        if self.encoded.capacity() > ENCODED_KEEP {
            self.encoded = Vec::new();
        } else {
            self.encoded.clear();
        }
    }

    /// Empties the queue, oldest first (the channel is closing).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Message> + '_ {
        self.sent = 0;
        self.clear_encoded();
        let released = &mut self.released;
        self.queue.drain(..).map(move |out| {
            released.add(&out);
            out.msg
        })
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.queue.capacity() + self.encoded.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn msg(id: u64, body: &[u8]) -> Message {
        let mut m = Message::new();
        m.header.message_id = id;
        m.body.extend_from_slice(body);
        m
    }

    fn gather(iov: &IoVec<'_>) -> Vec<u8> {
        iov.as_slices()
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect()
    }

    fn encoded(m: &Message) -> Vec<u8> {
        let mut v = Vec::new();
        wire::encode_to_vec(m, &mut v).unwrap();
        v
    }

    #[test]
    fn fill_and_advance_at_every_offset() {
        let a = msg(1, b"hello");
        let b = msg(2, b"world!");
        let mut all = encoded(&a);
        all.extend(encoded(&b));
        for cut in 0..=all.len() {
            let mut q = SendQueue::default();
            q.push(a.clone(), true).unwrap();
            q.push(b.clone(), false).unwrap();
            let mut out = Vec::new();
            {
                let mut iov = IoVec::new();
                q.prepare();
                q.fill(&mut iov);
                let bytes = gather(&iov);
                assert_eq!(bytes, all);
                out.extend_from_slice(&bytes[..cut]);
            }
            let done = q.advance(cut, &mut Vec::new(), |_| {});
            assert_eq!(done, usize::from(cut >= 21) + usize::from(cut == all.len()));
            // Only `a` was charged: it is released once it is written.
            let first = q.take_released();
            assert_eq!(first.messages, usize::from(cut >= 21));
            assert_eq!(first.bytes, if cut >= 21 { 21 } else { 0 });
            {
                let mut iov = IoVec::new();
                q.prepare();
                q.fill(&mut iov);
                out.extend(gather(&iov));
            }
            assert_eq!(out, all, "cut at {cut}");
            let _ = q.drain().count();
            let rest = q.take_released();
            assert_eq!(rest.messages, usize::from(cut < 21), "drained: released");
            assert_eq!(q.take_released(), Released::default(), "released once");
        }
    }

    #[test]
    fn a_bye_ends_the_batch() {
        let mut q = SendQueue::default();
        let mut bye = msg(1, b"");
        bye.header.proto.opcode = OpCode::ByeRequest;
        q.push(bye, true).unwrap();
        q.push(msg(2, b"after"), true).unwrap();
        let mut iov = IoVec::new();
        q.prepare();
        q.fill(&mut iov);
        assert_eq!(gather(&iov).len(), HEADER_LEN, "only the ByeRequest");
    }

    #[test]
    fn iov_never_overflows() {
        let mut q = SendQueue::default();
        let big = vec![7u8; COALESCE_MAX_FRAME];
        for i in 0..200 {
            q.push(msg(i, &big), true).unwrap();
        }
        let mut iov = IoVec::new();
        q.prepare();
        q.fill(&mut iov);
        // Header + body per frame (no text headers): 2 slices a frame.
        assert!(iov.as_slices().len() <= MAX_IOV);
        assert_eq!(iov.as_slices().len() % 2, 0);
        assert!(q.encoded.is_empty(), "large frames are not copied");
    }

    /// Small frames are copied into one slice (up to `COALESCE_MAX`
    /// bytes), large ones follow as slices of their own, the bytes in
    /// order, from any cursor.
    #[test]
    fn small_frames_are_coalesced() {
        let mut q = SendQueue::default();
        let mut all = Vec::new();
        let sizes = [10, 0, 700, COALESCE_MAX_FRAME, 5000, 3, 3];
        for (i, &n) in sizes.iter().enumerate() {
            let m = msg(i as u64 + 1, &vec![i as u8; n]);
            all.extend(encoded(&m));
            q.push(m, true).unwrap();
        }
        let mut iov = IoVec::new();
        q.prepare();
        q.fill(&mut iov);
        assert_eq!(gather(&iov), all);
        // Three small frames in one slice; the 1,040-byte frame is over
        // the limit: header and body, then the rest as slices.
        assert_eq!(iov.as_slices()[0].len(), 26 + 16 + 716);
        assert_eq!(iov.as_slices().len(), 1 + 2 + 2 + 2 + 2);
        // From a cursor inside the second frame.
        let cut = 26 + 5;
        assert_eq!(q.advance(cut, &mut Vec::new(), |_| {}), 1);
        let mut iov = IoVec::new();
        q.prepare();
        q.fill(&mut iov);
        assert_eq!(gather(&iov), all[cut..]);

        // Many small frames: one slice of at most COALESCE_MAX bytes.
        let mut q = SendQueue::default();
        for i in 0..5000 {
            q.push(msg(i, b"0123456789abcdef0123456789abcdef"), true)
                .unwrap();
        }
        let mut iov = IoVec::new();
        q.prepare();
        q.fill(&mut iov);
        // Then frames as slices (2 each) while 3 slots are left.
        assert_eq!(iov.as_slices().len(), 1 + 2 * ((MAX_IOV - 1 - 3) / 2 + 1));
        assert!(iov.as_slices()[0].len() <= COALESCE_MAX);
        assert_eq!(iov.as_slices()[0].len() % 48, 0, "whole frames");
    }

    /// A lone small frame is one slice too (the socket then takes it with
    /// a plain `write`); a lone large one is not copied.
    #[test]
    fn a_lone_small_frame_is_one_slice() {
        let mut q = SendQueue::default();
        let m = msg(1, b"hello");
        let all = encoded(&m);
        q.push(m, true).unwrap();
        let mut iov = IoVec::new();
        q.prepare();
        q.fill(&mut iov);
        assert_eq!(iov.as_slices().len(), 1);
        assert_eq!(gather(&iov), all);

        let mut q = SendQueue::default();
        q.push(msg(2, &vec![1; COALESCE_MAX_FRAME + 1]), true)
            .unwrap();
        let mut iov = IoVec::new();
        q.prepare();
        q.fill(&mut iov);
        assert_eq!(iov.as_slices().len(), 2, "header and body");
        assert!(q.encoded.is_empty());
    }

    /// Small frames are encoded once: partial writes go on from the
    /// encoded bytes (nothing is encoded again while more than half of
    /// `COALESCE_MAX` is left), and the bytes come out whole and in order
    /// through any sequence of partial writes.
    #[test]
    fn small_frames_are_encoded_once_across_partial_writes() {
        let mut q = SendQueue::default();
        let mut all = Vec::new();
        for i in 0..3000u64 {
            let m = msg(i, &[i as u8; 40]);
            all.extend(encoded(&m));
            q.push(m, true).unwrap();
        }
        let mut out = Vec::new();
        q.prepare();
        let first = q.encoded.len();
        assert!(
            first <= COALESCE_MAX && first > COALESCE_MAX - 56,
            "{first}"
        );
        let mut step = 0;
        while !q.is_empty() {
            q.prepare();
            if out.len() + 1000 < COALESCE_MAX / 2 {
                assert_eq!(q.encoded.len(), first, "not encoded again");
            }
            let mut iov = IoVec::new();
            q.fill(&mut iov);
            // Odd sizes, so that writes end inside frames.
            let n = gather(&iov).len().min(997 + step % 13);
            out.extend_from_slice(&gather(&iov)[..n]);
            q.advance(n, &mut Vec::new(), |_| {});
            step += 1;
        }
        assert_eq!(out, all);
        assert!(q.encoded.is_empty() && q.encoded.capacity() <= ENCODED_KEEP);
        assert_eq!(q.take_released().messages, 3000);
    }

    #[test]
    fn drained_queue_shrinks() {
        let mut q = SendQueue::default();
        for i in 0..500 {
            q.push(msg(i, b""), true).unwrap();
        }
        let n = q.len();
        assert_eq!(q.advance(n * HEADER_LEN, &mut Vec::new(), |_| {}), n);
        assert!(q.capacity() <= SEND_QUEUE_KEEP);
        assert_eq!(q.cursor(), 0);
    }
}
