//! The refresh coordinator: one shared credential, one refresh at a time.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use arc_swap::ArcSwap;
use futures_util::future::{FutureExt, Shared};
use http::HeaderValue;
use tokio::{sync::oneshot, time::Instant};

use crate::{
    Error, ErrorKind, MemoryStore, TokenSet, TokenSource, TokenStore,
    backoff::{Backoff, Jitter},
    stats::{Counters, Stats},
};

/// Keeps one credential fresh and makes every caller share each refresh.
///
/// A `TokenManager` is cheap to clone (an [`Arc`] inside): create one per
/// (token endpoint, client, audience) and hand clones to every client that
/// needs that credential.
///
/// - Reading the current credential ([`lookup`](Self::lookup)) is one atomic
///   load: no lock, no await, no allocation.
/// - At most one refresh runs at a time. It is spawned on the tokio runtime,
///   so it finishes even when every caller that waited for it is dropped, and
///   the new set is saved to the [`TokenStore`] before any waiter hears of it.
/// - Inside the refresh-ahead window the old token is still handed out while
///   one background refresh runs; past expiry minus a leeway callers wait.
/// - A rejected token of generation *g* is refreshed only if *g* is still
///   current ([`refresh_if`](Self::refresh_if)); otherwise the newer token is
///   returned at once.
/// - A terminal failure (`invalid_grant`, no refresh token) ends the session:
///   the hook set with [`on_session_expired`](TokenManagerBuilder::on_session_expired)
///   runs once and every call fails fast until [`set`](Self::set) is called.
/// - A transient failure is retried with exponential backoff and full jitter,
///   within a bounded number of attempts and an overall deadline; then every
///   waiter gets a [`Transient`](ErrorKind::Transient) error and the next call
///   may start a new refresh (no sooner than
///   [`min_refresh_interval`](TokenManagerBuilder::min_refresh_interval) after
///   the last one started, so a failing server sees no storm).
///
/// Time is read from tokio's clock, so tests can pause and advance it.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_token_refresh_core::{source, TokenManager, TokenSet};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let source = source::from_fn(|current: Option<TokenSet>| async move {
///     // Call your token endpoint here.
///     let n = if current.is_some() { "2" } else { "1" };
///     Ok(TokenSet::bearer(format!("token-{n}")).with_expires_in(Duration::from_secs(3600)))
/// });
/// let tokens = TokenManager::builder(source).build();
///
/// let first = tokens.authorization().await?;
/// assert_eq!(first.header().to_str()?, "Bearer token-1");
///
/// // The server said the token is no longer valid: refresh once.
/// let second = tokens.refresh_if(first.generation()).await?;
/// assert_eq!(second.header().to_str()?, "Bearer token-2");
/// // A late rejection of the old generation does not refresh again.
/// let again = tokens.refresh_if(first.generation()).await?;
/// assert_eq!(again.generation(), second.generation());
/// assert_eq!(tokens.stats().refreshes_succeeded, 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TokenManager {
    inner: Arc<Inner>,
}

/// How the `Authorization` header value is formed from a token set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheme {
    /// `<token_type> <access_token>`: `Bearer abc` for bearer tokens.
    #[default]
    FromTokenType,
    /// `<scheme> <access_token>` whatever the token type.
    Fixed(Box<str>),
    /// The access token alone, for API-key headers.
    None,
}

/// Timing and retry settings. Every field has a default argued in the docs of
/// the matching [`TokenManagerBuilder`] method.
#[derive(Clone, Debug)]
struct Config {
    refresh_ahead: Duration,
    expiry_leeway: Duration,
    refresh_jitter: f64,
    min_refresh_interval: Duration,
    attempt_timeout: Duration,
    refresh_deadline: Duration,
    backoff: Backoff,
    scheme: Scheme,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            refresh_ahead: Duration::from_secs(60),
            expiry_leeway: Duration::from_secs(10),
            refresh_jitter: 0.2,
            min_refresh_interval: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(10),
            refresh_deadline: Duration::from_secs(20),
            backoff: Backoff::default(),
            scheme: Scheme::FromTokenType,
        }
    }
}

type Hook = Box<dyn Fn() + Send + Sync + 'static>;

/// Builds a [`TokenManager`]. Start with [`TokenManager::builder`].
#[must_use]
pub struct TokenManagerBuilder {
    source: Box<dyn TokenSource>,
    store: Option<Box<dyn TokenStore>>,
    initial: Option<TokenSet>,
    config: Config,
    hook: Option<Hook>,
}

impl fmt::Debug for TokenManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManagerBuilder")
            .field("config", &self.config)
            .field("has_initial", &self.initial.is_some())
            .field("has_store", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

impl TokenManagerBuilder {
    /// Starts with this token set (the response of a login, say). It is not
    /// saved to the store; call [`TokenManager::set`] for that.
    pub fn initial(mut self, tokens: TokenSet) -> Self {
        self.initial = Some(tokens);
        self
    }

    /// Where token sets are saved and loaded. Default: [`MemoryStore`].
    pub fn store(mut self, store: impl TokenStore) -> Self {
        self.store = Some(Box::new(store));
        self
    }

    /// Runs `hook` once when the session expires (the refresh token was
    /// rejected or is missing). Keep it quick: it runs on the refresh task.
    pub fn on_session_expired(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }

    /// How long before expiry a background refresh starts while the old token
    /// is still handed out. Default 60 s (Duende's choice: golang's 10 s
    /// leaves too little time to retry a failing refresh before requests
    /// block; Azure's 5 min is sized for one-hour tokens). Capped at half of
    /// each token's lifetime, so short-lived tokens are not refreshed
    /// continuously.
    pub fn refresh_ahead(mut self, window: Duration) -> Self {
        self.config.refresh_ahead = window;
        self
    }

    /// How long before its expiry a token counts as expired, so that it does
    /// not die in flight or on a resource server whose clock runs ahead.
    /// Default 10 s (golang.org/x/oauth2's `expiryDelta`), capped at a tenth
    /// of each token's lifetime. Past this point callers wait for a refresh.
    pub fn expiry_leeway(mut self, leeway: Duration) -> Self {
        self.config.expiry_leeway = leeway;
        self
    }

    /// The share of the refresh-ahead window by which each background refresh
    /// starts earlier, at random, so a fleet does not refresh in lock-step.
    /// Default 0.2; clamped to 0..=1.
    pub fn refresh_jitter(mut self, fraction: f64) -> Self {
        self.config.refresh_jitter = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self
    }

    /// The least time between the starts of two refreshes. A resource that
    /// rejects every token, or an authorization server that is down, then
    /// sees at most one refresh per interval. Default 1 s.
    pub fn min_refresh_interval(mut self, interval: Duration) -> Self {
        self.config.min_refresh_interval = interval;
        self
    }

    /// How long one call to the token source may take. Default 10 s.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.config.attempt_timeout = timeout;
        self
    }

    /// How long one refresh may take, retries included, before its waiters
    /// get an error. Default 20 s.
    pub fn refresh_deadline(mut self, deadline: Duration) -> Self {
        self.config.refresh_deadline = deadline;
        self
    }

    /// Attempts per refresh for transient failures, the first included.
    /// Default 4; at least 1.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config.backoff.max_attempts = attempts.max(1);
        self
    }

    /// The backoff before the second attempt and the cap of any backoff;
    /// each wait is drawn at random up to `base * 2^(attempt-1)` (full
    /// jitter). Defaults 100 ms and 5 s.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.config.backoff.base = base;
        self.config.backoff.max = max.max(base);
        self
    }

    /// How the header value is formed. Default [`Scheme::FromTokenType`].
    pub fn scheme(mut self, scheme: Scheme) -> Self {
        self.config.scheme = scheme;
        self
    }

    /// Builds the manager. No network call happens here.
    ///
    /// An initial set whose access token cannot be a header value is
    /// dropped with a warning, so the first request fetches a new one.
    pub fn build(self) -> TokenManager {
        let status = match self.initial {
            None => Status::Empty,
            Some(tokens) => match Credential::build(tokens, &self.config, Instant::now(), 0.0) {
                Ok(c) => Status::Ready(c),
                Err(e) => {
                    tracing::warn!(error = %e, "initial token set unusable; starting empty");
                    Status::Empty
                }
            },
        };
        TokenManager {
            inner: Arc::new(Inner {
                state: ArcSwap::from_pointee(State {
                    generation: 1,
                    status,
                }),
                flight: Mutex::new(Flight::default()),
                refreshing: AtomicBool::new(false),
                source: self.source,
                store: self.store.unwrap_or_else(|| Box::new(MemoryStore::new())),
                config: self.config,
                counters: Counters::default(),
                hook: self.hook,
                jitter: Jitter::new(),
            }),
        }
    }
}

struct Inner {
    state: ArcSwap<State>,
    /// Cold path only: starting and finishing refreshes, and every write of `state`.
    flight: Mutex<Flight>,
    /// A hint for the refresh-ahead path, so requests in the window skip the lock.
    refreshing: AtomicBool,
    source: Box<dyn TokenSource>,
    store: Box<dyn TokenStore>,
    config: Config,
    counters: Counters,
    hook: Option<Hook>,
    jitter: Jitter,
}

#[derive(Default)]
struct Flight {
    running: Option<Shared<oneshot::Receiver<Outcome>>>,
    last_started: Option<Instant>,
}

struct State {
    generation: u64,
    status: Status,
}

enum Status {
    Empty,
    Ready(Credential),
    SessionExpired,
}

struct Credential {
    header: HeaderValue,
    tokens: TokenSet,
    refresh_at: Option<Instant>,
    stale_at: Option<Instant>,
}

impl Credential {
    fn build(tokens: TokenSet, config: &Config, now: Instant, jitter: f64) -> Result<Self, Error> {
        let header = header_value(&tokens, &config.scheme)?;
        let (refresh_at, stale_at) = match tokens.expires_at() {
            None => (None, None),
            Some(expires_at) => {
                let lifetime = expires_at.saturating_duration_since(now);
                let leeway = config.expiry_leeway.min(lifetime / 10);
                let ahead = config.refresh_ahead.min(lifetime / 2);
                let early = ahead.mul_f64(config.refresh_jitter * jitter);
                (Some(expires_at - ahead - early), Some(expires_at - leeway))
            }
        };
        Ok(Credential {
            header,
            tokens,
            refresh_at,
            stale_at,
        })
    }

    fn is_stale(&self, now: Instant) -> bool {
        self.stale_at.is_some_and(|t| now >= t)
    }
}

fn header_value(tokens: &TokenSet, scheme: &Scheme) -> Result<HeaderValue, Error> {
    let token = tokens.access_token().secret();
    let text = match scheme {
        Scheme::FromTokenType => format!("{} {token}", tokens.token_type()),
        Scheme::Fixed(s) => format!("{s} {token}"),
        Scheme::None => token.to_owned(),
    };
    let mut value = HeaderValue::try_from(text).map_err(|_| {
        Error::invalid_response(
            "access token or token type has bytes not allowed in an HTTP header",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The credential to send: a ready header value and the generation it
/// belongs to (pass that generation to [`TokenManager::refresh_if`] when the
/// server rejects it).
#[derive(Clone)]
pub struct Authorization {
    header: HeaderValue,
    generation: u64,
}

impl Authorization {
    /// The header value, marked sensitive. Cloning it does not allocate.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// Takes the header value.
    pub fn into_header(self) -> HeaderValue {
        self.header
    }

    /// The generation of the token set this header came from.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorization")
            .field("header", &"<redacted>")
            .field("generation", &self.generation)
            .finish()
    }
}

/// What [`TokenManager::lookup`] found, without waiting.
#[derive(Debug)]
pub enum Lookup {
    /// A usable credential (fresh, or inside the refresh-ahead window with a
    /// background refresh started).
    Ready(Authorization),
    /// No usable credential: this future resolves when the refresh that was
    /// joined or started ends.
    Pending(RefreshFuture),
    /// The session is over; see [`ErrorKind::SessionExpired`].
    Failed(Error),
}

type Outcome = Result<Authorization, Error>;

/// Resolves to the outcome of one refresh, shared by every waiter.
///
/// Dropping it does not cancel the refresh.
#[must_use = "the refresh runs anyway; this only reports its outcome"]
pub struct RefreshFuture {
    state: RefreshState,
}

enum RefreshState {
    Done(Option<Outcome>),
    Waiting(Shared<oneshot::Receiver<Outcome>>),
}

impl RefreshFuture {
    fn done(outcome: Outcome) -> Self {
        RefreshFuture {
            state: RefreshState::Done(Some(outcome)),
        }
    }
}

impl fmt::Debug for RefreshFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            RefreshState::Done(_) => "done",
            RefreshState::Waiting(_) => "waiting",
        };
        f.debug_struct("RefreshFuture")
            .field("state", &state)
            .finish()
    }
}

impl Future for RefreshFuture {
    type Output = Result<Authorization, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            RefreshState::Done(outcome) => Poll::Ready(outcome.take().unwrap_or_else(|| {
                Err(Error::transient("refresh future polled after completion"))
            })),
            RefreshState::Waiting(shared) => match shared.poll_unpin(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(outcome)) => Poll::Ready(outcome),
                // The task ended without an outcome: it panicked or the
                // runtime is shutting down. Waiters must not hang.
                Poll::Ready(Err(_)) => Poll::Ready(Err(Error::transient(
                    "refresh task ended without an outcome",
                ))),
            },
        }
    }
}

impl TokenManager {
    /// Starts a builder with the source of new tokens.
    pub fn builder(source: impl TokenSource) -> TokenManagerBuilder {
        TokenManagerBuilder {
            source: Box::new(source),
            store: None,
            initial: None,
            config: Config::default(),
            hook: None,
        }
    }

    /// The hot path: the credential to send now, without waiting.
    ///
    /// Inside the refresh-ahead window it also starts a background refresh
    /// (when none runs). One atomic load, one clock read, one reference-count
    /// increment for the header value; no lock and no allocation.
    pub fn lookup(&self) -> Lookup {
        let state = self.inner.state.load();
        match &state.status {
            Status::Ready(cred) => {
                let now = Instant::now();
                if cred.is_stale(now) {
                    return Lookup::Pending(self.refresh_if(state.generation));
                }
                if cred.refresh_at.is_some_and(|t| now >= t)
                    && !self.inner.refreshing.load(Ordering::Acquire)
                {
                    tracing::debug!(
                        generation = state.generation,
                        "token expiring soon; refreshing in background"
                    );
                    drop(self.refresh_if(state.generation));
                }
                Lookup::Ready(Authorization {
                    header: cred.header.clone(),
                    generation: state.generation,
                })
            }
            Status::Empty => Lookup::Pending(self.refresh_if(state.generation)),
            Status::SessionExpired => Lookup::Failed(session_expired()),
        }
    }

    /// The credential to send, waiting for a refresh when there is none usable.
    ///
    /// # Errors
    ///
    /// The refresh's error, or [`SessionExpired`](ErrorKind::SessionExpired).
    pub async fn authorization(&self) -> Result<Authorization, Error> {
        match self.lookup() {
            Lookup::Ready(auth) => Ok(auth),
            Lookup::Pending(fut) => fut.await,
            Lookup::Failed(e) => Err(e),
        }
    }

    /// Refreshes because a credential of `generation` was rejected, unless a
    /// newer generation is already current, in which case that one is
    /// returned at once. Joins a refresh already in flight.
    pub fn refresh_if(&self, generation: u64) -> RefreshFuture {
        let state = self.inner.state.load();
        if state.generation != generation {
            return RefreshFuture::done(state.outcome());
        }
        if matches!(state.status, Status::SessionExpired) {
            return RefreshFuture::done(Err(session_expired()));
        }
        drop(state);
        self.start_or_join(generation)
    }

    /// Refreshes now (joining a refresh in flight), whatever the expiry says.
    pub fn refresh(&self) -> RefreshFuture {
        self.refresh_if(self.generation())
    }

    fn start_or_join(&self, generation: u64) -> RefreshFuture {
        let inner = &self.inner;
        let mut flight = inner.lock_flight();
        if let Some(running) = &flight.running {
            return RefreshFuture {
                state: RefreshState::Waiting(running.clone()),
            };
        }
        // Re-check under the lock: a refresh may have finished since the
        // caller's load.
        let state = inner.state.load();
        if state.generation != generation {
            return RefreshFuture::done(state.outcome());
        }
        let handle = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle,
            Err(_) => {
                return RefreshFuture::done(Err(Error::new(
                    ErrorKind::NoRuntime,
                    "refreshing needs a tokio runtime",
                )));
            }
        };
        let now = Instant::now();
        let start_at = flight
            .last_started
            .map(|last| last + inner.config.min_refresh_interval)
            .filter(|t| *t > now);
        flight.last_started = Some(start_at.unwrap_or(now));
        let (tx, rx) = oneshot::channel();
        let shared = rx.shared();
        flight.running = Some(shared.clone());
        inner.refreshing.store(true, Ordering::Release);
        drop(flight);
        handle.spawn(run_flight(Arc::clone(inner), generation, start_at, tx));
        RefreshFuture {
            state: RefreshState::Waiting(shared),
        }
    }

    /// Replaces the token set (after a login, say), saves it to the store,
    /// and ends a "session expired" state. A refresh in flight finishes but
    /// its result does not replace this set.
    ///
    /// # Errors
    ///
    /// [`InvalidResponse`](ErrorKind::InvalidResponse) if the access token
    /// cannot be a header value; [`Store`](ErrorKind::Store) if saving failed
    /// (the set is in use anyway).
    pub async fn set(&self, tokens: TokenSet) -> Result<(), Error> {
        let jitter = self.inner.jitter.next();
        let cred = Credential::build(tokens, &self.inner.config, Instant::now(), jitter)?;
        let saved = self.inner.store.save(&cred.tokens).await;
        self.inner.replace(Status::Ready(cred));
        saved.inspect_err(|_| {
            self.inner
                .counters
                .store_errors
                .fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Forgets the token set here and in the store. The next request waits
    /// for the source to produce a new set.
    ///
    /// # Errors
    ///
    /// [`Store`](ErrorKind::Store) if the store could not be cleared.
    pub async fn clear(&self) -> Result<(), Error> {
        self.inner.replace(Status::Empty);
        self.inner.store.clear().await
    }

    /// A copy of the current token set, if there is one.
    pub fn current(&self) -> Option<TokenSet> {
        match &self.inner.state.load().status {
            Status::Ready(cred) => Some(cred.tokens.clone()),
            _ => None,
        }
    }

    /// The current generation; it grows by one with every change of the set.
    pub fn generation(&self) -> u64 {
        self.inner.state.load().generation
    }

    /// Whether the session has expired (see [`ErrorKind::SessionExpired`]).
    pub fn is_session_expired(&self) -> bool {
        matches!(self.inner.state.load().status, Status::SessionExpired)
    }

    /// Counters since this manager was built.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    /// Counts one replay of a rejected request; middleware built on the
    /// manager calls it so that [`Stats::replays`] covers every client.
    pub fn record_replay(&self) {
        self.inner.counters.replays.fetch_add(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.load();
        let status = match state.status {
            Status::Empty => "empty",
            Status::Ready(_) => "ready",
            Status::SessionExpired => "session expired",
        };
        f.debug_struct("TokenManager")
            .field("generation", &state.generation)
            .field("status", &status)
            .field("stats", &self.stats())
            .finish()
    }
}

fn session_expired() -> Error {
    Error::session_expired("log in again")
}

impl State {
    fn outcome(&self) -> Outcome {
        match &self.status {
            Status::Ready(cred) => Ok(Authorization {
                header: cred.header.clone(),
                generation: self.generation,
            }),
            Status::SessionExpired => Err(session_expired()),
            Status::Empty => Err(Error::transient("token set was cleared")),
        }
    }
}

impl Inner {
    fn lock_flight(&self) -> MutexGuard<'_, Flight> {
        // Nothing panics while holding this lock, and the data stays whole
        // if something ever did.
        self.flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes `status` as the next generation.
    fn replace(&self, status: Status) -> u64 {
        let _flight = self.lock_flight();
        let generation = self.state.load().generation + 1;
        self.state.store(Arc::new(State { generation, status }));
        generation
    }

    /// Publishes `status` as the successor of `from`, unless something else
    /// (a `set`, a `clear`) replaced `from` meanwhile: then that wins.
    fn publish(&self, from: u64, status: Status) -> Result<Outcome, Outcome> {
        let _flight = self.lock_flight();
        let current = self.state.load();
        if current.generation != from {
            return Err(current.outcome());
        }
        let state = Arc::new(State {
            generation: from + 1,
            status,
        });
        let outcome = state.outcome();
        self.state.store(state);
        Ok(outcome)
    }

    async fn refresh(&self, from: u64) -> Outcome {
        let deadline = Instant::now() + self.config.refresh_deadline;
        let mut attempt = 1;
        loop {
            self.counters.attempts.fetch_add(1, Ordering::Relaxed);
            let err = match self.attempt(from).await {
                Ok(outcome) => return outcome,
                Err(err) => err,
            };
            if err.is_session_expired() {
                return self.expire(from, err).await;
            }
            let backoff = self.config.backoff.delay(attempt, self.jitter.next());
            let wait = err
                .retry_after()
                .map_or(backoff, |after| after.max(backoff));
            let retry = err.kind().is_retryable()
                && attempt < self.config.backoff.max_attempts
                && Instant::now() + wait < deadline;
            tracing::warn!(
                generation = from,
                attempt,
                kind = ?err.kind(),
                error = %err,
                retry,
                "token refresh attempt failed"
            );
            if !retry {
                return Err(if err.kind().is_retryable() {
                    let attempts = if attempt == 1 { "attempt" } else { "attempts" };
                    Error::transient(format!("{attempt} {attempts} failed; last: {err}"))
                        .with_source(err)
                } else {
                    err
                });
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One attempt: adopt a newer stored set, or fetch, validate, save, publish.
    async fn attempt(&self, from: u64) -> Result<Outcome, Error> {
        let state = self.state.load_full();
        if state.generation != from {
            return Ok(state.outcome());
        }
        let current = match &state.status {
            Status::Ready(cred) => Some(&cred.tokens),
            _ => None,
        };
        let now = Instant::now();
        match self.store.load().await {
            Ok(Some(stored))
                if current.is_none_or(|c| c.access_token() != stored.access_token()) =>
            {
                match Credential::build(stored, &self.config, now, self.jitter.next()) {
                    Ok(cred) if !cred.is_stale(now) => {
                        self.counters.adopted.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            generation = from + 1,
                            "adopted a newer token set from the store"
                        );
                        return Ok(self
                            .publish(from, Status::Ready(cred))
                            .unwrap_or_else(|o| o));
                    }
                    _ => {}
                }
            }
            Ok(_) => {}
            Err(e) => {
                self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "token store load failed; refreshing anyway");
            }
        }
        let fetched = tokio::time::timeout(self.config.attempt_timeout, self.source.fetch(current))
            .await
            .map_err(|_| Error::transient("token source timed out"))??;
        let now = Instant::now();
        let cred = Credential::build(fetched, &self.config, now, self.jitter.next())?;
        if cred.is_stale(now) {
            return Err(Error::invalid_response(
                "token was already expired on arrival",
            ));
        }
        // Saved before anyone hears of it: a rotated refresh token must
        // survive whatever happens to the callers. A failing store does not
        // throw the new set away (that would lose the rotation for sure).
        if let Err(e) = self.store.save(&cred.tokens).await {
            self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "token store save failed; keeping the new set in memory");
        }
        let outcome = self
            .publish(from, Status::Ready(cred))
            .unwrap_or_else(|o| o);
        tracing::debug!(generation = from + 1, "token refreshed");
        Ok(outcome)
    }

    async fn expire(&self, from: u64, err: Error) -> Outcome {
        match self.publish(from, Status::SessionExpired) {
            Err(newer) => newer,
            Ok(_) => {
                self.counters
                    .sessions_expired
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, "session expired");
                if let Err(e) = self.store.clear().await {
                    self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "token store clear failed");
                }
                if let Some(hook) = &self.hook {
                    hook();
                }
                Err(err)
            }
        }
    }
}

async fn run_flight(
    inner: Arc<Inner>,
    from: u64,
    start_at: Option<Instant>,
    tx: oneshot::Sender<Outcome>,
) {
    if let Some(at) = start_at {
        tokio::time::sleep_until(at).await;
    }
    inner.counters.started.fetch_add(1, Ordering::Relaxed);
    // Clears the running flight however this task ends: normally, by a
    // panicking source, or by the runtime dropping it. Otherwise later
    // callers would join a flight that never ends.
    let guard = FlightGuard(&inner);
    let outcome = inner.refresh(from).await;
    match &outcome {
        Ok(_) => inner.counters.succeeded.fetch_add(1, Ordering::Relaxed),
        Err(_) => inner.counters.failed.fetch_add(1, Ordering::Relaxed),
    };
    drop(guard);
    // Nobody waiting is fine: the state is published already.
    let _ = tx.send(outcome);
}

struct FlightGuard<'a>(&'a Inner);

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut flight = self.0.lock_flight();
        flight.running = None;
        self.0.refreshing.store(false, Ordering::Release);
    }
}
