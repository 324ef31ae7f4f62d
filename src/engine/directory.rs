//! Channel numbers (SPEC §1): who owns which number, and which numbers are free.
//!
//! The owner table is read by application threads (`post` validates the channel
//! synchronously) and written by the I/O thread, so it is an array of atomics:
//! no lock is shared with application threads. Each entry packs the owning group
//! (high 32 bits) and the number of posts on the channel that are still on their
//! way to the I/O thread (low 32 bits). Closing a channel clears the group in
//! the same atomic operation that reads the in-flight count, so the I/O thread
//! knows exactly how many late messages it still has to give back before the
//! `channel_closed` report — which is therefore always the last word about a
//! channel. Numbers are assigned by the I/O
//! thread only ([`Numbers`]); `post` on channel 0 takes one from a small
//! lock-free reserve that the I/O thread keeps topped up.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::Error;

use crossbeam_queue::ArrayQueue;

/// Highest real channel number; 65535 is reserved for the engine.
pub(crate) const MAX_CHANNEL: u16 = u16::MAX - 1;
/// A closed number stays out of use until this many newer channels have closed.
pub(crate) const REUSE_DISTANCE: u64 = 1024;
/// Numbers kept ready for `post` on channel 0.
pub(crate) const RESERVE: usize = 64;

const COUNT_MASK: u64 = 0xffff_ffff;

pub(crate) struct Directory {
    owners: Box<[AtomicU64]>,
    pub(crate) reserve: ArrayQueue<u16>,
    /// Set by the I/O thread when it found no free number for the reserve:
    /// `post` on channel 0 then fails at once instead of waiting.
    exhausted: AtomicBool,
}

impl Directory {
    pub(crate) fn new() -> Directory {
        Directory {
            owners: (0..=u16::MAX as usize).map(|_| AtomicU64::new(0)).collect(),
            reserve: ArrayQueue::new(RESERVE),
            exhausted: AtomicBool::new(false),
        }
    }

    /// Every channel number is in use (as of the I/O thread's last refill).
    pub(crate) fn is_exhausted(&self) -> bool {
        self.exhausted.load(Ordering::Acquire)
    }

    pub(crate) fn set_exhausted(&self, exhausted: bool) {
        if self.exhausted.load(Ordering::Relaxed) != exhausted {
            self.exhausted.store(exhausted, Ordering::Release);
        }
    }

    /// The group owning `number`, 0 when the channel is not open.
    #[cfg(test)]
    pub(crate) fn owner(&self, number: u16) -> u32 {
        (self.owners[number as usize].load(Ordering::Acquire) >> 32) as u32
    }

    /// Marks `number` open and owned by `group` (the in-flight count of a
    /// closed number is always 0).
    pub(crate) fn open(&self, number: u16, group: u32) {
        self.owners[number as usize].fetch_or(u64::from(group) << 32, Ordering::AcqRel);
    }

    /// Application side of `post`: checks that `group` owns the open channel and
    /// counts one more message on its way to the I/O thread.
    pub(crate) fn acquire(&self, number: u16, group: u32) -> Result<(), Error> {
        self.acquire_many(number, group, 1)
    }

    /// [`acquire`](Self::acquire) for `count` posts at once (a batch on one
    /// channel): one atomic add.
    pub(crate) fn acquire_many(&self, number: u16, group: u32, count: u32) -> Result<(), Error> {
        let entry = &self.owners[number as usize];
        match (entry.load(Ordering::Acquire) >> 32) as u32 {
            0 => return Err(Error::InvalidChannelNumber),
            g if g != group => return Err(Error::InvalidChannelGroup),
            _ => {}
        }
        let prev = entry.fetch_add(u64::from(count), Ordering::AcqRel);
        if (prev >> 32) as u32 != group {
            // Closed in between: the I/O thread did not count these.
            entry.fetch_sub(u64::from(count), Ordering::AcqRel);
            return Err(Error::InvalidChannelNumber);
        }
        Ok(())
    }

    /// I/O side: one message counted by [`Directory::acquire`] has arrived.
    pub(crate) fn arrived(&self, number: u16) {
        self.arrived_many(number, 1);
    }

    /// I/O side: `n` messages counted by [`Directory::acquire`] have arrived.
    pub(crate) fn arrived_many(&self, number: u16, n: u32) {
        self.owners[number as usize].fetch_sub(u64::from(n), Ordering::AcqRel);
    }

    /// I/O side: closes `number` for new posts; returns how many messages
    /// posted before that are still on their way.
    pub(crate) fn close(&self, number: u16) -> u32 {
        let prev = self.owners[number as usize].fetch_and(COUNT_MASK, Ordering::AcqRel);
        (prev & COUNT_MASK) as u32
    }
}

/// The I/O thread's allocator: never-used numbers first, then closed ones in the
/// order they closed, each only after [`REUSE_DISTANCE`] newer closes — unless
/// the number space is exhausted.
#[derive(Debug)]
pub(crate) struct Numbers {
    next_fresh: u32,
    recycled: VecDeque<(u16, u64)>,
    closes: u64,
}

impl Numbers {
    pub(crate) fn new() -> Numbers {
        Numbers {
            next_fresh: 1,
            recycled: VecDeque::new(),
            closes: 0,
        }
    }

    pub(crate) fn alloc(&mut self) -> Option<u16> {
        if let Some(&(n, seq)) = self.recycled.front() {
            if self.closes - seq >= REUSE_DISTANCE {
                self.recycled.pop_front();
                return Some(n);
            }
        }
        if self.next_fresh <= MAX_CHANNEL as u32 {
            let n = self.next_fresh as u16;
            self.next_fresh += 1;
            return Some(n);
        }
        self.recycled.pop_front().map(|(n, _)| n)
    }

    pub(crate) fn release(&mut self, number: u16) {
        self.closes += 1;
        self.recycled.push_back((number, self.closes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_quick_reuse() {
        let mut n = Numbers::new();
        let first = n.alloc().unwrap();
        assert_eq!(first, 1);
        n.release(first);
        // Fresh numbers are preferred while the closed one is too young.
        let mut seen = vec![];
        for _ in 0..2000 {
            let x = n.alloc().unwrap();
            assert_ne!(x, first);
            seen.push(x);
        }
        // 1023 more closes: still too young.
        for &x in &seen[..1023] {
            n.release(x);
        }
        assert_ne!(n.alloc().unwrap(), first);
        n.release(seen[1023]);
        n.release(seen[1024]);
        assert_eq!(n.alloc().unwrap(), first, "reused after 1024 newer closes");
    }

    #[test]
    fn exhaustion_reuses_anything_free() {
        let mut n = Numbers::new();
        for _ in 0..MAX_CHANNEL {
            n.alloc().unwrap();
        }
        assert_eq!(n.alloc(), None);
        n.release(77);
        assert_eq!(n.alloc(), Some(77));
        assert_eq!(n.alloc(), None);
    }

    #[test]
    fn owners_and_in_flight_counts() {
        let d = Directory::new();
        assert_eq!(d.owner(5), 0);
        assert_eq!(d.acquire(5, 3), Err(Error::InvalidChannelNumber));
        d.open(5, 3);
        assert_eq!(d.owner(5), 3);
        assert_eq!(d.acquire(5, 4), Err(Error::InvalidChannelGroup));
        d.acquire(5, 3).unwrap();
        d.acquire(5, 3).unwrap();
        d.arrived(5);
        assert_eq!(d.close(5), 1, "one post still on its way");
        assert_eq!(d.owner(5), 0);
        assert_eq!(d.acquire(5, 3), Err(Error::InvalidChannelNumber));
        d.arrived(5);
        assert_eq!(d.close(5), 0);
        assert_eq!(d.owner(u16::MAX), 0);
    }
}
