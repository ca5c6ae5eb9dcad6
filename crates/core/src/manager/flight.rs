//! Single flight: at most one refresh task per manager, and the futures its
//! waiters hold.
//!
//! Invariants:
//! - At most one refresh task runs per manager, whatever `set`, `clear` or
//!   `load` do meanwhile: two tasks could present the same refresh token.
//!   `running` is filled and emptied only under the `flight` lock, and only
//!   the task itself (or its guard, however it ends) empties it.
//! - `wanted` is the newest generation a caller asked to replace while the
//!   flight runs. The task ends only when the generation it publishes is
//!   newer than `wanted`, checked under the same lock as the task leaves
//!   `running`: no caller can join after that check and be handed the
//!   token it rejected.
//! - Every waiter gets the one outcome of the flight it joined; a waiter
//!   dropped early cancels nothing.
//! - Consecutive flights start at least `min_refresh_interval` apart.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
};

use futures_util::future::{FutureExt, Shared};
use tokio::{sync::oneshot, time::Instant};

use super::{Inner, credential::Authorization, driver};
use crate::{Error, metrics};

pub(super) type Outcome = Result<Authorization, Error>;

#[derive(Default)]
pub(crate) struct Flight {
    running: Option<Running>,
    next_id: u64,
    last_started: Option<Instant>,
    pub(super) wanted: u64,
    /// The newest generation a server rejected (or a caller asked to
    /// replace whatever its expiry said): such a credential is not served
    /// on after a refresh that got no answer.
    rejected: u64,
}

struct Running {
    id: u64,
    outcome: Shared<oneshot::Receiver<Outcome>>,
}

/// Resolves to the outcome of one refresh, shared by every waiter.
///
/// Dropping it does not cancel the refresh.
#[must_use = "the refresh runs anyway; this only reports its outcome"]
pub struct RefreshFuture {
    state: Wait,
    /// Set by [`TokenManager::replay_if`](super::TokenManager::replay_if):
    /// the manager whose replay count grows when a credential comes.
    replay_of: Option<Arc<Inner>>,
}

enum Wait {
    Done(Option<Outcome>),
    Waiting(Shared<oneshot::Receiver<Outcome>>),
}

impl RefreshFuture {
    pub(super) fn done(outcome: Outcome) -> Self {
        RefreshFuture {
            state: Wait::Done(Some(outcome)),
            replay_of: None,
        }
    }

    fn waiting(outcome: Shared<oneshot::Receiver<Outcome>>) -> Self {
        RefreshFuture {
            state: Wait::Waiting(outcome),
            replay_of: None,
        }
    }

    /// This future, counting one replay in `inner`'s stats if it resolves
    /// with a credential (a failed refresh replays nothing).
    pub(super) fn counting_replay(mut self, inner: &Arc<Inner>) -> Self {
        self.replay_of = Some(inner.clone());
        self
    }
}

impl fmt::Debug for RefreshFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            Wait::Done(_) => "done",
            Wait::Waiting(_) => "waiting",
        };
        f.debug_struct("RefreshFuture")
            .field("state", &state)
            .finish()
    }
}

impl Future for RefreshFuture {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = match &mut self.state {
            Wait::Done(outcome) => outcome
                .take()
                .unwrap_or_else(|| Err(Error::transient("refresh future polled after completion"))),
            Wait::Waiting(shared) => match shared.poll_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(outcome)) => outcome,
                // The task was dropped without an outcome (its runtime shut
                // down). Waiters must not hang.
                Poll::Ready(Err(_)) => Err(Error::transient(
                    "refresh task ended without an outcome (its runtime shut down)",
                )),
            },
        };
        if let (Some(inner), Ok(_)) = (self.replay_of.take(), &outcome) {
            inner
                .common
                .counters
                .replays
                .fetch_add(1, Ordering::Relaxed);
            metrics::replayed();
        }
        Poll::Ready(outcome)
    }
}

impl Inner {
    /// Joins the refresh in flight, or starts one to replace `generation`.
    /// `rejected`: a server rejected that generation (or the caller wants
    /// it replaced now), as opposed to a lookup that found it expiring.
    pub(super) fn start_or_join(
        self: &Arc<Self>,
        generation: u64,
        rejected: bool,
    ) -> RefreshFuture {
        let mut flight = self.lock_flight();
        flight.wanted = flight.wanted.max(generation);
        if rejected {
            flight.rejected = flight.rejected.max(generation);
        }
        if let Some(running) = &flight.running {
            metrics::waiter_coalesced();
            return RefreshFuture::waiting(running.outcome.clone());
        }
        // Re-checked under the lock: a refresh may have ended since the
        // caller's look.
        let state = self.state.load();
        if state.generation != generation
            && let Some(done) = self.settled(&state)
        {
            return RefreshFuture::done(done);
        }
        let handle = match driver::runtime() {
            Ok(handle) => handle,
            Err(e) => return RefreshFuture::done(Err(e)),
        };
        let now = Instant::now();
        let start_at = flight
            .last_started
            .map(|last| last + self.common.config.min_refresh_interval)
            .filter(|t| *t > now);
        flight.last_started = Some(start_at.unwrap_or(now));
        flight.wanted = generation;
        let (tx, rx) = oneshot::channel();
        let shared = rx.shared();
        flight.next_id += 1;
        let id = flight.next_id;
        flight.running = Some(Running {
            id,
            outcome: shared.clone(),
        });
        self.refreshing.store(true, Ordering::Release);
        let from = state.generation;
        drop(flight);
        self.notify_state(None);
        // Made here, not in the task: a task dropped before its first poll
        // (its runtime shutting down) runs none of its body.
        let guard = FlightGuard {
            inner: Arc::clone(self),
            id,
        };
        handle.spawn(run(guard, from, start_at, tx));
        RefreshFuture::waiting(shared)
    }

    /// Ends flight `id` with the credential of generation `from` served on
    /// (its refresh token dead, or its grace retry left to another process),
    /// unless a caller rejected that generation: then the flight must go on
    /// (returns false).
    /// Checked under the flight lock, so no caller can join after it and be
    /// handed the credential it rejected.
    pub(super) fn land_unrejected(&self, id: u64, from: u64) -> bool {
        self.land_unless(id, |flight| flight.rejected >= from)
    }

    /// Ends flight `id` if no caller wants `published` replaced; otherwise
    /// the flight goes on (returns false).
    pub(super) fn try_land(&self, id: u64, published: u64) -> bool {
        self.land_unless(id, |flight| flight.wanted >= published)
    }

    /// Ends flight `id` unless `goes_on` says otherwise, under one hold of
    /// the flight lock (returns whether it ended).
    fn land_unless(&self, id: u64, goes_on: impl FnOnce(&Flight) -> bool) -> bool {
        let mut flight = self.lock_flight();
        if goes_on(&flight) {
            return false;
        }
        if flight.running.as_ref().is_some_and(|r| r.id == id) {
            flight.running = None;
            self.refreshing.store(false, Ordering::Release);
        }
        true
    }
}

/// The refresh task. `guard` ends the flight however the task ends.
async fn run(
    guard: FlightGuard,
    from: u64,
    start_at: Option<Instant>,
    tx: oneshot::Sender<Outcome>,
) {
    let inner = Arc::clone(&guard.inner);
    if let Some(at) = start_at {
        tokio::time::sleep_until(at).await;
    }
    inner
        .common
        .counters
        .started
        .fetch_add(1, Ordering::Relaxed);
    let started = metrics::refresh_started();
    let (outcome, expired) = inner.refresh(guard.id, from).await;
    let counter = match &outcome {
        Ok(_) => &inner.common.counters.succeeded,
        Err(_) => {
            inner.snooze_background(&inner.state.load_full());
            &inner.common.counters.failed
        }
    };
    counter.fetch_add(1, Ordering::Relaxed);
    metrics::refresh_ended(started, outcome.as_ref().err().map(Error::kind));
    drop(guard);
    inner.notify_state(outcome.as_ref().err().map(Error::kind));
    // Nobody waiting is fine: the state is published already.
    let _ = tx.send(outcome);
    if expired {
        inner.run_hook();
    }
}

struct FlightGuard {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut flight = self.inner.lock_flight();
        if flight.running.as_ref().is_some_and(|r| r.id == self.id) {
            flight.running = None;
            self.inner.refreshing.store(false, Ordering::Release);
        }
    }
}
