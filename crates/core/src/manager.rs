//! The refresh coordinator: one shared credential, one refresh at a time.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
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
    store::{RefreshLease, RefreshTurn},
};

/// Keeps one credential fresh and makes every caller share each refresh.
///
/// A `TokenManager` is cheap to clone (an [`Arc`] inside): create one per
/// (token endpoint, client, audience) and hand clones to every client that
/// needs that credential.
///
/// - Reading the current credential ([`lookup`](Self::lookup)) is one atomic
///   load: no lock, no await, no allocation. A client that keeps a
///   [`LookupCache`] ([`lookup_cached`](Self::lookup_cached), as the tower
///   layer does per service) reads one flag of the credential it used last
///   and touches no state shared with other clients while that stays fresh.
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

/// The longest duration any setting takes; larger values are clamped so
/// that instant arithmetic cannot overflow.
const MAX_SETTING: Duration = Duration::from_secs(365 * 24 * 3600);

/// Timing and retry settings. Every field has a default argued in the docs of
/// the matching [`TokenManagerBuilder`] method.
#[derive(Clone, Debug)]
struct Config {
    refresh_ahead: Duration,
    expiry_leeway: Duration,
    refresh_jitter: f64,
    min_refresh_interval: Duration,
    background_retry: Duration,
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
            background_retry: Duration::from_secs(30),
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
        self.config.refresh_ahead = window.min(MAX_SETTING);
        self
    }

    /// How long before its expiry a token counts as expired, so that it does
    /// not die in flight or on a resource server whose clock runs ahead.
    /// Default 10 s (golang.org/x/oauth2's `expiryDelta`), capped at a tenth
    /// of each token's lifetime. Past this point callers wait for a refresh.
    pub fn expiry_leeway(mut self, leeway: Duration) -> Self {
        self.config.expiry_leeway = leeway.min(MAX_SETTING);
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
        self.config.min_refresh_interval = interval.min(MAX_SETTING);
        self
    }

    /// After a background refresh (inside the refresh-ahead window) fails,
    /// how long the still-valid token is served before another background
    /// refresh is tried. Default 30 s (Azure SDKs wait at least as long), so
    /// a down authorization server sees no storm from the refresh-ahead
    /// path. Past expiry minus the leeway, callers refresh as usual.
    pub fn background_retry(mut self, interval: Duration) -> Self {
        self.config.background_retry = interval.min(MAX_SETTING);
        self
    }

    /// How long one attempt waits for the token source, or for the store.
    /// Default 10 s.
    ///
    /// A token-source call that outlasts it is not abandoned: the server may
    /// already be carrying it out (rotating the refresh token), so the next
    /// attempt for the same token set joins that call instead of sending the
    /// refresh token again.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.config.attempt_timeout = timeout.min(MAX_SETTING);
        self
    }

    /// How long one refresh may take, retries included, before its waiters
    /// get an error. Default 20 s.
    pub fn refresh_deadline(mut self, deadline: Duration) -> Self {
        self.config.refresh_deadline = deadline.min(MAX_SETTING);
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
        self.config.backoff.base = base.min(MAX_SETTING);
        self.config.backoff.max = max.max(base).min(MAX_SETTING);
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
        let jitter = Jitter::new();
        let status = match self.initial {
            None => Status::Empty,
            Some(tokens) => {
                match Credential::build(tokens, &self.config, Instant::now(), jitter.next()) {
                    Ok(c) => Status::Ready(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "initial token set unusable; starting empty");
                        Status::Empty
                    }
                }
            }
        };
        TokenManager {
            inner: Arc::new(Inner {
                id: NEXT_MANAGER_ID.fetch_add(1, Ordering::Relaxed),
                state: ArcSwap::from_pointee(State {
                    generation: 1,
                    status,
                }),
                flight: Mutex::new(Flight::default()),
                commit: tokio::sync::Mutex::new(()),
                refreshing: AtomicBool::new(false),
                source: self.source,
                store: self.store.unwrap_or_else(|| Box::new(MemoryStore::new())),
                config: self.config,
                counters: Counters::default(),
                hook: self.hook,
                jitter,
            }),
        }
    }
}

/// Numbers managers, so that a [`LookupCache`] filled by one is never read
/// for another.
static NEXT_MANAGER_ID: AtomicU64 = AtomicU64::new(1);

struct Inner {
    id: u64,
    state: ArcSwap<State>,
    /// Cold path only: starting and finishing refreshes, and every write of
    /// `state`. Never held across an await.
    flight: Mutex<Flight>,
    /// Serializes every change of the token set with its store write (a
    /// refresh's save and publish, `set`, `clear`, session expiry), so the
    /// store never ends up holding a set that memory has moved past.
    commit: tokio::sync::Mutex<()>,
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
    /// The refresh in flight. It always belongs to the current generation:
    /// publishing its result, `set` and `clear` all empty this slot in the
    /// same critical section as they change the state.
    running: Option<Running>,
    /// A source call that timed out but was not abandoned (see `fetch`).
    pending: Option<PendingFetch>,
    next_id: u64,
    last_started: Option<Instant>,
}

struct Running {
    id: u64,
    outcome: Shared<oneshot::Receiver<Outcome>>,
}

/// A token source call, running in a task of its own.
type SourceCall = tokio::task::JoinHandle<Result<TokenSet, Error>>;

/// A token source call that outlasted its attempt, still running, with the
/// shared store's lease it was made under, if any.
struct PendingFetch {
    from: u64,
    call: SourceCall,
    lease: Option<Box<dyn RefreshLease>>,
}

impl Flight {
    /// Forgets the running flight (its task goes on, but nobody new joins it).
    fn detach(&mut self, id: Option<u64>, refreshing: &AtomicBool) {
        if id.is_none() || self.running.as_ref().map(|r| r.id) == id {
            self.running = None;
            refreshing.store(false, Ordering::Release);
        }
    }
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
    /// Where the credential is in its life, kept current by a timer task so
    /// that the hot path reads a flag instead of the clock. See [`Phase`].
    phase: AtomicU8,
}

/// The life of a credential, in the order it goes through it.
///
/// `UNTIMED` means no timer watches the phase yet (the credential was built
/// outside a runtime, or nobody has looked it up): the clock decides, and
/// the first lookup on a runtime starts the timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Phase {
    Untimed = 0,
    Fresh = 1,
    /// Inside the refresh-ahead window: still sent, refreshed in background.
    Ahead = 2,
    /// Past expiry minus the leeway: callers wait for a refresh.
    Stale = 3,
    /// Replaced by a newer state (a refresh, `set`, `clear`): whoever still
    /// holds this one (a [`LookupCache`]) must look again. Final: every other
    /// change of the flag is a `fetch_max` or an exchange from a lower value.
    Retired = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Fresh,
            2 => Phase::Ahead,
            3 => Phase::Stale,
            4 => Phase::Retired,
            _ => Phase::Untimed,
        }
    }
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
        // A token of unknown lifetime is fresh until a server rejects it.
        let phase = if stale_at.is_none() {
            Phase::Fresh
        } else {
            Phase::Untimed
        };
        Ok(Credential {
            header,
            tokens,
            refresh_at,
            stale_at,
            phase: AtomicU8::new(phase as u8),
        })
    }

    fn is_stale(&self, now: Instant) -> bool {
        self.stale_at.is_some_and(|t| now >= t)
    }

    /// The phase by the clock.
    fn phase_at(&self, now: Instant) -> Phase {
        if self.is_stale(now) {
            Phase::Stale
        } else if self.refresh_at.is_some_and(|t| now >= t) {
            Phase::Ahead
        } else {
            Phase::Fresh
        }
    }

    /// The next instant at which the phase changes, if any.
    fn next_change(&self, phase: Phase) -> Option<Instant> {
        match phase {
            // The window may open after the leeway starts (a refresh-ahead
            // shorter than the leeway): then the next change is to stale.
            Phase::Untimed | Phase::Fresh => match (self.refresh_at, self.stale_at) {
                (Some(ahead), Some(stale)) => Some(ahead.min(stale)),
                (ahead, stale) => ahead.or(stale),
            },
            Phase::Ahead => self.stale_at,
            Phase::Stale | Phase::Retired => None,
        }
    }
}

/// Reads the phase of the credential in `state`, starting the timer that
/// keeps it current if none does yet.
#[cold]
fn arm(state: &Arc<State>, cred: &Credential) -> Phase {
    let phase = cred.phase_at(Instant::now());
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        // Exactly one caller wins the exchange and starts the timer.
        if cred
            .phase
            .compare_exchange(
                Phase::Untimed as u8,
                phase as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
            && phase != Phase::Stale
        {
            handle.spawn(phase_timer(Disarm(Arc::downgrade(state))));
        }
    }
    phase
}

/// Moves a credential's phase forward at its deadlines; ends when the
/// credential is replaced (the state is dropped) or stale.
async fn phase_timer(mut disarm: Disarm) {
    let state = disarm.0.clone();
    phase_steps(&state).await;
    disarm.0 = Weak::new();
}

/// Made before the phase timer is spawned and moved into it: if the task is
/// dropped before the credential goes stale (its runtime shut down, even
/// before its first poll), the next lookup must read the clock and arm a new
/// timer.
struct Disarm(Weak<State>);

impl Drop for Disarm {
    fn drop(&mut self) {
        let Some(state) = self.0.upgrade() else {
            return;
        };
        let Status::Ready(cred) = &state.status else {
            return;
        };
        for phase in [Phase::Fresh, Phase::Ahead] {
            let _ = cred.phase.compare_exchange(
                phase as u8,
                Phase::Untimed as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }
}

async fn phase_steps(state: &Weak<State>) {
    loop {
        let next = {
            let Some(state) = state.upgrade() else { return };
            let Status::Ready(cred) = &state.status else {
                return;
            };
            let phase = Phase::from_u8(cred.phase.load(Ordering::Acquire));
            match cred.next_change(phase) {
                Some(at) => at,
                None => return,
            }
        };
        tokio::time::sleep_until(next).await;
        let Some(state) = state.upgrade() else { return };
        let Status::Ready(cred) = &state.status else {
            return;
        };
        cred.phase
            .fetch_max(cred.phase_at(Instant::now()) as u8, Ordering::AcqRel);
    }
}

/// After a failed background refresh: serve the still-valid credential as
/// fresh again until `until`, then let the next request retry.
async fn snooze(wake: Wake, until: Instant) {
    tokio::time::sleep_until(until).await;
    drop(wake);
}

/// Puts a snoozed credential back inside its refresh-ahead window when
/// dropped: when the snooze ends, or when its task is dropped early.
struct Wake(Weak<State>);

impl Drop for Wake {
    fn drop(&mut self) {
        let Some(state) = self.0.upgrade() else {
            return;
        };
        if let Status::Ready(cred) = &state.status {
            cred.phase.fetch_max(Phase::Ahead as u8, Ordering::AcqRel);
        }
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

/// What [`TokenManager::lookup_cached`] remembers between lookups: the last
/// credential it found.
///
/// Keep one per client (a tower service holds one in each clone) and pass it
/// to every lookup. It holds a reference to one token set, so an old set
/// stays in memory until the next lookup through this cache replaces it, or
/// the cache is dropped.
#[derive(Clone, Default)]
pub struct LookupCache {
    /// The manager that filled it (`Inner::id`; 0: none).
    manager: u64,
    state: Option<Arc<State>>,
}

impl LookupCache {
    /// An empty cache: the first lookup fills it.
    pub fn new() -> Self {
        LookupCache::default()
    }
}

impl fmt::Debug for LookupCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupCache")
            .field("generation", &self.state.as_ref().map(|s| s.generation))
            .finish()
    }
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
    /// (when none runs). An atomic load of the state, a load of its phase
    /// flag, and a reference-count increment for the header value: no lock,
    /// no clock read (a timer task moves the phase at its deadlines), no
    /// allocation.
    pub fn lookup(&self) -> Lookup {
        self.lookup_in(&self.inner.state.load())
    }

    /// [`lookup`](Self::lookup) for a caller that keeps a [`LookupCache`]
    /// (one per client, say): while the credential it remembers stays fresh,
    /// the lookup reads one flag of that credential and clones its header,
    /// without touching the manager's shared state. When the credential is
    /// replaced, enters its refresh-ahead window or goes stale, the flag
    /// says so and this looks the state up again.
    #[inline]
    pub fn lookup_cached(&self, cache: &mut LookupCache) -> Lookup {
        if cache.manager == self.inner.id
            && let Some(state) = &cache.state
            && let Status::Ready(cred) = &state.status
            && cred.phase.load(Ordering::Acquire) == Phase::Fresh as u8
        {
            return Lookup::Ready(Authorization {
                header: cred.header.clone(),
                generation: state.generation,
            });
        }
        self.lookup_and_remember(cache)
    }

    #[cold]
    fn lookup_and_remember(&self, cache: &mut LookupCache) -> Lookup {
        let state = self.inner.state.load_full();
        let found = self.lookup_in(&state);
        cache.manager = self.inner.id;
        cache.state = Some(state);
        found
    }

    fn lookup_in(&self, state: &Arc<State>) -> Lookup {
        match &state.status {
            Status::Ready(cred) => {
                let phase = match Phase::from_u8(cred.phase.load(Ordering::Acquire)) {
                    Phase::Untimed => arm(state, cred),
                    phase => phase,
                };
                if phase == Phase::Stale {
                    return Lookup::Pending(self.refresh_if(state.generation));
                }
                if phase == Phase::Ahead && !self.inner.refreshing.load(Ordering::Acquire) {
                    tracing::debug!(
                        generation = state.generation,
                        "token expiring soon; refreshing in background"
                    );
                    drop(self.refresh_if(state.generation));
                }
                // Fresh, or ahead; or retired since it was loaded a moment
                // ago, which is as if it had been loaded a moment earlier.
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
                state: RefreshState::Waiting(running.outcome.clone()),
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
        flight.next_id += 1;
        let id = flight.next_id;
        flight.running = Some(Running {
            id,
            outcome: shared.clone(),
        });
        inner.refreshing.store(true, Ordering::Release);
        drop(flight);
        // The guard is made here, not in the task: a task dropped before its
        // first poll (its runtime shut down) runs none of its body.
        let guard = FlightGuard {
            inner: Arc::clone(inner),
            id,
        };
        handle.spawn(run_flight(guard, generation, start_at, tx));
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
        let inner = &self.inner;
        let cred = Credential::build(tokens, &inner.config, Instant::now(), inner.jitter.next())?;
        let _commit = inner.commit.lock().await;
        let saved = inner.store_op("save", inner.store.save(&cred.tokens)).await;
        inner.replace(Status::Ready(cred));
        saved
    }

    /// Forgets the token set here and in the store. The next request waits
    /// for the source to produce a new set.
    ///
    /// # Errors
    ///
    /// [`Store`](ErrorKind::Store) if the store could not be cleared.
    pub async fn clear(&self) -> Result<(), Error> {
        let inner = &self.inner;
        let _commit = inner.commit.lock().await;
        let cleared = inner.store_op("clear", inner.store.clear()).await;
        inner.replace(Status::Empty);
        cleared
    }

    /// Loads the token set from the store, as at start-up: a stored set
    /// replaces the one in memory. Returns whether one was found.
    ///
    /// # Errors
    ///
    /// The store's error ([`Store`](ErrorKind::Store)): an unreadable or
    /// corrupt store is reported, never taken for an empty one, and nothing
    /// in it is changed.
    pub async fn load(&self) -> Result<bool, Error> {
        let inner = &self.inner;
        let _commit = inner.commit.lock().await;
        let Some(tokens) = inner.store_op("load", inner.store.load()).await? else {
            return Ok(false);
        };
        let cred = Credential::build(tokens, &inner.config, Instant::now(), inner.jitter.next())?;
        inner.replace(Status::Ready(cred));
        Ok(true)
    }

    /// Ends the session on purpose (a logout): forgets the set here and in
    /// the store, runs the `on_session_expired` hook, and fails every
    /// request with [`SessionExpired`](ErrorKind::SessionExpired) until
    /// [`set`](Self::set) is called. Revoke the tokens at the server first
    /// if it supports that (RFC 7009).
    ///
    /// # Errors
    ///
    /// [`Store`](ErrorKind::Store) if the store could not be cleared; the
    /// session is over anyway.
    pub async fn end_session(&self) -> Result<(), Error> {
        let inner = &self.inner;
        let cleared = {
            let _commit = inner.commit.lock().await;
            let cleared = inner.store_op("clear", inner.store.clear()).await;
            inner.replace(Status::SessionExpired);
            cleared
        };
        inner
            .counters
            .sessions_expired
            .fetch_add(1, Ordering::Relaxed);
        inner.run_hook();
        cleared
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
    /// Makes `state` current and retires the one it replaces, so that
    /// [`LookupCache`]s holding that one look again. Called with the flight
    /// lock held.
    fn swap_state(&self, state: Arc<State>) {
        let old = self.state.swap(state);
        if let Status::Ready(cred) = &old.status {
            cred.phase.fetch_max(Phase::Retired as u8, Ordering::AcqRel);
        }
    }

    fn lock_flight(&self) -> MutexGuard<'_, Flight> {
        // Nothing panics while holding this lock, and the data stays whole
        // if something ever did.
        self.flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes `status` as the next generation, whatever it was; a running
    /// refresh is detached (its result will not be published).
    fn replace(&self, status: Status) -> u64 {
        let mut flight = self.lock_flight();
        let generation = self.state.load().generation + 1;
        self.swap_state(Arc::new(State { generation, status }));
        flight.detach(None, &self.refreshing);
        generation
    }

    /// Publishes `status` as the successor of `from` and ends flight `id`,
    /// unless something else (a `set`, a `clear`) replaced `from` meanwhile:
    /// then that wins and its outcome is returned.
    fn publish(&self, id: u64, from: u64, status: Status) -> Outcome {
        let mut flight = self.lock_flight();
        let current = self.state.load();
        if current.generation != from {
            return current.outcome();
        }
        let state = Arc::new(State {
            generation: from + 1,
            status,
        });
        let outcome = state.outcome();
        self.swap_state(state);
        // In the same critical section: from now on a caller that sees the
        // new generation cannot join this (finished) flight.
        flight.detach(Some(id), &self.refreshing);
        outcome
    }

    fn run_hook(&self) {
        if let Some(hook) = &self.hook {
            // The hook is the application's code: a panic there must not
            // take the coordinator down with it.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook)).is_err() {
                tracing::error!("the on_session_expired hook panicked");
            }
        }
    }

    /// A store call, bounded by the attempt timeout and counted on failure.
    async fn store_op<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let result = match tokio::time::timeout(self.config.attempt_timeout, op).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Store,
                format!("token store {what} timed out"),
            )),
        };
        if let Err(e) = &result {
            self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "token store {what} failed");
        }
        result
    }

    /// Runs one refresh to its end; the flag says whether it ended the session.
    async fn refresh(self: &Arc<Self>, id: u64, from: u64) -> (Outcome, bool) {
        let deadline = Instant::now() + self.config.refresh_deadline;
        let mut attempt = 1;
        loop {
            self.counters.attempts.fetch_add(1, Ordering::Relaxed);
            let err = match self.attempt(id, from).await {
                Ok(outcome) => return (outcome, false),
                Err(err) => err,
            };
            if err.is_session_expired() {
                return self.expire(id, from, err).await;
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
                let err = if err.kind().is_retryable() {
                    let attempts = if attempt == 1 { "attempt" } else { "attempts" };
                    Error::transient(format!("{attempt} {attempts} failed; last: {err}"))
                        .with_source(err)
                } else {
                    err
                };
                return (Err(err), false);
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One attempt: adopt a newer stored set, or fetch, validate, save, publish.
    async fn attempt(self: &Arc<Self>, id: u64, from: u64) -> Result<Outcome, Error> {
        let state = self.state.load_full();
        if state.generation != from {
            return Ok(state.outcome());
        }
        let current = match &state.status {
            Status::Ready(cred) => Some(&cred.tokens),
            _ => None,
        };
        // A token request of an earlier attempt still in flight is joined
        // before anything else: nothing may send its refresh token again.
        let pending = self.lock_flight().pending.take();
        match pending {
            Some(p) if p.from == from => {
                tracing::debug!(generation = from, "joining a token request still in flight");
                return self.finish(id, from, p.call, p.lease).await;
            }
            // A call for an older generation is left to finish unheard: its
            // result belongs to a set that was replaced. (Its lease, if any,
            // expires.)
            _ => {}
        }
        // A store that cannot be read fails the attempt: refreshing anyway
        // could present a refresh token another process already rotated,
        // and a later save would overwrite what the store really holds.
        if let Some(stored) = self.store_op("load", self.store.load()).await? {
            if is_newer(&stored, current) {
                if let Some(outcome) = self.adopt(id, from, stored).await {
                    return Ok(outcome);
                }
            }
        }
        match self.store_op("lock", self.store.begin_refresh()).await? {
            RefreshTurn::Uncoordinated => {
                let call = self.call_source(current);
                self.finish(id, from, call, None).await
            }
            RefreshTurn::Leader(lease) => {
                // Another process may have finished just before we locked.
                let stored = match self.store_op("load", self.store.load()).await {
                    Ok(stored) => stored,
                    Err(e) => {
                        let _ = self.store_op("unlock", lease.release()).await;
                        return Err(e);
                    }
                };
                if let Some(stored) = stored.filter(|s| is_newer(s, current)) {
                    let adopted = self.adopt(id, from, stored).await;
                    let _ = self.store_op("unlock", lease.release()).await;
                    if let Some(outcome) = adopted {
                        return Ok(outcome);
                    }
                    return Err(Error::transient("the stored token set is not usable"));
                }
                let call = self.call_source(current);
                self.finish(id, from, call, Some(lease)).await
            }
            RefreshTurn::Follower(wait) => {
                tracing::debug!(generation = from, "another process is refreshing; waiting");
                let _ = tokio::time::timeout(self.config.refresh_deadline, wait).await;
                match self.store_op("load", self.store.load()).await? {
                    Some(stored) if is_newer(&stored, current) => {
                        self.adopt(id, from, stored).await
                    }
                    _ => None,
                }
                .ok_or_else(|| Error::transient("another process's refresh did not finish"))
            }
        }
    }

    /// Calls the token source in a task of its own, so that the call is not
    /// dropped when an attempt times out (see [`finish`](Self::finish)).
    fn call_source(self: &Arc<Self>, current: Option<&TokenSet>) -> SourceCall {
        let inner = Arc::clone(self);
        let current = current.cloned();
        tokio::spawn(async move { inner.source.fetch(current.as_ref()).await })
    }

    /// Waits (at most the attempt timeout) for a token source call, checks
    /// what it brought, saves (through the lease, if this process holds the
    /// shared lock) and publishes it.
    ///
    /// A call that outlasts the attempt is not dropped: the server may
    /// already be carrying it out, rotating the refresh token, and a second
    /// request with the old one would be reuse. It is kept, with the lease,
    /// for the next attempt to join; the shared lock stays taken meanwhile
    /// (until it expires), so no other process sends the same refresh token.
    async fn finish(
        &self,
        id: u64,
        from: u64,
        mut call: SourceCall,
        lease: Option<Box<dyn RefreshLease>>,
    ) -> Result<Outcome, Error> {
        let result = match tokio::time::timeout(self.config.attempt_timeout, &mut call).await {
            Err(_) => {
                self.lock_flight().pending = Some(PendingFetch { from, call, lease });
                return Err(Error::transient("token source timed out"));
            }
            Ok(Err(_)) => Err(Error::transient("token source task failed (panicked)")),
            Ok(Ok(result)) => result.and_then(|tokens| {
                let now = Instant::now();
                let cred = Credential::build(tokens, &self.config, now, self.jitter.next())?;
                if cred.is_stale(now) {
                    return Err(Error::invalid_response(
                        "token was already expired on arrival",
                    ));
                }
                Ok(cred)
            }),
        };
        let outcome = match result {
            Ok(cred) => {
                tracing::debug!("token refreshed");
                let save = match &lease {
                    Some(lease) => Save::Lease(&**lease),
                    None => Save::Store,
                };
                Ok(self.commit(id, from, cred, save).await)
            }
            Err(e) => Err(e),
        };
        if let Some(lease) = lease {
            let _ = self.store_op("unlock", lease.release()).await;
        }
        outcome
    }

    /// Takes a newer set another process stored, if it is usable.
    async fn adopt(&self, id: u64, from: u64, stored: TokenSet) -> Option<Outcome> {
        let now = Instant::now();
        let cred = Credential::build(stored, &self.config, now, self.jitter.next()).ok()?;
        if cred.is_stale(now) {
            return None;
        }
        self.counters.adopted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            generation = from + 1,
            "adopting a newer token set from the store"
        );
        Some(self.commit(id, from, cred, Save::No).await)
    }

    /// Saves (as asked) and publishes a new credential as one step, unless
    /// the state moved past `from` meanwhile: then nothing is written.
    async fn commit(&self, id: u64, from: u64, cred: Credential, save: Save<'_>) -> Outcome {
        let _commit = self.commit.lock().await;
        let current = self.state.load();
        if current.generation != from {
            return current.outcome();
        }
        drop(current);
        // Saved before anyone hears of it: a rotated refresh token must
        // survive whatever happens to the callers. A failing store does not
        // throw the new set away (that would lose the rotation for sure).
        let _ = match save {
            Save::No => Ok(()),
            Save::Store => self.store_op("save", self.store.save(&cred.tokens)).await,
            Save::Lease(lease) => self.store_op("save", lease.commit(&cred.tokens)).await,
        };
        self.publish(id, from, Status::Ready(cred))
    }

    async fn expire(&self, id: u64, from: u64, err: Error) -> (Outcome, bool) {
        let _commit = self.commit.lock().await;
        let current = self.state.load();
        if current.generation != from {
            return (current.outcome(), false);
        }
        drop(current);
        // The dead set leaves the store before the state says so, so a
        // login that follows (and waits for this lock) is not wiped.
        let _ = self.store_op("clear", self.store.clear()).await;
        // Cannot be overtaken: every writer holds the commit lock.
        let _ = self.publish(id, from, Status::SessionExpired);
        self.counters
            .sessions_expired
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %err, "session expired");
        (Err(err), true)
    }

    /// After a failed refresh: if the credential it started from is still in
    /// use and inside the refresh-ahead window, serve it as fresh again for
    /// a while instead of retrying on every request.
    fn snooze_background(&self, from: u64) {
        let state = self.state.load_full();
        if state.generation != from {
            return;
        }
        let Status::Ready(cred) = &state.status else {
            return;
        };
        if cred.phase.load(Ordering::Acquire) != Phase::Ahead as u8 {
            return;
        }
        let until = Instant::now() + self.config.background_retry;
        let until = cred.stale_at.map_or(until, |stale| until.min(stale));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            if cred
                .phase
                .compare_exchange(
                    Phase::Ahead as u8,
                    Phase::Fresh as u8,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                handle.spawn(snooze(Wake(Arc::downgrade(&state)), until));
            }
        }
    }
}

/// Where a new credential is saved before it is published.
enum Save<'a> {
    /// Nowhere: it came from the store.
    No,
    /// With [`TokenStore::save`].
    Store,
    /// Through the shared store's lease.
    Lease(&'a dyn RefreshLease),
}

/// Whether `stored` should replace the in-memory set: a different access
/// token that expires later (or anything, when memory has none). A set the
/// store kept from before (say a save failed) is older, never adopted: its
/// refresh token may have been rotated away.
fn is_newer(stored: &TokenSet, current: Option<&TokenSet>) -> bool {
    let Some(current) = current else { return true };
    stored.access_token() != current.access_token()
        && match (stored.expires_at(), current.expires_at()) {
            (Some(s), Some(c)) => s > c,
            (_, None) => true,
            (None, Some(_)) => false,
        }
}

/// Runs one refresh. `guard` ends the flight however the task ends:
/// normally, by a panicking source, or dropped with its runtime (even before
/// it started). Otherwise later callers would join a flight that never ends.
async fn run_flight(
    guard: FlightGuard,
    from: u64,
    start_at: Option<Instant>,
    tx: oneshot::Sender<Outcome>,
) {
    let inner = Arc::clone(&guard.inner);
    let id = guard.id;
    if let Some(at) = start_at {
        tokio::time::sleep_until(at).await;
    }
    inner.counters.started.fetch_add(1, Ordering::Relaxed);
    let (outcome, expired) = inner.refresh(id, from).await;
    match &outcome {
        Ok(_) => inner.counters.succeeded.fetch_add(1, Ordering::Relaxed),
        Err(_) => {
            inner.snooze_background(from);
            inner.counters.failed.fetch_add(1, Ordering::Relaxed)
        }
    };
    drop(guard);
    // Nobody waiting is fine: the state is published already.
    let _ = tx.send(outcome);
    if expired {
        inner.run_hook();
    }
}

struct FlightGuard {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.inner
            .lock_flight()
            .detach(Some(self.id), &self.inner.refreshing);
    }
}
