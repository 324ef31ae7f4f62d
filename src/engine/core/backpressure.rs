//! The backpressure policy (SPEC §5.7): the engine reads only into messages
//! its bounded pool can give, and a channel that ran dry waits — briefly — for
//! the pool to refill in a batch rather than one message at a time.
//!
//! Pure numbers and time passed in; the reactor arms the pool's notification
//! and sleeps as told.

use std::time::{Duration, Instant};

use crate::wire::{FrameHeader, HEADER_LEN};

/// Reads per channel before other channels get a turn.
pub(crate) const READ_BUDGET: usize = 16;
/// The longest a starved channel waits for the pool to refill past its
/// low-water mark before it reads into what is there.
pub(crate) const REFILL_WAIT: Duration = Duration::from_millis(1);

/// Free messages that end a pool_empty episode at once, for a pool of `size`
/// messages (those it has, at most its capacity); fewer are used only after
/// [`REFILL_WAIT`], so a slow consumer returning messages one by one does
/// not wake the I/O thread once per message. Half the pool: each wake-up
/// reads that many frames, and a consumer holding up to half of it never
/// waits for the deadline. (A quarter read half as many per wake-up: 64 B
/// stream with the default 16-message pool, 45 k -> 67 k msgs/s.)
pub(crate) fn refill_mark(size: usize) -> usize {
    (size / 2).clamp(1, 64)
}

/// Messages a frame that has not fully arrived may not take from the pool:
/// kept for complete frames, so that peers stalling mid-frame (slowloris)
/// cannot pin the whole pool and stop every other channel.
pub(crate) fn partial_reserve(capacity: usize) -> usize {
    (capacity / 8).clamp(1, 8)
}

/// Whether a channel may read from its socket: with no frame in progress it
/// needs a free message to read into, otherwise the data stays in the kernel
/// and the peer's flow control slows it down.
pub(crate) fn may_read(has_message: bool, free: usize) -> bool {
    has_message || free > 0
}

/// The engine-wide budget for bytes held for frames that have not fully
/// arrived and have no pool message (the channels' stashes), SPEC §5.7.
/// Over it, a channel whose read could add to its stash is not read (its
/// bytes stay in the kernel) until the budget has room again.
#[derive(Debug)]
pub(crate) struct StashBudget {
    limit: usize,
    used: usize,
}

impl StashBudget {
    pub(crate) fn new(limit: usize) -> StashBudget {
        StashBudget { limit, used: 0 }
    }

    /// Reads that may stash are allowed.
    pub(crate) fn has_room(&self) -> bool {
        self.used < self.limit
    }

    /// Bytes held now.
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    /// A stash went from `from` to `to` bytes.
    pub(crate) fn update(&mut self, from: usize, to: usize) {
        self.used = self.used + to - from;
    }
}

/// Whether a read could have to stash bytes: no frame in progress holds a
/// message, and either a frame is already held back or a new partial frame
/// would not get a message (the pool is down to its
/// [reserve](partial_reserve)).
pub(crate) fn read_may_stash(
    has_message: bool,
    has_backlog: bool,
    free: usize,
    capacity: usize,
) -> bool {
    !has_message && (has_backlog || free <= partial_reserve(capacity))
}

/// The leading bytes of `peeked` (bytes waiting in the kernel) that make up
/// complete frames: those can be read over an exhausted budget, since they
/// decode without being stashed. An invalid header counts as complete (the
/// decoder then closes the channel).
pub(crate) fn complete_frames_len(peeked: &[u8]) -> usize {
    let mut at = 0;
    while let Some(header) = peeked.get(at..at + HEADER_LEN) {
        let header: &[u8; HEADER_LEN] = header.try_into().expect("16 bytes");
        let Ok(fh) = FrameHeader::decode(header) else {
            return at + HEADER_LEN;
        };
        if at + fh.frame_len() > peeked.len() {
            break;
        }
        at += fh.frame_len();
    }
    at
}

/// Which notification the reactor arms on the pool before it sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arm {
    /// Wake on the first message returned.
    Any,
    /// Wake once this many messages are free.
    At(usize),
}

/// When starved channels resume: at once past the refill mark, otherwise
/// after [`REFILL_WAIT`] with whatever is free.
#[derive(Debug, Default)]
pub(crate) struct Refill {
    deadline: Option<Instant>,
}

impl Refill {
    /// Whether starved channels should read now, with `free` messages in a
    /// pool of `capacity`. Starts the wait the first time too few are free.
    pub(crate) fn resume_now(&mut self, free: usize, capacity: usize, now: Instant) -> bool {
        if free == 0 {
            return false;
        }
        if free < refill_mark(capacity) {
            match self.deadline {
                None => {
                    self.deadline = Some(now + REFILL_WAIT);
                    return false;
                }
                Some(deadline) if now < deadline => return false,
                Some(_) => {}
            }
        }
        self.deadline = None;
        true
    }

    /// The notification to arm before sleeping while channels are starved:
    /// the one-shot notification is re-armed on every sleep, since a returned
    /// message may have been taken again before we looked.
    /// Once the deadline has passed, any message ends the episode: arming for
    /// the mark then could sleep forever (the few that came back were taken
    /// again, and fewer than the mark ever return).
    pub(crate) fn arm(&self, size: usize, now: Instant) -> Arm {
        match self.deadline {
            Some(deadline) if now < deadline => Arm::At(refill_mark(size)),
            _ => Arm::Any,
        }
    }

    /// How long to sleep (`None` = until an event) with `free` messages, read
    /// after arming.
    pub(crate) fn timeout(&self, free: usize, capacity: usize, now: Instant) -> Option<Duration> {
        if free >= refill_mark(capacity) {
            return Some(Duration::ZERO);
        }
        match self.deadline {
            // Waiting for the mark: wake at the deadline even if the pool is
            // empty again (then `arm` switches to any return).
            Some(deadline) if now < deadline => Some(deadline - now),
            _ if free == 0 => None,
            _ => Some(Duration::ZERO), // resume_now starts the wait, or ends it
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_scale_with_the_pool_within_bounds() {
        assert_eq!(refill_mark(1), 1);
        assert_eq!(refill_mark(16), 8);
        assert_eq!(refill_mark(64), 32);
        assert_eq!(refill_mark(10_000), 64);
        assert_eq!(partial_reserve(1), 1);
        assert_eq!(partial_reserve(64), 8);
        assert_eq!(partial_reserve(16), 2);
        assert!(!may_read(false, 0));
        assert!(may_read(true, 0));
        assert!(may_read(false, 1));
    }

    #[test]
    fn refill_waits_for_a_batch_then_takes_what_is_there() {
        let t0 = Instant::now();
        let mut r = Refill::default();
        // Empty pool: sleep until a message comes back.
        assert!(!r.resume_now(0, 64, t0));
        assert_eq!(r.arm(64, t0), Arm::Any);
        assert_eq!(r.timeout(0, 64, t0), None);
        // A few back: wait up to REFILL_WAIT for the mark.
        assert_eq!(r.timeout(3, 64, t0), Some(Duration::ZERO));
        assert!(!r.resume_now(3, 64, t0));
        assert_eq!(r.arm(64, t0), Arm::At(32));
        let half = t0 + REFILL_WAIT / 2;
        assert_eq!(r.timeout(3, 64, half), Some(REFILL_WAIT / 2));
        assert!(!r.resume_now(3, 64, half));
        // Deadline passed: read into the three.
        assert!(r.resume_now(3, 64, t0 + REFILL_WAIT));
        assert_eq!(r.arm(64, t0), Arm::Any, "the episode is over");
    }

    #[test]
    fn past_the_deadline_any_return_ends_the_wait() {
        // The few messages that came back were taken again before the
        // deadline: the pool is empty when it passes. Waiting for the mark
        // now would sleep until half the pool comes back — perhaps never.
        let t0 = Instant::now();
        let mut r = Refill::default();
        assert!(!r.resume_now(1, 4, t0), "starts the wait");
        assert_eq!(r.arm(4, t0), Arm::At(2));
        let late = t0 + REFILL_WAIT;
        assert!(!r.resume_now(0, 4, late), "nothing to read into");
        assert_eq!(r.arm(4, late), Arm::Any, "one return must wake us");
        // (Before the deadline an empty pool still wakes us at the deadline.)
        let mut early = Refill::default();
        assert!(!early.resume_now(1, 4, t0));
        assert_eq!(early.timeout(0, 4, t0), Some(REFILL_WAIT));
        assert_eq!(r.timeout(0, 4, late), None);
        assert!(r.resume_now(1, 4, late), "and it is enough");
    }

    #[test]
    fn the_stash_budget_counts_what_is_held() {
        let mut b = StashBudget::new(100);
        assert!(b.has_room());
        b.update(0, 60);
        b.update(0, 50);
        assert_eq!(b.used(), 110);
        assert!(!b.has_room());
        b.update(60, 0);
        assert!(b.has_room());
        // Only channels that could stash need room.
        assert!(!read_may_stash(true, true, 0, 64), "a frame with a message");
        assert!(read_may_stash(false, true, 64, 64), "a frame held back");
        assert!(
            read_may_stash(false, false, 8, 64),
            "the pool is at its reserve"
        );
        assert!(
            !read_may_stash(false, false, 9, 64),
            "a partial frame gets a message"
        );
    }

    #[test]
    fn complete_frames_are_found_in_peeked_bytes() {
        let frame = |body: usize| {
            let mut f = vec![0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0];
            f.extend_from_slice(&(body as u16).to_be_bytes());
            f.extend(std::iter::repeat_n(7, body));
            f
        };
        let mut bytes = frame(3);
        bytes.extend(frame(0));
        let two = bytes.len();
        bytes.extend(&frame(100)[..50]);
        assert_eq!(complete_frames_len(&bytes), two);
        assert_eq!(complete_frames_len(&bytes[..10]), 0);
        assert_eq!(complete_frames_len(&[]), 0);
        let mut bad = frame(0);
        bad[2] = 14; // opcode 14: invalid, read it so the channel closes
        assert_eq!(complete_frames_len(&bad), HEADER_LEN);
    }

    #[test]
    fn refill_past_the_mark_resumes_at_once() {
        let t0 = Instant::now();
        let mut r = Refill::default();
        assert!(!r.resume_now(1, 64, t0));
        assert_eq!(r.timeout(31, 64, t0), Some(REFILL_WAIT));
        assert_eq!(r.timeout(32, 64, t0), Some(Duration::ZERO));
        assert!(r.resume_now(32, 64, t0));
    }
}
