//! The I/O thread: one mio event loop that owns every socket and carries out
//! what the sans-IO [`core`](super::core) decides (SPEC §5, §7).
//!
//! Each loop iteration drains the command queue, flushes the channels that got
//! new messages, resumes channels that were waiting for pool messages or that
//! hit their read budget, then sleeps in `poll` — with no timeout unless a
//! starved channel waits for its refill deadline, so an idle engine takes no
//! CPU.
//!
//! * this file: the loop, commands, delivering, closing;
//! * [`open`]: listening, accepting, connecting;
//! * [`io`]: reading and writing, and the work lists behind them;
//! * [`through`]: the write-through path of a batch posted inline.

mod io;
mod lead;
mod open;
mod through;

pub(crate) use lead::{FOLLOW_RECHECK, Lead, Led, receive, run};

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mio::{Events, Registry};
use tracing::{debug, trace};

use super::core::backpressure::{Refill, StashBudget};
use super::core::channel::{ChannelCore, Posted, listener_post};
use super::core::lifecycle::{ForGroup, Lifecycle};
use super::core::send::Released;
use super::core::{Cause, Close, Timeouts};
use super::limits::charge_len;
use super::resolver::Resolver;
use super::slab::{Key, Slab, WAKER_TOKEN};
use super::stats::Tally;
use super::{Command, Counters, Delivery, GroupShared, IntMap, Shared};
use crate::error::Status;
use crate::message::{Message, Origin};
use crate::sys::{self, Listener};
use io::{List, Listed, WorkList};

/// Commands handled per loop iteration before sockets get a turn.
const COMMAND_BATCH: usize = 4096;

/// A post that follows the channel's previous one by less than this (from
/// the end of the previous inline write) is
/// part of a burst: the posting thread leaves it queued for the I/O thread,
/// which writes the whole burst in one vectored write, instead of paying a
/// system call per message. A lone post (a request, a response) is written
/// by the posting thread itself.
const INLINE_CORK: Duration = Duration::from_micros(5);

/// A connected (or connecting) stream: its socket, the mio readiness seen on
/// it, and its protocol core.
struct Stream {
    sock: Option<sys::Stream>,
    core: ChannelCore,
    readable: bool,
    writable: bool,
    /// The peer's end (or an error) was reported: reading goes on until it
    /// is seen, whatever a short read suggests ([`sys::SHORT_IO_DRAINS`]).
    read_closed: bool,
    /// The work lists this channel is on.
    listed: Listed,
    /// Remaining addresses to try if the current connect fails.
    fallbacks: VecDeque<SocketAddr>,
    /// When the application last posted on the channel from a posting
    /// thread that did the work itself ([`Reactor::post_inline`]).
    last_inline_post: Option<Instant>,
    /// The inline batch in which this channel was last written through
    /// ([`Reactor::through_batch`]).
    through_batch: u64,
}

struct ListenerChannel {
    sock: Listener,
    uds_path: Option<std::path::PathBuf>,
    first_id: u64,
    /// Accepting failed (e.g. out of file descriptors) with connections left
    /// in the backlog: retried whenever a channel closes.
    blocked: bool,
}

enum State {
    Listener(ListenerChannel),
    Stream(Box<Stream>),
    /// A listener on a host name, waiting for the lookup (no socket yet).
    Binding(open::Binding),
}

struct Channel {
    number: u16,
    group: u32,
    state: State,
}

impl Channel {
    fn first_id(&self) -> u64 {
        match &self.state {
            State::Listener(l) => l.first_id,
            State::Stream(s) => s.core.first_id(),
            State::Binding(b) => b.first_id(),
        }
    }
}

struct GroupEntry {
    shared: Arc<GroupShared>,
    pool_empty_reported: bool,
}

pub(crate) struct Reactor {
    /// Registers sockets with the poller (which the loop owns, outside the
    /// lock: see [`run`]).
    registry: Registry,
    shared: Arc<Shared>,
    slab: Slab<Channel>,
    by_number: IntMap<u16, Key>,
    groups: IntMap<u32, GroupEntry>,
    lifecycle: Lifecycle,
    /// The engine's one read buffer, `read_chunk` initialised bytes. A
    /// channel whose pool ran dry mid-read takes it as its stash and gives
    /// its old stash's memory back, as long (`core::recv::Receiver::read`).
    read_buf: Vec<u8>,
    /// Small frames copied together for one write (at most
    /// `core::send::COALESCE_MAX` bytes; see `SendQueue::fill`).
    write_buf: Vec<u8>,
    /// Numbers the inline batches ([`post_inline_batch`](Self::post_inline_batch)):
    /// a channel written through once in a batch queues the rest of its
    /// messages in it ([`Stream::through_batch`]).
    through_batch: u64,
    /// Messages a flush or an inline batch's write-through runs wrote,
    /// returned to the pool together (at most the frames of one flush, or
    /// `RECYCLE_AT` plus one write's; empty between flushes and batches).
    spent: Vec<Message>,
    /// The busiest counts, published when the lock is let go ([`Held`])
    /// and before anything is pushed to a group's queue.
    tally: Tally,
    /// While a poll's events are handled: what their reads delivered to
    /// one group (`outbox_group`), pushed to its queue together — one lock
    /// and one wake-up for many reads. At most [`OUTBOX_MAX`] plus one
    /// read's frames; empty outside [`handle_events`](Self::handle_events).
    outbox: VecDeque<Message>,
    outbox_group: Option<u32>,
    /// Set while [`handle_events`](Self::handle_events) runs: deliveries
    /// go to the outbox.
    collecting: bool,
    dirty: WorkList,
    again: WorkList,
    starved: WorkList,
    /// While starved with a few free messages: when to stop waiting for more.
    refill: Refill,
    /// Listeners whose last accept failed, and whether to retry them now.
    accept_blocked: Vec<Key>,
    retry_accept: bool,
    resolver: Resolver,
    /// A lookup was abandoned: waiting ones may start.
    retry_lookups: bool,
    timeouts: Timeouts,
    /// The time, read once per loop iteration (after `poll` returns).
    now: Instant,
    /// Bytes held in all channels' stashes, and its limit.
    budget: StashBudget,
    /// Channels not read because the stash budget is spent.
    over_budget: WorkList,
    /// What every new stream is set up with (`Options::tcp_keepalive`,
    /// `Options::unix_send_buffer`).
    stream_settings: sys::StreamSettings,
    /// Channel deadlines (hello, bye), earliest first. An entry is acted on
    /// only if the channel still has that deadline; stale ones are dropped
    /// when they reach the top, so the heap holds at most two entries per
    /// channel opened within the longest timeout, and a stale one never
    /// wakes the I/O thread.
    timers: BinaryHeap<Reverse<(Instant, Key)>>,
    /// A delivery woke a thread blocked on its group's queue since
    /// [`take_woke`](Self::take_woke).
    woke: bool,
    /// Commands taken from [`Shared::commands`] in one go, handled up to
    /// [`COMMAND_BATCH`] per turn, oldest first.
    pending: VecDeque<Command>,
}

/// The most messages the outbox collects before it is pushed: a follower
/// waiting on the group starts on them while the poll's other events are
/// handled.
const OUTBOX_MAX: usize = 64;

impl Reactor {
    pub(crate) fn new(
        registry: Registry,
        shared: Arc<Shared>,
        read_chunk: usize,
        timeouts: Timeouts,
        partial_frame_budget: usize,
        stream_settings: sys::StreamSettings,
    ) -> Reactor {
        let mut r = Reactor {
            registry,
            shared,
            slab: Slab::new(),
            by_number: IntMap::default(),
            groups: IntMap::default(),
            lifecycle: Lifecycle::new(),
            read_buf: vec![0u8; read_chunk],
            write_buf: Vec::new(),
            through_batch: 0,
            spent: Vec::new(),
            tally: Tally::default(),
            outbox: VecDeque::new(),
            outbox_group: None,
            collecting: false,
            dirty: WorkList::new(List::Dirty),
            again: WorkList::new(List::Again),
            starved: WorkList::new(List::Starved),
            refill: Refill::default(),
            accept_blocked: Vec::new(),
            retry_accept: false,
            resolver: Resolver::default(),
            retry_lookups: false,
            timeouts,
            now: Instant::now(),
            timers: BinaryHeap::new(),
            budget: StashBudget::new(partial_frame_budget),
            over_budget: WorkList::new(List::OverBudget),
            stream_settings,
            woke: false,
            pending: VecDeque::new(),
        };
        r.lifecycle.refill_reserve(&r.shared.directory);
        r
    }

    /// One turn of work before the loop sleeps: commands (a bounded batch),
    /// deadlines, lookups, writes, retries and resumed reads. Returns how
    /// long the loop may sleep (`Break`: shut down).
    fn work(&mut self) -> ControlFlow<()> {
        // Bounded, so a flood of posts cannot starve reading and writing.
        if self.pending.is_empty() {
            if self.pending.capacity() > 4 * COMMAND_BATCH {
                self.pending.shrink_to(COMMAND_BATCH);
            }
            self.shared.commands.take_all(&mut self.pending);
        }
        for _ in 0..COMMAND_BATCH {
            let Some(cmd) = self.pending.pop_front() else {
                break;
            };
            self.command(cmd)?;
        }
        self.fire_timers();
        self.start_lookups();
        self.flush_dirty();
        self.retry_blocked_accepts();
        self.resume_starved();
        self.resume_over_budget();
        self.continue_reads();
        self.publish_gauges();
        self.lifecycle.refill_reserve(&self.shared.directory);
        ControlFlow::Continue(())
    }

    /// How long the thread that polls may sleep after [`work`](Self::work)
    /// (`None`: until an event). When it may sleep at all, tells
    /// [`Wake`](super::Wake) first, so work published from now on wakes it.
    fn sleep_timeout(&mut self) -> Option<Duration> {
        if !self.again.is_empty() || !self.dirty.is_empty() {
            return Some(Duration::ZERO);
        }
        self.shared.wake.prepare_sleep();
        let refill = self.refill_timeout();
        if !self.shared.commands.is_empty() || !self.pending.is_empty() {
            Some(Duration::ZERO)
        } else {
            earliest(refill, self.timer_timeout())
        }
    }

    /// Commands taken from the queue and not handled yet: a post must not
    /// overtake them.
    pub(crate) fn commands_waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// For a posting thread that holds the reactor: handles the posts
    /// waiting in the command queue (queued while the lock was busy), in
    /// order, up to the first other command. Returns whether nothing is left
    /// waiting, so that a new post may go inline without overtaking any.
    /// (Without this, a stream whose posts once went through the queue keeps
    /// going through it: every later post finds it non-empty.)
    pub(crate) fn run_waiting_posts(&mut self) -> bool {
        if self.pending.is_empty() {
            self.shared.commands.take_all(&mut self.pending);
        }
        self.now = Instant::now();
        while let Some(Command::Send { .. }) = self.pending.front() {
            if let Some(Command::Send { group, msg }) = self.pending.pop_front() {
                self.send(group, msg);
            }
        }
        self.pending.is_empty() && self.shared.commands.is_empty()
    }

    /// Whether a delivery woke a thread blocked on its group's queue since
    /// the last call (that thread will soon want the poller).
    fn take_woke(&mut self) -> bool {
        std::mem::take(&mut self.woke)
    }

    /// The work of one post, done by the posting thread while the I/O thread
    /// does not hold the reactor (SPEC §7): the message goes to its channel
    /// and, unless it is part of a burst ([`INLINE_CORK`]), straight to the
    /// socket — no thread hand-off. Returns `false` when the I/O thread
    /// still has something to do for it (a burst to write, a new deadline,
    /// a retry): the caller wakes it.
    pub(crate) fn post_inline(&mut self, group: u32, msg: Message) -> Result<bool, Message> {
        let now = Instant::now();
        self.now = now;
        let number = msg.header.channel_number;
        let key = self.by_number.get(&number).copied();
        let burst = key
            .and_then(|key| stream_of(&mut self.slab, key))
            .is_some_and(|s| {
                let last = s.last_inline_post.replace(now);
                last.is_some_and(|t| now.saturating_duration_since(t) < INLINE_CORK)
            });
        if burst {
            return Err(msg);
        }
        let timers = self.timers.len();
        self.tally.inline_posts += 1;
        self.send(group, msg);
        self.flush_dirty();
        // The gap to the next post is the application's own time, not this
        // write's: count it from here.
        if let Some(s) = key.and_then(|key| stream_of(&mut self.slab, key)) {
            s.last_inline_post = Some(Instant::now());
        }
        Ok(self.timers.len() == timers
            && self.dirty.is_empty()
            && !self.retry_accept
            && !self.retry_lookups)
    }

    /// [`post_inline`](Self::post_inline) for a batch (the caller's batch
    /// is the burst: no cork): first the posts queued while the lock was
    /// busy ([`run_waiting_posts`](Self::run_waiting_posts)), then every
    /// message goes to its channel, and one flush writes each channel's
    /// share together. `None` (nothing taken from `msgs`) when other
    /// commands wait, which the batch must not overtake; otherwise whether
    /// everything is settled (`false`: the I/O thread still has something
    /// to do, a partial write or a new deadline).
    pub(crate) fn post_inline_batch(
        &mut self,
        group: u32,
        msgs: &mut std::vec::Drain<'_, Message>,
    ) -> Option<bool> {
        self.now = Instant::now();
        let timers = self.timers.len();
        let waiting = !self.shared.commands.is_empty() || self.commands_waiting();
        if waiting && !self.run_waiting_posts() {
            return None;
        }
        let mut posts = 0;
        self.through_batch += 1;
        while !msgs.as_slice().is_empty() {
            // Small frames on an idle channel go straight into the write
            // buffer; what does not is posted as by `post`. A run ends at
            // a message for another channel, which may start a run of its
            // own (a batch of answers to many peers, one each, had every
            // second one queued when it could not). A channel's messages
            // after its run in this batch join its queue, which is written
            // once, at the end.
            let before = posts;
            self.write_through(group, msgs, &mut posts);
            if posts == before {
                // Nothing taken: the front message takes the ordinary path.
                if let Some(msg) = msgs.next() {
                    posts += 1;
                    self.send(group, msg);
                }
            }
        }
        self.tally.inline_posts += posts;
        // What the write-through runs wrote, back to the pool together.
        let mut spent = std::mem::take(&mut self.spent);
        self.shared.pool.recycle_many(&mut spent);
        self.spent = spent;
        self.flush_dirty_eagerly();
        Some(
            self.timers.len() == timers
                && self.dirty.is_empty()
                && !self.retry_accept
                && !self.retry_lookups,
        )
    }

    /// Tops the reserve of channel numbers up (for a `post` on channel 0
    /// that found it empty).
    pub(crate) fn refill_reserve(&mut self) {
        self.lifecycle.refill_reserve(&self.shared.directory);
    }

    /// What `poll` returned.
    fn handle_events(&mut self, events: &Events) {
        self.now = Instant::now();
        self.collecting = true;
        for ev in events.iter() {
            if ev.token() == WAKER_TOKEN {
                continue;
            }
            let Some(key) = self.slab.key_for_token(ev.token()) else {
                trace!("stale event ignored");
                continue;
            };
            self.event(key, ev);
        }
        self.collecting = false;
        self.flush_outbox();
        // The poller may let go before its next `work` (leader/follower).
        self.publish_gauges();
    }

    /// Gauges in [`Stats`](crate::Stats) that the reactor keeps.
    fn publish_gauges(&self) {
        self.shared
            .counters
            .partial_frame_bytes
            .store(self.budget.used() as u64, Ordering::Relaxed);
    }

    // ----- commands --------------------------------------------------------

    /// Handles one command; `Break` stops the loop.
    fn command(&mut self, cmd: Command) -> ControlFlow<()> {
        match cmd {
            Command::CreateGroup(g) => {
                self.groups.insert(
                    g.id,
                    GroupEntry {
                        shared: g,
                        pool_empty_reported: false,
                    },
                );
            }
            Command::DestroyGroup { group, done } => {
                let slab = &self.slab;
                let keys: Vec<Key> = slab
                    .keys()
                    .filter(|&k| slab.get(k).is_some_and(|c| c.group == group))
                    .collect();
                for key in keys {
                    self.close(key, Close::new(Status::ChannelClosed, false, Cause::Local));
                }
                self.groups.remove(&group);
                let _ = done.send(());
            }
            Command::Listen { group, msg, addr } => self.listen(group, msg, addr),
            Command::Connect { group, msg, addr } => self.connect(group, msg, addr),
            Command::Send { group, msg } => self.send(group, msg),
            Command::Resolved { key, result } => self.resolved(key, result),
            Command::Shutdown => return ControlFlow::Break(()),
            #[cfg(test)]
            Command::Fault => panic!("injected fault on the I/O thread"),
        }
        ControlFlow::Continue(())
    }

    /// Charged messages left the engine from channel `number`: their room
    /// goes back to `post` (and wakes `post_timeout`).
    fn release(&self, number: u16, released: Released) {
        if released.messages > 0 {
            let limits = &self.shared.limits;
            limits.release(number, released.bytes, released.messages);
            limits.wake_waiters();
        }
    }

    /// A message posted on an open channel (or one that closed meanwhile).
    fn send(&mut self, group: u32, msg: Message) {
        let number = msg.header.channel_number;
        self.shared.directory.arrived(number);
        // Released here unless the channel's send queue takes it (which
        // then releases it when it is written or drained).
        let given_back = Released {
            bytes: charge_len(&msg),
            messages: 1,
        };
        // The common case (no zombie at all) costs one branch.
        let mut msg = match self.lifecycle.late(number, msg) {
            Ok(late) => {
                self.release(number, given_back);
                self.deliver_to(late.given_back);
                if let Some(report) = late.report {
                    self.deliver_to(report);
                }
                return;
            }
            Err(msg) => msg,
        };
        let key = self.by_number.get(&number).copied();
        let found = key.filter(|&k| self.slab.get(k).is_some_and(|c| c.group == group));
        let Some(key) = found else {
            // Cannot happen (closed channels are zombies until their posts
            // arrive); given back all the same.
            let mut msg = msg;
            msg.header.proto.origin = Origin::Engine;
            msg.header.status = Status::ChannelClosed as u8;
            self.release(number, given_back);
            self.deliver(group, msg);
            return;
        };
        let ch = self.slab.get_mut(key).expect("found above");
        match &mut ch.state {
            State::Listener(l) => {
                if l.first_id == 0 {
                    l.first_id = msg.header.message_id;
                }
                let (status, close) = listener_post(msg.header.proto.opcode);
                msg.header.proto.origin = Origin::Engine;
                msg.header.status = status as u8;
                self.release(number, given_back);
                self.deliver(group, msg);
                if let Some(close) = close {
                    self.close(key, close);
                }
            }
            State::Binding(_) => {
                // As on a listener: only a ByeSignal or ByeRequest means
                // something (it closes the listener before it bound).
                let (status, close) = listener_post(msg.header.proto.opcode);
                msg.header.proto.origin = Origin::Engine;
                msg.header.status = status as u8;
                self.release(number, given_back);
                self.deliver(group, msg);
                if let Some(close) = close {
                    self.close(key, close);
                }
            }
            State::Stream(s) => match s.core.handle_post(msg, self.now) {
                Posted::Queued => {
                    self.dirty.add(key, &mut s.listed);
                    schedule(&mut self.timers, key, &mut s.core);
                }
                Posted::GivenBack => {
                    self.release(number, given_back);
                    self.deliver_from(key);
                }
                Posted::Close(close) => {
                    self.release(number, given_back);
                    self.deliver_from(key);
                    self.close(key, close);
                }
            },
        }
    }

    // ----- events ------------------------------------------------------------

    /// `channel{number}`, the span a channel's reads, writes and close run
    /// in. Nothing is created, nor the channel looked up, unless DEBUG spans
    /// may be enabled (one relaxed load when no subscriber wants them).
    fn channel_span(&self, key: Key) -> tracing::Span {
        if tracing::level_enabled!(tracing::Level::DEBUG) {
            if let Some(ch) = self.slab.get(key) {
                return tracing::debug_span!("channel", number = ch.number);
            }
        }
        tracing::Span::none()
    }

    fn event(&mut self, key: Key, ev: &mio::event::Event) {
        let span = self.channel_span(key);
        let _entered = span.enter();
        let Some(ch) = self.slab.get_mut(key) else {
            return;
        };
        let s = match &mut ch.state {
            State::Listener(_) => {
                self.accept(key);
                return;
            }
            State::Binding(_) => return, // no socket: never registered
            State::Stream(s) => s,
        };
        if s.core.phase() == super::core::channel::Phase::Connecting {
            self.check_connect(key);
            return;
        }
        if ev.is_writable() {
            s.writable = true;
        }
        let read = ev.is_readable() || ev.is_read_closed() || ev.is_error();
        if read {
            s.readable = true;
        }
        if ev.is_read_closed() || ev.is_error() {
            s.read_closed = true;
        }
        // (A writable event with nothing to write — on a Unix-domain
        // socket, one at every read the peer makes — costs nothing more.)
        if ev.is_writable() && s.core.wants_write() && self.flush(key).is_break() {
            return;
        }
        if read {
            self.read(key);
        }
    }

    // ----- closing -----------------------------------------------------------

    /// Closes a channel: on a reported close every queued message comes back
    /// with the close's status, then the `channel_closed` report; on a silent
    /// one everything is freed.
    fn close(&mut self, key: Key, close: Close) {
        let span = self.channel_span(key);
        let _entered = span.enter();
        let Some(ch) = self.slab.remove(key) else {
            return;
        };
        let first_id = ch.first_id();
        self.by_number.remove(&ch.number);
        self.shared.limits.free_slot();
        match ch.state {
            State::Listener(mut l) => {
                let _ = self.registry.deregister(&mut l.sock);
                drop(l.sock);
                if let Some(p) = &l.uds_path {
                    sys::remove_socket_file(p);
                }
            }
            State::Binding(b) => self.binding_closed(key, ch.group, b, &close),
            State::Stream(mut s) => {
                if s.core.phase() == super::core::channel::Phase::Resolving {
                    // Its lookup may still run: free its place at once.
                    self.resolver.abandon(key);
                    self.retry_lookups = true;
                }
                if let Some(mut sock) = s.sock.take() {
                    let _ = self.registry.deregister(&mut sock);
                    if close.is_graceful() {
                        // A FIN, not a reset: the peer keeps what it has not
                        // read yet (SPEC §5.5).
                        sock.close_gracefully();
                    }
                }
                s.core.release_budget(&mut self.budget);
                s.core.give_back_unsent(&close);
                self.release(ch.number, s.core.take_released());
                while let Some(msg) = s.core.poll_delivery() {
                    self.deliver(ch.group, msg);
                }
            }
        }
        debug!(channel = ch.number, status = %close.status, cause = ?close.cause, "channel closed");
        // Counted as closed only with its partial frames out of the gauge
        // (a reader that sees one sees the other), before its report.
        self.publish_gauges();
        Counters::sub_open(&self.shared.counters);
        // A descriptor was freed: listeners that ran out can try again.
        self.retry_accept |= !self.accept_blocked.is_empty();
        self.retire(ch.number, ch.group, first_id, close);
    }

    /// Closes `number` for new posts; the report follows the late posts.
    fn retire(&mut self, number: u16, group: u32, first_id: u64, close: Close) {
        let report = self
            .lifecycle
            .retire(&self.shared.directory, number, group, first_id, &close);
        if let Some(report) = report {
            self.deliver_to(report);
        }
    }

    /// Counts a close the core decided and carries it out.
    fn close_counted(&mut self, key: Key, close: Close) {
        let c = &self.shared.counters;
        if close.is_invalid_frame() {
            Counters::add(&c.invalid_frames, 1);
        }
        if close.is_silent() {
            Counters::add(&c.silent_closes, 1);
        }
        match close.cause {
            Cause::HelloTimeout => Counters::add(&c.hello_timeouts, 1),
            Cause::ByeTimeout => Counters::add(&c.bye_timeouts, 1),
            Cause::LookupTimeout => Counters::add(&c.lookup_timeouts, 1),
            Cause::IdleTimeout => Counters::add(&c.idle_timeouts, 1),
            _ => {}
        }
        self.close(key, close);
    }

    fn shut_down_all(&mut self) {
        self.shared.pool.close();
        let keys: Vec<Key> = self.slab.keys().collect();
        for key in keys {
            self.close(
                key,
                Close::new(Status::ShutdownStarted, false, Cause::Local),
            );
        }
        self.flush_outbox();
        self.tally.publish(&self.shared.counters);
        for g in self.groups.values() {
            let _ = g.shared.push(Delivery::Shutdown, &self.shared.wake);
        }
        self.groups.clear();
        self.shared.io_exited.store(true, Ordering::Release);
        self.shared.limits.wake_waiters();
        let pending = std::mem::take(&mut self.pending);
        for cmd in pending
            .into_iter()
            .chain(std::iter::from_fn(|| self.shared.commands.pop()))
        {
            if let Command::DestroyGroup { done, .. } = cmd {
                let _ = done.send(());
            }
        }
    }

    // ----- delivering --------------------------------------------------------

    fn deliver(&mut self, group: u32, msg: Message) {
        // Behind what the channel's reads delivered before it.
        self.flush_outbox();
        // Counted before anyone can see it.
        self.tally.publish(&self.shared.counters);
        if let Some(g) = self.groups.get(&group) {
            self.woke |= g.shared.push(Delivery::Message(msg), &self.shared.wake);
        }
    }

    fn deliver_to(&mut self, d: ForGroup) {
        self.deliver(d.group, d.msg);
    }

    /// Pushes what the outbox collected to its group's queue.
    fn flush_outbox(&mut self) {
        let Some(group) = self.outbox_group.take() else {
            return;
        };
        if self.outbox.is_empty() {
            return;
        }
        // What brought them counted before anyone can see them.
        self.tally.publish(&self.shared.counters);
        let outbox = &mut self.outbox;
        match self.groups.get(&group) {
            Some(g) => self.woke |= g.shared.push_with(&self.shared.wake, |q| q.append(outbox)),
            // Not reached: a group goes only by a command, and commands
            // run outside `handle_events`.
            None => outbox.clear(),
        }
    }

    /// Delivers everything the channel's core queued for its group.
    fn deliver_from(&mut self, key: Key) {
        let Some(ch) = self.slab.get_mut(key) else {
            return;
        };
        let group = ch.group;
        let State::Stream(s) = &mut ch.state else {
            return;
        };
        self.tally.messages_received += s.core.take_received();
        if self.collecting && s.core.has_deliveries() && self.groups.contains_key(&group) {
            if self.outbox_group != Some(group) || self.outbox.len() >= OUTBOX_MAX {
                self.flush_outbox();
                self.outbox_group = Some(group);
            }
            // Looked up again: flushing needed the whole reactor.
            let s = stream_of(&mut self.slab, key).expect("looked up above");
            s.core.take_deliveries(&mut self.outbox);
        } else if let Some(g) = self.groups.get(&group) {
            if s.core.has_deliveries() {
                // The reads that brought these counted before anyone can
                // see them.
                self.tally.publish(&self.shared.counters);
                self.woke |= g
                    .shared
                    .push_with(&self.shared.wake, |q| s.core.take_deliveries(q));
            }
        } else {
            s.core.take_deliveries(&mut VecDeque::new());
        }
    }

    // ----- time --------------------------------------------------------------

    /// Closes the channels whose deadline passed.
    fn fire_timers(&mut self) {
        while let Some(&Reverse((deadline, key))) = self.timers.peek() {
            if deadline > self.now {
                return;
            }
            self.timers.pop();
            if let Some(close) = self.binding_timeout(key, deadline) {
                debug!(channel = ?self.slab.get(key).map(|c| c.number), "listen lookup timed out");
                self.close_counted(key, close);
                continue;
            }
            let now = self.now;
            let Some(s) = stream_of(&mut self.slab, key) else {
                continue; // closed meanwhile
            };
            if s.core.poll_timeout() != Some(deadline) {
                continue; // replaced or cleared
            }
            // Not read for want of memory: bytes may wait in the kernel.
            let paused = s.listed.contains(List::Starved) || s.listed.contains(List::OverBudget);
            match s.core.handle_timeout(now, paused) {
                Some(close) => {
                    debug!(channel = s.core.number(), cause = ?close.cause, "timed out");
                    self.deliver_from(key);
                    self.close_counted(key, close);
                }
                // Re-armed (a ByeRequest behind a backlog still draining, a
                // peer heard from within the idle timeout).
                None => schedule(&mut self.timers, key, &mut s.core),
            }
        }
    }

    /// How long until the next deadline. Stale entries on top (the channel
    /// closed, or its deadline was cleared — a hello arrived) are dropped
    /// first, so they cause no wake-up.
    fn timer_timeout(&mut self) -> Option<Duration> {
        loop {
            let &Reverse((deadline, key)) = self.timers.peek()?;
            let live = self.slab.get(key).is_some_and(|c| match &c.state {
                State::Stream(s) => s.core.poll_timeout() == Some(deadline),
                State::Binding(b) => b.deadline() == Some(deadline),
                State::Listener(_) => false,
            });
            if live {
                return Some(deadline.saturating_duration_since(Instant::now()));
            }
            self.timers.pop();
        }
    }

    fn stream_mut(&mut self, key: Key) -> Option<&mut Stream> {
        stream_of(&mut self.slab, key)
    }
}

/// Puts a deadline the core just set on the timer heap.
fn schedule(timers: &mut BinaryHeap<Reverse<(Instant, Key)>>, key: Key, core: &mut ChannelCore) {
    if let Some(deadline) = core.take_new_deadline() {
        timers.push(Reverse((deadline, key)));
    }
}

thread_local! {
    /// Whether this thread holds a reactor (any engine's) right now. Code
    /// the reactor runs — a `receive_async` waker, a tracing subscriber —
    /// may post; such a post must not wait for a reactor lock (its own, or
    /// another engine's whose holder might wait for this one).
    static HOLDING: Cell<bool> = const { Cell::new(false) };
}

/// A held reactor lock, marked in [`HOLDING`] while it is held.
pub(crate) struct Held<'a> {
    guard: MutexGuard<'a, Reactor>,
    outer: bool,
}

impl<'a> Held<'a> {
    pub(crate) fn new(guard: MutexGuard<'a, Reactor>) -> Held<'a> {
        let outer = HOLDING.with(|h| h.replace(true));
        Held { guard, outer }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let r = &mut *self.guard;
        r.tally.publish(&r.shared.counters);
        HOLDING.with(|h| h.set(self.outer));
    }
}

impl std::ops::Deref for Held<'_> {
    type Target = Reactor;
    fn deref(&self) -> &Reactor {
        &self.guard
    }
}

impl std::ops::DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut Reactor {
        &mut self.guard
    }
}

/// Whether this thread holds a reactor now (then it must not wait for one).
pub(crate) fn holding_a_reactor() -> bool {
    HOLDING.with(Cell::get)
}

/// The reactor's lock, for the I/O thread. A poisoned lock means a posting
/// thread panicked in the middle of the reactor's work (a bug): the I/O
/// thread panics too, and the engine shuts down as after its own bug
/// (SPEC §5.7b).
fn lock(reactor: &Mutex<Reactor>) -> Held<'_> {
    match reactor.lock() {
        Ok(r) => Held::new(r),
        Err(_) => panic!("a thread panicked while it held the reactor"),
    }
}

/// The shorter of two optional sleeps (`None` = forever).
fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn stream_of(slab: &mut Slab<Channel>, key: Key) -> Option<&mut Stream> {
    match &mut slab.get_mut(key)?.state {
        State::Stream(s) => Some(s),
        State::Listener(_) | State::Binding(_) => None,
    }
}

impl Stream {
    fn new(core: ChannelCore) -> Box<Stream> {
        Box::new(Stream {
            sock: None,
            core,
            readable: false,
            writable: false,
            read_closed: false,
            listed: Listed::default(),
            fallbacks: VecDeque::new(),
            last_inline_post: None,
            through_batch: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Idle per-connection memory: the slab slot plus the boxed stream state,
    /// with empty queues (no heap behind them) — well under the 4 KiB target.
    #[test]
    fn idle_connection_is_small() {
        let slot = std::mem::size_of::<Option<Channel>>() + 8;
        let stream = std::mem::size_of::<Stream>();
        let total = slot + stream;
        println!("idle connection: slot {slot} B + stream state {stream} B = {total} B");
        assert!(total <= 1024, "idle connection takes {total} bytes");
        let s = Stream::new(ChannelCore::accepted(
            1,
            Timeouts::default(),
            Instant::now(),
        ));
        assert_eq!(s.core.queued(), 0);
        assert_eq!(s.core.stashed(), 0);
    }
}
