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
//!   on every path after it, once no `set`, `clear` or `end_session` writes
//!   through it any more.

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures_util::FutureExt;
use tokio::time::Instant;

use super::{
    Inner, Rotation,
    commit::{Adopted, is_newer},
    credential::Status,
    flight::Outcome,
};
use crate::{
    EndReason, Error, RefreshLease, RefreshToken, TokenSet, metrics, store::RefreshTurn,
    token::RefreshMark,
};

/// Values of `Inner::rotation_seen`: what the last refresh answer showed.
pub(super) const UNKNOWN: u8 = 0;
const ROTATES: u8 = 1;
const KEEPS: u8 = 2;

impl Inner {
    /// Runs one refresh to its end; the flag says whether it ended the session.
    pub(super) async fn refresh(self: &Arc<Self>, id: u64, mut from: u64) -> (Outcome, bool) {
        let deadline = Instant::now() + self.common.config.refresh_deadline;
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
            if let Status::Ready(cred) = &state.status
                && let Some(err) = &cred.doomed
            {
                // Its refresh token is dead: it was served while it lasted.
                return self.expire(id, from, Error::clone(err)).await;
            }
            self.common
                .counters
                .attempts
                .fetch_add(1, Ordering::Relaxed);
            let err = match self.attempt(&mut from, deadline).await {
                Ok(()) => {
                    if self.try_land(id, from) {
                        return (self.state.load().outcome(), false);
                    }
                    // A caller rejected what was just published (a set that
                    // overtook this refresh): refresh again from it.
                    attempt += 1;
                    if attempt > self.common.config.max_attempts || Instant::now() >= deadline {
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
                return self.expire(id, from, err).await;
            }
            if self.leaves_grace_retry(id, from, &err) {
                return (Err(err), false);
            }
            let backoff = self
                .common
                .config
                .backoff
                .delay(attempt, self.common.jitter.next());
            let wait = err
                .retry_after()
                .map_or(backoff, |after| after.max(backoff));
            let retry = err.kind().is_retryable()
                && attempt < self.common.config.max_attempts
                && Instant::now()
                    .checked_add(wait)
                    .is_some_and(|at| at < deadline);
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
                    if let Some(code) = err.oauth_error_code() {
                        summary = summary.with_oauth_error(code.clone());
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

    /// One attempt: adopt what the store holds if it is newer (or the
    /// session's end), else take the store's turn and present the refresh
    /// token under it. `from` follows what it publishes.
    async fn attempt(self: &Arc<Self>, from: &mut u64, deadline: Instant) -> Result<(), Error> {
        // A registry's sessions take turns: a storm of expiries reaches the
        // store and the token endpoint at most `permits` at a time.
        let _turn = match &self.common.permits {
            None => None,
            Some(permits) => {
                match tokio::time::timeout(remaining(deadline), permits.acquire()).await {
                    Ok(Ok(turn)) => Some(turn),
                    _ => {
                        return Err(Error::transient(
                            "no turn among the sessions' refreshes before the deadline",
                        ));
                    }
                }
            }
        };
        // Bounded: every turn either returns or waits on the store (each
        // wait bounded by the deadline), and the loop ends at the deadline.
        loop {
            if Instant::now() >= deadline {
                return Err(Error::transient(
                    "another process's refresh did not finish in time",
                ));
            }
            let state = self.state.load_full();
            let current = state.tokens();
            // A store that cannot be read fails the attempt: refreshing anyway
            // could present a refresh token another process already rotated.
            let stored = self.store_op("load", self.store.load(), deadline).await?;
            let unanswered = unanswered_mark(stored.as_ref(), current);
            match self.reconcile(from, current, stored).await {
                Reconciled::Done(result) => return result,
                Reconciled::Again => continue,
                Reconciled::Present => {}
            }
            match self
                .store_op("lock", self.store.begin_refresh(), deadline)
                .await?
            {
                RefreshTurn::Uncoordinated => {
                    return self
                        .present(from, current, unanswered, None, deadline)
                        .await;
                }
                RefreshTurn::Leader(lease) => {
                    let lease: Arc<dyn RefreshLease> = Arc::from(lease);
                    // `set`, `clear` and `end_session` write through it
                    // meanwhile: waiting for the lock, they would wait
                    // for this token request.
                    let own = self.hold_lease(&lease);
                    let result = self.lead(from, current, &*lease, deadline).await;
                    own.end().await;
                    let _ = self
                        .store_op(
                            "unlock",
                            lease.release(),
                            far(self.common.config.attempt_timeout),
                        )
                        .await;
                    return match result {
                        Led::Done(result) => result,
                        // The store moved on under the lock (a newer set,
                        // adopted unusable): look again.
                        Led::Again => continue,
                    };
                }
                RefreshTurn::Follower(wait) => {
                    tracing::debug!(generation = *from, "another process is refreshing; waiting");
                    // Never present the refresh token while another
                    // process holds the lock: wait, then look at the store
                    // again (it holds their answer, or their tombstone).
                    let waiting = metrics::lease_wait_started();
                    let waited = tokio::time::timeout(remaining(deadline), wait).await;
                    metrics::lease_wait_ended(waiting);
                    if waited.is_err() {
                        return Err(Error::transient(
                            "another process's refresh did not finish in time",
                        ));
                    }
                }
            }
        }
    }

    /// What the stored set means for the set in memory, before any lock and
    /// again under it.
    async fn reconcile(
        &self,
        from: &mut u64,
        current: Option<&TokenSet>,
        stored: Option<TokenSet>,
    ) -> Reconciled {
        let Some(stored) = stored else {
            return Reconciled::Present;
        };
        if is_newer(&stored, current) {
            return match self.adopt(from, stored).await {
                Adopted::Usable => Reconciled::Done(Ok(())),
                Adopted::Ended(err) => Reconciled::Done(Err(err)),
                // Its access token is no good, but its refresh token is
                // the live one: refresh from it.
                Adopted::Unusable => Reconciled::Again,
            };
        }
        if current.is_some_and(|c| stored.buries(c)) {
            return Reconciled::Done(Err(ended_elsewhere(&stored)));
        }
        Reconciled::Present
    }

    /// Under the shared lock: look at the store once more (another process
    /// may have finished, or died presenting this refresh token), then
    /// present it.
    async fn lead(
        self: &Arc<Self>,
        from: &mut u64,
        current: Option<&TokenSet>,
        lease: &dyn RefreshLease,
        deadline: Instant,
    ) -> Led {
        let stored = match self.store_op("load", self.store.load(), deadline).await {
            Ok(stored) => stored,
            Err(e) => return Led::Done(Err(e)),
        };
        let unanswered = unanswered_mark(stored.as_ref(), current);
        match self.reconcile(from, current, stored).await {
            Reconciled::Done(result) => return Led::Done(result),
            Reconciled::Again => return Led::Again,
            Reconciled::Present => {}
        }
        if !lease.is_held() {
            return Led::Done(Err(Error::transient(
                "lost the shared refresh lock before the token request",
            )));
        }
        Led::Done(
            self.present(from, current, unanswered, Some(lease), deadline)
                .await,
        )
    }

    /// Presents the refresh token, unless an earlier presentation of it
    /// got no answer (`unanswered`: when, and whether it was retried) and
    /// the server may have spent it.
    async fn present(
        &self,
        from: &mut u64,
        current: Option<&TokenSet>,
        unanswered: Option<(u64, bool)>,
        lease: Option<&dyn RefreshLease>,
        deadline: Instant,
    ) -> Result<(), Error> {
        let mut retry = None;
        if let Some((at_unix_ms, retried)) = unanswered {
            // A process presented this refresh token and recorded no answer:
            // it died or gave up mid-request, and the server may have spent
            // the token.
            match self.after_unanswered(at_unix_ms, retried) {
                Unanswered::PresentAgain => {}
                Unanswered::Retry => retry = Some(at_unix_ms),
                Unanswered::Wait(after) => {
                    return Err(Error::transient(
                        "a refresh got no answer; presenting the refresh token once more \
                         when that request can no longer arrive (the server's reuse grace)",
                    )
                    .with_retry_after(after));
                }
                Unanswered::End => {
                    let err = unanswered_error(Error::transient(
                        "the refresh token was presented before and got no answer",
                    ));
                    self.bury(*from, current, EndReason::Unanswered, lease)
                        .await;
                    return Err(err);
                }
            }
        }
        self.fetch(from, current, lease, retry, deadline).await
    }

    /// The token request, then the commit of what it brought. `retry`: this
    /// is the one retry, within the reuse grace, of a presentation at that
    /// time that got no answer.
    async fn fetch(
        &self,
        from: &mut u64,
        current: Option<&TokenSet>,
        lease: Option<&dyn RefreshLease>,
        retry: Option<u64>,
        deadline: Instant,
    ) -> Result<(), Error> {
        let spent = current.and_then(|c| c.refresh_token()).cloned();
        let presented_at = retry.unwrap_or_else(now_unix_ms);
        let retry = retry.is_some();
        let limit = self.common.config.attempt_timeout.min(remaining(deadline));
        if let (Some(current), Some(_)) = (current, &spent) {
            // Recorded before the request leaves: if this process dies with
            // the request in flight, whoever takes the lock next knows the
            // token may be spent.
            let mark = RefreshMark::Presented {
                at_unix_ms: presented_at,
                retried: retry,
            };
            let marked = self
                .write_mark(*from, current.clone().with_mark(mark), lease)
                .await;
            if let Err(e) = marked
                && lease.is_some()
            {
                // Others rely on the mark: without it, do not present.
                return Err(e);
            }
        }
        let call = AssertUnwindSafe(self.common.source.fetch(current)).catch_unwind();
        let result = match tokio::time::timeout(limit, call).await {
            Err(_) => {
                Err(Error::transient("token request got no answer in time").with_outcome_unknown())
            }
            Ok(Err(_)) => Err(Error::transient("token source panicked")),
            Ok(Ok(result)) => result,
        };
        let fetched = match (result, current) {
            (Ok(fetched), _) => fetched,
            (Err(err), Some(current)) if spent.is_some() => {
                return Err(self
                    .unanswered_or_refused(*from, current, err, retry, presented_at, lease)
                    .await);
            }
            (Err(err), _) => return Err(err),
        };
        self.observe_rotation(spent.as_ref(), &fetched);
        let fetched = fetched.inherit_extra(current);
        self.commit(from, fetched, spent.as_ref(), lease).await
    }

    /// A request that presented `current`'s refresh token failed: record
    /// what that means in the store (before the lock is released) and say
    /// what the refresh returns.
    async fn unanswered_or_refused(
        &self,
        from: u64,
        current: &TokenSet,
        err: Error,
        retry: bool,
        presented_at: u64,
        lease: Option<&dyn RefreshLease>,
    ) -> Error {
        if err.is_session_expired() && !err.is_outcome_unknown() {
            // Refused (`invalid_grant`): dead everywhere.
            self.bury(from, Some(current), EndReason::InvalidGrant, lease)
                .await;
            return err;
        }
        if !err.is_outcome_unknown() {
            // The server answered without spending it: clear this request's
            // mark. After a grace retry that leaves the first, unanswered
            // presentation, which may still have spent it (model check).
            let mark = if retry {
                RefreshMark::Presented {
                    at_unix_ms: presented_at,
                    retried: false,
                }
            } else {
                RefreshMark::Live
            };
            let _ = self
                .write_mark(from, current.clone().with_mark(mark), lease)
                .await;
            return err;
        }
        self.common
            .counters
            .unanswered
            .fetch_add(1, Ordering::Relaxed);
        match self.after_unanswered(presented_at, retry) {
            Unanswered::PresentAgain => {
                let _ = self
                    .write_mark(from, current.clone().with_mark(RefreshMark::Live), lease)
                    .await;
                err
            }
            // The mark stays: the next leader (this process or another)
            // makes the one retry the grace allows.
            Unanswered::Retry => err,
            Unanswered::Wait(after) => err.with_retry_after(after),
            Unanswered::End => {
                self.bury(from, Some(current), EndReason::Unanswered, lease)
                    .await;
                unanswered_error(err)
            }
        }
    }

    /// After this process's own request went unanswered within a reuse
    /// grace, the one retry is left to whoever needs a token first, unless
    /// this process does: while its credential is still usable and nobody
    /// rejected it, the flight ends here (a background refresh is snoozed
    /// until the credential is stale). A process whose token endpoint hangs
    /// would otherwise spend the retry on the same silent endpoint, while
    /// another process's retry would have been answered. Ends the flight
    /// (returns true) under the flight lock, so no rejecting caller joins
    /// it afterwards.
    fn leaves_grace_retry(&self, id: u64, from: u64, err: &Error) -> bool {
        if !matches!(self.common.config.rotation, Rotation::Grace(_)) || !err.is_outcome_unknown() {
            return false;
        }
        let state = self.state.load();
        let usable = state.generation == from
            && matches!(&state.status, Status::Ready(cred) if cred.is_usable());
        usable && self.land_unrejected(id, from)
    }

    /// What to do with a refresh token whose presentation at `at_unix_ms`
    /// got no answer; `retried`: it was already presented again once.
    ///
    /// Within a reuse grace `g`, with requests bounded by the attempt
    /// timeout `d`, the one retry is made in `[at + d, at + g - d)`: not
    /// before the first request can no longer reach the server (a server
    /// that mints a new token for a reuse would otherwise kill the retry's
    /// answer), and early enough that the retry itself arrives within the
    /// grace. So a grace shorter than twice the attempt timeout allows no
    /// retry. (Found by the model check in `tests/protocol_model.rs`.)
    fn after_unanswered(&self, at_unix_ms: u64, retried: bool) -> Unanswered {
        match self.common.config.rotation {
            Rotation::Grace(grace) if !retried => {
                let age = u128::from(now_unix_ms().saturating_sub(at_unix_ms));
                let bound = self.common.config.attempt_timeout.as_millis();
                if age + bound >= grace.as_millis() {
                    Unanswered::End
                } else if age < bound {
                    Unanswered::Wait(Duration::from_millis(
                        u64::try_from(bound - age).unwrap_or(u64::MAX),
                    ))
                } else {
                    Unanswered::Retry
                }
            }
            _ if self.may_rotate() => Unanswered::End,
            _ => Unanswered::PresentAgain,
        }
    }

    fn may_rotate(&self) -> bool {
        match self.common.config.rotation {
            Rotation::Never => false,
            Rotation::Always | Rotation::Grace(_) => true,
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

/// What the store says before the lock is taken (and again under it).
enum Reconciled {
    /// Adopted, or the session ended: the attempt is over.
    Done(Result<(), Error>),
    /// The state moved (a stored set adopted for its refresh token only):
    /// look again.
    Again,
    /// Nothing newer: present the refresh token in memory.
    Present,
}

/// How the leader's turn ended.
enum Led {
    Done(Result<(), Error>),
    Again,
}

/// What follows an unanswered presentation of a refresh token.
enum Unanswered {
    /// The server does not rotate: present it again (after a backoff).
    PresentAgain,
    /// Within the reuse grace, and not retried yet: one more presentation.
    Retry,
    /// The retry the grace allows, once the first request can no longer
    /// arrive: after this long.
    Wait(Duration),
    /// It may be spent: the session ends.
    End,
}

/// When `current`'s refresh token was presented without a recorded answer,
/// and whether that was already the grace retry: what `stored` says of the
/// same refresh token.
fn unanswered_mark(stored: Option<&TokenSet>, current: Option<&TokenSet>) -> Option<(u64, bool)> {
    let (stored, current) = (stored?, current?);
    if stored.refresh_token().is_none() || stored.refresh_token() != current.refresh_token() {
        return None;
    }
    match *stored.mark() {
        RefreshMark::Presented {
            at_unix_ms,
            retried,
        } => Some((at_unix_ms, retried)),
        _ => None,
    }
}

/// The session's end after a refresh token may have been spent unanswered.
fn unanswered_error(cause: Error) -> Error {
    Error::session_expired(
        "a token request that presented the refresh token got no answer;          a rotating server may have spent it, so it is not presented again",
    )
    .with_outcome_unknown()
    .with_source(cause)
}

/// The session's end as another process recorded it in the store.
pub(super) fn ended_elsewhere(tombstone: &TokenSet) -> Error {
    let err = match tombstone.ended() {
        Some(EndReason::Unanswered) => unanswered_error(Error::transient(
            "the store records that the refresh token was presented without an answer",
        )),
        Some(EndReason::Logout) => Error::session_expired("the session was ended; log in again"),
        _ => Error::session_expired(
            "the store records that the server refused the refresh token (invalid_grant); log in again",
        ),
    };
    err.ended_in_store()
}

/// Now, as wall-clock Unix milliseconds: what presentation marks record,
/// since they are compared across processes. Read off tokio's clock from a
/// wall-clock anchor taken once, so that paused test time moves it too.
pub(super) fn now_unix_ms() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    static ANCHOR: std::sync::OnceLock<(SystemTime, Instant)> = std::sync::OnceLock::new();
    let (wall, at) = *ANCHOR.get_or_init(|| (SystemTime::now(), Instant::now()));
    let now = Instant::now();
    let wall_now = if now >= at {
        wall.checked_add(now - at)
    } else {
        wall.checked_sub(at - now)
    };
    wall_now
        .and_then(|w| w.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What is left of the time until `deadline`.
pub(super) fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// A deadline that leaves an operation its whole `limit`.
pub(super) fn far(limit: Duration) -> Instant {
    Instant::now() + limit
}
