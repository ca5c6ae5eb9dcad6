//! Refresh tokens, client secrets and the tokens sent for introspection or
//! revocation go over TLS, or over cleartext only to loopback, and a
//! discovery document cannot downgrade where they go. Refusals happen before
//! the request leaves: the server sees nothing.
//!
//! `auth.example.test` is pointed at an in-process server on 127.0.0.1 by
//! the client (as a DNS entry or a TLS-terminating proxy would), so an
//! unrefused request really arrives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{Router, routing::get};
use bytes::Bytes;
use http::Request;
use tower_token_refresh::{
    ErrorKind, ServiceClient, TokenManager, TokenSet,
    oauth2::{
        ClientAuth, ClientCredentialsGrant, HttpClient, IntrospectionClient, ProviderMetadata,
        RefreshTokenGrant, RevocationClient, TokenTypeHint,
    },
};
use tower_token_refresh_test_util::{AuthConfig, AuthServer, AuthStats, hyper_client};

const HOST: &str = "auth.example.test";

/// A real hyper client that sends every request, whatever its scheme and
/// host, to `addr` over plain HTTP.
fn pointing_at(addr: SocketAddr) -> impl HttpClient + Clone {
    let http = Arc::new(ServiceClient::new(hyper_client()));
    move |mut request: Request<Bytes>| {
        let http = Arc::clone(&http);
        async move {
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            *request.uri_mut() = format!("http://{addr}{path}").parse()?;
            http.send(request).await
        }
    }
}

fn url(path: &str) -> http::Uri {
    format!("http://{HOST}{path}").parse().unwrap()
}

fn basic(auth: &AuthServer) -> ClientAuth {
    ClientAuth::basic(auth.client_id(), auth.client_secret())
}

fn nothing_seen(auth: &AuthServer) {
    assert_eq!(
        auth.stats(),
        AuthStats::default(),
        "the server saw a request"
    );
}

#[tokio::test]
async fn a_refresh_grant_over_cleartext_to_a_remote_host_is_refused_before_it_is_sent() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let grant = RefreshTokenGrant::new(url("/token"), basic(&auth), pointing_at(auth.addr()));
    let tokens = TokenManager::builder(grant)
        .initial(auth.login().token_set())
        .max_attempts(1)
        .build();
    let err = tokens.refresh().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy, "{err:?}");
    nothing_seen(&auth);
    // Not a session end: the refresh token was never presented.
    assert!(!tokens.is_session_expired());
}

#[tokio::test]
async fn a_client_credentials_grant_over_cleartext_to_a_remote_host_is_refused_before_it_is_sent() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let grant = ClientCredentialsGrant::new(url("/token"), basic(&auth), pointing_at(auth.addr()));
    let tokens = TokenManager::builder(grant).max_attempts(1).build();
    let err = tokens.authorization().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy, "{err:?}");
    nothing_seen(&auth);
}

#[tokio::test]
async fn introspection_over_cleartext_to_a_remote_host_is_refused_before_it_is_sent() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let client =
        IntrospectionClient::new(url("/introspect"), basic(&auth), pointing_at(auth.addr()));
    let err = client
        .introspect(&auth.login().access_token, Some(TokenTypeHint::AccessToken))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy, "{err:?}");
    nothing_seen(&auth);
}

#[tokio::test]
async fn revocation_over_cleartext_to_a_remote_host_is_refused_before_it_is_sent() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let client = RevocationClient::new(url("/revoke"), basic(&auth), pointing_at(auth.addr()));
    let login = auth.login();
    let err = client
        .revoke(&login.refresh_token, Some(TokenTypeHint::RefreshToken))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy, "{err:?}");
    nothing_seen(&auth);
    // Logout still ends the session locally, and reports the refusal.
    let tokens = TokenManager::builder(tower_token_refresh::source::from_fn(|_| async {
        Ok(TokenSet::bearer("unused"))
    }))
    .initial(login.token_set())
    .build();
    let err = client.logout(&tokens).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy);
    assert!(tokens.is_session_expired());
    nothing_seen(&auth);
}

#[tokio::test]
async fn allow_cleartext_lets_each_endpoint_reach_a_remote_development_server() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let http = pointing_at(auth.addr());
    let login = auth.login();

    let grant =
        RefreshTokenGrant::new(url("/token"), basic(&auth), http.clone()).allow_cleartext(true);
    let tokens = TokenManager::builder(grant)
        .initial(login.token_set())
        .build();
    tokens.refresh().await.unwrap();
    assert_eq!(auth.stats().refresh_grants, 1);

    let grant = ClientCredentialsGrant::new(url("/token"), basic(&auth), http.clone())
        .allow_cleartext(true);
    TokenManager::builder(grant)
        .build()
        .authorization()
        .await
        .unwrap();
    assert_eq!(auth.stats().client_credentials_grants, 1);

    let introspection = IntrospectionClient::new(url("/introspect"), basic(&auth), http.clone())
        .allow_cleartext(true);
    let current = tokens.current().unwrap();
    assert!(
        introspection
            .introspect(current.access_token().secret(), None)
            .await
            .unwrap()
            .active
    );
    assert_eq!(auth.stats().introspections, 1);

    let revocation =
        RevocationClient::new(url("/revoke"), basic(&auth), http).allow_cleartext(true);
    revocation
        .revoke(current.access_token().secret(), None)
        .await
        .unwrap();
    assert_eq!(auth.stats().tokens_revoked, 1);
}

/// A discovery endpoint serving `document`, counting its requests.
async fn discovery_server(document: String) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let app = Router::new().route(
        "/.well-known/openid-configuration",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let document = document.clone();
            async move { ([(http::header::CONTENT_TYPE, "application/json")], document) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

#[tokio::test]
async fn an_https_issuer_cannot_send_secrets_to_a_cleartext_endpoint() {
    for (field, value) in [
        ("token_endpoint", format!("http://{HOST}/token")),
        (
            "introspection_endpoint",
            format!("http://{HOST}/introspect"),
        ),
        ("revocation_endpoint", "http://127.0.0.1/revoke".to_owned()),
    ] {
        let token_endpoint = if field == "token_endpoint" {
            value.clone()
        } else {
            format!("https://{HOST}/token")
        };
        let mut document =
            format!(r#"{{"issuer":"https://{HOST}","token_endpoint":"{token_endpoint}""#);
        if field != "token_endpoint" {
            document.push_str(&format!(r#","{field}":"{value}""#));
        }
        document.push('}');
        let (addr, hits) = discovery_server(document).await;
        let issuer = format!("https://{HOST}");
        for allowing_cleartext in [false, true] {
            let found = if allowing_cleartext {
                ProviderMetadata::discover_allowing_cleartext(&issuer, &pointing_at(addr)).await
            } else {
                ProviderMetadata::discover(&issuer, &pointing_at(addr)).await
            };
            let err = found.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Policy, "{field} {value}: {err:?}");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 2, "the document was fetched");
    }
}

#[tokio::test]
async fn a_cleartext_issuer_on_a_remote_host_is_not_asked_for_its_document() {
    let (addr, hits) = discovery_server(format!(
        r#"{{"issuer":"http://{HOST}","token_endpoint":"http://{HOST}/token"}}"#
    ))
    .await;
    let err = ProviderMetadata::discover(&format!("http://{HOST}"), &pointing_at(addr))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy, "{err:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the server saw a request");
}

#[tokio::test]
async fn discovery_allowing_cleartext_builds_clients_that_allow_it() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let (addr, _) = discovery_server(format!(
        r#"{{"issuer":"http://{HOST}","token_endpoint":"http://{HOST}/token"}}"#
    ))
    .await;
    let metadata = ProviderMetadata::discover_allowing_cleartext(
        &format!("http://{HOST}"),
        &pointing_at(addr),
    )
    .await
    .unwrap();
    assert!(metadata.allows_cleartext());
    let grant = metadata.refresh_token_grant(basic(&auth), pointing_at(auth.addr()));
    let tokens = TokenManager::builder(grant)
        .initial(auth.login().token_set())
        .build();
    tokens.refresh().await.unwrap();
    assert_eq!(auth.stats().refresh_grants, 1);
}

#[tokio::test]
async fn a_loopback_token_url_needs_no_opt_in() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let port = auth.addr().port();
        let grant = ClientCredentialsGrant::new(
            format!("http://{host}:{port}/token").parse().unwrap(),
            basic(&auth),
            ServiceClient::new(hyper_client()),
        );
        TokenManager::builder(grant)
            .build()
            .authorization()
            .await
            .unwrap();
    }
    assert_eq!(auth.stats().client_credentials_grants, 2);
}
