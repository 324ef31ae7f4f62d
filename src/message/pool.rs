//! The bounded message pool (SPEC §5.1, §5.7).
//!
//! Free messages sit in a bounded stack behind a mutex (`FreeList`): `get`
//! and the return path take it once each — and the batch calls
//! ([`Pool::get_many`], [`Pool::put_many`]) once for many messages — for
//! pushes and pops only (messages are never allocated or freed under it; only
//! the stack itself grows under it, towards its capacity), and its length is
//! kept in an atomic for the checks that must not lock. The stack holds
//! whole messages, cleared on the way in (the body on the way out: see
//! [`tidy`]), so taking one and giving one back is a move each (no taking
//! apart, no putting together). The most recently returned buffers go out
//! first, warm in the cache.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::{MAX_SECTION_LEN, Message};

/// How [`Pool::get`] (and `Engine::get`) behaves when the pool is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Allocation {
    /// Return `None` when the pool is empty.
    PoolOnly,
    /// Allocate a new message when the pool is empty; never `None`. An
    /// engine's pool also allocates rather than hand out the last few free
    /// messages it keeps for reading (see [`Engine::get`](crate::Engine::get)).
    Always,
}

pub(crate) type PoolRef = Arc<PoolInner>;

/// Buffers larger than this are shrunk when they come back, so one huge message
/// does not pin memory in the pool forever.
const KEEP_CAPACITY: usize = 2 * MAX_SECTION_LEN;

/// A free message: cleared but for its body ([`tidy`]). Its reference
/// to the pool is kept while it waits when it came back in a batch
/// ([`Pool::put_many`]), so that taking it again moves the reference instead
/// of counting a new one (an atomic operation fewer each way); one dropped
/// alone waits without it. The free list then refers to its own pool:
/// closing the pool (engine shutdown, or its last [`Pool`] handle dropped)
/// empties it and breaks the cycle.
type Free = Message;

/// A free message without a pool reference.
fn fresh() -> Free {
    Message::from_parts(Vec::new(), Vec::new(), None)
}

pub(crate) struct PoolInner {
    free: FreeList,
    closed: AtomicBool,
    /// Set by the engine when it found the pool empty; the next return wakes it.
    starved: AtomicBool,
    /// How many free messages make a return notify the starved engine.
    wake_at: AtomicUsize,
    notify: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Messages belonging to the pool: free ones plus those handed out. Only
    /// allocation, adoption and freeing touch it, never the get/return path.
    live: AtomicUsize,
    allocated: AtomicUsize,
    /// Free messages `get(Always)` leaves for the engine's reads.
    reserve: AtomicUsize,
}

/// A thread-safe, bounded pool of reusable messages.
///
/// Every engine owns one (reach it through `Engine::get`/`Engine::put`); a
/// standalone pool is useful on its own too. `initial` messages are allocated up
/// front; at most `max` free messages are kept.
///
/// # Examples
///
/// ```
/// use tofu::{Allocation, Message, Pool};
///
/// let pool = Pool::new(2, 4);
/// let a = pool.get(Allocation::PoolOnly).unwrap();
/// let b = pool.get(Allocation::PoolOnly).unwrap();
/// assert!(pool.get(Allocation::PoolOnly).is_none());
/// drop(a); // back into the pool
/// assert_eq!(pool.len(), 1);
/// pool.put(Message::new()); // adopted
/// assert_eq!(pool.len(), 2);
/// # drop(b);
/// ```
#[derive(Clone)]
pub struct Pool {
    inner: PoolRef,
    /// Closes the pool when the last handle goes (see [`Free`]).
    _last: Arc<LastHandle>,
}

/// Dropped with the last [`Pool`] handle: closes the pool.
struct LastHandle(PoolRef);

impl Drop for LastHandle {
    fn drop(&mut self) {
        close(&self.0);
    }
}

/// Frees every free message and makes the pool free (not keep) anything
/// returned from now on.
fn close(inner: &PoolInner) {
    inner.closed.store(true, Ordering::SeqCst);
    let mut drained = std::mem::take(&mut *inner.free.lock());
    inner.free.len.store(0, Ordering::Release);
    inner.live.fetch_sub(drained.len(), Ordering::Relaxed);
    // The buffers (and the pool references some hold) go outside the lock,
    // detached first: they are freed, not returned.
    for m in &mut drained {
        drop(m.take_pool());
    }
    drop(drained);
}

impl Pool {
    /// A pool pre-filled with `initial` messages that keeps at most `max` free
    /// ones (`max` is raised to `initial` if lower, and to 1 if 0).
    pub fn new(initial: usize, max: usize) -> Pool {
        let max = max.max(initial).max(1);
        let inner = Arc::new(PoolInner {
            free: FreeList::new(max),
            closed: AtomicBool::new(false),
            starved: AtomicBool::new(false),
            wake_at: AtomicUsize::new(1),
            notify: OnceLock::new(),
            live: AtomicUsize::new(initial),
            allocated: AtomicUsize::new(initial),
            reserve: AtomicUsize::new(0),
        });
        for _ in 0..initial {
            let _ = inner.free.push(fresh());
        }
        Pool {
            _last: Arc::new(LastHandle(inner.clone())),
            inner,
        }
    }

    /// Takes a cleared message (default header, no text headers, empty body).
    ///
    /// With [`Allocation::PoolOnly`] returns `None` when the pool is empty; with
    /// [`Allocation::Always`] allocates a new message instead (it joins the pool
    /// when dropped, if there is room).
    pub fn get(&self, how: Allocation) -> Option<Message> {
        self.take(how, Body::Clear)
    }

    /// Like [`get`](Self::get), but the body keeps the length (and the
    /// stale bytes) it had: the decoder resizes it to the frame's body,
    /// which costs nothing when it was as long already (see [`tidy`]).
    pub(crate) fn get_for_decode(&self, how: Allocation) -> Option<Message> {
        self.take(how, Body::Stale)
    }

    fn take(&self, how: Allocation, body: Body) -> Option<Message> {
        let keep = match how {
            Allocation::Always => self.inner.reserve.load(Ordering::Relaxed),
            Allocation::PoolOnly => 0,
        };
        let taken = if keep == 0 || self.inner.free.len() > keep {
            self.inner.free.pop()
        } else {
            None
        };
        match taken {
            Some(b) => Some(self.wrap(b, body)),
            None if how == Allocation::Always => {
                self.inner.allocated.fetch_add(1, Ordering::Relaxed);
                self.inner.live.fetch_add(1, Ordering::Relaxed);
                Some(self.wrap(fresh(), body))
            }
            None => None,
        }
    }

    /// Takes `n` cleared messages at once, as `n` calls of
    /// [`get`](Self::get) would, with one lock: appends them to `out` and
    /// returns how many (fewer than `n` only with
    /// [`Allocation::PoolOnly`], when the pool runs out).
    ///
    /// # Examples
    ///
    /// ```
    /// use tofu::{Allocation, Pool};
    ///
    /// let pool = Pool::new(3, 3);
    /// let mut batch = Vec::new();
    /// assert_eq!(pool.get_many(Allocation::PoolOnly, 5, &mut batch), 3);
    /// assert_eq!(pool.get_many(Allocation::Always, 2, &mut batch), 2); // allocated
    /// assert_eq!(batch.len(), 5);
    /// ```
    pub fn get_many(&self, how: Allocation, n: usize, out: &mut Vec<Message>) -> usize {
        self.take_many(how, n, out, Body::Clear)
    }

    /// Like [`get_many`](Self::get_many), with the bodies as
    /// [`get_for_decode`](Self::get_for_decode) leaves them.
    pub(crate) fn get_many_for_decode(
        &self,
        how: Allocation,
        n: usize,
        out: &mut Vec<Message>,
    ) -> usize {
        self.take_many(how, n, out, Body::Stale)
    }

    fn take_many(&self, how: Allocation, n: usize, out: &mut Vec<Message>, body: Body) -> usize {
        let keep = match how {
            Allocation::Always => self.inner.reserve.load(Ordering::Relaxed),
            Allocation::PoolOnly => 0,
        };
        out.reserve(n);
        let start = out.len();
        if self.inner.free.len() > keep {
            // The top of the stack under one lock (moved one by one:
            // swapping the slices cost more); finished outside it.
            let mut bufs = self.inner.free.lock();
            let k = n.min(bufs.len().saturating_sub(keep));
            let from = bufs.len() - k;
            out.extend(bufs.drain(from..));
            self.inner.free.len.store(bufs.len(), Ordering::Release);
        }
        for m in &mut out[start..] {
            self.finish(m, body);
        }
        let mut taken = out.len() - start;
        if how == Allocation::Always && taken < n {
            let more = n - taken;
            self.inner.allocated.fetch_add(more, Ordering::Relaxed);
            self.inner.live.fetch_add(more, Ordering::Relaxed);
            for _ in 0..more {
                out.push(self.wrap(fresh(), body));
            }
            taken = n;
        }
        taken
    }

    /// Reading found the pool empty: while fewer than its capacity
    /// (`max_pool_msgs`) messages belong to it, free and handed out, add new
    /// free ones up to that capacity. Returns how many were added. This is
    /// the only way the engine allocates pool messages itself: what it holds
    /// for reading is bounded by `max_pool_msgs` (`initial_pool_msgs` is
    /// where the pool starts, not what it keeps).
    pub(crate) fn grow(&self) -> usize {
        let cap = self.capacity();
        let mut added = 0;
        while !self.inner.closed.load(Ordering::Relaxed) {
            let live = self.inner.live.load(Ordering::Relaxed);
            if live >= cap {
                break;
            }
            if self
                .inner
                .live
                .compare_exchange(live, live + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            if self.inner.free.push(fresh()).is_err() {
                // Full after all (messages came back meanwhile).
                self.inner.live.fetch_sub(1, Ordering::Relaxed);
                break;
            }
            self.inner.allocated.fetch_add(1, Ordering::Relaxed);
            added += 1;
        }
        added
    }

    /// The engine keeps the last `n` free messages for reading: `get(Always)`
    /// allocates instead of taking them. Otherwise an application whose
    /// posts (to a peer in the same engine) hold the pool could leave the
    /// engine nothing to read the peer's side into, and each would wait for
    /// the other. `PoolOnly` still takes them (it is how an application
    /// waits for the pool).
    pub(crate) fn set_reserve(&self, n: usize) {
        self.inner.reserve.store(n, Ordering::Relaxed);
    }

    /// Messages that belong to the pool (free and handed out), at most its
    /// capacity: what a refill can bring back.
    pub(crate) fn size(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed).min(self.capacity())
    }

    fn wrap(&self, mut m: Free, body: Body) -> Message {
        self.finish(&mut m, body);
        m
    }

    /// Makes a free message a taken one: its pool reference, and its body
    /// as `body` says.
    fn finish(&self, m: &mut Message, body: Body) {
        if m.pool().is_none() {
            m.set_pool(Some(self.inner.clone()));
        }
        if body == Body::Clear {
            m.body.clear();
        }
    }

    /// Gives a message to the pool: one from this pool returns (as on drop), one
    /// from elsewhere is adopted. It is freed instead when the pool is full or
    /// closed.
    pub fn put(&self, mut msg: Message) {
        if msg.pool().is_some_and(|p| Arc::ptr_eq(p, &self.inner)) {
            drop(msg);
            return;
        }
        // Detach from a foreign pool (or none) and adopt the buffers here.
        msg.set_pool(None);
        let text = msg.text_headers.take_buf();
        let body = std::mem::take(&mut msg.body);
        if self.inner.store(text, body) {
            self.inner.live.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Gives every message of `msgs` to the pool, as [`put`](Self::put)
    /// does one at a time, but this pool's own messages under one lock
    /// (cheaper per message when many come back at once, say after
    /// [`receive_many`](crate::ChannelGroup::receive_many)). `msgs` is
    /// empty afterwards; its capacity is kept.
    ///
    /// # Examples
    ///
    /// ```
    /// use tofu::{Allocation, Pool};
    ///
    /// let pool = Pool::new(4, 4);
    /// let mut out: Vec<_> = (0..4).map(|_| pool.get(Allocation::PoolOnly).unwrap()).collect();
    /// assert!(pool.is_empty());
    /// pool.put_many(&mut out);
    /// assert!(out.is_empty());
    /// assert_eq!(pool.len(), 4);
    /// ```
    pub fn put_many(&self, msgs: &mut Vec<Message>) {
        self.take_own(msgs);
        // What is left belongs to another pool or none: adopted one at a
        // time, as `put` does.
        for msg in msgs.drain(..) {
            self.put(msg);
        }
    }

    /// Messages the engine is done with (written, say): this pool's come
    /// back under one lock, the others go home as when dropped.
    pub(crate) fn recycle_many(&self, msgs: &mut Vec<Message>) {
        // One or two go back cheaper one at a time (as when dropped).
        if msgs.len() > 2 {
            self.take_own(msgs);
        }
        msgs.clear();
    }

    /// Returns this pool's messages of `msgs` under one lock and removes
    /// them from `msgs`; the others stay there.
    fn take_own(&self, msgs: &mut Vec<Message>) {
        // Tidied outside the lock, in place; the (rare) others set aside.
        let mut others = Vec::new();
        let mut i = 0;
        while i < msgs.len() {
            if msgs[i].pool().is_some_and(|p| Arc::ptr_eq(p, &self.inner)) {
                tidy(&mut msgs[i]);
                i += 1;
            } else {
                others.push(msgs.swap_remove(i));
            }
        }
        let returned = msgs.len();
        {
            let mut bufs = self.inner.free.lock();
            // Read under the lock: `close` sets it before it empties the
            // list under the same lock, so nothing is kept after that.
            let closed = self.inner.closed.load(Ordering::SeqCst);
            let room = self.inner.free.cap.saturating_sub(bufs.len());
            // Kept in one block (a copy of contiguous memory).
            let k = if closed { 0 } else { room.min(msgs.len()) };
            if k == msgs.len() {
                bufs.append(msgs);
            } else {
                bufs.extend(msgs.drain(..k));
            }
            self.inner.free.len.store(bufs.len(), Ordering::Release);
        }
        // What did not fit is freed, detached first, outside the lock.
        let freed = msgs.len();
        for m in msgs.iter_mut() {
            drop(m.take_pool());
        }
        msgs.clear();
        if freed > 0 {
            self.inner.live.fetch_sub(freed, Ordering::Relaxed);
        }
        // The others stay (usually none: nothing was allocated).
        msgs.append(&mut others);
        if returned > 0 {
            self.inner.notify_if_starved(freed > 0);
        }
    }

    /// Free messages in the pool right now.
    pub fn len(&self) -> usize {
        self.inner.free.len()
    }

    /// `true` when no free message is in the pool.
    pub fn is_empty(&self) -> bool {
        self.inner.free.is_empty()
    }

    /// The most free messages the pool keeps.
    pub fn capacity(&self) -> usize {
        self.inner.free.capacity()
    }

    /// Messages taken from this pool and not yet returned (a gauge: exact when
    /// no other thread is taking or returning messages).
    pub fn outstanding(&self) -> usize {
        let live = self.inner.live.load(Ordering::Relaxed);
        live.saturating_sub(self.inner.free.len())
    }

    /// Messages this pool has allocated in total.
    pub fn allocated(&self) -> usize {
        self.inner.allocated.load(Ordering::Relaxed)
    }

    /// Frees every free message and makes the pool free (not keep) anything
    /// returned from now on. Used at engine shutdown.
    pub(crate) fn close(&self) {
        close(&self.inner);
    }

    /// Installs the callback run when a message returns to a starved pool.
    pub(crate) fn set_notify(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.inner.notify.set(f);
    }

    /// Arms the notify callback: the next message returned to the pool runs it.
    /// Callers re-check the pool after arming, which closes the race with a
    /// concurrent return.
    pub(crate) fn arm(&self) {
        self.arm_at(1);
    }

    /// Like [`Pool::arm`], but the callback runs only once `free` messages are
    /// in the pool: an engine waiting for memory wakes once per batch, not once
    /// per message.
    pub(crate) fn arm_at(&self, free: usize) {
        self.inner.wake_at.store(free.max(1), Ordering::Relaxed);
        self.inner.starved.store(true, Ordering::SeqCst);
    }
}

/// What a message taken from the pool holds in its body.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Body {
    /// Nothing (what the application gets).
    Clear,
    /// The bytes it held when it came back (for the decoder).
    Stale,
}

/// A message cleared for its next use: default header, empty text headers
/// (their buffers shrunk if one huge message grew them). The body keeps its
/// length, and the bytes in it, until the message is taken: [`Pool::get`]
/// empties it then, and the decoder
/// ([`get_for_decode`](Pool::get_for_decode)) sizes it to the next frame's
/// body without writing the bytes it already has (safe Rust can only read
/// from the socket into initialised bytes, so a body that stays initialised
/// is what lets a large body be read in place with no `memset`).
fn tidy(m: &mut Message) {
    m.header = Default::default();
    m.text_headers.clear_keep(KEEP_CAPACITY, MAX_SECTION_LEN);
    if m.body.capacity() > KEEP_CAPACITY {
        m.body.truncate(MAX_SECTION_LEN);
        m.body.shrink_to(MAX_SECTION_LEN);
    }
}

/// The free messages' buffers: a bounded stack behind a mutex, its length
/// mirrored in an atomic.
struct FreeList {
    bufs: Mutex<Vec<Free>>,
    len: AtomicUsize,
    cap: usize,
}

impl FreeList {
    fn new(cap: usize) -> FreeList {
        FreeList {
            // Grows on demand up to `cap` (a tuned pool's 16,384 would
            // otherwise be reserved up front).
            bufs: Mutex::new(Vec::with_capacity(cap.min(64))),
            len: AtomicUsize::new(0),
            cap,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Free>> {
        // Nothing panics while it is held (a push or a pop).
        self.bufs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `b`, or hands it back when full (for the caller to free,
    /// outside the lock).
    fn push(&self, b: Free) -> Result<(), Free> {
        let mut bufs = self.lock();
        if bufs.len() >= self.cap {
            return Err(b);
        }
        bufs.push(b);
        self.len.store(bufs.len(), Ordering::Release);
        Ok(())
    }

    fn pop(&self) -> Option<Free> {
        if self.is_empty() {
            return None;
        }
        let mut bufs = self.lock();
        let b = bufs.pop();
        self.len.store(bufs.len(), Ordering::Release);
        b
    }

    /// Free buffers (without locking: exact when nobody pushes or pops).
    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn capacity(&self) -> usize {
        self.cap
    }
}

impl PoolInner {
    /// Counts a new message of this pool made by cloning one: it is handed out
    /// and returns here when dropped, like a message from [`Pool::get`].
    pub(crate) fn adopt_clone(&self) {
        self.allocated.fetch_add(1, Ordering::Relaxed);
        self.live.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn recycle(&self, text: Vec<u8>, body: Vec<u8>) {
        if !self.store(text, body) {
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Keeps the buffers as a free message; `false` when they were freed
    /// instead (pool full or closed).
    fn store(&self, text: Vec<u8>, body: Vec<u8>) -> bool {
        let mut kept = false;
        if !self.closed.load(Ordering::Relaxed) {
            // A full pool frees the message (the Err drops it).
            let mut m = Message::from_parts(text, body, None);
            tidy(&mut m);
            kept = self.free.push(m).is_ok();
        }
        self.notify_if_starved(!kept);
        kept
    }

    /// After a return: runs the starved engine's callback once enough
    /// messages are free (or when a message was freed, not kept).
    fn notify_if_starved(&self, freed: bool) {
        if self.starved.load(Ordering::SeqCst)
            && (self.free.len() >= self.wake_at.load(Ordering::Relaxed) || freed)
            && self.starved.swap(false, Ordering::SeqCst)
        {
            if let Some(f) = self.notify.get() {
                f();
            }
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("free", &self.len())
            .field("capacity", &self.capacity())
            .field("outstanding", &self.outstanding())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn put_many_returns_own_adopts_foreign_and_frees_past_the_cap() {
        let pool = Pool::new(0, 3);
        let other = Pool::new(2, 2);
        let mut msgs: Vec<Message> = (0..4)
            .map(|_| pool.get(Allocation::Always).unwrap())
            .collect();
        for m in &mut msgs {
            m.body.extend_from_slice(b"used");
        }
        msgs.push(other.get(Allocation::PoolOnly).unwrap());
        assert_eq!(pool.outstanding(), 4);
        pool.put_many(&mut msgs);
        assert!(msgs.is_empty());
        // Three of ours kept (the cap), one freed; the foreign one adopted
        // (the pool is full: freed too), and gone from `other`.
        assert_eq!(pool.len(), 3);
        assert_eq!(pool.outstanding(), 0);
        assert_eq!(other.len(), 1);
        let m = pool.get(Allocation::PoolOnly).unwrap();
        assert!(m.body.is_empty(), "cleared on the way back");

        // The engine's path: ours back, others home to their own pool.
        let mut spent = vec![m, other.get(Allocation::PoolOnly).unwrap()];
        pool.recycle_many(&mut spent);
        assert!(spent.is_empty());
        assert_eq!((pool.len(), other.len()), (3, 1));
    }

    /// Messages returned in a batch keep their reference to the pool while
    /// they wait; dropping the last handle still frees the pool (no cycle
    /// left behind), also with messages still out.
    #[test]
    fn the_last_handle_frees_a_pool_that_holds_its_own_references() {
        let pool = Pool::new(2, 8);
        let clone = pool.clone();
        let mut out: Vec<Message> = (0..6)
            .map(|_| pool.get(Allocation::Always).unwrap())
            .collect();
        let late = out.pop().unwrap();
        pool.put_many(&mut out);
        assert_eq!(pool.len(), 5);
        // Taken again: the kept reference moves into the message.
        let again = pool.get(Allocation::PoolOnly).unwrap();
        drop(again);
        let weak = Arc::downgrade(&pool.inner);
        drop(pool);
        assert!(weak.upgrade().is_some(), "a handle is left");
        drop(clone);
        assert!(weak.upgrade().is_some(), "a message is still out");
        drop(late);
        assert!(weak.upgrade().is_none(), "freed with its last message");
    }

    #[test]
    fn put_many_wakes_a_starved_pool() {
        let pool = Pool::new(2, 4);
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        pool.set_notify(Box::new(move || {
            h.fetch_add(1, Ordering::SeqCst);
        }));
        let mut out: Vec<Message> = (0..2)
            .map(|_| pool.get(Allocation::PoolOnly).unwrap())
            .collect();
        pool.arm_at(2);
        pool.put_many(&mut out);
        assert_eq!(hits.load(Ordering::SeqCst), 1, "one wake-up for the batch");
    }

    /// The body's bytes stay in a free message for the decoder, but the
    /// application always gets an empty body, one at a time or in a batch,
    /// and a huge body is cut back when it returns.
    #[test]
    fn the_application_gets_an_empty_body_the_decoder_the_old_one() {
        let pool = Pool::new(1, 1);
        let mut m = pool.get(Allocation::PoolOnly).unwrap();
        m.body.resize(1000, 7);
        drop(m);
        let m = pool.get_for_decode(Allocation::PoolOnly).unwrap();
        assert_eq!(m.body, vec![7; 1000], "kept for the decoder");
        drop(m);
        let m = pool.get(Allocation::PoolOnly).unwrap();
        assert!(m.body.is_empty());
        assert!(m.body.capacity() >= 1000);
        let mut m = m;
        m.body.resize(1000, 7);
        let mut v = vec![m];
        pool.put_many(&mut v);
        assert_eq!(pool.get_many(Allocation::PoolOnly, 1, &mut v), 1);
        assert!(v[0].body.is_empty());
        v[0].body.resize(3 * MAX_SECTION_LEN, 1);
        v.clear();
        let m = pool.get_for_decode(Allocation::PoolOnly).unwrap();
        assert_eq!(m.body.len(), MAX_SECTION_LEN);
        assert!(m.body.capacity() <= KEEP_CAPACITY);
    }

    #[test]
    fn initial_and_max() {
        let pool = Pool::new(3, 5);
        assert_eq!(pool.len(), 3);
        assert_eq!(pool.capacity(), 5);
        let raised = Pool::new(8, 2);
        assert_eq!(raised.capacity(), 8);
    }

    #[test]
    fn pool_only_and_always() {
        let pool = Pool::new(1, 2);
        let a = pool.get(Allocation::PoolOnly).unwrap();
        assert!(pool.get(Allocation::PoolOnly).is_none());
        let b = pool.get(Allocation::Always).unwrap();
        let c = pool.get(Allocation::Always).unwrap();
        assert_eq!(pool.outstanding(), 3);
        drop((a, b, c));
        assert_eq!(pool.outstanding(), 0);
        assert_eq!(pool.len(), 2, "keeps at most max");
    }

    #[test]
    fn comes_back_cleared_with_capacity() {
        let pool = Pool::new(1, 1);
        let mut m = pool.get(Allocation::PoolOnly).unwrap();
        m.header.message_id = 9;
        m.text_headers.append("a", "b").unwrap();
        m.body.extend_from_slice(&[1; 1000]);
        drop(m);
        let m = pool.get(Allocation::PoolOnly).unwrap();
        assert_eq!(m.header, Default::default());
        assert!(m.text_headers.is_empty() && m.body.is_empty());
        assert!(m.body.capacity() >= 1000);
        assert!(m.text_headers.capacity() >= 5);
    }

    /// Found by the `decoder_stream` fuzz target: a clone of a pooled message
    /// returned to the pool when dropped without ever being counted, so
    /// `outstanding` under-counted from then on (a message handed out read as
    /// 0 outstanding).
    #[test]
    fn clones_are_counted() {
        let pool = Pool::new(2, 2);
        let a = pool.get(Allocation::PoolOnly).unwrap();
        let b = a.clone();
        assert!(b.is_pooled());
        assert_eq!(pool.outstanding(), 2);
        assert_eq!(pool.allocated(), 3);
        drop(a);
        drop(b);
        assert_eq!(pool.outstanding(), 0);
        assert_eq!(pool.len(), 2);
        let c = pool.get(Allocation::PoolOnly).unwrap();
        assert_eq!(pool.outstanding(), 1);
        drop(c);
        assert_eq!(pool.outstanding(), 0);
    }

    #[test]
    fn reading_grows_the_pool_up_to_its_capacity_and_no_further() {
        let pool = Pool::new(2, 5);
        let held: Vec<_> = (0..2)
            .map(|_| pool.get(Allocation::PoolOnly).unwrap())
            .collect();
        assert!(pool.get(Allocation::PoolOnly).is_none());
        assert_eq!(
            pool.grow(),
            3,
            "up to the capacity, counting those handed out"
        );
        assert_eq!(pool.len(), 3);
        assert_eq!(pool.grow(), 0, "at the capacity");
        let more: Vec<_> = (0..3)
            .map(|_| pool.get(Allocation::PoolOnly).unwrap())
            .collect();
        assert_eq!(pool.grow(), 0, "five belong to the pool, all handed out");
        assert_eq!(pool.outstanding(), 5);
        drop((held, more));
        assert_eq!(pool.len(), 5, "all come back: the pool has room for them");
        assert_eq!(pool.allocated(), 5);
        pool.close();
        assert_eq!(pool.grow(), 0, "a closed pool does not grow");
    }

    #[test]
    fn put_adopts_standalone_messages() {
        let pool = Pool::new(0, 4);
        pool.put(Message::new());
        assert_eq!(pool.len(), 1);
        let m = pool.get(Allocation::PoolOnly).unwrap();
        assert!(m.is_pooled());
        pool.put(m);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.outstanding(), 0);
        // A message from another pool is adopted, not returned there.
        let other = Pool::new(1, 1);
        let foreign = other.get(Allocation::PoolOnly).unwrap();
        pool.put(foreign);
        assert_eq!(pool.len(), 2);
        assert_eq!(other.len(), 0);
    }

    #[test]
    fn closed_pool_frees() {
        let pool = Pool::new(2, 2);
        let m = pool.get(Allocation::PoolOnly).unwrap();
        pool.close();
        assert_eq!(pool.len(), 0);
        drop(m);
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn starved_pool_notifies_once() {
        let pool = Pool::new(1, 1);
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        pool.set_notify(Box::new(move || {
            h.fetch_add(1, Ordering::SeqCst);
        }));
        let m = pool.get(Allocation::PoolOnly).unwrap();
        pool.arm();
        assert!(pool.get(Allocation::PoolOnly).is_none());
        drop(m);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        let m = pool.get(Allocation::PoolOnly).unwrap();
        drop(m);
        assert_eq!(hits.load(Ordering::SeqCst), 1, "not armed again");
    }

    #[test]
    fn starved_pool_notifies_at_the_low_water_mark() {
        let pool = Pool::new(4, 4);
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        pool.set_notify(Box::new(move || {
            h.fetch_add(1, Ordering::SeqCst);
        }));
        let taken: Vec<_> = (0..4)
            .map(|_| pool.get(Allocation::PoolOnly).unwrap())
            .collect();
        pool.arm_at(3);
        let mut taken = taken.into_iter();
        drop(taken.next());
        drop(taken.next());
        assert_eq!(hits.load(Ordering::SeqCst), 0, "two free: below the mark");
        drop(taken.next());
        assert_eq!(hits.load(Ordering::SeqCst), 1, "three free: notified");
        drop(taken.next());
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn threads_share_a_pool() {
        let pool = Pool::new(8, 8);
        let rounds = if cfg!(miri) { 100 } else { 10_000 };
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..rounds {
                        let m = pool.get(Allocation::Always).unwrap();
                        drop(m);
                    }
                });
            }
        });
        assert_eq!(pool.outstanding(), 0);
        assert!(pool.len() <= 8);
    }
}
