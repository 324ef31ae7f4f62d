//! A user's tracing subscriber that panics on the I/O thread — when it
//! enters the engine's span, and again when the dying thread logs its
//! death — takes the engine down as a dead I/O thread does (SPEC §5.7b):
//! waiters wake with `ShutdownStarted`, dropping a group returns. The
//! subscriber is process-wide, so this file holds one test.

#[macro_use]
mod util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tofu::{Engine, Error, Options};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use util::*;

/// Panics on the engine's I/O thread: the first time it enters a span, and
/// on every ERROR event there.
struct Hostile {
    entered: AtomicBool,
}

fn on_io_thread() -> bool {
    std::thread::current().name() == Some("tofu-io")
}

impl Subscriber for Hostile {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        if on_io_thread() && *event.metadata().level() == Level::ERROR {
            panic!("the subscriber panics on the dying I/O thread's log line");
        }
    }
    fn enter(&self, _: &Id) {
        if on_io_thread() && !self.entered.swap(true, Ordering::SeqCst) {
            panic!("the subscriber panics when the I/O thread enters its span");
        }
    }
    fn exit(&self, _: &Id) {}
}

#[test]
fn a_panicking_subscriber_on_the_io_thread_leaves_nobody_waiting() {
    tracing::subscriber::set_global_default(Hostile {
        entered: AtomicBool::new(false),
    })
    .expect("the only subscriber of this process");
    let engine = Engine::new(Options::default()).expect("engine");
    let group = engine.create_group().expect("group");
    let deadline = Instant::now() + timeout();
    while !engine.is_shut_down() {
        if Instant::now() >= deadline {
            // Dropping them could hang as well: fail now instead.
            std::mem::forget(group);
            std::mem::forget(engine);
            panic!("the I/O thread's death went unnoticed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        group.wait_receive(Some(timeout())).unwrap_err(),
        Error::ShutdownStarted
    );
    // Before the fix the dying thread panicked again before it marked
    // itself gone, and dropping a group waited for it forever.
    within(timeout(), move || drop(group));
    within(timeout(), move || drop(engine));
}
