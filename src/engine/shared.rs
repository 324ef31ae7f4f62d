//! The state application threads share with the I/O thread: the command
//! queue and its wake-up, the groups' receive queues, the pool, the
//! directory and the counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering, fence};
use std::sync::{Arc, Mutex, Weak};

use crossbeam_channel::{Receiver, Sender};
use crossbeam_queue::SegQueue;

use super::directory::Directory;
use super::limits::Limits;
use super::reactor::Lead;
use super::slab;
use super::stats::Counters;
use crate::address::Address;
use crate::error::Error;
use crate::message::{Message, Pool};

/// Wakes the I/O thread, at most one system call per sleep.
pub(crate) struct Wake {
    waker: mio::Waker,
    /// Set by the I/O thread just before it may block in `poll`.
    sleeping: AtomicBool,
}

impl Wake {
    pub(crate) fn new(waker: mio::Waker) -> Wake {
        Wake {
            waker,
            sleeping: AtomicBool::new(false),
        }
    }

    /// Call after publishing work (pushing a command, returning a message).
    pub(crate) fn wake(&self) {
        // Pairs with the fence in `prepare_sleep`: either the I/O thread sees
        // the work before sleeping, or we see `sleeping` and wake it.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }

    /// Wakes the I/O thread even if it looks awake (used when waiting on it).
    pub(crate) fn wake_always(&self) {
        let _ = self.waker.wake();
    }

    pub(crate) fn prepare_sleep(&self) {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    pub(crate) fn awake(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }
}

/// What a group's receive queue carries.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// A message for the application (from a peer or from the engine).
    Message(Message),
    /// The engine shut down: every waiter wakes with
    /// [`Error::ShutdownStarted`], each passing this on to the next.
    Shutdown,
}

/// Maps keyed by the small integers the engine assigns itself (channel
/// numbers, group ids). SipHash (the std default) protects against chosen
/// keys, which these are not, and it showed up on the per-message path
/// (`by_number` on every send, `groups` on every delivery: ~6 % of the
/// instructions of a 64-byte stream under callgrind); Fx is one multiply.
pub(crate) type IntMap<K, V> = rustc_hash::FxHashMap<K, V>;

pub(crate) struct GroupShared {
    pub(crate) id: u32,
    pub(crate) tx: Sender<Delivery>,
    pub(crate) rx: Receiver<Delivery>,
    /// A thread waiting on this group is blocked in `poll` itself (it leads:
    /// see `reactor::lead`), where the queue cannot wake it: a delivery
    /// from another thread wakes the poll instead.
    pub(crate) leading: AtomicBool,
}

impl GroupShared {
    pub(crate) fn new(id: u32) -> GroupShared {
        let (tx, rx) = crossbeam_channel::unbounded();
        GroupShared {
            id,
            tx,
            rx,
            leading: AtomicBool::new(false),
        }
    }

    /// Queues `d` for the group's receivers and wakes them, including one
    /// that waits in `poll`.
    pub(crate) fn push(&self, d: Delivery, wake: &Wake) {
        let _ = self.tx.send(d);
        // Pairs with the fence in `reactor::lead`: either the leader sees
        // the delivery before it polls, or we see `leading` and wake it.
        fence(Ordering::SeqCst);
        if self.leading.load(Ordering::Relaxed) {
            wake.wake();
        }
    }
}

/// Work for the I/O thread.
pub(crate) enum Command {
    CreateGroup(Arc<GroupShared>),
    DestroyGroup {
        group: u32,
        done: Sender<()>,
    },
    /// WelcomeRequest (channel number already assigned).
    Listen {
        group: u32,
        msg: Message,
        addr: Result<Address, Error>,
    },
    /// HelloRequest (channel number already assigned).
    Connect {
        group: u32,
        msg: Message,
        addr: Result<Address, Error>,
    },
    /// Anything else on an open channel (including ByeSignal).
    Send {
        group: u32,
        msg: Message,
    },
    /// A host name lookup finished.
    Resolved {
        key: slab::Key,
        result: std::io::Result<Vec<SocketAddr>>,
    },
    Shutdown,
    /// Test builds only: makes the I/O thread panic, as a bug would.
    #[cfg(test)]
    Fault,
}

pub(crate) struct Shared {
    /// The poller, and which thread runs the loop.
    pub(crate) lead: Lead,
    pub(crate) pool: Pool,
    pub(crate) commands: SegQueue<Command>,
    pub(crate) wake: Arc<Wake>,
    pub(crate) shutdown: AtomicBool,
    /// Set by the I/O thread once it will process no more commands.
    pub(crate) io_exited: AtomicBool,
    pub(crate) directory: Directory,
    /// Outgoing limits and the open-channel cap, checked by `post`.
    pub(crate) limits: Limits,
    pub(crate) counters: Counters,
    pub(crate) next_group: AtomicU32,
    /// Every group's queue, so that waiters still wake if the I/O thread
    /// dies (SPEC §5.7b). Touched only when a group is created and then.
    pub(crate) groups: Mutex<Vec<Weak<GroupShared>>>,
}

impl Shared {
    pub(crate) fn push(&self, cmd: Command) {
        self.commands.push(cmd);
        self.wake.wake();
        self.lead.poke();
    }

    /// The loop has stopped for good (shut down, or died): it processes no
    /// more commands.
    pub(crate) fn ended(&self) -> bool {
        self.io_exited.load(Ordering::Acquire)
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Remembers a new group's queue (and forgets those of dropped groups).
    pub(crate) fn add_group(&self, group: &Arc<GroupShared>) {
        if let Ok(mut groups) = self.groups.lock() {
            groups.retain(|g| g.strong_count() > 0);
            groups.push(Arc::downgrade(group));
        }
    }

    /// The I/O thread died (a bug): the engine behaves as shut down. Every
    /// call returns `ShutdownStarted`, every waiter wakes with it, dropping
    /// a group returns, messages still in commands are freed (SPEC §5.7b).
    pub(crate) fn io_thread_died(&self) {
        tracing::error!("the tofu I/O thread died: the engine is shut down");
        self.shutdown.store(true, Ordering::Release);
        self.pool.close();
        let groups = match self.groups.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for g in groups.iter().filter_map(Weak::upgrade) {
            g.push(Delivery::Shutdown, &self.wake);
        }
        self.io_exited.store(true, Ordering::Release);
        self.limits.wake_waiters();
        while let Some(cmd) = self.commands.pop() {
            if let Command::DestroyGroup { done, .. } = cmd {
                let _ = done.send(());
            }
        }
    }
}
