//! [`ChannelGroup::receive_async`] and [`ChannelGroup::messages`]: receiving
//! on any executor (SPEC §6).
//!
//! The future never polls the engine: the thread that polls (the I/O thread,
//! or a thread leading in `wait_receive`) pushes the delivery into the
//! group's queue, which wakes every registered waker (`GroupQueue::poll_pop`).
//! A delivery leaves the queue only inside `poll` returning `Ready`, so a
//! future dropped at any other point loses nothing. While any async receiver
//! is pending, the I/O thread keeps the poller (`Lead::add_async_waiter`):
//! an async receiver never waits for a lease.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_core::stream::FusedStream;

use super::ChannelGroup;
use crate::engine::Delivery;
use crate::error::Error;
use crate::message::Message;

impl ChannelGroup {
    /// Waits for the next message (or engine report) for this group, as a
    /// future: the async form of [`wait_receive`](Self::wait_receive), on any
    /// executor (the library depends on no runtime).
    ///
    /// The engine wakes the future when a delivery arrives (the thread that
    /// polls the sockets wakes the task's [`Waker`](std::task::Waker)); the
    /// future never runs the event loop itself. It mixes with `wait_receive`
    /// and other `receive_async` futures on the same group: each message goes
    /// to exactly one receiver.
    ///
    /// **Cancel-safe**: a message is taken from the group's queue only when
    /// the future completes, so dropping it before then (a lost
    /// `select!` branch, a timeout) loses nothing: the message waits for the
    /// next receive.
    ///
    /// # Errors
    ///
    /// [`Error::ShutdownStarted`] once the engine shuts down, including for a
    /// future pending at that moment.
    ///
    /// # Examples
    ///
    /// With a tiny executor of its own (any executor works: tokio, smol,
    /// `futures::executor`):
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::task::{Context, Poll, Wake};
    /// use tofu::{Engine, Options, Status};
    ///
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     struct Unpark(std::thread::Thread);
    /// #     impl Wake for Unpark {
    /// #         fn wake(self: Arc<Self>) { self.0.unpark() }
    /// #     }
    /// #     let waker = Arc::new(Unpark(std::thread::current())).into();
    /// #     let mut cx = Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         match f.as_mut().poll(&mut cx) {
    /// #             Poll::Ready(out) => return out,
    /// #             Poll::Pending => std::thread::park(),
    /// #         }
    /// #     }
    /// # }
    /// let engine = Engine::new(Options::default())?;
    /// let group = engine.create_group()?;
    /// group.update_receiver(None)?;
    /// let msg = block_on(group.receive_async())?;
    /// assert_eq!(msg.status(), Status::ReceiverUpdate);
    /// # Ok::<(), tofu::Error>(())
    /// ```
    pub fn receive_async(&self) -> impl Future<Output = Result<Message, Error>> + Send + '_ {
        Receive {
            group: self,
            waiter: None,
        }
    }

    /// The group's messages as a [`Stream`]: each item
    /// is what [`receive_async`](Self::receive_async) would return, and it is
    /// as cancel-safe (a message is taken only when the stream yields it).
    ///
    /// The stream ends once the engine shuts down: it yields
    /// `Err(`[`Error::ShutdownStarted`]`)` once, then `None` (it is a
    /// [`FusedStream`]).
    ///
    /// # Examples
    ///
    /// With tokio (a `StreamExt` such as `futures::StreamExt` or
    /// `tokio_stream::StreamExt` gives `next()`; here, a small one):
    ///
    /// ```
    /// use std::pin::{Pin, pin};
    /// use futures_core::Stream;
    /// use tofu::{Engine, Error, Options, Status};
    ///
    /// async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    ///     std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
    /// }
    ///
    /// let engine = Engine::new(Options::default())?;
    /// let group = engine.create_group()?;
    /// let rt = tokio::runtime::Builder::new_current_thread().build()?;
    /// rt.block_on(async {
    ///     let mut messages = pin!(group.messages());
    ///     group.update_receiver(None)?;
    ///     let msg = next(&mut messages).await.expect("a message")?;
    ///     assert_eq!(msg.status(), Status::ReceiverUpdate);
    ///     engine.shutdown();
    ///     let end = next(&mut messages).await.expect("the error, once");
    ///     assert_eq!(end.unwrap_err(), Error::ShutdownStarted);
    ///     assert!(next(&mut messages).await.is_none());
    ///     Ok::<(), Error>(())
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    // `Stream` spelled out as SPEC §6 has it; `FusedStream` on top.
    #[allow(clippy::implied_bounds_in_impls)]
    pub fn messages(&self) -> impl Stream<Item = Result<Message, Error>> + FusedStream + Send + '_ {
        Messages {
            receive: Receive {
                group: self,
                waiter: None,
            },
            done: false,
        }
    }
}

/// The future [`ChannelGroup::receive_async`] returns.
struct Receive<'a> {
    group: &'a ChannelGroup,
    /// Its entry among the group queue's wakers, while it has one.
    waiter: Option<u64>,
}

impl Receive<'_> {
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message, Error>> {
        let group = self.group;
        let engine = group.engine.shared();
        if engine.is_shut_down() {
            self.deregister();
            group.wake_other_waiters();
            return Poll::Ready(Err(Error::ShutdownStarted));
        }
        let registered = self.waiter.is_some();
        let polled = group.shared.queue.poll_pop(&mut self.waiter, cx.waker());
        match (registered, self.waiter.is_some()) {
            (false, true) => engine.lead.add_async_waiter(),
            (true, false) => engine.lead.remove_async_waiter(),
            _ => {}
        }
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Delivery::Message(msg)) => Poll::Ready(Ok(msg)),
            // The shutdown mark (it stays: every later receive gets it).
            Poll::Ready(Delivery::Shutdown) => Poll::Ready(Err(Error::ShutdownStarted)),
        }
    }

    fn deregister(&mut self) {
        if let Some(id) = self.waiter.take() {
            self.group.shared.queue.deregister(id);
            self.group.engine.shared().lead.remove_async_waiter();
        }
    }
}

impl Future for Receive<'_> {
    type Output = Result<Message, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().poll_receive(cx)
    }
}

impl Drop for Receive<'_> {
    fn drop(&mut self) {
        self.deregister();
    }
}

/// The stream [`ChannelGroup::messages`] returns.
struct Messages<'a> {
    receive: Receive<'a>,
    /// `ShutdownStarted` was yielded: the stream has ended.
    done: bool,
}

impl Stream for Messages<'_> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let got = std::task::ready!(this.receive.poll_receive(cx));
        this.done = got.is_err();
        Poll::Ready(Some(got))
    }
}

impl FusedStream for Messages<'_> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Poll, Wake, Waker};

    use futures_core::Stream;
    use futures_core::stream::FusedStream;

    use crate::engine::{Delivery, Engine, GroupShared, Options, Wake as IoWake};
    use crate::error::Error;
    use crate::message::Message;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (count.clone(), Waker::from(count))
    }

    fn io_wake() -> (mio::Poll, IoWake) {
        let poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).unwrap();
        (poll, IoWake::new(waker))
    }

    #[test]
    fn one_entry_per_waiter_woken_by_every_push_removed_when_ready() {
        let (_poll, wake) = io_wake();
        let group = GroupShared::new(1);
        let q = &group.queue;
        let (a_count, a) = counting();
        let (b_count, b) = counting();
        let (mut wa, mut wb) = (None, None);
        assert!(q.poll_pop(&mut wa, &a).is_pending());
        assert!(q.poll_pop(&mut wa, &a).is_pending()); // same entry
        assert!(q.poll_pop(&mut wb, &b).is_pending());
        assert_eq!(q.async_waiters(), 2);
        assert_ne!(wa, wb);

        // One delivery wakes both (either may be dropped before it looks).
        let woke_thread = group.push(Delivery::Message(Message::new()), &wake);
        assert!(!woke_thread, "no thread was blocked");
        assert_eq!(a_count.0.load(Ordering::Relaxed), 1);
        assert_eq!(b_count.0.load(Ordering::Relaxed), 1);

        // The first to look takes it and leaves; the other waits on.
        assert!(matches!(q.poll_pop(&mut wb, &b), Poll::Ready(_)));
        assert_eq!(wb, None);
        assert!(q.poll_pop(&mut wa, &a).is_pending());
        assert_eq!(q.async_waiters(), 1);

        // Dropped: its entry goes, and pushes wake nobody.
        q.deregister(wa.take().unwrap());
        assert_eq!(q.async_waiters(), 0);
        group.push(Delivery::Message(Message::new()), &wake);
        assert_eq!(a_count.0.load(Ordering::Relaxed), 1);
        assert!(q.try_pop().is_some());
    }

    #[test]
    fn a_new_waker_replaces_the_old_one() {
        let (_poll, wake) = io_wake();
        let group = GroupShared::new(1);
        let q = &group.queue;
        let (old_count, old) = counting();
        let (new_count, new) = counting();
        let mut w = None;
        assert!(q.poll_pop(&mut w, &old).is_pending());
        // The future moved to another task: polled with another waker.
        assert!(q.poll_pop(&mut w, &new).is_pending());
        assert_eq!(q.async_waiters(), 1);
        group.push(Delivery::Message(Message::new()), &wake);
        assert_eq!(old_count.0.load(Ordering::Relaxed), 0);
        assert_eq!(new_count.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_engine_counts_pending_futures_until_they_end() {
        let engine = Engine::new(Options::default()).unwrap();
        let group = engine.create_group().unwrap();
        let lead = &engine.shared().lead;
        let (_count, waker) = counting();
        let mut cx = std::task::Context::from_waker(&waker);
        {
            let mut a = std::pin::pin!(group.receive_async());
            let mut b = std::pin::pin!(group.receive_async());
            assert!(a.as_mut().poll(&mut cx).is_pending());
            assert!(a.as_mut().poll(&mut cx).is_pending());
            assert!(b.as_mut().poll(&mut cx).is_pending());
            assert_eq!(lead.async_waiter_count(), 2);
            group.update_receiver(None).unwrap();
            assert!(a.as_mut().poll(&mut cx).is_ready());
            assert_eq!(lead.async_waiter_count(), 1);
        } // b dropped pending
        assert_eq!(lead.async_waiter_count(), 0);
        assert_eq!(group.shared.queue.async_waiters(), 0);
        {
            let mut s = std::pin::pin!(group.messages());
            assert!(s.as_mut().poll_next(&mut cx).is_pending());
            assert_eq!(lead.async_waiter_count(), 1);
            engine.shutdown();
            match s.as_mut().poll_next(&mut cx) {
                Poll::Ready(Some(Err(Error::ShutdownStarted))) => {}
                other => panic!("expected ShutdownStarted, got {other:?}"),
            }
            assert!(matches!(s.as_mut().poll_next(&mut cx), Poll::Ready(None)));
            assert!(s.is_terminated());
        }
        assert_eq!(lead.async_waiter_count(), 0);
    }
}
