//! The refresh coordinator: one shared credential, one refresh at a time.
//!
//! How the parts fit, each in its own module with its invariants at the top:
//!
//! - [`config`]: the settings and the builder.
//! - [`credential`]: the published state and the phase flag of its
//!   credential.
//! - [`lookup`]: the hot path ([`TokenManager::lookup`], [`LookupCache`]).
//! - here: the manager and the public methods that change the set.
//! - [`driver`]: the one task per manager that moves the phase flag.
//! - [`flight`]: the one refresh task per manager and its waiters.
//! - [`refresh`]: what that task does: attempts, the store's turn, the
//!   token request.
//! - [`commit`]: saving and publishing every change of the set.
//!
//! Invariants of the whole:
//! - The hot path (a fresh credential) takes no lock, reads no clock and
//!   allocates nothing: it reads the phase flag.
//! - At most two tasks per manager at any time: its driver and its refresh.
//! - Without a runtime with timers every method answers
//!   [`NoRuntime`](crate::ErrorKind::NoRuntime); nothing panics.

mod commit;
mod config;
mod credential;
mod driver;
mod flight;
mod lookup;
mod refresh;
mod watch;

use std::{
    fmt,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
};

use arc_swap::ArcSwap;
use tokio::time::Instant;

use self::{
    commit::Overwrite,
    config::Config,
    credential::{Credential, State, Status},
    driver::Driver,
    flight::{Flight, Outcome},
    refresh::far,
};
pub use self::{
    config::{MAX_SETTING, Rotation, Scheme, TokenManagerBuilder},
    credential::Authorization,
    driver::check_runtime,
    flight::RefreshFuture,
    lookup::{Lookup, LookupCache},
    watch::{SessionState, SessionWatch},
};
use crate::{
    EndReason, Error, RefreshLease, TokenSet, TokenSource, TokenStore,
    backoff::Jitter,
    stats::{Counters, Stats},
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
/// - At most one refresh runs at a time, in a task of its own: it finishes
///   even when every caller that waited for it is dropped. It fetches,
///   checks, saves to the [`TokenStore`] and publishes the new set itself,
///   before any waiter hears of it. A new refresh token is never dropped:
///   not when the access token beside it is unusable, not when a
///   [`set`](Self::set) overtook the refresh (see
///   [`Rotation`] for a request that got no answer at all).
/// - Every wait is bounded: a token request by the
///   [`attempt_timeout`](TokenManagerBuilder::attempt_timeout), a refresh
///   by the [`refresh_deadline`](TokenManagerBuilder::refresh_deadline).
/// - Inside the refresh-ahead window the old token is still handed out while
///   one background refresh runs; past expiry minus a leeway callers wait.
/// - A rejected token of generation *g* is refreshed only if *g* is still
///   current ([`refresh_if`](Self::refresh_if)); otherwise the newer token is
///   returned at once.
/// - A terminal failure (`invalid_grant`, no refresh token, or a refresh
///   token that may have been spent without an answer) ends the session:
///   the hook set with
///   [`on_session_expired`](TokenManagerBuilder::on_session_expired) runs
///   once and every call fails fast until [`set`](Self::set) is called.
/// - A transient failure is retried with exponential backoff and full
///   jitter, within a bounded number of attempts and the deadline; then
///   every waiter gets a [`Transient`](crate::ErrorKind::Transient) error and the
///   next call may start a new refresh (no sooner than
///   [`min_refresh_interval`](TokenManagerBuilder::min_refresh_interval)
///   after the last one started, so a failing server sees no storm).
///
/// # Runtime
///
/// Refreshes, store calls and the timer that keeps the phase flag current
/// run on the tokio runtime of the caller, which must have its time driver
/// (`enable_time()` or `enable_all()`). Without one, lookups of a fresh
/// credential still work (they read the clock), and everything that would
/// need a task or a timer answers [`NoRuntime`](crate::ErrorKind::NoRuntime).
/// At most two tasks run per manager: one refresh and one timer. Time is
/// read from tokio's clock, so tests can pause and advance it.
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

type Hook = Box<dyn Fn() + Send + Sync + 'static>;

/// Numbers managers, so that a [`LookupCache`] filled by one is never read
/// for another.
static NEXT_MANAGER_ID: AtomicU64 = AtomicU64::new(1);

fn next_manager_id() -> u64 {
    NEXT_MANAGER_ID.fetch_add(1, Ordering::Relaxed)
}

/// What the managers built from one builder share: the source, the
/// settings and the counters. A lone manager has its own; the sessions of a
/// [`Sessions`](crate::Sessions) registry share one, so that a session
/// costs only its own state.
pub(crate) struct Common {
    source: Box<dyn TokenSource>,
    pub(crate) counters: Counters,
    config: Config,
    jitter: Jitter,
    /// Whether each manager runs its own phase driver (a task). The
    /// sessions of a registry do not: their lookups read the clock, so that
    /// no task lives per session.
    timed: bool,
    /// A registry's bound on refresh attempts running at once, across its
    /// sessions (a lone manager runs one at a time anyway).
    permits: Option<tokio::sync::Semaphore>,
}

struct Inner {
    id: u64,
    state: ArcSwap<State>,
    /// Cold path only: starting and ending refreshes. Never held across an
    /// await.
    flight: Mutex<Flight>,
    /// Serializes every change of the token set with its store write.
    /// Taken after the store's lock, never before (`commit.rs`).
    commit: tokio::sync::Mutex<()>,
    /// The lease of the store's lock while this manager's refresh holds it:
    /// `set`, `clear` and `end_session` write through it. Withdrawn with
    /// the commit lock held, before the lease is released.
    lease: Mutex<Option<Arc<dyn RefreshLease>>>,
    /// Woken when `lease` is filled, so that a write waiting for the
    /// store's lock writes through this manager's own lease instead.
    lease_taken: tokio::sync::Notify,
    /// A hint for the refresh-ahead path, so requests in the window skip the lock.
    refreshing: AtomicBool,
    driver: Driver,
    /// What the last refresh answer showed about rotation (`refresh.rs`).
    rotation_seen: AtomicU8,
    store: Box<dyn TokenStore>,
    hook: Option<Hook>,
    /// The state watchers follow; made by the first `watch` (`watch.rs`).
    watch: std::sync::OnceLock<tokio::sync::watch::Sender<SessionState>>,
    common: Arc<Common>,
}

impl Common {
    /// The credential of `tokens` as of `now`, under these settings (its
    /// refresh-ahead point drawn with the shared jitter).
    fn credential(&self, tokens: TokenSet, now: Instant) -> Result<Credential, Error> {
        Credential::build(tokens, &self.config, now, self.jitter.next())
    }
}

impl Inner {
    fn lock_lease(&self) -> MutexGuard<'_, Option<Arc<dyn RefreshLease>>> {
        // Only an `Option` is written under it: whole even if poisoned.
        self.lease.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_flight(&self) -> MutexGuard<'_, Flight> {
        // Nothing panics while holding this lock, and the data stays whole
        // if something ever did.
        self.flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What a caller gets from `state` without a refresh: a usable
    /// credential or the session's end. `None`: a refresh is needed.
    fn settled(&self, state: &State) -> Option<Outcome> {
        match &state.status {
            Status::Ready(cred) if cred.is_usable() => Some(state.outcome()),
            Status::SessionExpired(_) => Some(state.outcome()),
            _ => None,
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

    /// Replaces the token set (after a login, say), saves it to the store,
    /// and ends a "session expired" state. A refresh in flight finishes, but
    /// its result does not replace this set (if this set still holds the
    /// refresh token that refresh spent, it gets the new one).
    ///
    /// With a store that processes share, the save takes the store's refresh
    /// lock as a refresh does (see [`TokenStore`], "Writes outside a
    /// refresh"): while this manager's own refresh holds it, the set is
    /// saved through that refresh's hold at once; while another process's
    /// refresh holds it, the save waits for that refresh to end (within the
    /// [`attempt_timeout`](TokenManagerBuilder::attempt_timeout)), so that
    /// the new login lands after that refresh's answer, never inside it.
    ///
    /// # Errors
    ///
    /// [`InvalidResponse`](crate::ErrorKind::InvalidResponse) if the access token
    /// cannot be a header value; [`Store`](crate::ErrorKind::Store) if saving failed
    /// or the store's lock was not free in time (the set is in use anyway);
    /// [`NoRuntime`](crate::ErrorKind::NoRuntime).
    pub async fn set(&self, tokens: TokenSet) -> Result<(), Error> {
        driver::runtime()?;
        let inner = &self.inner;
        let cred = inner.common.credential(tokens, Instant::now())?;
        inner
            .overwrite(
                |_| (Overwrite::Save(cred.tokens.clone()), Status::Ready(cred)),
                self.far(),
            )
            .await
    }

    /// Forgets the token set here and in the store. The next request waits
    /// for the source to produce a new set. The store is cleared under its
    /// refresh lock, as [`set`](Self::set) saves (through
    /// [`RefreshLease::clear`] when the store has a lock).
    ///
    /// # Errors
    ///
    /// [`Store`](crate::ErrorKind::Store) if the store could not be cleared
    /// or its lock was not free in time (the set is forgotten here anyway);
    /// [`NoRuntime`](crate::ErrorKind::NoRuntime).
    pub async fn clear(&self) -> Result<(), Error> {
        driver::runtime()?;
        self.inner
            .overwrite(|_| (Overwrite::Clear, Status::Empty), self.far())
            .await
    }

    /// Loads the token set from the store, as at start-up: a stored set
    /// replaces the one in memory. Returns whether a usable one was found.
    /// A tombstone (the session ended in another process sharing the store,
    /// see [`TokenStore`]) ends the session here too, unless its access
    /// token may still serve until it expires.
    ///
    /// # Errors
    ///
    /// The store's error ([`Store`](crate::ErrorKind::Store)): an unreadable or
    /// corrupt store is reported, never taken for an empty one, and nothing
    /// in it is changed. [`NoRuntime`](crate::ErrorKind::NoRuntime).
    pub async fn load(&self) -> Result<bool, Error> {
        driver::runtime()?;
        let inner = &self.inner;
        let _commit = inner.commit.lock().await;
        let Some(tokens) = inner
            .store_op("load", inner.store.load(), self.far())
            .await?
        else {
            return Ok(false);
        };
        if tokens.ended().is_some() {
            // A tombstone: the session ended in another process (or an
            // earlier run). Its access token, if still good, serves on.
            let err = refresh::ended_elsewhere(&tokens);
            let now = Instant::now();
            let status = match inner.common.credential(tokens, now) {
                Ok(cred) if err.is_outcome_unknown() && !cred.is_stale(now) => {
                    Status::Ready(cred.doom(err))
                }
                _ => Status::SessionExpired(err),
            };
            let usable = matches!(status, Status::Ready(_));
            inner.replace(status);
            return Ok(usable);
        }
        let cred = inner.common.credential(tokens, Instant::now())?;
        inner.replace(Status::Ready(cred));
        Ok(true)
    }

    /// Ends the session on purpose (a logout): forgets the set here and
    /// leaves a tombstone in the store (so that every process sharing it
    /// ends the session too, see [`TokenStore`]), runs the `on_session_expired` hook, and fails every
    /// request with [`SessionExpired`](crate::ErrorKind::SessionExpired) until
    /// [`set`](Self::set) is called. Revoke the tokens at the server first
    /// if it supports that (RFC 7009). The tombstone is written under the
    /// store's refresh lock, as [`set`](Self::set) saves.
    ///
    /// # Errors
    ///
    /// [`Store`](crate::ErrorKind::Store) if the store could not be written
    /// or its lock was not free in time (the session is over anyway);
    /// [`NoRuntime`](crate::ErrorKind::NoRuntime).
    pub async fn end_session(&self) -> Result<(), Error> {
        driver::runtime()?;
        let inner = &self.inner;
        let cleared = inner
            .overwrite(
                |state| {
                    // A tombstone, not an empty store: the other processes
                    // sharing the store must not go on with the refresh
                    // token they hold.
                    let write = match state.tokens() {
                        Some(tokens) => Overwrite::Save(tokens.tombstone(EndReason::Logout)),
                        None => Overwrite::Clear,
                    };
                    (write, Status::SessionExpired(session_ended()))
                },
                self.far(),
            )
            .await;
        inner
            .common
            .counters
            .sessions_expired
            .fetch_add(1, Ordering::Relaxed);
        crate::metrics::logged_out();
        inner.run_hook();
        cleared
    }

    fn far(&self) -> Instant {
        far(self.inner.common.config.attempt_timeout)
    }

    /// A copy of the current token set, if there is one.
    pub fn current(&self) -> Option<TokenSet> {
        self.inner.state.load().tokens().cloned()
    }

    /// The current generation; it grows by one with every new access token.
    pub fn generation(&self) -> u64 {
        self.inner.state.load().generation
    }

    /// Whether the session has expired (see [`ErrorKind::SessionExpired`](crate::ErrorKind::SessionExpired)).
    pub fn is_session_expired(&self) -> bool {
        matches!(self.inner.state.load().status, Status::SessionExpired(_))
    }

    /// Whether this handle is the only one (nothing else holds the
    /// manager: no clone, no refresh task, no waiter).
    pub(crate) fn is_unshared(&self) -> bool {
        Arc::strong_count(&self.inner) == 1
    }

    /// Counters since this manager was built (of every session together,
    /// for a session of a [`Sessions`](crate::Sessions) registry).
    pub fn stats(&self) -> Stats {
        self.inner.common.counters.snapshot()
    }
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.load();
        let status = match state.status {
            Status::Empty => "empty",
            Status::Ready(_) => "ready",
            Status::SessionExpired(_) => "session expired",
        };
        f.debug_struct("TokenManager")
            .field("generation", &state.generation)
            .field("status", &status)
            .field("stats", &self.stats())
            .finish()
    }
}

fn session_ended() -> Error {
    Error::session_expired("the session was ended; log in again")
}
