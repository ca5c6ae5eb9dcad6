//! Every change of the token set: a refresh's result, an adoption from the
//! store, a session's end, and `set`/`clear`/`load`; each saved (where it
//! must be) before it is published.
//!
//! Invariants:
//! - Every writer holds the `commit` lock from its look at the state to its
//!   publication, so the store never ends up holding a set that memory has
//!   moved past, and no writer is overtaken between its check and its write.
//! - One lock order: the store's lock (the refresh turn's lease), then the
//!   `commit` lock. Nothing waits for the store's lock with the `commit`
//!   lock held: under it, the store is written through a lease already
//!   held, or through a store that has no lock. `set`, `clear` and
//!   `end_session` ([`Inner::overwrite`]) take the store's turn first, as a
//!   refresh does, or write through the lease of this manager's own
//!   refresh, which is withdrawn under the `commit` lock before it is
//!   released.
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

use futures_util::future::{self, Either};
use tokio::{sync::MutexGuard, time::Instant};

use super::{
    Inner,
    credential::{Authorization, Credential, State, Status},
    flight::Outcome,
    refresh::{ended_elsewhere, far, remaining},
};
use crate::{
    BoxFuture, EndReason, Error, ErrorKind, RefreshLease, RefreshToken, RefreshTurn, TokenSet,
    TokenStore, metrics, token::RefreshMark,
};

/// What taking a stored set did.
pub(super) enum Adopted {
    /// A usable credential is current (the stored one, or another writer's).
    Usable,
    /// Taken for its refresh token only: refresh from it.
    Unusable,
    /// The store records the session's end.
    Ended(Error),
}

/// What `set`, `clear` and `end_session` write, whatever the store holds.
pub(super) enum Overwrite {
    Save(TokenSet),
    Clear,
}

impl Overwrite {
    fn what(&self) -> &'static str {
        match self {
            Overwrite::Save(_) => "save",
            Overwrite::Clear => "clear",
        }
    }

    fn to_store<'a>(&'a self, store: &'a dyn TokenStore) -> BoxFuture<'a, Result<(), Error>> {
        match self {
            Overwrite::Save(tokens) => store.save(tokens),
            Overwrite::Clear => store.clear(),
        }
    }

    fn to_lease<'a>(&'a self, lease: &'a dyn RefreshLease) -> BoxFuture<'a, Result<(), Error>> {
        match self {
            Overwrite::Save(tokens) => lease.commit(tokens),
            Overwrite::Clear => lease.clear(),
        }
    }
}

/// How an overwrite reaches the store.
enum Via {
    /// The store has no lock: its own `save` or `clear`.
    Store,
    /// The lease this overwrite took; released after the write.
    Taken(Taken),
    /// The lease of this manager's refresh, which releases it.
    Own(Arc<dyn RefreshLease>),
    /// No turn in time, or the store failed: published, not written.
    Failed(Error),
}

/// A lease an overwrite took. Released after the write; if the overwrite
/// is dropped first (its caller gave up), released by a task of its own,
/// so that other processes do not wait out the lock's expiry.
struct Taken(Option<Box<dyn RefreshLease>>);

impl Taken {
    async fn release(mut self, inner: &Inner) {
        if let Some(lease) = self.0.take() {
            let _ = inner
                .store_op(
                    "unlock",
                    lease.release(),
                    far(inner.common.config.attempt_timeout),
                )
                .await;
        }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if let Some(lease) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = lease.release().await;
            });
        }
    }
}

/// Marks that this manager's refresh holds the store's lock, so that
/// overwrites go through its lease meanwhile. Dropped (the refresh is over,
/// or its task was dropped), it withdraws the lease.
pub(super) struct OwnLease<'a> {
    inner: &'a Inner,
}

impl OwnLease<'_> {
    /// Withdraws the lease once no overwrite is writing through it: the
    /// caller may release it then.
    pub(super) async fn end(self) {
        let inner = self.inner;
        let _commit = inner.commit.lock().await;
        drop(self);
    }
}

impl Drop for OwnLease<'_> {
    fn drop(&mut self) {
        *self.inner.lock_lease() = None;
    }
}

impl Inner {
    /// Offers the lease this manager's refresh holds to overwrites, until
    /// the guard is ended or dropped.
    pub(super) fn hold_lease(&self, lease: &Arc<dyn RefreshLease>) -> OwnLease<'_> {
        *self.lock_lease() = Some(Arc::clone(lease));
        self.lease_taken.notify_waiters();
        OwnLease { inner: self }
    }

    /// Writes `next`'s change to the store and publishes its status
    /// (`set`, `clear`, `end_session`), in the one lock order: the store's
    /// turn first, as a refresh takes it, then the `commit` lock.
    ///
    /// - While this manager's refresh holds the store's lock, through its
    ///   lease, without waiting for its token request.
    /// - Else by the store's turn: no coordination, the store's own write;
    ///   the lock, through that lease, released after; another process's
    ///   refresh, wait for it (or for this manager's refresh to take the
    ///   lock) and ask again.
    ///
    /// The status is published whatever the write did; its error is
    /// returned. Bounded by `deadline`.
    pub(super) async fn overwrite(
        &self,
        next: impl FnOnce(&State) -> (Overwrite, Status),
        deadline: Instant,
    ) -> Result<(), Error> {
        let (via, commit) = self.overwrite_turn(deadline).await;
        let (write, status) = next(&self.state.load());
        let what = write.what();
        let written = match &via {
            Via::Failed(e) => Err(e.clone()),
            Via::Store => {
                self.store_op(what, write.to_store(&*self.store), deadline)
                    .await
            }
            Via::Taken(Taken(Some(lease))) => {
                self.store_op(what, write.to_lease(&**lease), deadline)
                    .await
            }
            Via::Own(lease) => {
                self.store_op(what, write.to_lease(&**lease), deadline)
                    .await
            }
            // Only `release` and `drop` empty it, after the write.
            Via::Taken(Taken(None)) => Ok(()),
        };
        self.replace(status);
        drop(commit);
        if let Via::Taken(taken) = via {
            taken.release(self).await;
        }
        written
    }

    /// The store's turn for an overwrite, and the `commit` lock, taken
    /// after it.
    async fn overwrite_turn(&self, deadline: Instant) -> (Via, MutexGuard<'_, ()>) {
        // Bounded: every turn waits on the store within the deadline, and
        // the loop ends at the deadline.
        loop {
            // Registered before the look at `lease`, so that a lease this
            // manager's refresh takes after it wakes the wait below.
            let taken = self.lease_taken.notified();
            let mut taken = std::pin::pin!(taken);
            taken.as_mut().enable();
            let commit = self.commit.lock().await;
            let own = self.lock_lease().clone();
            if let Some(lease) = own {
                return (Via::Own(lease), commit);
            }
            drop(commit);
            if Instant::now() >= deadline {
                self.common
                    .counters
                    .store_errors
                    .fetch_add(1, Ordering::Relaxed);
                let err = Error::new(
                    ErrorKind::Store,
                    "the store's refresh lock was not free in time",
                );
                return (Via::Failed(err), self.commit.lock().await);
            }
            let via = match self
                .store_op("lock", self.store.begin_refresh(), deadline)
                .await
            {
                Ok(RefreshTurn::Uncoordinated) => Via::Store,
                Ok(RefreshTurn::Leader(lease)) => Via::Taken(Taken(Some(lease))),
                Ok(RefreshTurn::Follower(wait)) => {
                    let waited = std::pin::pin!(self.store_op("lock", wait, deadline));
                    match future::select(waited, taken.as_mut()).await {
                        Either::Left((Ok(()), _)) | Either::Right(_) => continue,
                        Either::Left((Err(e), _)) => Via::Failed(e),
                    }
                }
                Err(e) => Via::Failed(e),
            };
            return (via, self.commit.lock().await);
        }
    }

    /// A store call, bounded by the attempt timeout and `deadline`, and
    /// counted on failure.
    pub(super) async fn store_op<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<T, Error>>,
        deadline: Instant,
    ) -> Result<T, Error> {
        let limit = self.common.config.attempt_timeout.min(remaining(deadline));
        let result = match tokio::time::timeout(limit, op).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Store,
                format!("token store {what} timed out"),
            )),
        };
        if let Err(e) = &result {
            self.common
                .counters
                .store_errors
                .fetch_add(1, Ordering::Relaxed);
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
        self.notify_state(None);
    }

    /// Publishes `status` as the next generation (`set`, `clear`, `load`,
    /// `end_session`). Called with the commit lock held.
    pub(super) fn replace(&self, status: Status) {
        let generation = self.state.load().generation + 1;
        self.publish(State { generation, status });
    }

    /// Takes a newer set another process stored. A set whose access token
    /// is no longer good is taken for its refresh token (the live one: the
    /// one in memory was rotated away); a tombstone is taken as the
    /// session's end, its access token served on while it lasts.
    pub(super) async fn adopt(&self, from: &mut u64, stored: TokenSet) -> Adopted {
        let now = Instant::now();
        let ended = stored.ended().map(|_| ended_elsewhere(&stored));
        let cred = match self.common.credential(stored.clone(), now) {
            Ok(cred) if !cred.is_stale(now) => Some(cred),
            _ => None,
        };
        let _commit = self.commit.lock().await;
        let generation = self.state.load().generation;
        if generation != *from {
            // Another writer moved the state meanwhile: theirs stands.
            *from = generation;
            return Adopted::Usable;
        }
        self.common.counters.adopted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            generation = generation + 1,
            "adopting a newer token set from the store"
        );
        let (status, adopted) = match (cred, ended) {
            (Some(cred), None) => (Status::Ready(cred), Adopted::Usable),
            (Some(cred), Some(err)) if err.is_outcome_unknown() => {
                (Status::Ready(cred.doom(err)), Adopted::Usable)
            }
            (_, Some(err)) => (Status::SessionExpired(err.clone()), Adopted::Ended(err)),
            (None, None) => (
                Status::Ready(Credential::unusable(stored, now)),
                Adopted::Unusable,
            ),
        };
        *from = generation + 1;
        self.publish(State {
            generation: *from,
            status,
        });
        adopted
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
                self.merge_refresh_token(&current, &fetched, now, lease)
                    .await;
            }
            return Ok(());
        }
        let failure = match self.common.credential(fetched.clone(), now) {
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
    async fn merge_refresh_token(
        &self,
        current: &State,
        fetched: &TokenSet,
        now: Instant,
        lease: Option<&dyn RefreshLease>,
    ) {
        let Status::Ready(cred) = &current.status else {
            return;
        };
        let tokens = cred
            .tokens
            .clone()
            .with_refresh_token_opt(fetched.refresh_token().cloned())
            .with_mark(RefreshMark::Live);
        let cred = match self.common.credential(tokens.clone(), now) {
            Ok(cred) if !cred.is_stale(now) => cred,
            _ => Credential::unusable(tokens, now),
        };
        tracing::debug!("a set overtook this refresh; giving it the rotated refresh token");
        self.save(&cred.tokens, lease).await;
        self.publish(State {
            generation: current.generation,
            status: Status::Ready(cred),
        });
    }

    /// Saves a fetched set, through the lease if this process holds the
    /// shared lock. A failure is logged and counted, not returned.
    async fn save(&self, tokens: &TokenSet, lease: Option<&dyn RefreshLease>) {
        let deadline = far(self.common.config.attempt_timeout);
        let _ = match lease {
            Some(lease) => self.store_op("save", lease.commit(tokens), deadline).await,
            None => {
                self.store_op("save", self.store.save(tokens), deadline)
                    .await
            }
        };
    }

    /// Ends the session, unless someone replaced the set meanwhile. After a
    /// refresh that got no answer, a credential still usable and rejected
    /// by nobody is served on instead, doomed: the session ends when it is
    /// stale or rejected. Whatever the store must know was written under
    /// the lock before (`bury`); nothing is written here, since another
    /// process may have stored a new login since.
    pub(super) async fn expire(&self, id: u64, from: u64, err: Error) -> (Outcome, bool) {
        let _commit = self.commit.lock().await;
        let current = self.state.load_full();
        if current.generation != from {
            return (current.outcome(), false);
        }
        if err.is_outcome_unknown()
            && let Status::Ready(cred) = &current.status
            && cred.doomed.is_none()
            && cred.is_usable()
            && let Ok(doomed) = self.common.credential(cred.tokens.clone(), Instant::now())
        {
            let doomed = doomed.doom(err.clone());
            let auth = Authorization {
                header: doomed.header.clone(),
                generation: from,
            };
            // Published before the flight ends, so that no new flight can
            // start from the credential whose refresh token is dead.
            self.publish(State {
                generation: from,
                status: Status::Ready(doomed),
            });
            if self.land_unrejected(id, from) {
                tracing::warn!(error = %err, "refresh token lost; serving the access token until it expires");
                return (Ok(auth), false);
            }
        }
        self.replace(Status::SessionExpired(err.clone()));
        self.common
            .counters
            .sessions_expired
            .fetch_add(1, Ordering::Relaxed);
        metrics::session_expired(&err);
        tracing::warn!(error = %err, "session expired");
        (Err(err), true)
    }

    /// Records in the store that `current`'s refresh token is dead, through
    /// the lease while this process holds the shared lock (before it lets
    /// go of it: no other process may present the token meanwhile).
    pub(super) async fn bury(
        &self,
        from: u64,
        current: Option<&TokenSet>,
        reason: EndReason,
        lease: Option<&dyn RefreshLease>,
    ) {
        let Some(current) = current else { return };
        tracing::debug!(?reason, "recording the session's end in the store");
        let _ = self
            .write_mark(from, current.tombstone(reason), lease)
            .await;
    }

    /// Saves `tokens` (the set of generation `from` with a new mark), unless
    /// the state moved past `from` meanwhile (a `set`: its save stands).
    pub(super) async fn write_mark(
        &self,
        from: u64,
        tokens: TokenSet,
        lease: Option<&dyn RefreshLease>,
    ) -> Result<(), Error> {
        let _commit = self.commit.lock().await;
        if self.state.load().generation != from {
            return Ok(());
        }
        let deadline = far(self.common.config.attempt_timeout);
        match lease {
            Some(lease) => self.store_op("save", lease.commit(&tokens), deadline).await,
            None => {
                self.store_op("save", self.store.save(&tokens), deadline)
                    .await
            }
        }
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
