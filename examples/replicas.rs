//! Several replicas share one refresh token through Redis and refresh it
//! once between them.
//!
//! Starts a redis-server (persistence off, on a free port of 127.0.0.1; the
//! `redis-server` package must be installed), the in-process authorization
//! server (2-second access tokens, rotating refresh tokens, reuse detection)
//! and API, then four replicas: each with its own `TokenManager`, its own
//! Redis connections and its own client, as separate processes would have.
//! Every replica sends requests from 16 tasks for four token lifetimes.
//! Without coordination each replica would refresh on its own and the
//! second refresh of a rotated token would end the session for all of them.
//!
//! ```text
//! cargo run --example replicas
//! ```

use std::{
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{ServiceBuilder, ServiceExt};
use tower_token_refresh::{
    ServiceClient, TokenManager, TokenRefreshLayer,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_redis::RedisStore;
use tower_token_refresh_test_util::RedisServer;
use tower_token_refresh_test_util::{AuthConfig, AuthServer, ResourceServer, hyper_client};

const REPLICAS: usize = 4;
const TASKS_PER_REPLICA: usize = 16;
const LIFETIME: Duration = Duration::from_secs(2);
const LIFETIMES: u32 = 4;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<ExitCode, BoxError> {
    let redis = RedisServer::start().await?;
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(LIFETIME)).await?;
    let api = ResourceServer::start(&auth).await?;
    let login = auth.login();

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut managers = Vec::new();
    let mut tasks = Vec::new();
    for replica in 0..REPLICAS {
        let http = hyper_client();
        let grant = RefreshTokenGrant::new(
            auth.token_url().parse()?,
            ClientAuth::basic(auth.client_id(), auth.client_secret()),
            ServiceClient::new(http.clone()),
        );
        let store = RedisStore::builder(redis.url())
            .prefix("replicas-example")
            .connect()
            .await?;
        let tokens = TokenManager::builder(grant).store(store).build();
        if replica == 0 {
            tokens.set(login.token_set()).await?; // the one login, saved to Redis
        } else {
            tokens.load().await?; // the others start from what Redis holds
        }
        let client = ServiceBuilder::new()
            .layer(
                TokenRefreshLayer::new(tokens.clone())
                    .allow_origin(format!("http://{}", api.addr()).parse()?),
            )
            .service(http);
        managers.push(tokens);
        for _ in 0..TASKS_PER_REPLICA {
            let (client, url) = (client.clone(), api.url("/api/data"));
            let (ok, failed) = (ok.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                let mut pace = tokio::time::interval(Duration::from_millis(100));
                for _ in 0..(LIFETIMES * 20) {
                    pace.tick().await;
                    let outcome = match Request::get(&url).body(Full::default()) {
                        Ok(request) => client
                            .clone()
                            .oneshot(request)
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    match outcome {
                        Ok(response) if response.status() == StatusCode::OK => {
                            let _ = response.into_body().collect().await;
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(response) => {
                            eprintln!("replica {replica}: HTTP {}", response.status());
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("replica {replica}: {e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
    }

    println!(
        "tower-token-refresh replicas: {REPLICAS} replicas x {TASKS_PER_REPLICA} tasks, access tokens live {} s",
        LIFETIME.as_secs()
    );
    // Each replica refreshes ahead of expiry, when half of a 2-second
    // token's life is gone: two new token sets per lifetime, each fetched
    // once for all replicas.
    println!(
        "  lifetime   refresh grants at the authorization server (2 expected: refresh at half-life)"
    );
    let mut last = 0;
    for lifetime in 1..=LIFETIMES {
        tokio::time::sleep(LIFETIME).await;
        let grants = auth.stats().refresh_grants;
        println!("  {lifetime:>8}   {}", grants - last);
        last = grants;
    }
    for task in tasks {
        task.await?;
    }
    let server = auth.stats();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let refreshed_here: u64 = managers.iter().map(|m| m.stats().refreshes_succeeded).sum();
    let adopted: u64 = managers.iter().map(|m| m.stats().adopted_from_store).sum();
    println!("  requests ok / failed       {ok} / {failed}");
    println!(
        "  refresh grants in all      {} (one per new token set)",
        server.refresh_grants
    );
    println!(
        "  new sets taken from Redis  {adopted} (by the {} replicas that did not refresh each time)",
        REPLICAS - 1
    );
    println!("  refreshes finished         {refreshed_here} (grants + sets taken from Redis)");
    println!(
        "  invalid_grant / reuse      {} / {}",
        server.invalid_grant, server.reuse_detected
    );
    if failed > 0 || server.invalid_grant > 0 || server.reuse_detected > 0 {
        eprintln!("FAILED: every request must succeed and no refresh token may be reused");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
