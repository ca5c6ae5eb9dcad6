//! An axum server that calls a protected upstream API through one shared,
//! token-refreshing hyper-util client held in axum `State`.
//!
//! Starts an in-process authorization server and protected API, builds one
//! `TokenManager` and one layered client, serves an axum app on 127.0.0.1
//! (port 0), then drives the app itself: concurrent requests, then every
//! access token is revoked and the app is called again, so the 401 →
//! refresh → replay path runs once. Upstream failures become a 502; an
//! expired session (the user must log in again) becomes a 401. Exits
//! non-zero if any call failed or the refresh did not happen exactly once.
//!
//! ```text
//! cargo run --example axum_upstream
//! ```

use std::process::ExitCode;

use axum::{Router, extract::State, http::StatusCode, routing::get};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tower::{ServiceBuilder, ServiceExt, util::BoxCloneSyncService};
use tower_token_refresh::{
    ServiceClient, TokenManager, TokenRefreshLayer,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_test_util::{AuthConfig, AuthServer, ResourceServer, hyper_client};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Upstream = BoxCloneSyncService<Request<Full<Bytes>>, Response<Incoming>, BoxError>;

const CONCURRENT: usize = 8;

#[derive(Clone)]
struct AppState {
    upstream: Upstream,
    data_url: String,
}

/// Calls the upstream API; maps failures to an answer instead of panicking.
async fn proxy(State(state): State<AppState>) -> (StatusCode, String) {
    match call_upstream(&state).await {
        Ok(body) => (StatusCode::OK, body),
        Err(e) => match e.downcast_ref::<tower_token_refresh::Error>() {
            Some(err) if err.is_session_expired() => (
                StatusCode::UNAUTHORIZED,
                "session expired: log in again".into(),
            ),
            _ => (StatusCode::BAD_GATEWAY, format!("upstream failed: {e}")),
        },
    }
}

async fn call_upstream(state: &AppState) -> Result<String, BoxError> {
    let request = Request::get(&state.data_url).body(Full::default())?;
    let response = state.upstream.clone().oneshot(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(format!("upstream answered {status}").into());
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Calls the app `n` times concurrently; returns how many answered 200.
async fn drive(url: &str, n: usize) -> Result<usize, BoxError> {
    let client = hyper_client();
    let mut calls = Vec::new();
    for _ in 0..n {
        let (client, url) = (client.clone(), url.to_owned());
        calls.push(tokio::spawn(async move {
            let response = client
                .request(Request::get(url).body(Full::default())?)
                .await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            if status != StatusCode::OK {
                eprintln!("app answered {status}: {}", String::from_utf8_lossy(&body));
            }
            Ok::<_, BoxError>(status == StatusCode::OK)
        }));
    }
    let mut ok = 0;
    for call in calls {
        ok += usize::from(call.await??);
    }
    Ok(ok)
}

#[tokio::main]
async fn main() -> Result<ExitCode, BoxError> {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let api = ResourceServer::start(&auth).await?;

    let http = hyper_client();
    let grant = RefreshTokenGrant::new(
        auth.token_url().parse()?,
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(http.clone()),
    );
    let tokens = TokenManager::builder(grant)
        .initial(auth.login().token_set())
        .build();
    let upstream = ServiceBuilder::new()
        .layer(
            TokenRefreshLayer::new(tokens.clone())
                .allow_origin(format!("http://{}", api.addr()).parse()?),
        )
        .service(http);
    let state = AppState {
        upstream: BoxCloneSyncService::new(upstream),
        data_url: api.url("/api/data"),
    };

    let app = Router::new().route("/data", get(proxy)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/data", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let before = drive(&url, CONCURRENT).await?;
    auth.expire_access_tokens();
    let after = drive(&url, CONCURRENT).await?;
    server.abort();

    let (server_stats, ours) = (auth.stats(), tokens.stats());
    println!("tower-token-refresh behind axum");
    println!(
        "  app calls ok        {before}/{CONCURRENT} before, {after}/{CONCURRENT} after revocation"
    );
    println!(
        "  refresh grants      {} (authorization server)",
        server_stats.refresh_grants
    );
    println!(
        "  refreshes           {} started, {} succeeded (client)",
        ours.refreshes_started, ours.refreshes_succeeded
    );
    println!("  replays             {}", ours.replays);

    if before != CONCURRENT
        || after != CONCURRENT
        || server_stats.refresh_grants != 1
        || ours.refreshes_succeeded != 1
    {
        eprintln!("FAILED: every call must succeed, with exactly one refresh");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
