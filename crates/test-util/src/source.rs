//! A counting [`TokenSource`] for unit tests of the coordinator and the layer.

use std::{
    collections::VecDeque,
    fmt,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tower_token_refresh_core::{BoxFuture, Error, ErrorKind, TokenSet, TokenSource};

/// A [`TokenSource`] that counts its calls, can be slow, and fails on demand.
///
/// The `n`-th call (from 1) issues the bearer token
/// [`issued_token(n)`](Self::issued_token) with refresh token
/// [`issued_refresh_token(n)`](Self::issued_refresh_token), expiring
/// `lifetime` after it answers. A call that fails still takes its number.
///
/// Clones share the counters, so a test keeps one while a token manager owns
/// another.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_token_refresh_core::{ErrorKind, TokenSource};
/// use tower_token_refresh_test_util::CountingSource;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let source = CountingSource::new(Duration::from_secs(60));
/// source.fail_next(1, ErrorKind::Transient);
/// assert_eq!(source.fetch(None).await.unwrap_err().kind(), ErrorKind::Transient);
/// let tokens = source.fetch(None).await.unwrap();
/// assert_eq!(tokens.access_token().secret(), CountingSource::issued_token(2));
/// assert_eq!(source.calls(), 2);
/// # }
/// ```
#[derive(Clone)]
pub struct CountingSource {
    inner: Arc<Inner>,
}

struct Inner {
    calls: AtomicU64,
    completed: AtomicU64,
    config: Mutex<Config>,
}

struct Config {
    lifetime: Duration,
    latency: Duration,
    failures: VecDeque<ErrorKind>,
}

impl CountingSource {
    /// A source issuing tokens that live `lifetime`, answering at once.
    pub fn new(lifetime: Duration) -> Self {
        CountingSource {
            inner: Arc::new(Inner {
                calls: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                config: Mutex::new(Config {
                    lifetime,
                    latency: Duration::ZERO,
                    failures: VecDeque::new(),
                }),
            }),
        }
    }

    /// Makes every call wait this long (a tokio sleep) before answering.
    pub fn latency(self, latency: Duration) -> Self {
        self.set_latency(latency);
        self
    }

    /// Changes the latency of calls started from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.config().latency = latency;
    }

    /// Changes the lifetime of tokens issued by calls started from now on.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.config().lifetime = lifetime;
    }

    /// Makes the next `n` calls (after failures already queued) fail with
    /// `Error::new(kind, "injected")`, after the latency.
    pub fn fail_next(&self, n: usize, kind: ErrorKind) {
        self.config().failures.extend(std::iter::repeat_n(kind, n));
    }

    /// How many calls have started.
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::SeqCst)
    }

    /// How many calls have answered (successfully or not); fewer than
    /// [`calls`](Self::calls) while some are waiting out their latency or were
    /// cancelled.
    pub fn completed(&self) -> u64 {
        self.inner.completed.load(Ordering::SeqCst)
    }

    /// The access token the `n`-th call (from 1) issues.
    pub fn issued_token(n: u64) -> String {
        format!("token-{n}")
    }

    /// The refresh token the `n`-th call (from 1) issues.
    pub fn issued_refresh_token(n: u64) -> String {
        format!("refresh-{n}")
    }

    fn config(&self) -> MutexGuard<'_, Config> {
        // Plain values: a panic elsewhere cannot leave them inconsistent.
        self.inner.config.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TokenSource for CountingSource {
    fn fetch<'a>(
        &'a self,
        _current: Option<&'a TokenSet>,
    ) -> BoxFuture<'a, Result<TokenSet, Error>> {
        Box::pin(async move {
            let n = self.inner.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let (latency, lifetime, failure) = {
                let mut config = self.config();
                (config.latency, config.lifetime, config.failures.pop_front())
            };
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            self.inner.completed.fetch_add(1, Ordering::SeqCst);
            match failure {
                Some(kind) => Err(Error::new(kind, "injected")),
                None => Ok(TokenSet::bearer(Self::issued_token(n))
                    .with_expires_in(lifetime)
                    .with_refresh_token(Self::issued_refresh_token(n))),
            }
        })
    }
}

impl fmt::Debug for CountingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = self.config();
        f.debug_struct("CountingSource")
            .field("calls", &self.calls())
            .field("completed", &self.completed())
            .field("lifetime", &config.lifetime)
            .field("latency", &config.latency)
            .field("queued_failures", &config.failures.len())
            .finish()
    }
}
