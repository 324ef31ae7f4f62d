//! Host-name lookups off the I/O thread.
//!
//! The system resolver blocks, so each lookup runs on a short-lived thread
//! and reports back as a [`Command::Resolved`]; at most [`MAX_LOOKUPS`] run at
//! once and the rest wait their turn in arrival order. The waiting queue is
//! bounded by the number of open channels (one lookup per connecting
//! channel).

use std::collections::VecDeque;
use std::net::ToSocketAddrs;
use std::sync::Arc;

use super::slab::Key;
use super::{Command, Shared};

/// Host-name lookups running at once; more wait their turn.
pub(crate) const MAX_LOOKUPS: usize = 4;

#[derive(Debug)]
struct Lookup {
    key: Key,
    host: String,
    port: u16,
}

/// The lookups running and waiting.
#[derive(Debug, Default)]
pub(crate) struct Resolver {
    running: usize,
    waiting: VecDeque<Lookup>,
}

impl Resolver {
    /// Queues a lookup for the channel `key`; returns the keys of channels
    /// whose lookup thread could not be started (they must close).
    pub(crate) fn lookup(
        &mut self,
        shared: &Arc<Shared>,
        key: Key,
        host: String,
        port: u16,
        is_open: impl Fn(Key) -> bool,
    ) -> Vec<Key> {
        self.waiting.push_back(Lookup { key, host, port });
        self.start(shared, is_open)
    }

    /// A lookup reported back: the next waiting one may start.
    pub(crate) fn finished(
        &mut self,
        shared: &Arc<Shared>,
        is_open: impl Fn(Key) -> bool,
    ) -> Vec<Key> {
        self.running -= 1;
        self.start(shared, is_open)
    }

    fn start(&mut self, shared: &Arc<Shared>, is_open: impl Fn(Key) -> bool) -> Vec<Key> {
        let mut failed = Vec::new();
        while self.running < MAX_LOOKUPS {
            let Some(Lookup { key, host, port }) = self.waiting.pop_front() else {
                break;
            };
            if !is_open(key) {
                continue; // closed while it waited
            }
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name("tofu-resolve".into())
                .spawn(move || {
                    let result = (host.as_str(), port)
                        .to_socket_addrs()
                        .map(|it| it.collect::<Vec<_>>());
                    shared.push(Command::Resolved { key, result });
                });
            match spawned {
                Ok(_) => self.running += 1,
                Err(_) => failed.push(key),
            }
        }
        failed
    }
}
