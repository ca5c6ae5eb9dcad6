//! DPoP (RFC 9449) end to end: a real hyper client through
//! `TokenRefreshLayer` and `DpopLayer` to test-util's `DpopServer`, a token
//! endpoint and a resource on 127.0.0.1 that verify every proof with ring
//! (signature, `typ`, `htm`, `htu`, `ath`, the key the token is bound to,
//! `jti` replay, nonces) and count what they saw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashSet, path::PathBuf, sync::MutexGuard};

use bytes::Bytes;
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt};
use tower_token_refresh::{
    BoxError, ErrorKind, FileStore, Scheme, ServiceClient, TokenManager, TokenManagerBuilder,
    TokenRefreshLayer, TokenSet,
    dpop::{DpopKey, DpopLayer, DpopManagerExt as _, TokenSetExt as _},
    oauth2::{ClientAuth, ClientCredentialsGrant, RefreshTokenGrant},
};
use tower_token_refresh_test_util::{
    dpop::{DpopLog, DpopServer, ath},
    hyper_client,
};

struct World {
    server: DpopServer,
}

impl World {
    async fn start() -> World {
        World {
            server: DpopServer::start().await.unwrap(),
        }
    }

    fn log(&self) -> MutexGuard<'_, DpopLog> {
        self.server.log()
    }

    /// A session as a login bound to `dpop` would leave it.
    fn login(&self, dpop: &DpopKey) -> TokenSet {
        self.server.login(&dpop.thumbprint())
    }

    fn grant(&self, dpop: &DpopKey) -> RefreshTokenGrant<ServiceClient<HyperClient>> {
        RefreshTokenGrant::new(
            self.server.token_url().parse().unwrap(),
            ClientAuth::none("app"),
            ServiceClient::new(hyper_client()),
        )
        .dpop(dpop.clone())
    }

    fn manager(
        &self,
        dpop: &DpopKey,
        b: impl FnOnce(TokenManagerBuilder) -> TokenManagerBuilder,
    ) -> TokenManager {
        b(TokenManager::builder(self.grant(dpop))
            .dpop(dpop.clone())
            .initial(self.login(dpop)))
        .build()
    }

    async fn get(
        &self,
        tokens: &TokenManager,
        dpop: &DpopKey,
        path_and_query: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, BoxError> {
        let client = ServiceBuilder::new()
            .layer(
                TokenRefreshLayer::new(tokens.clone())
                    .allow_origin(self.server.api_origin().parse().unwrap()),
            )
            .layer(DpopLayer::new(dpop.clone()))
            .service(hyper_client());
        let request = http::Request::get(self.server.api_url(path_and_query))
            .body(Full::<Bytes>::default())
            .unwrap();
        client.oneshot(request).await
    }
}

type HyperClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

#[tokio::test]
async fn htu_is_the_uri_without_query_or_fragment() {
    let w = World::start().await;
    let dpop = DpopKey::generate().unwrap();
    let tokens = w.manager(&dpop, |b| b);
    let response = w
        .get(&tokens, &dpop, "/api/orders/7?page=2&sort=asc#top")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let log = w.log();
    let proof = &log.api_proofs[0];
    assert_eq!(proof.htu, w.server.api_url("/api/orders/7"));
    assert_eq!(proof.htm, "GET");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(proof.iat.abs_diff(now) <= 5, "iat {} now {now}", proof.iat);
}

#[tokio::test]
async fn every_request_gets_its_own_proof_with_a_unique_jti_and_the_token_hash() {
    let w = World::start().await;
    let dpop = DpopKey::generate().unwrap();
    let tokens = w.manager(&dpop, |b| b);
    for _ in 0..10 {
        assert_eq!(w.get(&tokens, &dpop, "/api/x").await.unwrap().status(), 200);
    }
    let log = w.log();
    assert_eq!(log.api_proofs.len(), 10);
    let jtis: HashSet<&str> = log.api_proofs.iter().map(|p| p.jti.as_str()).collect();
    assert_eq!(jtis.len(), 10, "a jti was repeated");
    for proof in &log.api_proofs {
        assert_eq!(proof.ath.as_deref(), Some(ath("at-0").as_str()));
        assert_eq!(proof.jkt, dpop.thumbprint());
        assert_eq!(proof.nonce, None);
    }
}

#[tokio::test]
async fn a_resource_nonce_challenge_is_answered_once_and_the_nonce_kept() {
    let w = World::start().await;
    w.log().api_nonce = Some("rs-n1".into());
    let dpop = DpopKey::generate().unwrap();
    let tokens = w.manager(&dpop, |b| b);
    let response = w.get(&tokens, &dpop, "/api/x").await.unwrap();
    assert_eq!(response.status(), 200);
    {
        let log = w.log();
        assert_eq!((log.api_requests, log.api_challenges), (2, 1));
        assert_eq!(log.api_proofs[0].nonce.as_deref(), Some("rs-n1"));
        // The nonce challenge is not a rejected token: no refresh.
        assert_eq!(log.token_requests, 0);
    }
    // The next request carries the nonce from the start.
    assert_eq!(w.get(&tokens, &dpop, "/api/y").await.unwrap().status(), 200);
    let log = w.log();
    assert_eq!((log.api_requests, log.api_challenges), (3, 1));
    // The nonce is the resource's: the token endpoint's origin has none.
    assert_eq!(dpop.nonce(&w.server.token_url().parse().unwrap()), None);
}

#[tokio::test]
async fn a_second_nonce_challenge_is_returned_not_answered() {
    let w = World::start().await;
    w.log().api_always_challenges = true;
    let dpop = DpopKey::generate().unwrap();
    let tokens = w.manager(&dpop, |b| b);
    let response = w.get(&tokens, &dpop, "/api/x").await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("use_dpop_nonce")
    );
    let log = w.log();
    assert_eq!((log.api_requests, log.api_challenges), (2, 2));
    assert_eq!(
        log.token_requests, 0,
        "a nonce challenge is no rejected token"
    );
}

#[tokio::test]
async fn a_replay_after_a_rejected_token_carries_a_new_proof_for_the_new_token() {
    let w = World::start().await;
    let dpop = DpopKey::generate().unwrap();
    let tokens = w.manager(&dpop, |b| b);
    w.log().revoked.insert("at-0".into());
    let response = w.get(&tokens, &dpop, "/api/x").await.unwrap();
    assert_eq!(response.status(), 200);
    let log = w.log();
    assert_eq!(log.api_requests, 2, "the rejected request, then its replay");
    assert_eq!(log.grants, 1);
    let new_token = log.api_tokens[0].clone();
    assert_ne!(new_token, "at-0");
    let replay = &log.api_proofs[0];
    assert_eq!(replay.ath.as_deref(), Some(ath(&new_token).as_str()));
    assert_eq!(replay.jkt, dpop.thumbprint());
    // The token endpoint's proof and the resource's are different proofs.
    assert_ne!(log.token_proofs[0].jti, replay.jti);
}

#[tokio::test]
async fn the_replay_and_its_nonce_resend_each_get_a_new_proof() {
    let w = World::start().await;
    let dpop = DpopKey::generate().unwrap();
    let tokens = w.manager(&dpop, |b| b);
    {
        let mut log = w.log();
        log.revoked.insert("at-0".into());
        log.api_nonce = Some("rs-n1".into());
    }
    // The first proof is challenged for a nonce; the resend with the nonce
    // finds at-0 revoked; the replay with the new token passes.
    let response = w.get(&tokens, &dpop, "/api/x").await.unwrap();
    assert_eq!(response.status(), 200);
    let log = w.log();
    assert_eq!((log.api_requests, log.api_challenges), (3, 1));
    assert_eq!(log.api_jtis.len(), 3, "three valid proofs");
    assert_eq!(log.api_jtis.iter().collect::<HashSet<_>>().len(), 3);
    assert_eq!(log.grants, 1);
    assert_eq!(log.api_proofs.len(), 1);
    assert_eq!(log.api_proofs[0].nonce.as_deref(), Some("rs-n1"));
}

#[tokio::test]
async fn the_token_endpoint_nonce_retry_presents_the_refresh_token_again_without_reuse() {
    let w = World::start().await;
    {
        let mut log = w.log();
        log.token_nonce = Some("as-n0".into());
        log.token_rotates_nonce = true;
    }
    let dpop = DpopKey::generate().unwrap();
    let tokens = w.manager(&dpop, |b| b);
    let auth = tokens.refresh().await.unwrap();
    assert!(auth.header().to_str().unwrap().starts_with("DPoP at-"));
    {
        let log = w.log();
        // Challenged, then the same refresh token again: the first request
        // was refused before the grant was looked at, so it spent nothing.
        assert_eq!(log.presented, ["rt-0", "rt-0"]);
        assert_eq!((log.token_requests, log.token_challenges), (2, 1));
        assert_eq!((log.grants, log.reuse), (1, 0));
        assert_eq!(log.token_proofs[0].nonce.as_deref(), Some("as-n0"));
    }
    // The nonce of the success answer is kept: the next refresh is not
    // challenged.
    tokens.refresh().await.unwrap();
    let log = w.log();
    assert_eq!((log.token_requests, log.token_challenges), (3, 1));
    assert_eq!((log.grants, log.reuse), (2, 0));
    assert_eq!(log.token_proofs[1].nonce.as_deref(), Some("as-nonce-3"));
}

#[tokio::test]
async fn the_token_endpoint_nonce_retry_happens_once() {
    let w = World::start().await;
    w.log().token_always_challenges = true;
    let dpop = DpopKey::generate().unwrap();
    let tokens = w.manager(&dpop, |b| b.max_attempts(1));
    let err = tokens.refresh().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert_eq!(err.oauth_error(), Some("use_dpop_nonce"));
    let log = w.log();
    assert_eq!((log.token_requests, log.token_challenges), (2, 2));
    assert_eq!(log.grants, 0);
}

#[tokio::test]
async fn a_dpop_token_goes_out_as_dpop_whatever_the_scheme_setting() {
    let w = World::start().await;
    let dpop = DpopKey::generate().unwrap();
    for scheme in [Scheme::Fixed("Bearer".into()), Scheme::None] {
        let tokens = w.manager(&dpop, |b| b.scheme(scheme));
        let auth = tokens.authorization().await.unwrap();
        assert_eq!(auth.header().to_str().unwrap(), "DPoP at-0");
        assert_eq!(w.get(&tokens, &dpop, "/api/x").await.unwrap().status(), 200);
    }
    // The token type is read in any case.
    let set = tower_token_refresh::oauth2::token_response::parse(
        br#"{"access_token":"a","token_type":"dpop"}"#,
    )
    .unwrap();
    assert_eq!(set.token_type(), "DPoP");
}

#[tokio::test]
async fn client_credentials_tokens_are_bound_and_proven() {
    let w = World::start().await;
    let dpop = DpopKey::generate().unwrap();
    let grant = ClientCredentialsGrant::new(
        w.server.token_url().parse().unwrap(),
        ClientAuth::none("svc"),
        ServiceClient::new(hyper_client()),
    )
    .dpop(dpop.clone());
    let tokens = TokenManager::builder(grant).dpop(dpop.clone()).build();
    assert_eq!(w.get(&tokens, &dpop, "/api/x").await.unwrap().status(), 200);
    let log = w.log();
    assert_eq!(log.grants, 1);
    assert_eq!(log.access[&log.api_tokens[0]], dpop.thumbprint());
}

/// A fresh directory under target/, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("ttr-dpop-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn the_key_survives_a_file_store_round_trip() {
    let w = World::start().await;
    let dir = TempDir::new("round-trip");
    let path = dir.0.join("tokens.json");
    let first_key = DpopKey::generate().unwrap();
    let first = w.manager(&first_key, |b| b.store(FileStore::new(&path)));
    // A refresh saves the rotated set, with its key.
    first.refresh().await.unwrap();
    let saved = first.current().unwrap();
    assert_eq!(
        saved.dpop_key().and_then(|k| k.thumbprint()),
        Some(first_key.thumbprint())
    );
    let debug = format!("{saved:?}");
    let stored = std::fs::read_to_string(&path).unwrap();
    let value: serde_json::Value = serde_json::from_str(&stored).unwrap();
    let pkcs8 = value["dpop_key"].as_str().unwrap();
    assert!(!debug.contains(&pkcs8[..20]), "{debug}");
    drop(first);

    // A restart: a new process makes a new key, then loads the session.
    let restarted_key = DpopKey::generate().unwrap();
    assert_ne!(restarted_key.thumbprint(), first_key.thumbprint());
    let restarted = TokenManager::builder(w.grant(&restarted_key))
        .dpop(restarted_key.clone())
        .store(FileStore::new(&path))
        .build();
    assert!(restarted.load().await.unwrap());
    assert_eq!(restarted_key.thumbprint(), first_key.thumbprint());
    // The resource accepts the bound token's proof, and the bound refresh
    // token still refreshes (the server checks the binding).
    assert_eq!(
        w.get(&restarted, &restarted_key, "/api/x")
            .await
            .unwrap()
            .status(),
        200
    );
    restarted.refresh().await.unwrap();
    let log = w.log();
    assert_eq!((log.grants, log.reuse), (2, 0));
    assert!(
        log.token_proofs
            .iter()
            .all(|p| p.jkt == first_key.thumbprint())
    );
}

#[tokio::test]
async fn a_refresh_signs_with_the_key_its_refresh_token_is_bound_to() {
    let w = World::start().await;
    let bound = DpopKey::generate().unwrap();
    let other = DpopKey::generate().unwrap();
    // The manager was not given the key; the stored set carries it.
    let set = w.login(&bound).with_dpop_key(bound.signing_key());
    let tokens = TokenManager::builder(w.grant(&other)).initial(set).build();
    tokens.refresh().await.unwrap();
    assert_eq!(other.thumbprint(), bound.thumbprint());
    let log = w.log();
    assert_eq!((log.grants, log.reuse), (1, 0));
    assert_eq!(log.token_proofs[0].jkt, bound.thumbprint());
}
