//! The backpressure policy (SPEC §5.7): the engine reads only into messages
//! its bounded pool can give, and a channel that ran dry waits — briefly — for
//! the pool to refill in a batch rather than one message at a time.
//!
//! Pure numbers and time passed in; the reactor arms the pool's notification
//! and sleeps as told.

use std::time::{Duration, Instant};

/// Reads per channel before other channels get a turn.
pub(crate) const READ_BUDGET: usize = 16;
/// The longest a starved channel waits for the pool to refill past its
/// low-water mark before it reads into what is there.
pub(crate) const REFILL_WAIT: Duration = Duration::from_millis(1);

/// Free messages that end a pool_empty episode at once; fewer are used only
/// after [`REFILL_WAIT`], so a slow consumer returning messages one by one
/// does not wake the I/O thread once per message.
pub(crate) fn refill_mark(capacity: usize) -> usize {
    (capacity / 4).clamp(1, 64)
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
    pub(crate) fn arm(&self, capacity: usize) -> Arm {
        match self.deadline {
            None => Arm::Any,
            Some(_) => Arm::At(refill_mark(capacity)),
        }
    }

    /// How long to sleep (`None` = until an event) with `free` messages, read
    /// after arming.
    pub(crate) fn timeout(&self, free: usize, capacity: usize, now: Instant) -> Option<Duration> {
        if free >= refill_mark(capacity) {
            return Some(Duration::ZERO);
        }
        match self.deadline {
            _ if free == 0 => None,
            None => Some(Duration::ZERO), // resume_now starts the wait
            Some(deadline) => Some(deadline.saturating_duration_since(now)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_scale_with_the_pool_within_bounds() {
        assert_eq!(refill_mark(1), 1);
        assert_eq!(refill_mark(64), 16);
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
        assert_eq!(r.arm(64), Arm::Any);
        assert_eq!(r.timeout(0, 64, t0), None);
        // A few back: wait up to REFILL_WAIT for the mark.
        assert_eq!(r.timeout(3, 64, t0), Some(Duration::ZERO));
        assert!(!r.resume_now(3, 64, t0));
        assert_eq!(r.arm(64), Arm::At(16));
        let half = t0 + REFILL_WAIT / 2;
        assert_eq!(r.timeout(3, 64, half), Some(REFILL_WAIT / 2));
        assert!(!r.resume_now(3, 64, half));
        // Deadline passed: read into the three.
        assert!(r.resume_now(3, 64, t0 + REFILL_WAIT));
        assert_eq!(r.arm(64), Arm::Any, "the episode is over");
    }

    #[test]
    fn refill_past_the_mark_resumes_at_once() {
        let t0 = Instant::now();
        let mut r = Refill::default();
        assert!(!r.resume_now(1, 64, t0));
        assert_eq!(r.timeout(16, 64, t0), Some(Duration::ZERO));
        assert!(r.resume_now(16, 64, t0));
    }
}
