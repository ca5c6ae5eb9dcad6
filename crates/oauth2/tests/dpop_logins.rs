//! A DPoP session that starts from a login (RFC 9449): the authorization
//! code, device and JWT bearer exchanges through a real hyper client to a
//! token endpoint on 127.0.0.1 that verifies every proof with test-util's
//! `dpop::verify_proof` (signature, `typ`, `htm`, `htu`, no `ath`), wants a
//! nonce, refuses an assertion `jti` it has seen (grant or client
//! assertion), and binds what it issues
//! to the proof's key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    Form, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::Full;
use tower_token_refresh::{
    ErrorKind, ServiceClient, TokenSet,
    dpop::{DPOP, DPOP_NONCE, DpopKey, TokenSetExt as _},
    jose::SigningKey,
    oauth2::{
        AuthorizationCodeLogin, ClientAuth, ClientCredentialsGrant, DeviceLogin, JwtBearerGrant,
        Pkce,
    },
    source::TokenSource,
};
use tower_token_refresh_test_util::{
    dpop::{Proof, verify_proof},
    hyper_client,
};

type Http = ServiceClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
>;

const NONCE: &str = "as-nonce-1";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// What the token endpoint saw.
#[derive(Debug, Default)]
struct Log {
    base: String,
    /// The `code_challenge` the browser was sent with.
    code_challenge: Option<String>,
    /// `authorization_pending` answers still to give a device poll.
    pending: usize,
    requests: usize,
    challenges: usize,
    /// The proofs of the requests that got past the nonce.
    proofs: Vec<Proof>,
    /// The `jti` of every grant assertion received.
    assertion_jtis: Vec<String>,
}

#[derive(Clone, Default)]
struct Server {
    log: Arc<Mutex<Log>>,
}

fn error(code: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/json")],
        format!(r#"{{"error":"{code}"}}"#),
    )
        .into_response()
}

fn jti_of(jwt: &str) -> Option<String> {
    let claims = jwt.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()?;
    Some(claims["jti"].as_str()?.to_owned())
}

async fn token(
    State(s): State<Server>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut log = s.log.lock().unwrap();
    log.requests += 1;
    let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
    // A strict server remembers every assertion it is shown, grant or
    // client assertion, whatever comes of the request.
    for name in ["assertion", "client_assertion"] {
        let Some(assertion) = form.get(name) else {
            continue;
        };
        let Some(jti) = jti_of(assertion) else {
            return error("invalid_request");
        };
        if log.assertion_jtis.contains(&jti) {
            return error("invalid_grant");
        }
        log.assertion_jtis.push(jti);
    }
    let proof = match headers
        .get(DPOP)
        .map(|v| verify_proof(v.to_str().unwrap_or_default()))
    {
        Some(Ok(proof)) => proof,
        _ => return error("invalid_dpop_proof"),
    };
    if proof.htm != "POST" || proof.htu != format!("{}/token", log.base) || proof.ath.is_some() {
        return error("invalid_dpop_proof");
    }
    if proof.nonce.as_deref() != Some(NONCE) {
        log.challenges += 1;
        let mut r = error("use_dpop_nonce");
        r.headers_mut()
            .insert(DPOP_NONCE, http::HeaderValue::from_static(NONCE));
        return r;
    }
    log.proofs.push(proof);
    let granted = match grant {
        "authorization_code" => {
            let challenge = form
                .get("code_verifier")
                .and_then(|v| Pkce::from_verifier(v.clone()).ok())
                .map(|p| p.challenge().to_owned());
            form.get("code").map(String::as_str) == Some("the-code")
                && challenge.is_some()
                && challenge == log.code_challenge
        }
        DEVICE_CODE if form.get("device_code").map(String::as_str) == Some("dc") => {
            if log.pending > 0 {
                log.pending -= 1;
                return error("authorization_pending");
            }
            true
        }
        JWT_BEARER => true,
        "client_credentials" => form.contains_key("client_assertion"),
        _ => false,
    };
    if !granted {
        return error("invalid_grant");
    }
    let n = log.proofs.len();
    (
        [("content-type", "application/json")],
        format!(
            r#"{{"access_token":"at-{n}","token_type":"DPoP","expires_in":3600,"refresh_token":"rt-{n}"}}"#
        ),
    )
        .into_response()
}

async fn device() -> Response {
    (
        [("content-type", "application/json")],
        r#"{"device_code":"dc","user_code":"ABCD-EFGH","verification_uri":"http://127.0.0.1/activate","expires_in":60,"interval":1}"#,
    )
        .into_response()
}

impl Server {
    async fn start() -> Server {
        let server = Server::default();
        let app = Router::new()
            .route("/token", post(token))
            .route("/device", post(device))
            .with_state(server.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        server.log().base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        server
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap()
    }

    fn url(&self, path: &str) -> http::Uri {
        format!("{}{path}", self.log().base).parse().unwrap()
    }
}

fn query_param(url: &str, name: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
        .unwrap();
    // The values read here (state, challenge, a loopback URI) need no
    // decoding but for the URI's `%3A` and `%2F`.
    value.replace("%3A", ":").replace("%2F", "/")
}

/// A loopback login whose "browser" follows the authorization URL's
/// redirect URI with `code=the-code` and the `state` it was sent with.
fn code_login(server: &Server) -> AuthorizationCodeLogin<Http> {
    let log = server.log.clone();
    AuthorizationCodeLogin::new(
        server.url("/authorize"),
        server.url("/token"),
        ClientAuth::none("cli"),
        ServiceClient::new(hyper_client()),
    )
    .timeout(Duration::from_secs(30))
    .on_authorization_url(move |url| {
        log.lock().unwrap().code_challenge = Some(query_param(url, "code_challenge"));
        let target = format!(
            "{}?code=the-code&state={}",
            query_param(url, "redirect_uri"),
            query_param(url, "state")
        );
        // The hook must not block: the browser runs beside the listener.
        tokio::spawn(async move {
            let request = http::Request::get(target).body(Full::default()).unwrap();
            let _ = hyper_client().request(request).await;
        });
    })
}

fn jwt_bearer(server: &Server) -> JwtBearerGrant<Http> {
    JwtBearerGrant::new(
        server.url("/token"),
        SigningKey::generate_es256().unwrap(),
        "robot@example.com",
        ServiceClient::new(hyper_client()),
    )
}

/// The set is a DPoP set bound to `key`, and every proof that got past the
/// nonce was signed with it and carried the nonce.
fn assert_bound(tokens: &TokenSet, key: &DpopKey, log: &Log) {
    assert_eq!(tokens.token_type(), "DPoP");
    let bound = tokens.dpop_key().expect("the set is bound to a key");
    assert_eq!(bound.thumbprint().unwrap(), key.thumbprint());
    assert!(!log.proofs.is_empty());
    for proof in &log.proofs {
        assert_eq!(proof.jkt, key.thumbprint());
        assert_eq!(proof.nonce.as_deref(), Some(NONCE));
    }
}

#[tokio::test]
async fn a_loopback_login_with_a_key_answers_the_nonce_once_and_binds_the_set() {
    let server = Server::start().await;
    let key = DpopKey::generate().unwrap();
    let tokens = code_login(&server).dpop(key.clone()).login().await.unwrap();
    let log = server.log();
    assert_eq!((log.requests, log.challenges), (2, 1));
    assert_bound(&tokens, &key, &log);
    assert_eq!(tokens.access_token().secret(), "at-1");
}

#[tokio::test]
async fn a_loopback_login_without_a_key_sends_no_proof_and_is_refused() {
    let server = Server::start().await;
    let err = code_login(&server).login().await.unwrap_err();
    assert_eq!(err.oauth_error(), Some("invalid_dpop_proof"));
    assert!(server.log().proofs.is_empty());
}

#[tokio::test]
async fn a_device_login_with_a_key_proves_every_poll_and_binds_the_set() {
    let server = Server::start().await;
    server.log().pending = 1;
    let key = DpopKey::generate().unwrap();
    let tokens = DeviceLogin::new(
        server.url("/device"),
        server.url("/token"),
        ClientAuth::none("tv"),
        ServiceClient::new(hyper_client()),
    )
    .on_user_code(|_| {})
    .dpop(key.clone())
    .login()
    .await
    .unwrap();
    let log = server.log();
    // Challenged once, then the nonce is remembered: the pending poll and
    // the one that brings the tokens both carry it.
    assert_eq!((log.requests, log.challenges), (3, 1));
    assert_eq!(log.proofs.len(), 2);
    assert_bound(&tokens, &key, &log);
}

#[tokio::test]
async fn a_jwt_bearer_grant_with_a_key_retries_the_nonce_with_a_new_assertion() {
    let server = Server::start().await;
    let key = DpopKey::generate().unwrap();
    let grant = jwt_bearer(&server).dpop(key.clone());
    let tokens = grant.fetch(None).await.unwrap();
    let log = server.log();
    assert_eq!((log.requests, log.challenges), (2, 1));
    assert_eq!(log.assertion_jtis.len(), 2);
    assert_bound(&tokens, &key, &log);
}

#[tokio::test]
async fn a_jwt_bearer_grant_without_a_key_is_refused_for_want_of_a_proof() {
    let server = Server::start().await;
    let grant = jwt_bearer(&server);
    let err = grant.fetch(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert_eq!(err.oauth_error(), Some("invalid_dpop_proof"));
}

#[tokio::test]
async fn a_nonce_retry_signs_a_new_client_assertion() {
    let server = Server::start().await;
    let key = DpopKey::generate().unwrap();
    let grant = ClientCredentialsGrant::new(
        server.url("/token"),
        ClientAuth::private_key_jwt("svc", SigningKey::generate_es256().unwrap()),
        ServiceClient::new(hyper_client()),
    )
    .dpop(key.clone());
    let tokens = grant.fetch(None).await.unwrap();
    let log = server.log();
    assert_eq!((log.requests, log.challenges), (2, 1));
    assert_eq!(log.assertion_jtis.len(), 2);
    assert_bound(&tokens, &key, &log);
}
