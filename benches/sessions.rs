//! Many sessions in one process (`Sessions`, issue P9): what an idle session
//! costs in memory, what a keyed request costs against the single-session
//! hot path, and how 10,000 sessions expiring together drain through the
//! registry's bound on concurrent refreshes.
//!
//! 1. **Memory** (printed; criterion cannot measure it): a counting global
//!    allocator gives the heap bytes still live after building 100,000
//!    sessions, each given a realistic token set with `Sessions::set`, over
//!    a `MemoryStore` per key (a `FileStore` would hold its set on disk, not
//!    in memory), against a token set alone and a lone `TokenManager`.
//! 2. **Keyed lookup** (paired rounds, as `hot_path.rs`): the same layered
//!    client over the same trivial inner service, once with
//!    `TokenRefreshLayer::new(manager)` and once with
//!    `TokenRefreshLayer::sessions(sessions)` over 10,000 sessions, requests
//!    naming users spread over all of them; and the bare lookups.
//! 3. **Expiry wave**: 10,000 sessions whose tokens expire within one second
//!    all need a refresh at once; the source answers after 5 ms (real
//!    time), counting calls and the most in flight.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    convert::Infallible,
    future::{Future, Ready, ready},
    hint::black_box,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use http::{Request, Response, Uri};
use http_body_util::Full;
use tower::Service;
use tower_token_refresh::{
    Error, MemoryStore, NoReplay, SessionKey, Sessions, TokenManager, TokenRefreshLayer, TokenSet,
    TokenStore,
    manager::{Lookup, LookupCache},
    source,
};
use tower_token_refresh_core::BoxFuture;

/// Counts live heap: bytes requested, blocks, and glibc's footprint of them.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_BLOCKS: AtomicI64 = AtomicI64::new(0);
static LIVE_CHUNKS: AtomicI64 = AtomicI64::new(0);

/// What glibc's malloc takes for a block of `size` on 64-bit Linux: an
/// 8-byte header, rounded up to 16, at least 32.
fn chunk(size: usize) -> i64 {
    (((size + 8 + 15) & !15).max(32)) as i64
}

fn counted(layout: Layout, sign: i64) {
    LIVE_BYTES.fetch_add(sign * layout.size() as i64, Ordering::Relaxed);
    LIVE_BLOCKS.fetch_add(sign, Ordering::Relaxed);
    LIVE_CHUNKS.fetch_add(sign * chunk(layout.size()), Ordering::Relaxed);
}

// SAFETY-free: delegates to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        counted(layout, 1);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        counted(layout, -1);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        counted(layout, -1);
        if let Ok(new) = Layout::from_size_align(new_size, layout.align()) {
            counted(new, 1);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy)]
struct Live {
    bytes: i64,
    blocks: i64,
    chunks: i64,
}

fn live() -> Live {
    Live {
        bytes: LIVE_BYTES.load(Ordering::Relaxed),
        blocks: LIVE_BLOCKS.load(Ordering::Relaxed),
        chunks: LIVE_CHUNKS.load(Ordering::Relaxed),
    }
}

fn quick() -> bool {
    std::env::args().any(|a| a == "--test")
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("a tokio runtime for the benchmark: {e}"),
    }
}

/// A login's token set as a provider issues it: an opaque access token of
/// 51 characters, a refresh token of 48, an hour's lifetime, Bearer.
fn login(user: u64) -> TokenSet {
    TokenSet::bearer(format!("ya29.a0AfB_{user:040}"))
        .with_refresh_token(format!("1//0g{user:043}"))
        .with_expires_in(Duration::from_secs(3600))
        .with_token_type("Bearer")
}

/// The refresh grant of every bench here: a new access token for the same
/// refresh token.
fn grant() -> TokenManager {
    TokenManager::builder(source::from_fn(|current: Option<TokenSet>| async move {
        let refresh = current
            .and_then(|t| t.refresh_token().cloned())
            .ok_or_else(|| Error::new(tower_token_refresh::ErrorKind::Rejected, "no login"))?;
        Ok(
            TokenSet::bearer("ya29.a0AfB_refreshed-000000000000000000000000000000")
                .with_refresh_token(refresh)
                .with_expires_in(Duration::from_secs(3600)),
        )
    }))
    .build()
}

fn builder() -> tower_token_refresh::TokenManagerBuilder {
    TokenManager::builder(source::from_fn(|current: Option<TokenSet>| async move {
        current.ok_or_else(|| Error::new(tower_token_refresh::ErrorKind::Rejected, "no login"))
    }))
}

/// Keeps nothing: separates the registry's own cost from the store's copy.
struct NullStore;

impl TokenStore for NullStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<TokenSet>, Error>> {
        Box::pin(async { Ok(None) })
    }

    fn save<'a>(&'a self, _: &'a TokenSet) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
}

fn print_per(what: &str, n: u64, before: Live, after: Live) {
    let per = |a: i64, b: i64| (a - b) as f64 / n as f64;
    println!(
        "memory  {what:<58} {:7.1} B requested, {:5.2} blocks, {:7.1} B with malloc's headers",
        per(after.bytes, before.bytes),
        per(after.blocks, before.blocks),
        per(after.chunks, before.chunks),
    );
}

/// Part 1: heap per idle session.
fn memory(rt: &tokio::runtime::Runtime) {
    let n: u64 = if quick() { 10_000 } else { 100_000 };
    println!("memory per session, {n} sessions (heap still live, divided by {n})");

    // A token set alone, in a vector sized beforehand (its inline part
    // counted from `size_of`).
    let mut sets = Vec::with_capacity(n as usize);
    let before = live();
    for user in 0..n {
        sets.push(login(user));
    }
    let after = live();
    print_per("TokenSet's heap alone", n, before, after);
    println!(
        "memory  {:<58} {:7} B inline",
        "TokenSet (size_of)",
        size_of::<TokenSet>()
    );
    drop(sets);

    rt.block_on(async {
        // A lone manager per user, each with its own MemoryStore.
        let mut managers = Vec::with_capacity(n as usize);
        let before = live();
        for user in 0..n {
            let manager = builder().store(MemoryStore::new()).build();
            let _ = manager.set(login(user)).await;
            managers.push(manager);
        }
        let after = live();
        print_per(
            "a lone TokenManager + MemoryStore, after set",
            n,
            before,
            after,
        );
        drop(managers);

        for (what, memory_store, with_tokens) in [
            (
                "registry session, NullStore, no tokens (session(&key))",
                false,
                false,
            ),
            ("registry session, NullStore, after set", false, true),
            (
                "registry session, MemoryStore, after set  <= P9",
                true,
                true,
            ),
        ] {
            let before = live();
            let sessions = registry(n as usize, memory_store);
            for user in 0..n {
                if with_tokens {
                    let _ = sessions.set(user, login(user)).await;
                } else {
                    drop(sessions.session(&user));
                }
            }
            let after = live();
            assert_eq!(sessions.len(), n as usize, "no session was evicted");
            print_per(what, n, before, after);
        }

        // What a FileStore per key holds in memory (its paths), against the
        // NullStore row above: built, never written (nothing touches the
        // disk until a set or a load).
        let dir = std::env::temp_dir().join("ttr-bench-sessions-never-written");
        let before = live();
        let sessions = match Sessions::builder(builder())
            .max_sessions(n as usize)
            .store(move |user: &u64| {
                tower_token_refresh::FileStore::keyed(&dir, user.to_be_bytes())
            })
            .build()
        {
            Ok(sessions) => sessions,
            Err(e) => panic!("a registry: {e}"),
        };
        for user in 0..n {
            drop(sessions.session(&user));
        }
        let after = live();
        print_per(
            "registry session, FileStore::keyed, no tokens (session(&key))",
            n,
            before,
            after,
        );
    });
}

fn registry(max: usize, memory_store: bool) -> Sessions<u64> {
    let built = Sessions::builder(builder())
        .max_sessions(max)
        .idle_timeout(Duration::from_secs(24 * 3600));
    let built = if memory_store {
        built.store(|_: &u64| MemoryStore::new()).build()
    } else {
        built.store(|_: &u64| NullStore).build()
    };
    match built {
        Ok(sessions) => sessions,
        Err(e) => panic!("a registry: {e}"),
    }
}

type Body = Full<Bytes>;

/// The trivial inner service of `hot_path.rs`: answers 200 at once.
#[derive(Clone, Copy)]
struct Ok200;

impl Service<Request<Body>> for Ok200 {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        black_box(&req);
        ready(Ok(Response::new(())))
    }
}

fn request(uri: &Uri) -> Request<Body> {
    let mut req = Request::new(Full::new(Bytes::from_static(b"{\"q\":1}")));
    *req.uri_mut() = uri.clone();
    req
}

fn keyed(uri: &Uri, user: u64) -> Request<Body> {
    let mut req = request(uri);
    req.extensions_mut().insert(SessionKey(user));
    req
}

/// Sends one request: ready, call, and poll the future once.
fn send<S>(svc: &mut S, req: Request<Body>)
where
    S: Service<Request<Body>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let fut = pin!(svc.call(req));
    match fut.poll(&mut cx) {
        Poll::Ready(Ok(res)) => {
            black_box(res);
        }
        other => panic!(
            "the bench services answer at once: {:?}",
            other.map(|r| r.err())
        ),
    }
}

fn ready_lookup(found: Lookup) {
    match found {
        Lookup::Ready(auth) => {
            black_box(auth);
        }
        _ => panic!("every session here holds a fresh token"),
    }
}

const USERS: u64 = 10_000;

/// Users spread over all the sessions, in an order that walks the shards
/// and the maps rather than memory.
struct Spread(u64);

impl Spread {
    fn next(&mut self) -> u64 {
        self.0 = (self.0 + 7_919) % USERS;
        self.0
    }
}

/// Paired rounds, as `hot_path.rs`: every round times a batch of each
/// variant in turn; a ratio is the median of the per-round ratios.
fn paired(variants: &mut [(&str, &mut dyn FnMut())], ratios: &[(&str, usize, usize)]) {
    let (rounds, batch) = if quick() { (1, 1_000) } else { (31, 100_000) };
    let mut times = vec![Vec::with_capacity(rounds); variants.len()];
    for _ in 0..rounds {
        for (i, (_, f)) in variants.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..batch {
                f();
            }
            times[i].push(start.elapsed().as_secs_f64() / batch as f64);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (i, (name, f)) in variants.iter_mut().enumerate() {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..1_000 {
            f();
        }
        let allocations = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / 1_000.0;
        println!(
            "paired  {name:<34} {:7.1} ns median ({rounds} rounds), {allocations:.2} allocations/request",
            median(times[i].clone()) * 1e9,
        );
    }
    for (what, a, b) in ratios {
        let ratio = median((0..rounds).map(|r| times[*a][r] / times[*b][r]).collect());
        println!("ratio   {what:<58} {ratio:.3} median of per-round ratios");
    }
}

/// Part 2: a keyed request against the single-session hot path.
fn keyed_lookup(c: &mut Criterion) {
    // A current-thread runtime, as `hot_path.rs`.
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        panic!("a tokio runtime for the benchmark");
    };
    let _entered = rt.enter();
    let uri: Uri = "https://api.example.com/v1/data"
        .parse()
        .unwrap_or_default();
    let origin = || {
        "https://api.example.com"
            .parse()
            .unwrap_or_else(|_| unreachable!())
    };

    let manager = grant();
    rt.block_on(async {
        if let Err(e) = manager.set(login(0)).await {
            panic!("set: {e}");
        }
    });
    let sessions = registry(USERS as usize, true);
    rt.block_on(async {
        for user in 0..USERS {
            if let Err(e) = sessions.set(user, login(user)).await {
                panic!("set: {e}");
            }
        }
    });

    // Every session's header cloned once: the first clone of a header's
    // bytes allocates their shared count, once per session.
    for user in 0..USERS {
        ready_lookup(sessions.session(&user).lookup());
    }

    let single = TokenRefreshLayer::new(manager.clone())
        .allow_origin(origin())
        .replay(NoReplay);
    let many = TokenRefreshLayer::sessions(sessions.clone())
        .allow_origin(origin())
        .replay(NoReplay);
    let mut ours_no_copy = tower::Layer::layer(&single, Ok200);
    let mut ours_no_copy_with_key = ours_no_copy.clone();
    let mut sessions_keyed = tower::Layer::layer(&many, Ok200);
    let mut sessions_keyed_one_user = sessions_keyed.clone();
    let mut cache = LookupCache::new();
    let (mut a, mut b, mut d) = (Spread(0), Spread(0), Spread(0));

    paired(
        &mut [
            ("ours_no_copy", &mut || {
                send(&mut ours_no_copy, request(&uri))
            }),
            ("ours_no_copy_with_key", &mut || {
                send(&mut ours_no_copy_with_key, keyed(&uri, a.next()))
            }),
            ("sessions_keyed", &mut || {
                send(&mut sessions_keyed, keyed(&uri, b.next()))
            }),
            ("sessions_keyed_one_user", &mut || {
                send(&mut sessions_keyed_one_user, keyed(&uri, 4_242))
            }),
            ("lookup_cached", &mut || {
                ready_lookup(manager.lookup_cached(&mut cache))
            }),
            ("lookup", &mut || ready_lookup(manager.lookup())),
            ("session_lookup", &mut || {
                ready_lookup(sessions.session(&d.next()).lookup())
            }),
            ("session_lookup_one_user", &mut || {
                ready_lookup(sessions.session(&4_242).lookup())
            }),
            // What a registry lookup adds, in part: two clock reads (the
            // idle stamp, and the phase of an untimed credential).
            ("clock_read", &mut || {
                black_box(tokio::time::Instant::now());
            }),
        ],
        &[
            (
                "sessions_keyed / ours_no_copy            (target <= 1.2)",
                2,
                0,
            ),
            (
                "sessions_keyed / ours_no_copy_with_key (same request)",
                2,
                1,
            ),
            ("ours_no_copy_with_key / ours_no_copy (the extension)", 1, 0),
            ("sessions_keyed_one_user / ours_no_copy_with_key", 3, 1),
            ("session(&key).lookup() / lookup_cached", 6, 4),
            ("session(&key).lookup() / lookup", 6, 5),
            ("session(&key).lookup(), one user / lookup", 7, 5),
        ],
    );

    let mut g = c.benchmark_group("sessions");
    g.bench_function("ours_no_copy", |bench| {
        bench.iter(|| send(&mut ours_no_copy, request(&uri)))
    });
    g.bench_function("sessions_keyed", |bench| {
        bench.iter(|| send(&mut sessions_keyed, keyed(&uri, b.next())))
    });
    g.bench_function("lookup_cached", |bench| {
        bench.iter(|| ready_lookup(manager.lookup_cached(&mut cache)))
    });
    g.bench_function("session_lookup", |bench| {
        bench.iter(|| ready_lookup(sessions.session(&d.next()).lookup()))
    });
    g.finish();
}

/// Counts the source's calls and the most in flight at once.
#[derive(Clone, Default)]
struct Endpoint {
    calls: Arc<AtomicU64>,
    in_flight: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

const LATENCY: Duration = Duration::from_millis(5);
const BOUND: usize = 64;

/// Part 3: 10,000 sessions whose tokens expire within one second, all
/// asked for a token once every one has expired. The time from then until
/// every user holds a new token.
async fn wave(endpoint: &Endpoint) -> (Duration, Sessions<u64>) {
    let e = endpoint.clone();
    let grant = source::from_fn(move |current: Option<TokenSet>| {
        let e = e.clone();
        async move {
            e.calls.fetch_add(1, Ordering::Relaxed);
            let now = e.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            e.most.fetch_max(now, Ordering::Relaxed);
            tokio::time::sleep(LATENCY).await;
            e.in_flight.fetch_sub(1, Ordering::Relaxed);
            let refresh = current
                .and_then(|t| t.refresh_token().cloned())
                .ok_or_else(|| Error::new(tower_token_refresh::ErrorKind::Rejected, "no login"))?;
            // The user's number travels in the refresh token: the new access
            // token names it, so the check below sees whose it is.
            let user = refresh.secret().trim_start_matches("1//0g").to_owned();
            Ok(TokenSet::bearer(format!("fresh-{user}"))
                .with_refresh_token(refresh)
                .with_expires_in(Duration::from_secs(3600)))
        }
    });
    let sessions = match Sessions::builder(
        TokenManager::builder(grant)
            .expiry_leeway(Duration::ZERO)
            .refresh_ahead(Duration::ZERO),
    )
    .store(|_: &u64| MemoryStore::new())
    .max_sessions(USERS as usize)
    .max_concurrent_refreshes(BOUND)
    .build()
    {
        Ok(s) => s,
        Err(e) => panic!("a registry: {e}"),
    };
    // Expiries spread over the coming second, whatever the logins take.
    let from = tokio::time::Instant::now();
    let all_expired = from + Duration::from_millis(1_010);
    for user in 0..USERS {
        let expiry = from + Duration::from_micros(1_000 + user * 999_000 / USERS);
        let tokens = login(user).with_expires_at(Some(expiry));
        if let Err(e) = sessions.set(user, tokens).await {
            panic!("set: {e}");
        }
    }
    tokio::time::sleep_until(all_expired).await;

    let start = Instant::now();
    let tasks: Vec<_> = (0..USERS)
        .map(|user| {
            let session = sessions.session(&user);
            tokio::spawn(async move { (user, session.authorization().await) })
        })
        .collect();
    for task in tasks {
        match task.await {
            Ok((user, Ok(auth))) => {
                let header = auth.header().to_str().unwrap_or_default();
                assert_eq!(header, format!("Bearer fresh-{user:043}"), "user {user}");
            }
            Ok((user, Err(e))) => panic!("user {user}: {e}"),
            Err(e) => panic!("a task: {e}"),
        }
    }
    (start.elapsed(), sessions)
}

fn expiry_wave(c: &mut Criterion) {
    let rt = runtime();
    let endpoint = Endpoint::default();
    let (drain, sessions) = rt.block_on(wave(&endpoint));
    let stats = sessions.stats();
    let floor = LATENCY * (USERS as u32).div_ceil(BOUND as u32);
    println!(
        "wave    {USERS} users expiring within 1 s: refreshes {} (source calls {}), \
         most in flight {} (bound {BOUND}), drain {:.0} ms ({:.2} x the floor of {:.0} ms: \
         {USERS}/{BOUND} turns of {} ms)",
        stats.tokens.refreshes_succeeded,
        endpoint.calls.load(Ordering::Relaxed),
        endpoint.most.load(Ordering::Relaxed),
        drain.as_secs_f64() * 1e3,
        drain.as_secs_f64() / floor.as_secs_f64(),
        floor.as_secs_f64() * 1e3,
        LATENCY.as_millis(),
    );
    assert_eq!(endpoint.calls.load(Ordering::Relaxed), USERS);
    assert_eq!(stats.tokens.refreshes_succeeded, USERS);
    assert!(endpoint.most.load(Ordering::Relaxed) <= BOUND);

    let mut g = c.benchmark_group("sessions");
    // One wave takes about two seconds (one waiting for the expiries):
    // ten of them, one each.
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(20));
    g.bench_function("expiry_wave_10000_drain", |b| {
        b.iter_custom(|iters| {
            let mut drained = Duration::ZERO;
            for _ in 0..iters {
                drained += rt.block_on(wave(&Endpoint::default())).0;
            }
            drained
        })
    });
    g.finish();
}

fn all(c: &mut Criterion) {
    memory(&runtime());
    keyed_lookup(c);
    expiry_wave(c);
}

criterion_group!(benches, all);
criterion_main!(benches);
