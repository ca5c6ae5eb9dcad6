//! Tokens that survive a restart: a `FileStore` keeps the session in a JSON
//! file (atomic writes, mode 0600), so the next run of the program starts
//! logged in.
//!
//! ```text
//! cargo run --example persistent          # run 1: logs in, saves the tokens
//! cargo run --example persistent          # run 2: loads them, no login
//! cargo run --example persistent -- --reset
//! ```
//!
//! The state file is `tower-token-refresh-persistent.json` in the system
//! temp directory (or the path given as the first argument).
//!
//! The authorization server here is test-util's in-process one, so it
//! restarts with every run and does not know tokens issued by an earlier
//! run: run 2 shows that the session was loaded from the file and that the
//! token endpoint saw no request at all (no login, no refresh), but it does
//! not call the API with the loaded token. Against a real authorization
//! server the loaded session simply works.

use std::{path::PathBuf, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt};
use tower_token_refresh::{
    ServiceClient, TokenManager, TokenRefreshLayer,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_core::FileStore;
use tower_token_refresh_test_util::{AuthConfig, AuthServer, ResourceServer, hyper_client};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut args = std::env::args().skip(1).collect::<Vec<_>>();
    let reset = args.iter().any(|a| a == "--reset");
    args.retain(|a| a != "--reset");
    let path = args
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("tower-token-refresh-persistent.json"));
    println!("state file: {}", path.display());
    let store = FileStore::new(&path);
    if reset {
        tower_token_refresh::TokenStore::clear(&store).await?;
        println!("removed; the next run logs in again");
        return Ok(());
    }

    // Hour-long access tokens, so the saved one is still fresh next run.
    let auth =
        AuthServer::start(AuthConfig::default().access_lifetime(Duration::from_secs(3600))).await?;
    let http = hyper_client();
    let grant = RefreshTokenGrant::new(
        auth.token_url().parse()?,
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(http.clone()),
    );
    let tokens = TokenManager::builder(grant)
        .store(store)
        .on_session_expired(|| eprintln!("session expired: log in again"))
        .build();

    // A corrupt or unreadable file is an error here, never an empty session
    // that would overwrite it.
    match tokens.load().await {
        Ok(true) => {
            let current = tokens.current().ok_or("loaded, yet no current set")?;
            let left = current
                .expires_at()
                .map(|at| at.saturating_duration_since(tokio::time::Instant::now()));
            println!(
                "run 2+: session loaded from the file, no login (access token valid for {:?} more, refresh token kept: {})",
                left.unwrap_or_default(),
                current.refresh_token().is_some()
            );
            let auth_header = tokens.authorization().await?;
            assert!(auth_header.header().is_sensitive());
            let stats = auth.stats();
            println!(
                "token endpoint requests this run: {} (no login, no refresh)",
                stats.token_requests
            );
            assert_eq!(stats.token_requests, 0);
            println!("(`--reset` removes the file)");
        }
        Ok(false) => {
            let login = auth.login();
            tokens.set(login.token_set()).await?;
            let api = ResourceServer::start(&auth).await?;
            let client = ServiceBuilder::new()
                .layer(
                    TokenRefreshLayer::new(tokens.clone())
                        .allow_origin(format!("http://{}", api.addr()).parse()?),
                )
                .service(http);
            let response = client
                .oneshot(Request::get(api.url("/api/data")).body(Full::<Bytes>::default())?)
                .await?;
            assert_eq!(response.status(), StatusCode::OK);
            println!(
                "run 1: logged in, called the API ({}), saved the session to the file",
                response.status()
            );
            println!("run the example again: it starts from the file, without a login");
        }
        Err(e) => {
            eprintln!("the state file is unusable and was left as it is: {e}");
            eprintln!("fix or remove it (`--reset`) to start over");
            std::process::exit(1);
        }
    }
    Ok(())
}
