//! Where the token set is kept between refreshes and across restarts.

use std::sync::Mutex;

use crate::{BoxFuture, Error, ErrorKind, TokenSet};

/// Loads and saves the token set.
///
/// The coordinator saves every new set before it tells any waiter of success,
/// so a rotated refresh token is never lost to a cancelled caller. Before it
/// asks the [`TokenSource`](crate::TokenSource) for new tokens it loads the
/// store: a set that another process (or an earlier run) saved, newer than
/// the one in memory, is taken without a refresh.
///
/// # One login, many processes
///
/// Processes that share a store (a CLI in two terminals and an MCP host's
/// agents through one [`FileStore`](crate::FileStore), replicas through one
/// Redis) share one refresh token. A rotating server spends it on first use
/// and treats a second use as theft, revoking the whole login (RFC 9700
/// §4.14.2). So the coordinator follows one protocol with every store, and
/// a store that [`begin_refresh`](Self::begin_refresh)es with a lock makes
/// it hold across processes:
///
/// 1. Load the store. A newer set is adopted: no refresh. (A newer set
///    whose access token has expired is adopted for its refresh token,
///    which is the live one.)
/// 2. Take the refresh lock. While another process holds it, wait (bounded
///    by the refresh deadline), then go back to 1: the refresh token is
///    never presented while another process may be presenting it.
/// 3. Under the lock, load again and adopt anything newer.
/// 4. Save the set marked "presented" (with the wall-clock time), then
///    present its refresh token. If this process dies with the request in
///    flight, the next one to take the lock finds the mark: that request
///    may have spent the token.
/// 5. Save what came of it before letting the lock go: the new set; or the
///    old set unmarked when the server answered without spending it (a 5xx,
///    say); or a **tombstone** when the token is dead: refused
///    (`invalid_grant`), or presented without an answer to a server that
///    may rotate (see [`Rotation`](crate::Rotation), whose `Grace` allows
///    one more presentation within the server's reuse grace).
///
/// A tombstone is the set with its refresh token replaced by a fingerprint
/// (a SHA-256 prefix, never the token) and the reason
/// ([`TokenSet::ended`]). Every process checks it before presenting its
/// refresh token and ends its session instead; a still-valid access token
/// serves on until it expires after a lost answer. A new login
/// ([`TokenManager::set`](crate::TokenManager::set)) replaces it, and
/// [`TokenManager::end_session`](crate::TokenManager::end_session) writes
/// one (a logout ends the session everywhere).
///
/// # Writes outside a refresh
///
/// [`TokenManager::set`](crate::TokenManager::set),
/// [`clear`](crate::TokenManager::clear) and
/// [`end_session`](crate::TokenManager::end_session) replace the stored
/// set whatever it holds. They take the same turn first, so that no write
/// lands inside another process's refresh, between its look at the store
/// and its save:
///
/// - [`Uncoordinated`](RefreshTurn::Uncoordinated): [`save`](Self::save)
///   or [`clear`](Self::clear).
/// - [`Leader`](RefreshTurn::Leader): write through the lease
///   ([`RefreshLease::commit`], [`RefreshLease::clear`]), then release it.
/// - [`Follower`](RefreshTurn::Follower): wait, then ask again. A login in
///   one process waits for another process's refresh to end (bounded by
///   the attempt timeout).
///
/// While the process's own refresh holds the lock, they write through that
/// refresh's lease instead, at once: they never wait for its token request.
/// So on every path the coordinator takes a store's lock before its own
/// locks, never the other way round.
///
/// A store only keeps what [`TokenSet::to_stored_json`] (or the set itself)
/// holds: the marks and tombstones travel inside the set, so any store that
/// keeps whole sets keeps them. Stored fields a build does not know are
/// kept too. What a store adds is the lock:
/// [`FileStore`](crate::FileStore) locks a file beside its own (by
/// default), [`LockedStore`](crate::LockedStore) gives any store that lock,
/// and the Redis store takes a lock in Redis, renewed while its holder lives.
pub trait TokenStore: Send + Sync + 'static {
    /// The stored set, if any.
    fn load(&self) -> BoxFuture<'_, Result<Option<TokenSet>, Error>>;
    /// Replaces the stored set.
    fn save<'a>(&'a self, tokens: &'a TokenSet) -> BoxFuture<'a, Result<(), Error>>;
    /// Forgets the stored set.
    fn clear(&self) -> BoxFuture<'_, Result<(), Error>>;

    /// Asks for this process's turn to refresh, for stores that several
    /// processes share (one refresh token, one refresh between them).
    ///
    /// The coordinator calls it after it loaded the store and found nothing
    /// newer. The default says [`RefreshTurn::Uncoordinated`]: refresh, then
    /// [`save`](Self::save). A distributed store answers
    /// [`Leader`](RefreshTurn::Leader) with a lease when it took its lock, or
    /// [`Follower`](RefreshTurn::Follower) while another process holds it.
    fn begin_refresh(&self) -> BoxFuture<'_, Result<RefreshTurn, Error>> {
        Box::pin(async { Ok(RefreshTurn::Uncoordinated) })
    }
}

/// Whose turn it is to refresh; see [`TokenStore::begin_refresh`].
pub enum RefreshTurn {
    /// No coordination between processes: refresh and save as usual.
    Uncoordinated,
    /// This process holds the refresh lock. The coordinator loads the store
    /// once more (another process may have finished just before), refreshes,
    /// saves through the lease, and releases it, whatever happens.
    Leader(Box<dyn RefreshLease>),
    /// Another process is refreshing. The future ends when the stored set
    /// changed or the other process's lock is gone (its holder died, say);
    /// the coordinator then loads the store and adopts a newer set, or tries
    /// again for the lock.
    Follower(BoxFuture<'static, Result<(), Error>>),
}

impl std::fmt::Debug for RefreshTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RefreshTurn::Uncoordinated => "Uncoordinated",
            RefreshTurn::Leader(_) => "Leader",
            RefreshTurn::Follower(_) => "Follower",
        })
    }
}

/// A process's hold on a shared store's refresh lock.
pub trait RefreshLease: Send + Sync {
    /// Saves `tokens` if this lease still holds the lock, and tells the
    /// other processes.
    ///
    /// # Errors
    ///
    /// [`Store`](crate::ErrorKind::Store) if the lock was lost (it expired)
    /// or the store failed. The coordinator keeps the new set in memory
    /// anyway: the refresh happened, and dropping its result would lose a
    /// rotated refresh token for sure.
    fn commit<'a>(&'a self, tokens: &'a TokenSet) -> BoxFuture<'a, Result<(), Error>>;
    /// Gives the lock up, if it is still this lease's.
    fn release(&self) -> BoxFuture<'_, Result<(), Error>>;

    /// Forgets the stored set if this lease still holds the lock, and
    /// tells the other processes: what
    /// [`TokenManager::clear`](crate::TokenManager::clear) (and
    /// [`end_session`](crate::TokenManager::end_session) with no set)
    /// writes while this process holds the lock.
    ///
    /// # Errors
    ///
    /// As [`commit`](Self::commit). The default refuses with a
    /// [`Store`](crate::ErrorKind::Store) error and leaves the store as it
    /// is, since a lease may have no way to clear it: a store whose
    /// [`begin_refresh`](TokenStore::begin_refresh) answers
    /// [`Leader`](RefreshTurn::Leader) should implement it, or
    /// `TokenManager::clear` reports that error (and forgets the set in
    /// memory all the same).
    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async {
            Err(Error::new(
                ErrorKind::Store,
                "this store's refresh lease cannot clear the store",
            ))
        })
    }

    /// Whether the lock is still this lease's, as far as the lease knows.
    ///
    /// A lease that keeps its lock alive while the refresh runs (the Redis
    /// store renews it on a heartbeat) answers `false` once a renewal found
    /// the lock expired or taken by another process. The coordinator asks
    /// just before it presents the refresh token: a lease that lost its lock
    /// gives the refresh up, since another process may be presenting the
    /// same refresh token. Default: `true`.
    fn is_held(&self) -> bool {
        true
    }
}

/// The default store: the set lives in this process only.
#[derive(Default)]
pub struct MemoryStore {
    tokens: Mutex<Option<TokenSet>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Option<TokenSet>) -> R) -> R {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // Option inside is still whole.
        let mut guard = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let has = self.with(|t| t.is_some());
        f.debug_struct("MemoryStore")
            .field("has_tokens", &has)
            .finish()
    }
}

impl TokenStore for MemoryStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<TokenSet>, Error>> {
        let tokens = self.with(|t| t.clone());
        Box::pin(async move { Ok(tokens) })
    }

    fn save<'a>(&'a self, tokens: &'a TokenSet) -> BoxFuture<'a, Result<(), Error>> {
        self.with(|t| *t = Some(tokens.clone()));
        Box::pin(async { Ok(()) })
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        self.with(|t| *t = None);
        Box::pin(async { Ok(()) })
    }
}

impl<T: TokenStore + ?Sized> TokenStore for std::sync::Arc<T> {
    fn load(&self) -> BoxFuture<'_, Result<Option<TokenSet>, Error>> {
        (**self).load()
    }

    fn save<'a>(&'a self, tokens: &'a TokenSet) -> BoxFuture<'a, Result<(), Error>> {
        (**self).save(tokens)
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        (**self).clear()
    }

    fn begin_refresh(&self) -> BoxFuture<'_, Result<RefreshTurn, Error>> {
        (**self).begin_refresh()
    }
}
