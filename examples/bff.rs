//! A backend-for-frontend: users sign in to an axum app, which keeps each
//! user's tokens server-side (`Sessions`, one session per user, a file per
//! user) and calls a downstream API for them through ONE layered hyper
//! client (`TokenRefreshLayer::sessions`). Each handler names the session
//! with a `SessionKey` on the outbound request, so each call carries that
//! user's current token, refreshed for that user alone.
//!
//! main signs in five users (`/login?user=N` answers with a session cookie),
//! sends 20 requests per user to `/orders` over about six seconds with
//! 2-second access tokens, then signs one user out: that user's next
//! request gets 401 while the others go on. The downstream API checks that
//! each token belongs to the user the call is for. Exits non-zero unless
//! every answer was 200, no token crossed users, each user refreshed about
//! once per token lifetime and no refresh token was reused.
//!
//! ```text
//! cargo run --example bff
//! ```

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    process::ExitCode,
    sync::{
        Arc, Mutex,
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
    FileStore, ServiceClient, SessionKey, Sessions, TokenManager, TokenRefreshLayer,
};
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer,
    fixture::{origin_of, refresh_grant},
    hyper_client,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Upstream = BoxCloneSyncService<Request<Full<Bytes>>, Response<Incoming>, BoxError>;

const USERS: u64 = 5;
const REQUESTS: u32 = 20;
const PACE: Duration = Duration::from_millis(300);
const LIFETIME: Duration = Duration::from_secs(2);

/// The BFF's state: the sessions, the cookies naming them, the one client.
#[derive(Clone)]
struct Bff {
    auth: AuthServer,
    sessions: Sessions<u64>,
    cookies: Arc<Mutex<HashMap<String, u64>>>,
    upstream: Upstream,
    orders_url: String,
    /// Each user's grant, for the downstream API's check (a real API reads
    /// the token's subject instead).
    grants: Arc<Mutex<HashMap<u64, u64>>>,
}

/// Signs a user in: tokens from the authorization server into the user's
/// session, a session cookie back (a real BFF: the code flow, and a random
/// session id from a CSPRNG).
async fn login(State(bff): State<Bff>, uri: Uri) -> Response<String> {
    let user = uri
        .query()
        .and_then(|q| q.strip_prefix("user=")?.parse().ok());
    let Some(user) = user else {
        return answer(StatusCode::BAD_REQUEST, "/login?user=N".into(), None);
    };
    let tokens = bff.auth.login();
    let grant = bff.auth.grant_of(&tokens.access_token).unwrap_or_default();
    bff.grants
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(user, grant);
    if let Err(e) = bff.sessions.set(user, tokens.token_set()).await {
        return answer(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}"), None);
    }
    let sid = format!("{:016x}", RandomState::new().hash_one(user));
    bff.cookies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(sid.clone(), user);
    answer(
        StatusCode::OK,
        "signed in".into(),
        Some(format!("sid={sid}; HttpOnly; SameSite=Lax")),
    )
}

/// The cookie's user, if it names a session.
fn signed_in(bff: &Bff, headers: &HeaderMap) -> Option<u64> {
    let cookie = headers.get(header::COOKIE)?.to_str().ok()?;
    let sid = cookie
        .split(';')
        .find_map(|c| c.trim().strip_prefix("sid="))?;
    bff.cookies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(sid)
        .copied()
}

/// Calls the downstream API as the signed-in user.
async fn orders(State(bff): State<Bff>, headers: HeaderMap) -> (StatusCode, String) {
    let Some(user) = signed_in(&bff, &headers) else {
        return (StatusCode::UNAUTHORIZED, "sign in first".into());
    };
    let Ok(mut request) = Request::get(&bff.orders_url)
        .header("x-user", user.to_string())
        .body(Full::default())
    else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "bad request".into());
    };
    request.extensions_mut().insert(SessionKey(user));
    match bff.upstream.clone().oneshot(request).await {
        Ok(r) if r.status().is_success() => (StatusCode::OK, format!("orders of user {user}")),
        Ok(r) => (
            StatusCode::BAD_GATEWAY,
            format!("the API answered {}", r.status()),
        ),
        Err(e) => match e.downcast_ref::<tower_token_refresh::Error>() {
            Some(err) if err.is_session_expired() => (
                StatusCode::UNAUTHORIZED,
                "session ended: sign in again".into(),
            ),
            _ => (StatusCode::BAD_GATEWAY, format!("upstream failed: {e}")),
        },
    }
}

/// Signs the user out: ends their session (and its refresh token) only.
async fn logout(State(bff): State<Bff>, headers: HeaderMap) -> StatusCode {
    let Some(user) = signed_in(&bff, &headers) else {
        return StatusCode::UNAUTHORIZED;
    };
    match bff.sessions.end_session(&user).await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The downstream API: 200 if the token is valid and of the user the call
/// is for, 401 if expired (the client refreshes and replays), 409 (counted)
/// if it is another user's.
async fn api(
    State((auth, grants, crossed)): State<(
        AuthServer,
        Arc<Mutex<HashMap<u64, u64>>>,
        Arc<AtomicU64>,
    )>,
    headers: HeaderMap,
) -> StatusCode {
    let user = headers
        .get("x-user")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok()?.strip_prefix("Bearer "));
    let (Some(user), Some(token)) = (user, token) else {
        return StatusCode::BAD_REQUEST;
    };
    let expected = grants
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&user)
        .copied();
    if auth.grant_of(token) != expected {
        crossed.fetch_add(1, Ordering::Relaxed);
        StatusCode::CONFLICT
    } else if auth.is_access_token_valid(token) {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

fn answer(status: StatusCode, body: String, cookie: Option<String>) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Some(value) = cookie.and_then(|c| c.parse().ok()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn serve(app: Router) -> Result<std::net::SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// A browser's request to the BFF; the status.
async fn browse(url: String, cookie: &str) -> Result<(StatusCode, Option<String>), BoxError> {
    let request = Request::get(url)
        .header(header::COOKIE, cookie)
        .body(Full::default())?;
    let response = hyper_client().request(request).await?;
    let set = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok());
    Ok((
        response.status(),
        set.and_then(|c| c.split(';').next()).map(str::to_owned),
    ))
}

#[tokio::main]
async fn main() -> Result<ExitCode, BoxError> {
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(LIFETIME)).await?;
    let (grants, crossed) = (Arc::default(), Arc::new(AtomicU64::new(0)));
    let api_app = Router::new().route("/orders", get(api)).with_state((
        auth.clone(),
        Arc::clone(&grants),
        Arc::clone(&crossed),
    ));
    let api = serve(api_app).await?;

    let dir = std::env::temp_dir().join(format!("ttr-bff-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store_dir = dir.clone();
    let grant = refresh_grant(&auth, ServiceClient::new(hyper_client()));
    let sessions: Sessions<u64> = Sessions::builder(TokenManager::builder(grant))
        .store(move |user: &u64| FileStore::keyed(&store_dir, user.to_be_bytes()))
        .build()?;
    let upstream = ServiceBuilder::new()
        .layer(TokenRefreshLayer::sessions(sessions.clone()).allow_origin(origin_of(api)))
        .service(hyper_client());
    let bff = Bff {
        auth: auth.clone(),
        sessions: sessions.clone(),
        cookies: Arc::default(),
        upstream: BoxCloneSyncService::new(upstream),
        orders_url: format!("http://{api}/orders"),
        grants,
    };
    let app = Router::new()
        .route("/login", get(login))
        .route("/orders", get(orders))
        .route("/logout", get(logout))
        .with_state(bff);
    let url = format!("http://{}", serve(app).await?);

    // Each user signs in, then browses concurrently with the others.
    let started = Instant::now();
    let mut cookies = Vec::new();
    for user in 0..USERS {
        let (status, cookie) = browse(format!("{url}/login?user={user}"), "").await?;
        cookies.push(
            cookie
                .filter(|_| status == StatusCode::OK)
                .ok_or("login failed")?,
        );
    }
    let mut browsing = Vec::new();
    for cookie in cookies.clone() {
        let url = format!("{url}/orders");
        browsing.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..REQUESTS {
                ok += u32::from(browse(url.clone(), &cookie).await?.0 == StatusCode::OK);
                tokio::time::sleep(PACE).await;
            }
            Ok::<_, BoxError>(ok)
        }));
    }
    let mut ok = 0;
    for user in browsing {
        ok += user.await??;
    }
    let elapsed = started.elapsed();

    // User 0 signs out; the others go on.
    browse(format!("{url}/logout"), &cookies[0]).await?;
    let mut after = Vec::new();
    for cookie in &cookies {
        after.push(browse(format!("{url}/orders"), cookie).await?.0);
    }
    let _ = std::fs::remove_dir_all(&dir);

    let (server, ours) = (auth.stats(), sessions.stats());
    let lifetimes = elapsed.as_secs_f64() / LIFETIME.as_secs_f64();
    let per_user = server.refresh_grants as f64 / USERS as f64;
    println!("a backend-for-frontend: {USERS} users, one layered client");
    println!(
        "  answers 200         {ok} of {} in {:.1} s",
        USERS * u64::from(REQUESTS),
        elapsed.as_secs_f64()
    );
    println!(
        "  tokens of another   {} (downstream check)",
        crossed.load(Ordering::Relaxed)
    );
    println!(
        "  refresh grants      {} (server), {} succeeded (sessions): {per_user:.1} per user in {lifetimes:.1} token lifetimes",
        server.refresh_grants, ours.tokens.refreshes_succeeded
    );
    println!("  reuse detected      {}", server.reuse_detected);
    println!("  after user 0 signs out: {after:?}");

    let expected_after = [StatusCode::UNAUTHORIZED]
        .into_iter()
        .chain([StatusCode::OK; USERS as usize - 1]);
    if u64::from(ok) != USERS * u64::from(REQUESTS)
        || crossed.load(Ordering::Relaxed) != 0
        || server.reuse_detected != 0
        || server.refresh_grants != ours.tokens.refreshes_succeeded
        // At least one refresh per user per lifetime past the first, at
        // most one per half lifetime (the refresh-ahead window) and one more.
        || per_user < lifetimes.floor()
        || per_user > 2.0 * lifetimes + 1.0
        || !after.into_iter().eq(expected_after)
    {
        eprintln!("FAILED: see the figures above");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
