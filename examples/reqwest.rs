//! A reqwest application: `reqwest_middleware::ClientWithMiddleware` with
//! [`TokenRefreshMiddleware`], and the token endpoint called through
//! reqwest too (`ReqwestService`), so no other HTTP client is in the build.
//!
//! The user logged in once (a refresh token); the middleware puts the
//! access token on each request, refreshes it as it expires (once for all
//! concurrent callers), and when the API rejects it, refreshes once and
//! replays the request. The token goes only to the origin allowed: a
//! request elsewhere through the same client is refused before anything is
//! sent.
//!
//! Starts the in-process authorization server (1-second access tokens) and
//! API on 127.0.0.1, sends 640 requests from 16 tasks over about three
//! token lifetimes, revokes every access token halfway, and exits non-zero
//! if any request failed, if more refresh grants were made than expiries
//! and the revocation explain, if a rejected request was not replayed once,
//! or if the request to another origin was not refused.
//!
//! ```text
//! cargo run --example reqwest
//! ```

use std::{process::ExitCode, time::Duration};

use bytes::Bytes;
use reqwest_middleware::ClientBuilder;
use tower_token_refresh::{
    ErrorKind, ServiceClient, TokenManager,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_reqwest::{ReqwestService, TokenRefreshMiddleware, token_error};
use tower_token_refresh_test_util::{AuthConfig, AuthServer, ResourceServer};

const TASKS: usize = 16;
const REQUESTS_PER_TASK: usize = 40;
const PACE: Duration = Duration::from_millis(80);
const LIFETIME: Duration = Duration::from_secs(1);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<ExitCode, BoxError> {
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(LIFETIME)).await?;
    let api = ResourceServer::start(&auth).await?;
    let login = auth.login();

    // Loopback only: no proxy, whatever the environment says.
    let http = reqwest::Client::builder().no_proxy().build()?;
    let grant = RefreshTokenGrant::new(
        auth.token_url().parse()?,
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::<_, Bytes>::with_body(ReqwestService::new(http.clone())),
    );
    let tokens = TokenManager::builder(grant)
        .initial(login.token_set())
        .build();
    let client = ClientBuilder::new(http)
        .with(
            TokenRefreshMiddleware::new(tokens.clone())
                .allow_origin(format!("http://{}", api.addr()).parse()?),
        )
        .build();

    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let client = client.clone();
        let url = api.url("/api/data");
        tasks.push(tokio::spawn(async move {
            let mut pace = tokio::time::interval(PACE);
            let mut failed = 0;
            for _ in 0..REQUESTS_PER_TASK {
                pace.tick().await;
                match client.get(&url).send().await {
                    Ok(response) if response.status().is_success() => {}
                    Ok(response) => {
                        eprintln!("task {task}: {}", response.status());
                        failed += 1;
                    }
                    Err(e) => {
                        eprintln!("task {task}: {e}");
                        failed += 1;
                    }
                }
            }
            failed
        }));
    }
    // Halfway: the authorization server revokes every access token, so the
    // 401 → one refresh → replay path runs too.
    tokio::time::sleep(PACE * REQUESTS_PER_TASK as u32 / 2).await;
    auth.expire_access_tokens();

    let mut failed = 0;
    for task in tasks {
        failed += task.await?;
    }
    let elapsed = started.elapsed();

    // A request to an origin that was not allowed never gets the token.
    let refused = match client.get(auth.token_url()).send().await {
        Err(e) => token_error(&e).is_some_and(|e| e.kind() == ErrorKind::Policy),
        Ok(_) => false,
    };

    let server = auth.stats();
    let stats = tokens.stats();
    let rejected = api.stats().rejected;
    // One refresh per lifetime that ran out, one after the revocation, and
    // one for a lifetime cut short at the edges.
    let explained = 1 + elapsed.as_millis() / LIFETIME.as_millis() + 1;
    println!(
        "{} requests in {:.1} s: {failed} failed; {} refresh grants (at most {explained} \
         explained by expiries and the revocation), {} rejected by the API, {} replays; \
         request to another origin refused: {refused}",
        TASKS * REQUESTS_PER_TASK,
        elapsed.as_secs_f64(),
        server.refresh_grants,
        rejected,
        stats.replays,
    );
    let ok = failed == 0
        && refused
        && server.invalid_grant == 0
        // The revocation sent requests down the 401 path: each was replayed
        // once (and, with nothing failed, succeeded).
        && rejected >= 1
        && stats.replays == rejected
        && server.refresh_grants >= 2
        && u128::from(server.refresh_grants) <= explained;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
