//! The in-process OAuth2 authorization server.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    hash::{BuildHasher, RandomState},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    Extension, Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine as _;
use serde_json::json;
use tokio::time::Instant;
use tower_token_refresh_core::TokenSet;

use crate::{
    form,
    serve::{ConnControl, ServerTask},
};

/// How an [`AuthServer`] behaves.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_token_refresh_test_util::AuthConfig;
///
/// let config = AuthConfig::default()
///     .access_lifetime(Duration::from_secs(60))
///     .rotation(false)
///     .client("my-client", "my-secret");
/// assert!(!format!("{config:?}").contains("my-secret"));
/// ```
#[derive(Clone)]
pub struct AuthConfig {
    access_lifetime: Duration,
    rotation: bool,
    client_id: String,
    client_secret: String,
}

impl Default for AuthConfig {
    /// Access tokens live 2 s, refresh tokens rotate, the client is
    /// `test-client` / `test-secret`.
    fn default() -> Self {
        AuthConfig {
            access_lifetime: Duration::from_secs(2),
            rotation: true,
            client_id: "test-client".to_owned(),
            client_secret: "test-secret".to_owned(),
        }
    }
}

impl AuthConfig {
    /// How long issued access tokens stay valid. The token response's
    /// `expires_in` is this in whole seconds, at least 1.
    pub fn access_lifetime(mut self, lifetime: Duration) -> Self {
        self.access_lifetime = lifetime;
        self
    }

    /// Whether a refresh grant issues a new refresh token and retires the one
    /// presented (RFC 9700 §4.14.2). With rotation off the refresh token stays
    /// valid and responses carry none.
    pub fn rotation(mut self, rotation: bool) -> Self {
        self.rotation = rotation;
        self
    }

    /// The one client the server accepts.
    pub fn client(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.client_id = id.into();
        self.client_secret = secret.into();
        self
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("access_lifetime", &self.access_lifetime)
            .field("rotation", &self.rotation)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

/// A fault the token endpoint serves instead of (or before) its normal answer.
/// Queue them with [`AuthServer::inject`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Wait this long (tokio's clock), then answer normally.
    Delay(Duration),
    /// Answer with this status and a plain-text body. A number that is not a
    /// valid final status code (1xx, or outside 100–999) answers 500.
    Status(u16),
    /// 503 with `{"error":"temporarily_unavailable"}`.
    TemporarilyUnavailable,
    /// 400 with `{"error":"invalid_grant"}`, leaving the presented refresh
    /// token as it was (still usable).
    InvalidGrant,
    /// 200 with a truncated JSON body: `{"access_token": `.
    MalformedJson,
    /// 502 with an HTML page, as a proxy in front of a dead server sends.
    Html502,
    /// Close the TCP connection after reading the request, without any
    /// response. A hyper client sees an error (an incomplete message).
    DropConnection,
    /// Hold the request until the [`Gate`] opens, then serve it the next
    /// queued fault, or the normal answer if none is queued: for tests that
    /// need every request to arrive before a refresh ends.
    Hold(Gate),
    /// This status with `Retry-After` set to the given value (delay seconds
    /// or an HTTP-date, sent as is) and an OAuth2 error body:
    /// `temporarily_unavailable` for 503, `slow_down` otherwise. Use 429 or
    /// 503.
    RetryAfter(u16, String),
    /// Serve the grant normally (tokens are issued), but send `expires_in`
    /// as a JSON string (`"2"`), as some servers do.
    ExpiresInString,
    /// Serve the grant normally (tokens are issued), but leave this field
    /// out of the JSON answer (`"expires_in"`, `"access_token"`,
    /// `"token_type"`, …).
    OmitField(&'static str),
}

/// Holds token requests served [`Fault::Hold`] until [`open`](Gate::open)
/// is called. Clones share the gate.
#[derive(Clone, Debug)]
pub struct Gate(Arc<tokio::sync::Semaphore>);

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }

    /// Lets every held request, and any later one, through.
    pub fn open(&self) {
        self.0.close();
    }

    async fn wait(&self) {
        // Resolves with an error once the semaphore is closed: that is the
        // signal, there are never permits.
        let _ = self.0.acquire().await;
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for Gate {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Gate {}

/// Tokens as a user login would hand them to the application.
///
/// `Debug` redacts both tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedTokens {
    /// The access token.
    pub access_token: String,
    /// The refresh token of a new grant family.
    pub refresh_token: String,
    /// The access token's lifetime.
    pub expires_in: Duration,
}

impl IssuedTokens {
    /// The same tokens as a core [`TokenSet`] (bearer, expiring `expires_in`
    /// from now on tokio's clock), ready to seed a token manager.
    pub fn token_set(&self) -> TokenSet {
        TokenSet::bearer(self.access_token.clone())
            .with_expires_in(self.expires_in)
            .with_refresh_token(self.refresh_token.clone())
    }
}

impl fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// What an [`AuthServer`]'s token endpoint has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthStats {
    /// Every `POST /token`, including those answered with a fault.
    pub token_requests: u64,
    /// `refresh_token` grants that issued tokens.
    pub refresh_grants: u64,
    /// `client_credentials` grants that issued a token.
    pub client_credentials_grants: u64,
    /// Refresh grants refused with `invalid_grant` by the server's own
    /// judgement (unknown, revoked or reused token), not by an injected fault.
    pub invalid_grant: u64,
    /// Refresh grants that presented an already-rotated refresh token, which
    /// revoked that grant family (also counted in `invalid_grant`).
    pub reuse_detected: u64,
    /// Requests answered with an injected [`Fault`] (a `Delay` counts too).
    pub faults_served: u64,
    /// Requests refused with `invalid_client`.
    pub invalid_client: u64,
    /// Every `POST /introspect` (RFC 7662), faults included.
    pub introspections: u64,
    /// Every `POST /revoke` (RFC 7009), faults included.
    pub revocation_requests: u64,
    /// Revocation requests that revoked a known, still-valid token.
    pub tokens_revoked: u64,
}

/// An endpoint of [`AuthServer`] that faults can be queued for with
/// [`AuthServer::inject_at`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `POST /token`.
    Token,
    /// `POST /introspect`.
    Introspection,
    /// `POST /revoke`.
    Revocation,
}

/// An OAuth2 authorization server on 127.0.0.1 with a token endpoint
/// (`POST /token`) and fault injection.
///
/// The token endpoint takes `application/x-www-form-urlencoded` bodies and
/// authenticates the client by HTTP Basic (id and secret form-urlencoded
/// first, RFC 6749 §2.3.1) or `client_id`/`client_secret` in the body; a
/// wrong client gets 401 `invalid_client`. It serves:
///
/// - `grant_type=refresh_token`: the token must be active. With rotation on,
///   the answer carries a new refresh token and the old one is retired;
///   presenting a retired one again revokes the whole grant family, access
///   tokens included (RFC 9700 §4.14.2).
/// - `grant_type=client_credentials`: an access token, no refresh token.
///
/// Other grant types get `unsupported_grant_type`, missing or repeated
/// parameters `invalid_request`. Access tokens are opaque random strings,
/// valid until they expire (tokio's clock), are expired by
/// [`expire_access_tokens`](Self::expire_access_tokens) or their family is
/// revoked.
///
/// The server runs in a task spawned on the runtime that started it, so a
/// paused test clock applies to it. Clones share the server; it stops when
/// the last clone is dropped.
///
/// # Example
///
/// ```
/// use tower_token_refresh_test_util::{AuthConfig, AuthServer, Fault};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// let auth = AuthServer::start(AuthConfig::default()).await?;
/// let tokens = auth.login();
/// assert!(auth.is_access_token_valid(&tokens.access_token));
/// auth.inject(Fault::TemporarilyUnavailable, 2);
/// assert!(auth.token_url().ends_with("/token"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AuthServer {
    shared: Arc<AuthShared>,
    server: Arc<ServerTask>,
}

impl AuthServer {
    /// Starts the server on 127.0.0.1 on a free port.
    ///
    /// # Errors
    ///
    /// When the listening socket cannot be bound.
    pub async fn start(config: AuthConfig) -> std::io::Result<AuthServer> {
        let shared = Arc::new(AuthShared::new(config));
        let router = Router::new()
            .route("/token", post(token_endpoint))
            .route("/introspect", post(introspection_endpoint))
            .route("/revoke", post(revocation_endpoint))
            .route("/.well-known/openid-configuration", get(discovery_endpoint))
            .with_state(shared.clone());
        let server = ServerTask::spawn(router).await?;
        Ok(AuthServer {
            shared,
            server: Arc::new(server),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The token endpoint, `http://127.0.0.1:PORT/token`.
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr())
    }

    /// The client id the server accepts.
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// The client secret the server accepts.
    pub fn client_secret(&self) -> &str {
        &self.shared.client_secret
    }

    /// Mints tokens of a new grant family, as a user login would: an access
    /// token and a refresh token. Not counted in [`stats`](Self::stats).
    pub fn login(&self) -> IssuedTokens {
        self.shared.lock().login()
    }

    /// What the token endpoint has seen so far.
    pub fn stats(&self) -> AuthStats {
        self.shared.lock().stats
    }

    /// Makes the next `times` requests to the token endpoint get `fault`,
    /// after any faults already queued.
    pub fn inject(&self, fault: Fault, times: usize) {
        self.inject_at(Endpoint::Token, fault, times);
    }

    /// Makes the next `times` requests to `endpoint` get `fault`, after any
    /// faults already queued for it. [`Fault::ExpiresInString`] and
    /// [`Fault::OmitField`] only mean something at the token endpoint;
    /// elsewhere they answer normally.
    pub fn inject_at(&self, endpoint: Endpoint, fault: Fault, times: usize) {
        let mut state = self.shared.lock();
        let queue = match endpoint {
            Endpoint::Token => &mut state.faults,
            Endpoint::Introspection => &mut state.introspection_faults,
            Endpoint::Revocation => &mut state.revocation_faults,
        };
        queue.extend(std::iter::repeat_n(fault, times));
    }

    /// The issuer identifier, `http://127.0.0.1:PORT`: what OpenID Connect
    /// discovery starts from.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The introspection endpoint (RFC 7662), `http://127.0.0.1:PORT/introspect`.
    pub fn introspection_url(&self) -> String {
        format!("http://{}/introspect", self.addr())
    }

    /// The revocation endpoint (RFC 7009), `http://127.0.0.1:PORT/revoke`.
    pub fn revocation_url(&self) -> String {
        format!("http://{}/revoke", self.addr())
    }

    /// Revokes an access token (or, given a refresh token, its whole grant
    /// family) as an administrator would, without a request.
    pub fn revoke(&self, token: &str) {
        self.shared.lock().revoke(token);
    }

    /// Whether the server would still accept this refresh token in a grant.
    pub fn is_refresh_token_active(&self, token: &str) -> bool {
        self.shared
            .lock()
            .refresh
            .get(token)
            .is_some_and(|e| e.status == RefreshStatus::Active)
    }

    /// Makes every access token issued so far invalid now. Refresh tokens stay
    /// valid, and tokens issued later live as usual.
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        let mut state = self.shared.lock();
        for entry in state.access.values_mut() {
            entry.expires_at = entry.expires_at.min(now);
        }
    }

    /// Sets the lifetime of access tokens issued from now on.
    pub fn set_access_lifetime(&self, lifetime: Duration) {
        self.shared.lock().access_lifetime = lifetime;
    }

    /// Whether a resource server would accept this access token now.
    pub fn is_access_token_valid(&self, token: &str) -> bool {
        self.shared.is_access_token_valid(token)
    }

    pub(crate) fn shared(&self) -> Arc<AuthShared> {
        self.shared.clone()
    }
}

impl fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthServer")
            .field("addr", &self.addr())
            .field("client_id", &self.client_id())
            .finish_non_exhaustive()
    }
}

/// State shared by the server task, its handles and resource servers.
pub(crate) struct AuthShared {
    client_id: String,
    client_secret: String,
    state: Mutex<AuthState>,
}

impl AuthShared {
    fn new(config: AuthConfig) -> Self {
        AuthShared {
            client_id: config.client_id,
            client_secret: config.client_secret,
            state: Mutex::new(AuthState {
                access_lifetime: config.access_lifetime,
                rotation: config.rotation,
                seed: RandomState::new().hash_one(0x746f6b656e_u64),
                minted: 0,
                families: 0,
                access: HashMap::new(),
                refresh: HashMap::new(),
                faults: VecDeque::new(),
                introspection_faults: VecDeque::new(),
                revocation_faults: VecDeque::new(),
                stats: AuthStats::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, AuthState> {
        // Nothing holding the lock can leave the state half-updated in a way
        // that matters to a test server.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The RFC 7662 answer for `token`: only `{"active":false}` for an
    /// unknown, expired, revoked or rotated token.
    fn introspect(&self, token: &str) -> serde_json::Value {
        let now = Instant::now();
        let state = self.lock();
        if let Some(entry) = state.access.get(token) {
            if !entry.revoked && now < entry.expires_at {
                let left = entry.expires_at - now;
                let exp = (std::time::SystemTime::now() + left)
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                return json!({
                    "active": true,
                    "client_id": self.client_id,
                    "token_type": "Bearer",
                    "exp": exp,
                });
            }
        }
        if let Some(entry) = state.refresh.get(token) {
            if entry.status == RefreshStatus::Active {
                return json!({
                    "active": true,
                    "client_id": self.client_id,
                    "token_type": "refresh_token",
                });
            }
        }
        json!({ "active": false })
    }

    pub(crate) fn is_access_token_valid(&self, token: &str) -> bool {
        let now = Instant::now();
        self.lock()
            .access
            .get(token)
            .is_some_and(|entry| !entry.revoked && now < entry.expires_at)
    }
}

struct AuthState {
    access_lifetime: Duration,
    rotation: bool,
    seed: u64,
    minted: u64,
    families: u64,
    access: HashMap<String, AccessEntry>,
    refresh: HashMap<String, RefreshEntry>,
    faults: VecDeque<Fault>,
    introspection_faults: VecDeque<Fault>,
    revocation_faults: VecDeque<Fault>,
    stats: AuthStats,
}

struct AccessEntry {
    family: Option<u64>,
    expires_at: Instant,
    revoked: bool,
}

struct RefreshEntry {
    family: u64,
    status: RefreshStatus,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RefreshStatus {
    Active,
    Rotated,
    Revoked,
}

/// What a successful grant issued.
struct Grant {
    access_token: String,
    lifetime: Duration,
    refresh_token: Option<String>,
}

impl AuthState {
    /// An unguessable-enough token: a counter (unique) and a mix of it with a
    /// per-server random seed.
    fn mint(&mut self, prefix: &str) -> String {
        self.minted += 1;
        let n = self.minted;
        format!("{prefix}_{n}_{:016x}", splitmix64(self.seed ^ n))
    }

    fn issue_access(&mut self, family: Option<u64>) -> (String, Duration) {
        let token = self.mint("at");
        let lifetime = self.access_lifetime;
        self.access.insert(
            token.clone(),
            AccessEntry {
                family,
                expires_at: Instant::now() + lifetime,
                revoked: false,
            },
        );
        (token, lifetime)
    }

    fn issue_refresh(&mut self, family: u64) -> String {
        let token = self.mint("rt");
        self.refresh.insert(
            token.clone(),
            RefreshEntry {
                family,
                status: RefreshStatus::Active,
            },
        );
        token
    }

    fn login(&mut self) -> IssuedTokens {
        self.families += 1;
        let family = self.families;
        let (access_token, expires_in) = self.issue_access(Some(family));
        let refresh_token = self.issue_refresh(family);
        IssuedTokens {
            access_token,
            refresh_token,
            expires_in,
        }
    }

    fn refresh_grant(&mut self, presented: &str) -> Result<Grant, &'static str> {
        let (family, status) = match self.refresh.get(presented) {
            Some(entry) => (entry.family, entry.status),
            None => {
                self.stats.invalid_grant += 1;
                return Err("unknown refresh token");
            }
        };
        match status {
            RefreshStatus::Active => {}
            RefreshStatus::Revoked => {
                self.stats.invalid_grant += 1;
                return Err("refresh token revoked");
            }
            RefreshStatus::Rotated => {
                self.revoke_family(family);
                self.stats.invalid_grant += 1;
                self.stats.reuse_detected += 1;
                return Err("refresh token reused; grant revoked");
            }
        }
        let refresh_token = if self.rotation {
            if let Some(entry) = self.refresh.get_mut(presented) {
                entry.status = RefreshStatus::Rotated;
            }
            Some(self.issue_refresh(family))
        } else {
            None
        };
        let (access_token, lifetime) = self.issue_access(Some(family));
        self.stats.refresh_grants += 1;
        Ok(Grant {
            access_token,
            lifetime,
            refresh_token,
        })
    }

    fn client_credentials_grant(&mut self) -> Grant {
        let (access_token, lifetime) = self.issue_access(None);
        self.stats.client_credentials_grants += 1;
        Grant {
            access_token,
            lifetime,
            refresh_token: None,
        }
    }

    /// RFC 7009 §2.1: revoking a refresh token revokes its grant (access
    /// tokens included); revoking an access token revokes only it. Returns
    /// whether a valid token was revoked.
    fn revoke(&mut self, token: &str) -> bool {
        if let Some(entry) = self.refresh.get(token) {
            let (family, active) = (entry.family, entry.status == RefreshStatus::Active);
            self.revoke_family(family);
            return active;
        }
        if let Some(entry) = self.access.get_mut(token) {
            let was_valid = !entry.revoked && Instant::now() < entry.expires_at;
            entry.revoked = true;
            return was_valid;
        }
        false
    }

    fn revoke_family(&mut self, family: u64) {
        for entry in self.refresh.values_mut() {
            if entry.family == family {
                entry.status = RefreshStatus::Revoked;
            }
        }
        for entry in self.access.values_mut() {
            if entry.family == Some(family) {
                entry.revoked = true;
            }
        }
    }
}

/// splitmix64's output function: a cheap, well-mixed 64-bit permutation.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

async fn token_endpoint(
    State(shared): State<Arc<AuthShared>>,
    conn: Option<Extension<ConnControl>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.lock().stats.token_requests += 1;
    let modifier = match serve_faults(&shared, Endpoint::Token, conn).await {
        Ok(modifier) => modifier,
        Err(response) => return response,
    };
    match token_request(&shared, &headers, &body, modifier) {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

/// Serves the faults queued for `endpoint`: `Err` is the answer to send
/// instead of the normal one; `Ok` carries a fault that changes the normal
/// answer ([`Fault::ExpiresInString`], [`Fault::OmitField`]), if any.
async fn serve_faults(
    shared: &AuthShared,
    endpoint: Endpoint,
    conn: Option<Extension<ConnControl>>,
) -> Result<Option<Fault>, Response> {
    loop {
        let fault = {
            let mut state = shared.lock();
            let queue = match endpoint {
                Endpoint::Token => &mut state.faults,
                Endpoint::Introspection => &mut state.introspection_faults,
                Endpoint::Revocation => &mut state.revocation_faults,
            };
            let fault = queue.pop_front();
            if fault.is_some() {
                state.stats.faults_served += 1;
            }
            fault
        };
        match fault {
            None => return Ok(None),
            Some(Fault::Delay(delay)) => {
                tokio::time::sleep(delay).await;
                return Ok(None);
            }
            // Held requests take the next queued fault once released.
            Some(Fault::Hold(gate)) => gate.wait().await,
            Some(Fault::DropConnection) => match conn {
                Some(Extension(conn)) => {
                    conn.drop_connection();
                    // The connection task drops this future with the connection.
                    return Err(std::future::pending().await);
                }
                None => return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
            },
            Some(fault @ (Fault::ExpiresInString | Fault::OmitField(_))) => return Ok(Some(fault)),
            Some(fault) => return Err(fault_response(fault)),
        }
    }
}

/// Reads a form body (RFC 6749 §3.1: empty parameters count as omitted;
/// repeated ones are refused).
fn read_form(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut params: HashMap<String, String> = HashMap::new();
    for (name, value) in form::parse(body) {
        if value.is_empty() {
            continue;
        }
        if params.contains_key(&name) {
            return Err(invalid_request("a parameter was repeated"));
        }
        params.insert(name, value);
    }
    Ok(params)
}

async fn introspection_endpoint(
    State(shared): State<Arc<AuthShared>>,
    conn: Option<Extension<ConnControl>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.lock().stats.introspections += 1;
    if let Err(response) = serve_faults(&shared, Endpoint::Introspection, conn).await {
        return response;
    }
    let result = (|| -> Result<serde_json::Value, OAuthError> {
        let params = read_form(&headers, &body)?;
        authenticate_client(&shared, &headers, &params)?;
        let token = params
            .get("token")
            .ok_or_else(|| invalid_request("token is missing"))?;
        Ok(shared.introspect(token))
    })();
    match result {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(refusal) => refusal.into_response(),
    }
}

async fn revocation_endpoint(
    State(shared): State<Arc<AuthShared>>,
    conn: Option<Extension<ConnControl>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.lock().stats.revocation_requests += 1;
    if let Err(response) = serve_faults(&shared, Endpoint::Revocation, conn).await {
        return response;
    }
    let result = (|| -> Result<(), OAuthError> {
        let params = read_form(&headers, &body)?;
        authenticate_client(&shared, &headers, &params)?;
        let token = params
            .get("token")
            .ok_or_else(|| invalid_request("token is missing"))?;
        let mut state = shared.lock();
        if state.revoke(token) {
            state.stats.tokens_revoked += 1;
        }
        Ok(())
    })();
    match result {
        // RFC 7009 §2.2: 200 whether or not the token was known.
        Ok(()) => StatusCode::OK.into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn discovery_endpoint(
    State(_shared): State<Arc<AuthShared>>,
    headers: HeaderMap,
) -> Response {
    // The server does not know its own port; the Host header has it.
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let issuer = format!("http://{host}");
    json_response(
        StatusCode::OK,
        &json!({
            "issuer": issuer,
            "token_endpoint": format!("{issuer}/token"),
            "introspection_endpoint": format!("{issuer}/introspect"),
            "revocation_endpoint": format!("{issuer}/revoke"),
            "grant_types_supported": ["refresh_token", "client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
        }),
    )
}

fn token_request(
    shared: &AuthShared,
    headers: &HeaderMap,
    body: &[u8],
    modifier: Option<Fault>,
) -> Result<Response, OAuthError> {
    let params = read_form(headers, body)?;

    authenticate_client(shared, headers, &params)?;

    let grant = match params.get("grant_type").map(String::as_str) {
        None => return Err(invalid_request("grant_type is missing")),
        Some("refresh_token") => {
            let presented = params
                .get("refresh_token")
                .ok_or_else(|| invalid_request("refresh_token is missing"))?;
            shared
                .lock()
                .refresh_grant(presented)
                .map_err(|why| OAuthError::new(StatusCode::BAD_REQUEST, "invalid_grant", why))?
        }
        Some("client_credentials") => shared.lock().client_credentials_grant(),
        Some(_) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only refresh_token and client_credentials are supported",
            ));
        }
    };

    let mut body = json!({
        "access_token": grant.access_token,
        "token_type": "Bearer",
        "expires_in": grant.lifetime.as_secs().max(1),
    });
    if let Some(refresh_token) = grant.refresh_token {
        body["refresh_token"] = refresh_token.into();
    }
    match modifier {
        Some(Fault::ExpiresInString) => {
            body["expires_in"] = grant.lifetime.as_secs().max(1).to_string().into();
        }
        Some(Fault::OmitField(field)) => {
            if let Some(map) = body.as_object_mut() {
                map.remove(field);
            }
        }
        _ => {}
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// Checks the client credentials: HTTP Basic or the body, not both.
fn authenticate_client(
    shared: &AuthShared,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(), OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| credentials.trim());
    let (id, secret) = match (basic, params.get("client_secret")) {
        (Some(_), Some(_)) => {
            return Err(invalid_request(
                "more than one client authentication method was used",
            ));
        }
        (Some(credentials), None) => match decode_basic(credentials) {
            Some(pair) => pair,
            None => return Err(invalid_client(shared, "malformed Basic credentials")),
        },
        (None, Some(secret)) => match params.get("client_id") {
            Some(id) => (id.clone(), secret.clone()),
            None => return Err(invalid_client(shared, "client_id is missing")),
        },
        (None, None) => return Err(invalid_client(shared, "no client authentication")),
    };
    if id == shared.client_id && secret == shared.client_secret {
        Ok(())
    } else {
        Err(invalid_client(shared, "unknown client or wrong secret"))
    }
}

/// Base64, then `id:secret`, each form-urldecoded (RFC 6749 §2.3.1).
fn decode_basic(credentials: &str) -> Option<(String, String)> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((
        form::decode(&decoded[..colon]),
        form::decode(&decoded[colon + 1..]),
    ))
}

fn fault_response(fault: Fault) -> Response {
    match fault {
        Fault::Status(code) => {
            // A 1xx is not a final response; hyper would not send it as one.
            let status = StatusCode::from_u16(code)
                .ok()
                .filter(|s| !s.is_informational())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("injected fault: status {}", status.as_u16()),
            )
                .into_response()
        }
        Fault::TemporarilyUnavailable => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "temporarily_unavailable"}),
        ),
        Fault::InvalidGrant => {
            json_response(StatusCode::BAD_REQUEST, &json!({"error": "invalid_grant"}))
        }
        Fault::MalformedJson => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            r#"{"access_token": "#,
        )
            .into_response(),
        Fault::Html502 => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n\
             <body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
        )
            .into_response(),
        Fault::RetryAfter(code, after) => {
            let status = StatusCode::from_u16(code)
                .ok()
                .filter(|s| !s.is_informational())
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let error = if status == StatusCode::SERVICE_UNAVAILABLE {
                "temporarily_unavailable"
            } else {
                "slow_down"
            };
            let mut response = json_response(status, &json!({ "error": error }));
            if let Ok(value) = HeaderValue::from_str(&after) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        // The endpoint handles these before it gets here.
        Fault::Delay(_)
        | Fault::DropConnection
        | Fault::Hold(_)
        | Fault::ExpiresInString
        | Fault::OmitField(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// An OAuth2 error response (RFC 6749 §5.2), before it becomes one.
struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: &'static str,
}

impl OAuthError {
    fn new(status: StatusCode, code: &'static str, description: &'static str) -> Self {
        OAuthError {
            status,
            code,
            description,
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = json_response(
            self.status,
            &json!({"error": self.code, "error_description": self.description}),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6749 §5.2: a 401 `invalid_client` carries a challenge.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="test""#),
            );
        }
        response
    }
}

fn invalid_request(description: &'static str) -> OAuthError {
    OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn invalid_client(shared: &AuthShared, description: &'static str) -> OAuthError {
    shared.lock().stats.invalid_client += 1;
    OAuthError::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // RFC 6749 §5.1: token responses must not be cached.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded_after_base64() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("id%3A1:s%26cr+t");
        assert_eq!(
            decode_basic(&encoded),
            Some(("id:1".to_owned(), "s&cr t".to_owned()))
        );
        assert_eq!(decode_basic("not base64!"), None);
        let no_colon = base64::engine::general_purpose::STANDARD.encode("idsecret");
        assert_eq!(decode_basic(&no_colon), None);
    }

    #[test]
    fn minted_tokens_are_unique_and_header_safe() {
        let shared = AuthShared::new(AuthConfig::default());
        let mut state = shared.lock();
        let a = state.mint("at");
        let b = state.mint("at");
        assert_ne!(a, b);
        assert!(
            a.starts_with("at_1_") && a.len() == "at_1_".len() + 16,
            "{a}"
        );
        assert!(HeaderValue::from_str(&format!("Bearer {a}")).is_ok());
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let shared = AuthShared::new(AuthConfig::default().client("id", "hunter2"));
        let tokens = shared.lock().login();
        let shown = format!(
            "{tokens:?} {:?}",
            AuthConfig::default().client("id", "hunter2")
        );
        assert!(!shown.contains(&tokens.access_token), "{shown}");
        assert!(!shown.contains(&tokens.refresh_token), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
