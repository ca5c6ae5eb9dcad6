//! Settings of a [`TokenManager`] and the builder that takes them.
//!
//! Invariants:
//! - Every duration is clamped to [`MAX_SETTING`], so instant arithmetic on
//!   them cannot overflow.
//! - `refresh_deadline >= attempt_timeout`: the first attempt of a refresh
//!   always gets its whole timeout.
//! - Building a manager starts no task and needs no runtime.

use std::{fmt, sync::Arc, time::Duration};

use tokio::time::Instant;

use super::{
    Common, Hook, Inner, TokenManager,
    credential::{State, Status},
    driver::Driver,
    flight::Flight,
};
use crate::{
    MemoryStore, TokenSet, TokenSource, TokenStore,
    backoff::{Backoff, Jitter},
    stats::Counters,
};

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

/// Whether the authorization server may rotate refresh tokens, which decides
/// what happens when a token request that presented one gets no answer.
///
/// Such a request (it timed out, or the connection was lost after it was
/// sent) may have been carried out: a rotating server then spent the
/// refresh token and issued one we never received. Presenting the old one
/// again is reuse, which makes such a server revoke the whole grant
/// (RFC 9700 §4.14.2). So the coordinator does not do it blindly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rotation {
    /// Assume rotation until a refresh answer shows otherwise (it kept the
    /// refresh token): an unanswered refresh then ends the session with an
    /// error whose [`is_outcome_unknown`](crate::Error::is_outcome_unknown)
    /// is true, and the `on_session_expired` hook runs. Once the server was
    /// seen keeping its refresh token, an unanswered refresh is retried like
    /// any transient failure.
    #[default]
    Detect,
    /// The server never rotates refresh tokens: an unanswered refresh is
    /// retried like any transient failure.
    Never,
    /// The server always rotates: an unanswered refresh always ends the
    /// session.
    Always,
    /// The server rotates, but accepts a refresh token it rotated away once
    /// more within this long (django-oauth-toolkit's
    /// `REFRESH_TOKEN_GRACE_PERIOD_SECONDS`, Okta's grace period, Auth0's
    /// reuse interval). After an unanswered refresh the same refresh token
    /// is presented once more, by this process or another sharing the
    /// store, if that is still within the grace of the first presentation
    /// (wall clock); otherwise, or if that retry gets no answer either, the
    /// session ends as with [`Always`](Self::Always).
    Grace(Duration),
}

/// The longest duration any setting of these crates takes: a year (365
/// days). Builders clamp larger values to it.
///
/// The bound is what makes `Instant::now() + setting`, and the sum of two
/// settings, safe from overflow on every platform: an `Instant` spans
/// centuries, tokio's timer clamps sleeps past about two years, and Redis
/// takes a year in milliseconds. A year and not less, because some settings
/// are legitimately long: a token that lives for months may be refreshed
/// days ahead ([`TokenManagerBuilder::refresh_ahead`]).
///
/// Used by [`TokenManagerBuilder`], [`Backoff`], the layer's
/// `ServerErrorRetry` and the Redis store's builder.
pub const MAX_SETTING: Duration = Duration::from_secs(365 * 24 * 3600);

/// Timing and retry settings. Every field has a default argued in the docs of
/// the matching [`TokenManagerBuilder`] method.
#[derive(Clone, Debug)]
pub(super) struct Config {
    pub(super) refresh_ahead: Duration,
    pub(super) expiry_leeway: Duration,
    pub(super) refresh_jitter: f64,
    pub(super) min_refresh_interval: Duration,
    pub(super) background_retry: Duration,
    pub(super) attempt_timeout: Duration,
    pub(super) refresh_deadline: Duration,
    pub(super) backoff: Backoff,
    pub(super) max_attempts: u32,
    pub(super) scheme: Scheme,
    pub(super) rotation: Rotation,
    pub(super) bind: Option<Binder>,
}

/// What [`TokenManagerBuilder::bind_tokens`] was given.
#[derive(Clone)]
pub(super) struct Binder(Arc<dyn Fn(TokenSet) -> TokenSet + Send + Sync + 'static>);

impl Binder {
    pub(super) fn bind(&self, tokens: TokenSet) -> TokenSet {
        (self.0)(tokens)
    }
}

impl fmt::Debug for Binder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Binder")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            refresh_ahead: Duration::from_secs(60),
            expiry_leeway: Duration::from_secs(10),
            refresh_jitter: 0.2,
            min_refresh_interval: Duration::from_secs(1),
            background_retry: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(30),
            refresh_deadline: Duration::from_secs(60),
            backoff: Backoff::default(),
            max_attempts: 4,
            scheme: Scheme::FromTokenType,
            rotation: Rotation::Detect,
            bind: None,
        }
    }
}

/// Builds a [`TokenManager`]. Start with [`TokenManager::builder`].
#[must_use]
pub struct TokenManagerBuilder {
    pub(super) source: Box<dyn TokenSource>,
    pub(super) store: Option<Box<dyn TokenStore>>,
    pub(super) initial: Option<TokenSet>,
    pub(super) config: Config,
    pub(super) hook: Option<Hook>,
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
    /// rejected, is missing, or may have been spent by a request that got
    /// no answer). Keep it quick: it runs on the refresh task.
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

    /// How long one token request, or one store call, may take. Default
    /// 30 s, the usual HTTP client timeout. A token request that outlasts it
    /// is abandoned, and if it presented a refresh token, the server may
    /// have spent it (see [`rotation`](Self::rotation)): that makes a
    /// timeout costly, so the default waits for a slow endpoint rather than
    /// give up on it. A healthy token endpoint answers in well under a
    /// second.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.config.attempt_timeout = timeout.min(MAX_SETTING);
        self.config.refresh_deadline = self.config.refresh_deadline.max(timeout);
        self
    }

    /// How long one refresh may take, retries included, before its waiters
    /// get an error. Default 60 s (two attempt timeouts); never less than
    /// the attempt timeout. Callers wait only when the token is past expiry
    /// minus the leeway: inside the refresh-ahead window the old token is
    /// still served while the refresh runs.
    /// Every wait inside a refresh ends by then (the last store write of a
    /// new set may add one attempt timeout).
    pub fn refresh_deadline(mut self, deadline: Duration) -> Self {
        self.config.refresh_deadline = deadline.min(MAX_SETTING).max(self.config.attempt_timeout);
        self
    }

    /// Attempts per refresh for transient failures, the first included.
    /// Default 4; at least 1.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config.max_attempts = attempts.max(1);
        self
    }

    /// The backoff before the second attempt and the cap of any backoff;
    /// each wait is drawn at random up to `base * 2^(attempt-1)` (full
    /// jitter). Defaults 100 ms and 5 s.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.config.backoff = Backoff::new(base, max);
        self
    }

    /// Runs `bind` on every token set the manager takes in (from the
    /// source, the store, [`initial`](Self::initial),
    /// [`set`](TokenManager::set) or [`load`](TokenManager::load)) before it
    /// forms its header or saves it.
    ///
    /// The hook for tokens bound to a key the client holds (DPoP, RFC 9449):
    /// the key attaches itself ([`TokenSet::with_bound_key`]) to a set that
    /// has none, so that it is saved with it, and takes the key of a set
    /// bound to another one (loaded from a store), so that every proof is
    /// signed with the key the tokens are bound to. The protocol crate does
    /// this for its `DpopKey`: `.dpop(key)` of
    /// `tower_token_refresh_oauth2::dpop::DpopManagerExt`. `bind` should be
    /// cheap: it runs once per token set, on the refresh path.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_token_refresh_core::{source, TokenManager, TokenSet};
    /// use zeroize::Zeroizing;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let tokens = TokenManager::builder(source::from_fn(|_| async {
    ///     Ok(TokenSet::bearer("t").with_token_type("DPoP"))
    /// }))
    /// .bind_tokens(|set: TokenSet| match set.bound_key() {
    ///     Some(_) => set,
    ///     None => set.with_bound_key(Zeroizing::new(b"a PKCS#8 key".to_vec())),
    /// })
    /// .build();
    /// let auth = tokens.authorization().await?;
    /// assert_eq!(auth.header().to_str()?, "DPoP t");
    /// let bound = tokens.current().and_then(|t| t.bound_key().map(<[u8]>::to_vec));
    /// assert_eq!(bound.as_deref(), Some(&b"a PKCS#8 key"[..]));
    /// # Ok(()) }
    /// ```
    pub fn bind_tokens(
        mut self,
        bind: impl Fn(TokenSet) -> TokenSet + Send + Sync + 'static,
    ) -> Self {
        self.config.bind = Some(Binder(Arc::new(bind)));
        self
    }

    /// How the header value is formed. Default [`Scheme::FromTokenType`].
    /// A `DPoP` token goes out as `DPoP <token>` whatever the scheme.
    pub fn scheme(mut self, scheme: Scheme) -> Self {
        self.config.scheme = scheme;
        self
    }

    /// Whether the server may rotate refresh tokens; see [`Rotation`].
    /// Default [`Rotation::Detect`].
    pub fn rotation(mut self, rotation: Rotation) -> Self {
        self.config.rotation = rotation;
        self
    }

    /// Builds the manager. No network call happens here, no task is
    /// started, and no runtime is needed.
    ///
    /// An initial set whose access token cannot be a header value is
    /// dropped with a warning, so the first request fetches a new one.
    pub fn build(self) -> TokenManager {
        crate::metrics::describe();
        let common = Arc::new(Common {
            source: self.source,
            config: self.config,
            counters: Counters::default(),
            jitter: Jitter::new(),
            timed: true,
            permits: None,
        });
        let store = self.store.unwrap_or_else(|| Box::new(MemoryStore::new()));
        TokenManager::with_common(common, store, self.initial, self.hook)
    }

    /// The shared half of a [`Sessions`](crate::Sessions) registry's
    /// managers (no phase driver per session, at most `concurrent` refresh
    /// attempts at once). Refused, naming it, when the
    /// builder holds something that belongs to one session.
    pub(crate) fn into_common(self, concurrent: usize) -> Result<Arc<Common>, &'static str> {
        if self.store.is_some() {
            return Err("a store");
        }
        if self.initial.is_some() {
            return Err("an initial token set");
        }
        if self.hook.is_some() {
            return Err("an on_session_expired hook");
        }
        crate::metrics::describe();
        Ok(Arc::new(Common {
            source: self.source,
            config: self.config,
            counters: Counters::default(),
            jitter: Jitter::new(),
            timed: false,
            permits: Some(tokio::sync::Semaphore::new(concurrent)),
        }))
    }
}

impl TokenManager {
    /// A manager over `common`, with its own store, state and hook.
    /// An initial set whose access token cannot be a header value is
    /// dropped with a warning, so the first request fetches a new one.
    pub(crate) fn with_common(
        common: Arc<Common>,
        store: Box<dyn TokenStore>,
        initial: Option<TokenSet>,
        hook: Option<Hook>,
    ) -> TokenManager {
        let status = match initial {
            None => Status::Empty,
            Some(tokens) => match common.credential(tokens, Instant::now()).map(Status::Ready) {
                Ok(status) => status,
                Err(e) => {
                    tracing::warn!(error = %e, "initial token set unusable; starting empty");
                    Status::Empty
                }
            },
        };
        TokenManager {
            inner: Arc::new(Inner {
                id: super::next_manager_id(),
                state: arc_swap::ArcSwap::from_pointee(State {
                    generation: 1,
                    status,
                }),
                flight: std::sync::Mutex::new(Flight::default()),
                commit: tokio::sync::Mutex::new(()),
                lease: std::sync::Mutex::new(None),
                lease_taken: tokio::sync::Notify::new(),
                refreshing: std::sync::atomic::AtomicBool::new(false),
                driver: Driver::new(common.timed),
                rotation_seen: std::sync::atomic::AtomicU8::new(super::refresh::UNKNOWN),
                store,
                hook,
                watch: std::sync::OnceLock::new(),
                common,
            }),
        }
    }
}
