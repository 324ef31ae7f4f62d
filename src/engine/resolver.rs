//! Host-name lookups off the I/O thread.
//!
//! The system resolver blocks, so each lookup runs on a short-lived thread
//! and reports back as a [`Command::Resolved`]. This module is the
//! bookkeeping, kept pure (the thread is started by the `spawn` callback the
//! reactor passes in): at most [`MAX_LOOKUPS`] run at once, the rest wait in
//! arrival order. A lookup whose channel closed — its lookup timeout passed,
//! or the application gave up — is *abandoned*: its slot is free at once, so
//! hung lookups cannot stall later connects by name, and its result is
//! ignored when it comes. Abandoned threads still alive are capped at
//! [`MAX_ABANDONED`]; past that, lookups wait for them.
//!
//! The waiting queue is bounded by the number of open channels (one lookup
//! per connecting channel).

use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use super::slab::Key;
use super::{Command, Shared};

/// Host-name lookups running at once; more wait their turn.
pub(crate) const MAX_LOOKUPS: usize = 4;
/// Abandoned lookup threads allowed to linger (each until the system
/// resolver gives up).
pub(crate) const MAX_ABANDONED: usize = 12;

#[derive(Debug)]
struct Lookup {
    key: Key,
    host: String,
    port: u16,
}

/// The lookups running, abandoned and waiting.
#[derive(Debug, Default)]
pub(crate) struct Resolver {
    running: Vec<Key>,
    abandoned: Vec<Key>,
    waiting: VecDeque<Lookup>,
}

/// Starts a lookup thread; `false` when no thread could be started.
pub(crate) type Spawn<'a> = &'a mut dyn FnMut(Key, String, u16) -> bool;

impl Resolver {
    /// Queues a lookup for the channel `key` and starts what may start;
    /// returns the channels whose lookup could not be started (they must
    /// close).
    pub(crate) fn lookup(
        &mut self,
        key: Key,
        host: String,
        port: u16,
        spawn: Spawn<'_>,
    ) -> Vec<Key> {
        self.waiting.push_back(Lookup { key, host, port });
        self.start(spawn)
    }

    /// A lookup reported back. `true` when its result is wanted (`false`:
    /// it was abandoned, or is unknown).
    pub(crate) fn finished(&mut self, key: Key) -> bool {
        if let Some(i) = self.running.iter().position(|&k| k == key) {
            self.running.swap_remove(i);
            return true;
        }
        if let Some(i) = self.abandoned.iter().position(|&k| k == key) {
            self.abandoned.swap_remove(i);
        }
        false
    }

    /// The channel `key` closed: forget its lookup (its slot frees at once).
    pub(crate) fn abandon(&mut self, key: Key) {
        if let Some(i) = self.running.iter().position(|&k| k == key) {
            self.running.swap_remove(i);
            self.abandoned.push(key);
        }
        self.waiting.retain(|l| l.key != key);
    }

    /// Starts waiting lookups while there is room; returns the channels whose
    /// thread could not be started.
    pub(crate) fn start(&mut self, spawn: Spawn<'_>) -> Vec<Key> {
        let mut failed = Vec::new();
        while self.running.len() < MAX_LOOKUPS && self.abandoned.len() < MAX_ABANDONED {
            let Some(Lookup { key, host, port }) = self.waiting.pop_front() else {
                break;
            };
            if spawn(key, host, port) {
                self.running.push(key);
            } else {
                failed.push(key);
            }
        }
        failed
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize) {
        (self.running.len(), self.abandoned.len(), self.waiting.len())
    }
}

/// Runs one lookup on a thread of its own; the result comes back as a
/// command. `false` when the thread could not be started.
pub(crate) fn spawn_system_lookup(shared: &Arc<Shared>, key: Key, host: String, port: u16) -> bool {
    let shared = shared.clone();
    std::thread::Builder::new()
        .name("tofu-resolve".into())
        .spawn(move || {
            let result = (host.as_str(), port)
                .to_socket_addrs()
                .map(|it| it.collect::<Vec<SocketAddr>>());
            shared.push(Command::Resolved { key, result });
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Key {
        Key {
            index: i,
            generation: 0,
        }
    }

    #[test]
    fn at_most_four_run_the_rest_wait_in_order() {
        let mut r = Resolver::default();
        let mut started = Vec::new();
        for i in 0..6 {
            let failed = r.lookup(key(i), format!("h{i}"), 1, &mut |k, _, _| {
                started.push(k.index);
                true
            });
            assert!(failed.is_empty());
        }
        assert_eq!(started, [0, 1, 2, 3]);
        assert_eq!(r.counts(), (4, 0, 2));
        assert!(r.finished(key(1)));
        r.start(&mut |k, _, _| {
            started.push(k.index);
            true
        });
        assert_eq!(started, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn hung_lookups_abandoned_free_their_slots() {
        let mut r = Resolver::default();
        let mut ok = |_: Key, _: String, _: u16| true;
        for i in 0..5 {
            r.lookup(key(i), "hung".into(), 1, &mut ok);
        }
        assert_eq!(r.counts(), (4, 0, 1));
        // The four hung ones time out: their channels close.
        for i in 0..4 {
            r.abandon(key(i));
        }
        r.start(&mut ok);
        assert_eq!(r.counts(), (1, 4, 0), "the fifth runs at once");
        // A hung one finally answers: ignored.
        assert!(!r.finished(key(0)));
        assert!(r.finished(key(4)));
        assert_eq!(r.counts(), (0, 3, 0));
    }

    #[test]
    fn abandoned_threads_are_capped() {
        let mut r = Resolver::default();
        let mut ok = |_: Key, _: String, _: u16| true;
        let mut next = 0;
        while r.counts().1 < MAX_ABANDONED {
            r.lookup(key(next), "hung".into(), 1, &mut ok);
            r.abandon(key(next));
            next += 1;
        }
        r.lookup(key(next), "h".into(), 1, &mut ok);
        assert_eq!(
            r.counts(),
            (0, MAX_ABANDONED, 1),
            "waits for a hung thread to end"
        );
        assert!(!r.finished(key(0)));
        r.start(&mut ok);
        assert_eq!(r.counts(), (1, MAX_ABANDONED - 1, 0));
    }

    #[test]
    fn a_waiting_lookup_of_a_closed_channel_never_starts() {
        let mut r = Resolver::default();
        let mut ok = |_: Key, _: String, _: u16| true;
        for i in 0..5 {
            r.lookup(key(i), "h".into(), 1, &mut ok);
        }
        r.abandon(key(4));
        assert_eq!(r.counts(), (4, 0, 0));
    }

    #[test]
    fn a_thread_that_cannot_start_fails_its_channel() {
        let mut r = Resolver::default();
        let failed = r.lookup(key(1), "h".into(), 1, &mut |_, _, _| false);
        assert_eq!(failed, [key(1)]);
        assert_eq!(r.counts(), (0, 0, 0));
    }
}
