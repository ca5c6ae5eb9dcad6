//! Service to service: a backend that calls another team's API with tokens
//! from the OAuth2 `client_credentials` grant (RFC 6749 §4.4).
//!
//! There is no user and no refresh token: the manager starts empty, the
//! first request fetches a token, and each expiry (or a 401 saying the token
//! is no longer valid) fetches the next one, once for all concurrent
//! callers. The token goes only to the origin allowed: a request elsewhere
//! through the same client is refused before anything is sent.
//!
//! Starts the in-process authorization server (1-second access tokens) and
//! API on 127.0.0.1, sends 640 requests from 16 tasks over about three token
//! lifetimes, revokes every access token halfway, and exits non-zero if any
//! request failed or if more tokens were fetched than expiries explain.
//!
//! ```text
//! cargo run --example client_credentials
//! ```

use std::{process::ExitCode, time::Duration};

use http::{Request, StatusCode};
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt};
use tower_token_refresh::{
    ErrorKind, ServiceClient, TokenManager, TokenRefreshLayer,
    oauth2::{ClientAuth, ClientCredentialsGrant},
};
use tower_token_refresh_test_util::{AuthConfig, AuthServer, ResourceServer, hyper_client};

const TASKS: usize = 16;
const REQUESTS_PER_TASK: usize = 40;
const PACE: Duration = Duration::from_millis(80);
const LIFETIME: Duration = Duration::from_secs(1);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<ExitCode, BoxError> {
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(LIFETIME)).await?;
    let api = ResourceServer::start(&auth).await?;

    // One manager per (token endpoint, client, audience); it starts empty.
    let http = hyper_client();
    let grant = ClientCredentialsGrant::new(
        auth.token_url().parse()?,
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(http.clone()),
    )
    .scope("read");
    let tokens = TokenManager::builder(grant).build();
    let client = ServiceBuilder::new()
        .layer(
            TokenRefreshLayer::new(tokens.clone())
                .allow_origin(format!("http://{}", api.addr()).parse()?),
        )
        .service(http);

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
                let request = Request::get(url.as_str()).body(Full::default())?;
                match client.clone().oneshot(request).await {
                    Ok(response) if response.status() == StatusCode::OK => {}
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
            Ok::<usize, BoxError>(failed)
        }));
    }
    // Halfway: the authorization server revokes every access token, so
    // the 401 → new token → replay path runs too.
    tokio::time::sleep(PACE * REQUESTS_PER_TASK as u32 / 2).await;
    auth.expire_access_tokens();

    let mut failed = 0;
    for task in tasks {
        failed += task.await??;
    }
    let elapsed = started.elapsed();

    // A request to an origin that was not allowed never gets the token.
    let elsewhere = Request::get(auth.token_url()).body(Full::default())?;
    let refused = match client.clone().oneshot(elsewhere).await {
        Err(e) => e
            .downcast_ref::<tower_token_refresh::Error>()
            .is_some_and(|e| e.kind() == ErrorKind::Policy),
        Ok(_) => false,
    };

    let server = auth.stats();
    let stats = tokens.stats();
    // One token to start, one per lifetime that ran out, one after the
    // revocation, and one for a lifetime cut short at the edges.
    let explained = 2 + elapsed.as_millis() / LIFETIME.as_millis() + 1;
    println!(
        "{} requests in {:.1} s: {failed} failed; {} client_credentials grants \
         (at most {explained} explained by expiries), {} refresh grants, {} replays; \
         request to another origin refused: {refused}",
        TASKS * REQUESTS_PER_TASK,
        elapsed.as_secs_f64(),
        server.client_credentials_grants,
        server.refresh_grants,
        stats.replays,
    );
    let ok = failed == 0
        && refused
        && server.refresh_grants == 0
        && server.client_credentials_grants >= 2
        && u128::from(server.client_credentials_grants) <= explained;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
