//! A backend-for-frontend: users sign in to an axum app, which keeps each
//! user's tokens server-side (`Sessions`, one session per user, a file per
//! user) and calls a downstream API for them through ONE layered hyper
//! client (`TokenRefreshLayer::sessions`). Each handler names the user's
//! session with a `SessionKey` on the outbound request, so each call carries
//! that user's current token, refreshed for that user alone.
//!
//! main signs in five users (`/login?user=N` answers with a session cookie)
//! and sends 20 requests per user to `/orders` over about six seconds, with
//! 2-second access tokens; then one user signs out and gets 401 while the
//! others go on. The downstream API checks that each token is the grant of
//! the user the call is for. Exits non-zero unless every answer was 200, no
//! token crossed users, each user refreshed about once per token (ahead of
//! its expiry) and no refresh token was reused.
//!
//! ```text
//! cargo run --example bff
//! ```

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    routing::get,
};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tower::{ServiceBuilder, ServiceExt, util::BoxCloneSyncService};
use tower_token_refresh::{
    Error, FileStore, ServiceClient, SessionKey, Sessions, TokenManager, TokenRefreshLayer,
};
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer,
    fixture::{origin_of, refresh_grant},
    hyper_client,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type SetCookie = [(header::HeaderName, String); 1];
type Grants = Arc<Mutex<HashMap<u64, u64>>>;

const USERS: u64 = 5;
const REQUESTS: u64 = 20;
const LIFETIME: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Bff {
    auth: AuthServer,
    sessions: Sessions<u64>,
    /// Session cookie → user.
    cookies: Arc<Mutex<HashMap<String, u64>>>,
    /// The one client, for every user.
    upstream: BoxCloneSyncService<Request<Full<Bytes>>, Response<Incoming>, BoxError>,
    orders_url: String,
    /// User → grant, for the downstream API's check (a real API reads the
    /// token's subject instead).
    grants: Grants,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Signs a user in: tokens into the user's session, a cookie back. (A real
/// BFF runs the code flow, and draws the session id from a CSPRNG.)
async fn login(State(bff): State<Bff>, uri: Uri) -> Result<(SetCookie, &'static str), StatusCode> {
    let query = uri.query().and_then(|q| q.strip_prefix("user="));
    let user: u64 = query
        .and_then(|u| u.parse().ok())
        .ok_or(StatusCode::BAD_REQUEST)?;
    let tokens = bff.auth.login();
    let grant = bff.auth.grant_of(&tokens.access_token).unwrap_or_default();
    lock(&bff.grants).insert(user, grant);
    let set = bff.sessions.set(user, tokens.token_set()).await;
    set.map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let sid = format!("{:016x}", RandomState::new().hash_one(user));
    lock(&bff.cookies).insert(sid.clone(), user);
    let cookie = format!("sid={sid}; HttpOnly; SameSite=Lax");
    Ok(([(header::SET_COOKIE, cookie)], "signed in"))
}

fn signed_in(bff: &Bff, headers: &HeaderMap) -> Result<u64, StatusCode> {
    let cookie = headers.get(header::COOKIE).and_then(|c| c.to_str().ok());
    let sid = cookie.and_then(|c| c.split(';').find_map(|c| c.trim().strip_prefix("sid=")));
    let user = sid.and_then(|sid| lock(&bff.cookies).get(sid).copied());
    user.ok_or(StatusCode::UNAUTHORIZED)
}

/// Calls the downstream API for the signed-in user, with their token.
async fn orders(State(bff): State<Bff>, headers: HeaderMap) -> Result<String, StatusCode> {
    let user = signed_in(&bff, &headers)?;
    let mut request = Request::get(&bff.orders_url)
        .header("x-user", user.to_string())
        .body(Full::default())
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    request.extensions_mut().insert(SessionKey(user));
    let answer = bff.upstream.clone().oneshot(request).await;
    // An ended session (signed out, or the grant revoked) is the user's to
    // fix by signing in again; anything else is the API's.
    let ended = |e: &BoxError| {
        e.downcast_ref::<Error>()
            .is_some_and(Error::is_session_expired)
    };
    match answer {
        Ok(r) if r.status().is_success() => Ok(format!("orders of user {user}")),
        Err(e) if ended(&e) => Err(StatusCode::UNAUTHORIZED),
        _ => Err(StatusCode::BAD_GATEWAY),
    }
}

/// Signs the user out: ends their session (and its refresh token) only.
async fn logout(State(bff): State<Bff>, headers: HeaderMap) -> Result<(), StatusCode> {
    let user = signed_in(&bff, &headers)?;
    let ended = bff.sessions.end_session(&user).await;
    ended.map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}

/// The downstream API: 200 for a valid token of the user the call is for,
/// 401 for an expired one, 409 (counted) for another user's.
async fn api(
    State((auth, grants, crossed)): State<(AuthServer, Grants, Arc<AtomicU64>)>,
    headers: HeaderMap,
) -> StatusCode {
    let value = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let user = value(header::HeaderName::from_static("x-user")).and_then(|u| u.parse().ok());
    let token = value(header::AUTHORIZATION).and_then(|t| t.strip_prefix("Bearer "));
    let (Some(user), Some(token)) = (user, token) else {
        return StatusCode::BAD_REQUEST;
    };
    if auth.grant_of(token) != lock(&grants).get(&user).copied() {
        crossed.fetch_add(1, Ordering::Relaxed);
        StatusCode::CONFLICT
    } else if auth.is_access_token_valid(token) {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

/// Serves `app` on 127.0.0.1; its address.
async fn serve(app: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// A browser's request: the status, and the cookie set if any.
async fn browse(url: String, cookie: &str) -> Result<(StatusCode, Option<String>), BoxError> {
    let request = Request::get(url)
        .header(header::COOKIE, cookie)
        .body(Full::default())?;
    let response = hyper_client().request(request).await?;
    let set = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok());
    let cookie = set.and_then(|c| c.split(';').next()).map(str::to_owned);
    Ok((response.status(), cookie))
}

#[tokio::main]
async fn main() -> Result<ExitCode, BoxError> {
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(LIFETIME)).await?;
    let (grants, crossed) = (Grants::default(), Arc::new(AtomicU64::new(0)));
    let api_app = Router::new().route("/orders", get(api));
    let api_addr =
        serve(api_app.with_state((auth.clone(), grants.clone(), crossed.clone()))).await?;
    let dir = std::env::temp_dir().join(format!("ttr-bff-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let files = dir.clone();

    let grant = refresh_grant(&auth, ServiceClient::new(hyper_client()));
    let sessions: Sessions<u64> = Sessions::builder(TokenManager::builder(grant))
        .store(move |user: &u64| FileStore::keyed(&files, user.to_be_bytes()))
        .build()?;
    let layer = TokenRefreshLayer::sessions(sessions.clone()).allow_origin(origin_of(api_addr));
    let bff = Bff {
        auth: auth.clone(),
        sessions: sessions.clone(),
        cookies: Arc::default(),
        upstream: BoxCloneSyncService::new(
            ServiceBuilder::new().layer(layer).service(hyper_client()),
        ),
        orders_url: format!("http://{api_addr}/orders"),
        grants,
    };
    let app = Router::new()
        .route("/login", get(login))
        .route("/orders", get(orders))
        .route("/logout", get(logout));
    let url = format!("http://{}", serve(app.with_state(bff)).await?);

    // Each user signs in, then browses (every 300 ms) alongside the others.
    let started = Instant::now();
    let mut cookies = Vec::new();
    for user in 0..USERS {
        let (_, cookie) = browse(format!("{url}/login?user={user}"), "").await?;
        cookies.push(cookie.ok_or("login failed")?);
    }
    let users: Vec<_> = (cookies.iter().cloned())
        .map(|cookie| {
            let orders = format!("{url}/orders");
            tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..REQUESTS {
                    ok += u64::from(browse(orders.clone(), &cookie).await?.0 == StatusCode::OK);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Ok::<_, BoxError>(ok)
            })
        })
        .collect();
    let mut ok = 0;
    for user in users {
        ok += user.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();

    // User 0 signs out; the others go on.
    browse(format!("{url}/logout"), &cookies[0]).await?;
    let mut after = Vec::new();
    for cookie in &cookies {
        after.push(browse(format!("{url}/orders"), cookie).await?.0.as_u16());
    }
    let _ = std::fs::remove_dir_all(&dir);

    let (server, ours) = (auth.stats(), sessions.stats());
    let crossed = crossed.load(Ordering::Relaxed);
    // Refreshed ahead of expiry: in the last half of each 2-second token.
    let per_user = server.refresh_grants as f64 / USERS as f64;
    let tokens = elapsed / (LIFETIME.as_secs_f64() / 2.0);
    println!(
        "a backend-for-frontend, {USERS} users, one layered client\n  \
         answers 200          {ok} of {} in {elapsed:.1} s\n  \
         another user's token {crossed} (the downstream API's check)\n  \
         refreshes            {} (server), {} (sessions): {per_user:.1} per user, \
         at most {tokens:.1} refresh-ahead windows each\n  \
         reuse detected       {}\n  \
         after user 0 signs out: {after:?}",
        USERS * REQUESTS,
        server.refresh_grants,
        ours.tokens.refreshes_succeeded,
        server.reuse_detected,
    );

    if ok != USERS * REQUESTS
        || crossed != 0
        || server.reuse_detected != 0
        || server.refresh_grants != ours.tokens.refreshes_succeeded
        || per_user < (elapsed / LIFETIME.as_secs_f64()).floor()
        || per_user > tokens.ceil()
        || after != [401, 200, 200, 200, 200]
    {
        eprintln!("FAILED: see the figures above");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
