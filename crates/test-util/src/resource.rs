//! The in-process protected resource.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;
use tower_token_refresh_core::header::DPOP;

use crate::{
    AuthServer,
    auth::{
        AuthShared,
        dpop::{NonceState, set_nonce},
    },
    dpop::{Proof, ath, verify_proof},
    serve::ServerTask,
};

/// The challenge for a request without bearer credentials (RFC 6750 §3.1:
/// no error code).
const NO_CREDENTIALS: &str = r#"Bearer realm="test""#;
/// What the challenge for an expired, revoked or unknown token says after
/// the realm.
const INVALID_TOKEN: &str =
    r#", error="invalid_token", error_description="the access token expired or was revoked""#;
/// The path of the resource the [`ResourceMetadata`] describes.
const RESOURCE_PATH: &str = "/api/data";
/// RFC 9728 §3.1's well-known suffix.
const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";
/// The challenge of `/api/admin`.
const INSUFFICIENT_SCOPE: &str =
    r#"Bearer realm="test", error="insufficient_scope", scope="admin""#;

/// The challenge for a request without credentials to a resource of a
/// server that requires DPoP.
const DPOP_NO_CREDENTIALS: &str = r#"DPoP algs="ES256""#;

/// Echo accepts bodies up to this size (benches send large ones).
const ECHO_LIMIT: usize = 16 * 1024 * 1024;

/// The protected resource metadata (RFC 9728) a [`ResourceServer`]
/// serves, switched on with
/// [`AuthConfig::resource_metadata`](crate::AuthConfig::resource_metadata).
///
/// The document describes the resource `http://127.0.0.1:PORT/api/data`
/// (the origin, for the [root](MetadataLocation::Root) document): its
/// `resource`, `authorization_servers` (the
/// [`AuthServer`]'s [issuer](AuthServer::issuer)) and, if set,
/// `scopes_supported`. By default the 401's `WWW-Authenticate` names it
/// (`resource_metadata`, RFC 9728 §5.1).
///
/// # Example
///
/// ```
/// use tower_token_refresh_test_util::{AuthConfig, MetadataLocation, ResourceMetadata};
///
/// let config = AuthConfig::default().resource_metadata(
///     ResourceMetadata::new()
///         .at(MetadataLocation::Root)
///         .scopes_supported(["mcp:read", "mcp:write"])
///         .challenge_scope("mcp:read"),
/// );
/// # let _ = config;
/// ```
#[derive(Clone, Debug)]
pub struct ResourceMetadata {
    location: MetadataLocation,
    scopes_supported: Option<Vec<String>>,
    in_challenge: bool,
    challenge_scope: Option<String>,
}

/// Where a [`ResourceServer`] serves its [`ResourceMetadata`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataLocation {
    /// `/.well-known/oauth-protected-resource/api/data`, the path-based URL
    /// of RFC 9728 §3.1 (the default).
    #[default]
    PathBased,
    /// `/.well-known/oauth-protected-resource`; the document's `resource`
    /// is then the origin.
    Root,
    /// This path (starting with `/`), found only through the challenge.
    Custom(String),
}

impl MetadataLocation {
    fn path(&self) -> String {
        match self {
            MetadataLocation::PathBased => format!("{WELL_KNOWN}{RESOURCE_PATH}"),
            MetadataLocation::Root => WELL_KNOWN.to_owned(),
            MetadataLocation::Custom(path) => path.clone(),
        }
    }
}

impl Default for ResourceMetadata {
    fn default() -> Self {
        ResourceMetadata {
            location: MetadataLocation::PathBased,
            scopes_supported: None,
            in_challenge: true,
            challenge_scope: None,
        }
    }
}

impl ResourceMetadata {
    /// The document at the path-based URL, named in the challenge, with
    /// no `scopes_supported`.
    pub fn new() -> ResourceMetadata {
        ResourceMetadata::default()
    }

    /// Where the document is served (default
    /// [`PathBased`](MetadataLocation::PathBased)).
    pub fn at(mut self, location: MetadataLocation) -> Self {
        self.location = location;
        self
    }

    /// The document's `scopes_supported` (default: none).
    pub fn scopes_supported<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes_supported = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// Whether the 401's challenge names the document in
    /// `resource_metadata` (default `true`); without, a client finds it
    /// only at a well-known URL.
    pub fn in_challenge(mut self, named: bool) -> Self {
        self.in_challenge = named;
        self
    }

    /// The `scope` of the 401's challenge (default: none), the scope a
    /// client should ask for (RFC 6750 §3).
    pub fn challenge_scope(mut self, scope: impl Into<String>) -> Self {
        self.challenge_scope = Some(scope.into());
        self
    }
}

/// What a [`ResourceServer`] has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceStats {
    /// Every request, whatever its outcome.
    pub requests: u64,
    /// Requests answered with a 2xx status.
    pub ok: u64,
    /// Requests answered 401, for any reason.
    pub rejected: u64,
    /// Requests answered 403 (`/api/admin`, or a token without the
    /// [required scope](crate::AuthConfig::resource_required_scope)).
    pub forbidden: u64,
    /// `GET`s of the [protected resource metadata](ResourceMetadata)
    /// (not counted in `requests`).
    pub metadata_requests: u64,
    /// Requests that came without `Authorization: Bearer` or `DPoP`
    /// credentials (also counted in `rejected`).
    pub missing_credentials: u64,
    /// `DPoP` requests refused with `invalid_dpop_proof`: no proof, or one
    /// that does not verify, is not for this request or token, or was seen
    /// before (also counted in `rejected`).
    pub invalid_dpop_proof: u64,
    /// `DPoP` requests refused with `use_dpop_nonce` (also counted in
    /// `rejected`).
    pub dpop_nonce_challenges: u64,
}

/// What a [`ResourceServer`] was shown, in order.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ResourceLog {
    /// The `jti` of every valid DPoP proof, accepted or not: one seen twice
    /// is a replay, refused.
    pub dpop_jtis: Vec<String>,
    /// Every DPoP proof of an accepted request.
    pub dpop_proofs: Vec<Proof>,
    /// Every request, metadata and unknown paths included, as
    /// `"GET /path"` (no query).
    pub requests: Vec<String>,
}

/// A protected resource on 127.0.0.1 that accepts the access tokens of one
/// [`AuthServer`].
///
/// Every route requires `Authorization: Bearer <token>` (scheme in any
/// case). Without it the answer is 401 with `WWW-Authenticate: Bearer
/// realm="test"` (`DPoP algs="ES256"` if the server
/// [requires DPoP](crate::AuthConfig::dpop_required)); with a token the
/// authorization server does not consider valid, or one bound to a DPoP
/// key, 401 with `error="invalid_token"`.
///
/// A DPoP-bound token comes as `Authorization: DPoP <token>` with a proof
/// (RFC 9449 §7): its signature, `htm`, `htu` (no query), `ath`, the key
/// the token is bound to, and a `jti` this server never saw are checked
/// (else `invalid_dpop_proof`), then the
/// [nonce](crate::AuthConfig::resource_dpop_nonce) (else `use_dpop_nonce`
/// with `DPoP-Nonce`), then the token (else `invalid_token`), each in a
/// `DPoP` challenge. Routes:
///
/// | route | answer |
/// |---|---|
/// | `GET /api/data` | 200 `{"ok":true}` |
/// | `POST /api/echo` | 200, the request body |
/// | `GET /api/admin` | 403, `error="insufficient_scope", scope="admin"` |
/// | `GET /api/always-401` | 401 `invalid_token`, even for a valid token |
///
/// With [protected resource metadata](crate::AuthConfig::resource_metadata)
/// the server also serves that document (no token needed) and its 401
/// challenges name it. With a
/// [required scope](crate::AuthConfig::resource_required_scope), a valid
/// token not granted all of it gets 403 `insufficient_scope` naming it.
///
/// Clones share the server; it stops when the last clone is dropped.
///
/// # Example
///
/// ```
/// use tower_token_refresh_test_util::{AuthConfig, AuthServer, ResourceServer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// let auth = AuthServer::start(AuthConfig::default()).await?;
/// let api = ResourceServer::start(&auth).await?;
/// assert_eq!(api.url("/api/data"), format!("http://{}/api/data", api.addr()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ResourceServer {
    shared: Arc<ResourceShared>,
    server: Arc<ServerTask>,
}

impl ResourceServer {
    /// Starts the server on 127.0.0.1 on a free port, accepting the access
    /// tokens `auth` issues.
    ///
    /// # Errors
    ///
    /// When the listening socket cannot be bound.
    pub async fn start(auth: &AuthServer) -> std::io::Result<ResourceServer> {
        let issuer = auth.issuer();
        let auth = auth.shared();
        let state = ResourceState {
            nonce: NonceState::new(auth.resource_nonce.clone()),
            ..ResourceState::default()
        };
        let shared = Arc::new(ResourceShared {
            auth,
            issuer,
            state: Mutex::new(state),
        });
        let mut router = Router::new()
            .route(RESOURCE_PATH, get(data))
            .route("/api/echo", post(echo))
            .route("/api/admin", get(admin))
            .route("/api/always-401", get(always_401))
            .layer(DefaultBodyLimit::max(ECHO_LIMIT))
            .layer(middleware::from_fn_with_state(shared.clone(), guard));
        if let Some(metadata) = &shared.auth.resource_metadata {
            // Added after the guard: the document needs no token.
            router = router.route(
                &metadata.location.path(),
                get(resource_metadata).with_state(shared.clone()),
            );
        }
        let router = router.layer(middleware::from_fn_with_state(shared.clone(), log_request));
        let server = ServerTask::spawn(router).await?;
        Ok(ResourceServer {
            shared,
            server: Arc::new(server),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT` followed by `path` (which should start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// What the server has seen so far.
    pub fn stats(&self) -> ResourceStats {
        self.shared.lock().stats
    }

    /// How many requests arrived bearing this access token, valid or not.
    pub fn requests_with(&self, token: &str) -> u64 {
        self.shared.lock().by_token.get(token).copied().unwrap_or(0)
    }

    /// The access tokens of the requests the server accepted, in order.
    pub fn accepted_tokens(&self) -> Vec<String> {
        self.shared.lock().accepted.clone()
    }

    /// The URL of its [protected resource metadata](ResourceMetadata), if
    /// [switched on](crate::AuthConfig::resource_metadata).
    pub fn metadata_url(&self) -> Option<String> {
        let metadata = self.shared.auth.resource_metadata.as_ref()?;
        Some(self.url(&metadata.location.path()))
    }

    /// The resource identifier its metadata names (RFC 9728 §2):
    /// `http://127.0.0.1:PORT/api/data`, or the origin for the
    /// [root](MetadataLocation::Root) document.
    pub fn resource(&self) -> String {
        match self
            .shared
            .auth
            .resource_metadata
            .as_ref()
            .map(|m| &m.location)
        {
            Some(MetadataLocation::Root) => self.url(""),
            _ => self.url(RESOURCE_PATH),
        }
    }

    /// What the server was shown so far.
    pub fn log(&self) -> ResourceLog {
        self.shared.lock().log.clone()
    }
}

impl fmt::Debug for ResourceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceServer")
            .field("addr", &self.addr())
            .finish_non_exhaustive()
    }
}

struct ResourceShared {
    auth: Arc<AuthShared>,
    /// The authorization server's issuer identifier.
    issuer: String,
    state: Mutex<ResourceState>,
}

impl ResourceShared {
    fn lock(&self) -> MutexGuard<'_, ResourceState> {
        // Counters only: a panic elsewhere cannot leave them inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct ResourceState {
    stats: ResourceStats,
    by_token: HashMap<String, u64>,
    accepted: Vec<String>,
    nonce: NonceState,
    jtis: HashSet<String>,
    log: ResourceLog,
}

/// Logs every request, whatever answers it.
async fn log_request(
    State(shared): State<Arc<ResourceShared>>,
    request: Request,
    next: Next,
) -> Response {
    let line = format!("{} {}", request.method(), request.uri().path());
    shared.lock().log.requests.push(line);
    next.run(request).await
}

/// `http://HOST` of a request, from its Host header.
fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    format!("http://{host}")
}

/// The protected resource metadata document (RFC 9728 §3.2).
async fn resource_metadata(
    State(shared): State<Arc<ResourceShared>>,
    headers: HeaderMap,
) -> Response {
    shared.lock().stats.metadata_requests += 1;
    let Some(metadata) = &shared.auth.resource_metadata else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let origin = origin(&headers);
    let resource = match metadata.location {
        MetadataLocation::Root => origin.clone(),
        _ => format!("{origin}{RESOURCE_PATH}"),
    };
    let mut document = json!({
        "resource": resource,
        "authorization_servers": [shared.issuer],
        "bearer_methods_supported": ["header"],
    });
    if let Some(scopes) = &metadata.scopes_supported {
        document["scopes_supported"] = json!(scopes);
    }
    Json(document).into_response()
}

/// A `Bearer` challenge: `realm="test"`, then `params`, then what the
/// [`ResourceMetadata`] adds to a 401 or 403.
fn bearer_challenge(shared: &ResourceShared, headers: &HeaderMap, params: &str) -> String {
    let mut value = format!(r#"Bearer realm="test"{params}"#);
    if let Some(metadata) = &shared.auth.resource_metadata {
        if let Some(scope) = metadata
            .challenge_scope
            .as_ref()
            .filter(|_| !params.contains("scope="))
        {
            value.push_str(&format!(r#", scope="{scope}""#));
        }
        if metadata.in_challenge {
            let url = format!("{}{}", origin(headers), metadata.location.path());
            value.push_str(&format!(r#", resource_metadata="{url}""#));
        }
    }
    value
}

/// How a request presents its token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Bearer,
    Dpop,
}

/// Authenticates every request and counts every answer.
async fn guard(
    State(shared): State<Arc<ResourceShared>>,
    request: Request,
    next: Next,
) -> Response {
    let credentials = credentials(request.headers());
    {
        let mut state = shared.lock();
        state.stats.requests += 1;
        if let Some((_, token)) = &credentials {
            *state.by_token.entry(token.clone()).or_default() += 1;
        }
    }
    let refusal = match &credentials {
        None => {
            shared.lock().stats.missing_credentials += 1;
            let challenge_text = if shared.auth.dpop_required {
                DPOP_NO_CREDENTIALS.to_owned()
            } else {
                bearer_challenge(&shared, request.headers(), "")
            };
            Some(challenge(StatusCode::UNAUTHORIZED, challenge_text))
        }
        Some((Scheme::Bearer, token)) => {
            // A DPoP-bound token is no bearer token (RFC 9449 §7.2).
            let bound = shared.auth.lock().tokens.access_jkt(token).is_some();
            (bound || !shared.auth.is_access_token_valid(token)).then(|| {
                let text = bearer_challenge(&shared, request.headers(), INVALID_TOKEN);
                challenge(StatusCode::UNAUTHORIZED, text)
            })
        }
        Some((Scheme::Dpop, token)) => check_dpop(&shared, &request, token),
    };
    let refusal = refusal.or_else(|| {
        let (_, token) = credentials.as_ref()?;
        check_scope(&shared, request.headers(), token)
    });
    let mut response = match refusal {
        None => next.run(request).await,
        Some(refusal) => refusal,
    };
    let status = response.status();
    let mut state = shared.lock();
    if status.is_success()
        && let Some((scheme, token)) = credentials
    {
        state.accepted.push(token);
        if scheme == Scheme::Dpop
            && let Some(nonce) = state.nonce.after_success()
        {
            set_nonce(response.headers_mut(), &nonce);
        }
    }
    if status.is_success() {
        state.stats.ok += 1;
    } else if status == StatusCode::UNAUTHORIZED {
        state.stats.rejected += 1;
    } else if status == StatusCode::FORBIDDEN {
        state.stats.forbidden += 1;
    }
    response
}

/// The scheme and token of an `Authorization: Bearer` or `DPoP` header.
fn credentials_of(headers: &HeaderMap) -> Option<(Scheme, &str)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return None;
    };
    (!token.is_empty() && !token.contains(' ')).then_some((scheme, token))
}

fn credentials(headers: &HeaderMap) -> Option<(Scheme, String)> {
    credentials_of(headers).map(|(scheme, token)| (scheme, token.to_owned()))
}

/// A 401 with a `DPoP` challenge carrying `error`.
fn dpop_challenge(error: &str) -> Response {
    let value = format!(r#"DPoP algs="ES256", error="{error}""#);
    let mut response = StatusCode::UNAUTHORIZED.into_response();
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Checks a `DPoP` request's proof, nonce and token, in that order (RFC
/// 9449 §7.1, §9): the challenge to answer with, if one fails.
fn check_dpop(shared: &ResourceShared, request: &Request, token: &str) -> Option<Response> {
    let invalid_proof = || {
        shared.lock().stats.invalid_dpop_proof += 1;
        dpop_challenge("invalid_dpop_proof")
    };
    let headers = request.headers();
    let Some(Ok(proof)) = headers
        .get(DPOP)
        .map(|v| verify_proof(v.to_str().unwrap_or_default()))
    else {
        return Some(invalid_proof());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let htu = format!("http://{host}{}", request.uri().path());
    let bound = shared
        .auth
        .lock()
        .tokens
        .access_jkt(token)
        .map(str::to_owned);
    if proof.htm != request.method().as_str()
        || proof.htu != htu
        || proof.ath.as_deref() != Some(ath(token).as_str())
        || bound.as_ref().is_some_and(|jkt| *jkt != proof.jkt)
    {
        return Some(invalid_proof());
    }
    {
        let mut state = shared.lock();
        if !state.jtis.insert(proof.jti.clone()) {
            drop(state);
            return Some(invalid_proof());
        }
        state.log.dpop_jtis.push(proof.jti.clone());
        if let Err(nonce) = state.nonce.check(proof.nonce.as_deref()) {
            state.stats.dpop_nonce_challenges += 1;
            let mut response = dpop_challenge("use_dpop_nonce");
            set_nonce(response.headers_mut(), &nonce);
            return Some(response);
        }
    }
    if bound.is_none() || !shared.auth.is_access_token_valid(token) {
        return Some(dpop_challenge("invalid_token"));
    }
    shared.lock().log.dpop_proofs.push(proof);
    None
}

/// 403 `insufficient_scope` (RFC 6750 §3.1) if the
/// [required scope](crate::AuthConfig::resource_required_scope) is not all
/// granted to `token`.
fn check_scope(shared: &ResourceShared, headers: &HeaderMap, token: &str) -> Option<Response> {
    let required = shared.auth.resource_scope.as_deref()?;
    let state = shared.auth.lock();
    let granted = state.tokens.access_scope(token).unwrap_or_default();
    let has = |scope: &str| granted.split(' ').any(|g| g == scope);
    if required.split(' ').all(has) {
        return None;
    }
    drop(state);
    let params = format!(r#", error="insufficient_scope", scope="{required}""#);
    let text = bearer_challenge(shared, headers, &params);
    Some(challenge(StatusCode::FORBIDDEN, text))
}

fn challenge(status: StatusCode, www_authenticate: impl Into<String>) -> Response {
    let value = HeaderValue::try_from(www_authenticate.into())
        .unwrap_or(HeaderValue::from_static(NO_CREDENTIALS));
    (status, [(header::WWW_AUTHENTICATE, value)]).into_response()
}

async fn data() -> Json<serde_json::Value> {
    Json(json!({"ok": true}))
}

async fn echo(headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn admin() -> Response {
    challenge(StatusCode::FORBIDDEN, INSUFFICIENT_SCOPE)
}

async fn always_401() -> Response {
    challenge(
        StatusCode::UNAUTHORIZED,
        format!(r#"Bearer realm="test"{INVALID_TOKEN}"#),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The token of an `Authorization: Bearer` header, if there is one.
    fn bearer_token(headers: &HeaderMap) -> Option<&str> {
        match credentials_of(headers)? {
            (Scheme::Bearer, token) => Some(token),
            (Scheme::Dpop, _) => None,
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_token_required() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            bearer_token(&headers).map(str::to_owned)
        };
        assert_eq!(with("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(with("bEaReR   abc").as_deref(), Some("abc"));
        assert_eq!(with("Bearer "), None);
        assert_eq!(with("Bearer"), None);
        assert_eq!(with("Basic abc"), None);
        assert_eq!(with("Bearer a b"), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
