//! Signed client assertions (`private_key_jwt`, `client_secret_jwt`) and the
//! JWT bearer grant, against test-util's `AuthServer` on 127.0.0.1, which
//! checks every assertion the way an authorization server must: the
//! signature with ring from the client's public JWK (or the shared secret),
//! `iss`, `sub`, `aud`, `exp`, and a `jti` never seen before.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashSet,
    error::Error as _,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::Request;
use tower_token_refresh::{
    Error, ErrorKind, ServiceClient, TokenManager, TokenSource,
    jose::SigningKey,
    oauth2::{
        ClientAssertion, ClientAuth, ClientCredentialsGrant, HttpClient, IntrospectionClient,
        JwtBearerGrant, RefreshTokenGrant, RevocationClient, TokenTypeHint,
    },
};
use tower_token_refresh_test_util::{
    Assertion, AuthConfig, AuthServer, Client, Echo, Endpoint, Fault, hyper_client,
};

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

/// The public JWK of `key`, as its client registers it.
fn jwk(key: &SigningKey) -> serde_json::Value {
    key.public_jwk().unwrap()
}

/// test-util's authorization server, which checks every assertion the way
/// a server must; `tweak` registers the clients and issuers.
async fn start(tweak: impl FnOnce(AuthConfig) -> AuthConfig) -> AuthServer {
    let config = AuthConfig::default().access_lifetime(Duration::from_secs(300));
    AuthServer::start(tweak(config)).await.unwrap()
}

/// The server's origin, `http://127.0.0.1:PORT`.
fn origin(auth: &AuthServer) -> String {
    format!("http://{}", auth.addr())
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
fn assert_client_assertions(accepted: &[Assertion], lifetime: u64) {
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
    let key = p256().with_key_id("key-1");
    let auth_server = start(|c| c.register(Client::private_key_jwt(CLIENT_ID, &jwk(&key)))).await;
    let auth = ClientAuth::private_key_jwt(CLIENT_ID, key);
    let token_url = auth_server.token_url();

    let cc = ClientCredentialsGrant::new(token_url.parse().unwrap(), auth.clone(), http());
    let issued = cc.fetch(None).await.unwrap();
    assert!(auth_server.is_access_token_valid(issued.access_token().secret()));

    let refresh = RefreshTokenGrant::new(token_url.parse().unwrap(), auth.clone(), http());
    let login = auth_server.login();
    let tokens = TokenManager::builder(refresh)
        .initial(login.token_set())
        .build();
    tokens.refresh().await.unwrap();
    let refreshed = tokens.current().unwrap();
    let access_token = refreshed.access_token().secret().to_owned();
    assert_ne!(access_token, login.access_token);
    assert!(auth_server.is_access_token_valid(&access_token));

    let introspection = IntrospectionClient::new(
        auth_server.introspection_url().parse().unwrap(),
        auth.clone(),
        http(),
    );
    assert!(
        introspection
            .introspect(&access_token, Some(TokenTypeHint::AccessToken))
            .await
            .unwrap()
            .active
    );

    // The first revocation gets a 503 after its assertion was accepted,
    // and is retried: the retry must carry a new assertion, or the server
    // refuses its replayed jti.
    auth_server.inject_at(
        Endpoint::Revocation,
        Fault::Authenticated(Box::new(Fault::TemporarilyUnavailable)),
        1,
    );
    let revocation = RevocationClient::new(
        auth_server.revocation_url().parse().unwrap(),
        auth.clone(),
        http(),
    )
    .retry(2, Duration::from_millis(1));
    let refresh_token = refreshed.refresh_token().unwrap().secret().to_owned();
    revocation
        .revoke(&refresh_token, Some(TokenTypeHint::RefreshToken))
        .await
        .unwrap();
    assert!(!auth_server.is_refresh_token_active(&refresh_token));

    let accepted = auth_server.log().assertions;
    let endpoints: Vec<Endpoint> = accepted.iter().map(|a| a.endpoint).collect();
    assert_eq!(
        endpoints,
        [
            Endpoint::Token,
            Endpoint::Token,
            Endpoint::Introspection,
            Endpoint::Revocation,
            Endpoint::Revocation
        ]
    );
    assert_client_assertions(&accepted, 60);
    for a in &accepted {
        assert_eq!(a.claims["aud"], auth_server.url(a.endpoint), "{a:?}");
        assert_eq!(a.header["alg"], "ES256");
        assert_eq!(a.header["kid"], "key-1");
    }
}

#[tokio::test]
async fn an_rs256_key_from_a_pem_file_can_name_the_issuer_as_audience_and_add_header_members() {
    let key = rsa();
    let server = start(|c| c.register(Client::private_key_jwt(CLIENT_ID, &jwk(&key)))).await;
    let auth = ClientAssertion::new(CLIENT_ID, key)
        .audience(origin(&server))
        .lifetime(Duration::from_secs(30))
        .header_param("x5t", "hOBcHZi846VCHSJbFAs26Go9VTQ");
    let grant =
        ClientCredentialsGrant::new(server.token_url().parse().unwrap(), auth.into(), http());
    let tokens = TokenManager::builder(grant).build();
    let header = tokens.authorization().await.unwrap();
    let token = tokens.current().unwrap().access_token().secret().to_owned();
    assert_eq!(header.header().to_str().unwrap(), format!("Bearer {token}"));
    assert!(server.is_access_token_valid(&token));
    let accepted = server.log().assertions;
    assert_eq!(accepted.len(), 1);
    assert_client_assertions(&accepted, 30);
    assert_eq!(accepted[0].claims["aud"], origin(&server));
    assert_eq!(accepted[0].header["alg"], "RS256");
    assert!(accepted[0].header.get("kid").is_none());
    assert_eq!(accepted[0].header["x5t"], "hOBcHZi846VCHSJbFAs26Go9VTQ");
}

#[tokio::test]
async fn client_secret_jwt_is_an_hmac_of_the_secret_which_is_never_sent() {
    let server = start(|c| c.register(Client::client_secret_jwt(CLIENT_ID, HS_SECRET))).await;
    let (client, bodies) = recording();
    let grant = ClientCredentialsGrant::new(
        server.token_url().parse().unwrap(),
        ClientAuth::client_secret_jwt(CLIENT_ID, HS_SECRET),
        client,
    );
    grant.fetch(None).await.unwrap();
    grant.fetch(None).await.unwrap();

    let accepted = server.log().assertions;
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
    let server = start(|c| c.register(Client::private_key_jwt(CLIENT_ID, &jwk(&p256())))).await;
    let (client, bodies) = recording();
    let wrong = SigningKey::generate_es256().unwrap();
    let grant = ClientCredentialsGrant::new(
        server.token_url().parse().unwrap(),
        ClientAuth::private_key_jwt(CLIENT_ID, wrong),
        client,
    );
    let err = grant.fetch(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err:?}");
    assert_eq!(err.oauth_error(), Some("invalid_client"));
    assert!(server.log().assertions.is_empty());
    let body = bodies.lock().unwrap()[0].clone();
    let assertion = form_value(&body, "client_assertion").unwrap();
    assert_no_fragment(assertion, &everything_shown(&err));

    // An HS256 secret the server does not share: the same refusal.
    let grant = ClientCredentialsGrant::new(
        server.token_url().parse().unwrap(),
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
    let key = rsa().with_key_id("sa-key");
    let server = start(|c| c.jwt_bearer_issuer(SERVICE_ACCOUNT, &jwk(&key))).await;
    let (client, bodies) = recording();
    let grant = JwtBearerGrant::new(
        server.token_url().parse().unwrap(),
        key,
        SERVICE_ACCOUNT,
        client,
    )
    .subject("user@project.example")
    .claim("scope", "read write")
    .lifetime(Duration::from_secs(600));
    let tokens = TokenManager::builder(grant).build();
    let first = tokens.authorization().await.unwrap();
    let first_token = tokens.current().unwrap().access_token().secret().to_owned();
    assert_eq!(
        first.header().to_str().unwrap(),
        format!("Bearer {first_token}")
    );
    tokens.refresh().await.unwrap();
    let second_token = tokens.current().unwrap().access_token().secret().to_owned();
    assert_ne!(second_token, first_token);
    assert!(server.is_access_token_valid(&second_token));
    assert_eq!(server.stats().jwt_bearer_grants, 2);

    let accepted = server.log().assertions;
    assert_eq!(accepted.len(), 2);
    for a in &accepted {
        assert_eq!(a.param, "assertion");
        assert_eq!(a.header["alg"], "RS256");
        assert_eq!(a.header["kid"], "sa-key");
        assert_eq!(a.claims["iss"], SERVICE_ACCOUNT);
        assert_eq!(a.claims["sub"], "user@project.example");
        assert_eq!(a.claims["aud"], server.token_url());
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
    let sa_key = p256();
    let client_key = rsa();
    let server = start(|c| {
        c.jwt_bearer_issuer(SERVICE_ACCOUNT, &jwk(&sa_key))
            .register(Client::private_key_jwt(CLIENT_ID, &jwk(&client_key)))
    })
    .await;
    let grant = JwtBearerGrant::new(
        server.token_url().parse().unwrap(),
        sa_key,
        SERVICE_ACCOUNT,
        http(),
    )
    .audience(origin(&server))
    .scope("read")
    .client_auth(ClientAuth::private_key_jwt(CLIENT_ID, client_key));
    grant.fetch(None).await.unwrap();
    let accepted = server.log().assertions;
    let params: Vec<&str> = accepted.iter().map(|a| a.param).collect();
    assert_eq!(params, ["client_assertion", "assertion"]);
    assert_eq!(accepted[1].claims["aud"], origin(&server));
}

#[tokio::test]
async fn a_refused_jwt_bearer_assertion_is_rejected_not_a_lost_session() {
    let server = start(|c| c.jwt_bearer_issuer(SERVICE_ACCOUNT, &jwk(&p256()))).await;
    let (client, bodies) = recording();
    let grant = JwtBearerGrant::new(
        server.token_url().parse().unwrap(),
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
