//! DPoP (RFC 9449) end to end: a real hyper client through
//! `TokenRefreshLayer` and `DpopLayer` to test-util's `AuthServer` (which
//! requires DPoP here) and `ResourceServer` on 127.0.0.1, which verify
//! every proof with ring (signature, `typ`, `htm`, `htu`, `ath`, the key
//! the token is bound to, `jti` replay, nonces) and count what they saw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashSet, path::PathBuf, time::Duration};

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
    AuthConfig, AuthServer, Client, IssuedTokens, Nonce, ResourceServer, dpop::ath, hyper_client,
};

const HOUR: Duration = Duration::from_secs(3600);

struct World {
    auth: AuthServer,
    api: ResourceServer,
    /// The session a DPoP login left, once `login` was called.
    first: std::sync::Mutex<Option<IssuedTokens>>,
}

impl World {
    async fn start() -> World {
        World::with(|config| config).await
    }

    /// A server that requires DPoP, tokens good for an hour, and `app`, a
    /// public client; `tweak` sets the rest.
    async fn with(tweak: impl FnOnce(AuthConfig) -> AuthConfig) -> World {
        let config = AuthConfig::default()
            .access_lifetime(HOUR)
            .dpop_required(true)
            .register(Client::public("app"));
        let auth = AuthServer::start(tweak(config)).await.unwrap();
        let api = ResourceServer::start(&auth).await.unwrap();
        World {
            auth,
            api,
            first: std::sync::Mutex::default(),
        }
    }

    /// A session as a login bound to `dpop` would leave it (the first
    /// login's tokens, minted once).
    fn login(&self, dpop: &DpopKey) -> TokenSet {
        let mut first = self.first.lock().unwrap();
        first
            .get_or_insert_with(|| self.auth.login_dpop(&dpop.thumbprint()))
            .token_set()
    }

    /// The first login's tokens.
    fn first(&self) -> IssuedTokens {
        self.first.lock().unwrap().clone().expect("logged in")
    }

    fn grant(&self, dpop: &DpopKey) -> RefreshTokenGrant<ServiceClient<HyperClient>> {
        RefreshTokenGrant::new(
            self.auth.token_url().parse().unwrap(),
            ClientAuth::none("app"),
            ServiceClient::new(hyper_client()),
        )
        .dpop(dpop.clone())
    }

    /// Grants carried out.
    fn grants(&self) -> u64 {
        let stats = self.auth.stats();
        stats.refresh_grants + stats.client_credentials_grants
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
                    .allow_origin(self.api.url("").parse().unwrap()),
            )
            .layer(DpopLayer::new(dpop.clone()))
            .service(hyper_client());
        let request = http::Request::get(self.api.url(path_and_query))
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
        .get(&tokens, &dpop, "/api/data?page=2&sort=asc#top")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let log = w.api.log();
    let proof = &log.dpop_proofs[0];
    assert_eq!(proof.htu, w.api.url("/api/data"));
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
        assert_eq!(
            w.get(&tokens, &dpop, "/api/data").await.unwrap().status(),
            200
        );
    }
    let log = w.api.log();
    assert_eq!(log.dpop_proofs.len(), 10);
    let jtis: HashSet<&str> = log.dpop_proofs.iter().map(|p| p.jti.as_str()).collect();
    assert_eq!(jtis.len(), 10, "a jti was repeated");
    for proof in &log.dpop_proofs {
        assert_eq!(
            proof.ath.as_deref(),
            Some(ath(&w.first().access_token).as_str())
        );
        assert_eq!(proof.jkt, dpop.thumbprint());
        assert_eq!(proof.nonce, None);
    }
}

#[tokio::test]
async fn a_resource_nonce_challenge_is_answered_once_and_the_nonce_kept() {
    let w = World::with(|c| c.resource_dpop_nonce(Nonce::Fixed("rs-n1".into()))).await;
    let dpop = DpopKey::generate().unwrap();
    let tokens = w.manager(&dpop, |b| b);
    let response = w.get(&tokens, &dpop, "/api/data").await.unwrap();
    assert_eq!(response.status(), 200);
    {
        let stats = w.api.stats();
        assert_eq!((stats.requests, stats.dpop_nonce_challenges), (2, 1));
        assert_eq!(w.api.log().dpop_proofs[0].nonce.as_deref(), Some("rs-n1"));
        // The nonce challenge is not a rejected token: no refresh.
        assert_eq!(w.auth.stats().token_requests, 0);
    }
    // The next request carries the nonce from the start.
    assert_eq!(
        w.get(&tokens, &dpop, "/api/data").await.unwrap().status(),
        200
    );
    let stats = w.api.stats();
    assert_eq!((stats.requests, stats.dpop_nonce_challenges), (3, 1));
    // The nonce is the resource's: the token endpoint's origin has none.
    assert_eq!(dpop.nonce(&w.auth.token_url().parse().unwrap()), None);
}

#[tokio::test]
async fn a_second_nonce_challenge_is_returned_not_answered() {
    let w = World::with(|c| c.resource_dpop_nonce(Nonce::AlwaysChallenge)).await;
    let dpop = DpopKey::generate().unwrap();
    let tokens = w.manager(&dpop, |b| b);
    let response = w.get(&tokens, &dpop, "/api/data").await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("use_dpop_nonce")
    );
    let stats = w.api.stats();
    assert_eq!((stats.requests, stats.dpop_nonce_challenges), (2, 2));
    assert_eq!(
        w.auth.stats().token_requests,
        0,
        "a nonce challenge is no rejected token"
    );
}

#[tokio::test]
async fn a_replay_after_a_rejected_token_carries_a_new_proof_for_the_new_token() {
    let w = World::start().await;
    let dpop = DpopKey::generate().unwrap();
    let tokens = w.manager(&dpop, |b| b);
    w.auth.revoke(&w.first().access_token);
    let response = w.get(&tokens, &dpop, "/api/data").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        w.api.stats().requests,
        2,
        "the rejected request, then its replay"
    );
    assert_eq!(w.grants(), 1);
    let new_token = w.api.accepted_tokens()[0].clone();
    assert_ne!(new_token, w.first().access_token);
    let replay = w.api.log().dpop_proofs[0].clone();
    assert_eq!(replay.ath.as_deref(), Some(ath(&new_token).as_str()));
    assert_eq!(replay.jkt, dpop.thumbprint());
    // The token endpoint's proof and the resource's are different proofs.
    assert_ne!(w.auth.log().token_proofs[0].jti, replay.jti);
}

#[tokio::test]
async fn the_replay_and_its_nonce_resend_each_get_a_new_proof() {
    let w = World::with(|c| c.resource_dpop_nonce(Nonce::Fixed("rs-n1".into()))).await;
    let dpop = DpopKey::generate().unwrap();
    let tokens = w.manager(&dpop, |b| b);
    w.auth.revoke(&w.first().access_token);
    // The first proof is challenged for a nonce; the resend with the nonce
    // finds the first token revoked; the replay with the new token passes.
    let response = w.get(&tokens, &dpop, "/api/data").await.unwrap();
    assert_eq!(response.status(), 200);
    let stats = w.api.stats();
    assert_eq!((stats.requests, stats.dpop_nonce_challenges), (3, 1));
    let log = w.api.log();
    assert_eq!(log.dpop_jtis.len(), 3, "three valid proofs");
    assert_eq!(log.dpop_jtis.iter().collect::<HashSet<_>>().len(), 3);
    assert_eq!(w.grants(), 1);
    assert_eq!(log.dpop_proofs.len(), 1);
    assert_eq!(log.dpop_proofs[0].nonce.as_deref(), Some("rs-n1"));
}

#[tokio::test]
async fn the_token_endpoint_nonce_retry_presents_the_refresh_token_again_without_reuse() {
    let w = World::with(|c| c.token_dpop_nonce(Nonce::Rotating("as-n0".into()))).await;
    let dpop = DpopKey::generate().unwrap();
    let tokens = w.manager(&dpop, |b| b);
    let auth = tokens.refresh().await.unwrap();
    assert!(auth.header().to_str().unwrap().starts_with("DPoP at_"));
    {
        let (stats, log) = (w.auth.stats(), w.auth.log());
        // Challenged, then the same refresh token again: the first request
        // was refused before the grant was looked at, so it spent nothing.
        let first = w.first().refresh_token;
        assert_eq!(log.refresh_tokens_presented, [first.clone(), first]);
        assert_eq!((stats.token_requests, stats.dpop_nonce_challenges), (2, 1));
        assert_eq!((w.grants(), stats.reuse_detected), (1, 0));
        assert_eq!(log.token_proofs[0].nonce.as_deref(), Some("as-n0"));
    }
    // The nonce of the success answer is kept: the next refresh is not
    // challenged.
    tokens.refresh().await.unwrap();
    let (stats, log) = (w.auth.stats(), w.auth.log());
    assert_eq!((stats.token_requests, stats.dpop_nonce_challenges), (3, 1));
    assert_eq!((w.grants(), stats.reuse_detected), (2, 0));
    assert_eq!(log.token_nonces, ["as-n0", "nonce-1", "nonce-2"]);
    assert_eq!(log.token_proofs[1].nonce.as_deref(), Some("nonce-1"));
}

#[tokio::test]
async fn the_token_endpoint_nonce_retry_happens_once() {
    let w = World::with(|c| c.token_dpop_nonce(Nonce::AlwaysChallenge)).await;
    let dpop = DpopKey::generate().unwrap();
    let tokens = w.manager(&dpop, |b| b.max_attempts(1));
    let err = tokens.refresh().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert_eq!(err.oauth_error(), Some("use_dpop_nonce"));
    let stats = w.auth.stats();
    assert_eq!((stats.token_requests, stats.dpop_nonce_challenges), (2, 2));
    assert_eq!(w.grants(), 0);
}

#[tokio::test]
async fn a_dpop_token_goes_out_as_dpop_whatever_the_scheme_setting() {
    let w = World::start().await;
    let dpop = DpopKey::generate().unwrap();
    for scheme in [Scheme::Fixed("Bearer".into()), Scheme::None] {
        let tokens = w.manager(&dpop, |b| b.scheme(scheme));
        let auth = tokens.authorization().await.unwrap();
        assert_eq!(
            auth.header().to_str().unwrap(),
            format!("DPoP {}", w.first().access_token)
        );
        assert_eq!(
            w.get(&tokens, &dpop, "/api/data").await.unwrap().status(),
            200
        );
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
        w.auth.token_url().parse().unwrap(),
        ClientAuth::basic(w.auth.client_id(), w.auth.client_secret()),
        ServiceClient::new(hyper_client()),
    )
    .dpop(dpop.clone());
    let tokens = TokenManager::builder(grant).dpop(dpop.clone()).build();
    assert_eq!(
        w.get(&tokens, &dpop, "/api/data").await.unwrap().status(),
        200
    );
    assert_eq!(w.grants(), 1);
    let accepted = w.api.accepted_tokens();
    assert_eq!(w.auth.dpop_jkt(&accepted[0]), Some(dpop.thumbprint()));
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
        w.get(&restarted, &restarted_key, "/api/data")
            .await
            .unwrap()
            .status(),
        200
    );
    restarted.refresh().await.unwrap();
    assert_eq!((w.grants(), w.auth.stats().reuse_detected), (2, 0));
    assert!(
        w.auth
            .log()
            .token_proofs
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
    assert_eq!((w.grants(), w.auth.stats().reuse_detected), (1, 0));
    assert_eq!(w.auth.log().token_proofs[0].jkt, bound.thumbprint());
}
