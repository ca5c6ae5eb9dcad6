//! Many sessions in one process: a registry of token managers keyed by the
//! application's key (a user, a session cookie, a tenant).
//!
//! Invariants:
//! - Sessions never cross keys: a key's manager is built with that key's
//!   store and hook, and is found only under that key.
//! - At most one manager per key is alive in the process: a session is
//!   evicted only while nothing but the registry holds it (no request, no
//!   refresh in flight, no handle kept by the application), checked under
//!   its shard's write lock, where no new handle can be made. So two
//!   managers of one key never refresh side by side.
//! - No task per session: sessions share the source, the settings and the
//!   counters ([`Common`](crate::manager)), and have no phase driver (their
//!   lookups read the clock).
//! - Bounded: past [`max_sessions`](SessionsBuilder::max_sessions) held
//!   sessions, the ones idle longest are evicted (down to seven eighths of
//!   the bound, so eviction runs once per many insertions). An evicted
//!   session has every change saved in its store: the next request for its
//!   key builds a new manager that loads it, without a token request while
//!   the stored access token is valid.
//! - The lookup of a held session takes one shard's read lock (never held
//!   across an await) and one clock read; nothing allocates.

use std::{
    collections::HashMap,
    fmt,
    hash::{BuildHasher, Hash, RandomState},
    sync::{
        Arc, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use crate::{
    Error, ErrorKind, Stats, TokenManager, TokenManagerBuilder, TokenSet, TokenStore,
    manager::Common, metrics,
};

type StoreFor<K> = dyn Fn(&K) -> Box<dyn TokenStore> + Send + Sync;
type EndedHook<K> = dyn Fn(&K) + Send + Sync;

/// Token managers for many sessions, one per key: per user of a
/// backend-for-frontend, per tenant of a worker, per audience.
///
/// Each key has its own token set and refresh token, its own single
/// flight, and its own store ([`SessionsBuilder`] takes a store per key: a
/// file in a directory with [`FileStore::keyed`](crate::FileStore::keyed),
/// a Redis key with a prefix), with the cross-process rules of that store.
/// Ending one session ([`end_session`](Self::end_session), or its refresh
/// token refused) touches no other. Sessions share the token source, the
/// settings and the counters, and run no task of their own.
///
/// Cheap to clone. The tower layer picks a request's session from the
/// request's extensions (`TokenRefreshLayer::sessions` in
/// `tower-token-refresh`) and refuses a request that names none.
///
/// # Example
///
/// ```
/// use tower_token_refresh_core::{source, FileStore, Sessions, TokenManager, TokenSet};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("ttr-sessions-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// // One refresh-token grant serves every user: it refreshes the set it is given.
/// let grant = source::from_fn(|current: Option<TokenSet>| async move {
///     let user = current.map(|t| t.access_token().secret().to_owned()).unwrap_or_default();
///     Ok(TokenSet::bearer(user))
/// });
/// let sessions: Sessions<String> = Sessions::builder(TokenManager::builder(grant))
///     .store(move |user: &String| FileStore::keyed(&dir, user))
///     .max_sessions(10_000)
///     .build()?;
///
/// // After each user's login:
/// sessions.set("alice".to_owned(), TokenSet::bearer("alice-token")).await?;
/// sessions.set("bob".to_owned(), TokenSet::bearer("bob-token")).await?;
///
/// let alice = sessions.session(&"alice".to_owned()).authorization().await?;
/// assert_eq!(alice.header().to_str()?, "Bearer alice-token");
///
/// // Bob logs out: Alice's session goes on.
/// sessions.end_session(&"bob".to_owned()).await?;
/// assert!(sessions.session(&"bob".to_owned()).is_session_expired());
/// assert!(!sessions.session(&"alice".to_owned()).is_session_expired());
/// # std::fs::remove_dir_all(std::env::temp_dir().join(format!("ttr-sessions-doc-{}", std::process::id())))?;
/// # Ok(()) }
/// ```
pub struct Sessions<K> {
    inner: Arc<Registry<K>>,
}

impl<K> Clone for Sessions<K> {
    fn clone(&self) -> Self {
        Sessions {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Registry<K> {
    common: Arc<Common>,
    store: Box<StoreFor<K>>,
    hook: Option<Arc<EndedHook<K>>>,
    shards: Box<[RwLock<HashMap<K, Entry>>]>,
    hasher: RandomState,
    max: usize,
    idle: Duration,
    /// What `last_used` counts from.
    epoch: Instant,
    held: AtomicUsize,
    evicted: AtomicU64,
    loaded: AtomicU64,
}

struct Entry {
    manager: TokenManager,
    /// Milliseconds from the registry's epoch to the last lookup.
    last_used: AtomicU64,
}

/// Names a request's session: the request extension a tower layer over
/// [`Sessions`] reads (`TokenRefreshLayer::sessions` in
/// `tower-token-refresh`). Set it where the request is made, from what
/// identifies the user (the signed-in user of the incoming request, say):
///
/// ```
/// use tower_token_refresh_core::SessionKey;
///
/// let mut request = http::Request::get("https://api.example.com/orders").body(())?;
/// request.extensions_mut().insert(SessionKey("user-42".to_owned()));
/// # Ok::<(), http::Error>(())
/// ```
///
/// A request without one (or with a key of another type) is refused, never
/// sent with some other session's token.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey<K>(pub K);

/// Builds a [`Sessions`] registry. Start with [`Sessions::builder`].
#[must_use]
pub struct SessionsBuilder<K> {
    manager: TokenManagerBuilder,
    store: Option<Box<StoreFor<K>>>,
    hook: Option<Arc<EndedHook<K>>>,
    max: usize,
    idle: Duration,
    concurrent: usize,
}

impl<K> fmt::Debug for SessionsBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionsBuilder")
            .field("manager", &self.manager)
            .field("has_store", &self.store.is_some())
            .field("max_sessions", &self.max)
            .field("idle_timeout", &self.idle)
            .field("max_concurrent_refreshes", &self.concurrent)
            .finish_non_exhaustive()
    }
}

impl<K> Sessions<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// Starts a registry whose sessions all take `manager`'s source and
    /// settings (refresh ahead, timeouts, rotation, scheme...).
    ///
    /// A store, an initial set or an `on_session_expired` hook belong to
    /// one session, not to all: set them per key with
    /// [`SessionsBuilder::store`], [`Sessions::set`] and
    /// [`SessionsBuilder::on_session_ended`]. [`SessionsBuilder::build`]
    /// refuses a `manager` that has any of them.
    pub fn builder(manager: TokenManagerBuilder) -> SessionsBuilder<K> {
        SessionsBuilder {
            manager,
            store: None,
            hook: None,
            max: 10_000,
            idle: Duration::from_secs(30 * 60),
            concurrent: 64,
        }
    }

    /// The manager of `key`'s session: the one held, or a new one that loads
    /// the key's store on its first lookup. Hold it no longer than you use
    /// it: a held session is never evicted.
    pub fn session(&self, key: &K) -> TokenManager {
        let registry = &*self.inner;
        let shard = registry.shard(key);
        let now = registry.stamp();
        {
            let map = read(shard);
            if let Some(entry) = map.get(key) {
                entry.last_used.store(now, Ordering::Relaxed);
                return entry.manager.clone();
            }
        }
        self.insert(key, now)
    }

    #[cold]
    #[inline(never)]
    fn insert(&self, key: &K, now: u64) -> TokenManager {
        let registry = &*self.inner;
        let manager = {
            let mut map = write(registry.shard(key));
            if let Some(entry) = map.get(key) {
                entry.last_used.store(now, Ordering::Relaxed);
                return entry.manager.clone();
            }
            let manager = registry.build(key);
            map.insert(
                key.clone(),
                Entry {
                    manager: manager.clone(),
                    last_used: AtomicU64::new(now),
                },
            );
            manager
        };
        registry.loaded.fetch_add(1, Ordering::Relaxed);
        metrics::sessions_held(true, 1);
        if registry.held.fetch_add(1, Ordering::Relaxed) + 1 > registry.max {
            registry.make_room();
        }
        manager
    }

    /// Starts (or replaces) `key`'s session with `tokens`, after a login:
    /// [`TokenManager::set`] on its manager, saved to its store.
    ///
    /// # Errors
    ///
    /// As [`TokenManager::set`].
    pub async fn set(&self, key: K, tokens: TokenSet) -> Result<(), Error> {
        self.session(&key).set(tokens).await
    }

    /// Ends `key`'s session (a logout): [`TokenManager::end_session`] on its
    /// manager, which leaves a tombstone in its store and runs the
    /// [`on_session_ended`](SessionsBuilder::on_session_ended) hook for
    /// this key. No other session is touched.
    ///
    /// # Errors
    ///
    /// As [`TokenManager::end_session`].
    pub async fn end_session(&self, key: &K) -> Result<(), Error> {
        self.session(key).end_session().await
    }

    /// How many sessions are held in memory now.
    pub fn len(&self) -> usize {
        self.inner.held.load(Ordering::Relaxed)
    }

    /// Whether no session is held in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every session that nothing else holds and that was not looked
    /// up for the [`idle_timeout`](SessionsBuilder::idle_timeout). Runs by
    /// itself when the bound is passed; call it from a timer of your own to
    /// give memory back sooner.
    pub fn evict_idle(&self) {
        self.inner.evict(None);
    }

    /// The counters of every session together, with the registry's own.
    pub fn stats(&self) -> SessionsStats {
        let registry = &*self.inner;
        SessionsStats {
            tokens: registry.common.counters.snapshot(),
            held: registry.held.load(Ordering::Relaxed),
            loaded: registry.loaded.load(Ordering::Relaxed),
            evicted: registry.evicted.load(Ordering::Relaxed),
        }
    }
}

impl<K> fmt::Debug for Sessions<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("held", &self.inner.held.load(Ordering::Relaxed))
            .field("max_sessions", &self.inner.max)
            .finish_non_exhaustive()
    }
}

/// A snapshot of a [`Sessions`] registry's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionsStats {
    /// The counters of every session's manager, added up.
    pub tokens: Stats,
    /// Sessions held in memory now.
    pub held: usize,
    /// Managers built: first lookups of a key, and lookups after an
    /// eviction.
    pub loaded: u64,
    /// Sessions evicted (bound or idle).
    pub evicted: u64,
}

impl<K> SessionsBuilder<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// The store of each key's session: a file per key in a directory
    /// ([`FileStore::keyed`](crate::FileStore::keyed)), a Redis key per
    /// session. Required: an evicted or restarted session reloads from it.
    ///
    /// Give each key a store of its own; two keys sharing one store would
    /// share one refresh token.
    pub fn store<S, F>(mut self, store: F) -> Self
    where
        S: TokenStore,
        F: Fn(&K) -> S + Send + Sync + 'static,
    {
        self.store = Some(Box::new(move |key: &K| -> Box<dyn TokenStore> {
            Box::new(store(key))
        }));
        self
    }

    /// Runs `hook` with the key, once each time a session ends (its
    /// refresh token refused or possibly spent, or
    /// [`end_session`](Sessions::end_session)). Keep it quick: it runs on
    /// the refresh task.
    pub fn on_session_ended(mut self, hook: impl Fn(&K) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// The most sessions held in memory, default 10,000 (at least 1). Past
    /// it the sessions idle longest are evicted; sessions in use (a request
    /// or a refresh in flight) are not, so the count may pass the bound by
    /// as many sessions as are busy at once.
    pub fn max_sessions(mut self, max: usize) -> Self {
        self.max = max.max(1);
        self
    }

    /// How long a session may go without a lookup before
    /// [`Sessions::evict_idle`] (or the next eviction for the bound) drops
    /// it. Default 30 minutes.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle.min(crate::MAX_SETTING);
        self
    }

    /// The most refresh attempts that run at once across all sessions
    /// (default 64, at least 1): when thousands of sessions expire together,
    /// their stores and the token endpoint see them this many at a time,
    /// the rest wait their turn (within each refresh's deadline). A turn
    /// covers one attempt: the store's lock, the token request and the
    /// save.
    pub fn max_concurrent_refreshes(mut self, concurrent: usize) -> Self {
        self.concurrent = concurrent.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        self
    }

    /// Builds the registry. Starts no task and needs no runtime.
    ///
    /// # Errors
    ///
    /// [`Rejected`](ErrorKind::Rejected) without a
    /// [`store`](Self::store), or when the manager's builder has a store,
    /// an initial set or an `on_session_expired` hook (they would be one
    /// session's, handed to all).
    pub fn build(self) -> Result<Sessions<K>, Error> {
        let Some(store) = self.store else {
            return Err(Error::new(
                ErrorKind::Rejected,
                "Sessions need a store per key (SessionsBuilder::store): an evicted session reloads from it",
            ));
        };
        let common = self
            .manager
            .into_common(self.concurrent)
            .map_err(per_session)?;
        let shards = std::thread::available_parallelism()
            .map_or(4, usize::from)
            .saturating_mul(4)
            .next_power_of_two()
            .min(64);
        Ok(Sessions {
            inner: Arc::new(Registry {
                common,
                store,
                hook: self.hook,
                shards: (0..shards).map(|_| RwLock::default()).collect(),
                hasher: RandomState::new(),
                max: self.max,
                idle: self.idle,
                epoch: Instant::now(),
                held: AtomicUsize::new(0),
                evicted: AtomicU64::new(0),
                loaded: AtomicU64::new(0),
            }),
        })
    }
}

/// The name of a session's place in a store: the first 128 bits of the
/// SHA-256 of `key`, in 32 lowercase hex digits. What the key holds (an
/// email, `../`, a Redis hash tag) never reaches a path or a key name.
/// [`FileStore::keyed`](crate::FileStore::keyed) and the Redis store's
/// `keyed` name sessions by it.
///
/// ```
/// let name = tower_token_refresh_core::key_digest(b"alice@example.com");
/// assert_eq!(name.len(), 32);
/// assert!(name.bytes().all(|b| b.is_ascii_hexdigit()));
/// ```
pub fn key_digest(key: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = crate::crypto::sha256(key);
    let mut name = String::with_capacity(40);
    for byte in &digest[..16] {
        name.push(char::from(HEX[usize::from(byte >> 4)]));
        name.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    name
}

impl<K> Drop for Registry<K> {
    fn drop(&mut self) {
        // The sessions it held go with it.
        let held = *self.held.get_mut();
        if held > 0 {
            metrics::sessions_held(false, held);
        }
    }
}

fn per_session(what: &str) -> Error {
    Error::new(
        ErrorKind::Rejected,
        format!(
            "the manager builder given to Sessions::builder has {what}: that belongs to one session; \
             set it per key on SessionsBuilder or Sessions"
        ),
    )
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // Nothing panics while a shard is locked; the map stays whole if
    // something ever did.
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

impl<K> Registry<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    fn shard(&self, key: &K) -> &RwLock<HashMap<K, Entry>> {
        // The shard count is a power of two; the high bits pick the shard,
        // the map inside uses its own hasher.
        let hash = self.hasher.hash_one(key);
        let index = (hash >> 32) as usize & (self.shards.len() - 1);
        &self.shards[index]
    }

    fn stamp(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn build(&self, key: &K) -> TokenManager {
        let hook = self.hook.as_ref().map(|hook| {
            let hook = Arc::clone(hook);
            let key = key.clone();
            Box::new(move || hook(&key)) as Box<dyn Fn() + Send + Sync>
        });
        TokenManager::with_common(Arc::clone(&self.common), (self.store)(key), None, hook)
    }

    /// Evicts idle sessions, and past the bound the ones idle longest, down
    /// to seven eighths of the bound.
    fn make_room(&self) {
        let target = self.max - self.max / 8;
        let held = self.held.load(Ordering::Relaxed);
        if held <= target {
            return;
        }
        // The stamps of every evictable session; the cut-off is the one
        // below which enough of them are.
        let mut stamps: Vec<u64> = Vec::with_capacity(held);
        for shard in &*self.shards {
            stamps.extend(
                read(shard)
                    .values()
                    .filter(|e| e.manager.is_unshared())
                    .map(|e| e.last_used.load(Ordering::Relaxed)),
            );
        }
        let excess = held - target;
        let cutoff = if stamps.len() <= excess {
            u64::MAX
        } else {
            *stamps.select_nth_unstable(excess - 1).1
        };
        self.evict(Some(cutoff));
    }

    /// Drops unshared sessions idle past the timeout, or stamped at or
    /// before `cutoff`.
    fn evict(&self, cutoff: Option<u64>) {
        let now = self.stamp();
        let idle = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        let idle_before = now.saturating_sub(idle);
        for shard in &*self.shards {
            let mut map = write(shard);
            let before = map.len();
            map.retain(|_, entry| {
                let stamp = entry.last_used.load(Ordering::Relaxed);
                let old = stamp < idle_before || cutoff.is_some_and(|c| stamp <= c);
                // Under the write lock nobody can take a new handle from
                // the map, so "unshared" stays true until it is dropped.
                !(old && entry.manager.is_unshared())
            });
            let gone = before - map.len();
            drop(map);
            if gone > 0 {
                self.held.fetch_sub(gone, Ordering::Relaxed);
                self.evicted.fetch_add(gone as u64, Ordering::Relaxed);
                metrics::sessions_held(false, gone);
                metrics::sessions_evicted(gone);
            }
        }
    }
}
