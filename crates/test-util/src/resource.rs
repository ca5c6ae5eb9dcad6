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
/// The challenge for an expired, revoked or unknown token.
const INVALID_TOKEN: &str = r#"Bearer realm="test", error="invalid_token", error_description="the access token expired or was revoked""#;
/// The challenge of `/api/admin`.
const INSUFFICIENT_SCOPE: &str =
    r#"Bearer realm="test", error="insufficient_scope", scope="admin""#;

/// The challenge for a request without credentials to a resource of a
/// server that requires DPoP.
const DPOP_NO_CREDENTIALS: &str = r#"DPoP algs="ES256""#;

/// Echo accepts bodies up to this size (benches send large ones).
const ECHO_LIMIT: usize = 16 * 1024 * 1024;

/// What a [`ResourceServer`] has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceStats {
    /// Every request, whatever its outcome.
    pub requests: u64,
    /// Requests answered with a 2xx status.
    pub ok: u64,
    /// Requests answered 401, for any reason.
    pub rejected: u64,
    /// Requests answered 403 (`/api/admin`).
    pub forbidden: u64,
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
        let auth = auth.shared();
        let state = ResourceState {
            nonce: NonceState::new(auth.resource_nonce.clone()),
            ..ResourceState::default()
        };
        let shared = Arc::new(ResourceShared {
            auth,
            state: Mutex::new(state),
        });
        let router = Router::new()
            .route("/api/data", get(data))
            .route("/api/echo", post(echo))
            .route("/api/admin", get(admin))
            .route("/api/always-401", get(always_401))
            .layer(DefaultBodyLimit::max(ECHO_LIMIT))
            .layer(middleware::from_fn_with_state(shared.clone(), guard));
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
                DPOP_NO_CREDENTIALS
            } else {
                NO_CREDENTIALS
            };
            Some(challenge(StatusCode::UNAUTHORIZED, challenge_text))
        }
        Some((Scheme::Bearer, token)) => {
            // A DPoP-bound token is no bearer token (RFC 9449 §7.2).
            let bound = shared.auth.lock().tokens.access_jkt(token).is_some();
            (bound || !shared.auth.is_access_token_valid(token))
                .then(|| challenge(StatusCode::UNAUTHORIZED, INVALID_TOKEN))
        }
        Some((Scheme::Dpop, token)) => check_dpop(&shared, &request, token),
    };
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

fn challenge(status: StatusCode, www_authenticate: &'static str) -> Response {
    (
        status,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(www_authenticate),
        )],
    )
        .into_response()
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
    challenge(StatusCode::UNAUTHORIZED, INVALID_TOKEN)
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
