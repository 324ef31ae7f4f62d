//! Message pool micro-benchmarks: get/put pairs per second.
//!
//! * `pool/get_drop/1_thread` — `Pool::get(Allocation::PoolOnly)` and dropping the
//!   message back into the pool.
//! * `pool/get_drop/2_threads` — two threads doing that concurrently on one pool;
//!   the time reported is per pair across both threads (wall time / all pairs),
//!   so the element rate is the pool's aggregate rate.
//! * `pool/new_drop` — baseline: `Message::new()` and drop, which allocates nothing
//!   until a buffer is written.
//! * `pool/get_fill_1KiB_drop` vs `pool/new_fill_1KiB_drop` — the same with 1 KiB
//!   written into the body, where the pool's retained capacity saves an allocation
//!   and a free per message.

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tofu::{Allocation, Message, Pool};

const PAYLOAD: [u8; 1024] = [0x5a; 1024];

fn single_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool");
    group.throughput(Throughput::Elements(1));
    let pool = Pool::new(16, 64);

    group.bench_function("get_drop/1_thread", |b| {
        b.iter(|| drop(black_box(pool.get(Allocation::PoolOnly).unwrap())));
    });
    group.bench_function("new_drop", |b| {
        b.iter(|| drop(black_box(Message::new())));
    });
    group.bench_function("get_fill_1KiB_drop", |b| {
        b.iter(|| {
            let mut msg = pool.get(Allocation::PoolOnly).unwrap();
            msg.body.extend_from_slice(black_box(&PAYLOAD));
            drop(black_box(msg));
        });
    });
    group.bench_function("new_fill_1KiB_drop", |b| {
        b.iter(|| {
            let mut msg = Message::new();
            msg.body.extend_from_slice(black_box(&PAYLOAD));
            drop(black_box(msg));
        });
    });
    group.finish();
}

fn two_threads(c: &mut Criterion) {
    const THREADS: u32 = 2;
    let mut group = c.benchmark_group("pool");
    group.throughput(Throughput::Elements(1));
    let pool = Pool::new(16, 64);

    group.bench_function("get_drop/2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Barrier::new(THREADS as usize + 1);
            std::thread::scope(|s| {
                let workers: Vec<_> = (0..THREADS)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            for _ in 0..iters {
                                drop(black_box(pool.get(Allocation::PoolOnly).unwrap()));
                            }
                        })
                    })
                    .collect();
                start.wait();
                let t0 = Instant::now();
                for w in workers {
                    w.join().unwrap();
                }
                // Criterion divides by `iters`; THREADS * iters pairs were done.
                t0.elapsed() / THREADS
            })
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = single_thread, two_threads
}
criterion_main!(benches);
