//! The engine's statistics: the public snapshot and the I/O thread's
//! counters behind it.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of an engine's counters ([`Engine::stats`](crate::Engine::stats)). All counters are
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
    /// Of [`bytes_received`](Self::bytes_received), those the kernel wrote
    /// straight into the body of the message they belong to (large bodies:
    /// no copy out of the read buffer).
    pub bytes_read_in_place: u64,
    /// Read system calls (and peeks) that found nothing to read
    /// (`WouldBlock`): the price of readiness that was already used up. On
    /// epoll and kqueue a read that returns less than it asked for ends the
    /// reading without one.
    pub empty_reads: u64,
    /// Times a thread returned from `poll` (wake-ups): the I/O thread, or
    /// an application thread running the loop in `wait_receive`.
    pub polls: u64,
    /// Of [`polls`](Self::polls), those run by application threads blocked
    /// in [`wait_receive`](crate::ChannelGroup::wait_receive) (SPEC §7: the
    /// thread that wants the message is the one the kernel wakes).
    pub waiter_polls: u64,
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
    /// Accepted connections closed because no HelloRequest came within
    /// [`Options::hello_timeout`](crate::Options) (also counted in
    /// `silent_closes`).
    pub hello_timeouts: u64,
    /// Channels aborted because a ByeRequest went unanswered for
    /// [`Options::bye_timeout`](crate::Options).
    pub bye_timeouts: u64,
    /// Connects failed because the host-name lookup took longer than
    /// [`Options::lookup_timeout`](crate::Options).
    pub lookup_timeouts: u64,
    /// Channels closed because nothing arrived for
    /// [`Options::idle_timeout`](crate::Options) (accepted connections the
    /// application never saw are also counted in `silent_closes`).
    pub idle_timeouts: u64,
    /// Gauge: bytes held for frames that have not fully arrived and have no
    /// pool message (bounded by
    /// [`Options::partial_frame_budget`](crate::Options) plus one read).
    pub partial_frame_bytes: u64,
    /// Gauge: bytes posted and not yet written or given back (bounded by
    /// [`Options::engine_send_limit`](crate::Options)).
    pub queued_bytes: u64,
    /// Gauge: messages posted and not yet written or given back.
    pub queued_messages: u64,
    /// Posts refused because a channel's or the engine's outgoing queue was
    /// full (`PoolEmpty`; each failed attempt of `post_timeout` counts).
    pub send_limit_refusals: u64,
    /// Posts the posting thread handed to their channel itself, without a
    /// hand-off to the I/O thread (a lone post on an idle engine: SPEC §7).
    pub inline_posts: u64,
    /// Times a listener stopped accepting because
    /// [`Options::max_channels`](crate::Options) channels were open.
    pub accept_pauses: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) write_calls: AtomicU64,
    pub(crate) read_calls: AtomicU64,
    pub(crate) bytes_read_in_place: AtomicU64,
    pub(crate) empty_reads: AtomicU64,
    pub(crate) polls: AtomicU64,
    pub(crate) waiter_polls: AtomicU64,
    pub(crate) open_channels: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) pool_empty_events: AtomicU64,
    pub(crate) invalid_frames: AtomicU64,
    pub(crate) silent_closes: AtomicU64,
    pub(crate) hello_timeouts: AtomicU64,
    pub(crate) bye_timeouts: AtomicU64,
    pub(crate) lookup_timeouts: AtomicU64,
    pub(crate) idle_timeouts: AtomicU64,
    pub(crate) partial_frame_bytes: AtomicU64,
    pub(crate) send_limit_refusals: AtomicU64,
    pub(crate) inline_posts: AtomicU64,
    pub(crate) accept_pauses: AtomicU64,
}

/// The busiest counts, kept by the reactor in plain fields while its lock
/// is held and added to the shared [`Counters`] when the lock is let go
/// (`reactor::Held`) and before anything is pushed to a group's queue: one
/// atomic add per figure per lock or delivery instead of one per read,
/// write or post. A thread that received a message, or whose post
/// returned, sees the reads and writes before it counted in [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) messages_sent: u64,
    pub(crate) messages_received: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_received: u64,
    pub(crate) write_calls: u64,
    pub(crate) read_calls: u64,
    pub(crate) inline_posts: u64,
}

impl Tally {
    /// Adds everything counted since the last call to `c`.
    pub(crate) fn publish(&mut self, c: &Counters) {
        let t = std::mem::take(self);
        Counters::add(&c.messages_sent, t.messages_sent);
        Counters::add(&c.messages_received, t.messages_received);
        Counters::add(&c.bytes_sent, t.bytes_sent);
        Counters::add(&c.bytes_received, t.bytes_received);
        Counters::add(&c.write_calls, t.write_calls);
        Counters::add(&c.read_calls, t.read_calls);
        Counters::add(&c.inline_posts, t.inline_posts);
    }
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// A channel closed. Release: the reactor publishes the gauges first
    /// (`Reactor::close`), and a `stats()` that sees the close sees them.
    pub(crate) fn sub_open(&self) {
        self.open_channels.fetch_sub(1, Ordering::Release);
    }
}
