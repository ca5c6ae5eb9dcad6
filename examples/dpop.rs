//! DPoP (RFC 9449): tokens bound to a key the client holds, proven with a
//! signed proof on every request. AWS Sign-In and other servers require it.
//!
//! One `DpopKey` per session goes to the grant, the manager and a
//! `DpopLayer` inside the token layer. Then every token request and every
//! API request carries a new proof, tokens come back as `DPoP` and go out as
//! `DPoP <token>`, each server's nonce challenge is answered once, and a
//! replay after a rejected token gets a proof of its own.
//!
//! Starts test-util's DPoP token endpoint and API on 127.0.0.1 (both check
//! every proof and want nonces), sends requests through the layered client,
//! revokes the access token halfway, and exits non-zero if any request
//! failed or the servers saw anything but one challenge each and one grant.
//!
//! ```text
//! cargo run --example dpop
//! ```

use std::process::ExitCode;

use http::{Request, StatusCode};
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt};
use tower_token_refresh::{
    ServiceClient, TokenManager, TokenRefreshLayer,
    dpop::{DpopKey, DpopLayer, DpopManagerExt as _},
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_test_util::{dpop::DpopServer, hyper_client};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const REQUESTS: usize = 10;

#[tokio::main]
async fn main() -> Result<ExitCode, BoxError> {
    let server = DpopServer::start().await?;
    {
        // Both servers want a nonce before they take a proof.
        let mut log = server.log();
        log.token_nonce = Some("as-nonce-0".into());
        log.api_nonce = Some("rs-nonce-0".into());
    }

    // One key per session: the login bound the tokens to it.
    let dpop = DpopKey::generate()?;
    let login = server.login(&dpop.thumbprint());

    let http = hyper_client();
    let grant = RefreshTokenGrant::new(
        server.token_url().parse()?,
        ClientAuth::none("my-app"),
        ServiceClient::new(http.clone()),
    )
    .dpop(dpop.clone());
    let tokens = TokenManager::builder(grant)
        .dpop(dpop.clone())
        .initial(login)
        .build();
    // The token layer outside, the DPoP layer inside: every request the
    // token layer sends, replays included, is signed on its way out.
    let client = ServiceBuilder::new()
        .layer(TokenRefreshLayer::new(tokens.clone()).allow_origin(server.api_origin().parse()?))
        .layer(DpopLayer::new(dpop.clone()))
        .service(http);

    let mut failed = 0;
    for i in 0..REQUESTS {
        if i == REQUESTS / 2 {
            // The API stops taking the first access token: the next request
            // is rejected, the token refreshed once, the request replayed.
            server.log().revoked.insert("at-0".into());
        }
        let request = Request::get(server.api_url(&format!("/orders/{i}?expand=items")))
            .body(Full::default())?;
        let status = client.clone().oneshot(request).await?.status();
        if status != StatusCode::OK {
            failed += 1;
        }
    }

    let scheme = tokens.authorization().await?;
    let scheme = scheme.header().to_str()?.split(' ').next().unwrap_or("");
    println!("the token goes out as: {scheme} <token>");
    let log = server.log();
    println!(
        "{REQUESTS} requests, {failed} failed; API: {} requests, {} nonce challenge(s), {} proofs (all distinct: {}); token endpoint: {} requests, {} nonce challenge(s), {} grant(s)",
        log.api_requests,
        log.api_challenges,
        log.api_jtis.len(),
        log.api_jtis
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
            == log.api_jtis.len(),
        log.token_requests,
        log.token_challenges,
        log.grants,
    );
    // One challenge each, answered; one refresh for the revoked token; the
    // API saw each request once, plus the nonce resend and the replay.
    let ok = failed == 0
        && log.api_challenges == 1
        && log.token_challenges == 1
        && log.grants == 1
        && log.api_requests == REQUESTS + 2;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
