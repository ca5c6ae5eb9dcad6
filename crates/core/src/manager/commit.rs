//! Every change of the token set: a refresh's result, an adoption from the
//! store, a session's end, and `set`/`clear`/`load`; each saved (where it
//! must be) before it is published.
//!
//! Invariants:
//! - Every writer holds the `commit` lock from its look at the state to its
//!   publication, so the store never ends up holding a set that memory has
//!   moved past, and no writer is overtaken between its check and its write.
//! - A fetched set is saved before it is published, and published even if
//!   the save failed: dropping it would lose a rotated refresh token for
//!   sure.
//! - A new refresh token is never dropped while the state still holds the
//!   one it replaces: a refresh overtaken by a `set` of a set with the
//!   spent refresh token gives that set the new one (the newer access token
//!   stays), and an answer whose access token is unusable is still kept,
//!   unusable, for its refresh token.
//! - A generation names an access token: it grows when the access token
//!   changes, not when only the refresh token does.

use std::{
    future::Future,
    sync::{Arc, atomic::Ordering},
};

use tokio::time::Instant;

use super::{
    Inner,
    credential::{Credential, State, Status},
    flight::Outcome,
    refresh::{far, remaining},
};
use crate::{Error, ErrorKind, RefreshLease, RefreshToken, TokenSet};

impl Inner {
    /// A store call, bounded by the attempt timeout and `deadline`, and
    /// counted on failure.
    pub(super) async fn store_op<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<T, Error>>,
        deadline: Instant,
    ) -> Result<T, Error> {
        let limit = self.config.attempt_timeout.min(remaining(deadline));
        let result = match tokio::time::timeout(limit, op).await {
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

    /// Makes `state` current: retires the one it replaces (so caches look
    /// again) and wakes the driver.
    fn publish(&self, state: State) {
        let old = self.state.swap(Arc::new(state));
        old.retire();
        self.driver.poke();
    }

    /// Publishes `status` as the next generation (`set`, `clear`, `load`,
    /// `end_session`). Called with the commit lock held.
    pub(super) fn replace(&self, status: Status) {
        let generation = self.state.load().generation + 1;
        self.publish(State { generation, status });
    }

    /// Takes a newer set another process stored, if it is usable. Returns
    /// whether the state moved (to it, or past `from` by another writer).
    pub(super) async fn adopt(&self, from: &mut u64, stored: TokenSet) -> bool {
        let now = Instant::now();
        let Ok(cred) = Credential::build(stored, &self.config, now, self.jitter.next()) else {
            return false;
        };
        if cred.is_stale(now) {
            return false;
        }
        let _commit = self.commit.lock().await;
        let generation = self.state.load().generation;
        if generation == *from {
            self.counters.adopted.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                generation = generation + 1,
                "adopting a newer token set from the store"
            );
            self.publish(State {
                generation: generation + 1,
                status: Status::Ready(cred),
            });
        }
        *from = self.state.load().generation;
        true
    }

    /// Saves and publishes what a token request brought (see the invariants
    /// above). `spent` is the refresh token it presented. `Ok` when a usable
    /// credential is current at `from` afterwards, or another writer's
    /// state is.
    pub(super) async fn commit(
        &self,
        from: &mut u64,
        fetched: TokenSet,
        spent: Option<&RefreshToken>,
        lease: Option<&dyn RefreshLease>,
    ) -> Result<(), Error> {
        let _commit = self.commit.lock().await;
        let current = self.state.load_full();
        let rotated = fetched
            .refresh_token()
            .is_some_and(|new| Some(new) != spent);
        let now = Instant::now();
        if current.generation != *from {
            *from = current.generation;
            let holds_spent =
                spent.is_some() && current.tokens().and_then(TokenSet::refresh_token) == spent;
            if rotated && holds_spent {
                self.merge_refresh_token(&current, &fetched, now).await;
            }
            return Ok(());
        }
        let failure =
            match Credential::build(fetched.clone(), &self.config, now, self.jitter.next()) {
                Ok(cred) if !cred.is_stale(now) => {
                    self.save(&cred.tokens, lease).await;
                    *from += 1;
                    self.publish(State {
                        generation: *from,
                        status: Status::Ready(cred),
                    });
                    tracing::debug!(generation = *from, "token refreshed");
                    return Ok(());
                }
                Ok(_) => Error::invalid_response("token was already expired on arrival"),
                Err(e) => e,
            };
        if rotated {
            // The access token is of no use, and the refresh token is the
            // only one that still works: keep it.
            tracing::warn!("token answer unusable; keeping its new refresh token");
            let cred = Credential::unusable(fetched, now);
            self.save(&cred.tokens, lease).await;
            *from += 1;
            self.publish(State {
                generation: *from,
                status: Status::Ready(cred),
            });
        }
        Err(failure)
    }

    /// The current set, overtaken by this refresh, still holds the refresh
    /// token the refresh spent: give it the new one, same access token,
    /// same generation.
    async fn merge_refresh_token(&self, current: &State, fetched: &TokenSet, now: Instant) {
        let Status::Ready(cred) = &current.status else {
            return;
        };
        let tokens = cred
            .tokens
            .clone()
            .with_refresh_token_opt(fetched.refresh_token().cloned());
        let cred = match Credential::build(tokens.clone(), &self.config, now, self.jitter.next()) {
            Ok(cred) if !cred.is_stale(now) => cred,
            _ => Credential::unusable(tokens, now),
        };
        tracing::debug!("a set overtook this refresh; giving it the rotated refresh token");
        self.save(&cred.tokens, None).await;
        self.publish(State {
            generation: current.generation,
            status: Status::Ready(cred),
        });
    }

    /// Saves a fetched set, through the lease if this process holds the
    /// shared lock. A failure is logged and counted, not returned.
    async fn save(&self, tokens: &TokenSet, lease: Option<&dyn RefreshLease>) {
        let deadline = far(self.config.attempt_timeout);
        let _ = match lease {
            Some(lease) => self.store_op("save", lease.commit(tokens), deadline).await,
            None => {
                self.store_op("save", self.store.save(tokens), deadline)
                    .await
            }
        };
    }

    /// Ends the session, unless someone replaced the set meanwhile.
    pub(super) async fn expire(&self, from: u64, err: Error) -> (Outcome, bool) {
        let _commit = self.commit.lock().await;
        let current = self.state.load_full();
        if current.generation != from {
            return (current.outcome(), false);
        }
        // The dead set leaves the store before the state says so, so a
        // login that follows (and waits for this lock) is not wiped.
        let _ = self
            .store_op(
                "clear",
                self.store.clear(),
                far(self.config.attempt_timeout),
            )
            .await;
        self.replace(Status::SessionExpired(err.clone()));
        self.counters
            .sessions_expired
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %err, "session expired");
        (Err(err), true)
    }

    pub(super) fn run_hook(&self) {
        if let Some(hook) = &self.hook {
            // The hook is the application's code: a panic there must not
            // take the coordinator down with it.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook)).is_err() {
                tracing::error!("the on_session_expired hook panicked");
            }
        }
    }
}

/// Whether `stored` should replace the in-memory set: a different access
/// token that expires later (or anything, when memory has none). A set the
/// store kept from before (say a save failed) is older, never adopted: its
/// refresh token may have been rotated away.
pub(super) fn is_newer(stored: &TokenSet, current: Option<&TokenSet>) -> bool {
    let Some(current) = current else { return true };
    stored.access_token() != current.access_token()
        && match (stored.expires_at(), current.expires_at()) {
            (Some(s), Some(c)) => s > c,
            (_, None) => true,
            (None, Some(_)) => false,
        }
}
