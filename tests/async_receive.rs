//! SPEC §6: `receive_async` and `messages()` on several executors (a
//! minimal one of our own, tokio current-thread and multi-thread,
//! `futures-executor`), cancel safety under load, shutdown, and mixing with
//! `wait_receive`. Every test runs under a time limit: a hang is a failure.

mod util;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_core::Stream;
use tofu::{ChannelGroup, Engine, Error, Message, OpCode, Status};
use util::*;

// ----- helpers -----------------------------------------------------------------

/// A waker that unparks the thread that made it.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// The smallest executor: polls `f` on this thread, parks between polls.
fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// `StreamExt::next` without the dependency.
fn next<S: Stream + Unpin>(s: &mut S) -> impl Future<Output = Option<S::Item>> + '_ {
    std::future::poll_fn(move |cx| std::pin::Pin::new(&mut *s).poll_next(cx))
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

/// The test's time limit, for the whole test.
fn limit() -> Duration {
    timeout() * 3
}

/// The engine's report that its pool ran dry (it reads on when messages
/// come back): not one of the test's messages.
fn is_pool_empty(m: &Message) -> bool {
    m.is_from_engine() && m.status() == Status::PoolEmpty
}

/// Receives the next message asynchronously, or panics on an error.
async fn recv_async(group: &ChannelGroup) -> Message {
    match group.receive_async().await {
        Ok(m) => m,
        Err(e) => panic!("receive_async failed: {e}"),
    }
}

/// A connected pair across two engines: (server engine, server group,
/// server channel, client engine, client group, client channel).
struct Pair {
    server_engine: Engine,
    server: ChannelGroup,
    sch: u16,
    client_engine: Engine,
    client: ChannelGroup,
    cch: u16,
}

fn pair() -> Pair {
    let server_engine = engine();
    let client_engine = engine();
    let server = server_engine.create_group().unwrap();
    let client = client_engine.create_group().unwrap();
    let (saddr, caddr) = addresses(Transport::Tcp);
    listen(&server_engine, &server, &saddr);
    let (cch, sch) = connect_pair(&client_engine, &client, &server, &caddr);
    Pair {
        server_engine,
        server,
        sch,
        client_engine,
        client,
        cch,
    }
}

/// Echoes `rounds` requests on the server side, asynchronously.
async fn echo_server(server: &ChannelGroup, rounds: usize) {
    for _ in 0..rounds {
        let mut m = recv_async(server).await;
        assert_eq!(m.opcode(), OpCode::Request, "{m:?}");
        m.header.proto.opcode = OpCode::Response;
        server.post(m).expect("post response");
    }
}

/// Sends `rounds` requests and checks each response, asynchronously.
async fn echo_client(engine: &Engine, client: &ChannelGroup, ch: u16, rounds: usize) {
    for i in 0..rounds {
        let body = seq_body(i as u64, 16);
        client
            .post(msg(engine, ch, OpCode::Request, &body))
            .expect("post request");
        let r = recv_async(client).await;
        assert_eq!(r.opcode(), OpCode::Response, "{r:?}");
        assert_eq!(check_seq_body(&r.body, 16), i as u64);
    }
}

// ----- executors ----------------------------------------------------------------

#[test]
fn own_block_on_round_trips() {
    within(limit(), || {
        let p = pair();
        let server = Arc::new(p.server);
        let echo = {
            let server = server.clone();
            std::thread::spawn(move || block_on(echo_server(&server, 200)))
        };
        block_on(echo_client(&p.client_engine, &p.client, p.cch, 200));
        echo.join().unwrap();
        drop(p.server_engine);
    });
}

#[test]
fn tokio_current_thread_round_trips() {
    within(limit(), || {
        let p = pair();
        // Both ends as tasks of one single-threaded runtime: the engine's
        // wake-ups are all that moves them.
        current_thread().block_on(async {
            let server = echo_server(&p.server, 200);
            let client = echo_client(&p.client_engine, &p.client, p.cch, 200);
            tokio::join!(server, client);
        });
    });
}

#[test]
fn tokio_multi_thread_round_trips() {
    within(limit(), || {
        let p = pair();
        let server = Arc::new(p.server);
        let client = Arc::new(p.client);
        let rt = multi_thread();
        rt.block_on(async {
            let s = {
                let server = server.clone();
                tokio::spawn(async move { echo_server(&server, 200).await })
            };
            let c = {
                let (engine, client) = (p.client_engine.clone(), client.clone());
                tokio::spawn(async move { echo_client(&engine, &client, p.cch, 200).await })
            };
            s.await.unwrap();
            c.await.unwrap();
        });
    });
}

#[test]
fn futures_executor_round_trips() {
    within(limit(), || {
        let p = pair();
        let server = Arc::new(p.server);
        // Its `block_on` on one thread, a `LocalPool` on this one.
        let echo = {
            let server = server.clone();
            std::thread::spawn(move || futures_executor::block_on(echo_server(&server, 200)))
        };
        let mut pool = futures_executor::LocalPool::new();
        pool.run_until(echo_client(&p.client_engine, &p.client, p.cch, 200));
        echo.join().unwrap();
    });
}

// ----- select!, cancellation ------------------------------------------------------

#[test]
fn select_against_a_timer_both_ways() {
    within(limit(), || {
        let c = connected(Transport::Tcp);
        current_thread().block_on(async {
            // Nothing comes: the timer wins, the receive is dropped.
            tokio::select! {
                m = c.server.receive_async() => panic!("nothing was sent: {m:?}"),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            // Something comes: the receive wins.
            c.client
                .post(msg(&c.engine, c.cch, OpCode::Signal, b"first"))
                .unwrap();
            tokio::select! {
                m = c.server.receive_async() => assert_eq!(m.unwrap().body, b"first"),
                () = tokio::time::sleep(timeout()) => panic!("timed out"),
            }
            // A message that arrives after the timer won is not lost: the
            // next receive (sync or async) has it.
            tokio::select! {
                m = c.server.receive_async() => panic!("nothing was sent: {m:?}"),
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
            c.client
                .post(msg(&c.engine, c.cch, OpCode::Signal, b"second"))
                .unwrap();
            assert_eq!(recv_async(&c.server).await.body, b"second");
        });
    });
}

#[test]
fn cancellation_under_load_loses_nothing() {
    const N: u64 = 10_000;
    const LEN: usize = 64;
    within(limit() * 2, || {
        let p = pair();
        let sender = {
            let (engine, client) = (p.client_engine.clone(), p.client);
            std::thread::spawn(move || {
                for i in 0..N {
                    let m = msg(&engine, p.cch, OpCode::Signal, &seq_body(i, LEN));
                    client.post_timeout(m, timeout()).expect("post");
                }
                client // keep the channel open until the receiver is done
            })
        };
        let (received, cancelled) = current_thread().block_on(async {
            let mut next = 0;
            let mut cancelled = 0u64;
            while next < N {
                // The receive loses when nothing is ready soon enough: to a
                // timer (tokio's shortest is about a millisecond), or, more
                // often, to a yield (the receive gets one more poll, then is
                // dropped, perhaps woken and not polled again).
                let timer = next % 4 == 0;
                tokio::select! {
                    biased;
                    m = p.server.receive_async() => {
                        let m = m.expect("receive_async");
                        if is_pool_empty(&m) {
                            continue;
                        }
                        assert_eq!(check_seq_body(&m.body, LEN), next, "out of order or lost");
                        next += 1;
                    }
                    () = tokio::time::sleep(Duration::from_micros(10)), if timer => cancelled += 1,
                    () = tokio::task::yield_now(), if !timer => cancelled += 1,
                }
            }
            (next, cancelled)
        });
        assert_eq!(received, N);
        let _client = sender.join().unwrap();
        // Nothing more is queued: every message came exactly once.
        recv_nothing(&p.server, Duration::from_millis(20));
        eprintln!("{N} messages received, {cancelled} receives cancelled");
        drop(p.server_engine);
    });
}

#[test]
fn dropping_a_registered_future_keeps_the_message() {
    within(limit(), || {
        let c = connected(Transport::Tcp);
        {
            // Polled once (registers its waker), then dropped.
            let mut f = pin!(c.server.receive_async());
            let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
            assert!(
                f.as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending()
            );
            c.client
                .post(msg(&c.engine, c.cch, OpCode::Signal, b"kept"))
                .unwrap();
            // Woken by the delivery, but never polled again.
            std::thread::park_timeout(timeout());
        }
        assert_eq!(recv(&c.server).body, b"kept");
    });
}

// ----- shutdown, update_receiver, mixing ----------------------------------------------

#[test]
fn shutdown_wakes_pending_async_receivers() {
    within(limit(), || {
        let engine = engine();
        let group = Arc::new(engine.create_group().unwrap());
        // Two async receivers and one blocked thread: the sentinel is passed
        // on from waiter to waiter, so all three wake.
        let blocked = {
            let group = group.clone();
            std::thread::spawn(move || group.wait_receive(None))
        };
        let rt = multi_thread();
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let group = group.clone();
                rt.spawn(async move { group.receive_async().await })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50)); // let them all wait
        engine.shutdown();
        rt.block_on(async {
            for t in tasks {
                assert_eq!(t.await.unwrap().unwrap_err(), Error::ShutdownStarted);
            }
        });
        assert_eq!(blocked.join().unwrap().unwrap_err(), Error::ShutdownStarted);
        // After shutdown a new future completes at once with the error.
        assert_eq!(
            block_on(group.receive_async()).unwrap_err(),
            Error::ShutdownStarted
        );
    });
}

#[test]
fn update_receiver_wakes_an_async_receiver() {
    within(limit(), || {
        let engine = engine();
        let group = Arc::new(engine.create_group().unwrap());
        let waker = {
            let group = group.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                group.update_receiver(None).unwrap();
            })
        };
        let m = block_on(group.receive_async()).unwrap();
        assert!(m.is_from_engine());
        assert_eq!(m.status(), Status::ReceiverUpdate);
        waker.join().unwrap();
    });
}

#[test]
fn mixed_with_wait_receive_each_message_once() {
    const N: u64 = 2_000;
    within(limit() * 2, || {
        let p = pair();
        let server = Arc::new(p.server);
        // A thread in wait_receive and three async tasks on one group; each
        // stops at the first "stop" message (four are sent, after the rest).
        let sync = {
            let server = server.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let m = recv_skip_pool_empty(&server);
                    if m.body == b"stop" {
                        return got;
                    }
                    got.push(check_seq_body(&m.body, 16));
                }
            })
        };
        let rt = multi_thread();
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let server = server.clone();
                rt.spawn(async move {
                    let mut got = Vec::new();
                    loop {
                        let m = recv_async(&server).await;
                        if is_pool_empty(&m) {
                            continue;
                        }
                        if m.body == b"stop" {
                            return got;
                        }
                        got.push(check_seq_body(&m.body, 16));
                    }
                })
            })
            .collect();
        for i in 0..N {
            let m = msg(&p.client_engine, p.cch, OpCode::Signal, &seq_body(i, 16));
            p.client.post_timeout(m, timeout()).expect("post");
        }
        for _ in 0..4 {
            let m = msg(&p.client_engine, p.cch, OpCode::Signal, b"stop");
            p.client.post_timeout(m, timeout()).expect("post");
        }
        let mut all = sync.join().unwrap();
        let mut per_receiver = vec![all.len()];
        rt.block_on(async {
            for t in tasks {
                let got = t.await.unwrap();
                // Each receiver sees its share in order.
                assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order");
                per_receiver.push(got.len());
                all.extend(got);
            }
        });
        all.sort_unstable();
        assert_eq!(all, (0..N).collect::<Vec<_>>(), "lost or duplicated");
        eprintln!("shares (sync, async ×3): {per_receiver:?}");
        drop((p.server_engine, p.sch));
    });
}

#[test]
fn messages_stream_yields_then_ends_after_shutdown() {
    within(limit(), || {
        let c = connected(Transport::Tcp);
        for i in 0..10u64 {
            c.client
                .post(msg(&c.engine, c.cch, OpCode::Signal, &seq_body(i, 16)))
                .unwrap();
        }
        futures_executor::block_on(async {
            let mut messages = pin!(c.server.messages());
            for i in 0..10u64 {
                let m = next(&mut messages).await.expect("an item").unwrap();
                assert_eq!(check_seq_body(&m.body, 16), i);
            }
            c.engine.shutdown();
            let end = next(&mut messages).await.expect("the error, once");
            assert_eq!(end.unwrap_err(), Error::ShutdownStarted);
            assert!(next(&mut messages).await.is_none());
            assert!(next(&mut messages).await.is_none());
        });
    });
}

#[test]
fn pending_async_receiver_on_an_idle_engine_wakes_nothing() {
    within(limit(), || {
        let c = connected(Transport::Tcp);
        round_trip(&c.engine, &c.client, &c.server, c.cch, c.sch, b"x");
        let rt = current_thread();
        let server = Arc::new(c.server);
        rt.block_on(async {
            let pending = {
                let server = server.clone();
                tokio::spawn(async move { server.receive_async().await })
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            let polls = c.engine.stats().polls;
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(c.engine.stats().polls, polls, "the idle engine woke up");
            // And the pending receiver still gets what comes.
            c.client
                .post(msg(&c.engine, c.cch, OpCode::Signal, b"late"))
                .unwrap();
            assert_eq!(pending.await.unwrap().unwrap().body, b"late");
        });
    });
}

#[test]
fn futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let engine = engine();
    let group = engine.create_group().unwrap();
    assert_send(&group.receive_async());
    assert_send(&group.messages());
}

/// A waker that posts a batch on the engine whose reactor wakes it.
struct PostingWaker {
    engine: Engine,
    client: Arc<ChannelGroup>,
    cch: u16,
    posted: std::sync::atomic::AtomicBool,
}

impl Wake for PostingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.posted.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut batch = vec![msg(
            &self.engine,
            self.cch,
            OpCode::Signal,
            b"from the waker",
        )];
        self.client
            .post_batch(&mut batch)
            .expect("post_batch from a waker");
    }
}

/// A waker that runs user code at once — here a `post_batch` on the same
/// engine — is called by the thread that holds the engine's reactor (it
/// delivers the message): the post must not wait for that lock (a
/// deadlock). The batch goes out, and the peer gets it.
#[test]
fn a_waker_that_posts_a_batch_does_not_deadlock() {
    within(limit(), || {
        let p = pair();
        let client = Arc::new(p.client);
        let waker = Arc::new(PostingWaker {
            engine: p.client_engine.clone(),
            client: client.clone(),
            cch: p.cch,
            posted: std::sync::atomic::AtomicBool::new(false),
        });
        let w = Waker::from(waker.clone());
        let mut cx = Context::from_waker(&w);
        {
            let mut f = pin!(client.receive_async());
            assert!(f.as_mut().poll(&mut cx).is_pending());
            // The server's Signal is delivered to the client group by the
            // client engine's poller, which wakes our waker under its lock.
            p.server
                .post(msg(&p.server_engine, p.sch, OpCode::Signal, b"ping"))
                .expect("post");
            // Not polled again until our waker ran (a poll would register
            // another waker).
            while !waker.posted.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            match f.as_mut().poll(&mut cx) {
                Poll::Ready(got) => assert_eq!(got.expect("receive_async").body, b"ping"),
                Poll::Pending => panic!("woken, but nothing to take"),
            }
        }
        let m = recv(&p.server);
        assert_eq!(m.body, b"from the waker");
    });
}
