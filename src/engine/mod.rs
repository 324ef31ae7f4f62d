//! The engine (SPEC §5): the handle, its options and statistics, and the state
//! shared between application threads and the I/O thread.
//!
//! Application threads never touch sockets. They push [`Command`]s into one
//! lock-free queue and wake the I/O thread through the single `mio::Waker` —
//! only when it may be asleep ([`Wake`]). The I/O thread ([`reactor`]) owns every
//! socket and all channel state, and delivers messages into each group's
//! receive queue.

mod core;
mod directory;
mod group;
mod reactor;
mod resolver;
mod slab;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use crossbeam_queue::SegQueue;

pub use group::ChannelGroup;

#[cfg(any(test, feature = "unstable"))]
pub(crate) use self::core::fuzz::run as fuzz_channel;

use crate::address::Address;
use crate::error::Error;
use crate::message::{Allocation, Message, Pool};
use directory::Directory;

/// Engine settings. `0` means "the default" for the pool sizes.
///
/// ```
/// use tofu::Options;
/// let opts = Options { max_pool_msgs: 8, ..Options::default() };
/// assert_eq!(opts.initial_pool_msgs, 16);
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    /// Messages allocated into the pool at start (default 16).
    pub initial_pool_msgs: u16,
    /// Most free messages the pool keeps (default 64; raised to the initial count
    /// if lower).
    pub max_pool_msgs: u16,
    /// Bytes read from a socket per system call (default 64 KiB; kept between
    /// 4 KiB and 16 MiB).
    /// The I/O thread owns one buffer of this size, shared by all channels.
    pub read_chunk: usize,
}

/// Smallest `read_chunk` used (smaller values are raised to it).
const MIN_READ_CHUNK: usize = 4 * 1024;
/// Largest `read_chunk` used (larger values are lowered to it).
const MAX_READ_CHUNK: usize = 16 * 1024 * 1024;

/// Default `initial_pool_msgs`.
pub const DEFAULT_INITIAL_POOL_MSGS: u16 = 16;
/// Default `max_pool_msgs`.
pub const DEFAULT_MAX_POOL_MSGS: u16 = 64;

impl Default for Options {
    fn default() -> Options {
        Options {
            initial_pool_msgs: DEFAULT_INITIAL_POOL_MSGS,
            max_pool_msgs: DEFAULT_MAX_POOL_MSGS,
            read_chunk: 64 * 1024,
        }
    }
}

/// A snapshot of an engine's counters ([`Engine::stats`]). All counters are
/// cumulative since the engine started, except the gauges noted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages completely written to sockets.
    pub messages_sent: u64,
    /// Valid messages read from sockets and delivered.
    pub messages_received: u64,
    /// Bytes written to sockets.
    pub bytes_sent: u64,
    /// Bytes read from sockets.
    pub bytes_received: u64,
    /// Vectored write system calls (messages_sent / write_calls = batching).
    pub write_calls: u64,
    /// Read system calls that returned data.
    pub read_calls: u64,
    /// Times the I/O thread returned from `poll` (wake-ups).
    pub polls: u64,
    /// Gauge: open channels (listeners and I/O channels).
    pub open_channels: u64,
    /// Connections accepted by listeners.
    pub accepted: u64,
    /// Gauge: free messages in the pool.
    pub pool_free: u64,
    /// Gauge: messages taken from the pool and not yet returned.
    pub pool_outstanding: u64,
    /// Times reading stopped because the pool was empty.
    pub pool_empty_events: u64,
    /// Channels closed because of an invalid frame (SPEC §3), including the
    /// accepted connections closed silently before the application saw them.
    pub invalid_frames: u64,
    /// Accepted connections closed silently (first frame invalid, or peer gone
    /// before its HelloRequest).
    pub silent_closes: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) write_calls: AtomicU64,
    pub(crate) read_calls: AtomicU64,
    pub(crate) polls: AtomicU64,
    pub(crate) open_channels: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) pool_empty_events: AtomicU64,
    pub(crate) invalid_frames: AtomicU64,
    pub(crate) silent_closes: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn sub_open(&self) {
        self.open_channels.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Wakes the I/O thread, at most one system call per sleep.
pub(crate) struct Wake {
    waker: mio::Waker,
    /// Set by the I/O thread just before it may block in `poll`.
    sleeping: AtomicBool,
}

impl Wake {
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
}

pub(crate) struct Shared {
    pub(crate) pool: Pool,
    pub(crate) commands: SegQueue<Command>,
    pub(crate) wake: Arc<Wake>,
    pub(crate) shutdown: AtomicBool,
    /// Set by the I/O thread once it will process no more commands.
    pub(crate) io_exited: AtomicBool,
    pub(crate) directory: Directory,
    pub(crate) counters: Counters,
    next_group: AtomicU32,
}

impl Shared {
    pub(crate) fn push(&self, cmd: Command) {
        self.commands.push(cmd);
        self.wake.wake();
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }
}

struct EngineInner {
    shared: Arc<Shared>,
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
        let poll = mio::Poll::new().map_err(|_| Error::AllocationFailed)?;
        let waker = mio::Waker::new(poll.registry(), slab::WAKER_TOKEN)
            .map_err(|_| Error::AllocationFailed)?;
        let wake = Arc::new(Wake {
            waker,
            sleeping: AtomicBool::new(false),
        });
        let notify = wake.clone();
        pool.set_notify(Box::new(move || notify.wake()));
        let shared = Arc::new(Shared {
            pool,
            commands: SegQueue::new(),
            wake,
            shutdown: AtomicBool::new(false),
            io_exited: AtomicBool::new(false),
            directory: Directory::new(),
            counters: Counters::default(),
            next_group: AtomicU32::new(1),
        });
        let reactor = reactor::Reactor::new(
            poll,
            shared.clone(),
            options.read_chunk.clamp(MIN_READ_CHUNK, MAX_READ_CHUNK),
        );
        let thread = std::thread::Builder::new()
            .name("tofu-io".into())
            .spawn(move || reactor.run())
            .map_err(|_| Error::AllocationFailed)?;
        Ok(Engine {
            inner: Arc::new(EngineInner {
                shared,
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
        let (tx, rx) = crossbeam_channel::unbounded();
        let group = Arc::new(GroupShared { id, tx, rx });
        shared.push(Command::CreateGroup(group.clone()));
        Ok(ChannelGroup::new(self.clone(), group))
    }

    /// Takes a cleared message from the pool.
    ///
    /// [`Allocation::PoolOnly`] gives `Ok(None)` when the pool is empty;
    /// [`Allocation::Always`] allocates instead and never gives `None`.
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
        Stats {
            messages_sent: get(&c.messages_sent),
            messages_received: get(&c.messages_received),
            bytes_sent: get(&c.bytes_sent),
            bytes_received: get(&c.bytes_received),
            write_calls: get(&c.write_calls),
            read_calls: get(&c.read_calls),
            polls: get(&c.polls),
            open_channels: get(&c.open_channels),
            accepted: get(&c.accepted),
            pool_free: pool.len() as u64,
            pool_outstanding: pool.outstanding() as u64,
            pool_empty_events: get(&c.pool_empty_events),
            invalid_frames: get(&c.invalid_frames),
            silent_closes: get(&c.silent_closes),
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
}

impl EngineInner {
    fn shutdown(&self) {
        if !self.shared.shutdown.swap(true, Ordering::AcqRel) {
            self.shared.push(Command::Shutdown);
        }
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
