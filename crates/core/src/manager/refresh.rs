//! The refresh transaction, run by the flight's task: attempts with backoff,
//! the shared store's turn, the token request, and what an unanswered
//! request means for the refresh token it presented.
//!
//! Invariants:
//! - Every await is bounded: store calls and token requests by the attempt
//!   timeout and the refresh deadline, a follower's wait and every backoff
//!   by the deadline. A refresh cannot wedge its manager.
//! - A token request belongs to its attempt: it is awaited by the task
//!   that owns the refresh and dropped when its time is up. Nothing joins
//!   it later, so nothing can be kept waiting by it.
//! - A refresh token is presented at most once per answer: when a request
//!   that presented one got no answer (timed out, or failed with an unknown
//!   outcome), it is presented again only if the server is known not to
//!   rotate ([`Rotation`](super::Rotation)); otherwise the session ends,
//!   saying why.
//! - A shared store's lease is checked just before the request and released
//!   on every path after it.

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures_util::FutureExt;
use tokio::time::Instant;

use super::{Inner, Rotation, commit::is_newer, flight::Outcome};
use crate::{Error, RefreshLease, RefreshToken, TokenSet, store::RefreshTurn};

/// Values of `Inner::rotation_seen`: what the last refresh answer showed.
pub(super) const UNKNOWN: u8 = 0;
const ROTATES: u8 = 1;
const KEEPS: u8 = 2;

impl Inner {
    /// Runs one refresh to its end; the flag says whether it ended the session.
    pub(super) async fn refresh(self: &Arc<Self>, id: u64, mut from: u64) -> (Outcome, bool) {
        let deadline = Instant::now() + self.config.refresh_deadline;
        let mut attempt = 1;
        loop {
            let state = self.state.load_full();
            if state.generation != from {
                // Replaced by someone else (`set`, `load`, `clear`, …): an
                // ended session ends the flight; a usable set does too,
                // unless a caller already rejected it.
                match self.settled(&state) {
                    Some(Err(e)) => return (Err(e), false),
                    Some(Ok(auth)) if self.try_land(id, state.generation) => {
                        return (Ok(auth), false);
                    }
                    _ => from = state.generation,
                }
            }
            self.counters.attempts.fetch_add(1, Ordering::Relaxed);
            let err = match self.attempt(&mut from, deadline).await {
                Ok(()) => {
                    if self.try_land(id, from) {
                        return (self.state.load().outcome(), false);
                    }
                    // A caller rejected what was just published (a set that
                    // overtook this refresh): refresh again from it.
                    attempt += 1;
                    if attempt > self.config.backoff.max_attempts || Instant::now() >= deadline {
                        return (
                            Err(Error::transient("refreshes kept being rejected")),
                            false,
                        );
                    }
                    continue;
                }
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
                let err = if err.kind().is_retryable() {
                    let attempts = if attempt == 1 { "attempt" } else { "attempts" };
                    let mut summary =
                        Error::transient(format!("{attempt} {attempts} failed; last: {err}"));
                    if let Some(code) = err.oauth_error() {
                        summary = summary.with_oauth_error(code);
                    }
                    summary.with_source(err)
                } else {
                    err
                };
                return (Err(err), false);
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One attempt: adopt a newer stored set, or take the store's turn and
    /// fetch, validate, save and publish. `from` follows what it publishes.
    async fn attempt(self: &Arc<Self>, from: &mut u64, deadline: Instant) -> Result<(), Error> {
        let state = self.state.load_full();
        let current = state.tokens();
        // A store that cannot be read fails the attempt: refreshing anyway
        // could present a refresh token another process already rotated.
        if let Some(stored) = self.store_op("load", self.store.load(), deadline).await?
            && is_newer(&stored, current)
            && self.adopt(from, stored).await
        {
            return Ok(());
        }
        match self
            .store_op("lock", self.store.begin_refresh(), deadline)
            .await?
        {
            RefreshTurn::Uncoordinated => self.fetch(from, current, None, deadline).await,
            RefreshTurn::Leader(lease) => {
                let result = self.lead(from, current, &*lease, deadline).await;
                let _ = self
                    .store_op("unlock", lease.release(), far(self.config.attempt_timeout))
                    .await;
                result
            }
            RefreshTurn::Follower(wait) => {
                tracing::debug!(generation = *from, "another process is refreshing; waiting");
                let _ = tokio::time::timeout(remaining(deadline), wait).await;
                let stored = self.store_op("load", self.store.load(), deadline).await?;
                let adopted = match stored.filter(|s| is_newer(s, current)) {
                    Some(stored) => self.adopt(from, stored).await,
                    None => false,
                };
                if adopted {
                    Ok(())
                } else {
                    Err(Error::transient("another process's refresh did not finish"))
                }
            }
        }
    }

    async fn lead(
        self: &Arc<Self>,
        from: &mut u64,
        current: Option<&TokenSet>,
        lease: &dyn RefreshLease,
        deadline: Instant,
    ) -> Result<(), Error> {
        // Another process may have finished just before we locked.
        if let Some(stored) = self.store_op("load", self.store.load(), deadline).await?
            && is_newer(&stored, current)
        {
            return if self.adopt(from, stored).await {
                Ok(())
            } else {
                Err(Error::transient("the stored token set is not usable"))
            };
        }
        if !lease.is_held() {
            return Err(Error::transient(
                "lost the shared refresh lock before the token request",
            ));
        }
        self.fetch(from, current, Some(lease), deadline).await
    }

    /// The token request, then the commit of what it brought.
    async fn fetch(
        &self,
        from: &mut u64,
        current: Option<&TokenSet>,
        lease: Option<&dyn RefreshLease>,
        deadline: Instant,
    ) -> Result<(), Error> {
        let spent = current.and_then(|c| c.refresh_token()).cloned();
        let limit = self.config.attempt_timeout.min(remaining(deadline));
        let call = AssertUnwindSafe(self.source.fetch(current)).catch_unwind();
        let result = match tokio::time::timeout(limit, call).await {
            Err(_) => {
                Err(Error::transient("token request got no answer in time").with_outcome_unknown())
            }
            Ok(Err(_)) => Err(Error::transient("token source panicked")),
            Ok(Ok(result)) => result,
        };
        let fetched = match result {
            Ok(fetched) => fetched,
            Err(err) if err.is_outcome_unknown() && spent.is_some() => {
                self.counters.unanswered.fetch_add(1, Ordering::Relaxed);
                return Err(if self.may_rotate() {
                    Error::session_expired(
                        "a token request that presented the refresh token got no answer; \
                         a rotating server may have spent it, so it is not presented again",
                    )
                    .with_outcome_unknown()
                    .with_source(err)
                } else {
                    err
                });
            }
            Err(err) => return Err(err),
        };
        self.observe_rotation(spent.as_ref(), &fetched);
        self.commit(from, fetched, spent.as_ref(), lease).await
    }

    fn may_rotate(&self) -> bool {
        match self.config.rotation {
            Rotation::Never => false,
            Rotation::Always => true,
            Rotation::Detect => self.rotation_seen.load(Ordering::Relaxed) != KEEPS,
        }
    }

    fn observe_rotation(&self, spent: Option<&RefreshToken>, fetched: &TokenSet) {
        let Some(spent) = spent else { return };
        let seen = match fetched.refresh_token() {
            Some(new) if new != spent => ROTATES,
            _ => KEEPS,
        };
        self.rotation_seen.store(seen, Ordering::Relaxed);
    }
}

/// What is left of the time until `deadline`.
pub(super) fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// A deadline that leaves an operation its whole `limit`.
pub(super) fn far(limit: Duration) -> Instant {
    Instant::now() + limit
}
