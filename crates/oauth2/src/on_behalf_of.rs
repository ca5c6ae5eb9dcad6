//! On behalf of the caller: a server that acts for many users exchanges
//! each caller's access token (RFC 8693 token exchange, the caller's token
//! as the subject) for a token to a downstream API, and caches the answer.
//!
//! Invariants:
//!
//! - Sessions never cross keys: an entry is keyed by a SHA-256 fingerprint
//!   of the subject token and of everything else that shapes the answer
//!   (the subject token type, every form parameter of the [`Downstream`]
//!   in order: `audience`, `resource`, `scope`, `requested_token_type`,
//!   custom ones; and the DPoP key's thumbprint). Two calls that differ in
//!   any of these never share an entry or an exchange in flight. The
//!   subject token itself is neither kept nor shown.
//! - One exchange in flight per key: concurrent callers with the same key
//!   wait for the first; other keys run in parallel. A failed exchange is
//!   not cached, and every caller waiting for it gets its error. A caller
//!   that leads an exchange and is dropped hands the flight over: one of
//!   the waiters starts it again.
//! - Bounded: at most `max_entries` entries, entries past their time
//!   dropped when room is needed, then the one that expires soonest. No
//!   task per entry, no timer; no lock is held across an `.await`.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http::Uri;
use sha2::{Digest as _, Sha256};
use tokio::{sync::watch, time::Instant};

use super::{
    ClientAuth, HttpClient, Params, ResourceIndicator, TokenClient,
    token_exchange::{self, token_type},
    token_response::{jwt_expiry, system_time_to_instant},
};
use crate::{Error, TokenSet};

/// How many entries an [`OnBehalfOf`] keeps by default.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

/// How long before its expiry a token stops being served by default: the
/// core manager's default expiry leeway.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(10);

/// How long a token issued without `expires_in` (and that is no JWT with
/// an `exp`) is served by default.
const DEFAULT_UNKNOWN_LIFETIME: Duration = Duration::from_secs(60);

/// The answer of one exchange, as the callers waiting for it receive it.
type Answer = Option<Result<TokenSet, Error>>;

/// Token exchange on behalf of callers (RFC 8693), cached per caller and
/// downstream: a server that receives a user's access token exchanges it
/// at its authorization server for a token to call another API as that
/// user, and reuses that token for the user's next requests.
///
/// [`token`](Self::token) takes the caller's token (the subject token) and
/// a [`Downstream`] (the token wanted: its `audience`, `resource`s,
/// `scope`, `requested_token_type`, and the type of the subject token,
/// `…:access_token` by default). It posts
/// `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` with the
/// client authentication and DPoP key of this value, exactly as
/// [`TokenExchangeGrant`](crate::TokenExchangeGrant) does, unless a fresh
/// answer for the same key is cached or on its way.
///
/// # The cache
///
/// - The key is a SHA-256 fingerprint of the subject token, and one of the
///   subject token type, every parameter of the [`Downstream`] in order,
///   and the DPoP key's thumbprint: calls that differ in any of them never
///   share a token (one user's token handed to another is the failure
///   this guards against). Parameters given in another order make another
///   key: a miss, never a wrong hit.
/// - An entry is served until its token's expiry minus a leeway (10
///   seconds by default, as the core manager's; [`expiry_leeway`](Self::expiry_leeway)),
///   and never past the subject token's own `exp` minus that leeway, if
///   the subject is a JWT whose `exp` can be read (decoded, not verified).
///   A token without `expires_in` (and that is no JWT with an `exp`) is
///   served for 60 seconds ([`unknown_lifetime`](Self::unknown_lifetime);
///   zero: not cached). A token already inside the leeway is returned to
///   its caller but not cached.
/// - Concurrent calls with one key make one exchange; calls with other keys
///   run in parallel. A failed exchange is not cached: its callers get the
///   error, the next call exchanges again.
/// - At most [`DEFAULT_MAX_ENTRIES`] entries ([`max_entries`](Self::max_entries)).
///   When a new key needs room, entries past their time go first, then the
///   entry that expires soonest. If every entry is an exchange in flight,
///   the call exchanges alone and caches nothing. Making room scans the
///   entries, under a lock held only for that.
/// - Time is tokio's clock: tests can pause it.
///
/// # Errors
///
/// As [`TokenExchangeGrant`](crate::TokenExchangeGrant): a subject token
/// the server refuses (`invalid_grant`) is
/// [`Rejected`](crate::ErrorKind::Rejected) with
/// [`ErrorCode::InvalidGrant`](crate::ErrorCode::InvalidGrant) as its
/// [`oauth_error_code`](Error::oauth_error_code); an audience or resource
/// the server will not issue for is `invalid_target`; a server that is
/// down, [`Transient`](crate::ErrorKind::Transient).
///
/// # Example
///
/// ```
/// use tower_token_refresh_core::ErrorCode;
/// use tower_token_refresh_oauth2::{ClientAuth, Downstream, OnBehalfOf};
/// # use tower_token_refresh_test_util::{AuthConfig, AuthServer, TokenExchange, hyper_client};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let config = AuthConfig::default().access_lifetime(std::time::Duration::from_secs(3600));
/// # let auth = AuthServer::start(config.token_exchange(TokenExchange::new())).await?;
/// # let token_url = auth.token_url().parse()?;
/// # let client = tower_token_refresh::ServiceClient::new(hyper_client());
/// # let (client_id, client_secret) = (auth.client_id(), auth.client_secret());
/// // One per token endpoint and client, shared (in an `Arc`) by every handler.
/// let obo = OnBehalfOf::new(token_url, ClientAuth::basic(client_id, client_secret), client);
/// let orders = Downstream::new().audience("https://orders.example.com").scope("orders:read");
///
/// // The bearer token a user's request came with.
/// # let ann_token = auth.login().access_token;
/// let for_ann = obo.token(&ann_token, &orders).await?;
/// // Ann's next request: the same token, no second exchange.
/// let again = obo.token(&ann_token, &orders).await?;
/// assert_eq!(again.access_token().secret(), for_ann.access_token().secret());
/// assert_eq!((obo.stats().exchanges, obo.stats().hits), (1, 1));
///
/// // A token the authorization server does not accept.
/// let err = obo.token("forged", &orders).await.unwrap_err();
/// assert_eq!(err.oauth_error_code(), Some(&ErrorCode::InvalidGrant));
/// # Ok(()) }
/// ```
pub struct OnBehalfOf<C> {
    token: TokenClient<C>,
    cache: Mutex<Cache>,
    max_entries: usize,
    leeway: Duration,
    unknown_lifetime: Duration,
    counters: Counters,
}

/// The token an [`OnBehalfOf`] asks for: what is sent with the subject
/// token, and part of the cache key.
///
/// Build one per downstream API, once, and pass it to every
/// [`OnBehalfOf::token`] call. `Debug` names the parameters but shows no
/// value.
///
/// # Example
///
/// ```
/// use tower_token_refresh_oauth2::{Downstream, ResourceIndicator, token_exchange::token_type};
///
/// let billing = Downstream::new()
///     .audience("billing")
///     .resource(ResourceIndicator::new("https://billing.example.com/api")?)
///     .scope("invoices:read")
///     .requested_token_type(token_type::ACCESS_TOKEN);
/// assert!(!format!("{billing:?}").contains("invoices"));
/// # Ok::<(), tower_token_refresh_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Downstream {
    subject_token_type: String,
    params: Params,
}

impl Downstream {
    /// A token for whatever the server issues by default, in exchange for
    /// an access token (`subject_token_type` `…:access_token`).
    pub fn new() -> Self {
        Downstream {
            subject_token_type: token_type::ACCESS_TOKEN.to_owned(),
            params: Params::default(),
        }
    }

    /// The type of the subject tokens given ([`token_type`], or another URI
    /// the server knows); by default `…:access_token`.
    pub fn subject_token_type(mut self, token_type: impl Into<String>) -> Self {
        self.subject_token_type = token_type.into();
        self
    }

    /// A logical name of the service the token is for (`audience`). May be
    /// given more than once.
    pub fn audience(self, audience: impl Into<String>) -> Self {
        self.param("audience", audience)
    }

    /// The resource the token is for (`resource`, RFC 8707). May be given
    /// more than once.
    pub fn resource(self, resource: ResourceIndicator) -> Self {
        self.param("resource", resource.as_str())
    }

    /// Asks for this scope (space-separated).
    pub fn scope(self, scope: impl Into<String>) -> Self {
        self.param("scope", scope)
    }

    /// The type of token to issue (`requested_token_type`); by default the
    /// server chooses.
    pub fn requested_token_type(self, token_type: impl Into<String>) -> Self {
        self.param("requested_token_type", token_type)
    }

    /// Adds a form parameter to the request (and to the cache key).
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push(name, value);
        self
    }
}

impl Default for Downstream {
    fn default() -> Self {
        Downstream::new()
    }
}

impl fmt::Debug for Downstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Downstream")
            .field("subject_token_type", &self.subject_token_type)
            .field("params", &self.params)
            .finish()
    }
}

/// What an [`OnBehalfOf`] did so far, counted.
///
/// Every call is a hit or a miss, once: `hits + misses` is the number of
/// calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OnBehalfOfStats {
    /// Calls answered from the cache.
    pub hits: u64,
    /// Calls that found no fresh entry: each either made an exchange or
    /// waited for one in flight.
    pub misses: u64,
    /// Exchange requests sent to the token endpoint.
    pub exchanges: u64,
    /// Exchanges that failed.
    pub failures: u64,
    /// Entries still fresh removed to make room for others.
    pub evictions: u64,
    /// Entries held now (tokens and exchanges in flight).
    pub entries: usize,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    exchanges: AtomicU64,
    failures: AtomicU64,
    evictions: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// An entry's key: fingerprints, never the tokens.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    /// SHA-256 of the subject token.
    subject: [u8; 32],
    /// SHA-256 of the rest: subject token type, parameters, DPoP thumbprint.
    shape: [u8; 32],
}

#[derive(Default)]
struct Cache {
    slots: HashMap<Key, Slot>,
    flights: u64,
}

enum Slot {
    /// A token, served while `now < fresh_until`.
    Ready {
        tokens: TokenSet,
        fresh_until: Instant,
    },
    /// An exchange in flight; its leader sends the answer.
    Pending {
        flight: u64,
        answer: watch::Receiver<Answer>,
    },
}

/// What a call does after one look at the cache.
enum Step {
    Hit(TokenSet),
    Wait(watch::Receiver<Answer>),
    /// Lead the exchange: `None` when there was no room to cache it.
    Lead(Option<(u64, watch::Sender<Answer>)>),
}

impl<C> OnBehalfOf<C> {
    /// Exchanges at `token_url`, authenticated with `auth`, through
    /// `client`.
    pub fn new(token_url: Uri, auth: ClientAuth, client: C) -> Self {
        OnBehalfOf {
            token: TokenClient::new(token_url, auth, client),
            cache: Mutex::new(Cache::default()),
            max_entries: DEFAULT_MAX_ENTRIES,
            leeway: DEFAULT_LEEWAY,
            unknown_lifetime: DEFAULT_UNKNOWN_LIFETIME,
            counters: Counters::default(),
        }
    }

    /// Keeps at most `max` entries (at least one); default
    /// [`DEFAULT_MAX_ENTRIES`].
    pub fn max_entries(mut self, max: usize) -> Self {
        self.max_entries = max.max(1);
        self
    }

    /// Stops serving a token this long before it expires (and before the
    /// subject's `exp`); default 10 seconds.
    pub fn expiry_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// How long a token issued without a known expiry is served; default
    /// 60 seconds, zero to not cache such tokens.
    pub fn unknown_lifetime(mut self, lifetime: Duration) -> Self {
        self.unknown_lifetime = lifetime;
        self
    }

    /// Allows the tokens to go over cleartext `http://` to a host that is
    /// not loopback: for a development server only. Off by default.
    pub fn allow_cleartext(mut self, allow: bool) -> Self {
        self.token.url.set_allow_cleartext(allow);
        self
    }

    /// Proves possession of a DPoP key at the token endpoint (RFC 9449;
    /// feature `jose`): the tokens issued are bound to it, and its
    /// thumbprint is part of the cache key.
    #[cfg(feature = "jose")]
    pub fn dpop(mut self, dpop: crate::dpop::DpopKey) -> Self {
        self.token.set_dpop(dpop);
        self
    }

    /// What was done so far, counted.
    pub fn stats(&self) -> OnBehalfOfStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        OnBehalfOfStats {
            hits: get(&self.counters.hits),
            misses: get(&self.counters.misses),
            exchanges: get(&self.counters.exchanges),
            failures: get(&self.counters.failures),
            evictions: get(&self.counters.evictions),
            entries: self.lock().slots.len(),
        }
    }

    /// Drops the entry for `subject_token` and `downstream` (the downstream
    /// API refused its token, say): the next call exchanges again.
    pub fn remove(&self, subject_token: &str, downstream: &Downstream) {
        let key = self.key(subject_token, downstream);
        self.lock().slots.remove(&key);
    }

    /// Drops every entry of `subject_token` (its user logged out), and no
    /// other.
    pub fn remove_subject(&self, subject_token: &str) {
        let subject = fingerprint(subject_token);
        self.lock().slots.retain(|key, _| key.subject != subject);
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.lock().slots.clear();
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        // The cache is consistent after every statement: a panic elsewhere
        // leaves nothing half-done to guard against.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn key(&self, subject_token: &str, downstream: &Downstream) -> Key {
        let mut shape = Sha256::new();
        let mut field = |bytes: &[u8]| {
            shape.update((bytes.len() as u64).to_be_bytes());
            shape.update(bytes);
        };
        field(downstream.subject_token_type.as_bytes());
        for (name, value) in downstream.params.as_slice() {
            field(name.as_bytes());
            field(value.as_bytes());
        }
        match self.dpop_thumbprint() {
            Some(jkt) => field(jkt.as_bytes()),
            // No thumbprint is empty: the absence cannot collide with one.
            None => field(b""),
        }
        Key {
            subject: fingerprint(subject_token),
            shape: shape.finalize().into(),
        }
    }

    fn dpop_thumbprint(&self) -> Option<String> {
        #[cfg(feature = "jose")]
        return self.token.dpop().map(crate::dpop::DpopKey::thumbprint);
        #[cfg(not(feature = "jose"))]
        None
    }

    /// Until when `tokens`, got for `subject_token` at `now`, are served;
    /// `None`: not cached.
    fn fresh_until(&self, tokens: &TokenSet, subject_token: &str, now: Instant) -> Option<Instant> {
        let mut until = match tokens.expires_at() {
            Some(at) => at.checked_sub(self.leeway)?,
            None => now.checked_add(self.unknown_lifetime)?,
        };
        if let Some(exp) = jwt_expiry(subject_token) {
            until = until.min(system_time_to_instant(exp).checked_sub(self.leeway)?);
        }
        (until > now).then_some(until)
    }

    /// One look at the cache, under the lock.
    fn step(&self, key: Key) -> Step {
        let mut cache = self.lock();
        let now = Instant::now();
        match cache.slots.get(&key) {
            Some(Slot::Ready {
                tokens,
                fresh_until,
            }) if now < *fresh_until => return Step::Hit(tokens.clone()),
            Some(Slot::Pending { answer, .. }) => return Step::Wait(answer.clone()),
            // Past its time: its slot is taken over below.
            Some(Slot::Ready { .. }) => {}
            None => {
                let (evicted, room) = cache.make_room(now, self.max_entries);
                Counters::add(&self.counters.evictions, evicted);
                if !room {
                    return Step::Lead(None);
                }
            }
        }
        cache.flights += 1;
        let flight = cache.flights;
        let (sender, answer) = watch::channel(None);
        cache.slots.insert(key, Slot::Pending { flight, answer });
        Step::Lead(Some((flight, sender)))
    }
}

impl Cache {
    /// Makes room for one more entry below `max`: entries past their time
    /// first, then the fresh entry that expires soonest. Returns how many
    /// fresh entries were evicted and whether there is room now.
    fn make_room(&mut self, now: Instant, max: usize) -> (u64, bool) {
        if self.slots.len() < max {
            return (0, true);
        }
        self.slots.retain(
            |_, slot| !matches!(slot, Slot::Ready { fresh_until, .. } if *fresh_until <= now),
        );
        if self.slots.len() < max {
            return (0, true);
        }
        let soonest = self
            .slots
            .iter()
            .filter_map(|(key, slot)| match slot {
                Slot::Ready { fresh_until, .. } => Some((*fresh_until, *key)),
                Slot::Pending { .. } => None,
            })
            .min_by_key(|(until, _)| *until)
            .map(|(_, key)| key);
        match soonest {
            Some(key) => {
                self.slots.remove(&key);
                (1, self.slots.len() < max)
            }
            None => (0, false),
        }
    }
}

impl<C: HttpClient> OnBehalfOf<C> {
    /// A token for `downstream`, on behalf of the caller whose token is
    /// `subject_token`: from the cache if a fresh one is there, else from
    /// the exchange in flight for the same key, else from a new exchange.
    ///
    /// # Errors
    ///
    /// The exchange's error (see [`OnBehalfOf`]), shared by every call that
    /// waited for it. Nothing is cached after an error.
    pub async fn token(
        &self,
        subject_token: &str,
        downstream: &Downstream,
    ) -> Result<TokenSet, Error> {
        let key = self.key(subject_token, downstream);
        let mut first = true;
        loop {
            let step = self.step(key);
            if std::mem::take(&mut first) {
                // Once per call, however many looks it takes.
                let counter = match step {
                    Step::Hit(_) => &self.counters.hits,
                    _ => &self.counters.misses,
                };
                Counters::add(counter, 1);
            }
            match step {
                Step::Hit(tokens) => return Ok(tokens),
                Step::Wait(mut answer) => {
                    let answer = answer
                        .wait_for(Option::is_some)
                        .await
                        .ok()
                        .and_then(|a| a.clone());
                    if let Some(result) = answer {
                        return result;
                    }
                    // The leader was dropped before its answer came: its
                    // slot is gone, and this call (or another waiter)
                    // takes the flight over.
                }
                Step::Lead(flight) => {
                    let flight = flight.map(|(flight, sender)| Flight {
                        cache: &self.cache,
                        key,
                        flight,
                        sender: Some(sender),
                    });
                    return self.lead(subject_token, downstream, flight).await;
                }
            }
        }
    }

    async fn lead(
        &self,
        subject_token: &str,
        downstream: &Downstream,
        flight: Option<Flight<'_>>,
    ) -> Result<TokenSet, Error> {
        Counters::add(&self.counters.exchanges, 1);
        let result = token_exchange::exchange(
            &self.token,
            (subject_token, &downstream.subject_token_type),
            None,
            &downstream.params,
        )
        .await;
        let fresh_until = match &result {
            Ok(tokens) => self.fresh_until(tokens, subject_token, Instant::now()),
            Err(_) => {
                Counters::add(&self.counters.failures, 1);
                None
            }
        };
        if let Some(flight) = flight {
            flight.land(&result, fresh_until);
        }
        result
    }
}

/// The exchange a call leads for a key. Dropped before it lands (the
/// caller's future was dropped), it frees its slot; its waiters then see
/// the channel closed and one of them leads anew.
struct Flight<'a> {
    cache: &'a Mutex<Cache>,
    key: Key,
    flight: u64,
    sender: Option<watch::Sender<Answer>>,
}

impl Flight<'_> {
    /// Caches `result` until `fresh_until` (or frees the slot) and hands it
    /// to every waiter.
    fn land(mut self, result: &Result<TokenSet, Error>, fresh_until: Option<Instant>) {
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            // The slot may have been removed (or taken by a later flight)
            // meanwhile: then it is not this flight's to fill.
            if matches!(cache.slots.get(&self.key), Some(Slot::Pending { flight, .. }) if *flight == self.flight)
            {
                match (result, fresh_until) {
                    (Ok(tokens), Some(fresh_until)) => {
                        cache.slots.insert(
                            self.key,
                            Slot::Ready {
                                tokens: tokens.clone(),
                                fresh_until,
                            },
                        );
                    }
                    _ => {
                        cache.slots.remove(&self.key);
                    }
                }
            }
        }
        if let Some(sender) = self.sender.take() {
            sender.send_replace(Some(result.clone()));
        }
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if self.sender.is_none() {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(cache.slots.get(&self.key), Some(Slot::Pending { flight, .. }) if *flight == self.flight)
        {
            cache.slots.remove(&self.key);
        }
    }
}

/// SHA-256 of a subject token.
fn fingerprint(subject_token: &str) -> [u8; 32] {
    Sha256::digest(subject_token.as_bytes()).into()
}

impl<C> fmt::Debug for OnBehalfOf<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("OnBehalfOf");
        self.token.debug_fields(&mut f);
        f.field("max_entries", &self.max_entries)
            .field("expiry_leeway", &self.leeway)
            .field("unknown_lifetime", &self.unknown_lifetime)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obo() -> OnBehalfOf<()> {
        OnBehalfOf::new(
            "https://auth.example.com/token".parse().unwrap(),
            ClientAuth::basic("c", "s"),
            (),
        )
    }

    #[test]
    fn every_field_of_the_downstream_is_in_the_key() {
        let obo = obo();
        let base = Downstream::new().audience("a");
        let variants = [
            Downstream::new().audience("b"),
            Downstream::new(),
            base.clone().scope("read"),
            base.clone().requested_token_type(token_type::JWT),
            base.clone().subject_token_type(token_type::ID_TOKEN),
            base.clone()
                .resource(ResourceIndicator::new("https://api.example.com").unwrap()),
            base.clone().param("x", "1"),
            // A value that moves across a field boundary is another key.
            Downstream::new().param("audience", "").param("a", ""),
        ];
        let key = obo.key("t", &base);
        assert!(key == obo.key("t", &base.clone()));
        assert!(key != obo.key("u", &base));
        for other in &variants {
            assert!(key != obo.key("t", other), "{other:?}");
        }
    }

    #[cfg(feature = "jose")]
    #[test]
    fn the_dpop_thumbprint_is_in_the_key() {
        let downstream = Downstream::new().audience("a");
        let plain = obo().key("t", &downstream);
        let bound = obo().dpop(crate::dpop::DpopKey::generate().unwrap());
        let other = obo().dpop(crate::dpop::DpopKey::generate().unwrap());
        assert!(plain != bound.key("t", &downstream));
        assert!(bound.key("t", &downstream) != other.key("t", &downstream));
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_is_served_until_the_leeway_and_the_subject_exp() {
        use base64::Engine as _;
        let obo = obo();
        let now = Instant::now();
        let hour = TokenSet::bearer("x").with_expires_in(Duration::from_secs(3600));
        assert_eq!(
            obo.fresh_until(&hour, "opaque", now),
            Some(now + Duration::from_secs(3590))
        );
        let unknown = TokenSet::bearer("x");
        assert_eq!(
            obo.fresh_until(&unknown, "opaque", now),
            Some(now + DEFAULT_UNKNOWN_LIFETIME)
        );
        let off = OnBehalfOf::new(
            "https://a.example/t".parse().unwrap(),
            ClientAuth::Anonymous,
            (),
        )
        .unknown_lifetime(Duration::ZERO);
        assert_eq!(off.fresh_until(&unknown, "opaque", now), None);
        let short = TokenSet::bearer("x").with_expires_in(Duration::from_secs(5));
        assert_eq!(obo.fresh_until(&short, "opaque", now), None);

        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let jwt = |exp: u64| format!("{}.{}.sig", b64("{}"), b64(&format!(r#"{{"exp":{exp}}}"#)));
        let until = obo.fresh_until(&hour, &jwt(unix + 600), now).unwrap();
        // Wall-clock seconds: within a second of ten minutes less the leeway.
        let ahead = until - now;
        assert!(
            ahead <= Duration::from_secs(590) && ahead >= Duration::from_secs(588),
            "{ahead:?}"
        );
        assert_eq!(obo.fresh_until(&hour, &jwt(unix - 1), now), None);
    }

    #[test]
    fn debug_shows_no_subject_and_no_parameter_value() {
        let downstream = Downstream::new().audience("secret-audience");
        assert!(!format!("{downstream:?}").contains("secret-audience"));
        let obo = obo();
        obo.remove("subject-token", &downstream);
        assert!(!format!("{obo:?}").contains("subject-token"));
    }
}
