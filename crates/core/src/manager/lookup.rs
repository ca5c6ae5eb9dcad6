//! The hot path: reading the current credential, with or without a
//! per-client cache, and asking for a refresh when it is not usable.
//!
//! Invariants:
//! - A lookup of a fresh credential takes no lock, reads no clock, writes
//!   no shared memory and allocates nothing: with a [`LookupCache`] it is
//!   one flag load and a reference-count increment.
//! - A cache filled by one manager is never read for another (managers are
//!   numbered), and a cached credential is used only while its flag says
//!   `Fresh`: a replaced one says `Retired`.
//! - A stale or absent credential is never handed out: the caller gets the
//!   refresh to wait for.

use std::{
    fmt,
    sync::{Arc, atomic::Ordering},
};

use super::{
    TokenManager,
    credential::{Authorization, Phase, State, Status},
    driver,
    flight::RefreshFuture,
};
use crate::Error;

/// What [`TokenManager::lookup_cached`] remembers between lookups: the last
/// credential it found.
///
/// Keep one per client (a tower service holds one in each clone) and pass it
/// to every lookup. It holds a reference to one token set, so an old set
/// stays in memory until the next lookup through this cache replaces it, or
/// the cache is dropped.
#[derive(Clone, Default)]
pub struct LookupCache {
    /// The manager that filled it (`Inner::id`; 0: none).
    manager: u64,
    state: Option<Arc<State>>,
}

impl LookupCache {
    /// An empty cache: the first lookup fills it.
    pub fn new() -> Self {
        LookupCache::default()
    }
}

impl fmt::Debug for LookupCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupCache")
            .field("generation", &self.state.as_ref().map(|s| s.generation))
            .finish()
    }
}

/// What [`TokenManager::lookup`] found, without waiting.
#[derive(Debug)]
pub enum Lookup {
    /// A usable credential (fresh, or inside the refresh-ahead window with a
    /// background refresh started).
    Ready(Authorization),
    /// No usable credential: this future resolves when the refresh that was
    /// joined or started ends.
    Pending(RefreshFuture),
    /// The session is over; see [`ErrorKind::SessionExpired`](crate::ErrorKind::SessionExpired).
    Failed(Error),
}

impl TokenManager {
    /// The hot path: the credential to send now, without waiting.
    ///
    /// Inside the refresh-ahead window it also starts a background refresh
    /// (when none runs). An atomic load of the state, a load of its phase
    /// flag, and a reference-count increment for the header value: no lock,
    /// no clock read (the manager's timer task moves the phase at its
    /// deadlines), no allocation.
    pub fn lookup(&self) -> Lookup {
        self.lookup_in(&self.inner.state.load())
    }

    /// [`lookup`](Self::lookup) for a caller that keeps a [`LookupCache`]
    /// (one per client, say): while the credential it remembers stays fresh,
    /// the lookup reads one flag of that credential and clones its header,
    /// without touching the manager's shared state. When the credential is
    /// replaced, enters its refresh-ahead window or goes stale, the flag
    /// says so and this looks the state up again.
    #[inline]
    pub fn lookup_cached(&self, cache: &mut LookupCache) -> Lookup {
        if cache.manager == self.inner.id
            && let Some(state) = &cache.state
            && let Status::Ready(cred) = &state.status
            && cred.phase.load(Ordering::Acquire) == Phase::Fresh as u8
        {
            return Lookup::Ready(Authorization {
                header: cred.header.clone(),
                generation: state.generation,
            });
        }
        self.lookup_and_remember(cache)
    }

    #[cold]
    fn lookup_and_remember(&self, cache: &mut LookupCache) -> Lookup {
        let state = self.inner.state.load_full();
        let found = self.lookup_in(&state);
        cache.manager = self.inner.id;
        cache.state = Some(state);
        found
    }

    fn lookup_in(&self, state: &State) -> Lookup {
        match &state.status {
            Status::Ready(cred) => {
                let phase = match cred.phase() {
                    Phase::Untimed => driver::arm(&self.inner, cred),
                    phase => phase,
                };
                if phase == Phase::Stale {
                    return Lookup::Pending(self.inner.start_or_join(state.generation, false));
                }
                if phase == Phase::Ahead && !self.inner.refreshing.load(Ordering::Acquire) {
                    tracing::debug!(
                        generation = state.generation,
                        "token expiring soon; refreshing in background"
                    );
                    drop(self.inner.start_or_join(state.generation, false));
                }
                // Fresh, or ahead; or retired since it was loaded a moment
                // ago, which is as if it had been loaded a moment earlier.
                Lookup::Ready(Authorization {
                    header: cred.header.clone(),
                    generation: state.generation,
                })
            }
            Status::Empty => Lookup::Pending(self.inner.start_or_join(state.generation, false)),
            Status::SessionExpired(e) => Lookup::Failed(e.clone()),
        }
    }

    /// The credential to send, waiting for a refresh when there is none usable.
    ///
    /// # Errors
    ///
    /// The refresh's error, [`SessionExpired`](crate::ErrorKind::SessionExpired),
    /// or [`NoRuntime`](crate::ErrorKind::NoRuntime).
    pub async fn authorization(&self) -> Result<Authorization, Error> {
        match self.lookup() {
            Lookup::Ready(auth) => Ok(auth),
            Lookup::Pending(fut) => fut.await,
            Lookup::Failed(e) => Err(e),
        }
    }

    /// Refreshes because a credential of `generation` was rejected, unless a
    /// newer, usable generation is already current, in which case that one
    /// is returned at once. Joins a refresh already in flight.
    pub fn refresh_if(&self, generation: u64) -> RefreshFuture {
        let state = self.inner.state.load();
        if let Status::SessionExpired(e) = &state.status {
            return RefreshFuture::done(Err(e.clone()));
        }
        if state.generation != generation
            && let Some(done) = self.inner.settled(&state)
        {
            return RefreshFuture::done(done);
        }
        // Whatever generation was rejected, what is refreshed is the set
        // current now (a bogus future generation cannot keep it going).
        let current = state.generation;
        drop(state);
        self.inner.start_or_join(current, true)
    }

    /// [`refresh_if`](Self::refresh_if) for a request that was rejected at
    /// `generation` and is about to be sent again: the same refresh (or the
    /// newer credential at once), and, once it resolves with a credential,
    /// one more in [`Stats::replays`](crate::Stats::replays). A refresh that
    /// fails replays nothing and counts nothing.
    ///
    /// This is what middleware calls before it replays a request, so that
    /// the count covers every client of the manager. The count moves only
    /// with a credential handed out for a replay; there is no bare counter.
    pub fn replay_if(&self, generation: u64) -> RefreshFuture {
        self.refresh_if(generation).counting_replay(&self.inner)
    }

    /// Refreshes now (joining a refresh in flight), whatever the expiry says.
    pub fn refresh(&self) -> RefreshFuture {
        self.refresh_if(self.generation())
    }
}
