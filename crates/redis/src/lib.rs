//! A Redis [`TokenStore`] for [`tower-token-refresh`](https://docs.rs/tower-token-refresh):
//! several processes share one token set and refresh it once between them.
//!
//! When replicas of a service share a refresh token and each refreshes on its
//! own, refresh token rotation breaks them: the second refresh presents a
//! token the server has already replaced, the server answers
//! `invalid_grant` and revokes the whole grant (RFC 9700 §4.14), and every
//! replica is logged out. [`RedisStore`] makes the refresh a single flight
//! across processes:
//!
//! 1. A replica whose token is stale or rejected first loads the stored set:
//!    if another replica refreshed already, it takes that set, no refresh.
//! 2. Otherwise it takes a lock (`SET NX PX` with a value unique to this
//!    attempt), loads once more, refreshes, and writes the new set only
//!    while it still holds the lock and nobody wrote since it took it (a Lua
//!    compare-and-set on the lock value and the set's generation), then
//!    releases it. While it refreshes, a heartbeat renews the lock every
//!    third of its time to live (a Lua compare-and-`PEXPIRE` on the lock
//!    value), so a token request slower than the TTL keeps the lock for as
//!    long as its holder lives: no other replica presents the same refresh
//!    token meanwhile. A lease whose renewal finds the lock gone or taken
//!    says so ([`RefreshLease::is_held`] turns `false`), and its commit is
//!    refused.
//! 3. Replicas that find the lock taken wait for the new set: they are woken
//!    by pub/sub when the holder commits or releases, and poll the lock as a
//!    fallback, at most the lock's time to live per wait. If the holder
//!    died, its heartbeat died with it: its lock expires at most one TTL
//!    after its last renewal and one of them takes over.
//!
//! A login or a logout (`TokenManager::set`, `clear`, `end_session`) takes
//! the lock too, and writes through it: it waits while another replica
//! refreshes (bounded by its manager's attempt timeout), then writes, so a
//! login lands after that refresh's answer, never inside it. While its own
//! replica's refresh holds the lock, it writes through that refresh's
//! lease at once. A [`RedisStore::save`](TokenStore::save) or
//! [`clear`](TokenStore::clear) called directly does not take the lock: a
//! lease that committed before it has its next commit refused, and the
//! direct write stands.
//!
//! The hot path never touches Redis: each replica keeps its own copy in
//! memory and reads it with one atomic load. Redis is used only when that
//! copy is stale or rejected.
//!
//! If Redis is unreachable, a refresh fails with a
//! [`Store`](tower_token_refresh_core::ErrorKind::Store) error (retried with
//! backoff, then reported as `Transient`), and the token in memory is still
//! served while it is valid. Once Redis is back, the connection is made again
//! and refreshes work.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_token_refresh_core::{TokenManager, source, TokenSet};
//! use tower_token_refresh_redis::RedisStore;
//!
//! # async fn run() -> Result<(), tower_token_refresh_core::Error> {
//! let store = RedisStore::builder("redis://127.0.0.1:6379/")
//!     .prefix("billing-api")               // one key space per (token endpoint, client, audience)
//!     .lock_ttl(Duration::from_secs(45))   // how long a killed holder blocks the others
//!     .connect()
//!     .await?;
//! let tokens = TokenManager::builder(source::from_fn(|_| async {
//!     Ok(TokenSet::bearer("…"))
//! }))
//! .store(store)
//! .build();
//! tokens.load().await?; // take what the other replicas stored
//! # Ok(()) }
//! ```
//!
//! Encryption at rest: [`RedisStoreBuilder::sealer`] seals the stored set
//! with a [`Sealer`] (your KMS, or core's
//! `XChaCha20Poly1305Sealer`, feature `xchacha20poly1305`), so Redis holds
//! no token in clear.
//!
//! TLS: enable the `tls` feature and use a `rediss://` URL. AUTH and ACL
//! users: put them in the URL, `redis://user:password@host:port/`.

use std::{
    fmt,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use redis::{AsyncCommands, Script, aio::ConnectionManager};
use tokio::{task::JoinHandle, time::Instant};
use tower_token_refresh_core::{
    BoxFuture, Error, ErrorKind, MAX_SETTING, RefreshLease, RefreshTurn, Sealer, TokenSet,
    TokenStore,
};

/// The default [`RedisStoreBuilder::lock_ttl`].
const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(45);

/// Builds a [`RedisStore`]; start with [`RedisStore::builder`].
#[must_use]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    lock_ttl: Duration,
    poll_interval: Duration,
    timeout: Duration,
    sealer: Option<Arc<dyn Sealer>>,
    #[cfg(feature = "tls")]
    root_certificate: Option<Vec<u8>>,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password.
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("lock_ttl", &self.lock_ttl)
            .field("poll_interval", &self.poll_interval)
            .field("sealed", &self.sealer.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// The key prefix: the set lives at `{prefix}:tokens`, its generation
    /// (one more with every write) at `{prefix}:generation`, the lock at
    /// `{prefix}:lock`, news of a new set on channel `{prefix}:updated`.
    /// Default `tower-token-refresh`. Use one prefix per
    /// (token endpoint, client, audience), as one `TokenManager`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long the refresh lock lives unless renewed or released. Default
    /// 45 s.
    ///
    /// The holder's heartbeat renews the lock every `lock_ttl / 3` for as
    /// long as the holder lives, so the TTL does not bound how long a
    /// refresh may take; it bounds how long a killed holder blocks the
    /// others (at most one TTL after its last renewal). If Redis cannot be
    /// reached for a renewal, the heartbeat keeps trying until the TTL would
    /// have run out, then the lease counts as lost
    /// ([`RefreshLease::is_held`] is `false`).
    ///
    /// It is also the longest a follower waits for the holder in one go
    /// before its coordinator looks at the store again (pub/sub wakes it
    /// as soon as the holder commits or releases).
    ///
    /// The default, 45 s, is longer than the coordinator's default attempt
    /// timeout (30 s:
    /// [`TokenManagerBuilder::attempt_timeout`](tower_token_refresh_core::TokenManagerBuilder::attempt_timeout)),
    /// which bounds the token request a lease is held for: the lock
    /// outlives that request even if every renewal is missed, and a
    /// follower's single wait covers it. Keep that relation when you change
    /// either.
    ///
    /// Taken as at least 3 ms (so a renewal period is at least 1 ms) and at
    /// most [`MAX_SETTING`] (a year).
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl.clamp(Duration::from_millis(3), MAX_SETTING);
        self
    }

    /// How often a waiting replica checks the lock when no notification
    /// comes (pub/sub is the fast path). Default 250 ms; at least 1 ms and
    /// at most [`MAX_SETTING`] (a year).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.clamp(Duration::from_millis(1), MAX_SETTING);
        self
    }

    /// How long a connection attempt or a command may take. Default 5 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Seals the stored set with `sealer`, so that Redis (its memory, its
    /// RDB/AOF files, its replicas, anyone who can `GET`) holds no token in
    /// clear. The value at `{prefix}:tokens` is
    /// [`TokenSet::to_sealed`] with the context `redis:{prefix}:tokens`: a
    /// value copied from another prefix does not open. Every replica needs
    /// the same sealer (the same keys).
    ///
    /// A value that is not sealed, or that `sealer` cannot open (a wrong or
    /// unknown key, altered bytes), is an [`ErrorKind::Store`] error on
    /// load, never taken for an empty store. To seal an existing plain
    /// set, load it with a plain store and save it with the sealed one.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # #[cfg(feature = "xchacha20poly1305")] {
    /// use tower_token_refresh_core::XChaCha20Poly1305Sealer;
    /// use tower_token_refresh_redis::RedisStore;
    ///
    /// # async fn run(key: [u8; 32]) -> Result<(), tower_token_refresh_core::Error> {
    /// // The key comes from your secret manager; 3 names it in every envelope.
    /// let store = RedisStore::builder("redis://127.0.0.1:6379/")
    ///     .prefix("billing-api")
    ///     .sealer(XChaCha20Poly1305Sealer::new(3, &key))
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// # }
    /// ```
    pub fn sealer(mut self, sealer: impl Sealer) -> Self {
        self.sealer = Some(Arc::new(sealer));
        self
    }

    /// Trusts this root certificate (PEM) for `rediss://` instead of the
    /// platform's store: for a private certificate authority.
    #[cfg(feature = "tls")]
    pub fn root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificate = Some(pem.into());
        self
    }

    /// Connects.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Store`] when the URL is invalid or Redis cannot be
    /// reached or refuses the credentials.
    pub async fn connect(self) -> Result<RedisStore, Error> {
        // rustls needs a process-wide crypto provider; keep one the
        // application installed, else install ring's.
        #[cfg(feature = "tls")]
        let _ = rustls::crypto::ring::default_provider().install_default();
        #[cfg(feature = "tls")]
        let client = match self.root_certificate.clone() {
            Some(root_cert) => redis::Client::build_with_tls(
                self.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            ),
            None => redis::Client::open(self.url.as_str()),
        };
        #[cfg(not(feature = "tls"))]
        let client = redis::Client::open(self.url.as_str());
        let client = client.map_err(|e| store_error("invalid Redis URL", e))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| store_error("cannot connect to Redis", e))?;
        let seed = RandomState::new().hash_one(std::process::id());
        Ok(RedisStore {
            shared: Arc::new(Shared {
                client,
                conn,
                context: format!("redis:{}:tokens", self.prefix).into_bytes(),
                sealer: self.sealer,
                tokens_key: format!("{}:tokens", self.prefix),
                generation_key: format!("{}:generation", self.prefix),
                lock_key: format!("{}:lock", self.prefix),
                channel: format!("{}:updated", self.prefix),
                prefix: self.prefix,
                lock_ttl: self.lock_ttl,
                poll_interval: self.poll_interval,
                owner: format!("{:016x}", seed),
                leases: AtomicU64::new(0),
            }),
        })
    }
}

/// A [`TokenStore`] on Redis that coordinates refreshes across processes.
/// See the [crate docs](crate).
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
}

struct Shared {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    tokens_key: String,
    generation_key: String,
    lock_key: String,
    channel: String,
    lock_ttl: Duration,
    poll_interval: Duration,
    sealer: Option<Arc<dyn Sealer>>,
    /// What a sealed set is bound to: `redis:{prefix}:tokens`.
    context: Vec<u8>,
    /// Unique to this store value; with the lease counter it makes every
    /// lock value unique.
    owner: String,
    leases: AtomicU64,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.shared.prefix)
            .field("lock_ttl", &self.shared.lock_ttl)
            .field("sealed", &self.shared.sealer.is_some())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The stored form of `tokens`: sealed if a sealer was given.
    async fn encode(&self, tokens: &TokenSet) -> Result<Vec<u8>, Error> {
        match &self.sealer {
            Some(sealer) => tokens.to_sealed(sealer, &self.context).await,
            None => Ok(tokens.to_stored_json()),
        }
    }

    async fn decode(&self, bytes: &[u8]) -> Result<TokenSet, Error> {
        match &self.sealer {
            Some(sealer) => TokenSet::from_sealed(bytes, sealer, &self.context).await,
            None => TokenSet::from_stored_json(bytes),
        }
    }
}

fn store_error(what: &'static str, e: redis::RedisError) -> Error {
    Error::new(ErrorKind::Store, what).with_source(e)
}

/// Writes the set (or deletes it, with an empty value), moves the
/// generation on and tells the other processes.
/// KEYS: tokens, generation, channel. ARGV: value.
const WRITE: &str = r"
if ARGV[1] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
local g = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', KEYS[3], g)
return g
";

/// Takes the lock if it is free and returns the generation it found.
/// KEYS: lock, generation. ARGV: lease value, TTL in ms.
const LOCK: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
return -1
";

/// Writes the set (or deletes it, with an empty value) only while the lock
/// holds this lease's value and nobody wrote since the lease last did (a
/// plain `save` by another process, say).
/// KEYS: lock, tokens, generation, channel. ARGV: lease value, generation
/// the lease last wrote or found, new set.
const COMMIT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
if tonumber(redis.call('GET', KEYS[3]) or '0') ~= tonumber(ARGV[2]) then
  return -2
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[3])
end
local g = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', KEYS[4], g)
return g
";

/// Deletes the lock if it still holds this lease's value. KEYS: lock, channel.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[2], '0')
  return 1
end
return 0
";

/// Sets the lock's TTL again if it still holds this lease's value.
/// KEYS: lock. ARGV: lease value, TTL in ms. Returns 1 if renewed, else 0.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Numbers the keyed stores of a process (see [`RedisStore::keyed`]).
static KEYED: AtomicU64 = AtomicU64::new(0);

impl RedisStore {
    /// Starts a builder for the Redis at `url` (`redis://host:port/db`,
    /// `redis://user:password@host:port/`, or `rediss://…` with the `tls`
    /// feature).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: "tower-token-refresh".into(),
            lock_ttl: DEFAULT_LOCK_TTL,
            poll_interval: Duration::from_millis(250),
            timeout: Duration::from_secs(5),
            sealer: None,
            #[cfg(feature = "tls")]
            root_certificate: None,
        }
    }

    /// The store of one session among many (a
    /// [`Sessions`](tower_token_refresh_core::Sessions) registry's, per
    /// user or tenant): the same connection, settings and sealer, under the
    /// prefix `{prefix}:session:{digest}`, where the digest is
    /// [`key_digest`](tower_token_refresh_core::key_digest) of `key` (what
    /// the key holds never reaches a Redis key name). Each session has its
    /// own set, lock and channel, so the replicas refresh each session once
    /// between them. No connection is opened.
    ///
    /// ```no_run
    /// use tower_token_refresh_core::{Sessions, TokenManager, TokenSet, source};
    /// use tower_token_refresh_redis::RedisStore;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// # let grant = source::from_fn(|_| async { Ok(TokenSet::bearer("t")) });
    /// let redis = RedisStore::builder("redis://127.0.0.1/").prefix("bff").connect().await?;
    /// let sessions: Sessions<String> = Sessions::builder(TokenManager::builder(grant))
    ///     .store(move |user: &String| redis.keyed(user))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn keyed(&self, key: impl AsRef<[u8]>) -> RedisStore {
        let s = &self.shared;
        let prefix = format!(
            "{}:session:{}",
            s.prefix,
            tower_token_refresh_core::key_digest(key.as_ref())
        );
        RedisStore {
            shared: Arc::new(Shared {
                client: s.client.clone(),
                conn: s.conn.clone(),
                context: format!("redis:{prefix}:tokens").into_bytes(),
                sealer: s.sealer.clone(),
                tokens_key: format!("{prefix}:tokens"),
                generation_key: format!("{prefix}:generation"),
                lock_key: format!("{prefix}:lock"),
                channel: format!("{prefix}:updated"),
                prefix,
                lock_ttl: s.lock_ttl,
                poll_interval: s.poll_interval,
                // Unique to this store value, as for a connected one: a
                // session built again after an eviction never makes the
                // lock value of an earlier lease.
                owner: format!("{}.{}", s.owner, KEYED.fetch_add(1, Ordering::Relaxed)),
                leases: AtomicU64::new(0),
            }),
        }
    }

    /// Connects to `url` with the default settings.
    ///
    /// # Errors
    ///
    /// See [`RedisStoreBuilder::connect`].
    pub async fn connect(url: impl Into<String>) -> Result<RedisStore, Error> {
        Self::builder(url).connect().await
    }

    async fn write(&self, value: Vec<u8>) -> Result<(), Error> {
        let s = &self.shared;
        let mut conn = s.conn.clone();
        Script::new(WRITE)
            .key(&s.tokens_key)
            .key(&s.generation_key)
            .key(&s.channel)
            .arg(value)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| store_error("Redis write failed", e))
    }
}

impl TokenStore for RedisStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<TokenSet>, Error>> {
        Box::pin(async move {
            let mut conn = self.shared.conn.clone();
            let raw: Option<Vec<u8>> = conn
                .get(&self.shared.tokens_key)
                .await
                .map_err(|e| store_error("Redis read failed", e))?;
            match raw {
                Some(bytes) => self.shared.decode(&bytes).await.map(Some),
                None => Ok(None),
            }
        })
    }

    fn save<'a>(&'a self, tokens: &'a TokenSet) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move { self.write(self.shared.encode(tokens).await?).await })
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.write(Vec::new()))
    }

    fn begin_refresh(&self) -> BoxFuture<'_, Result<RefreshTurn, Error>> {
        Box::pin(async move {
            let s = &self.shared;
            let n = s.leases.fetch_add(1, Ordering::Relaxed);
            let value = format!("{}-{}-{n}", s.owner, std::process::id());
            let mut conn = s.conn.clone();
            // Taken before the command is sent: the lock's TTL starts later,
            // at Redis, so this lease never believes its lock lives longer
            // than it does.
            let start = Instant::now();
            let generation: i64 = Script::new(LOCK)
                .key(&s.lock_key)
                .key(&s.generation_key)
                .arg(&value)
                .arg(ttl_millis(s.lock_ttl))
                .invoke_async(&mut conn)
                .await
                .map_err(|e| store_error("Redis lock failed", e))?;
            if generation >= 0 {
                tracing::debug!(prefix = %s.prefix, "took the shared refresh lock");
                Ok(RefreshTurn::Leader(Box::new(Lease::start(
                    Arc::clone(s),
                    value,
                    generation,
                    start,
                ))))
            } else {
                tracing::debug!(prefix = %s.prefix, "another process holds the refresh lock");
                Ok(RefreshTurn::Follower(Box::pin(follow(Arc::clone(s)))))
            }
        })
    }
}

fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// Waits until the set changes or the lock is gone (pub/sub tells of both
/// when the holder commits or releases; polling sees an expiry), at most
/// the lock's TTL.
///
/// The bound: by the documented relation the TTL is longer than the token
/// request a lease is held for (its coordinator's attempt timeout), so a live
/// holder commits or releases, and wakes this wait, before it runs out; a
/// killed holder's lock expires at most one TTL after its last renewal.
/// Running out with the lock still held (a holder renewing past its own
/// deadline, or a TTL set shorter than a refresh) only sends the
/// coordinator to look at the store again and ask for the lock again: it
/// never presents the refresh token while the lock is someone else's.
async fn follow(s: Arc<Shared>) -> Result<(), Error> {
    let deadline = Instant::now() + s.lock_ttl;
    // Subscribe before looking at the lock, so no notification is missed.
    let mut pubsub = match s.client.get_async_pubsub().await {
        Ok(mut pubsub) => match pubsub.subscribe(&s.channel).await {
            Ok(()) => Some(pubsub),
            Err(e) => {
                tracing::debug!(error = %e, "Redis subscribe failed; polling");
                None
            }
        },
        Err(e) => {
            tracing::debug!(error = %e, "Redis pub/sub unavailable; polling");
            None
        }
    };
    let mut conn = s.conn.clone();
    loop {
        let held: bool = conn
            .exists(&s.lock_key)
            .await
            .map_err(|e| store_error("Redis read failed", e))?;
        let now = Instant::now();
        if !held || now >= deadline {
            return Ok(());
        }
        let tick = s.poll_interval.min(deadline - now);
        match &mut pubsub {
            Some(p) => {
                if let Ok(Some(_)) = tokio::time::timeout(tick, p.on_message().next()).await {
                    return Ok(());
                }
            }
            None => tokio::time::sleep(tick).await,
        }
    }
}

/// A hold on the refresh lock, from `begin_refresh` until it is released,
/// committed or dropped; its heartbeat renews the lock meanwhile.
struct Lease {
    shared: Arc<Shared>,
    value: String,
    /// The store's generation as this lease last wrote it (or found it
    /// when it took the lock): a commit succeeds only if nobody else wrote
    /// since. A lease commits more than once (the mark before the token
    /// request, then its answer).
    generation: std::sync::atomic::AtomicI64,
    hold: Arc<Hold>,
    /// The heartbeat task, if a runtime was there to run it. Stopped when
    /// the lease is released, committed or dropped.
    heartbeat: Mutex<Option<JoinHandle<()>>>,
}

/// What a lease knows of its lock, shared with its heartbeat.
struct Hold {
    /// Just before the lock command was sent.
    start: Instant,
    /// When the lock runs out unless renewed again, in ms after `start`: an
    /// early estimate, from just before the command that set the TTL.
    expires_ms: AtomicU64,
    /// A renewal found the lock gone or another lease's, the TTL ran out
    /// without a renewal getting through, or the lease was released.
    lost: AtomicBool,
}

impl Hold {
    fn is_held(&self) -> bool {
        !self.lost.load(Ordering::Acquire) && Instant::now() < self.expires()
    }

    fn expires(&self) -> Instant {
        self.start + Duration::from_millis(self.expires_ms.load(Ordering::Acquire))
    }

    /// The lock lives until at least `until` (a renewal went through).
    fn renewed(&self, until: Instant) {
        let ms = ttl_millis(until.saturating_duration_since(self.start));
        self.expires_ms.fetch_max(ms, Ordering::AcqRel);
    }

    fn lose(&self) {
        self.lost.store(true, Ordering::Release);
    }
}

impl Lease {
    fn start(shared: Arc<Shared>, value: String, generation: i64, start: Instant) -> Lease {
        let hold = Arc::new(Hold {
            start,
            expires_ms: AtomicU64::new(ttl_millis(shared.lock_ttl)),
            lost: AtomicBool::new(false),
        });
        let heartbeat = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Some(runtime.spawn(heartbeat(
                Arc::clone(&shared),
                value.clone(),
                Arc::clone(&hold),
            ))),
            Err(_) => {
                tracing::warn!(
                    prefix = %shared.prefix,
                    "no tokio runtime for the lock's heartbeat; the lock lives one TTL"
                );
                None
            }
        };
        Lease {
            shared,
            value,
            generation: std::sync::atomic::AtomicI64::new(generation),
            hold,
            heartbeat: Mutex::new(heartbeat),
        }
    }

    /// Stops the heartbeat and waits until its task is gone.
    async fn stop_heartbeat(&self) {
        let task = self
            .heartbeat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            task.abort();
            // Aborted: it ends at its next poll (an error saying so).
            let _ = task.await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let task = self
            .heartbeat
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            task.abort();
        }
    }
}

/// Renews the lease's lock every third of its TTL while the lock holds the
/// lease's value. Ends (and marks the lease lost) when a renewal finds the
/// lock gone or another's, or when no renewal got through before the TTL
/// would have run out; otherwise it runs until the lease stops it.
async fn heartbeat(s: Arc<Shared>, value: String, hold: Arc<Hold>) {
    let period = (s.lock_ttl / 3).max(Duration::from_millis(1));
    // After a failed renewal (Redis unreachable, say): try again soon,
    // several times before the TTL runs out.
    let retry = (period / 4).max(Duration::from_millis(1));
    let ttl_ms = ttl_millis(s.lock_ttl);
    let renew = Script::new(RENEW);
    let mut conn = s.conn.clone();
    let mut next = hold.start + period;
    let mut failures = 0u32;
    // Not a bounded loop: it lasts as long as the lease. Every turn sleeps
    // at least a millisecond, and it ends when the lock is lost.
    loop {
        tokio::time::sleep_until(next).await;
        let sent = Instant::now();
        let expires = hold.expires();
        if sent >= expires {
            hold.lose();
            tracing::warn!(
                prefix = %s.prefix,
                failures,
                "could not renew the shared refresh lock before its TTL ran out; treating it as lost"
            );
            return;
        }
        let mut invocation = renew.key(&s.lock_key);
        invocation.arg(&value).arg(ttl_ms);
        let call = invocation.invoke_async::<i64>(&mut conn);
        match tokio::time::timeout_at(expires, call).await {
            Ok(Ok(1)) => {
                hold.renewed(sent + s.lock_ttl);
                if failures > 0 {
                    tracing::debug!(prefix = %s.prefix, failures, "renewed the shared refresh lock again");
                }
                failures = 0;
                next = sent + period;
            }
            Ok(Ok(_)) => {
                hold.lose();
                tracing::warn!(
                    prefix = %s.prefix,
                    "the shared refresh lock expired or another process took it; this lease lost it"
                );
                return;
            }
            Ok(Err(e)) => {
                failures += 1;
                tracing::debug!(
                    prefix = %s.prefix,
                    error = %e,
                    failures,
                    "renewing the shared refresh lock failed; trying again until its TTL runs out"
                );
                next = (Instant::now() + retry).min(expires);
            }
            // The TTL ran out while the renewal was on its way: the next
            // turn finds it so.
            Err(_) => next = expires,
        }
    }
}

impl Lease {
    /// Writes `value` (empty: deletes the set) while the lock is this
    /// lease's and nobody else wrote since it last did.
    async fn write(&self, value: Vec<u8>) -> Result<(), Error> {
        let s = &self.shared;
        let mut conn = s.conn.clone();
        // The heartbeat keeps the lock meanwhile; the script checks it is
        // still this lease's.
        let written = Script::new(COMMIT)
            .key(&s.lock_key)
            .key(&s.tokens_key)
            .key(&s.generation_key)
            .key(&s.channel)
            .arg(&self.value)
            .arg(self.generation.load(Ordering::Acquire))
            .arg(value)
            .invoke_async::<i64>(&mut conn)
            .await;
        match written.map_err(|e| store_error("Redis write failed", e))? {
            -1 => {
                self.hold.lose();
                Err(Error::new(
                    ErrorKind::Store,
                    "the shared refresh lock was lost (it expired or another process took it) before the write",
                ))
            }
            -2 => Err(Error::new(
                ErrorKind::Store,
                "another process saved a token set while this process held the lock; kept it",
            )),
            written => {
                self.generation.store(written, Ordering::Release);
                Ok(())
            }
        }
    }
}

impl RefreshLease for Lease {
    fn commit<'a>(&'a self, tokens: &'a TokenSet) -> BoxFuture<'a, Result<(), Error>> {
        // The heartbeat runs until the lease is released: a lease commits
        // its mark before the token request, then the answer (and any
        // `set` of its process meanwhile).
        Box::pin(async move { self.write(self.shared.encode(tokens).await?).await })
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.write(Vec::new()))
    }

    fn release(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.stop_heartbeat().await;
            self.hold.lose();
            let s = &self.shared;
            let mut conn = s.conn.clone();
            Script::new(RELEASE)
                .key(&s.lock_key)
                .key(&s.channel)
                .arg(&self.value)
                .invoke_async::<i64>(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| store_error("Redis unlock failed", e))
        })
    }

    fn is_held(&self) -> bool {
        self.hold.is_held()
    }
}
