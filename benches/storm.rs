//! Storm at expiry: N callers find the token expired at once. How many
//! refreshes reach the token source, and how long until every caller has a
//! token? Ours (single flight) against the seed's design (a mutex held over
//! the refresh) and against no coordination at all.
//!
//! The token source answers after a fixed latency (5 ms, tokio's clock), so
//! the time of one refresh is known. Before the timings, one round of each
//! variant prints how many refreshes it made.

use std::{
    hint::black_box,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tokio::{runtime::Runtime, sync::Mutex};
use tower_token_refresh::{TokenManager, TokenSet, source};

const LATENCY: Duration = Duration::from_millis(5);
const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// Counts refreshes; answers after `LATENCY`.
#[derive(Clone, Default)]
struct Endpoint {
    calls: Arc<AtomicU64>,
}

impl Endpoint {
    async fn refresh(&self) -> String {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(LATENCY).await;
        format!("token-{n}")
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// Ours: a manager with no token yet, so every caller needs a refresh.
async fn ours(n: usize, endpoint: &Endpoint) {
    let e = endpoint.clone();
    let tokens =
        TokenManager::builder(source::from_fn(move |_| {
            let e = e.clone();
            async move {
                Ok(TokenSet::bearer(e.refresh().await).with_expires_in(Duration::from_secs(3600)))
            }
        }))
        .build();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let tokens = tokens.clone();
            tokio::spawn(async move { tokens.authorization().await.map(|a| a.generation()) })
        })
        .collect();
    for t in tasks {
        let _ = black_box(t.await);
    }
}

/// The literal port: a mutex held across the refresh; each caller, in turn,
/// finds the token fresh once the first has refreshed.
async fn mutex_held_over_refresh(n: usize, endpoint: &Endpoint) {
    let token: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (token, endpoint) = (token.clone(), endpoint.clone());
            tokio::spawn(async move {
                let mut guard = token.lock().await;
                if guard.is_none() {
                    *guard = Some(endpoint.refresh().await);
                }
                format!("Bearer {}", guard.as_deref().unwrap_or_default())
            })
        })
        .collect();
    for t in tasks {
        let _ = black_box(t.await);
    }
}

/// No coordination: every caller that finds the token expired refreshes.
async fn no_single_flight(n: usize, endpoint: &Endpoint) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let endpoint = endpoint.clone();
            tokio::spawn(async move { format!("Bearer {}", endpoint.refresh().await) })
        })
        .collect();
    for t in tasks {
        let _ = black_box(t.await);
    }
}

fn runtime() -> Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("a tokio runtime for the benchmark: {e}"),
    }
}

fn storm(c: &mut Criterion) {
    let rt = runtime();
    for n in SIZES {
        let (a, b, d) = (
            Endpoint::default(),
            Endpoint::default(),
            Endpoint::default(),
        );
        rt.block_on(async {
            ours(n, &a).await;
            mutex_held_over_refresh(n, &b).await;
            no_single_flight(n, &d).await;
        });
        println!(
            "refreshes for {n:>6} callers: ours {}, mutex held over refresh {}, no single flight {}",
            a.calls(),
            b.calls(),
            d.calls()
        );
    }
    let mut g = c.benchmark_group("storm");
    g.sample_size(20);
    for n in SIZES {
        g.bench_with_input(BenchmarkId::new("ours", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    rt.block_on(ours(n, &Endpoint::default()));
                }
                started.elapsed()
            })
        });
        g.bench_with_input(
            BenchmarkId::new("mutex_held_over_refresh", n),
            &n,
            |b, &n| {
                b.iter_custom(|iters| {
                    let started = Instant::now();
                    for _ in 0..iters {
                        rt.block_on(mutex_held_over_refresh(n, &Endpoint::default()));
                    }
                    started.elapsed()
                })
            },
        );
        g.bench_with_input(BenchmarkId::new("no_single_flight", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    rt.block_on(no_single_flight(n, &Endpoint::default()));
                }
                started.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, storm);
criterion_main!(benches);
