//! The in-process protected resource.

use std::{
    collections::HashMap,
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

use crate::{AuthServer, auth::AuthShared, serve::ServerTask};

/// The challenge for a request without bearer credentials (RFC 6750 §3.1:
/// no error code).
const NO_CREDENTIALS: &str = r#"Bearer realm="test""#;
/// The challenge for an expired, revoked or unknown token.
const INVALID_TOKEN: &str = r#"Bearer realm="test", error="invalid_token", error_description="the access token expired or was revoked""#;
/// The challenge of `/api/admin`.
const INSUFFICIENT_SCOPE: &str =
    r#"Bearer realm="test", error="insufficient_scope", scope="admin""#;

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
    /// Requests that came without `Authorization: Bearer` credentials (also
    /// counted in `rejected`).
    pub missing_credentials: u64,
}

/// A protected resource on 127.0.0.1 that accepts the access tokens of one
/// [`AuthServer`].
///
/// Every route requires `Authorization: Bearer <token>` (scheme in any
/// case). Without it the answer is 401 with `WWW-Authenticate: Bearer
/// realm="test"`; with a token the authorization server does not consider
/// valid, 401 with `error="invalid_token"`. Routes:
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
        let shared = Arc::new(ResourceShared {
            auth: auth.shared(),
            state: Mutex::new(ResourceState::default()),
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
}

/// Authenticates every request and counts every answer.
async fn guard(
    State(shared): State<Arc<ResourceShared>>,
    request: Request,
    next: Next,
) -> Response {
    let token = bearer_token(request.headers()).map(str::to_owned);
    {
        let mut state = shared.lock();
        state.stats.requests += 1;
        if let Some(token) = &token {
            *state.by_token.entry(token.clone()).or_default() += 1;
        }
    }
    let response = match token {
        None => {
            shared.lock().stats.missing_credentials += 1;
            challenge(StatusCode::UNAUTHORIZED, NO_CREDENTIALS)
        }
        Some(token) if !shared.auth.is_access_token_valid(&token) => {
            challenge(StatusCode::UNAUTHORIZED, INVALID_TOKEN)
        }
        Some(_) => next.run(request).await,
    };
    let status = response.status();
    let mut state = shared.lock();
    if status.is_success() {
        state.stats.ok += 1;
    } else if status == StatusCode::UNAUTHORIZED {
        state.stats.rejected += 1;
    } else if status == StatusCode::FORBIDDEN {
        state.stats.forbidden += 1;
    }
    response
}

/// The token of an `Authorization: Bearer` header, if there is one.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
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
