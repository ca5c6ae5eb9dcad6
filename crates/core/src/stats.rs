//! Counters of what the coordinator did.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a [`TokenManager`](crate::TokenManager)'s counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Refreshes started (each may make several attempts).
    pub refreshes_started: u64,
    /// Refreshes that produced a usable token set.
    pub refreshes_succeeded: u64,
    /// Refreshes that ended in an error.
    pub refreshes_failed: u64,
    /// Calls to the token source, retries included, plus store adoptions.
    pub attempts: u64,
    /// Refreshes that took a newer set from the store instead of the source.
    pub adopted_from_store: u64,
    /// Times the session expired.
    pub sessions_expired: u64,
    /// Rejected requests replayed with a new token.
    pub replays: u64,
    /// Store loads, saves or clears that failed.
    pub store_errors: u64,
    /// Token requests that presented a refresh token and got no answer
    /// (timed out, or failed with an unknown outcome).
    pub unanswered_requests: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) started: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) attempts: AtomicU64,
    pub(crate) adopted: AtomicU64,
    pub(crate) sessions_expired: AtomicU64,
    pub(crate) replays: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) unanswered: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            refreshes_started: get(&self.started),
            refreshes_succeeded: get(&self.succeeded),
            refreshes_failed: get(&self.failed),
            attempts: get(&self.attempts),
            adopted_from_store: get(&self.adopted),
            sessions_expired: get(&self.sessions_expired),
            replays: get(&self.replays),
            store_errors: get(&self.store_errors),
            unanswered_requests: get(&self.unanswered),
        }
    }
}
