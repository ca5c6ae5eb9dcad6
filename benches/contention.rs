//! Reading the credential from many threads at once: ours (`lookup`, one
//! atomic load of the current state; and `lookup_cached`, one flag of a
//! per-client cache, as the layer reads it) against the same header value
//! behind a `RwLock` and behind a `Mutex`. Each measured batch has every worker thread read
//! it 100,000 times; the result is the time per batch, so lower is better,
//! and reads per second = threads × 100,000 / time.

use std::{
    hint::black_box,
    sync::{Mutex, RwLock},
    thread,
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::HeaderValue;
use tower_token_refresh::{
    TokenManager, TokenSet,
    manager::{Lookup, LookupCache},
    source,
};

const READS: usize = 100_000;

fn threads() -> usize {
    thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2)
}

fn run(threads: usize, read: &(dyn Fn() + Sync)) -> Duration {
    let started = Instant::now();
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..READS {
                    read();
                }
            });
        }
    });
    started.elapsed()
}

fn contention(c: &mut Criterion) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("a tokio runtime for the benchmark: {e}"),
    };
    let handle = runtime.handle().clone();
    let tokens = {
        let _in_runtime = handle.enter();
        TokenManager::builder(source::from_fn(|_| async {
            Ok(TokenSet::bearer("unused"))
        }))
        .initial(
            TokenSet::bearer("a-long-enough-access-token-value")
                .with_expires_in(Duration::from_secs(3600)),
        )
        .build()
    };
    // Built at run time, as a token's header value is (a static one would
    // clone for free and flatter the locks).
    let value =
        match HeaderValue::try_from(format!("Bearer {}", "a-long-enough-access-token-value")) {
            Ok(v) => v,
            Err(e) => panic!("a valid header value: {e}"),
        };
    let rwlock = RwLock::new(value.clone());
    let mutex = Mutex::new(value);

    let ours = || {
        // Worker threads are not runtime threads; the credential's timer was
        // armed on the runtime when it was first read.
        match tokens.lookup() {
            Lookup::Ready(auth) => {
                black_box(auth);
            }
            other => panic!("the token is fresh: {other:?}"),
        }
    };
    // What each `TokenRefresh` service does: a cache per client (here, per
    // thread), read with one flag load while the credential stays fresh.
    thread_local! {
        static CACHE: std::cell::RefCell<LookupCache> = std::cell::RefCell::new(LookupCache::new());
    }
    let ours_cached = || {
        CACHE.with_borrow_mut(|cache| match tokens.lookup_cached(cache) {
            Lookup::Ready(auth) => {
                black_box(auth);
            }
            other => panic!("the token is fresh: {other:?}"),
        })
    };
    {
        let _in_runtime = handle.enter();
        ours();
        ours_cached();
    }
    let with_rwlock = || {
        if let Ok(v) = rwlock.read() {
            black_box(v.clone());
        }
    };
    let with_mutex = || {
        if let Ok(v) = mutex.lock() {
            black_box(v.clone());
        }
    };

    let n = threads();
    // Paired rounds, alternating the variants: the median of per-round
    // time ratios, robust to drift on a busy machine.
    let mut vs_rwlock = Vec::new();
    let mut vs_mutex = Vec::new();
    let mut cached_vs_rwlock = Vec::new();
    let mut cached_vs_mutex = Vec::new();
    for _ in 0..21 {
        let o = run(n, &ours).as_secs_f64();
        let oc = run(n, &ours_cached).as_secs_f64();
        let r = run(n, &with_rwlock).as_secs_f64();
        let m = run(n, &with_mutex).as_secs_f64();
        vs_rwlock.push(r / o);
        vs_mutex.push(m / o);
        cached_vs_rwlock.push(r / oc);
        cached_vs_mutex.push(m / oc);
    }
    for v in [
        &mut vs_rwlock,
        &mut vs_mutex,
        &mut cached_vs_rwlock,
        &mut cached_vs_mutex,
    ] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "contention paired ({n} threads x {READS} reads): ours (lookup) is {:.2}x the read rate of RwLock, {:.2}x that of Mutex (medians of 21 rounds)",
        vs_rwlock[10], vs_mutex[10]
    );
    println!(
        "contention paired ({n} threads x {READS} reads): ours (lookup_cached) is {:.2}x the read rate of RwLock, {:.2}x that of Mutex (medians of 21 rounds)",
        cached_vs_rwlock[10], cached_vs_mutex[10]
    );

    let mut g = c.benchmark_group("contention");
    g.sample_size(20);
    for (name, read) in [
        ("ours", &ours as &(dyn Fn() + Sync)),
        ("ours_cached", &ours_cached),
        ("rwlock", &with_rwlock),
        ("mutex", &with_mutex),
    ] {
        g.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
            b.iter_custom(|iters| (0..iters).map(|_| run(n, read)).sum())
        });
    }
    g.finish();
}

criterion_group!(benches, contention);
criterion_main!(benches);
