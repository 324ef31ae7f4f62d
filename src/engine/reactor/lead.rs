//! Leader/follower: which thread runs the event loop (SPEC §7).
//!
//! The poller ([`Slot`]: mio's `Poll` and its event buffer) is taken by one
//! thread at a time. A thread blocked in `wait_receive` with nothing to
//! receive takes it if it is free and runs the loop itself — the kernel
//! then wakes the thread that wants the message, and a round trip crosses
//! no engine thread at all. Otherwise that thread follows: it waits on its
//! group's queue as before, and whoever polls delivers to it.
//!
//! The I/O thread polls whenever no application thread does. After a
//! delivery woke a thread blocked in `wait_receive` it steps aside for a
//! *lease* ([`LEASE`]): that thread usually comes back for the next message
//! within microseconds and should find the poller free. (A delivery to a
//! busy application, whose queue is not empty, changes nothing: the I/O
//! thread goes on reading ahead while it works.) While application threads
//! keep taking it, the I/O thread only checks once per lease; while they
//! only post (a sender between its receives), it runs one non-blocking turn
//! per lease; when none did either for a whole lease, it takes the poller
//! back and sleeps in `poll` again —
//! so an idle engine, or one whose leader waits for a long time, wakes
//! nobody.
//!
//! Bounds: while nobody polls (between a leader's return and the next
//! `wait_receive`, during a lease), events wait at most two leases (the rest
//! of the lease in which the application last led, and one in which it did
//! not); a command posted meanwhile wakes the I/O thread at once
//! ([`Lead::poke`]).
//!
//! An async receiver (`receive_async`) never polls the engine: its executor
//! thread only waits for its waker. While one is pending anywhere in the
//! engine ([`Lead::async_waiters`]) the I/O thread does not lease the poller
//! out, a leasing I/O thread is woken when one registers and takes the
//! poller back, and a leader that lets go hands the poller to the I/O thread
//! at once — so an async receiver never waits for a lease.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use crossbeam_utils::sync::{Parker, Unparker};
use mio::{Events, Poll};
use tracing::debug;

use super::{Reactor, earliest, lock};
use crate::engine::{Counters, Delivery, GroupShared, Shared};
use crate::error::Error;

/// How long the I/O thread leaves the poller to the application after its
/// delivery woke a waiting thread; an event waits at most two of them while
/// nobody polls.
const LEASE: Duration = Duration::from_micros(500);

/// How long a thread that follows waits before it looks again whether the
/// poller is free (once per `wait_receive`): the poller may have let go
/// just after it looked, to lease the slot out, and then nobody polls
/// until the lease ends.
pub(crate) const FOLLOW_RECHECK: Duration = Duration::from_micros(50);

/// Turns the I/O thread runs on a poller it borrowed during a lease, for a
/// command posted meanwhile.
const BRIEF_TURNS: usize = 4;

/// The poller.
pub(crate) struct Slot {
    poll: Poll,
    events: Events,
}

// Who holds the slot (`Lead::holder`).
const FREE: u8 = 0;
/// An application thread, in `wait_receive`.
const APP: u8 = 1;
/// The I/O thread, for a few turns without sleeping.
const IO_BRIEF: u8 = 2;
/// The I/O thread, sleeping in `poll` until something happens.
const IO_LONG: u8 = 3;

// What the I/O thread does when it does not hold the slot (`Lead::io`).
const RUNNING: u8 = 0;
/// Parked for at most a lease.
const LEASING: u8 = 1;
/// Parked until the leading application thread lets go of the slot.
const WAITING: u8 = 2;

/// The poller and who may take it.
pub(crate) struct Lead {
    slot: Mutex<Slot>,
    holder: AtomicU8,
    /// Bumped whenever an application thread takes the slot.
    epoch: AtomicU64,
    io: AtomicU8,
    io_unparker: Unparker,
    /// Threads blocked on a group queue (following).
    followers: AtomicUsize,
    /// An application thread posted inline (wrote to the reactor itself)
    /// since the I/O thread last looked: it is active, and writes for its
    /// channels on its next post.
    posted: AtomicBool,
    /// Pending `receive_async` futures (registered wakers, every group):
    /// while there are any, the I/O thread keeps the poller (no lease).
    async_waiters: AtomicUsize,
    /// `Options::receive_spin`: how long a `wait_receive` looks before it
    /// sleeps.
    spin: Duration,
}

/// The I/O thread's side of [`Lead`]: what it parks on.
pub(crate) struct IoParker(Parker);

impl Lead {
    pub(crate) fn new(poll: Poll, spin: Duration) -> (Lead, IoParker) {
        let parker = Parker::new();
        let lead = Lead {
            slot: Mutex::new(Slot {
                poll,
                events: Events::with_capacity(1024),
            }),
            holder: AtomicU8::new(FREE),
            epoch: AtomicU64::new(0),
            io: AtomicU8::new(RUNNING),
            io_unparker: parker.unparker().clone(),
            followers: AtomicUsize::new(0),
            posted: AtomicBool::new(false),
            async_waiters: AtomicUsize::new(0),
            spin,
        };
        (lead, IoParker(parker))
    }

    /// Work was published (a command) that someone must pick up: if nobody
    /// polls, wake the I/O thread out of its lease. (A poller, if any, is
    /// woken by [`Wake`](crate::engine::Wake).) Call right after
    /// `Wake::wake`, whose fence orders the publishing before these loads
    /// (it pairs with the one in `io_lease`).
    pub(crate) fn poke(&self) {
        if self.io.load(Ordering::Relaxed) == LEASING && self.holder.load(Ordering::Relaxed) == FREE
        {
            self.io_unparker.unpark();
        }
    }

    /// An application thread posted inline (see [`Lead::posted`]). Reads
    /// before it writes, so a stream of posts does not keep taking the
    /// cache line from the I/O thread.
    pub(crate) fn note_post(&self) {
        if !self.posted.load(Ordering::Relaxed) {
            self.posted.store(true, Ordering::Relaxed);
        }
    }

    /// Clears [`Lead::posted`] (for tests).
    #[cfg(test)]
    pub(crate) fn clear_posted(&self) {
        self.posted.store(false, Ordering::Relaxed);
    }

    /// Whether [`Lead::posted`] is set (for tests).
    #[cfg(test)]
    pub(crate) fn posted_since_cleared(&self) -> bool {
        self.posted.load(Ordering::Relaxed)
    }

    /// An async receiver registered its waker: from now on the I/O thread
    /// keeps the poller, and one leasing it out comes back at once.
    pub(crate) fn add_async_waiter(&self) {
        self.async_waiters.fetch_add(1, Ordering::Relaxed);
        // Pairs with the fences in `io_lease` and `release_app`: the I/O
        // thread either sees the waiter before it parks for a lease, or is
        // seen leasing and woken; a leader letting go either sees it, or is
        // seen holding the poller (and polls for it meanwhile).
        fence(Ordering::SeqCst);
        if self.io.load(Ordering::Relaxed) == LEASING && self.holder.load(Ordering::Relaxed) == FREE
        {
            self.io_unparker.unpark();
        }
    }

    /// An async receiver completed or was dropped.
    pub(crate) fn remove_async_waiter(&self) {
        self.async_waiters.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether an async receiver is pending (read after a fence).
    fn async_waiting(&self) -> bool {
        self.async_waiters.load(Ordering::Relaxed) > 0
    }

    /// Pending async receivers (for tests).
    #[cfg(test)]
    pub(crate) fn async_waiter_count(&self) -> usize {
        self.async_waiters.load(Ordering::Relaxed)
    }

    /// When a `wait_receive` that starts now, with `deadline`, stops
    /// spinning (`Options::receive_spin`, never past the deadline; `None`:
    /// it does not spin). Reads the clock only when there is a budget.
    pub(crate) fn spin_until(&self, deadline: Option<Instant>) -> Option<Instant> {
        if self.spin.is_zero() {
            return None;
        }
        let until = Instant::now() + self.spin;
        Some(deadline.map_or(until, |d| until.min(d)))
    }

    /// Wakes the I/O thread whatever it does (shutdown, a leader's end).
    pub(crate) fn unpark_io(&self) {
        self.io_unparker.unpark();
    }

    /// The slot if it is free right now.
    fn try_slot(&self) -> Option<MutexGuard<'_, Slot>> {
        match self.slot.try_lock() {
            Ok(g) => Some(g),
            // The poller itself is sound after a panic elsewhere; the
            // reactor's own lock reports the panic.
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    fn lock_slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// For an application thread: the slot if it is free. (Never waits for
    /// it: a thread blocked on the slot could not see its own queue.)
    fn take_for_app(&self) -> Option<MutexGuard<'_, Slot>> {
        let g = self.try_slot()?;
        self.holder.store(APP, Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::Relaxed);
        Some(g)
    }

    fn release_app(&self, g: MutexGuard<'_, Slot>, shared: &Shared) {
        self.holder.store(FREE, Ordering::Relaxed);
        drop(g);
        // Pairs with the fence in `io_wait`: the I/O thread either sees the
        // slot free, or is seen waiting for it and woken.
        fence(Ordering::SeqCst);
        if self.io.load(Ordering::Relaxed) == WAITING
            || self.followers.load(Ordering::Relaxed) > 0
            || self.async_waiting()
            || shared.ended()
        {
            self.io_unparker.unpark();
        }
    }
}

/// What one turn of the loop ended with.
enum Turn {
    /// Polled (and handled what came).
    Polled,
    /// `ready` said stop before polling.
    Ready,
    /// The engine stopped (shutdown, or `poll` failed).
    Stop,
}

/// One turn: the reactor's work, then (unless `ready`, asked with whether
/// a delivery woke a blocked receiver) `poll` for at most `cap`, then the
/// events.
fn turn(
    reactor: &Mutex<Reactor>,
    shared: &Shared,
    slot: &mut Slot,
    cap: Option<Duration>,
    ready: impl FnOnce(bool) -> bool,
) -> Turn {
    if shared.ended() {
        // Another thread ran the last turn (shutdown): nothing will wake
        // this poll again.
        return Turn::Stop;
    }
    let (timeout, woke) = {
        let mut r = lock(reactor);
        if let ControlFlow::Break(()) = r.work() {
            r.shut_down_all();
            return Turn::Stop;
        }
        let timeout = r.sleep_timeout();
        (timeout, r.take_woke())
    };
    if ready(woke) {
        shared.wake.awake();
        return Turn::Ready;
    }
    let polled = slot.poll.poll(&mut slot.events, earliest(timeout, cap));
    shared.wake.awake();
    Counters::add(&shared.counters.polls, 1);
    if let Err(e) = polled {
        slot.events.clear();
        if e.kind() != std::io::ErrorKind::Interrupted {
            tracing::error!("poll failed, engine stops: {e}");
            shared.shutdown.store(true, Ordering::Release);
            lock(reactor).shut_down_all();
            return Turn::Stop;
        }
        return Turn::Polled;
    }
    lock(reactor).handle_events(&slot.events);
    slot.events.clear();
    Turn::Polled
}

/// The I/O thread's loop.
pub(crate) fn run(reactor: &Mutex<Reactor>, shared: &Shared, parker: IoParker) {
    let lead = &shared.lead;
    debug!("tofu engine I/O thread started");
    let mut lease = false;
    while !shared.ended() {
        if lease {
            lease = io_lease(reactor, shared, &parker);
            continue;
        }
        let mut slot = lead.lock_slot();
        lead.holder.store(IO_LONG, Ordering::Relaxed);
        loop {
            // Lease the poller out to the thread a delivery woke, unless an
            // async receiver waits: it never polls, so nobody would.
            let lease_out = |woke| woke && !lead.async_waiting();
            match turn(reactor, shared, &mut slot, None, lease_out) {
                Turn::Polled => {}
                Turn::Ready => {
                    lease = true;
                    break;
                }
                Turn::Stop => break,
            }
        }
        lead.holder.store(FREE, Ordering::Relaxed);
    }
    debug!("tofu engine I/O thread stopped");
}

/// What the I/O thread saw when a lease ended.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Nobody holds the poller.
    slot_free: bool,
    /// An application thread took the poller during the lease.
    app_led: bool,
    /// An application thread posted inline during the lease.
    app_posted: bool,
    /// A thread is blocked on its group's queue (following).
    followed: bool,
    /// A `receive_async` future is pending.
    async_waiting: bool,
    /// A command was posted and not carried out yet.
    command_waits: bool,
}

/// What the I/O thread does when a lease ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseEnd {
    /// Lease again, without polling.
    Again,
    /// Park until the leading application thread lets go, then lease again.
    WaitForLeader,
    /// Take the poller back and sleep in `poll`.
    TakeBack,
    /// Run a few turns on the free poller (for a waiting command), then
    /// lease again unless someone came to follow meanwhile.
    Turns,
}

/// The decision at a lease's end, from what was seen (pure, so the rules
/// are tested without threads or sockets).
fn lease_end(seen: &Seen) -> LeaseEnd {
    if !seen.slot_free {
        // An application thread leads. If it has for the whole lease, it
        // is waiting for something: wait for it to let go, without waking
        // up meanwhile. With an async receiver pending, wait for it at
        // once (the leader polls for everyone meanwhile, and hands the
        // poller back when it lets go).
        return if !seen.app_led || seen.async_waiting {
            LeaseEnd::WaitForLeader
        } else {
            LeaseEnd::Again
        };
    }
    if seen.followed || seen.async_waiting {
        return LeaseEnd::TakeBack;
    }
    if !seen.app_led {
        // Nobody led. An application that posted meanwhile is busy
        // sending (a stream between its receives): a turn handles what
        // came (a writable socket, an answer), and the lease goes on, so
        // that its next receive leads instead of following. Otherwise
        // take the poller back (an idle engine sleeps in `poll`).
        return if seen.app_posted {
            LeaseEnd::Turns
        } else {
            LeaseEnd::TakeBack
        };
    }
    if seen.command_waits {
        LeaseEnd::Turns
    } else {
        // The application leads between its receives: its next lead polls
        // for everyone, and if none comes the next lease end takes the
        // poller back. (Turns here would read for the application while
        // it works — work it does itself a moment later — and contend for
        // the reactor: 1,000 connections ran 5–8 % slower with them.)
        LeaseEnd::Again
    }
}

/// One lease: parks, then leases again if application threads led meanwhile
/// (running a few turns first if a command waits), or takes the poller back
/// (`false`) if none led for a whole lease.
fn io_lease(reactor: &Mutex<Reactor>, shared: &Shared, parker: &IoParker) -> bool {
    let lead = &shared.lead;
    let epoch = lead.epoch.load(Ordering::Relaxed);
    lead.posted.store(false, Ordering::Relaxed);
    lead.io.store(LEASING, Ordering::Relaxed);
    // Pairs with the fence in `Lead::add_async_waiter`.
    fence(Ordering::SeqCst);
    if shared.commands.is_empty() && !lead.async_waiting() {
        parker.0.park_timeout(LEASE);
    }
    lead.io.store(RUNNING, Ordering::Relaxed);
    if shared.ended() {
        return false;
    }
    let slot = lead.try_slot();
    let seen = Seen {
        slot_free: slot.is_some(),
        app_led: lead.epoch.load(Ordering::Relaxed) != epoch,
        app_posted: lead.posted.load(Ordering::Relaxed),
        followed: lead.followers.load(Ordering::Relaxed) > 0,
        async_waiting: lead.async_waiting(),
        command_waits: !shared.commands.is_empty(),
    };
    match lease_end(&seen) {
        LeaseEnd::WaitForLeader => {
            io_wait(shared, parker);
            return true;
        }
        LeaseEnd::Again => return true,
        LeaseEnd::TakeBack => return false, // the slot is free: `run` takes it
        LeaseEnd::Turns => {}
    }
    // `Turns` is decided only on a free slot.
    let Some(mut slot) = slot else {
        return true;
    };
    // A command was posted (`poke`): carry it out now.
    lead.holder.store(IO_BRIEF, Ordering::Relaxed);
    let mut turns = 0;
    while turns < BRIEF_TURNS {
        turns += 1;
        match turn(reactor, shared, &mut slot, Some(Duration::ZERO), |_| false) {
            Turn::Polled if !shared.commands.is_empty() => {}
            _ => break,
        }
    }
    lead.holder.store(FREE, Ordering::Relaxed);
    // Pairs with the fence in `Lead::follow`: a thread that came to lead
    // meanwhile either finds the slot free, or is seen following — then
    // poll for it until a delivery wakes it, as before leader/follower.
    fence(Ordering::SeqCst);
    lead.followers.load(Ordering::Relaxed) == 0
}

/// Parks until the leading application thread releases the poller.
fn io_wait(shared: &Shared, parker: &IoParker) {
    let lead = &shared.lead;
    lead.io.store(WAITING, Ordering::Relaxed);
    fence(Ordering::SeqCst);
    if lead.holder.load(Ordering::Relaxed) == APP && !shared.ended() {
        parker.0.park();
    }
    lead.io.store(RUNNING, Ordering::Relaxed);
}

/// What a thread in `wait_receive` got.
pub(crate) enum Led {
    /// It led; here is what it found on its queue (`None`: the deadline
    /// passed).
    Got(Option<Delivery>),
    /// Someone else polls: wait on the queue.
    Follow,
}

/// `wait_receive`'s attempt to lead: runs the loop on the caller's thread
/// until `group` has something, `deadline` passes or the engine stops.
pub(crate) fn receive(
    reactor: &Mutex<Reactor>,
    shared: &Shared,
    group: &GroupShared,
    deadline: Option<Instant>,
    spin_until: Option<Instant>,
) -> Result<Led, Error> {
    let lead = &shared.lead;
    if shared.ended() {
        // The loop is over: nothing will be polled for again.
        return Ok(Led::Got(Some(Delivery::Shutdown)));
    }
    let Some(mut slot) = lead.take_for_app() else {
        return Ok(Led::Follow);
    };
    let run = std::panic::AssertUnwindSafe(|| {
        lead_until(reactor, shared, &mut slot, group, deadline, spin_until)
    });
    let result = std::panic::catch_unwind(run);
    group.leading.store(false, Ordering::Relaxed);
    let result = match result {
        Ok(got) => Ok(Led::Got(got)),
        Err(_) => {
            // A bug in the reactor, met on this thread: the engine shuts
            // down as if the I/O thread had died (SPEC §5.7b).
            shared.io_thread_died();
            Err(Error::ShutdownStarted)
        }
    };
    lead.release_app(slot, shared);
    result
}

fn lead_until(
    reactor: &Mutex<Reactor>,
    shared: &Shared,
    slot: &mut Slot,
    group: &GroupShared,
    deadline: Option<Instant>,
    spin_until: Option<Instant>,
) -> Option<Delivery> {
    // Polls at least once, so that `wait_receive(Some(ZERO))` makes progress.
    let mut polled = false;
    loop {
        if shared.ended() {
            return Some(group.queue.try_pop().unwrap_or(Delivery::Shutdown));
        }
        let (cap, expired) = poll_cap(Instant::now(), deadline, spin_until, polled);
        let ready = |_| {
            group.leading.store(true, Ordering::Relaxed);
            // Pairs with the fence in `GroupShared::push`.
            fence(Ordering::SeqCst);
            !group.queue.is_empty() || expired
        };
        let t = turn(reactor, shared, slot, cap, ready);
        group.leading.store(false, Ordering::Relaxed);
        if let Turn::Polled = t {
            // Counted whether or not it brought this thread's message.
            polled = true;
            Counters::add(&shared.counters.waiter_polls, 1);
        }
        if let Some(d) = group.queue.try_pop() {
            return Some(d);
        }
        match t {
            Turn::Stop => return Some(Delivery::Shutdown),
            Turn::Ready if expired => return None,
            // Another receiver of the group took what was there.
            Turn::Ready | Turn::Polled => {}
        }
    }
}

/// A leader's next poll: how long it may wait (`None`: until something
/// happens) and whether its deadline has passed — only once it has polled
/// at least once, so that `wait_receive(Some(ZERO))` makes progress.
/// Within the spin budget (`spin_until`) the poll does not wait; the
/// deadline still ends the call.
fn poll_cap(
    now: Instant,
    deadline: Option<Instant>,
    spin_until: Option<Instant>,
    polled: bool,
) -> (Option<Duration>, bool) {
    let cap = deadline.map(|d| d.saturating_duration_since(now));
    let expired = polled && cap.is_some_and(|c| c.is_zero());
    match spin_until {
        Some(s) if now < s => (Some(Duration::ZERO), expired),
        _ => (cap, expired),
    }
}

/// A follower is about to block on its group's queue (`Some`: until it
/// stops following, [`Following::drop`]).
pub(crate) struct Following<'a>(&'a Lead);

impl Lead {
    pub(crate) fn follow(&self) -> Following<'_> {
        self.followers.fetch_add(1, Ordering::Relaxed);
        // Pairs with the fences after the slot is let go (`release_app`,
        // `io_lease`): see `is_free` below, checked after this.
        fence(Ordering::SeqCst);
        Following(self)
    }

    /// Whether nobody holds the poller (a follower may try to lead).
    pub(crate) fn is_free(&self) -> bool {
        self.holder.load(Ordering::Relaxed) == FREE
    }
}

impl Drop for Following<'_> {
    fn drop(&mut self) {
        self.0.followers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{LeaseEnd, Seen, lease_end, poll_cap};

    /// Without a budget a leader sleeps in `poll` until its deadline (or
    /// for ever); within one it polls without waiting; past it, it sleeps
    /// again for what is left of the deadline.
    #[test]
    fn a_leader_polls_without_waiting_only_within_its_spin_budget() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(poll_cap(now, None, None, true), (None, false));
        assert_eq!(
            poll_cap(now, Some(now + ms(30)), None, true),
            (Some(ms(30)), false)
        );
        let spin = Some(now + ms(1));
        assert_eq!(
            poll_cap(now, None, spin, true),
            (Some(Duration::ZERO), false)
        );
        assert_eq!(
            poll_cap(now, Some(now + ms(30)), spin, true),
            (Some(Duration::ZERO), false)
        );
        let later = now + ms(2);
        assert_eq!(poll_cap(later, None, spin, true), (None, false));
        assert_eq!(
            poll_cap(later, Some(now + ms(30)), spin, true),
            (Some(ms(28)), false)
        );
    }

    /// A deadline ends the call once the leader has polled, spinning or
    /// not; before its first poll it polls once, without waiting.
    #[test]
    fn a_spin_budget_never_outlasts_the_deadline() {
        let now = Instant::now();
        let spin = Some(now + Duration::from_millis(10));
        for spin_until in [None, spin] {
            assert_eq!(
                poll_cap(now, Some(now), spin_until, false),
                (Some(Duration::ZERO), false)
            );
            assert_eq!(
                poll_cap(now, Some(now), spin_until, true),
                (Some(Duration::ZERO), true)
            );
            let past = now + Duration::from_millis(3);
            assert!(poll_cap(past, Some(now), spin_until, true).1);
        }
    }

    fn seen(slot_free: bool, app_led: bool) -> Seen {
        Seen {
            slot_free,
            app_led,
            app_posted: false,
            followed: false,
            async_waiting: false,
            command_waits: false,
        }
    }

    /// An application that led during the lease keeps the poller's lease:
    /// the I/O thread neither polls nor takes it back.
    #[test]
    fn an_application_that_led_keeps_the_lease_without_turns() {
        assert_eq!(lease_end(&seen(true, true)), LeaseEnd::Again);
        assert_eq!(lease_end(&seen(false, true)), LeaseEnd::Again);
    }

    /// Nobody led for a whole lease: the I/O thread takes the poller back
    /// (or, if a leader has held it all along, waits for it to let go).
    #[test]
    fn a_lease_nobody_used_ends_it() {
        assert_eq!(lease_end(&seen(true, false)), LeaseEnd::TakeBack);
        assert_eq!(lease_end(&seen(false, false)), LeaseEnd::WaitForLeader);
    }

    /// An application that posted inline during the lease but did not
    /// lead (a sender between its receives) keeps the lease, with a turn
    /// for what came meanwhile: the I/O thread does not take the poller
    /// back, so the sender's next receive leads instead of following. One
    /// that neither led nor posted loses it; followers and async
    /// receivers still end it.
    #[test]
    fn a_posting_application_keeps_the_lease_with_a_turn() {
        let posted = Seen {
            app_posted: true,
            ..seen(true, false)
        };
        assert_eq!(lease_end(&posted), LeaseEnd::Turns);
        assert_eq!(lease_end(&seen(true, false)), LeaseEnd::TakeBack);
        for (followed, async_waiting) in [(true, false), (false, true)] {
            let s = Seen {
                followed,
                async_waiting,
                ..posted
            };
            assert_eq!(lease_end(&s), LeaseEnd::TakeBack, "{s:?}");
        }
        // A leader holding the poller all along is waited for, as before.
        let held = Seen {
            app_posted: true,
            ..seen(false, false)
        };
        assert_eq!(lease_end(&held), LeaseEnd::WaitForLeader);
    }

    /// A posted command is carried out at once on a free poller, even
    /// while the application leads between its receives.
    #[test]
    fn a_waiting_command_gets_turns() {
        let s = Seen {
            command_waits: true,
            ..seen(true, true)
        };
        assert_eq!(lease_end(&s), LeaseEnd::Turns);
        // Held by a leader: it polls, and so carries the command out.
        let s = Seen {
            command_waits: true,
            ..seen(false, true)
        };
        assert_eq!(lease_end(&s), LeaseEnd::Again);
    }

    /// A follower or a pending async receiver never waits for a lease: a
    /// free poller is taken back; one a leader holds is waited for when an
    /// async receiver is pending (a follower is polled for by that leader).
    #[test]
    fn followers_and_async_receivers_end_the_lease() {
        for (followed, async_waiting) in [(true, false), (false, true), (true, true)] {
            let free = Seen {
                followed,
                async_waiting,
                ..seen(true, true)
            };
            assert_eq!(lease_end(&free), LeaseEnd::TakeBack, "{free:?}");
        }
        let held = Seen {
            async_waiting: true,
            ..seen(false, true)
        };
        assert_eq!(lease_end(&held), LeaseEnd::WaitForLeader);
    }
}
