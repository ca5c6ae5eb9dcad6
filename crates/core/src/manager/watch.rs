//! The session's state as a stream a caller can follow: fresh, refreshing,
//! degraded but still valid, ended with its reason.
//!
//! Invariants:
//! - Nothing is kept or sent until someone watches: the channel is made by
//!   the first [`TokenManager::watch`], so an idle session pays one empty
//!   cell for it.
//! - The state is recomputed at each change that can move it (a
//!   publication, a refresh starting, a refresh ending) and sent only when
//!   it differs; the hot path never touches it.
//! - A watch holds its manager: a watched session of a
//!   [`Sessions`](crate::Sessions) registry is not evicted.

use std::{fmt, sync::atomic::Ordering};

use futures_util::Stream;
use tokio::sync::watch;

use super::{Inner, TokenManager, credential::Status};
use crate::{Error, ErrorKind};

/// Where a session stands, as [`TokenManager::watch`] reports it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SessionState {
    /// No token set: before the first login or load, or after
    /// [`clear`](TokenManager::clear).
    Empty,
    /// A token is served, and no refresh runs.
    Fresh {
        /// The generation of the token served.
        generation: u64,
    },
    /// A refresh runs. The token of `generation`, if still valid, is served
    /// meanwhile.
    Refreshing {
        /// The generation being replaced.
        generation: u64,
    },
    /// The last refresh failed with an error of this kind, and the token of
    /// `generation` is still served until it expires (or a refresh
    /// succeeds). An authorization server that is down looks like this.
    Degraded {
        /// The generation still served.
        generation: u64,
        /// What the failed refresh ran into.
        error: ErrorKind,
    },
    /// No token can be served (none, or the last one expired) and the last
    /// refresh failed with an error of this kind: requests fail until a
    /// refresh succeeds.
    Unavailable {
        /// What the failed refresh ran into.
        error: ErrorKind,
    },
    /// The session is over: the refresh token was refused or may have been
    /// spent without an answer, or the application ended it. Log in again.
    Ended(Error),
}

impl SessionState {
    /// Whether the session ended.
    pub fn is_ended(&self) -> bool {
        matches!(self, SessionState::Ended(_))
    }

    /// The same state, for sending only changes: an end is an end.
    fn same(&self, other: &SessionState) -> bool {
        use SessionState::*;
        match (self, other) {
            (Empty, Empty) | (Ended(_), Ended(_)) => true,
            (Unavailable { error: x }, Unavailable { error: y }) => x == y,
            (Fresh { generation: a }, Fresh { generation: b })
            | (Refreshing { generation: a }, Refreshing { generation: b }) => a == b,
            (
                Degraded {
                    generation: a,
                    error: x,
                },
                Degraded {
                    generation: b,
                    error: y,
                },
            ) => a == b && x == y,
            _ => false,
        }
    }
}

/// Follows one session's [`SessionState`]: made by
/// [`TokenManager::watch`].
///
/// Holds the manager: a watched session of a
/// [`Sessions`](crate::Sessions) registry stays in memory.
pub struct SessionWatch {
    manager: TokenManager,
    receiver: watch::Receiver<SessionState>,
}

impl fmt::Debug for SessionWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionWatch")
            .field("state", &*self.receiver.borrow())
            .finish()
    }
}

impl SessionWatch {
    /// The state now.
    pub fn current(&self) -> SessionState {
        self.receiver.borrow().clone()
    }

    /// Waits for the next change and returns the state it left. The
    /// manager is held, so this never ends by itself.
    pub async fn changed(&mut self) -> SessionState {
        // The sender lives in the manager this watch holds: it cannot be
        // dropped while we wait.
        let _ = self.receiver.changed().await;
        self.receiver.borrow_and_update().clone()
    }

    /// The state now, then every change, as a [`Stream`]. Changes that
    /// happen faster than the stream is polled are folded: the stream
    /// yields the latest.
    pub fn into_stream(self) -> impl Stream<Item = SessionState> + Send + 'static {
        let first = self.current();
        futures_util::stream::unfold((Some(first), self), |(first, mut watch)| async move {
            let next = match first {
                Some(first) => first,
                None => watch.changed().await,
            };
            Some((next, (None, watch)))
        })
    }

    /// The manager watched.
    pub fn manager(&self) -> &TokenManager {
        &self.manager
    }
}

impl TokenManager {
    /// Follows this session's state: fresh, refreshing, degraded but valid,
    /// ended with its reason. For a health check, a status page, or a UI
    /// that asks the user to log in again when the session ends.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_token_refresh_core::{source, Error, SessionState, TokenManager, TokenSet};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let tokens = TokenManager::builder(source::from_fn(|_| async {
    ///     Err::<TokenSet, _>(Error::session_expired("invalid_grant"))
    /// }))
    /// .initial(TokenSet::bearer("t").with_refresh_token("r"))
    /// .build();
    /// let mut watch = tokens.watch();
    /// assert!(matches!(watch.current(), SessionState::Fresh { generation: 1 }));
    ///
    /// let _ = tokens.refresh().await;
    /// let mut seen = watch.current();
    /// while !seen.is_ended() {
    ///     seen = watch.changed().await;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn watch(&self) -> SessionWatch {
        let inner = &self.inner;
        let sender = inner
            .watch
            .get_or_init(|| watch::Sender::new(inner.session_state(None)));
        SessionWatch {
            manager: self.clone(),
            receiver: sender.subscribe(),
        }
    }
}

impl Inner {
    fn session_state(&self, failed: Option<ErrorKind>) -> SessionState {
        let state = self.state.load();
        let generation = state.generation;
        let refreshing = self.refreshing.load(Ordering::Acquire);
        match &state.status {
            Status::SessionExpired(e) => SessionState::Ended(e.clone()),
            _ if refreshing => SessionState::Refreshing { generation },
            Status::Empty => match failed {
                Some(error) => SessionState::Unavailable { error },
                None => SessionState::Empty,
            },
            Status::Ready(cred) => match failed {
                Some(error) if cred.is_usable() => SessionState::Degraded { generation, error },
                Some(error) => SessionState::Unavailable { error },
                None => SessionState::Fresh { generation },
            },
        }
    }

    /// Tells the watchers, if any, where the session stands now; `failed`:
    /// a refresh just failed with this.
    pub(super) fn notify_state(&self, failed: Option<ErrorKind>) {
        let Some(sender) = self.watch.get() else {
            return;
        };
        let next = self.session_state(failed);
        sender.send_if_modified(|current| {
            if current.same(&next) {
                return false;
            }
            *current = next;
            true
        });
    }
}
