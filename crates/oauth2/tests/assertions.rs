//! Signed client assertions (`private_key_jwt`, `client_secret_jwt`) and the
//! JWT bearer grant, against a token endpoint on 127.0.0.1 that checks
//! every assertion the way an authorization server must: the signature
//! with ring from the client's public JWK (or the shared secret), `iss`,
//! `sub`, `aud`, `exp`, and a `jti` never seen before.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{HashMap, HashSet},
    error::Error as _,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
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
use http::Request;
use ring::{hmac, signature};
use serde_json::{Value, json};
use tower_token_refresh::{
    Error, ErrorKind, ServiceClient, TokenManager, TokenSet, TokenSource,
    jose::SigningKey,
    oauth2::{
        ClientAssertion, ClientAuth, ClientCredentialsGrant, HttpClient, IntrospectionClient,
        JwtBearerGrant, RefreshTokenGrant, RevocationClient, TokenTypeHint,
    },
};
use tower_token_refresh_test_util::{AuthConfig, AuthServer, Echo, Fault, hyper_client};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const CLIENT_ID: &str = "signing-client";
const SERVICE_ACCOUNT: &str = "robot@project.example";
const HS_SECRET: &str = "a client secret of 32 bytes or more, for HS256";

fn p256() -> SigningKey {
    let pem = include_str!("../../oauth2/testdata/p256.pem");
    SigningKey::from_pkcs8_pem(pem).unwrap()
}

fn rsa() -> SigningKey {
    let pem = include_str!("../../oauth2/testdata/rsa-2048.pem");
    SigningKey::from_pkcs8_pem(pem).unwrap()
}

/// How the server checks a signature: the client's public JWK, or the
/// shared secret.
#[derive(Clone)]
enum Verifier {
    Es256(Vec<u8>),
    Rs256 { n: Vec<u8>, e: Vec<u8> },
    Hs256(Vec<u8>),
}

impl Verifier {
    /// From a public JWK, as a client registers it.
    fn from_jwk(jwk: &Value) -> Verifier {
        let b64 = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
        match jwk["kty"].as_str().unwrap() {
            "EC" => {
                assert_eq!(jwk["crv"], "P-256");
                let mut point = vec![4];
                point.extend(b64("x"));
                point.extend(b64("y"));
                Verifier::Es256(point)
            }
            "RSA" => Verifier::Rs256 {
                n: b64("n"),
                e: b64("e"),
            },
            other => panic!("unexpected kty {other}"),
        }
    }

    fn of(key: &SigningKey) -> Verifier {
        Verifier::from_jwk(&key.public_jwk().unwrap())
    }

    fn alg(&self) -> &'static str {
        match self {
            Verifier::Es256(_) => "ES256",
            Verifier::Rs256 { .. } => "RS256",
            Verifier::Hs256(_) => "HS256",
        }
    }

    fn verify(&self, signed: &[u8], sig: &[u8]) -> bool {
        match self {
            Verifier::Es256(point) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed, sig)
                    .is_ok()
            }
            Verifier::Rs256 { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, sig)
                .is_ok(),
            Verifier::Hs256(secret) => {
                hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, secret), signed, sig).is_ok()
            }
        }
    }
}

/// An assertion the server accepted.
#[derive(Clone, Debug)]
struct Accepted {
    /// The path it was posted to.
    path: String,
    /// `client_assertion` (client authentication) or `assertion` (the grant).
    param: &'static str,
    header: Value,
    claims: Value,
}

#[derive(Default)]
struct Ledger {
    clients: HashMap<String, Verifier>,
    service_accounts: HashMap<String, Verifier>,
    seen_jti: HashSet<String>,
    accepted: Vec<Accepted>,
    /// Revocation requests to answer 503 before the next 200.
    revocation_503s: usize,
    issued: u64,
}

/// A token endpoint (and introspection and revocation endpoints) that
/// authenticates clients only by signed assertions, and serves
/// `client_credentials`, `refresh_token` (refresh token `rt-0` or one it
/// issued) and the JWT bearer grant.
#[derive(Clone)]
struct AssertionServer {
    origin: String,
    ledger: Arc<Mutex<Ledger>>,
}

impl AssertionServer {
    async fn start() -> AssertionServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let server = AssertionServer {
            origin,
            ledger: Arc::default(),
        };
        let app = Router::new()
            .route("/token", post(endpoint))
            .route("/introspect", post(endpoint))
            .route("/revoke", post(endpoint))
            .with_state(server.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        server
    }

    fn register_client(&self, client_id: &str, verifier: Verifier) {
        let mut ledger = self.ledger.lock().unwrap();
        ledger.clients.insert(client_id.to_owned(), verifier);
    }

    fn register_service_account(&self, iss: &str, verifier: Verifier) {
        let mut ledger = self.ledger.lock().unwrap();
        ledger.service_accounts.insert(iss.to_owned(), verifier);
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    fn accepted(&self) -> Vec<Accepted> {
        self.ledger.lock().unwrap().accepted.clone()
    }
}

fn refuse(status: StatusCode, code: &str, why: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "error_description": why})),
    )
        .into_response()
}

/// Checks a compact JWS: `alg` is the verifier's, the signature holds, it
/// has not expired, `exp - iat` is at most an hour, and the `jti` is new.
fn check_jwt(
    ledger: &mut Ledger,
    jwt: &str,
    verifier: &Verifier,
) -> Result<(Value, Value), &'static str> {
    let decode = |part: &str| -> Result<Value, &'static str> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| "not base64url")?;
        serde_json::from_slice(&bytes).map_err(|_| "not JSON")
    };
    let (signed, sig) = jwt.rsplit_once('.').ok_or("not a JWS")?;
    let (header, claims) = signed.split_once('.').ok_or("not a JWS")?;
    let (header, claims) = (decode(header)?, decode(claims)?);
    if header["alg"] != verifier.alg() {
        return Err("alg mismatch");
    }
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| "not base64url")?;
    if !verifier.verify(signed.as_bytes(), &sig) {
        return Err("bad signature");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (iat, exp) = (claims["iat"].as_u64(), claims["exp"].as_u64());
    let (Some(iat), Some(exp)) = (iat, exp) else {
        return Err("iat and exp are required");
    };
    if exp <= now || iat > now + 5 || exp - iat > 3600 {
        return Err("expired or too long");
    }
    let jti = claims["jti"].as_str().ok_or("jti is required")?;
    if !ledger.seen_jti.insert(jti.to_owned()) {
        return Err("jti replayed");
    }
    Ok((header, claims))
}

async fn endpoint(
    State(server): State<AssertionServer>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let path = uri.path().to_owned();
    let url = server.url(&path);
    let token_url = server.url("/token");
    let mut ledger = server.ledger.lock().unwrap();
    let ledger = &mut *ledger;
    if headers.contains_key("authorization") || form.contains_key("client_secret") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "secrets not here",
        );
    }

    // Client authentication, when the request has any: a signed assertion.
    if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type").map(String::as_str) != Some(ASSERTION_TYPE) {
            return refuse(StatusCode::BAD_REQUEST, "invalid_request", "assertion type");
        }
        let Some(client_id) = form.get("client_id") else {
            return refuse(StatusCode::UNAUTHORIZED, "invalid_client", "no client_id");
        };
        let Some(verifier) = ledger.clients.get(client_id).cloned() else {
            return refuse(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client");
        };
        let (header, claims) = match check_jwt(ledger, assertion, &verifier) {
            Ok(checked) => checked,
            Err(why) => return refuse(StatusCode::UNAUTHORIZED, "invalid_client", why),
        };
        let aud = claims["aud"].as_str().unwrap_or_default();
        if claims["iss"] != **client_id
            || claims["sub"] != **client_id
            || ![server.origin.as_str(), url.as_str(), token_url.as_str()].contains(&aud)
        {
            return refuse(StatusCode::UNAUTHORIZED, "invalid_client", "claims");
        }
        ledger.accepted.push(Accepted {
            path: path.clone(),
            param: "client_assertion",
            header,
            claims,
        });
    } else if form.get("grant_type").map(String::as_str) != Some(JWT_BEARER) {
        return refuse(StatusCode::UNAUTHORIZED, "invalid_client", "no client auth");
    }

    match path.as_str() {
        "/introspect" => return axum::Json(json!({"active": true})).into_response(),
        "/revoke" if ledger.revocation_503s > 0 => {
            ledger.revocation_503s -= 1;
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "later",
            );
        }
        "/revoke" => return StatusCode::OK.into_response(),
        _ => {}
    }
    let mut refresh_token = None;
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some("refresh_token") => refresh_token = Some(format!("rt-{}", ledger.issued + 1)),
        Some(JWT_BEARER) => {
            let Some(assertion) = form.get("assertion") else {
                return refuse(StatusCode::BAD_REQUEST, "invalid_request", "no assertion");
            };
            let iss = assertion
                .split('.')
                .nth(1)
                .and_then(|c| URL_SAFE_NO_PAD.decode(c).ok())
                .and_then(|c| serde_json::from_slice::<Value>(&c).ok())
                .and_then(|c| c["iss"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let Some(verifier) = ledger.service_accounts.get(&iss).cloned() else {
                return refuse(StatusCode::BAD_REQUEST, "invalid_grant", "unknown issuer");
            };
            let (header, claims) = match check_jwt(ledger, assertion, &verifier) {
                Ok(checked) => checked,
                Err(why) => return refuse(StatusCode::BAD_REQUEST, "invalid_grant", why),
            };
            if claims["aud"] != *token_url && claims["aud"] != *server.origin {
                return refuse(StatusCode::BAD_REQUEST, "invalid_grant", "audience");
            }
            ledger.accepted.push(Accepted {
                path: path.clone(),
                param: "assertion",
                header,
                claims,
            });
        }
        _ => return refuse(StatusCode::BAD_REQUEST, "unsupported_grant_type", "no"),
    }
    ledger.issued += 1;
    let mut body = json!({
        "access_token": format!("at-{}", ledger.issued),
        "token_type": "Bearer",
        "expires_in": 300,
    });
    if let Some(refresh_token) = refresh_token {
        body["refresh_token"] = refresh_token.into();
    }
    axum::Json(body).into_response()
}

type Http = ServiceClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<Bytes>,
    >,
>;

fn http() -> Http {
    ServiceClient::new(hyper_client())
}

/// An [`HttpClient`] that keeps the form body of every request it sends.
fn recording() -> (impl HttpClient + Clone, Arc<Mutex<Vec<String>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let log = bodies.clone();
    let http = http();
    let client = move |request: Request<Bytes>| {
        let body = String::from_utf8(request.body().to_vec()).unwrap();
        log.lock().unwrap().push(body);
        let http = http.clone();
        async move { http.send(request).await }
    };
    (Arc::new(client), bodies)
}

/// The value of `name` in a form body (JWTs need no decoding).
fn form_value<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// The accepted client assertions: signed as each must be, by `CLIENT_ID`,
/// living `lifetime`, each with a `jti` of its own.
fn assert_client_assertions(accepted: &[Accepted], lifetime: u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut jtis = HashSet::new();
    for a in accepted {
        assert_eq!(a.param, "client_assertion");
        assert_eq!(a.claims["iss"], CLIENT_ID, "{a:?}");
        assert_eq!(a.claims["sub"], CLIENT_ID, "{a:?}");
        let (iat, exp) = (
            a.claims["iat"].as_u64().unwrap(),
            a.claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(exp - iat, lifetime, "{a:?}");
        assert!(iat.abs_diff(now) <= 5, "iat is now: {a:?}");
        assert!(jtis.insert(a.claims["jti"].as_str().unwrap().to_owned()));
    }
}

#[tokio::test]
async fn private_key_jwt_authenticates_every_token_endpoint_call_with_a_fresh_assertion() {
    let server = AssertionServer::start().await;
    let key = p256().with_key_id("key-1");
    server.register_client(CLIENT_ID, Verifier::of(&key));
    let auth = ClientAuth::private_key_jwt(CLIENT_ID, key);
    let token_url = server.url("/token");

    let cc = ClientCredentialsGrant::new(token_url.parse().unwrap(), auth.clone(), http());
    assert_eq!(
        cc.fetch(None).await.unwrap().access_token().secret(),
        "at-1"
    );

    let refresh = RefreshTokenGrant::new(token_url.parse().unwrap(), auth.clone(), http());
    let tokens = TokenManager::builder(refresh)
        .initial(TokenSet::bearer("at-0").with_refresh_token("rt-0"))
        .build();
    tokens.refresh().await.unwrap();
    assert_eq!(tokens.current().unwrap().access_token().secret(), "at-2");

    let introspection = IntrospectionClient::new(
        server.url("/introspect").parse().unwrap(),
        auth.clone(),
        http(),
    );
    assert!(
        introspection
            .introspect("at-2", Some(TokenTypeHint::AccessToken))
            .await
            .unwrap()
            .active
    );

    // The first revocation gets a 503 and is retried: the retry must carry
    // a new assertion, or the server refuses its replayed jti.
    server.ledger.lock().unwrap().revocation_503s = 1;
    let revocation =
        RevocationClient::new(server.url("/revoke").parse().unwrap(), auth.clone(), http())
            .retry(2, Duration::from_millis(1));
    revocation
        .revoke("rt-2", Some(TokenTypeHint::RefreshToken))
        .await
        .unwrap();

    let accepted = server.accepted();
    let paths: Vec<&str> = accepted.iter().map(|a| a.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/token", "/token", "/introspect", "/revoke", "/revoke"]
    );
    assert_client_assertions(&accepted, 60);
    for a in &accepted {
        assert_eq!(a.claims["aud"], server.url(&a.path), "{a:?}");
        assert_eq!(a.header["alg"], "ES256");
        assert_eq!(a.header["kid"], "key-1");
    }
}

#[tokio::test]
async fn an_rs256_key_from_a_pem_file_can_name_the_issuer_as_audience_and_add_header_members() {
    let server = AssertionServer::start().await;
    let key = rsa();
    server.register_client(CLIENT_ID, Verifier::of(&key));
    let auth = ClientAssertion::new(CLIENT_ID, key)
        .audience(server.origin.clone())
        .lifetime(Duration::from_secs(30))
        .header_param("x5t", "hOBcHZi846VCHSJbFAs26Go9VTQ");
    let grant =
        ClientCredentialsGrant::new(server.url("/token").parse().unwrap(), auth.into(), http());
    let tokens = TokenManager::builder(grant).build();
    assert_eq!(
        tokens
            .authorization()
            .await
            .unwrap()
            .header()
            .to_str()
            .unwrap(),
        "Bearer at-1"
    );
    let accepted = server.accepted();
    assert_eq!(accepted.len(), 1);
    assert_client_assertions(&accepted, 30);
    assert_eq!(accepted[0].claims["aud"], *server.origin);
    assert_eq!(accepted[0].header["alg"], "RS256");
    assert!(accepted[0].header.get("kid").is_none());
    assert_eq!(accepted[0].header["x5t"], "hOBcHZi846VCHSJbFAs26Go9VTQ");
}

#[tokio::test]
async fn client_secret_jwt_is_an_hmac_of_the_secret_which_is_never_sent() {
    let server = AssertionServer::start().await;
    server.register_client(CLIENT_ID, Verifier::Hs256(HS_SECRET.as_bytes().to_vec()));
    let (client, bodies) = recording();
    let grant = ClientCredentialsGrant::new(
        server.url("/token").parse().unwrap(),
        ClientAuth::client_secret_jwt(CLIENT_ID, HS_SECRET),
        client,
    );
    grant.fetch(None).await.unwrap();
    grant.fetch(None).await.unwrap();

    let accepted = server.accepted();
    assert_eq!(accepted.len(), 2);
    assert_client_assertions(&accepted, 60);
    assert_eq!(accepted[0].header["alg"], "HS256");
    for body in bodies.lock().unwrap().iter() {
        assert!(!body.contains("secret"), "{body}");
        assert_eq!(form_value(body, "client_id"), Some(CLIENT_ID));
    }
}

#[tokio::test]
async fn a_key_the_server_does_not_know_is_its_invalid_client_and_rejected() {
    let server = AssertionServer::start().await;
    server.register_client(CLIENT_ID, Verifier::of(&p256()));
    let (client, bodies) = recording();
    let wrong = SigningKey::generate_es256().unwrap();
    let grant = ClientCredentialsGrant::new(
        server.url("/token").parse().unwrap(),
        ClientAuth::private_key_jwt(CLIENT_ID, wrong),
        client,
    );
    let err = grant.fetch(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err:?}");
    assert_eq!(err.oauth_error(), Some("invalid_client"));
    assert!(server.accepted().is_empty());
    let body = bodies.lock().unwrap()[0].clone();
    let assertion = form_value(&body, "client_assertion").unwrap();
    assert_no_fragment(assertion, &everything_shown(&err));

    // An HS256 secret the server does not share: the same refusal.
    let grant = ClientCredentialsGrant::new(
        server.url("/token").parse().unwrap(),
        ClientAuth::client_secret_jwt(CLIENT_ID, HS_SECRET),
        http(),
    );
    let err = grant.fetch(None).await.unwrap_err();
    assert_eq!(err.oauth_error(), Some("invalid_client"));
}

#[test]
fn a_key_that_is_no_key_is_a_rejected_error() {
    for pem in [
        "no PEM at all",
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n",
    ] {
        let err = SigningKey::from_pkcs8_pem(pem).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    }
}

#[tokio::test]
async fn the_jwt_bearer_grant_gets_a_service_account_a_token_with_a_new_assertion_each_time() {
    let server = AssertionServer::start().await;
    let key = rsa().with_key_id("sa-key");
    server.register_service_account(SERVICE_ACCOUNT, Verifier::of(&key));
    let (client, bodies) = recording();
    let grant = JwtBearerGrant::new(
        server.url("/token").parse().unwrap(),
        key,
        SERVICE_ACCOUNT,
        client,
    )
    .subject("user@project.example")
    .claim("scope", "read write")
    .lifetime(Duration::from_secs(600));
    let tokens = TokenManager::builder(grant).build();
    let first = tokens.authorization().await.unwrap();
    assert_eq!(first.header().to_str().unwrap(), "Bearer at-1");
    tokens.refresh().await.unwrap();
    assert_eq!(tokens.current().unwrap().access_token().secret(), "at-2");

    let accepted = server.accepted();
    assert_eq!(accepted.len(), 2);
    for a in &accepted {
        assert_eq!(a.param, "assertion");
        assert_eq!(a.header["alg"], "RS256");
        assert_eq!(a.header["kid"], "sa-key");
        assert_eq!(a.claims["iss"], SERVICE_ACCOUNT);
        assert_eq!(a.claims["sub"], "user@project.example");
        assert_eq!(a.claims["aud"], server.url("/token"));
        assert_eq!(a.claims["scope"], "read write");
        let (iat, exp) = (
            a.claims["iat"].as_u64().unwrap(),
            a.claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(exp - iat, 600);
    }
    assert_ne!(accepted[0].claims["jti"], accepted[1].claims["jti"]);
    // No client authentication unless asked for.
    for body in bodies.lock().unwrap().iter() {
        assert!(form_value(body, "client_id").is_none(), "{body}");
        assert!(form_value(body, "client_assertion").is_none(), "{body}");
    }
}

#[tokio::test]
async fn the_jwt_bearer_grant_can_also_authenticate_the_client() {
    let server = AssertionServer::start().await;
    let sa_key = p256();
    let client_key = rsa();
    server.register_service_account(SERVICE_ACCOUNT, Verifier::of(&sa_key));
    server.register_client(CLIENT_ID, Verifier::of(&client_key));
    let grant = JwtBearerGrant::new(
        server.url("/token").parse().unwrap(),
        sa_key,
        SERVICE_ACCOUNT,
        http(),
    )
    .audience(server.origin.clone())
    .scope("read")
    .client_auth(ClientAuth::private_key_jwt(CLIENT_ID, client_key));
    grant.fetch(None).await.unwrap();
    let params: Vec<&str> = server.accepted().iter().map(|a| a.param).collect();
    assert_eq!(params, ["client_assertion", "assertion"]);
    assert_eq!(server.accepted()[1].claims["aud"], *server.origin);
}

#[tokio::test]
async fn a_refused_jwt_bearer_assertion_is_rejected_not_a_lost_session() {
    let server = AssertionServer::start().await;
    server.register_service_account(SERVICE_ACCOUNT, Verifier::of(&p256()));
    let (client, bodies) = recording();
    let grant = JwtBearerGrant::new(
        server.url("/token").parse().unwrap(),
        SigningKey::generate_es256().unwrap(),
        SERVICE_ACCOUNT,
        client,
    );
    let err = grant.fetch(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err:?}");
    assert_eq!(err.oauth_error(), Some("invalid_grant"));
    let body = bodies.lock().unwrap()[0].clone();
    assert_no_fragment(
        form_value(&body, "assertion").unwrap(),
        &everything_shown(&err),
    );
}

/// `Display` and `Debug` of the error and of each error in its chain.
fn everything_shown(err: &Error) -> String {
    let mut shown = format!("{err}\n{err:?}\n{err:#?}\n");
    let mut source = err.source();
    while let Some(e) = source {
        shown.push_str(&format!("{e}\n{e:?}\n"));
        source = e.source();
    }
    shown
}

/// Fails if `shown` holds 8 characters in a row of `secret`, ignoring
/// ASCII case.
fn assert_no_fragment(secret: &str, shown: &str) {
    let shown = shown.to_ascii_lowercase();
    let secret = secret.to_ascii_lowercase();
    for window in secret.as_bytes().windows(8) {
        let fragment = std::str::from_utf8(window).unwrap();
        assert!(!shown.contains(fragment), "quotes {fragment:?}:\n{shown}");
    }
}

#[tokio::test]
async fn an_answer_quoting_the_assertion_shows_no_part_of_it() {
    // test-util's server serves its faults before it authenticates: it
    // echoes whatever the request carried.
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let echoes = [
        Echo::json(400),
        Echo::json(400).body_only().decoded(),
        Echo::json(400).reencoded(),
        Echo::json(401).error("invalid_client").lead(150),
        Echo::json(400).cut(90),
        Echo::text(502),
    ];
    for echo in echoes {
        for jwt_bearer in [false, true] {
            auth.inject(Fault::Echo(echo.clone()), 1);
            let (client, bodies) = recording();
            let url = auth.token_url().parse().unwrap();
            let err = if jwt_bearer {
                JwtBearerGrant::new(url, p256(), SERVICE_ACCOUNT, client)
                    .fetch(None)
                    .await
            } else {
                ClientCredentialsGrant::new(
                    url,
                    ClientAuth::private_key_jwt(CLIENT_ID, p256()),
                    client,
                )
                .fetch(None)
                .await
            }
            .unwrap_err();
            let body = bodies.lock().unwrap()[0].clone();
            let name = if jwt_bearer {
                "assertion"
            } else {
                "client_assertion"
            };
            let assertion = form_value(&body, name).unwrap();
            assert!(assertion.len() > 100, "{body}");
            assert_no_fragment(assertion, &everything_shown(&err));
        }
    }
    assert_eq!(auth.stats().faults_served, 12);
}
