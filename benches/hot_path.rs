//! The cost of authorizing one request with a fresh token, against
//! baselines measured in the same run.
//!
//! Every variant wraps the same trivial inner service and is driven by
//! polling its future once with a no-op waker (all futures here are ready at
//! once), so the numbers are the middleware's own cost.
//!
//! Before the timings, a counting global allocator prints the heap
//! allocations per request of each variant.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    convert::Infallible,
    future::{Future, Ready, ready},
    hint::black_box,
    pin::{Pin, pin},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, Uri, header::AUTHORIZATION};
use http_body_util::Full;
use tower::{Service, retry::Retry};
use tower_http::auth::AddAuthorization;
use tower_token_refresh::{
    MemoryStore, NoReplay, SessionKey, Sessions, TokenManager, TokenRefreshLayer, TokenSet, source,
};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY-free: delegates to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

type Body = Full<Bytes>;

/// The trivial inner service: answers 200 at once.
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

/// The seed's design, ported literally: a mutex-guarded string read per
/// request, `format!` per request, a boxed future.
#[derive(Clone)]
struct LiteralPort<S> {
    token: Arc<Mutex<String>>,
    inner: S,
}

impl<S> Service<Request<Body>> for LiteralPort<S>
where
    S: Service<Request<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let token = self.token.lock().map(|t| t.clone()).unwrap_or_default();
        if let Ok(value) = format!("Bearer {token}").parse() {
            req.headers_mut().insert(AUTHORIZATION, value);
        }
        let fut = self.inner.call(req);
        Box::pin(fut)
    }
}

/// The least a middleware that sees 401s can do: AddAuthorization's
/// header, and a response future that checks the status (boxing errors, as
/// any layer with errors of its own must).
#[derive(Clone)]
struct CheckStatus<S>(S);

struct CheckStatusFuture<F> {
    inner: F,
    seen: Option<Arc<AtomicU64>>,
}

impl<F, R, E> Future for CheckStatusFuture<F>
where
    F: Future<Output = Result<Response<R>, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = Result<Response<R>, Box<dyn std::error::Error + Send + Sync>>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let response = std::task::ready!(Pin::new(&mut this.inner).poll(cx)).map_err(Into::into)?;
        if response.status() == http::StatusCode::UNAUTHORIZED
            && let Some(seen) = &this.seen
        {
            seen.fetch_add(1, Ordering::Relaxed);
        }
        Poll::Ready(Ok(response))
    }
}

impl<S, R> Service<Request<Body>> for CheckStatus<S>
where
    S: Service<Request<Body>, Response = Response<R>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Unpin,
{
    type Response = Response<R>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = CheckStatusFuture<S::Future>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }
    fn call(&mut self, req: Request<Body>) -> Self::Future {
        CheckStatusFuture {
            inner: self.0.call(req),
            seen: None,
        }
    }
}

/// What a user would write with tower's Retry to get a replayable copy:
/// clone every request, retry nothing on success.
#[derive(Clone, Copy)]
struct CloneEachRequest;

impl<Res, E> tower::retry::Policy<Request<Body>, Res, E> for CloneEachRequest {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut Request<Body>, _: &mut Result<Res, E>) -> Option<Self::Future> {
        None
    }

    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        Some(tower_token_refresh::replay::copy_parts(
            req,
            req.body().clone(),
        ))
    }
}

const TOKEN: &str =
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU";

fn request(uri: &Uri) -> Request<Body> {
    let mut req = Request::new(Full::new(Bytes::from_static(b"{\"q\":1}")));
    *req.uri_mut() = uri.clone();
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

fn manager() -> TokenManager {
    TokenManager::builder(source::from_fn(|_| async {
        Ok(TokenSet::bearer(TOKEN).with_expires_in(Duration::from_secs(3600)))
    }))
    .initial(TokenSet::bearer(TOKEN).with_expires_in(Duration::from_secs(3600)))
    .build()
}

fn allocations_per_request<S>(name: &str, svc: &mut S, uri: &Uri)
where
    S: Service<Request<Body>>,
    S::Error: std::fmt::Debug,
{
    // Warm up: first clones of shared buffers may allocate once.
    for _ in 0..10 {
        send(svc, request(uri));
    }
    const N: u64 = 1000;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..N {
        send(svc, request(uri));
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    println!(
        "allocations/request  {name:<42} {:.2}   response future: {} bytes",
        (after - before) as f64 / N as f64,
        std::mem::size_of::<S::Future>()
    );
}

/// Object-safe sending, so that variants of different types share one loop.
trait Send1 {
    fn send1(&mut self, uri: &Uri);
}

impl<S> Send1 for S
where
    S: Service<Request<Body>>,
    S::Error: std::fmt::Debug,
{
    fn send1(&mut self, uri: &Uri) {
        send(self, request(uri));
    }
}

/// Runs `f` with the stack `depth` x 64 bytes deeper than it is.
#[inline(never)]
fn on_shifted_stack(depth: usize, f: &mut dyn FnMut()) {
    let pad = black_box([0u8; 64]);
    if depth == 0 {
        f();
    } else {
        on_shifted_stack(depth - 1, f);
    }
    black_box(pad);
}

/// Paired rounds: every round times a batch of each variant in turn, and
/// the ratios are medians of per-round ratios, which drift on a busy
/// machine does not skew the way it skews separate runs.
fn paired(variants: &mut [(&str, &mut dyn Send1)], uri: &Uri) {
    if std::env::args().any(|a| a == "--profile-time") {
        // Profiling one variant: nothing else should run.
        return;
    }
    let quick = std::env::args().any(|a| a == "--test");
    let (rounds, batch) = if quick { (1, 1_000) } else { (31, 100_000) };
    let mut times = vec![Vec::with_capacity(rounds); variants.len()];
    // Where the stack sits within its page changes these timings by more
    // than the differences measured (4 KiB aliasing between the stack and
    // the heap blocks of each request), and the kernel picks it anew for
    // every process: one run alone can differ from the next by 10 %. Each
    // round therefore runs on a stack shifted by a different multiple of
    // 64 bytes, so that the rounds of one run sample many placements.
    let mut seed: u32 = 0x9e37_79b9;
    for _ in 0..rounds {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        on_shifted_stack((seed % 64) as usize, &mut || {
            for (i, (_, svc)) in variants.iter_mut().enumerate() {
                let start = std::time::Instant::now();
                for _ in 0..batch {
                    svc.send1(uri);
                }
                times[i].push(start.elapsed().as_secs_f64() / batch as f64);
            }
        });
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // The median of per-round ratios, and the ratio of the fastest rounds
    // (noise on a shared machine only ever adds time).
    let fastest = |i: usize| times[i].iter().copied().fold(f64::INFINITY, f64::min);
    let ratio = |a: usize, b: usize| {
        let paired = median((0..rounds).map(|r| times[a][r] / times[b][r]).collect());
        (paired, fastest(a) / fastest(b))
    };
    for (i, (name, _)) in variants.iter().enumerate() {
        println!(
            "paired  {name:<30} {:7.1} ns median, {:7.1} ns fastest ({rounds} rounds)",
            median(times[i].clone()) * 1e9,
            fastest(i) * 1e9
        );
    }
    for (what, a, b) in [
        ("add_authorization_check_status / add_authorization", 0, 1),
        ("ours_no_copy / add_authorization", 2, 1),
        ("ours_copy / add_authorization_retry_copy", 4, 3),
        ("literal_port / ours_no_copy", 5, 2),
    ] {
        let (paired, fastest) = ratio(a, b);
        println!(
            "ratio   {what:<52} {paired:.3} median of per-round ratios, {fastest:.3} fastest rounds"
        );
    }
}

fn hot_path(c: &mut Criterion) {
    // Inside a runtime, as a real client is: the coordinator's phase timer
    // is armed on the first request.
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        panic!("a tokio runtime for the benchmark");
    };
    let _runtime = runtime.enter();
    // An API over TLS, as in production. A cleartext URI makes the layer
    // check the host is loopback on every request; `ours_no_copy_http_loopback`
    // measures that case.
    let uri: Uri = "https://api.example.com/v1/data"
        .parse()
        .unwrap_or_default();
    let loopback: Uri = "http://127.0.0.1:8080/api/data".parse().unwrap_or_default();

    let mut bare = Ok200;
    let mut add_auth = AddAuthorization::bearer(Ok200, TOKEN).as_sensitive(true);
    // AddAuthorization with a response future that checks each status for
    // a 401, as any layer that sees rejections must: the floor for ours.
    let mut check_status = CheckStatus(AddAuthorization::bearer(Ok200, TOKEN).as_sensitive(true));
    let layer = TokenRefreshLayer::new(manager())
        .allow_origin(
            "https://api.example.com"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        )
        .allow_origin(
            "http://127.0.0.1:8080"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
    let mut ours_no_copy = tower::Layer::layer(&layer.clone().replay(NoReplay), Ok200);
    let mut ours_copy = tower::Layer::layer(&layer, Ok200);
    let mut add_auth_retry = Retry::new(
        CloneEachRequest,
        AddAuthorization::bearer(Ok200, TOKEN).as_sensitive(true),
    );
    let mut literal = LiteralPort {
        token: Arc::new(Mutex::new(TOKEN.to_owned())),
        inner: Ok200,
    };

    // The same layer over 10,000 sessions (`sessions.rs` has the paired
    // figures); here for `benches/instructions.sh sessions_keyed`.
    let sessions: Sessions<u64> = match Sessions::builder(TokenManager::builder(source::from_fn(
        |current: Option<TokenSet>| async move {
            Ok(current.unwrap_or_else(|| TokenSet::bearer(TOKEN)))
        },
    )))
    .store(|_: &u64| MemoryStore::new())
    .build()
    {
        Ok(sessions) => sessions,
        Err(e) => panic!("a registry: {e}"),
    };
    runtime.block_on(async {
        for user in 0..10_000 {
            let tokens = TokenSet::bearer(format!("{TOKEN}-{user}"))
                .with_expires_in(Duration::from_secs(3600));
            if let Err(e) = sessions.set(user, tokens).await {
                panic!("set: {e}");
            }
        }
    });
    let mut sessions_keyed = tower::Layer::layer(
        &TokenRefreshLayer::sessions(sessions)
            .allow_origin(
                "https://api.example.com"
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
            )
            .replay(NoReplay),
        Ok200,
    );
    let mut user = 0_u64;
    let mut keyed = |uri: &Uri| {
        user = (user + 7_919) % 10_000;
        let mut req = request(uri);
        req.extensions_mut().insert(SessionKey(user));
        req
    };

    allocations_per_request("bare inner service", &mut bare, &uri);
    allocations_per_request("AddAuthorization", &mut add_auth, &uri);
    allocations_per_request("AddAuthorization + status check", &mut check_status, &uri);
    allocations_per_request("ours, no replay copy", &mut ours_no_copy, &uri);
    allocations_per_request("AddAuthorization + Retry (copy)", &mut add_auth_retry, &uri);
    allocations_per_request("ours, replay copy", &mut ours_copy, &uri);
    allocations_per_request(
        "literal port (Mutex<String>, format!, Box)",
        &mut literal,
        &uri,
    );

    paired(
        &mut [
            ("add_authorization_check_status", &mut check_status),
            ("add_authorization", &mut add_auth),
            ("ours_no_copy", &mut ours_no_copy),
            ("add_authorization_retry_copy", &mut add_auth_retry),
            ("ours_copy", &mut ours_copy),
            ("literal_port", &mut literal),
            ("bare", &mut bare),
        ],
        &uri,
    );

    let mut g = c.benchmark_group("hot_path");
    g.bench_function("bare", |b| b.iter(|| send(&mut bare, request(&uri))));
    g.bench_function("add_authorization", |b| {
        b.iter(|| send(&mut add_auth, request(&uri)))
    });
    g.bench_function("add_authorization_check_status", |b| {
        b.iter(|| send(&mut check_status, request(&uri)))
    });
    g.bench_function("ours_no_copy", |b| {
        b.iter(|| send(&mut ours_no_copy, request(&uri)))
    });
    g.bench_function("ours_no_copy_with_key", |b| {
        b.iter(|| send(&mut ours_no_copy, keyed(&uri)))
    });
    g.bench_function("sessions_keyed", |b| {
        b.iter(|| send(&mut sessions_keyed, keyed(&uri)))
    });
    g.bench_function("ours_no_copy_http_loopback", |b| {
        b.iter(|| send(&mut ours_no_copy, request(&loopback)))
    });
    g.bench_function("add_authorization_retry_copy", |b| {
        b.iter(|| send(&mut add_auth_retry, request(&uri)))
    });
    g.bench_function("ours_copy", |b| {
        b.iter(|| send(&mut ours_copy, request(&uri)))
    });
    g.bench_function("literal_port", |b| {
        b.iter(|| send(&mut literal, request(&uri)))
    });
    g.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
