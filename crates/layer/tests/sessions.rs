//! One layered client acting for many users ([`Sessions`]): every request
//! carries its own user's current token, never another's; one refresh per
//! user per token lifetime; revoking one user's grant ends that session
//! only; under a bound on sessions held, evicted users reload from their
//! store and nobody logs in again.
//!
//! Real parts: test-util's authorization server (rotating refresh tokens,
//! reuse detection), an axum resource on 127.0.0.1 that checks each token
//! against the grant of the user the request is for, and hyper's client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::HeaderMap, routing::get};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt};
use tower_token_refresh::{
    BoxError, Error, ErrorKind, FileStore, ServiceClient, SessionKey, Sessions, TokenManager,
    TokenRefreshLayer, TokenStore,
};
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, IssuedTokens,
    fixture::{origin_of, refresh_grant},
    hyper_client,
};

const LIFETIME: Duration = Duration::from_secs(600);

/// The resource: `GET /me` with `x-user: N` answers 200 only if the token
/// is valid now and was issued in user N's grant; 401 if it is expired or
/// revoked (the client refreshes and replays); 409, counted, if it is
/// another user's.
#[derive(Clone, Default)]
struct Checks {
    grants: Arc<Mutex<HashMap<u64, u64>>>,
    ok: Arc<AtomicU64>,
    expired: Arc<AtomicU64>,
    crossed: Arc<AtomicU64>,
}

async fn me(State((auth, checks)): State<(AuthServer, Checks)>, headers: HeaderMap) -> StatusCode {
    let user: u64 = headers["x-user"].to_str().unwrap().parse().unwrap();
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return StatusCode::BAD_REQUEST;
    };
    let expected = checks.grants.lock().unwrap().get(&user).copied();
    if auth.grant_of(token) != expected {
        checks.crossed.fetch_add(1, Ordering::Relaxed);
        return StatusCode::CONFLICT;
    }
    if !auth.is_access_token_valid(token) {
        checks.expired.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    checks.ok.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

struct World {
    auth: AuthServer,
    checks: Checks,
    sessions: Sessions<u64>,
    logins: HashMap<u64, IssuedTokens>,
    url: String,
    origin: tower_token_refresh::Origin,
    ended: Arc<Mutex<Vec<u64>>>,
    dir: PathBuf,
}

async fn world(name: &str, users: u64, max_sessions: usize) -> World {
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(LIFETIME))
        .await
        .unwrap();
    let checks = Checks::default();
    let app = Router::new()
        .route("/me", get(me))
        .with_state((auth.clone(), checks.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir =
        std::env::temp_dir().join(format!("ttr-layer-sessions-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ended = Arc::new(Mutex::new(Vec::new()));
    let seen = ended.clone();
    let store_dir = dir.clone();
    let sessions: Sessions<u64> = Sessions::builder(TokenManager::builder(refresh_grant(
        &auth,
        ServiceClient::new(hyper_client()),
    )))
    .store(move |user: &u64| FileStore::keyed(&store_dir, user.to_be_bytes()))
    .max_sessions(max_sessions)
    .on_session_ended(move |user: &u64| seen.lock().unwrap().push(*user))
    .build()
    .unwrap();
    let mut logins = HashMap::new();
    for user in 0..users {
        let login = auth.login();
        let grant = auth.grant_of(&login.access_token).unwrap();
        checks.grants.lock().unwrap().insert(user, grant);
        sessions.set(user, login.token_set()).await.unwrap();
        logins.insert(user, login);
    }
    World {
        auth,
        checks,
        sessions,
        logins,
        url: format!("http://{addr}/me"),
        origin: origin_of(addr),
        ended,
        dir,
    }
}

impl World {
    /// `per_user` concurrent requests for each of `users`, all through one
    /// layered client; the statuses, or the error, per user.
    async fn round(&self, users: u64, per_user: usize) -> Vec<(u64, Result<StatusCode, BoxError>)> {
        self.requests(0..users, per_user).await
    }

    async fn requests(
        &self,
        users: std::ops::Range<u64>,
        per_user: usize,
    ) -> Vec<(u64, Result<StatusCode, BoxError>)> {
        let client = ServiceBuilder::new()
            .layer(
                TokenRefreshLayer::sessions(self.sessions.clone())
                    .allow_origin(self.origin.clone()),
            )
            .service(hyper_client());
        let mut tasks = Vec::new();
        for user in users {
            for _ in 0..per_user {
                let client = client.clone();
                let url = self.url.clone();
                tasks.push(tokio::spawn(async move {
                    let mut request = http::Request::get(url)
                        .header("x-user", user.to_string())
                        .body(Full::<Bytes>::default())
                        .unwrap();
                    request.extensions_mut().insert(SessionKey(user));
                    let answer = client.oneshot(request).await.map(|r| r.status());
                    (user, answer)
                }));
            }
        }
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
    }
}

fn kind(error: &BoxError) -> Option<ErrorKind> {
    error.downcast_ref::<Error>().map(Error::kind)
}

#[tokio::test(start_paused = true)]
async fn a_thousand_users_each_send_only_their_own_current_token_and_refresh_once_per_lifetime() {
    const USERS: u64 = 1_000;
    let w = world("thousand", USERS, 10_000).await;
    // Three lifetimes, a round every half lifetime: at 0 and 300 s the
    // login's tokens serve, at 600 s they are expired, and so on.
    for round in 0..6 {
        for (user, answer) in w.round(USERS, 2).await {
            assert_eq!(
                answer.unwrap(),
                StatusCode::OK,
                "user {user}, round {round}"
            );
        }
        tokio::time::sleep(LIFETIME / 2).await;
    }
    let auth = w.auth.stats();
    assert_eq!(
        w.checks.crossed.load(Ordering::Relaxed),
        0,
        "a token went to another user"
    );
    assert_eq!(w.checks.ok.load(Ordering::Relaxed), USERS * 2 * 6);
    assert_eq!(
        auth.refresh_grants,
        USERS * 2,
        "one refresh per user per lifetime"
    );
    assert_eq!(auth.reuse_detected, 0);
    assert_eq!(auth.invalid_grant, 0);
    assert_eq!(w.sessions.stats().tokens.refreshes_succeeded, USERS * 2);

    // One user's grant is revoked: that session ends at its next refresh,
    // and only that one.
    let victim = 17;
    w.auth.revoke(&w.logins[&victim].refresh_token);
    tokio::time::sleep(LIFETIME).await;
    for (user, answer) in w.round(USERS, 2).await {
        if user == victim {
            assert_eq!(kind(&answer.unwrap_err()), Some(ErrorKind::SessionExpired));
        } else {
            assert_eq!(answer.unwrap(), StatusCode::OK, "user {user}");
        }
    }
    assert_eq!(
        *w.ended.lock().unwrap(),
        [victim],
        "the hook ran once, for the victim"
    );
    assert_eq!(w.checks.crossed.load(Ordering::Relaxed), 0);
    assert_eq!(w.auth.stats().reuse_detected, 0);
    let _ = std::fs::remove_dir_all(&w.dir);
}

#[tokio::test(start_paused = true)]
async fn with_a_bound_of_a_hundred_a_thousand_active_users_reload_from_their_stores() {
    const USERS: u64 = 1_000;
    let w = world("bound", USERS, 100).await;
    let families_before = w.logins.len();
    // 50 users at a time (a server's concurrency), every user in each
    // round: the sessions held stay within the bound plus the busy ones.
    for round in 0..4 {
        for batch in 0..USERS / 50 {
            for (user, answer) in w.requests(batch * 50..(batch + 1) * 50, 1).await {
                assert_eq!(
                    answer.unwrap(),
                    StatusCode::OK,
                    "user {user}, round {round}"
                );
            }
            assert!(w.sessions.len() <= 100 + 50, "held {}", w.sessions.len());
        }
        tokio::time::sleep(LIFETIME / 2).await;
    }
    let stats = w.sessions.stats();
    assert!(stats.evicted >= USERS * 3, "evicted {}", stats.evicted);
    assert!(stats.loaded > USERS * 3, "loaded {}", stats.loaded);
    assert_eq!(w.checks.crossed.load(Ordering::Relaxed), 0);
    let auth = w.auth.stats();
    assert_eq!(auth.reuse_detected, 0);
    assert_eq!(auth.invalid_grant, 0);
    // Nobody logged in again: no session ended, no grant but the first
    // logins', and each user refreshed once in the two lifetimes.
    assert!(w.ended.lock().unwrap().is_empty());
    assert_eq!(auth.refresh_grants, USERS);
    for (user, login) in &w.logins {
        let stored = FileStore::keyed(&w.dir, user.to_be_bytes())
            .load()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            w.auth.grant_of(stored.access_token().secret()),
            w.auth.grant_of(&login.access_token),
            "user {user}'s file holds their own grant"
        );
    }
    assert_eq!(w.logins.len(), families_before);
    let _ = std::fs::remove_dir_all(&w.dir);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_names_no_session_is_refused_and_not_sent() {
    let w = world("anonymous", 2, 10).await;
    let client = ServiceBuilder::new()
        .layer(TokenRefreshLayer::sessions(w.sessions.clone()).allow_origin(w.origin.clone()))
        .service(hyper_client());
    let request = http::Request::get(&w.url)
        .header("x-user", "0")
        .body(Full::<Bytes>::default())
        .unwrap();
    let err = client.clone().oneshot(request).await.unwrap_err();
    assert_eq!(kind(&err), Some(ErrorKind::Policy));
    // A key of another type names no session either.
    let mut request = http::Request::get(&w.url)
        .header("x-user", "0")
        .body(Full::<Bytes>::default())
        .unwrap();
    request.extensions_mut().insert(SessionKey("0".to_owned()));
    let err = client.oneshot(request).await.unwrap_err();
    assert_eq!(kind(&err), Some(ErrorKind::Policy));
    let sent = w.checks.ok.load(Ordering::Relaxed)
        + w.checks.crossed.load(Ordering::Relaxed)
        + w.checks.expired.load(Ordering::Relaxed);
    assert_eq!(sent, 0, "nothing reached the resource");
    let _ = std::fs::remove_dir_all(&w.dir);
}
