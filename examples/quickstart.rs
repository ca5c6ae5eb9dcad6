//! The main job: many concurrent callers, short-lived tokens, one refresh
//! per expiry, no failed request.
//!
//! Starts an OAuth2 authorization server (2-second access tokens, rotating
//! refresh tokens, reuse detection) and a protected API in this process on
//! 127.0.0.1, wraps hyper-util's client in `TokenRefreshLayer`, and sends
//! 3,200 requests from 64 tasks over about six seconds: three token
//! lifetimes. Halfway through, the server revokes every access token, so
//! the 401 → refresh → replay path runs too. Exits non-zero if any request
//! failed.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::{
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{ServiceBuilder, ServiceExt};
use tower_token_refresh::{
    ServiceClient, TokenManager, TokenRefreshLayer,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_test_util::{AuthConfig, AuthServer, ResourceServer, hyper_client};

const TASKS: u64 = 64;
const REQUESTS_PER_TASK: u64 = 50;
const PACE: Duration = Duration::from_millis(120);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<ExitCode, BoxError> {
    // The in-process servers: what a real deployment has elsewhere.
    let auth =
        AuthServer::start(AuthConfig::default().access_lifetime(Duration::from_secs(2))).await?;
    let api = ResourceServer::start(&auth).await?;
    let login = auth.login();

    // What an application writes: one manager per (token endpoint, client),
    // one layer, any number of clients.
    let http = hyper_client();
    let grant = RefreshTokenGrant::new(
        auth.token_url().parse()?,
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(http.clone()),
    );
    let tokens = TokenManager::builder(grant)
        .initial(login.token_set())
        .on_session_expired(|| eprintln!("session expired: the user must log in again"))
        .build();
    let client = ServiceBuilder::new()
        .layer(
            TokenRefreshLayer::new(tokens.clone())
                .allow_origin(format!("http://{}", api.addr()).parse()?),
        )
        .service(http);

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let client = client.clone();
        let (ok, failed) = (ok.clone(), failed.clone());
        let (data, echo) = (api.url("/api/data"), api.url("/api/echo"));
        tasks.push(tokio::spawn(async move {
            let mut pace = tokio::time::interval(PACE);
            for i in 0..REQUESTS_PER_TASK {
                pace.tick().await;
                // Every tenth request is a POST whose body must survive a replay.
                let request = if i % 10 == 0 {
                    Request::post(&echo)
                        .body(Full::new(Bytes::from(format!("task {task} request {i}"))))
                } else {
                    Request::get(&data).body(Full::default())
                };
                let outcome = match request {
                    Ok(request) => client
                        .clone()
                        .oneshot(request)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(response) if response.status() == StatusCode::OK => {
                        // Read the body so the connection goes back to the pool.
                        match response.into_body().collect().await {
                            Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    Ok(response) => {
                        eprintln!("task {task}: HTTP {}", response.status());
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("task {task}: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    // Halfway: the authorization server revokes every access token it
    // issued, so in-flight tokens get 401s that must be refreshed and replayed.
    tokio::time::sleep(PACE * (REQUESTS_PER_TASK as u32) / 2).await;
    auth.expire_access_tokens();

    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let server = auth.stats();
    let ours = tokens.stats();
    let resource = api.stats();

    println!("tower-token-refresh quickstart");
    println!(
        "  requests            {} from {TASKS} concurrent tasks",
        ok + failed
    );
    println!("  ok / failed         {ok} / {failed}");
    println!(
        "  elapsed             {:.2} s (access tokens live 2 s)",
        elapsed.as_secs_f64()
    );
    println!(
        "  refresh grants      {} (counted by the authorization server)",
        server.refresh_grants
    );
    println!(
        "  refreshes           {} started, {} succeeded (counted by the client)",
        ours.refreshes_started, ours.refreshes_succeeded
    );
    println!("  401s at the API     {}", resource.rejected);
    println!("  replays             {}", ours.replays);
    println!(
        "  refresh-token reuse {} (the server revokes the session on reuse)",
        server.reuse_detected
    );

    if failed > 0 || ok != TASKS * REQUESTS_PER_TASK || server.reuse_detected > 0 {
        eprintln!("FAILED: every request must succeed and no refresh token may be reused");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
