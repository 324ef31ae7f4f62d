//! The state application threads share with the I/O thread: the command
//! queue and its wake-up, the groups' receive queues, the pool, the
//! directory and the counters.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::{Poll, Waker};
use std::time::Instant;

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
    /// [`Error::ShutdownStarted`]. The queue keeps a mark, not an entry
    /// (`QueueInner::shutdown`): every later receive gets this too.
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
    /// What the group's receivers get, in order.
    pub(crate) queue: GroupQueue,
    /// A thread waiting on this group is blocked in `poll` itself (it leads:
    /// see `reactor::lead`), where the queue cannot wake it: a delivery
    /// from another thread wakes the poll instead.
    pub(crate) leading: AtomicBool,
}

impl GroupShared {
    pub(crate) fn new(id: u32) -> GroupShared {
        GroupShared {
            id,
            queue: GroupQueue::default(),
            leading: AtomicBool::new(false),
        }
    }

    /// Queues `d` for the group's receivers and wakes them, including one
    /// that waits in `poll`. Returns whether a thread blocked on the queue
    /// was woken.
    pub(crate) fn push(&self, d: Delivery, wake: &Wake) -> bool {
        match d {
            Delivery::Message(msg) => self.push_with(wake, |q| q.push_back(msg)),
            Delivery::Shutdown => self.push_shutdown(wake),
        }
    }

    /// Marks the group's queue as ended (the engine shut down) and wakes
    /// every receiver: each, after the messages still queued, gets
    /// [`Delivery::Shutdown`], as does every later one.
    fn push_shutdown(&self, wake: &Wake) -> bool {
        let woke = self.queue.shut();
        fence(Ordering::SeqCst);
        if self.leading.load(Ordering::Relaxed) {
            wake.wake();
        }
        woke
    }

    /// Queues what `fill` adds (every frame of one read, say) under one
    /// lock, with one wake-up. Returns whether a thread blocked on the
    /// queue was woken.
    pub(crate) fn push_with(&self, wake: &Wake, fill: impl FnOnce(&mut VecDeque<Message>)) -> bool {
        let woke = self.queue.push_with(fill);
        // Pairs with the fence in `reactor::lead`: either the leader sees
        // the delivery before it polls, or we see `leading` and wake it.
        fence(Ordering::SeqCst);
        if self.leading.load(Ordering::Relaxed) {
            wake.wake();
        }
        woke
    }
}

/// A group's receive queue: a `VecDeque` behind a mutex, with a condition
/// variable for the threads blocked in `wait_receive` (followers) and the
/// wakers of pending `receive_async` futures (one entry per future). Unlike a
/// linked channel it allocates nothing per message once it has grown, and a
/// whole read's frames go in with one lock. Its length is also kept in an
/// atomic, for the checks that must not lock (`post`'s "busy", a leader's
/// "ready").
#[derive(Default)]
pub(crate) struct GroupQueue {
    inner: Mutex<QueueInner>,
    ready: Condvar,
    len: AtomicUsize,
    /// Threads watching the queue without sleeping (`Options::receive_spin`):
    /// a push they see counts as waking a thread, as for a sleeper (the
    /// poller then steps aside for it).
    spinners: AtomicUsize,
}

#[derive(Default)]
struct QueueInner {
    items: VecDeque<Message>,
    /// The engine shut down: once `items` is empty, every receiver gets
    /// [`Delivery::Shutdown`] (it stays set).
    shutdown: bool,
    /// Threads blocked in [`GroupQueue::pop_until`].
    sleepers: usize,
    /// The wakers of pending async receivers ([`GroupQueue::poll_pop`]), one
    /// entry per future, keyed by a waiter id; woken (all) by every push.
    /// Bounded by the pending futures: each registers at most one entry and
    /// removes it when it completes or is dropped.
    wakers: Vec<(u64, Waker)>,
    /// The id of the next async waiter.
    next_waiter: u64,
}

/// Capacity a drained queue keeps (a burst's worth is given back).
const QUEUE_KEEP: usize = 1024;

/// A thread spinning on a [`GroupQueue`] ([`GroupQueue::spinning`]).
pub(crate) struct Spinning<'a>(&'a AtomicUsize);

impl Drop for Spinning<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl GroupQueue {
    fn lock(&self) -> MutexGuard<'_, QueueInner> {
        // Nothing here can panic half-way through an update.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the atomic length says: messages, plus one for the shutdown.
    fn store_len(&self, q: &QueueInner) {
        self.len
            .store(q.items.len() + usize::from(q.shutdown), Ordering::SeqCst);
    }

    fn push_with(&self, fill: impl FnOnce(&mut VecDeque<Message>)) -> bool {
        let mut q = self.lock();
        let before = q.items.len();
        fill(&mut q.items);
        let added = q.items.len() - before;
        self.store_len(&q);
        self.woken(q, added)
    }

    /// Marks the queue as ended and wakes every thread blocked on it and
    /// every async waiter (once).
    fn shut(&self) -> bool {
        let mut q = self.lock();
        if q.shutdown {
            return false;
        }
        q.shutdown = true;
        self.store_len(&q);
        // Counted as one delivery per sleeper: every one of them wakes.
        let sleepers = q.sleepers;
        self.woken(q, sleepers.max(1))
    }

    /// Wakes the waiters for `added` new deliveries (the lock released
    /// first); whether a thread blocked on the queue was woken.
    fn woken(&self, q: MutexGuard<'_, QueueInner>, added: usize) -> bool {
        let sleepers = q.sleepers;
        // Every async waiter is woken (each may be dropped before it looks:
        // waking only one could leave the message behind for a waiter
        // that never comes); outside the lock, in case an executor polls
        // the woken task at once on this thread.
        let wakers = match q.wakers.as_slice() {
            _ if added == 0 => Wakers::None,
            [] => Wakers::None,
            [(_, w)] => Wakers::One(w.clone()),
            many => Wakers::Many(many.iter().map(|(_, w)| w.clone()).collect()),
        };
        drop(q);
        wakers.wake();
        if added > 0 && self.spinners.load(Ordering::SeqCst) > 0 {
            // A spinning follower takes it without a wake-up; it counts as
            // woken (it will want the poller next).
            if sleepers > 0 {
                self.ready.notify_all();
            }
            return true;
        }
        match (added, sleepers) {
            (0, _) | (_, 0) => return false,
            (1, _) => self.ready.notify_one(),
            _ => self.ready.notify_all(),
        }
        true
    }

    /// Nothing queued (without locking).
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::SeqCst) == 0
    }

    /// Counts the caller as spinning on the queue until the guard drops.
    pub(crate) fn spinning(&self) -> Spinning<'_> {
        self.spinners.fetch_add(1, Ordering::SeqCst);
        Spinning(&self.spinners)
    }

    /// Deliveries queued (without locking).
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    fn take(&self, q: &mut QueueInner) -> Option<Delivery> {
        let Some(msg) = q.items.pop_front() else {
            return q.shutdown.then_some(Delivery::Shutdown);
        };
        self.store_len(q);
        if q.items.is_empty() && q.items.capacity() > QUEUE_KEEP {
            q.items.shrink_to(QUEUE_KEEP);
        }
        Some(Delivery::Message(msg))
    }

    /// Frees every queued message (the group is going away); a shutdown
    /// mark stays.
    pub(crate) fn clear(&self) {
        let items = {
            let mut q = self.lock();
            let items = std::mem::take(&mut q.items);
            self.store_len(&q);
            items
        };
        // Back to their pool outside the lock.
        drop(items);
    }

    pub(crate) fn try_pop(&self) -> Option<Delivery> {
        if self.is_empty() {
            return None;
        }
        let mut q = self.lock();
        self.take(&mut q)
    }

    /// Moves up to `max` queued messages behind those in `out` under one
    /// lock (a shutdown is left for the next receive). Returns how many
    /// were moved.
    pub(crate) fn take_many(&self, out: &mut Vec<Message>, max: usize) -> usize {
        if max == 0 || self.is_empty() {
            return 0;
        }
        let mut q = self.lock();
        let n = q.items.len().min(max);
        if n == q.items.len() && q.items.capacity() <= QUEUE_KEEP {
            // All of them (the common case): moved as one block, and the
            // queue keeps its buffer (`Vec::from` and back reuse it).
            let mut all = Vec::from(std::mem::take(&mut q.items));
            out.append(&mut all);
            q.items = VecDeque::from(all);
        } else {
            out.extend(q.items.drain(..n));
        }
        if n > 0 {
            self.store_len(&q);
            if q.items.is_empty() && q.items.capacity() > QUEUE_KEEP {
                q.items.shrink_to(QUEUE_KEEP);
            }
        }
        n
    }

    /// The next delivery, waiting until `deadline` (`None`: forever);
    /// `None` when the deadline passed.
    pub(crate) fn pop_until(&self, deadline: Option<Instant>) -> Option<Delivery> {
        let mut q = self.lock();
        loop {
            if let Some(d) = self.take(&mut q) {
                return Some(d);
            }
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return None,
                },
            };
            q.sleepers += 1;
            q = match left {
                None => self.ready.wait(q).unwrap_or_else(|p| p.into_inner()),
                Some(left) => {
                    self.ready
                        .wait_timeout(q, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            q.sleepers -= 1;
        }
    }

    /// For an async receiver: the next delivery, or registers `waker` under
    /// `waiter` (given an id the first time) and returns `Pending`. A
    /// delivery is taken only when this returns `Ready` (cancel safety), and
    /// then the waiter's entry is removed (`waiter` is `None` again).
    pub(crate) fn poll_pop(&self, waiter: &mut Option<u64>, waker: &Waker) -> Poll<Delivery> {
        let mut q = self.lock();
        if let Some(d) = self.take(&mut q) {
            if let Some(id) = waiter.take() {
                q.wakers.retain(|(w, _)| *w != id);
            }
            return Poll::Ready(d);
        }
        let entry = waiter.and_then(|id| q.wakers.iter_mut().find(|(w, _)| *w == id));
        match entry {
            Some((_, w)) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
            }
            None => {
                let id = q.next_waiter;
                q.next_waiter += 1;
                q.wakers.push((id, waker.clone()));
                *waiter = Some(id);
            }
        }
        Poll::Pending
    }

    /// Removes an async waiter's entry (its future was dropped).
    pub(crate) fn deregister(&self, waiter: u64) {
        self.lock().wakers.retain(|(w, _)| *w != waiter);
    }

    /// Async waiters registered (for tests).
    #[cfg(test)]
    pub(crate) fn async_waiters(&self) -> usize {
        self.lock().wakers.len()
    }
}

/// The wakers one push wakes, taken out of the lock (no allocation for one).
enum Wakers {
    None,
    One(Waker),
    Many(Vec<Waker>),
}

impl Wakers {
    fn wake(self) {
        match self {
            Wakers::None => {}
            Wakers::One(w) => w.wake(),
            Wakers::Many(ws) => ws.into_iter().for_each(Waker::wake),
        }
    }
}

/// The engine's command queue: a `VecDeque` behind a mutex. Posting
/// threads push one command each (no allocation once it has grown, unlike
/// a segmented queue's block every 31 entries); the loop takes everything
/// queued with one lock ([`take_all`](Self::take_all)). Bounded by what
/// `post` checks before it pushes (see `docs/architecture.md`).
#[derive(Default)]
pub(crate) struct CommandQueue {
    inner: Mutex<VecDeque<Command>>,
    len: AtomicUsize,
}

impl CommandQueue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Command>> {
        // Nothing here can panic half-way through an update.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push(&self, cmd: Command) {
        let mut q = self.lock();
        q.push_back(cmd);
        self.len.store(q.len(), Ordering::SeqCst);
    }

    /// Pushes every command of `cmds`, in order, under one lock.
    pub(crate) fn push_many(&self, cmds: impl Iterator<Item = Command>) {
        let mut q = self.lock();
        q.extend(cmds);
        self.len.store(q.len(), Ordering::SeqCst);
    }

    /// Nothing queued (without locking).
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::SeqCst) == 0
    }

    /// The oldest command (for draining at the end).
    pub(crate) fn pop(&self) -> Option<Command> {
        let mut q = self.lock();
        let cmd = q.pop_front();
        self.len.store(q.len(), Ordering::SeqCst);
        cmd
    }

    /// Moves every queued command behind those in `out`, oldest first.
    pub(crate) fn take_all(&self, out: &mut VecDeque<Command>) {
        if self.is_empty() {
            return;
        }
        let mut q = self.lock();
        if out.is_empty() {
            std::mem::swap(&mut *q, out);
        } else {
            out.extend(q.drain(..));
        }
        self.len.store(0, Ordering::SeqCst);
    }
}

/// Work for the I/O thread.
pub(crate) enum Command {
    CreateGroup(Arc<GroupShared>),
    DestroyGroup {
        group: u32,
        done: crossbeam_channel::Sender<()>,
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
    pub(crate) commands: CommandQueue,
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

    /// [`push`](Self::push) for several commands: one lock, one wake-up.
    pub(crate) fn push_many(&self, cmds: impl Iterator<Item = Command>) {
        self.commands.push_many(cmds);
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

    /// A post's channel turned out closed after `post` had checked for a
    /// shutdown: when the shutdown began meanwhile (and closed it), that is
    /// what the caller is told, as every call after a shutdown is.
    pub(crate) fn closed_by_shutdown(&self, error: Error) -> Error {
        if error == Error::InvalidChannelNumber && self.is_shut_down() {
            Error::ShutdownStarted
        } else {
            error
        }
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
        self.shutdown.store(true, Ordering::Release);
        self.pool.close();
        let groups = match self.groups.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for g in groups.iter().filter_map(Weak::upgrade) {
            let _ = g.push(Delivery::Shutdown, &self.wake);
        }
        self.io_exited.store(true, Ordering::Release);
        self.limits.wake_waiters();
        while let Some(cmd) = self.commands.pop() {
            if let Command::DestroyGroup { done, .. } = cmd {
                let _ = done.send(());
            }
        }
        // Last: a user's subscriber that panics here (on a dying thread)
        // can no longer leave anyone waiting.
        tracing::error!("the tofu I/O thread died: the engine is shut down");
    }
}

#[cfg(test)]
mod tests {
    use super::{Delivery, GroupShared, Wake};
    use crate::message::Message;

    fn wake() -> (mio::Poll, Wake) {
        let poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).unwrap();
        (poll, Wake::new(waker))
    }

    /// A delivery to a group with a spinning follower (`receive_spin`)
    /// counts as waking a thread, so that the poller steps aside for it
    /// (the lease); without one, a push with nobody blocked wakes nobody.
    #[test]
    fn a_push_to_a_spinning_follower_counts_as_a_wake_up() {
        let (_poll, wake) = wake();
        let group = GroupShared::new(1);
        let msg = || Delivery::Message(Message::new());
        assert!(!group.push(msg(), &wake), "nobody waits");
        {
            let _spinning = group.queue.spinning();
            assert!(group.push(msg(), &wake), "a follower spins");
        }
        assert!(!group.push(msg(), &wake), "it stopped spinning");
        assert_eq!(group.queue.len(), 3, "every delivery was queued");
    }

    /// The shutdown mark: messages queued before it come first (also in a
    /// batch), then every receive gets it, and it wakes every blocked
    /// receiver at once; clearing the queue keeps it.
    #[test]
    fn a_shutdown_reaches_every_receiver_after_the_messages() {
        let (_poll, wake) = wake();
        let group = std::sync::Arc::new(GroupShared::new(1));
        let sleepers: Vec<_> = (0..3)
            .map(|_| {
                let g = group.clone();
                std::thread::spawn(move || {
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                    let mut got = Vec::new();
                    while let Some(d) = g.queue.pop_until(Some(deadline)) {
                        let end = matches!(d, Delivery::Shutdown);
                        got.push(d);
                        if end {
                            break;
                        }
                    }
                    got
                })
            })
            .collect();
        let m = |id| {
            let mut m = Message::new();
            m.header.message_id = id;
            Delivery::Message(m)
        };
        group.push(m(1), &wake);
        group.push(m(2), &wake);
        group.push(Delivery::Shutdown, &wake);
        let mut ids = Vec::new();
        for t in sleepers {
            let got = t.join().unwrap();
            assert!(
                matches!(got.last(), Some(Delivery::Shutdown)),
                "each ends with it"
            );
            ids.extend(got.iter().filter_map(|d| match d {
                Delivery::Message(m) => Some(m.header.message_id),
                Delivery::Shutdown => None,
            }));
        }
        ids.sort_unstable();
        assert_eq!(ids, [1, 2], "every message once, before the mark");

        let group = GroupShared::new(2);
        group.push(m(3), &wake);
        group.push(Delivery::Shutdown, &wake);
        group.push(m(4), &wake);
        let mut out = Vec::new();
        assert_eq!(group.queue.take_many(&mut out, 64), 2, "the messages first");
        assert_eq!(group.queue.take_many(&mut out, 64), 0);
        for _ in 0..3 {
            assert!(matches!(group.queue.try_pop(), Some(Delivery::Shutdown)));
        }
        group.push(m(5), &wake);
        group.queue.clear();
        assert!(!group.queue.is_empty(), "the mark stays");
        assert!(matches!(group.queue.try_pop(), Some(Delivery::Shutdown)));
    }
}
