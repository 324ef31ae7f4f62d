//! tracing spans: every event from an engine's loop runs inside
//! `tofu_engine{id}`, and per-channel work (reads, writes, closes) inside
//! `channel{number}`, so a subscriber sees which channel an event belongs to.
//! A small recording subscriber, installed globally (the I/O thread is a
//! thread of its own), is all this test binary uses.

mod util;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use util::*;

/// One event as the subscriber saw it: its fields (`message` included) and
/// the spans entered on its thread at that moment, outermost first, each as
/// `name{field=value,..}`.
#[derive(Clone, Debug)]
struct Seen {
    fields: HashMap<String, String>,
    spans: Vec<String>,
}

#[derive(Default)]
struct Recorder {
    next: AtomicU64,
    spans: Mutex<HashMap<u64, String>>,
    events: Mutex<Vec<Seen>>,
}

thread_local! {
    static STACK: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .push((field.name().to_string(), format!("{value:?}")));
    }
}

impl Subscriber for &'static Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut f = Fields::default();
        attrs.record(&mut f);
        let mut name = format!("{}{{", attrs.metadata().name());
        for (i, (k, v)) in f.0.iter().enumerate() {
            let _ = write!(name, "{}{k}={v}", if i > 0 { "," } else { "" });
        }
        name.push('}');
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, name);
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let spans = STACK.with(|s| {
            let names = self.spans.lock().unwrap_or_else(|e| e.into_inner());
            s.borrow().iter().map(|id| names[id].clone()).collect()
        });
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Seen {
                fields: f.0.into_iter().collect(),
                spans,
            });
    }
    fn enter(&self, id: &Id) {
        STACK.with(|s| s.borrow_mut().push(id.into_u64()));
    }
    fn exit(&self, id: &Id) {
        STACK.with(|s| {
            let mut s = s.borrow_mut();
            if let Some(at) = s.iter().rposition(|x| *x == id.into_u64()) {
                s.remove(at);
            }
        });
    }
}

fn recorder() -> &'static Recorder {
    static R: OnceLock<&'static Recorder> = OnceLock::new();
    R.get_or_init(|| {
        let r: &'static Recorder = Box::leak(Box::default());
        tracing::subscriber::set_global_default(r).expect("the only subscriber");
        r
    })
}

fn events_with(message: &str) -> Vec<Seen> {
    recorder()
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.fields.get("message").is_some_and(|m| m == message))
        .cloned()
        .collect()
}

#[test]
fn channel_events_carry_the_channel_and_engine_spans() {
    let recorder = recorder();
    let t = any_transport();
    let c = connected(t);
    // A request and its answer (reads and writes on both channels), then
    // an abort: the client's channel closes at once, the server's when it
    // reads the reset (a read, then a close).
    round_trip(&c.engine, &c.client, &c.server, c.cch, c.sch, b"ping");
    abort(&c.engine, &c.client, c.cch);
    let report = recv_skip_pool_empty(&c.server);
    assert_report(&report, c.sch, tofu::Status::ChannelClosed);
    // The events were logged before the reports were delivered.
    let closes = events_with("channel closed");
    for ch in [c.cch, c.sch] {
        let seen = closes
            .iter()
            .find(|e| e.fields.get("channel") == Some(&ch.to_string()))
            .unwrap_or_else(|| panic!("no 'channel closed' event for {ch}: {closes:?}"));
        let want = format!("channel{{number={ch}}}");
        assert!(
            seen.spans.contains(&want),
            "{want} not among {:?}",
            seen.spans
        );
        assert!(
            seen.spans.iter().any(|s| s.starts_with("tofu_engine{id=")),
            "no engine span: {:?}",
            seen.spans
        );
    }
    // Every event the engine logs about a channel runs in that channel's
    // span, or, for an accept, in its listener's. (A copy: a failed assert
    // must not hold the lock the engine's threads log through.)
    let all = recorder
        .events
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut in_span = 0;
    for e in &all {
        let Some(span) = e.spans.iter().rev().find(|s| s.starts_with("channel{")) else {
            continue;
        };
        let Some(ch) = e.fields.get("channel") else {
            continue;
        };
        let owner = e.fields.get("listener").unwrap_or(ch);
        assert_eq!(span, &format!("channel{{number={owner}}}"), "{e:?}");
        in_span += 1;
    }
    assert!(in_span >= 2, "{all:?}");
    println!(
        "{} events recorded, {in_span} in a channel span ({t:?})",
        all.len()
    );
}
