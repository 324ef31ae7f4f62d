//! The engine (SPEC §5): the handle that starts and stops the I/O thread.
//!
//! Application threads never touch sockets themselves. They push
//! [`Command`]s into one queue and wake the I/O thread through the single
//! `mio::Waker` — only when it may be asleep ([`Wake`]) — or, where that
//! saves a thread hand-off (SPEC §7), take the reactor's lock and do the
//! work on their own thread (an inline write, a batch, running the loop
//! while waiting to receive). The [`reactor`] owns every socket and carries
//! out what the sans-IO [`core`] decides, and delivers messages into each
//! group's receive queue. `docs/architecture.md` has the whole map.

mod core;
mod directory;
mod group;
pub(crate) mod limits;
mod options;
mod reactor;
mod resolver;
mod shared;
mod slab;
mod stats;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub use group::ChannelGroup;
pub use options::{
    DEFAULT_INITIAL_POOL_MSGS, DEFAULT_MAX_POOL_MSGS, DEFAULT_UNIX_SEND_BUFFER, MAX_RECEIVE_SPIN,
    Options,
};
pub use stats::Stats;

#[cfg(any(test, feature = "unstable"))]
pub(crate) use self::core::fuzz::run as fuzz_channel;
pub(crate) use shared::{Command, Delivery, GroupShared, IntMap, Shared, Wake};
pub(crate) use stats::Counters;

use crate::error::Error;
use crate::message::{Allocation, Message, Pool};
use directory::Directory;
use options::{MAX_READ_CHUNK, MIN_READ_CHUNK};

/// Engine numbers for the `tofu_engine{id}` span, in creation order.
static NEXT_ENGINE_ID: AtomicU64 = AtomicU64::new(1);

struct EngineInner {
    /// `tofu_engine{id}`: entered wherever this engine's loop runs (its I/O
    /// thread, a leading receiver, an inline post), so a subscriber sees
    /// which engine an event belongs to. Disabled (no cost but a branch)
    /// unless a subscriber wanted DEBUG spans when the engine started.
    span: tracing::Span,
    shared: Arc<Shared>,
    /// The I/O thread's state; a posting thread may take it to write to an
    /// idle socket itself (SPEC §7).
    reactor: Arc<Mutex<reactor::Reactor>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The engine: an I/O thread, its message pool and its channels.
///
/// A cheap `Clone` handle; the engine shuts down on [`Engine::shutdown`] or when
/// the last handle (including those held by [`ChannelGroup`]s) is dropped.
///
/// # Examples
///
/// ```
/// use tofu::{Allocation, Engine, Options};
///
/// let engine = Engine::new(Options::default())?;
/// let msg = engine.get(Allocation::PoolOnly)?.expect("16 messages at start");
/// engine.put(msg);
/// engine.shutdown();
/// assert!(engine.get(Allocation::Always).is_err());
/// # Ok::<(), tofu::Error>(())
/// ```
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl Engine {
    /// Starts an engine: fills the pool and spawns the I/O thread.
    ///
    /// # Errors
    ///
    /// [`Error::AllocationFailed`] when the poller or the thread cannot be
    /// created.
    pub fn new(options: Options) -> Result<Engine, Error> {
        let initial = match options.initial_pool_msgs {
            0 => DEFAULT_INITIAL_POOL_MSGS,
            n => n,
        };
        let max = match options.max_pool_msgs {
            0 => DEFAULT_MAX_POOL_MSGS,
            n => n,
        }
        .max(initial);
        let pool = Pool::new(initial as usize, max as usize);
        pool.set_reserve(core::backpressure::partial_reserve(pool.capacity()));
        let poll = mio::Poll::new().map_err(|_| Error::AllocationFailed)?;
        let waker = mio::Waker::new(poll.registry(), slab::WAKER_TOKEN)
            .map_err(|_| Error::AllocationFailed)?;
        let wake = Arc::new(Wake::new(waker));
        let notify = wake.clone();
        pool.set_notify(Box::new(move || notify.wake()));
        let registry = poll
            .registry()
            .try_clone()
            .map_err(|_| Error::AllocationFailed)?;
        let (lead, io_parker) =
            reactor::Lead::new(poll, options.receive_spin.min(options::MAX_RECEIVE_SPIN));
        let shared = Arc::new(Shared {
            lead,
            pool,
            commands: shared::CommandQueue::default(),
            wake,
            shutdown: AtomicBool::new(false),
            io_exited: AtomicBool::new(false),
            directory: Directory::new(),
            limits: limits::Limits::new(
                match options.channel_send_limit {
                    0 => options::DEFAULT_CHANNEL_SEND_LIMIT,
                    n => n,
                },
                match options.engine_send_limit {
                    0 => options::DEFAULT_ENGINE_SEND_LIMIT,
                    n => n,
                },
                match options.max_channels {
                    0 => directory::MAX_CHANNEL,
                    n => n.min(directory::MAX_CHANNEL),
                } as usize,
            ),
            counters: Counters::default(),
            next_group: AtomicU32::new(1),
            groups: Mutex::new(Vec::new()),
        });

        let reactor = reactor::Reactor::new(
            registry,
            shared.clone(),
            options.read_chunk.clamp(MIN_READ_CHUNK, MAX_READ_CHUNK),
            core::Timeouts {
                hello: options.hello_timeout,
                bye: options.bye_timeout,
                lookup: options.lookup_timeout,
                idle: options.idle_timeout,
            },
            match options.partial_frame_budget {
                0 => options::DEFAULT_PARTIAL_FRAME_BUDGET,
                n => n,
            },
            crate::sys::StreamSettings {
                keepalive: options.tcp_keepalive,
                unix_send_buffer: options.unix_send_buffer,
            },
        );
        let reactor = Arc::new(Mutex::new(reactor));
        let (looped, watched) = (reactor.clone(), shared.clone());
        let id = NEXT_ENGINE_ID.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!("tofu_engine", id);
        let io_span = span.clone();
        let thread = std::thread::Builder::new()
            .name("tofu-io".into())
            .spawn(move || {
                // A panic is a bug (or a user's tracing subscriber that
                // panics, entering the span included); it must not leave
                // waiters hanging.
                let run = std::panic::AssertUnwindSafe(|| {
                    let _entered = io_span.enter();
                    reactor::run(&looped, &watched, io_parker);
                });
                if std::panic::catch_unwind(run).is_err() {
                    watched.io_thread_died();
                }
            })
            .map_err(|_| Error::AllocationFailed)?;
        Ok(Engine {
            inner: Arc::new(EngineInner {
                span,
                shared,
                reactor,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Creates a channel group: the application's handle to post and receive.
    ///
    /// # Errors
    ///
    /// [`Error::ShutdownStarted`] after shutdown.
    pub fn create_group(&self) -> Result<ChannelGroup, Error> {
        let shared = &self.inner.shared;
        if shared.is_shut_down() {
            return Err(Error::ShutdownStarted);
        }
        let id = shared.next_group.fetch_add(1, Ordering::Relaxed);
        let group = Arc::new(GroupShared::new(id));
        shared.add_group(&group);
        shared.push(Command::CreateGroup(group.clone()));
        Ok(ChannelGroup::new(self.clone(), group))
    }

    /// Takes a cleared message from the pool.
    ///
    /// [`Allocation::PoolOnly`] gives `Ok(None)` when the pool is empty;
    /// [`Allocation::Always`] allocates instead and never gives `None` — and
    /// also allocates rather than take the last few free messages (an eighth
    /// of `max_pool_msgs`, at most 8), which the engine keeps for reading:
    /// messages posted to a peer in the same engine could otherwise hold every
    /// message it needs to read that peer's answers.
    ///
    /// # Errors
    ///
    /// [`Error::ShutdownStarted`] after shutdown.
    pub fn get(&self, how: Allocation) -> Result<Option<Message>, Error> {
        if self.inner.shared.is_shut_down() {
            return Err(Error::ShutdownStarted);
        }
        Ok(self.inner.shared.pool.get(how))
    }

    /// Takes `n` messages at once, as `n` calls of [`get`](Self::get) would,
    /// with one lock on the pool (see
    /// [`Pool::get_many`](crate::Pool::get_many)): for building a batch to
    /// [`post_batch`](crate::ChannelGroup::post_batch). Returns how many
    /// were appended to `out`.
    ///
    /// # Errors
    ///
    /// [`Error::ShutdownStarted`] after shutdown.
    ///
    /// # Examples
    ///
    /// ```
    /// use tofu::{Allocation, Engine, Options};
    ///
    /// let engine = Engine::new(Options::default())?;
    /// let mut batch = Vec::new();
    /// assert_eq!(engine.get_many(Allocation::Always, 100, &mut batch)?, 100);
    /// # Ok::<(), tofu::Error>(())
    /// ```
    pub fn get_many(
        &self,
        how: Allocation,
        n: usize,
        out: &mut Vec<Message>,
    ) -> Result<usize, Error> {
        if self.inner.shared.is_shut_down() {
            return Err(Error::ShutdownStarted);
        }
        Ok(self.inner.shared.pool.get_many(how, n, out))
    }

    /// Gives every message of `msgs` back to the pool as [`put`](Self::put)
    /// does, the engine's own messages under one lock (see
    /// [`Pool::put_many`](crate::Pool::put_many)); `msgs` is empty
    /// afterwards.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tofu::{Engine, Options};
    ///
    /// let engine = Engine::new(Options::default())?;
    /// let group = engine.create_group()?;
    /// group.update_receiver(None)?;
    /// let mut got = Vec::new();
    /// group.receive_many(&mut got, 64, Some(Duration::ZERO))?;
    /// engine.put_many(&mut got);
    /// assert!(got.is_empty());
    /// # Ok::<(), tofu::Error>(())
    /// ```
    pub fn put_many(&self, msgs: &mut Vec<Message>) {
        self.inner.shared.pool.put_many(msgs);
    }

    /// Gives a message back to the pool (or adopts a standalone one). It is freed
    /// when the pool is full or the engine has shut down.
    pub fn put(&self, msg: Message) {
        self.inner.shared.pool.put(msg);
    }

    /// A snapshot of the engine's counters.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.shared.counters;
        let pool = &self.inner.shared.pool;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (queued_bytes, queued_messages) = self.inner.shared.limits.queued();
        Stats {
            messages_sent: get(&c.messages_sent),
            messages_received: get(&c.messages_received),
            bytes_sent: get(&c.bytes_sent),
            bytes_received: get(&c.bytes_received),
            write_calls: get(&c.write_calls),
            read_calls: get(&c.read_calls),
            bytes_read_in_place: get(&c.bytes_read_in_place),
            empty_reads: get(&c.empty_reads),
            polls: get(&c.polls),
            waiter_polls: get(&c.waiter_polls),
            // Pairs with `Counters::sub_open`: a close counted here has its
            // partial frames out of `partial_frame_bytes` (read below).
            open_channels: c.open_channels.load(Ordering::Acquire),
            accepted: get(&c.accepted),
            pool_free: pool.len() as u64,
            pool_outstanding: pool.outstanding() as u64,
            pool_empty_events: get(&c.pool_empty_events),
            invalid_frames: get(&c.invalid_frames),
            silent_closes: get(&c.silent_closes),
            hello_timeouts: get(&c.hello_timeouts),
            bye_timeouts: get(&c.bye_timeouts),
            lookup_timeouts: get(&c.lookup_timeouts),
            idle_timeouts: get(&c.idle_timeouts),
            partial_frame_bytes: get(&c.partial_frame_bytes),
            queued_bytes: queued_bytes as u64,
            queued_messages: queued_messages as u64,
            send_limit_refusals: get(&c.send_limit_refusals),
            inline_posts: get(&c.inline_posts),
            accept_pauses: get(&c.accept_pauses),
        }
    }

    /// `true` once shutdown has started.
    pub fn is_shut_down(&self) -> bool {
        self.inner.shared.is_shut_down()
    }

    /// Shuts the engine down: closes every socket, stops and joins the I/O
    /// thread, frees the pool. Idempotent; blocked `wait_receive` calls wake with
    /// [`Error::ShutdownStarted`].
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Refills the reserve of channel numbers on this thread if the I/O
    /// thread does not hold the reactor, and takes one.
    pub(crate) fn refill_reserve(&self) -> Option<u16> {
        let inner = &*self.inner;
        let mut r = reactor::Held::new(inner.reactor.try_lock().ok()?);
        r.refill_reserve();
        drop(r);
        inner.shared.directory.reserve.pop()
    }

    /// Hands a post on an open channel to the engine. When no command is
    /// waiting (so nothing posted earlier can be overtaken), the I/O thread
    /// does not hold the reactor and the poster is not `busy` (its group has
    /// messages waiting: more posts will follow, better written together),
    /// the posting thread does the work itself: no hand-off to the I/O
    /// thread. Never blocks: the lock is only tried.
    /// `wait_receive` with nothing queued: runs the event loop on the
    /// calling thread if nobody else does (see `reactor::lead`).
    pub(crate) fn lead_receive(
        &self,
        group: &GroupShared,
        deadline: Option<std::time::Instant>,
        spin_until: Option<std::time::Instant>,
    ) -> Result<reactor::Led, Error> {
        let _entered = self.inner.span.enter();
        reactor::receive(
            &self.inner.reactor,
            &self.inner.shared,
            group,
            deadline,
            spin_until,
        )
    }

    pub(crate) fn send(&self, group: u32, msg: Message, busy: bool) {
        let shared = &self.inner.shared;
        let msg = if busy {
            Some(msg)
        } else {
            self.send_inline(group, msg)
        };
        if let Some(msg) = msg {
            shared.push(Command::Send { group, msg });
        }
    }

    /// Hands a batch of posts (already counted) to the engine:
    /// written by this thread when nothing queued could be overtaken and
    /// the I/O thread does not hold the reactor, else queued with one lock
    /// and one wake-up.
    pub(crate) fn send_batch(&self, group: u32, mut msgs: std::vec::Drain<'_, Message>) {
        let inner = &*self.inner;
        let shared = &inner.shared;
        // A batch waits for the reactor when another thread holds it (for
        // non-blocking work only: a write, a read, the bookkeeping around
        // them) rather than hand its messages to that thread: a stream
        // into a full socket, whose writable events the I/O thread
        // handles, otherwise moves all its writes to the I/O thread. A
        // thread that already holds a reactor (a post from a waker the
        // reactor runs) only tries.
        let locked = if reactor::holding_a_reactor() {
            inner.reactor.try_lock().ok()
        } else {
            inner.reactor.lock().ok()
        };
        if let Some(r) = locked {
            let mut r = reactor::Held::new(r);
            // Posts queued while the lock was busy go first, on this
            // thread: then the batch overtakes nothing.
            let settled = r.post_inline_batch(group, &mut msgs);
            drop(r);
            if settled.is_some() {
                shared.lead.note_post();
            }
            match settled {
                Some(true) => return,
                Some(false) => {
                    shared.wake.wake();
                    shared.lead.poke();
                    return;
                }
                // Other commands wait: the batch goes behind them.
                None => {}
            }
        }
        shared.push_many(msgs.map(|msg| Command::Send { group, msg }));
    }

    /// The inline half of [`Engine::send`]: `None` when the posting thread
    /// did the work, the message back when it goes through the queue.
    fn send_inline(&self, group: u32, msg: Message) -> Option<Message> {
        let inner = &*self.inner;
        let shared = &inner.shared;
        if !shared.commands.is_empty() {
            return Some(msg);
        }
        let Ok(r) = inner.reactor.try_lock() else {
            return Some(msg);
        };
        let mut r = reactor::Held::new(r);
        if !shared.commands.is_empty() || r.commands_waiting() {
            return Some(msg);
        }
        let settled = {
            let _entered = inner.span.enter();
            r.post_inline(group, msg)
        };
        drop(r);
        if settled.is_ok() {
            shared.lead.note_post();
        }
        match settled {
            Ok(true) => None,
            Ok(false) => {
                // Work left for the poller (a partial write, a deadline): wake
                // it, or the I/O thread if nobody polls.
                shared.wake.wake();
                shared.lead.poke();
                None
            }
            Err(burst) => Some(burst),
        }
    }
}

impl EngineInner {
    fn shutdown(&self) {
        if !self.shared.shutdown.swap(true, Ordering::AcqRel) {
            self.shared.push(Command::Shutdown);
        }
        self.shared.lead.unpark_io();
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(handle) = handle {
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("shut_down", &self.is_shut_down())
            .field("pool", &self.inner.shared.pool)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Address, OpCode, Status};

    /// A batch the posting thread writes itself marks the application as
    /// posting (`Lead::posted`, which keeps the I/O thread's lease going,
    /// `reactor::lead`); posts that never reach the reactor do not.
    #[test]
    fn an_inline_batch_marks_the_application_as_posting() {
        let port = crate::testing::free_tcp_port().unwrap();
        let server = Engine::new(Options::default()).unwrap();
        let sgroup = server.create_group().unwrap();
        sgroup
            .listen(&Address::tcp_server("127.0.0.1", port))
            .unwrap();
        let w = sgroup.wait_receive(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(w.unwrap().status(), Status::Success);
        let client = Engine::new(Options::default()).unwrap();
        let group = client.create_group().unwrap();
        let ch = group
            .connect(&Address::tcp_client("127.0.0.1", port))
            .unwrap();
        // The server's application answers the HelloRequest.
        let mut hello = sgroup
            .wait_receive(Some(Duration::from_secs(10)))
            .unwrap()
            .unwrap();
        assert_eq!(hello.opcode(), OpCode::HelloRequest);
        hello.header.proto.opcode = OpCode::HelloResponse;
        sgroup.post(hello).unwrap();
        let h = group.wait_receive(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(h.unwrap().opcode(), OpCode::HelloResponse);
        let lead = &client.shared().lead;
        // Ten leases with no post and no receive: the I/O thread has taken
        // the poller back (it clears the flag only when it starts a lease,
        // which it does again only after a delivery wakes a receiver).
        std::thread::sleep(Duration::from_millis(5));
        lead.clear_posted();
        // Refused before the engine sees it (no such channel): not posting.
        let mut bad = vec![Message::new()];
        bad[0].header.channel_number = ch.wrapping_add(100);
        assert!(group.post_batch(&mut bad).is_err());
        assert!(!lead.posted_since_cleared());
        let mut msgs: Vec<Message> = (0..4)
            .map(|_| {
                let mut m = Message::new();
                m.header.channel_number = ch;
                m.header.proto.opcode = OpCode::Signal;
                m
            })
            .collect();
        group.post_batch(&mut msgs).unwrap();
        assert!(lead.posted_since_cleared());
    }

    /// SPEC §5.7b: if the I/O thread dies, the engine behaves as shut down —
    /// a blocked waiter wakes, calls fail with `ShutdownStarted`, drops
    /// return. The fault is injected with a test-only command.
    #[test]
    fn a_dead_io_thread_takes_nobody_down_with_it() {
        let engine = Engine::new(Options::default()).unwrap();
        let group = Arc::new(engine.create_group().unwrap());
        let other = engine.create_group().unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let waiter = {
            let group = group.clone();
            std::thread::spawn(move || {
                let _ = tx.send(group.wait_receive(None));
            })
        };
        std::thread::sleep(Duration::from_millis(20)); // let it block
        engine.shared().push(Command::Fault);
        let woke = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the waiter woke");
        assert_eq!(woke.unwrap_err(), Error::ShutdownStarted);
        waiter.join().unwrap();
        assert!(engine.is_shut_down());
        assert_eq!(
            other
                .wait_receive(Some(Duration::from_secs(10)))
                .unwrap_err(),
            Error::ShutdownStarted
        );
        assert_eq!(
            engine.get(Allocation::Always).unwrap_err(),
            Error::ShutdownStarted
        );
        let mut m = Message::new();
        m.header.channel_number = 5;
        assert_eq!(group.post(m).unwrap_err().error, Error::ShutdownStarted);
        // Dropping everything returns (bounded by the test's own timeout).
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            drop(other);
            drop(group);
            engine.shutdown();
            drop(engine);
            let _ = done_tx.send(());
        });
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("drops and shutdown return");
    }
}
