//! The invariants of the refresh coordinator, each under paused tokio time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::{Instant, sleep};
use tower_token_refresh_core::{
    EndReason, Error, ErrorKind, Lookup, LookupCache, MemoryStore, Rotation, TokenManager,
    TokenSet, TokenSource, TokenStore, source,
};

/// A source that issues `token-N`/`refresh-N`, counts calls, waits
/// `latency`, and answers with queued errors first.
#[derive(Clone)]
struct Counting {
    calls: Arc<AtomicU64>,
    latency: Duration,
    lifetime: Duration,
    errors: Arc<Mutex<Vec<ErrorKind>>>,
    seen_refresh_tokens: Arc<Mutex<Vec<Option<String>>>>,
}

impl Counting {
    fn new(lifetime: Duration, latency: Duration) -> Self {
        Counting {
            calls: Arc::default(),
            latency,
            lifetime,
            errors: Arc::default(),
            seen_refresh_tokens: Arc::default(),
        }
    }

    fn fail_next(&self, kinds: &[ErrorKind]) {
        let mut errors = self.errors.lock().unwrap();
        errors.extend(kinds.iter().rev());
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn source(&self) -> impl TokenSource {
        let this = self.clone();
        source::from_fn(move |current: Option<TokenSet>| {
            let this = this.clone();
            async move {
                let n = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
                this.seen_refresh_tokens
                    .lock()
                    .unwrap()
                    .push(current.and_then(|c| c.refresh_token().map(|r| r.secret().to_owned())));
                sleep(this.latency).await;
                if let Some(kind) = this.errors.lock().unwrap().pop() {
                    return Err(Error::new(kind, "injected"));
                }
                Ok(TokenSet::bearer(format!("token-{n}"))
                    .with_expires_in(this.lifetime)
                    .with_refresh_token(format!("refresh-{n}")))
            }
        })
    }
}

fn header(tokens: &TokenManager) -> String {
    match tokens.lookup() {
        Lookup::Ready(auth) => auth.header().to_str().unwrap().to_owned(),
        other => panic!("expected a ready credential, got {other:?}"),
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// Advances paused time, then lets spawned tasks (the phase timer among
/// them) run before the test goes on: the timer is a task like any other.
async fn advance(by: Duration) {
    tokio::time::advance(by).await;
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_refresh() {
    for n in [3usize, 100, 10_000] {
        let counting = Counting::new(HOUR, Duration::from_millis(200));
        let tokens = TokenManager::builder(counting.source()).build();
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let tokens = tokens.clone();
                tokio::spawn(async move { tokens.authorization().await })
            })
            .collect();
        for task in tasks {
            let auth = task.await.unwrap().unwrap();
            assert_eq!(auth.header().to_str().unwrap(), "Bearer token-1");
        }
        assert_eq!(counting.calls(), 1, "{n} callers");
        assert_eq!(tokens.stats().refreshes_started, 1);
    }
}

#[tokio::test(start_paused = true)]
async fn rejection_of_an_old_generation_does_not_refresh_again() {
    let counting = Counting::new(HOUR, Duration::from_millis(10));
    let tokens = TokenManager::builder(counting.source()).build();
    let first = tokens.authorization().await.unwrap();
    let second = tokens.refresh_if(first.generation()).await.unwrap();
    assert_eq!(counting.calls(), 2);
    // Late rejections of the first generation get the second at once.
    for _ in 0..5 {
        let again = tokens.refresh_if(first.generation()).now_or_never_ready();
        assert_eq!(again.generation(), second.generation());
    }
    assert_eq!(counting.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_replay_is_counted_when_its_credential_comes_and_not_when_its_refresh_fails() {
    let counting = Counting::new(HOUR, Duration::from_millis(10));
    let tokens = TokenManager::builder(counting.source()).build();
    let first = tokens.authorization().await.unwrap();
    tokens.refresh_if(first.generation()).await.unwrap();
    assert_eq!(tokens.stats().replays, 0, "a refresh alone is no replay");
    // A replay of a request rejected at the first generation gets the
    // second at once, without another refresh, and is counted.
    let replay = tokens.replay_if(first.generation()).await.unwrap();
    assert_eq!(replay.generation(), tokens.generation());
    assert_eq!(counting.calls(), 2);
    assert_eq!(tokens.stats().replays, 1);
    // A replay of the current generation refreshes, like `refresh_if`.
    let newer = tokens.replay_if(replay.generation()).await.unwrap();
    assert!(newer.generation() > replay.generation());
    assert_eq!(counting.calls(), 3);
    assert_eq!(tokens.stats().replays, 2);
    // A replay whose refresh fails is never sent, so it is not counted.
    counting.fail_next(&[ErrorKind::SessionExpired]);
    let failed = tokens.replay_if(newer.generation()).await;
    assert!(failed.unwrap_err().is_session_expired());
    assert_eq!(counting.calls(), 4);
    assert_eq!(tokens.stats().replays, 2);
}

trait NowOrNever {
    fn now_or_never_ready(self) -> tower_token_refresh_core::Authorization;
}

impl NowOrNever for tower_token_refresh_core::RefreshFuture {
    fn now_or_never_ready(self) -> tower_token_refresh_core::Authorization {
        let mut fut = tokio_test::task::spawn(self);
        match fut.poll() {
            std::task::Poll::Ready(r) => r.unwrap(),
            std::task::Poll::Pending => panic!("expected an immediate answer"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_rejection_during_a_refresh_joins_it() {
    let counting = Counting::new(HOUR, Duration::from_millis(500));
    let tokens = TokenManager::builder(counting.source())
        .initial(TokenSet::bearer("token-0").with_refresh_token("refresh-0"))
        .build();
    let g = tokens.generation();
    let first = tokio::spawn({
        let tokens = tokens.clone();
        async move { tokens.refresh_if(g).await }
    });
    sleep(Duration::from_millis(100)).await;
    assert_eq!(counting.calls(), 1);
    let joined = tokens.refresh_if(g).await.unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!(joined.generation(), first.generation());
    assert_eq!(counting.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_caller_does_not_abandon_the_refresh() {
    let counting = Counting::new(HOUR, Duration::from_millis(300));
    let store = Arc::new(MemoryStore::new());
    let tokens = TokenManager::builder(counting.source())
        .initial(TokenSet::bearer("token-0").with_refresh_token("refresh-0"))
        .store(store.clone())
        .build();
    let caller = tokio::spawn({
        let tokens = tokens.clone();
        async move { tokens.refresh().await }
    });
    sleep(Duration::from_millis(100)).await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    sleep(Duration::from_millis(300)).await;
    let stored = store.load().await.unwrap().unwrap();
    assert_eq!(stored.refresh_token().unwrap().secret(), "refresh-1");
    assert_eq!(header(&tokens), "Bearer token-1");
    assert_eq!(counting.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn invalid_grant_expires_the_session_once() {
    let counting = Counting::new(HOUR, Duration::from_millis(50));
    counting.fail_next(&[ErrorKind::SessionExpired]);
    let hook_calls = Arc::new(AtomicUsize::new(0));
    let tokens = TokenManager::builder(counting.source())
        .initial(TokenSet::bearer("token-0").with_refresh_token("refresh-0"))
        .on_session_expired({
            let hook_calls = hook_calls.clone();
            move || {
                hook_calls.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build();
    let g = tokens.generation();
    let waiters: Vec<_> = (0..50)
        .map(|_| {
            let tokens = tokens.clone();
            tokio::spawn(async move { tokens.refresh_if(g).await })
        })
        .collect();
    for w in waiters {
        let err = w.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
    }
    assert_eq!(hook_calls.load(Ordering::SeqCst), 1);
    assert!(tokens.is_session_expired());
    // Later calls fail fast, without the source.
    for _ in 0..10 {
        assert!(matches!(tokens.lookup(), Lookup::Failed(e) if e.is_session_expired()));
        assert!(tokens.refresh().await.unwrap_err().is_session_expired());
    }
    assert_eq!(counting.calls(), 1);
    assert_eq!(hook_calls.load(Ordering::SeqCst), 1);
    // New credentials recover.
    tokens
        .set(
            TokenSet::bearer("fresh")
                .with_expires_in(HOUR)
                .with_refresh_token("r"),
        )
        .await
        .unwrap();
    assert_eq!(header(&tokens), "Bearer fresh");
    assert!(!tokens.is_session_expired());
}

#[tokio::test(start_paused = true)]
async fn transient_failures_back_off_then_fail_then_recover() {
    let counting = Counting::new(HOUR, Duration::from_millis(10));
    counting.fail_next(&[ErrorKind::Transient; 4]);
    let tokens = TokenManager::builder(counting.source())
        .max_attempts(4)
        .backoff(Duration::from_millis(100), Duration::from_secs(5))
        .build();
    let started = Instant::now();
    let err = tokens.authorization().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.message().contains("4 attempts"), "{err}");
    assert_eq!(counting.calls(), 4);
    // Three backoffs of at most 100, 200 and 400 ms, plus 4 x 10 ms latency.
    assert!(
        started.elapsed() <= Duration::from_millis(740),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(tokens.stats().refreshes_failed, 1);
    // Not stuck: the next call refreshes again and succeeds.
    let auth = tokens.authorization().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer token-5");
}

#[tokio::test(start_paused = true)]
async fn refreshes_are_spaced_by_the_minimum_interval() {
    let counting = Counting::new(HOUR, Duration::ZERO);
    let tokens = TokenManager::builder(counting.source())
        .min_refresh_interval(Duration::from_secs(2))
        .build();
    let t0 = Instant::now();
    tokens.authorization().await.unwrap();
    for _ in 0..3 {
        tokens.refresh().await.unwrap();
    }
    assert_eq!(counting.calls(), 4);
    assert!(t0.elapsed() >= Duration::from_secs(6), "{:?}", t0.elapsed());
}

/// 100-second tokens from a source that answers after `latency`, with a
/// 5-second expiry leeway and a refresh-ahead window of `ahead` (no
/// jitter), and the first set already fetched.
async fn hundred_second_tokens(ahead: Duration, latency: Duration) -> (Counting, TokenManager) {
    let counting = Counting::new(Duration::from_secs(100), latency);
    let tokens = TokenManager::builder(counting.source())
        .refresh_ahead(ahead)
        .expiry_leeway(Duration::from_secs(5))
        .refresh_jitter(0.0)
        .build();
    tokens.authorization().await.unwrap();
    (counting, tokens)
}

#[tokio::test(start_paused = true)]
async fn refresh_ahead_serves_the_old_token_then_blocks_past_expiry() {
    let (counting, tokens) =
        hundred_second_tokens(Duration::from_secs(20), Duration::from_secs(1)).await;
    assert_eq!(counting.calls(), 1);
    // Before the window: nothing happens.
    advance(Duration::from_secs(79)).await;
    assert_eq!(header(&tokens), "Bearer token-1");
    tokio::task::yield_now().await;
    assert_eq!(counting.calls(), 1);
    // In the window: the old token at once, and one background refresh.
    advance(Duration::from_secs(2)).await;
    for _ in 0..100 {
        assert_eq!(header(&tokens), "Bearer token-1");
    }
    sleep(Duration::from_millis(1100)).await;
    assert_eq!(counting.calls(), 2);
    assert_eq!(header(&tokens), "Bearer token-2");

    // Past expiry minus leeway (no refresh-ahead this time): callers wait.
    let (counting, tokens) = hundred_second_tokens(Duration::ZERO, Duration::from_secs(1)).await;
    advance(Duration::from_secs(96)).await;
    assert!(matches!(tokens.lookup(), Lookup::Pending(_)));
    let auth = tokens.authorization().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer token-2");
    assert_eq!(counting.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn short_lived_tokens_cap_the_windows() {
    // 2 s tokens: refresh-ahead capped at 1 s, leeway at 0.2 s.
    let counting = Counting::new(Duration::from_secs(2), Duration::ZERO);
    let tokens = TokenManager::builder(counting.source())
        .refresh_jitter(0.0)
        .build();
    tokens.authorization().await.unwrap();
    advance(Duration::from_millis(990)).await;
    header(&tokens);
    tokio::task::yield_now().await;
    assert_eq!(counting.calls(), 1);
    advance(Duration::from_millis(20)).await;
    header(&tokens);
    sleep(Duration::from_millis(1)).await;
    assert_eq!(counting.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_token_expired_on_arrival_is_an_error_not_a_loop() {
    let counting = Counting::new(Duration::ZERO, Duration::ZERO);
    let tokens = TokenManager::builder(counting.source())
        .max_attempts(3)
        .build();
    let err = tokens.authorization().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.message().contains("expired on arrival"), "{err}");
    assert_eq!(counting.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn set_during_a_refresh_wins_over_its_result() {
    let counting = Counting::new(HOUR, Duration::from_secs(1));
    let tokens = TokenManager::builder(counting.source())
        .initial(TokenSet::bearer("token-0").with_refresh_token("refresh-0"))
        .build();
    let refresh = tokens.refresh();
    sleep(Duration::from_millis(100)).await;
    tokens
        .set(TokenSet::bearer("login").with_expires_in(HOUR))
        .await
        .unwrap();
    let outcome = refresh.await.unwrap();
    assert_eq!(outcome.header().to_str().unwrap(), "Bearer login");
    assert_eq!(header(&tokens), "Bearer login");
}

/// A source whose first `panics` calls panic.
fn panicking(panics: u64, calls: Arc<AtomicU64>) -> impl TokenSource {
    source::from_fn(move |_| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < panics {
                panic!("source bug");
            }
            Ok(TokenSet::bearer("ok").with_expires_in(HOUR))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_panicking_source_call_is_a_failed_attempt_and_is_retried() {
    let calls = Arc::new(AtomicU64::new(0));
    let tokens = TokenManager::builder(panicking(1, calls.clone())).build();
    let auth = tokens.authorization().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer ok");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_source_that_keeps_panicking_fails_its_waiters_and_does_not_wedge() {
    let calls = Arc::new(AtomicU64::new(0));
    let tokens = TokenManager::builder(panicking(2, calls.clone()))
        .max_attempts(2)
        .build();
    let err = tokens.authorization().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.message().contains("panicked"), "{err}");
    // No running refresh was left behind.
    let auth = tokio::time::timeout(Duration::from_secs(30), tokens.authorization())
        .await
        .expect("not wedged")
        .unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer ok");
}

#[tokio::test(start_paused = true)]
async fn a_newer_stored_set_is_adopted_without_a_refresh() {
    let counting = Counting::new(HOUR, Duration::ZERO);
    let store = Arc::new(MemoryStore::new());
    let tokens = TokenManager::builder(counting.source())
        .initial(TokenSet::bearer("old").with_refresh_token("r-old"))
        .store(store.clone())
        .build();
    // Another process refreshed and saved.
    store
        .save(
            &TokenSet::bearer("theirs")
                .with_expires_in(HOUR)
                .with_refresh_token("r-new"),
        )
        .await
        .unwrap();
    let auth = tokens.refresh().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer theirs");
    assert_eq!(counting.calls(), 0);
    assert_eq!(tokens.stats().adopted_from_store, 1);
}

#[tokio::test(start_paused = true)]
async fn the_current_refresh_token_is_handed_to_the_source() {
    let counting = Counting::new(HOUR, Duration::ZERO);
    let tokens = TokenManager::builder(counting.source())
        .initial(TokenSet::bearer("token-0").with_refresh_token("refresh-0"))
        .min_refresh_interval(Duration::ZERO)
        .build();
    for _ in 0..3 {
        tokens.refresh().await.unwrap();
    }
    let seen = counting.seen_refresh_tokens.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            Some("refresh-0".into()),
            Some("refresh-1".into()),
            Some("refresh-2".into())
        ]
    );
}

#[test]
fn without_a_runtime_a_refresh_is_a_typed_error() {
    let tokens = TokenManager::builder(Counting::new(HOUR, Duration::ZERO).source()).build();
    let Lookup::Pending(fut) = tokens.lookup() else {
        panic!("an empty manager must wait for a refresh");
    };
    let err = futures_executor_block_on(fut).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoRuntime);
}

fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut task = tokio_test::task::spawn(f);
    match task.poll() {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("expected an immediate answer"),
    }
}

#[tokio::test(start_paused = true)]
async fn debug_output_never_shows_secrets() {
    let counting = Counting::new(HOUR, Duration::ZERO);
    let tokens = TokenManager::builder(counting.source())
        .initial(TokenSet::bearer("token-0").with_refresh_token("refresh-0"))
        .build();
    let auth = tokens.refresh().await.unwrap();
    let shown = format!(
        "{tokens:?} {auth:?} {:?} {:?}",
        tokens.current(),
        tokens.lookup()
    );
    for secret in ["token-0", "token-1", "refresh-0", "refresh-1"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

// Regressions found in review: writers racing each other and the store.

#[tokio::test(start_paused = true)]
async fn a_refresh_overtaken_by_set_writes_nothing_to_the_store() {
    let counting = Counting::new(HOUR, Duration::from_secs(1));
    let store = Arc::new(MemoryStore::new());
    let tokens = TokenManager::builder(counting.source())
        .initial(TokenSet::bearer("token-0").with_refresh_token("refresh-0"))
        .store(store.clone())
        .min_refresh_interval(Duration::ZERO)
        .build();
    let refresh = tokens.refresh();
    sleep(Duration::from_millis(100)).await;
    let login = TokenSet::bearer("user-b")
        .with_expires_in(HOUR)
        .with_refresh_token("rb");
    tokens.set(login).await.unwrap();
    let _ = refresh.await;
    let stored = store.load().await.unwrap().unwrap();
    assert_eq!(stored.access_token().secret(), "user-b");
    // The next rejection refreshes user B's session, not the overtaken one.
    let g = tokens.generation();
    tokens.refresh_if(g).await.unwrap();
    let seen = counting.seen_refresh_tokens.lock().unwrap().clone();
    assert_eq!(seen, vec![Some("refresh-0".into()), Some("rb".into())]);
    assert_eq!(tokens.stats().adopted_from_store, 0);
}

#[tokio::test(start_paused = true)]
async fn a_refresh_overtaken_by_clear_does_not_bring_the_session_back() {
    let counting = Counting::new(HOUR, Duration::from_secs(1));
    let store = Arc::new(MemoryStore::new());
    let tokens = TokenManager::builder(counting.source())
        .initial(TokenSet::bearer("token-0").with_refresh_token("refresh-0"))
        .store(store.clone())
        .min_refresh_interval(Duration::ZERO)
        .build();
    let refresh = tokens.refresh();
    sleep(Duration::from_millis(100)).await;
    tokens.clear().await.unwrap();
    let _ = refresh.await;
    assert!(
        store.load().await.unwrap().is_none(),
        "the store stays empty"
    );
    assert!(tokens.current().is_none());
    // A new session starts from nothing: the source gets no refresh token.
    tokens.authorization().await.unwrap();
    let seen = counting.seen_refresh_tokens.lock().unwrap().clone();
    assert_eq!(seen, vec![Some("refresh-0".into()), None]);
}

#[tokio::test(start_paused = true)]
async fn a_rejection_of_the_set_after_a_set_gets_a_new_refresh() {
    let counting = Counting::new(HOUR, Duration::from_secs(1));
    let tokens = TokenManager::builder(counting.source())
        .initial(TokenSet::bearer("token-0").with_refresh_token("refresh-0"))
        .min_refresh_interval(Duration::ZERO)
        .build();
    drop(tokens.refresh());
    sleep(Duration::from_millis(100)).await;
    tokens
        .set(
            TokenSet::bearer("login")
                .with_expires_in(HOUR)
                .with_refresh_token("rl"),
        )
        .await
        .unwrap();
    let g_login = tokens.generation();
    let replay_with = tokens.refresh_if(g_login).await.unwrap();
    assert!(
        replay_with.generation() > g_login,
        "a newer token, not the rejected one"
    );
    assert_ne!(replay_with.header().to_str().unwrap(), "Bearer login");
}

#[test]
fn a_flight_dropped_with_its_runtime_while_waiting_to_start_does_not_wedge() {
    let counting = Counting::new(HOUR, Duration::ZERO);
    let tokens = TokenManager::builder(counting.source())
        .initial(TokenSet::bearer("token-0").with_refresh_token("refresh-0"))
        .min_refresh_interval(Duration::from_secs(5))
        .build();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    first.block_on(async {
        tokens.refresh().await.unwrap();
        // Waits for the minimum interval before starting...
        drop(tokens.refresh());
    });
    // ...when its runtime goes away (one #[tokio::test] of many, say).
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    second.block_on(async {
        sleep(Duration::from_secs(10)).await;
        let auth = tokens.refresh().await.unwrap();
        assert_eq!(auth.header().to_str().unwrap(), "Bearer token-2");
    });
}

struct HangingStore;

impl TokenStore for HangingStore {
    fn load(&self) -> tower_token_refresh_core::BoxFuture<'_, Result<Option<TokenSet>, Error>> {
        Box::pin(std::future::pending())
    }
    fn save<'a>(
        &'a self,
        _: &'a TokenSet,
    ) -> tower_token_refresh_core::BoxFuture<'a, Result<(), Error>> {
        Box::pin(std::future::pending())
    }
    fn clear(&self) -> tower_token_refresh_core::BoxFuture<'_, Result<(), Error>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_store_does_not_hang_waiters() {
    let counting = Counting::new(HOUR, Duration::ZERO);
    let tokens = TokenManager::builder(counting.source())
        .store(HangingStore)
        .attempt_timeout(Duration::from_secs(2))
        .build();
    let started = Instant::now();
    let err = tokens.authorization().await.unwrap_err();
    // Four loads, each cut off at 2 s, with backoff between: bounded.
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.message().contains("store load timed out"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(tokens.stats().store_errors, 4);
    assert_eq!(counting.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failing_background_refresh_is_retried_after_the_background_interval() {
    let counting = Counting::new(Duration::from_secs(120), Duration::ZERO);
    let tokens = TokenManager::builder(counting.source())
        .refresh_jitter(0.0)
        .max_attempts(2)
        .background_retry(Duration::from_secs(30))
        .build();
    tokens.authorization().await.unwrap();
    counting.fail_next(&[ErrorKind::Transient; 1000]);
    // The window opens at 60 s; requests every 100 ms for 40 s after that.
    sleep(Duration::from_secs(61)).await;
    for _ in 0..400 {
        assert!(matches!(tokens.lookup(), Lookup::Ready(_)));
        sleep(Duration::from_millis(100)).await;
    }
    // One background refresh at 61 s and one at about 91 s, 2 attempts each.
    assert_eq!(counting.calls() - 1, 4, "{:?}", tokens.stats());
    assert_eq!(tokens.stats().refreshes_started, 3);
}

/// A store whose clear is slow, so a login can arrive while it runs.
struct SlowClear(MemoryStore);

impl TokenStore for SlowClear {
    fn load(&self) -> tower_token_refresh_core::BoxFuture<'_, Result<Option<TokenSet>, Error>> {
        self.0.load()
    }
    fn save<'a>(
        &'a self,
        t: &'a TokenSet,
    ) -> tower_token_refresh_core::BoxFuture<'a, Result<(), Error>> {
        self.0.save(t)
    }
    fn clear(&self) -> tower_token_refresh_core::BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            sleep(Duration::from_millis(500)).await;
            self.0.clear().await
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_login_right_after_the_session_expired_stays_in_the_store() {
    let store = Arc::new(SlowClear(MemoryStore::new()));
    let counting = Counting::new(HOUR, Duration::ZERO);
    counting.fail_next(&[ErrorKind::SessionExpired]);
    let tokens = TokenManager::builder(counting.source())
        .initial(TokenSet::bearer("token-0").with_refresh_token("refresh-0"))
        .store(store.clone())
        .build();
    drop(tokens.refresh());
    sleep(Duration::from_millis(10)).await;
    tokens
        .set(
            TokenSet::bearer("relogin")
                .with_expires_in(HOUR)
                .with_refresh_token("r1"),
        )
        .await
        .unwrap();
    sleep(Duration::from_secs(1)).await;
    assert!(tokens.stats().sessions_expired == 1);
    let stored = store.load().await.unwrap().expect("the new login is kept");
    assert_eq!(stored.access_token().secret(), "relogin");
    assert_eq!(header(&tokens), "Bearer relogin");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_hook_does_not_change_what_waiters_get() {
    let counting = Counting::new(HOUR, Duration::ZERO);
    counting.fail_next(&[ErrorKind::SessionExpired]);
    let tokens = TokenManager::builder(counting.source())
        .initial(TokenSet::bearer("token-0").with_refresh_token("refresh-0"))
        .on_session_expired(|| panic!("application bug"))
        .build();
    let err = tokens.refresh().await.unwrap_err();
    assert!(err.is_session_expired(), "{err}");
    tokens
        .set(TokenSet::bearer("again").with_expires_in(HOUR))
        .await
        .unwrap();
    assert_eq!(header(&tokens), "Bearer again");
}

#[tokio::test(start_paused = true)]
async fn an_older_set_left_in_the_store_is_never_adopted() {
    let counting = Counting::new(HOUR, Duration::ZERO);
    let store = Arc::new(MemoryStore::new());
    let tokens = TokenManager::builder(counting.source())
        .store(store.clone())
        .min_refresh_interval(Duration::ZERO)
        .build();
    tokens.authorization().await.unwrap();
    let older = store.load().await.unwrap().unwrap();
    sleep(Duration::from_secs(10)).await;
    tokens.refresh().await.unwrap();
    // The store lost the newer save (a failed write, say).
    store.save(&older).await.unwrap();
    tokens.refresh().await.unwrap();
    assert_eq!(tokens.stats().adopted_from_store, 0);
    assert_eq!(header(&tokens), "Bearer token-3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_flight_holds_on_a_multi_thread_runtime() {
    let counting = Counting::new(HOUR, Duration::from_millis(5));
    let tokens = TokenManager::builder(counting.source())
        .min_refresh_interval(Duration::ZERO)
        .build();
    let mut generation = tokens.authorization().await.unwrap().generation();
    for round in 0..20 {
        // 1,000 tasks on four threads reject the same generation.
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let tokens = tokens.clone();
                tokio::spawn(async move { tokens.refresh_if(generation).await })
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for t in tasks {
            seen.insert(t.await.unwrap().unwrap().generation());
        }
        assert_eq!(seen.len(), 1, "every waiter got the same outcome");
        generation = *seen.iter().next().unwrap();
        assert_eq!(counting.calls(), round + 2);
    }
}

/// A store that cannot be read.
struct BrokenStore;

impl TokenStore for BrokenStore {
    fn load(&self) -> tower_token_refresh_core::BoxFuture<'_, Result<Option<TokenSet>, Error>> {
        Box::pin(async { Err(Error::new(ErrorKind::Store, "corrupt")) })
    }
    fn save<'a>(
        &'a self,
        _: &'a TokenSet,
    ) -> tower_token_refresh_core::BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
    fn clear(&self) -> tower_token_refresh_core::BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_store_fails_the_refresh_and_is_reported_by_load() {
    let counting = Counting::new(HOUR, Duration::ZERO);
    let tokens = TokenManager::builder(counting.source())
        .initial(
            TokenSet::bearer("token-0")
                .with_refresh_token("refresh-0")
                .with_expires_in(HOUR),
        )
        .store(BrokenStore)
        .max_attempts(2)
        .build();
    assert_eq!(tokens.load().await.unwrap_err().kind(), ErrorKind::Store);
    let err = tokens.refresh().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.message().contains("corrupt"), "{err}");
    assert_eq!(
        counting.calls(),
        0,
        "no refresh with an unknown store state"
    );
    // The token in memory is still served.
    assert_eq!(header(&tokens), "Bearer token-0");
}

#[tokio::test(start_paused = true)]
async fn load_takes_the_stored_set_and_end_session_forgets_it() {
    let counting = Counting::new(HOUR, Duration::ZERO);
    let store = Arc::new(MemoryStore::new());
    store
        .save(
            &TokenSet::bearer("saved")
                .with_expires_in(HOUR)
                .with_refresh_token("r"),
        )
        .await
        .unwrap();
    let hook_calls = Arc::new(AtomicUsize::new(0));
    let tokens = TokenManager::builder(counting.source())
        .store(store.clone())
        .on_session_expired({
            let hook_calls = hook_calls.clone();
            move || {
                hook_calls.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build();
    assert!(tokens.load().await.unwrap());
    assert_eq!(header(&tokens), "Bearer saved");
    tokens.end_session().await.unwrap();
    // A tombstone stays, so that other processes sharing the store end too;
    // it holds neither token.
    let tombstone = store.load().await.unwrap().unwrap();
    assert_eq!(tombstone.ended(), Some(EndReason::Logout));
    assert!(tombstone.refresh_token().is_none());
    assert_eq!(tombstone.access_token().secret(), "");
    assert!(matches!(tokens.lookup(), Lookup::Failed(e) if e.is_session_expired()));
    assert_eq!(hook_calls.load(Ordering::SeqCst), 1);
    assert_eq!(counting.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_refresh_ends_the_session_instead_of_presenting_the_token_again() {
    // The token endpoint takes 3 s; each attempt waits 1 s. Sending the
    // refresh token again would be reuse if the server rotated it.
    let counting = Counting::new(HOUR, Duration::from_secs(3));
    let hook_calls = Arc::new(AtomicUsize::new(0));
    let hook = hook_calls.clone();
    let tokens = TokenManager::builder(counting.source())
        .initial(TokenSet::bearer("token-0").with_refresh_token("refresh-0"))
        .attempt_timeout(Duration::from_secs(1))
        .max_attempts(5)
        .on_session_expired(move || {
            hook.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    let err = tokens.refresh().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    assert!(err.is_outcome_unknown(), "{err}");
    assert_eq!(counting.calls(), 1, "the refresh token is presented once");
    assert_eq!(hook_calls.load(Ordering::SeqCst), 1);
    assert!(tokens.is_session_expired());
    assert_eq!(tokens.stats().unanswered_requests, 1);
    let later = tokens.authorization().await.unwrap_err();
    assert!(later.is_outcome_unknown(), "the state says why: {later}");
    assert_eq!(counting.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_refresh_is_retried_when_the_server_does_not_rotate() {
    let counting = Counting::new(HOUR, Duration::from_secs(3));
    let tokens = TokenManager::builder(counting.source())
        .initial(TokenSet::bearer("token-0").with_refresh_token("refresh-0"))
        .attempt_timeout(Duration::from_secs(1))
        .max_attempts(3)
        .rotation(Rotation::Never)
        .build();
    let err = tokens.refresh().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_eq!(counting.calls(), 3, "each attempt asks again");
    assert!(!tokens.is_session_expired());
}

#[tokio::test(start_paused = true)]
async fn after_the_server_kept_its_refresh_token_an_unanswered_refresh_is_retried() {
    // First answer: quick, and the refresh token stays the same. Then the
    // server hangs once.
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let source = source::from_fn(move |_| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n == 2 {
                std::future::pending::<()>().await;
            }
            Ok(TokenSet::bearer(format!("token-{n}"))
                .with_expires_in(HOUR)
                .with_refresh_token("refresh-0"))
        }
    });
    let tokens = TokenManager::builder(source)
        .initial(TokenSet::bearer("token-0").with_refresh_token("refresh-0"))
        .attempt_timeout(Duration::from_secs(1))
        .min_refresh_interval(Duration::ZERO)
        .backoff(Duration::ZERO, Duration::ZERO)
        .build();
    tokens.refresh().await.unwrap();
    let auth = tokens.refresh().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer token-3");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

fn cached(tokens: &TokenManager, cache: &mut LookupCache) -> String {
    match tokens.lookup_cached(cache) {
        Lookup::Ready(auth) => auth.header().to_str().unwrap().to_owned(),
        other => panic!("expected a ready credential, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_cached_lookup_follows_every_change_of_the_credential() {
    let (counting, tokens) =
        hundred_second_tokens(Duration::from_secs(20), Duration::from_secs(1)).await;
    let mut cache = LookupCache::new();
    assert_eq!(cached(&tokens, &mut cache), "Bearer token-1");

    // A set replaces the remembered credential: the next lookup sees it.
    tokens
        .set(TokenSet::bearer("set-by-hand").with_expires_in(Duration::from_secs(100)))
        .await
        .unwrap();
    assert_eq!(cached(&tokens, &mut cache), "Bearer set-by-hand");

    // Its refresh-ahead window starts a background refresh, as lookup does.
    advance(Duration::from_secs(81)).await;
    assert_eq!(cached(&tokens, &mut cache), "Bearer set-by-hand");
    sleep(Duration::from_millis(1100)).await;
    assert_eq!(counting.calls(), 2);
    assert_eq!(cached(&tokens, &mut cache), "Bearer token-2");

    // Past expiry minus the leeway, a cached lookup waits like any other.
    let mut late = cache.clone();
    advance(Duration::from_secs(96)).await;
    assert!(matches!(
        tokens.lookup_cached(&mut late),
        Lookup::Pending(_)
    ));
    let auth = tokens.authorization().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer token-3");
    assert_eq!(cached(&tokens, &mut late), "Bearer token-3");

    // A rejected token refreshed by someone else: the cache follows.
    let generation = tokens.generation();
    tokens.refresh_if(generation).await.unwrap();
    assert_eq!(cached(&tokens, &mut cache), "Bearer token-4");

    // The session's end reaches a cached lookup at once.
    tokens.clear().await.unwrap();
    assert!(!matches!(
        tokens.lookup_cached(&mut cache),
        Lookup::Ready(_)
    ));
    assert_eq!(counting.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_cache_filled_by_one_manager_is_not_read_for_another() {
    let a = TokenManager::builder(Counting::new(HOUR, Duration::ZERO).source())
        .initial(TokenSet::bearer("from-a").with_expires_in(HOUR))
        .build();
    let b = TokenManager::builder(Counting::new(HOUR, Duration::ZERO).source())
        .initial(TokenSet::bearer("from-b").with_expires_in(HOUR))
        .build();
    let mut cache = LookupCache::new();
    assert_eq!(cached(&a, &mut cache), "Bearer from-a");
    assert_eq!(cached(&a, &mut cache), "Bearer from-a");
    assert_eq!(cached(&b, &mut cache), "Bearer from-b");
    assert_eq!(cached(&a, &mut cache), "Bearer from-a");
}

#[tokio::test(start_paused = true)]
async fn many_cached_lookups_make_one_refresh_per_expiry() {
    let (counting, tokens) =
        hundred_second_tokens(Duration::ZERO, Duration::from_millis(500)).await;
    let mut caches: Vec<LookupCache> = (0..50).map(|_| LookupCache::new()).collect();
    for cache in &mut caches {
        assert_eq!(cached(&tokens, cache), "Bearer token-1");
    }
    for round in 2..5u64 {
        advance(Duration::from_secs(96)).await;
        let waits: Vec<_> = caches
            .iter_mut()
            .map(|cache| match tokens.lookup_cached(cache) {
                Lookup::Pending(wait) => wait,
                other => panic!("round {round}: expected a wait past expiry, got {other:?}"),
            })
            .collect();
        for wait in waits {
            let auth = wait.await.unwrap();
            assert_eq!(
                auth.header().to_str().unwrap(),
                format!("Bearer token-{round}")
            );
        }
        for cache in &mut caches {
            assert_eq!(cached(&tokens, cache), format!("Bearer token-{round}"));
        }
        assert_eq!(counting.calls(), round);
    }
}

#[tokio::test(start_paused = true)]
async fn a_refresh_ahead_shorter_than_the_leeway_still_goes_stale_at_the_leeway() {
    let (_, tokens) = hundred_second_tokens(Duration::ZERO, Duration::from_secs(1)).await;
    // Looked up while fresh, so the phase timer is armed...
    assert_eq!(header(&tokens), "Bearer token-1");
    // ...and must wake at the leeway (95 s), not at the window (100 s).
    advance(Duration::from_secs(97)).await;
    assert!(matches!(tokens.lookup(), Lookup::Pending(_)));
}
