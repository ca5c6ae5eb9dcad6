//! An axum API that calls a downstream API as its caller: each request's
//! bearer token is exchanged (RFC 8693 token exchange, `OnBehalfOf`) for a
//! token to the downstream audience, cached per user, and sent downstream.
//!
//! Starts an in-process authorization server (token exchange on) and a
//! downstream API that accepts only tokens it issued, serves the app on
//! 127.0.0.1 (port 0), then plays two users, Ann and Bob, taking turns for
//! five requests each, and one caller with a forged token. Prints the
//! cache's counts and exits non-zero unless each user cost one exchange,
//! every other request was a hit, each downstream call carried a token
//! issued for its own caller, and the forged token got a 401.
//!
//! ```text
//! cargo run --example on_behalf_of
//! ```

use std::{collections::BTreeSet, process::ExitCode, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    routing::get,
};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tower_token_refresh::{
    ServiceClient,
    oauth2::{ClientAuth, Downstream, ErrorCode, OnBehalfOf},
};
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, ResourceServer, TokenExchange, hyper_client,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Http = ServiceClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
>;

const ROUNDS: usize = 5;

#[derive(Clone)]
struct App {
    obo: Arc<OnBehalfOf<Http>>,
    downstream: Downstream,
    api_url: String,
}

/// Exchanges the caller's token for one to the downstream API, then calls it.
async fn orders(State(app): State<App>, headers: HeaderMap) -> (StatusCode, String) {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(subject) = bearer else {
        return (StatusCode::UNAUTHORIZED, "bearer token required".into());
    };
    let tokens = match app.obo.token(subject, &app.downstream).await {
        Ok(tokens) => tokens,
        Err(e) if e.oauth_error_code() == Some(&ErrorCode::InvalidGrant) => {
            return (StatusCode::UNAUTHORIZED, "token not accepted".into());
        }
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("token exchange: {e}")),
    };
    match get_with(&app.api_url, tokens.access_token().secret()).await {
        Ok((StatusCode::OK, body)) => (StatusCode::OK, body),
        Ok((status, _)) => (
            StatusCode::BAD_GATEWAY,
            format!("downstream answered {status}"),
        ),
        Err(e) => (StatusCode::BAD_GATEWAY, format!("downstream: {e}")),
    }
}

/// A GET with a bearer token: the status and the body.
async fn get_with(url: &str, token: &str) -> Result<(StatusCode, String), BoxError> {
    let request = Request::get(url)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::default())?;
    let response = hyper_client().request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::main]
async fn main() -> Result<ExitCode, BoxError> {
    let auth = AuthServer::start(
        AuthConfig::default()
            .access_lifetime(Duration::from_secs(3600))
            .token_exchange(TokenExchange::new()),
    )
    .await?;
    let api = ResourceServer::start(&auth).await?;

    let obo = OnBehalfOf::new(
        auth.token_url().parse()?,
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(hyper_client()),
    );
    let app = App {
        obo: Arc::new(obo),
        downstream: Downstream::new()
            .audience(api.resource())
            .scope("orders:read"),
        api_url: api.url("/api/data"),
    };
    let router = Router::new()
        .route("/orders", get(orders))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/orders", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    // The tokens Ann and Bob logged in with, as their requests carry them.
    let (ann, bob) = (auth.login().access_token, auth.login().access_token);
    let mut ok = 0;
    for _ in 0..ROUNDS {
        for user in [&ann, &bob] {
            let (status, body) = get_with(&url, user).await?;
            if status == StatusCode::OK {
                ok += 1;
            } else {
                eprintln!("app answered {status}: {body}");
            }
        }
    }
    let (forged, _) = get_with(&url, "forged-token").await?;
    server.abort();

    // Every token the downstream API accepted was exchanged for Ann or Bob;
    // neither user's own token went downstream.
    let sent: BTreeSet<String> = api.accepted_tokens().into_iter().collect();
    let own_subjects = sent.iter().all(|t| {
        auth.exchanged(t)
            .is_some_and(|e| [&ann, &bob].contains(&&e.subject_token))
    });
    let stats = app.obo.stats();
    println!("on behalf of the caller, two users x {ROUNDS} requests, one forged token");
    println!("  app calls ok      {ok}/{}", 2 * ROUNDS);
    println!("  forged token      {forged}");
    println!(
        "  cache             {} hits, {} misses, {} exchanges, {} failed",
        stats.hits, stats.misses, stats.exchanges, stats.failures
    );
    println!(
        "  server            {} token exchanges",
        auth.stats().token_exchanges
    );
    println!(
        "  downstream        {} distinct tokens, each issued for its caller: {own_subjects}",
        sent.len()
    );

    if ok != 2 * ROUNDS
        || forged != StatusCode::UNAUTHORIZED
        || (stats.hits, stats.misses, stats.exchanges, stats.failures)
            != (2 * ROUNDS as u64 - 2, 3, 3, 1)
        || auth.stats().token_exchanges != 2
        || sent.len() != 2
        || !own_subjects
    {
        eprintln!("FAILED: one exchange per user, the rest hits, each token for its own caller");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
