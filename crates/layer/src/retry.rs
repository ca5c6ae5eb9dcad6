//! Retrying lost connections and server errors: a ready
//! [`tower::retry::Policy`].
//!
//! [`ServerErrorRetry`] retries a request whose inner service failed (a
//! refused or dropped connection) or whose response is a 502, 503, 504 or
//! 429 (the set is configurable), at most 3 times by default, with
//! exponential backoff and full jitter, honouring `Retry-After`. Only
//! idempotent methods are retried unless the request has an
//! `Idempotency-Key` header or you opt in. A shared retry budget
//! ([`TpsBudget`]) caps retries across all requests, so a failing upstream
//! sees no retry storm. Requests are copied with the same [`ReplayPolicy`]
//! as the token layer uses ([`CloneBody`] by default): a request whose body
//! cannot be copied is sent once.
//!
//! # Where to put it
//!
//! **Outside** [`TokenRefreshLayer`](crate::TokenRefreshLayer), as below
//! (`ServiceBuilder` layers run top to bottom, the first outermost). Every
//! retry then passes through the token layer again and carries the token
//! current at that moment, refreshed in between if need be. Inside the token
//! layer, a retry would resend the header of the first attempt, however
//! stale.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_token_refresh::{TokenManager, TokenRefreshLayer, TokenSet, retry::ServerErrorRetry, source};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let tokens = TokenManager::builder(source::from_fn(|_| async {
//!     Ok(TokenSet::bearer("abc").with_expires_in(Duration::from_secs(3600)))
//! }))
//! .build();
//!
//! let client = ServiceBuilder::new()
//!     .layer(ServerErrorRetry::new().max_retries(2).into_layer())
//!     .layer(TokenRefreshLayer::new(tokens).allow_origin("https://api.example.com".parse()?))
//!     .service(service_fn(|_req: http::Request<Full<Bytes>>| async move {
//!         // Stands in for hyper-util's client.
//!         Ok::<_, std::convert::Infallible>(http::Response::new(Full::<Bytes>::default()))
//!     }));
//!
//! let response = client
//!     .oneshot(http::Request::get("https://api.example.com/products").body(Full::default())?)
//!     .await?;
//! assert_eq!(response.status(), 200);
//! # Ok(()) }
//! ```

use std::{
    any::Any,
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use http::{Method, Request, Response, StatusCode};
use tower::retry::{
    Policy, RetryLayer,
    budget::{Budget, TpsBudget},
};
use tower_token_refresh_core::{
    BoxError, Error, MAX_SETTING,
    backoff::{Backoff, Jitter, retry_after},
};

use crate::{CloneBody, ReplayPolicy};

pub use tower_token_refresh_core::header::IDEMPOTENCY_KEY;

/// The statuses retried by default: 429, 502, 503, 504.
pub const DEFAULT_STATUSES: [StatusCode; 4] = [
    StatusCode::TOO_MANY_REQUESTS,
    StatusCode::BAD_GATEWAY,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::GATEWAY_TIMEOUT,
];

#[derive(Clone, Debug)]
struct Config {
    statuses: Vec<StatusCode>,
    max_retries: u32,
    backoff: Backoff,
    max_retry_after: Duration,
    any_method: bool,
}

/// A [`tower::retry::Policy`] for HTTP requests: retries lost connections
/// and server errors with exponential backoff and full jitter, within a
/// retry budget. See the [module docs](self) for where it goes.
///
/// Defaults: statuses [`DEFAULT_STATUSES`], 3 retries, backoff drawn at
/// random up to 100 ms, 200 ms, 400 ms… capped at 5 s, a `Retry-After` of
/// up to 60 s honoured, idempotent methods only (`GET`, `HEAD`, `OPTIONS`,
/// `PUT`, `DELETE`, `TRACE`) or requests with an [`IDEMPOTENCY_KEY`], and a
/// [`TpsBudget::default`] (10 retries a second plus 20 % of requests,
/// counted over 10 s).
///
/// Clones share the budget and the random source; tower's
/// [`Retry`](tower::retry::Retry) clones the policy for each request, which
/// then counts that request's attempts.
///
/// Errors of the token layer itself ([`Error`]: session expired, refresh
/// failed, refused by policy) are never retried: the refresh has its own
/// retries, and the others cannot pass by trying again.
#[derive(Clone)]
pub struct ServerErrorRetry<P = CloneBody> {
    replay: P,
    config: Arc<Config>,
    budget: Arc<TpsBudget>,
    jitter: Arc<Jitter>,
    retries: u32,
}

impl<P> fmt::Debug for ServerErrorRetry<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerErrorRetry")
            .field("statuses", &self.config.statuses)
            .field("max_retries", &self.config.max_retries)
            .field("backoff", &self.config.backoff)
            .field("max_retry_after", &self.config.max_retry_after)
            .field("any_method", &self.config.any_method)
            .field("budget", &self.budget)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl Default for ServerErrorRetry {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerErrorRetry {
    /// The policy with its defaults (see [`ServerErrorRetry`]).
    pub fn new() -> Self {
        ServerErrorRetry {
            replay: CloneBody,
            config: Arc::new(Config {
                statuses: DEFAULT_STATUSES.to_vec(),
                max_retries: 3,
                backoff: Backoff::default(),
                max_retry_after: Duration::from_secs(60),
                any_method: false,
            }),
            budget: Arc::new(TpsBudget::default()),
            jitter: Arc::new(Jitter::new()),
            retries: 0,
        }
    }
}

impl<P> ServerErrorRetry<P> {
    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// The response statuses that are retried (replacing the default set).
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.config_mut().statuses = statuses.into_iter().collect();
        self
    }

    /// Retries per request after the first attempt. Default 3.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.config_mut().max_retries = retries;
        self
    }

    /// The backoff before the first retry and the cap of any backoff; each
    /// wait is drawn at random up to `base * 2^retry` (full jitter: core's
    /// [`Backoff`]). Defaults 100 ms and 5 s.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.config_mut().backoff = Backoff::new(base, max);
        self
    }

    /// The longest `Retry-After` that is waited out, in seconds or until an
    /// HTTP-date (read by
    /// [`backoff::retry_after`](tower_token_refresh_core::backoff::retry_after)).
    /// A response asking for longer is returned as it is, not retried; a
    /// date in the past is retried at once. Default 60 s.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.config_mut().max_retry_after = max.min(MAX_SETTING);
        self
    }

    /// Retries every method, `POST` and `PATCH` included, even without an
    /// [`IDEMPOTENCY_KEY`]. Off by default: a `POST` whose response was lost
    /// may have been carried out.
    pub fn retry_non_idempotent(mut self, allow: bool) -> Self {
        self.config_mut().any_method = allow;
        self
    }

    /// Shares this budget (with other policies, say). A [`TpsBudget`]
    /// withdrawal is made for every retry and a deposit for every request;
    /// no retry is made when the budget is spent.
    pub fn budget(mut self, budget: Arc<TpsBudget>) -> Self {
        self.budget = budget;
        self
    }

    /// Seeds the random source of the jitter, for reproducible tests. The
    /// policy and its later clones then share a source of their own.
    pub fn seed(mut self, seed: u64) -> Self {
        self.jitter = Arc::new(Jitter::from_seed(seed));
        self
    }

    /// Sets the policy that copies requests for a retry (the same trait the
    /// token layer uses). Default [`CloneBody`].
    pub fn replay<P2>(self, replay: P2) -> ServerErrorRetry<P2> {
        ServerErrorRetry {
            replay,
            config: self.config,
            budget: self.budget,
            jitter: self.jitter,
            retries: self.retries,
        }
    }

    /// A [`RetryLayer`] with this policy.
    pub fn into_layer(self) -> RetryLayer<Self> {
        RetryLayer::new(self)
    }

    /// The backoff before the next retry: after `retries + 1` failed
    /// attempts.
    fn next_backoff(&self) -> Duration {
        self.config
            .backoff
            .delay(self.retries + 1, self.jitter.next())
    }

    /// How long to wait before retrying this outcome, or `None` when it is
    /// not to be retried.
    fn wait_for<R, E: 'static>(&self, result: &Result<Response<R>, E>) -> Option<Duration> {
        match result {
            Err(e) if is_token_error(e) => None,
            Err(_) => Some(self.next_backoff()),
            Ok(response) => {
                if !self.config.statuses.contains(&response.status()) {
                    return None;
                }
                match retry_after(response.headers(), SystemTime::now()) {
                    Some(after) if after > self.config.max_retry_after => None,
                    Some(after) => Some(after),
                    None => Some(self.next_backoff()),
                }
            }
        }
    }
}

impl<B, R, E, P> Policy<Request<B>, Response<R>, E> for ServerErrorRetry<P>
where
    P: ReplayPolicy<B>,
    E: 'static,
{
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _request: &mut Request<B>,
        result: &mut Result<Response<R>, E>,
    ) -> Option<Self::Future> {
        if self.retries == 0 {
            // One deposit per request, on its first outcome.
            self.budget.deposit();
        }
        if self.retries >= self.config.max_retries {
            return None;
        }
        let wait = self.wait_for(result)?;
        if !self.budget.withdraw() {
            tracing::debug!("retry budget spent; not retrying");
            return None;
        }
        self.retries += 1;
        tracing::debug!(
            retry = self.retries,
            status = result.as_ref().ok().map(|r| r.status().as_u16()),
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "retrying request"
        );
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        if !self.config.any_method
            && !is_idempotent(request.method())
            && !request.headers().contains_key(IDEMPOTENCY_KEY)
        {
            return None;
        }
        self.replay.clone_request(request)
    }
}

/// RFC 9110 §9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Whether the error is the token layer's own, not the transport's.
fn is_token_error<E: 'static>(error: &E) -> bool {
    let any: &dyn Any = error;
    any.is::<Error>()
        || any
            .downcast_ref::<BoxError>()
            .is_some_and(|e| e.is::<Error>())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use http::header::RETRY_AFTER;
    use tower_token_refresh_core::ErrorKind;

    use super::*;

    type Outcome = Result<Response<()>, BoxError>;

    fn get() -> Request<()> {
        Request::get("http://127.0.0.1/").body(()).unwrap()
    }

    fn status(code: u16) -> Outcome {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::from_u16(code).unwrap();
        Ok(r)
    }

    fn with_retry_after(code: u16, after: &str) -> Outcome {
        let mut r = status(code).unwrap();
        r.headers_mut().insert(RETRY_AFTER, after.parse().unwrap());
        Ok(r)
    }

    /// Runs `outcome` through a fresh per-request copy of `policy` until it
    /// gives up; returns the waits it asked for.
    fn waits(policy: &ServerErrorRetry, mut outcome: impl FnMut() -> Outcome) -> Vec<Duration> {
        let mut policy = policy.clone();
        let mut request = get();
        let mut out = Vec::new();
        loop {
            let mut result = outcome();
            match Policy::retry(&mut policy, &mut request, &mut result) {
                Some(sleep) => out.push(sleep.deadline() - tokio::time::Instant::now()),
                None => return out,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn default_statuses_are_retried_three_times_and_others_never() {
        let p = ServerErrorRetry::new();
        for code in [429, 502, 503, 504] {
            assert_eq!(waits(&p, || status(code)).len(), 3, "{code}");
        }
        for code in [200, 201, 400, 401, 403, 404, 500, 501] {
            assert!(waits(&p, || status(code)).is_empty(), "{code}");
        }
        let p = ServerErrorRetry::new().statuses([StatusCode::INTERNAL_SERVER_ERROR]);
        assert_eq!(waits(&p, || status(500)).len(), 3);
        assert!(waits(&p, || status(503)).is_empty());
        let p = ServerErrorRetry::new().max_retries(0);
        assert!(waits(&p, || status(503)).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn connection_errors_are_retried_but_the_token_layers_own_are_not() {
        let p = ServerErrorRetry::new();
        let io = || Err::<Response<()>, BoxError>("connection reset".into());
        assert_eq!(waits(&p, io).len(), 3);
        for kind in [
            ErrorKind::SessionExpired,
            ErrorKind::Transient,
            ErrorKind::Policy,
        ] {
            let ours = || Err::<Response<()>, BoxError>(Error::new(kind, "x").into());
            assert!(waits(&p, ours).is_empty(), "{kind:?}");
        }
        // Unboxed, too.
        let mut policy = p.clone();
        let mut result: Result<Response<()>, Error> = Err(Error::transient("x"));
        assert!(Policy::retry(&mut policy, &mut get(), &mut result).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_is_full_jitter_under_an_exponential_cap() {
        // A budget that never runs out here: this test is about the waits.
        let ample = || Arc::new(TpsBudget::new(Duration::from_secs(60), 1000, 1000.0));
        let p = ServerErrorRetry::new()
            .budget(ample())
            .max_retries(8)
            .backoff(Duration::from_millis(100), Duration::from_secs(2))
            .seed(42);
        let mut all = Vec::new();
        for _ in 0..200 {
            let w = waits(&p, || status(503));
            assert_eq!(w.len(), 8);
            for (i, wait) in w.iter().enumerate() {
                let cap = (Duration::from_millis(100) * (1 << i)).min(Duration::from_secs(2));
                assert!(*wait <= cap, "retry {i}: {wait:?} > {cap:?}");
            }
            all.push(w);
        }
        // Jitter: the draws differ, and spread over the range.
        let firsts: Vec<_> = all.iter().map(|w| w[0]).collect();
        assert!(firsts.iter().any(|w| *w < Duration::from_millis(30)));
        assert!(firsts.iter().any(|w| *w > Duration::from_millis(70)));
        // Reproducible from the seed.
        let again = ServerErrorRetry::new()
            .budget(ample())
            .max_retries(8)
            .backoff(Duration::from_millis(100), Duration::from_secs(2))
            .seed(42);
        assert_eq!(waits(&again, || status(503)), all[0]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_up_to_its_cap() {
        let p = ServerErrorRetry::new();
        assert_eq!(
            waits(&p, || with_retry_after(429, "7")),
            vec![Duration::from_secs(7); 3]
        );
        assert_eq!(
            waits(&p, || with_retry_after(503, " 2 ")),
            vec![Duration::from_secs(2); 3]
        );
        // Longer than we wait: returned as it is.
        assert!(waits(&p, || with_retry_after(429, "3600")).is_empty());
        assert!(waits(&p, || with_retry_after(429, "99999999999999999999999")).is_empty());
        // A date in the past: no wait.
        assert_eq!(
            waits(&p, || with_retry_after(
                503,
                "Wed, 21 Oct 2015 07:28:00 GMT"
            )),
            vec![Duration::ZERO; 3]
        );
        // Junk: the backoff applies.
        for junk in ["-1", "1.5", "soon", ""] {
            let w = waits(&p, || with_retry_after(429, junk));
            assert_eq!(w.len(), 3, "{junk:?}");
            assert!(
                w.iter().all(|w| *w <= Duration::from_millis(400)),
                "{junk:?}"
            );
        }
    }

    fn copy<P: ReplayPolicy<()>>(
        p: &mut ServerErrorRetry<P>,
        r: &Request<()>,
    ) -> Option<Request<()>> {
        Policy::<Request<()>, Response<()>, BoxError>::clone_request(p, r)
    }

    #[test]
    fn only_idempotent_requests_are_copied_unless_keyed_or_opted_in() {
        let mut p = ServerErrorRetry::new();
        for method in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
            let r = Request::builder().method(method).body(()).unwrap();
            assert!(copy(&mut p, &r).is_some(), "{method}");
        }
        for method in ["POST", "PATCH", "CONNECT"] {
            let r = Request::builder().method(method).body(()).unwrap();
            assert!(copy(&mut p, &r).is_none(), "{method}");
            let keyed = Request::builder()
                .method(method)
                .header(IDEMPOTENCY_KEY, "k-1")
                .body(())
                .unwrap();
            assert!(copy(&mut p, &keyed).is_some(), "{method} with a key");
        }
        let mut any = ServerErrorRetry::new().retry_non_idempotent(true);
        let post = Request::post("/").body(()).unwrap();
        assert!(copy(&mut any, &post).is_some());
        // A body that cannot be copied is never retried.
        let mut none = ServerErrorRetry::new().replay(crate::NoReplay);
        assert!(copy(&mut none, &get()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_stops_retries() {
        // No share of requests, one retry a second in reserve.
        let budget = Arc::new(TpsBudget::new(Duration::from_secs(1), 1, 0.0));
        let p = ServerErrorRetry::new().budget(budget);
        assert_eq!(waits(&p, || status(503)).len(), 1);
        assert!(waits(&p, || status(503)).is_empty());
        assert!(waits(&p, || status(503)).is_empty());
    }
}
