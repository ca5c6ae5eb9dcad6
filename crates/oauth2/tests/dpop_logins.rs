//! A DPoP session that starts from a login (RFC 9449): the authorization
//! code, device and JWT bearer exchanges through a real hyper client to
//! test-util's `AuthServer` on 127.0.0.1, which here requires a DPoP proof
//! and verifies every one (signature, `typ`, `htm`, `htu`, no `ath`), wants
//! a nonce, refuses an assertion `jti` it has seen (grant or client
//! assertion), and binds what it issues to the proof's key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tower_token_refresh::{
    ErrorKind, ServiceClient, TokenSet,
    dpop::{DpopKey, TokenSetExt as _},
    jose::SigningKey,
    oauth2::{
        AuthorizationCodeLogin, ClientAuth, ClientCredentialsGrant, DeviceLogin, JwtBearerGrant,
    },
    source::TokenSource,
};
use tower_token_refresh_test_util::{AuthConfig, AuthLog, AuthServer, Client, Nonce, hyper_client};

type Http = ServiceClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
>;

const NONCE: &str = "as-nonce-1";
const SERVICE_ACCOUNT: &str = "robot@example.com";

/// The server of these tests: DPoP required, nonce `NONCE`, public clients
/// `cli` and `tv`; `tweak` adds the rest.
async fn start(tweak: impl FnOnce(AuthConfig) -> AuthConfig) -> AuthServer {
    let config = AuthConfig::default()
        .dpop_required(true)
        .token_dpop_nonce(Nonce::Fixed(NONCE.into()))
        .register(Client::public("cli"))
        .register(Client::public("tv"));
    AuthServer::start(tweak(config)).await.unwrap()
}

fn uri(url: String) -> http::Uri {
    url.parse().unwrap()
}

/// A loopback login whose "browser" has the server approve the
/// authorization URL and follows the redirect back with the code.
fn code_login(auth: &AuthServer) -> AuthorizationCodeLogin<Http> {
    let server = auth.clone();
    AuthorizationCodeLogin::new(
        uri(auth.authorization_url()),
        uri(auth.token_url()),
        ClientAuth::none("cli"),
        ServiceClient::new(hyper_client()),
    )
    .timeout(Duration::from_secs(30))
    .on_authorization_url(move |url| {
        let target = server.authorize(url).unwrap().redirect;
        // The hook must not block: the browser runs beside the listener.
        tokio::spawn(async move {
            let request = http::Request::get(target).body(Full::default()).unwrap();
            let _ = hyper_client().request(request).await;
        });
    })
}

/// A JWT bearer grant of a service account the server knows.
fn jwt_bearer(auth: &AuthServer, key: SigningKey) -> JwtBearerGrant<Http> {
    JwtBearerGrant::new(
        uri(auth.token_url()),
        key,
        SERVICE_ACCOUNT,
        ServiceClient::new(hyper_client()),
    )
}

/// The set is a DPoP set bound to `key`, and every proof that got past the
/// nonce was signed with it and carried the nonce.
fn assert_bound(tokens: &TokenSet, key: &DpopKey, log: &AuthLog) {
    assert_eq!(tokens.token_type(), "DPoP");
    let bound = tokens.dpop_key().expect("the set is bound to a key");
    assert_eq!(bound.thumbprint().unwrap(), key.thumbprint());
    assert!(!log.token_proofs.is_empty());
    for proof in &log.token_proofs {
        assert_eq!(proof.jkt, key.thumbprint());
        assert_eq!(proof.nonce.as_deref(), Some(NONCE));
    }
}

/// Challenged once for the nonce, then answered with a new assertion:
/// the server accepted both, as it would not a replayed `jti`.
fn assert_retried_with_a_new_assertion(auth: &AuthServer) {
    let (stats, log) = (auth.stats(), auth.log());
    assert_eq!((stats.token_requests, stats.dpop_nonce_challenges), (2, 1));
    assert_eq!(log.assertions.len(), 2);
    assert_ne!(
        log.assertions[0].claims["jti"],
        log.assertions[1].claims["jti"]
    );
}

#[tokio::test]
async fn a_loopback_login_with_a_key_answers_the_nonce_once_and_binds_the_set() {
    let auth = start(|c| c).await;
    let key = DpopKey::generate().unwrap();
    let tokens = code_login(&auth).dpop(key.clone()).login().await.unwrap();
    let stats = auth.stats();
    assert_eq!((stats.token_requests, stats.dpop_nonce_challenges), (2, 1));
    // The code was issued for the challenge the browser was sent with and
    // exchanged with its verifier.
    assert_eq!(stats.authorization_code_grants, 1);
    assert_eq!(auth.log().authorization_requests.len(), 1);
    assert_bound(&tokens, &key, &auth.log());
    assert_eq!(
        auth.dpop_jkt(tokens.access_token().secret()),
        Some(key.thumbprint())
    );
}

#[tokio::test]
async fn a_loopback_login_without_a_key_sends_no_proof_and_is_refused() {
    let auth = start(|c| c).await;
    let err = code_login(&auth).login().await.unwrap_err();
    assert_eq!(err.oauth_error(), Some("invalid_dpop_proof"));
    assert!(auth.log().token_proofs.is_empty());
}

#[tokio::test]
async fn a_device_login_with_a_key_proves_every_poll_and_binds_the_set() {
    let auth = start(|c| c.device_pending_polls(1)).await;
    let key = DpopKey::generate().unwrap();
    let tokens = DeviceLogin::new(
        uri(auth.device_authorization_url()),
        uri(auth.token_url()),
        ClientAuth::none("tv"),
        ServiceClient::new(hyper_client()),
    )
    .on_user_code(|_| {})
    .dpop(key.clone())
    .login()
    .await
    .unwrap();
    let (stats, log) = (auth.stats(), auth.log());
    // Challenged once, then the nonce is remembered: the pending poll and
    // the one that brings the tokens both carry it.
    assert_eq!((stats.token_requests, stats.dpop_nonce_challenges), (3, 1));
    assert_eq!(stats.authorization_pending, 1);
    assert_eq!(log.token_proofs.len(), 2);
    assert_bound(&tokens, &key, &log);
}

#[tokio::test]
async fn a_jwt_bearer_grant_with_a_key_retries_the_nonce_with_a_new_assertion() {
    let signer = SigningKey::generate_es256().unwrap();
    let jwk = signer.public_jwk().unwrap();
    let auth = start(|c| c.jwt_bearer_issuer(SERVICE_ACCOUNT, &jwk)).await;
    let key = DpopKey::generate().unwrap();
    let grant = jwt_bearer(&auth, signer).dpop(key.clone());
    let tokens = grant.fetch(None).await.unwrap();
    assert_retried_with_a_new_assertion(&auth);
    assert_bound(&tokens, &key, &auth.log());
}

#[tokio::test]
async fn a_jwt_bearer_grant_without_a_key_is_refused_for_want_of_a_proof() {
    let signer = SigningKey::generate_es256().unwrap();
    let jwk = signer.public_jwk().unwrap();
    let auth = start(|c| c.jwt_bearer_issuer(SERVICE_ACCOUNT, &jwk)).await;
    let grant = jwt_bearer(&auth, signer);
    let err = grant.fetch(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert_eq!(err.oauth_error(), Some("invalid_dpop_proof"));
}

#[tokio::test]
async fn a_nonce_retry_signs_a_new_client_assertion() {
    let signer = SigningKey::generate_es256().unwrap();
    let jwk = signer.public_jwk().unwrap();
    let auth = start(|c| c.register(Client::private_key_jwt("svc", &jwk))).await;
    let key = DpopKey::generate().unwrap();
    let grant = ClientCredentialsGrant::new(
        uri(auth.token_url()),
        ClientAuth::private_key_jwt("svc", signer),
        ServiceClient::new(hyper_client()),
    )
    .dpop(key.clone());
    let tokens = grant.fetch(None).await.unwrap();
    assert_retried_with_a_new_assertion(&auth);
    assert_bound(&tokens, &key, &auth.log());
}
