//! The in-process OAuth2 authorization server: [`AuthServer`], its
//! [`AuthConfig`], and the handle API tests drive it with.
//!
//! The rest is split by concern:
//!
//! - `endpoints`: the axum router and handlers (token, introspection,
//!   revocation, discovery).
//! - `oauth`: what the handlers share: form bodies, client authentication,
//!   OAuth2 error and JSON responses.
//! - `faults`: [`Fault`], [`Gate`], the per-[`Endpoint`] queues, and serving
//!   them.
//! - `state`: what the server task and its handles share behind one lock,
//!   and the [`AuthStats`] counters.
//! - `tokens`: the one token ledger: grant families, refresh token
//!   rotation, reuse detection and revocation, DPoP key bindings,
//!   authorization and device codes, spent assertion `jti`s, and
//!   [`IssuedTokens`].
//! - `clients`: the registered [`Client`]s and JWT bearer issuers, and the
//!   checks of a signed assertion.
//! - `dpop`: the DPoP [`Nonce`]s and the token endpoint's proof check.
//! - `registration`: the [`Registration`] switch and `POST /register`
//!   (RFC 7591).
//! - `exchange`: the [`TokenExchange`] switch and the token exchange grant
//!   (RFC 8693).
//!
//! The [`ResourceServer`](crate::ResourceServer)'s switches are here too,
//! as the DPoP nonce it wants is: its protected resource metadata
//! ([`ResourceMetadata`](crate::ResourceMetadata)) and required scope.
//!
//! Growing the server: a new switch is a field of [`AuthConfig`] copied
//! into `AuthShared` (or, if it changes at run time, `AuthState`); a new
//! endpoint is an [`Endpoint`] variant (which gives it a fault queue), a
//! route and a handler in `endpoints`; a new grant is a name in
//! `endpoints::GRANT_TYPES` and an arm of `endpoints::token_request` that
//! asks the ledger for tokens; a new client, registered at run time, goes
//! into the `clients::Registry` under the lock.

mod clients;
pub(crate) mod dpop;
mod echo;
mod endpoints;
mod exchange;
mod faults;
mod oauth;
mod registration;
mod state;
mod tokens;

use std::{fmt, net::SocketAddr, sync::Arc, time::Duration};

use serde_json::Value;
use tokio::time::Instant;

use crate::{resource::ResourceMetadata, serve::ServerTask};

pub use clients::{Assertion, Client};
pub use dpop::Nonce;
pub use echo::Echo;
pub use exchange::{Exchanged, TokenExchange};
pub use faults::{Endpoint, Fault, Gate};
pub use registration::Registration;
pub(crate) use state::AuthShared;
pub use state::{AuthLog, AuthStats, AuthorizationRequest, TokenRequest};
pub use tokens::IssuedTokens;

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
    metadata: MetadataDocuments,
    issuer_path: String,
    finish_abandoned: bool,
    reuse_grace: Option<Duration>,
    registry: clients::Registry,
    dpop_required: bool,
    token_nonce: Nonce,
    resource_nonce: Nonce,
    device_pending: usize,
    device_interval: Duration,
    registration: Option<Registration>,
    token_exchange: Option<TokenExchange>,
    resource_metadata: Option<ResourceMetadata>,
    resource_scope: Option<String>,
    scopes_supported: Option<Vec<String>>,
}

/// Which metadata documents an [`AuthServer`] publishes, at the well-known
/// URLs for its [issuer](AuthServer::issuer).
///
/// With both, they split the way django-oauth-toolkit's do: the
/// introspection and revocation endpoints are only in RFC 8414's, and
/// `grant_types_supported` only in the OpenID Connect one, so a client
/// finds everything only by merging them. Alone, each names every endpoint
/// (RFC 8414's still lacks `grant_types_supported`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataDocuments {
    /// Both documents (the default).
    #[default]
    Both,
    /// Only RFC 8414's `/.well-known/oauth-authorization-server`; the
    /// OpenID Connect URL is a 404.
    OAuthOnly,
    /// Only OpenID Connect's `/.well-known/openid-configuration`; the RFC
    /// 8414 URL is a 404.
    OpenIdOnly,
}

impl Default for AuthConfig {
    /// Access tokens live 2 s, refresh tokens rotate (no reuse grace), the
    /// client is `test-client` / `test-secret`, both metadata documents are
    /// served, the issuer has no path, a request whose client hangs up is
    /// dropped, DPoP is optional and wants no nonce, and a device
    /// authorization is approved at the first poll, which may come after
    /// 1 s, there is no dynamic client registration, and resource servers
    /// serve no protected resource metadata and require no scope.
    fn default() -> Self {
        let mut registry = clients::Registry::default();
        registry.register(Client::secret("test-client", "test-secret"));
        AuthConfig {
            registry,
            dpop_required: false,
            token_nonce: Nonce::Off,
            resource_nonce: Nonce::Off,
            device_pending: 0,
            device_interval: Duration::from_secs(1),
            registration: None,
            token_exchange: None,
            resource_metadata: None,
            resource_scope: None,
            scopes_supported: None,
            access_lifetime: Duration::from_secs(2),
            rotation: true,
            client_id: "test-client".to_owned(),
            client_secret: "test-secret".to_owned(),
            metadata: MetadataDocuments::Both,
            issuer_path: String::new(),
            finish_abandoned: false,
            reuse_grace: None,
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

    /// The server's own confidential client, in place of `test-client`:
    /// the one [`AuthServer::client_id`] and [`AuthServer::client_secret`]
    /// name. Others can be [registered](Self::register) beside it.
    pub fn client(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.registry.clients.remove(&self.client_id);
        self.client_id = id.into();
        self.client_secret = secret.into();
        self.registry
            .register(Client::secret(&self.client_id, &self.client_secret));
        self
    }

    /// Accepts `client` too, authenticating it the way it was made for
    /// (a secret, none, `private_key_jwt`, `client_secret_jwt`). A client
    /// registered again under the same id replaces the first.
    pub fn register(mut self, client: Client) -> Self {
        self.registry.register(client);
        self
    }

    /// Accepts JWT bearer grants (RFC 7523 §2.1) whose assertion names
    /// `issuer` as `iss` and is signed with the key of `jwk`, its public
    /// JWK (`EC` P-256 or `RSA`). The assertion's `aud` must be the token
    /// endpoint or the server's origin, and its `jti` new.
    pub fn jwt_bearer_issuer(mut self, issuer: impl Into<String>, jwk: &Value) -> Self {
        self.registry
            .issuers
            .insert(issuer.into(), clients::PublicKey::from_jwk(jwk));
        self
    }

    /// Whether the token endpoint refuses a request without a DPoP proof
    /// (RFC 9449) with `invalid_dpop_proof` (default `false`). Either way
    /// a proof that comes is checked (signature, `typ`, `htm`, `htu`, no
    /// `ath`, a `jti` never seen, the [nonce](Self::token_dpop_nonce)),
    /// and what the request is granted is bound to its key, `token_type`
    /// `DPoP`.
    pub fn dpop_required(mut self, required: bool) -> Self {
        self.dpop_required = required;
        self
    }

    /// The DPoP nonce the token endpoint wants (default [`Nonce::Off`]).
    pub fn token_dpop_nonce(mut self, nonce: Nonce) -> Self {
        self.token_nonce = nonce;
        self
    }

    /// The DPoP nonce each [`ResourceServer`](crate::ResourceServer) of
    /// this server wants (default [`Nonce::Off`]); each keeps its own.
    pub fn resource_dpop_nonce(mut self, nonce: Nonce) -> Self {
        self.resource_nonce = nonce;
        self
    }

    /// How many polls of a device authorization (RFC 8628) are answered
    /// `authorization_pending` before the user has approved (default 0).
    pub fn device_pending_polls(mut self, polls: usize) -> Self {
        self.device_pending = polls;
        self
    }

    /// The `interval` a device authorization tells the client to poll at,
    /// in whole seconds (default 1 s).
    pub fn device_interval(mut self, interval: Duration) -> Self {
        self.device_interval = interval;
        self
    }

    /// Switches on dynamic client registration (RFC 7591) at
    /// `POST /register` ([`Endpoint::Registration`], named
    /// `registration_endpoint` in the metadata documents; default off, a
    /// 404). A client it registers is authenticated by the token endpoint
    /// like one [registered](Self::register) here. Counted in
    /// [`AuthStats::registrations`], the metadata sent kept in
    /// [`AuthLog::registrations`].
    pub fn registration(mut self, registration: Registration) -> Self {
        self.registration = Some(registration);
        self
    }

    /// Switches on token exchange (RFC 8693) at the token endpoint
    /// (default off: `unsupported_grant_type`), as [`TokenExchange`]
    /// describes. Its answers ignore [`Fault::ExpiresInString`] and
    /// [`Fault::OmitField`]. Counted in [`AuthStats::token_exchanges`].
    pub fn token_exchange(mut self, exchange: TokenExchange) -> Self {
        self.token_exchange = Some(exchange);
        self
    }

    /// Makes each [`ResourceServer`](crate::ResourceServer) of this server
    /// serve protected resource metadata (RFC 9728) naming this server's
    /// issuer, and name it in its 401 challenges (default: none).
    ///
    /// # Example
    ///
    /// ```
    /// use tower_token_refresh_test_util::{AuthConfig, AuthServer, ResourceMetadata, ResourceServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let auth = AuthServer::start(AuthConfig::default().resource_metadata(ResourceMetadata::new())).await?;
    /// let api = ResourceServer::start(&auth).await?;
    /// assert_eq!(
    ///     api.metadata_url().unwrap(),
    ///     api.url("/.well-known/oauth-protected-resource/api/data")
    /// );
    /// # Ok(()) }
    /// ```
    pub fn resource_metadata(mut self, metadata: ResourceMetadata) -> Self {
        self.resource_metadata = Some(metadata);
        self
    }

    /// The scope (space-separated) each
    /// [`ResourceServer`](crate::ResourceServer) of this server requires:
    /// a valid token not granted all of it (the `scope` of the
    /// authorization request its grant came from) gets 403
    /// `insufficient_scope` with `scope` naming this (default: none
    /// required).
    pub fn resource_required_scope(mut self, scope: impl Into<String>) -> Self {
        self.resource_scope = Some(scope.into());
        self
    }

    /// The `scopes_supported` of the metadata documents (default: none).
    pub fn scopes_supported<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes_supported = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// Which metadata documents the server publishes (default
    /// [`Both`](MetadataDocuments::Both)).
    pub fn metadata(mut self, documents: MetadataDocuments) -> Self {
        self.metadata = documents;
        self
    }

    /// Gives the issuer a path, `http://127.0.0.1:PORT/{path}` (a leading
    /// or trailing `/` is ignored; empty: none). The metadata documents
    /// move with it, to
    /// `/.well-known/oauth-authorization-server/{path}` (RFC 8414 §3.1)
    /// and `/{path}/.well-known/openid-configuration` (OIDC Discovery §4);
    /// the endpoints stay where they are.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_token_refresh_test_util::{AuthConfig, AuthServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let auth = AuthServer::start(AuthConfig::default().issuer_path("tenant1")).await?;
    /// assert_eq!(auth.issuer(), format!("http://{}/tenant1", auth.addr()));
    /// # Ok(()) }
    /// ```
    pub fn issuer_path(mut self, path: &str) -> Self {
        let path = path.trim_matches('/');
        self.issuer_path = if path.is_empty() {
            String::new()
        } else {
            format!("/{path}")
        };
        self
    }

    /// Whether a token request whose client hung up while a
    /// [`Fault::Delay`] or [`Fault::Hold`] kept it is still carried out
    /// (default `false`: it is dropped, as hyper drops the handler of a
    /// closed connection).
    ///
    /// On, the server does what oidc-provider, Django and most servers do:
    /// the request runs to its end once the delay is over or the gate
    /// opens, with nobody to hear the answer. A refresh grant is served and,
    /// with rotation, the refresh token presented is spent; the client
    /// never sees its successor. Such requests are counted in
    /// [`AuthStats::abandoned_completed`] (and as whatever they were:
    /// `refresh_grants`, `invalid_grant`, …). A fault that answers instead
    /// of the server ([`Fault::Status`], [`Fault::DropConnection`], …)
    /// carries nothing out. Stopping the server stops these requests too.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_token_refresh_test_util::{AuthConfig, AuthServer, Fault, Gate, hyper_client, until};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let auth = AuthServer::start(AuthConfig::default().finish_abandoned(true)).await?;
    /// let login = auth.login();
    /// let gate = Gate::new();
    /// auth.inject(Fault::Hold(gate.clone()), 1);
    /// let request = http::Request::post(auth.token_url())
    ///     .header("content-type", "application/x-www-form-urlencoded")
    ///     .body(http_body_util::Full::from(format!(
    ///         "grant_type=refresh_token&refresh_token={}&client_id=test-client&client_secret=test-secret",
    ///         login.refresh_token
    ///     )))?;
    /// let client = tokio::spawn(hyper_client().request(request));
    /// until("the request is held", || auth.stats().faults_served == 1).await;
    /// // The client gives up and hangs up...
    /// client.abort();
    /// // Time for the server to see the connection close, then release it.
    /// tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    /// gate.open();
    /// // ...but the server spends its refresh token all the same.
    /// until("the grant is served", || auth.stats().abandoned_completed == 1).await;
    /// assert!(!auth.is_refresh_token_active(&login.refresh_token));
    /// # Ok(()) }
    /// ```
    pub fn finish_abandoned(mut self, finish: bool) -> Self {
        self.finish_abandoned = finish;
        self
    }

    /// With [rotation](Self::rotation), accepts a refresh token that was
    /// rotated away once more if it is presented again less than `grace`
    /// (tokio's clock) after its rotation, as django-oauth-toolkit's
    /// `REFRESH_TOKEN_GRACE_PERIOD_SECONDS`, Okta's grace period and
    /// Auth0's reuse interval do for a client that lost the answer. Default:
    /// no grace.
    ///
    /// Accepted, it rotates again: a new access token and refresh token
    /// are issued, and the successor issued at its rotation is revoked
    /// (that refresh token alone, not its grant; the access token issued
    /// with it lives on until it expires). Counted in
    /// [`AuthStats::grace_reuses`] and `refresh_grants`.
    ///
    /// Presented after the grace, a second time, or once its successor has
    /// been used in turn, it is reuse as without a grace: the whole grant
    /// is revoked and the request counted in `reuse_detected`.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_token_refresh_test_util::{AuthConfig, AuthServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let config = AuthConfig::default().reuse_grace(Duration::from_secs(30));
    /// let auth = AuthServer::start(config).await?;
    /// # Ok(()) }
    /// ```
    pub fn reuse_grace(mut self, grace: Duration) -> Self {
        self.reuse_grace = Some(grace);
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
            .field("metadata", &self.metadata)
            .field("issuer_path", &self.issuer_path)
            .field("finish_abandoned", &self.finish_abandoned)
            .field("reuse_grace", &self.reuse_grace)
            .field("dpop_required", &self.dpop_required)
            .field("token_nonce", &self.token_nonce)
            .field("resource_nonce", &self.resource_nonce)
            .field("device_pending", &self.device_pending)
            .field("device_interval", &self.device_interval)
            .field("registration", &self.registration)
            .field("token_exchange", &self.token_exchange)
            .field("resource_metadata", &self.resource_metadata)
            .field("resource_scope", &self.resource_scope)
            .field("scopes_supported", &self.scopes_supported)
            .finish_non_exhaustive()
    }
}

/// An OAuth2 authorization server on 127.0.0.1 with a token endpoint
/// (`POST /token`), over one token ledger, with fault injection.
///
/// The token endpoint takes `application/x-www-form-urlencoded` bodies and
/// authenticates the client the way it was [registered](AuthConfig::register):
/// HTTP Basic (id and secret form-urlencoded first, RFC 6749 §2.3.1) or
/// `client_id`/`client_secret` in the body, a signed `client_assertion`
/// (`private_key_jwt`, `client_secret_jwt`: signature, `iss`, `sub`, `aud`,
/// `exp`, a `jti` never seen), or a public client's `client_id` alone; a
/// wrong client gets 401 `invalid_client`. It serves:
///
/// - `grant_type=refresh_token`: the token must be active. With rotation on,
///   the answer carries a new refresh token and the old one is retired;
///   presenting a retired one again revokes the whole grant family, access
///   tokens included (RFC 9700 §4.14.2), unless a
///   [reuse grace](AuthConfig::reuse_grace) lets it through once.
/// - `grant_type=client_credentials` (confidential clients): an access
///   token, no refresh token.
/// - `grant_type=authorization_code`: a code from `GET /authorize` (or
///   [`authorize`](Self::authorize)), once, with the same client and
///   redirect URI, and the PKCE verifier of its S256 challenge.
/// - the device grant (RFC 8628): a code from `POST /device_authorization`,
///   `authorization_pending` for the first
///   [polls](AuthConfig::device_pending_polls).
/// - the JWT bearer grant (RFC 7523): an assertion of a
///   [registered issuer](AuthConfig::jwt_bearer_issuer), no client needed.
///
/// A request with a DPoP proof (RFC 9449; [required](AuthConfig::dpop_required)
/// or not) has it checked, and what it is granted is bound to the proof's
/// key; a refresh token bound to a key is served only to proofs of it.
/// [`ResourceServer`](crate::ResourceServer)s check DPoP-bound tokens
/// against the same ledger.
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
        let server = ServerTask::spawn(endpoints::router(shared.clone())).await?;
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
        self.shared.lock().tokens.login(None)
    }

    /// Mints tokens of a new grant family bound to the DPoP key of
    /// thumbprint `jkt` (RFC 7638), as a DPoP login would. Not counted in
    /// [`stats`](Self::stats).
    pub fn login_dpop(&self, jkt: &str) -> IssuedTokens {
        self.shared.lock().tokens.login(Some(jkt))
    }

    /// The thumbprint of the DPoP key an access token is bound to, if it
    /// is one this server issued bound.
    pub fn dpop_jkt(&self, access_token: &str) -> Option<String> {
        self.shared
            .lock()
            .tokens
            .access_jkt(access_token)
            .map(str::to_owned)
    }

    /// What the token endpoint has seen so far, counted.
    pub fn stats(&self) -> AuthStats {
        self.shared.lock().stats
    }

    /// What the server was shown so far, in order: refresh tokens, DPoP
    /// proofs and nonces, assertions, authorization requests.
    pub fn log(&self) -> AuthLog {
        self.shared.lock().log.clone()
    }

    /// `endpoint`'s URL, `http://127.0.0.1:PORT/…`.
    pub fn url(&self, endpoint: Endpoint) -> String {
        format!("http://{}{}", self.addr(), endpoint.path())
    }

    /// The authorization endpoint, `http://127.0.0.1:PORT/authorize`:
    /// `GET` it with an authorization request and the user approves at
    /// once, redirecting (302) to the client's `redirect_uri` with a code.
    pub fn authorization_url(&self) -> String {
        format!("http://{}/authorize", self.addr())
    }

    /// What `GET` of the authorization URL `url` does, without HTTP: the
    /// headless browser of a login test. The request (whose query is
    /// read; the rest of `url` is not) is checked, approved and logged,
    /// and the answer says where the browser goes back to.
    ///
    /// # Errors
    ///
    /// What is wrong with the request: not `response_type=code`, no
    /// `client_id` of a registered client, no `redirect_uri`, or no S256
    /// `code_challenge` (PKCE is required).
    ///
    /// # Example
    ///
    /// ```
    /// use tower_token_refresh_test_util::{AuthConfig, AuthServer, Client};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let auth = AuthServer::start(AuthConfig::default().register(Client::public("cli"))).await?;
    /// let url = format!(
    ///     "{}?response_type=code&client_id=cli&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb\
    ///      &state=s1&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
    ///     auth.authorization_url()
    /// );
    /// let approved = auth.authorize(&url).unwrap();
    /// assert!(approved.redirect.starts_with("http://127.0.0.1:9/cb?code="));
    /// assert_eq!(approved.get("state"), "s1");
    /// # Ok(()) }
    /// ```
    pub fn authorize(&self, url: &str) -> Result<AuthorizationRequest, String> {
        let query = url.split_once('?').map_or("", |(_, query)| query);
        let query = query.split('#').next().unwrap_or_default();
        endpoints::authorize(&self.shared, &self.issuer(), query).map_err(str::to_owned)
    }

    /// The device authorization endpoint (RFC 8628),
    /// `http://127.0.0.1:PORT/device_authorization`.
    pub fn device_authorization_url(&self) -> String {
        self.url(Endpoint::DeviceAuthorization)
    }

    /// The registration endpoint (RFC 7591), `http://127.0.0.1:PORT/register`:
    /// a 404 unless [switched on](AuthConfig::registration).
    pub fn registration_url(&self) -> String {
        self.url(Endpoint::Registration)
    }

    /// Makes the next `times` requests to the token endpoint get `fault`,
    /// after any faults already queued.
    pub fn inject(&self, fault: Fault, times: usize) {
        self.inject_at(Endpoint::Token, fault, times);
    }

    /// Makes the next `times` requests to `endpoint` get `fault`, after any
    /// faults already queued for it. [`Fault::ExpiresInString`],
    /// [`Fault::OmitField`] and a 2xx [`Fault::OversizedBody`] only mean
    /// something at the token endpoint; elsewhere they answer normally.
    pub fn inject_at(&self, endpoint: Endpoint, fault: Fault, times: usize) {
        self.shared.lock().faults.push(endpoint, fault, times);
    }

    /// The issuer identifier, `http://127.0.0.1:PORT` (followed by the
    /// [issuer path](AuthConfig::issuer_path), if any): what discovery
    /// starts from.
    pub fn issuer(&self) -> String {
        format!("http://{}{}", self.addr(), self.shared.issuer_path)
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
        self.shared.lock().tokens.revoke(token);
    }

    /// Whether the server would still accept this refresh token in a grant.
    pub fn is_refresh_token_active(&self, token: &str) -> bool {
        self.shared.lock().tokens.is_refresh_active(token)
    }

    /// Makes every access token issued so far invalid now. Refresh tokens stay
    /// valid, and tokens issued later live as usual.
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        self.shared.lock().tokens.expire_access_tokens(now);
    }

    /// Expires every access token issued so far (as
    /// [`expire_access_tokens`](Self::expire_access_tokens)) and holds the
    /// next token request ([`Fault::Hold`]) until the returned gate opens:
    /// every request sent meanwhile is rejected while the one refresh it
    /// starts cannot finish yet.
    pub fn expire_and_hold_refresh(&self) -> Gate {
        self.expire_access_tokens();
        let gate = Gate::new();
        self.inject(Fault::Hold(gate.clone()), 1);
        gate
    }

    /// Sets the lifetime of access tokens issued from now on.
    pub fn set_access_lifetime(&self, lifetime: Duration) {
        self.shared.lock().tokens.set_access_lifetime(lifetime);
    }

    /// Whether an ID-JAG issued by [token exchange](AuthConfig::token_exchange)
    /// is still waiting to be presented.
    pub fn has_live_id_jags(&self) -> bool {
        self.shared.lock().tokens.has_live_jags()
    }

    /// The grant an access token was issued in: one number per login
    /// ([`login`](Self::login), a code or device grant), kept by every
    /// refresh of it. `None` for an unknown token or one of no grant
    /// (`client_credentials`). A test with many users tells by it whose
    /// token a request carried.
    pub fn grant_of(&self, access_token: &str) -> Option<u64> {
        self.shared.lock().tokens.access_family(access_token)
    }

    /// What token exchange issued `access_token` for (its subject token,
    /// audience and scope), if token exchange issued it.
    pub fn exchanged(&self, access_token: &str) -> Option<Exchanged> {
        self.shared.lock().exchanged.get(access_token).cloned()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let shared = AuthShared::new(AuthConfig::default().client("id", "hunter2"));
        let tokens = shared.lock().tokens.login(None);
        let shown = format!(
            "{tokens:?} {:?}",
            AuthConfig::default().client("id", "hunter2")
        );
        assert!(!shown.contains(&tokens.access_token), "{shown}");
        assert!(!shown.contains(&tokens.refresh_token), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
