//! Engine settings and their limits.

use std::time::Duration;

/// Default `partial_frame_budget`.
pub(crate) const DEFAULT_PARTIAL_FRAME_BUDGET: usize = 4 * 1024 * 1024;

/// Default `channel_send_limit`.
pub(crate) const DEFAULT_CHANNEL_SEND_LIMIT: usize = 8 * 1024 * 1024;
/// Default `engine_send_limit`.
pub(crate) const DEFAULT_ENGINE_SEND_LIMIT: usize = 64 * 1024 * 1024;

/// Default hello and bye timeouts (SPEC §5.7a).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Most messages the pool keeps (default 64; raised to the initial count
    /// if lower). When reading finds the pool empty, the engine adds
    /// messages up to this many (free and handed out); beyond it, it stops
    /// reading until messages come back. Messages the application allocates
    /// with [`Allocation::Always`](crate::Allocation) join the pool when
    /// dropped while it has room.
    pub max_pool_msgs: u16,
    /// Bytes read from a socket per system call (default 64 KiB; kept between
    /// 4 KiB and 16 MiB).
    /// The I/O thread owns one buffer of this size, shared by all channels.
    pub read_chunk: usize,
    /// Bytes the engine holds, in all, for frames that have not fully arrived
    /// and have no pool message (default 4 MiB; 0 means the default). Over
    /// it, channels that could add to it are not read — their bytes stay in
    /// the kernel — except for frames already complete there (TCP), so a
    /// crowd of peers stalling mid-frame cannot grow memory or stop
    /// well-behaved channels (SPEC §5.7).
    pub partial_frame_budget: usize,
    /// An accepted connection that sends no HelloRequest within this is
    /// closed silently and counted in [`Stats::hello_timeouts`](crate::Stats)
    /// (default 10 s; `None` waits forever).
    pub hello_timeout: Option<Duration>,
    /// A ByeRequest the peer does not answer within this aborts the
    /// channel: queued messages come back and the `channel_closed` report
    /// carries `~cause:communication_failed` (default 10 s; `None` waits
    /// forever). It counts from the post, and again from each deadline at
    /// which bytes of the channel were still being written since the last
    /// one: a slow link that keeps draining the backlog before the request
    /// is not a silent peer, a peer that stops reading is (between one and
    /// two timeouts after the last byte went out).
    pub bye_timeout: Option<Duration>,
    /// A host-name lookup that takes longer fails the connect
    /// (`connect_failed`; default 10 s; `None` waits forever). A lookup that
    /// hangs frees its place for the next one when it times out.
    pub lookup_timeout: Option<Duration>,
    /// Bytes that may wait to be sent on one channel (default 8 MiB; 0
    /// means the default; never below one frame of 131,086 bytes): posted
    /// messages count 16 + text headers + body from `post` until they are
    /// written to the socket or come back. Over it `post` refuses with
    /// `PoolEmpty` and [`post_timeout`](crate::ChannelGroup::post_timeout)
    /// waits (SPEC §5.7).
    pub channel_send_limit: usize,
    /// The same, for all channels of the engine together (default 64 MiB; 0
    /// means the default).
    pub engine_send_limit: usize,
    /// Most channels open at once — listeners, accepted and connecting
    /// channels (default and maximum 65,534, the channel numbers; 0 means the
    /// default). At the cap `post` of a WelcomeRequest or HelloRequest fails
    /// at once with `AllocationFailed` and listeners stop accepting (the
    /// connections wait in the kernel's backlog) until a channel closes.
    /// Running out of file descriptors first is handled too: a failed accept
    /// is reported once (`accept_failed`) and retried when a channel closes.
    pub max_channels: u16,
    /// TCP keepalive on every TCP stream, first probe after this long without
    /// traffic (default `None`: off, as in the original). Lets the kernel
    /// notice a peer host that vanished without a word: after the first
    /// probe the kernel's own probe interval and count apply (on Linux 75 s
    /// and 9 probes unless the system is tuned), then the channel closes
    /// with the read error (`~cause:recv_failed` or `peer_disconnected`).
    /// Unix-domain sockets have no keepalive.
    pub tcp_keepalive: Option<Duration>,
    /// Send buffer requested (`SO_SNDBUF`) for every Unix-domain stream, in
    /// bytes (default [`DEFAULT_UNIX_SEND_BUFFER`], 1 MiB;
    /// 0 leaves the kernel's default, 208 KiB on Linux). Linux wakes a
    /// writer blocked on a full Unix-domain socket only once its queue is
    /// down to a quarter of this buffer: with the default a stream of large
    /// messages left its reader 52 KiB of runway while the writer woke, and
    /// on a virtual machine, where a wake-up takes tens of µs, the reader
    /// ran dry between writes (`docs/benchmarks.md`). It bounds the bytes
    /// the kernel holds for a peer that does not read (TCP's own automatic
    /// tuning goes to 4 MiB); the kernel caps it at `net.core.wmem_max`
    /// (212,992 bytes on a stock Linux, where a larger request changes
    /// nothing) and Linux doubles what it grants for its bookkeeping.
    ///
    /// ```
    /// use tofu::Options;
    /// let opts = Options { unix_send_buffer: 0, ..Options::default() }; // the kernel's default
    /// assert_eq!(Options::default().unix_send_buffer, tofu::DEFAULT_UNIX_SEND_BUFFER);
    /// # let _ = opts;
    /// ```
    pub unix_send_buffer: usize,
    /// A channel from which nothing arrives for this long closes (default
    /// `None`: never, as in the original). Any byte from the peer counts, so
    /// a peer that sends heartbeats ([`Heartbeat`](crate::Heartbeat)) or
    /// other traffic more often than this stays open. The clock starts when
    /// the connect starts (a connect that takes longer fails with
    /// `connect_failed`) or when a connection is accepted (one that sends
    /// nothing is closed silently, as after the hello timeout); it keeps
    /// running after a ByeRequest. The `channel_closed` report carries
    /// `~cause:communication_failed` (`connect_failed` before connecting);
    /// [`Stats::idle_timeouts`](crate::Stats) counts them. While the engine
    /// stops reading a channel for want of memory (SPEC §5.7) that channel
    /// is not idle. The I/O thread looks once per timeout and channel, not
    /// at every read, and closes the channel the timeout after its last byte.
    pub idle_timeout: Option<Duration>,
    /// How long a thread in [`wait_receive`](crate::ChannelGroup::wait_receive)
    /// (or [`receive_many`](crate::ChannelGroup::receive_many)) with nothing
    /// queued keeps looking before it sleeps (default zero: it sleeps at
    /// once; at most [`MAX_RECEIVE_SPIN`], larger values are lowered to
    /// it). A thread that runs the event loop polls the sockets without
    /// waiting meanwhile; one that waits for another thread's delivery
    /// watches its queue. Each call spins at most once, for at most this
    /// long and never past its own timeout, then sleeps as without a
    /// budget; so an idle engine still wakes nobody. The price is a busy
    /// core for up to the budget per call. The gain is the time a sleeping
    /// thread takes to wake, which on a virtual machine can be tens of
    /// microseconds per hand-off: see `docs/benchmarks.md` for what 50 µs
    /// does to a round trip. It also steadies a receiver that keeps up with
    /// its sender and so keeps running dry: in the benchmark's 64 KiB
    /// Unix-domain stream on a 2-vCPU VM, 50 µs never fell under 56 k
    /// messages/s in 25 measurements, where the default fell 16 times.
    /// [`receive_async`](crate::ChannelGroup::receive_async)
    /// never spins (it would block its executor).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tofu::Options;
    /// let opts = Options { receive_spin: Duration::from_micros(50), ..Options::default() };
    /// assert!(opts.receive_spin <= tofu::MAX_RECEIVE_SPIN);
    /// ```
    pub receive_spin: Duration,
}

/// The longest [`Options::receive_spin`] used (longer budgets are lowered
/// to it).
pub const MAX_RECEIVE_SPIN: Duration = Duration::from_millis(10);

/// Smallest `read_chunk` used (smaller values are raised to it).
pub(crate) const MIN_READ_CHUNK: usize = 4 * 1024;
/// Largest `read_chunk` used (larger values are lowered to it).
pub(crate) const MAX_READ_CHUNK: usize = 16 * 1024 * 1024;

/// Default `initial_pool_msgs`.
pub const DEFAULT_INITIAL_POOL_MSGS: u16 = 16;
/// Default `max_pool_msgs`.
pub const DEFAULT_MAX_POOL_MSGS: u16 = 64;
/// Default [`Options::unix_send_buffer`]: 1 MiB.
pub const DEFAULT_UNIX_SEND_BUFFER: usize = 1024 * 1024;

impl Default for Options {
    fn default() -> Options {
        Options {
            initial_pool_msgs: DEFAULT_INITIAL_POOL_MSGS,
            max_pool_msgs: DEFAULT_MAX_POOL_MSGS,
            read_chunk: 64 * 1024,
            partial_frame_budget: DEFAULT_PARTIAL_FRAME_BUDGET,
            hello_timeout: Some(DEFAULT_TIMEOUT),
            bye_timeout: Some(DEFAULT_TIMEOUT),
            lookup_timeout: Some(DEFAULT_TIMEOUT),
            channel_send_limit: DEFAULT_CHANNEL_SEND_LIMIT,
            engine_send_limit: DEFAULT_ENGINE_SEND_LIMIT,
            max_channels: 0,
            tcp_keepalive: None,
            unix_send_buffer: DEFAULT_UNIX_SEND_BUFFER,
            idle_timeout: None,
            receive_spin: Duration::ZERO,
        }
    }
}
