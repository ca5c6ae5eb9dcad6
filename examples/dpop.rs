//! DPoP (RFC 9449): tokens bound to a key the client holds, proven with a
//! signed proof on every request. AWS Sign-In and other servers require it.
//!
//! One `DpopKey` per session goes to the grant, the manager and a
//! `DpopLayer` inside the token layer. Then every token request and every
//! API request carries a new proof, tokens come back as `DPoP` and go out as
//! `DPoP <token>`, each server's nonce challenge is answered once, and a
//! replay after a rejected token gets a proof of its own.
//!
//! Starts test-util's authorization server, requiring DPoP, and its API on
//! 127.0.0.1 (both check every proof and want nonces), sends requests through the layered client,
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
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, Client, Nonce, ResourceServer, hyper_client,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const REQUESTS: usize = 10;

#[tokio::main]
async fn main() -> Result<ExitCode, BoxError> {
    // Both servers want a nonce before they take a proof.
    let config = AuthConfig::default()
        .access_lifetime(std::time::Duration::from_secs(3600))
        .dpop_required(true)
        .token_dpop_nonce(Nonce::Fixed("as-nonce-0".into()))
        .resource_dpop_nonce(Nonce::Fixed("rs-nonce-0".into()))
        .register(Client::public("my-app"));
    let auth = AuthServer::start(config).await?;
    let api = ResourceServer::start(&auth).await?;

    // One key per session: the login bound the tokens to it.
    let dpop = DpopKey::generate()?;
    let login = auth.login_dpop(&dpop.thumbprint());

    let http = hyper_client();
    let grant = RefreshTokenGrant::new(
        auth.token_url().parse()?,
        ClientAuth::none("my-app"),
        ServiceClient::new(http.clone()),
    )
    .dpop(dpop.clone());
    let tokens = TokenManager::builder(grant)
        .dpop(dpop.clone())
        .initial(login.token_set())
        .build();
    // The token layer outside, the DPoP layer inside: every request the
    // token layer sends, replays included, is signed on its way out.
    let client = ServiceBuilder::new()
        .layer(TokenRefreshLayer::new(tokens.clone()).allow_origin(api.url("").parse()?))
        .layer(DpopLayer::new(dpop.clone()))
        .service(http);

    let mut failed = 0;
    for i in 0..REQUESTS {
        if i == REQUESTS / 2 {
            // The API stops taking the first access token: the next request
            // is rejected, the token refreshed once, the request replayed.
            auth.revoke(&login.access_token);
        }
        let request = Request::get(api.url(&format!("/api/data?page={i}"))).body(Full::default())?;
        let status = client.clone().oneshot(request).await?.status();
        if status != StatusCode::OK {
            failed += 1;
        }
    }

    let scheme = tokens.authorization().await?;
    let scheme = scheme.header().to_str()?.split(' ').next().unwrap_or("");
    println!("the token goes out as: {scheme} <token>");
    let (api_stats, api_log, auth_stats) = (api.stats(), api.log(), auth.stats());
    println!(
        "{REQUESTS} requests, {failed} failed; API: {} requests, {} nonce challenge(s), {} proofs (all distinct: {}); token endpoint: {} requests, {} nonce challenge(s), {} grant(s)",
        api_stats.requests,
        api_stats.dpop_nonce_challenges,
        api_log.dpop_jtis.len(),
        api_log
            .dpop_jtis
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
            == api_log.dpop_jtis.len(),
        auth_stats.token_requests,
        auth_stats.dpop_nonce_challenges,
        auth_stats.refresh_grants,
    );
    // One challenge each, answered; one refresh for the revoked token; the
    // API saw each request once, plus the nonce resend and the replay.
    let ok = failed == 0
        && api_stats.dpop_nonce_challenges == 1
        && auth_stats.dpop_nonce_challenges == 1
        && auth_stats.refresh_grants == 1
        && api_stats.requests == (REQUESTS + 2) as u64;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
