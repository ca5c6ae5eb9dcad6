//! Metrics through the [`metrics`](https://docs.rs/metrics) facade, with
//! the cargo feature `metrics` (off by default).
//!
//! With the feature on, the coordinator records the instruments below with
//! whatever recorder the application installed (a Prometheus or
//! OpenTelemetry exporter, say); this crate brings the facade only, no
//! exporter. With it off, every recording function is an empty inline
//! function and nothing is built or recorded. The names are here either
//! way, as constants.
//!
//! Names follow the OpenTelemetry conventions: dot-separated, under
//! `token_refresh.`, the unit in the description (and given to the
//! recorder with [`describe`]). Label values are a small fixed set: never a
//! session key, a token or a server's text. The instruments count what the
//! [`Stats`](crate::Stats) counters count, at the same places, plus what
//! those do not keep (latencies, waits, why sessions ended); the lookup of
//! a fresh credential records nothing.
//!
//! | name | kind | unit | labels | what |
//! |---|---|---|---|---|
//! | `token_refresh.refreshes.started` | counter | `{refresh}` | | refreshes started ([`Stats::refreshes_started`](crate::Stats::refreshes_started)) |
//! | `token_refresh.refreshes.succeeded` | counter | `{refresh}` | | refreshes that ended with a usable credential |
//! | `token_refresh.refreshes.failed` | counter | `{refresh}` | `reason` | refreshes that ended in an error; `reason` is its [`ErrorKind`]: `session_expired`, `transient`, `rejected`, `invalid_response`, `store`, `policy`, `no_runtime` |
//! | `token_refresh.refresh.duration` | histogram | `s` | | from a refresh's start (after any [`min_refresh_interval`](crate::TokenManagerBuilder::min_refresh_interval) wait) to its outcome, every attempt, backoff and store call included |
//! | `token_refresh.waiters.coalesced` | counter | `{caller}` | | callers that joined the refresh in flight instead of starting one |
//! | `token_refresh.replays` | counter | `{request}` | | rejected requests replayed with a new credential ([`Stats::replays`](crate::Stats::replays)) |
//! | `token_refresh.lease.waits` | counter | `{wait}` | | times a refresh waited for another process's refresh (the store's lock) |
//! | `token_refresh.lease.wait.duration` | histogram | `s` | | how long each of those waits took |
//! | `token_refresh.sessions.ended` | counter | `{session}` | `cause` | sessions ended ([`Stats::sessions_expired`](crate::Stats::sessions_expired)); `cause`: `invalid_grant` (the server refused the refresh token), `lost_answer` (a request that presented it got no answer, and it may be spent), `logout` ([`end_session`](crate::TokenManager::end_session)), `ended_elsewhere` (another process sharing the store recorded the end), `other` (no refresh token, a refused login, a source's own verdict) |
//! | `token_refresh.dpop.nonce_retries` | counter | `{request}` | `endpoint` | requests sent once more with a DPoP nonce the server asked for (`use_dpop_nonce`, RFC 9449); `endpoint`: `token` (the oauth2 crate's grants) or `resource` (the layer's `DpopLayer`) |
//! | `token_refresh.sessions.held` | gauge | `{session}` | | sessions a [`Sessions`](crate::Sessions) registry holds in memory, of every registry together |
//! | `token_refresh.sessions.evicted` | counter | `{session}` | | sessions a [`Sessions`](crate::Sessions) registry evicted (bound or idle) |
//!
//! The oauth2 and layer crates have a `metrics` feature too, which turns on
//! this one.
//!
//! # Example
//!
//! ```
//! use tower_token_refresh_core::metrics;
//!
//! // After installing a recorder (`metrics::set_global_recorder`, or an
//! // exporter's `install`), give it the units and descriptions.
//! // Managers built afterwards do this themselves.
//! metrics::describe();
//! assert_eq!(metrics::REFRESHES_FAILED, "token_refresh.refreshes.failed");
//! ```

use crate::{Error, ErrorCode, ErrorKind};

/// Counter: refreshes started.
pub const REFRESHES_STARTED: &str = "token_refresh.refreshes.started";
/// Counter: refreshes that ended with a usable credential.
pub const REFRESHES_SUCCEEDED: &str = "token_refresh.refreshes.succeeded";
/// Counter: refreshes that ended in an error, labelled [`REASON`].
pub const REFRESHES_FAILED: &str = "token_refresh.refreshes.failed";
/// Histogram, seconds: from a refresh's start to its outcome.
pub const REFRESH_DURATION: &str = "token_refresh.refresh.duration";
/// Counter: callers that joined the refresh in flight.
pub const WAITERS_COALESCED: &str = "token_refresh.waiters.coalesced";
/// Counter: rejected requests replayed with a new credential.
pub const REPLAYS: &str = "token_refresh.replays";
/// Counter: times a refresh waited for another process's refresh.
pub const LEASE_WAITS: &str = "token_refresh.lease.waits";
/// Histogram, seconds: how long each [`LEASE_WAITS`] wait took.
pub const LEASE_WAIT_DURATION: &str = "token_refresh.lease.wait.duration";
/// Counter: sessions ended, labelled [`CAUSE`].
pub const SESSIONS_ENDED: &str = "token_refresh.sessions.ended";
/// Counter: requests sent once more with a DPoP nonce, labelled
/// [`ENDPOINT`].
pub const DPOP_NONCE_RETRIES: &str = "token_refresh.dpop.nonce_retries";
/// Gauge: sessions held in memory by [`Sessions`](crate::Sessions)
/// registries.
pub const SESSIONS_HELD: &str = "token_refresh.sessions.held";
/// Counter: sessions evicted from [`Sessions`](crate::Sessions) registries.
pub const SESSIONS_EVICTED: &str = "token_refresh.sessions.evicted";

/// Label of [`REFRESHES_FAILED`]: the error's [`ErrorKind`], in lowercase
/// snake case.
pub const REASON: &str = "reason";
/// Label of [`SESSIONS_ENDED`]: why the session ended.
pub const CAUSE: &str = "cause";
/// Label of [`DPOP_NONCE_RETRIES`]: `token` or `resource`.
pub const ENDPOINT: &str = "endpoint";

/// Where a server asked for a DPoP nonce ([`dpop_nonce_retry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NonceEndpoint {
    /// A token endpoint (a `400` with `use_dpop_nonce`, RFC 9449 §8).
    Token,
    /// A protected resource (a `401` with a `DPoP` challenge, RFC 9449 §9).
    Resource,
}

/// Gives the installed recorder the unit and description of every
/// instrument. Each manager and [`Sessions`](crate::Sessions) registry
/// does it when built; call it yourself if the recorder is installed
/// later. Does nothing without the feature `metrics`.
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_counter!(
            REFRESHES_STARTED,
            Unit::Count,
            "Refreshes started, in {refresh}."
        );
        describe_counter!(
            REFRESHES_SUCCEEDED,
            Unit::Count,
            "Refreshes that ended with a usable credential, in {refresh}."
        );
        describe_counter!(
            REFRESHES_FAILED,
            Unit::Count,
            "Refreshes that ended in an error, by reason, in {refresh}."
        );
        describe_histogram!(
            REFRESH_DURATION,
            Unit::Seconds,
            "Time from a refresh's start to its outcome, in s."
        );
        describe_counter!(
            WAITERS_COALESCED,
            Unit::Count,
            "Callers that joined the refresh in flight instead of starting one, in {caller}."
        );
        describe_counter!(
            REPLAYS,
            Unit::Count,
            "Rejected requests replayed with a new credential, in {request}."
        );
        describe_counter!(
            LEASE_WAITS,
            Unit::Count,
            "Times a refresh waited for another process's refresh, in {wait}."
        );
        describe_histogram!(
            LEASE_WAIT_DURATION,
            Unit::Seconds,
            "Time a refresh waited for another process's refresh, in s."
        );
        describe_counter!(
            SESSIONS_ENDED,
            Unit::Count,
            "Sessions ended, by cause, in {session}."
        );
        describe_counter!(
            DPOP_NONCE_RETRIES,
            Unit::Count,
            "Requests sent once more with the DPoP nonce the server asked for, in {request}."
        );
        describe_gauge!(
            SESSIONS_HELD,
            Unit::Count,
            "Sessions held in memory by Sessions registries, in {session}."
        );
        describe_counter!(
            SESSIONS_EVICTED,
            Unit::Count,
            "Sessions evicted from Sessions registries, in {session}."
        );
    }
}

/// Counts one request sent once more with the DPoP nonce a server asked
/// for. For the workspace's protocol and layer crates, which call it where
/// they resend; does nothing without the feature `metrics`.
#[inline]
pub fn dpop_nonce_retry(endpoint: NonceEndpoint) {
    #[cfg(feature = "metrics")]
    {
        let endpoint = match endpoint {
            NonceEndpoint::Token => "token",
            NonceEndpoint::Resource => "resource",
        };
        ::metrics::counter!(DPOP_NONCE_RETRIES, ENDPOINT => endpoint).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = endpoint;
}

/// When a timed event began (a refresh, a wait for another process), for
/// its duration. Empty without the feature: no clock is read.
#[derive(Debug)]
pub(crate) struct Started {
    #[cfg(feature = "metrics")]
    at: tokio::time::Instant,
}

impl Started {
    #[inline]
    fn now() -> Self {
        Started {
            #[cfg(feature = "metrics")]
            at: tokio::time::Instant::now(),
        }
    }

    #[cfg(feature = "metrics")]
    fn seconds(&self) -> f64 {
        self.at.elapsed().as_secs_f64()
    }
}

/// A refresh task starts its work.
#[inline]
pub(crate) fn refresh_started() -> Started {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(REFRESHES_STARTED).increment(1);
    Started::now()
}

/// A refresh task's outcome: `None` for a usable credential, else the
/// error's kind.
#[inline]
pub(crate) fn refresh_ended(started: Started, failure: Option<ErrorKind>) {
    #[cfg(feature = "metrics")]
    {
        match failure {
            None => ::metrics::counter!(REFRESHES_SUCCEEDED).increment(1),
            Some(kind) => {
                ::metrics::counter!(REFRESHES_FAILED, REASON => kind_label(kind)).increment(1);
            }
        }
        ::metrics::histogram!(REFRESH_DURATION).record(started.seconds());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (started, failure);
}

/// A caller joined the refresh in flight.
#[inline]
pub(crate) fn waiter_coalesced() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(WAITERS_COALESCED).increment(1);
}

/// A rejected request gets a credential to be replayed with.
#[inline]
pub(crate) fn replayed() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(REPLAYS).increment(1);
}

/// A refresh starts waiting for another process's refresh.
#[inline]
pub(crate) fn lease_wait_started() -> Started {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(LEASE_WAITS).increment(1);
    Started::now()
}

/// That wait is over (the other refresh ended, or the wait timed out).
#[inline]
pub(crate) fn lease_wait_ended(started: Started) {
    #[cfg(feature = "metrics")]
    ::metrics::histogram!(LEASE_WAIT_DURATION).record(started.seconds());
    #[cfg(not(feature = "metrics"))]
    let _ = started;
}

/// A refresh ended the session with `err`.
#[inline]
pub(crate) fn session_expired(err: &Error) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(SESSIONS_ENDED, CAUSE => end_cause(err)).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = err;
}

/// [`end_session`](crate::TokenManager::end_session) ended the session.
#[inline]
pub(crate) fn logged_out() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(SESSIONS_ENDED, CAUSE => "logout").increment(1);
}

/// A [`Sessions`](crate::Sessions) registry now holds `n` more sessions
/// (`held`), or `n` fewer.
#[inline]
pub(crate) fn sessions_held(more: bool, n: usize) {
    #[cfg(feature = "metrics")]
    {
        // A session count: far below 2^52, exact as a float.
        let n = n as f64;
        let gauge = ::metrics::gauge!(SESSIONS_HELD);
        if more {
            gauge.increment(n);
        } else {
            gauge.decrement(n);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (more, n);
}

/// A [`Sessions`](crate::Sessions) registry evicted `n` sessions.
#[inline]
pub(crate) fn sessions_evicted(n: usize) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(SESSIONS_EVICTED).increment(n as u64);
    #[cfg(not(feature = "metrics"))]
    let _ = n;
}

/// The [`REASON`] label of a failed refresh.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
fn kind_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::SessionExpired => "session_expired",
        ErrorKind::Transient => "transient",
        ErrorKind::Rejected => "rejected",
        ErrorKind::InvalidResponse => "invalid_response",
        ErrorKind::Store => "store",
        ErrorKind::Policy => "policy",
        ErrorKind::NoRuntime => "no_runtime",
    }
}

/// The [`CAUSE`] label of a session a refresh ended.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
fn end_cause(err: &Error) -> &'static str {
    if err.is_ended_in_store() {
        "ended_elsewhere"
    } else if err.is_outcome_unknown() {
        "lost_answer"
    } else if err.oauth_error_code() == Some(&ErrorCode::InvalidGrant) {
        "invalid_grant"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ended_by_a_tombstone_is_counted_as_ended_elsewhere_whatever_it_says() {
        let lost = Error::session_expired("lost").with_outcome_unknown();
        assert_eq!(end_cause(&lost), "lost_answer");
        assert_eq!(end_cause(&lost.ended_in_store()), "ended_elsewhere");
        let refused = Error::session_expired("refused").with_oauth_error("invalid_grant");
        assert_eq!(end_cause(&refused), "invalid_grant");
        assert_eq!(
            end_cause(&Error::session_expired("no refresh token")),
            "other"
        );
    }

    #[test]
    fn failure_reasons_are_the_kinds_in_snake_case() {
        assert_eq!(kind_label(ErrorKind::SessionExpired), "session_expired");
        assert_eq!(kind_label(ErrorKind::InvalidResponse), "invalid_response");
        assert_eq!(kind_label(ErrorKind::NoRuntime), "no_runtime");
    }
}
