//! Core's OAuth2 clients (client_credentials, fallback chains, introspection,
//! revocation, discovery) against the in-process AuthServer over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tower_token_refresh::{
    ErrorKind, ServiceClient, TokenManager,
    oauth2::{
        ClientAuth, ClientCredentialsGrant, IntrospectionClient, ProviderMetadata,
        RefreshTokenGrant, RevocationClient,
    },
    source::TokenSourceExt,
};
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, AuthStats, Endpoint, Fault, MetadataDocuments, hyper_client,
};

type Http = ServiceClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
>;

fn http() -> Http {
    ServiceClient::new(hyper_client())
}

fn basic(auth: &AuthServer) -> ClientAuth {
    ClientAuth::basic(auth.client_id(), auth.client_secret())
}

#[tokio::test]
async fn client_credentials_gets_a_token_with_basic_and_post_auth() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    for client_auth in [
        basic(&auth),
        ClientAuth::post(auth.client_id(), auth.client_secret()),
    ] {
        let grant =
            ClientCredentialsGrant::new(auth.token_url().parse().unwrap(), client_auth, http())
                .audience("https://api.example");
        let tokens = TokenManager::builder(grant).build();
        let header = tokens.authorization().await.unwrap();
        let token = header
            .header()
            .to_str()
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap()
            .to_owned();
        assert!(auth.is_access_token_valid(&token));
    }
    assert_eq!(auth.stats().client_credentials_grants, 2);
}

#[tokio::test]
async fn a_wrong_client_secret_is_rejected_without_retries() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let grant = ClientCredentialsGrant::new(
        auth.token_url().parse().unwrap(),
        ClientAuth::basic(auth.client_id(), "wrong-secret"),
        http(),
    );
    let err = TokenManager::builder(grant)
        .build()
        .authorization()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert_eq!(err.oauth_error(), Some("invalid_client"));
    assert!(!format!("{err} {err:?}").contains("wrong-secret"));
    assert_eq!(auth.stats().invalid_client, 1);
}

#[tokio::test]
async fn a_revoked_refresh_token_falls_back_to_client_credentials() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let login = auth.login();
    let url = auth.token_url().parse::<http::Uri>().unwrap();
    let hooks = Arc::new(AtomicUsize::new(0));
    let h = hooks.clone();
    let tokens = TokenManager::builder(
        RefreshTokenGrant::new(url.clone(), basic(&auth), http())
            .or_else(ClientCredentialsGrant::new(url, basic(&auth), http())),
    )
    .initial(login.token_set())
    .on_session_expired(move || {
        h.fetch_add(1, Ordering::SeqCst);
    })
    .build();
    auth.revoke(&login.refresh_token);
    tokens.refresh().await.unwrap();
    assert_eq!(
        auth.stats(),
        AuthStats {
            token_requests: 2,
            invalid_grant: 1,
            client_credentials_grants: 1,
            ..AuthStats::default()
        }
    );
    assert_eq!(hooks.load(Ordering::SeqCst), 0);
    assert!(!tokens.is_session_expired());
}

#[tokio::test]
async fn string_expires_in_and_missing_expires_in_are_understood() {
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(Duration::from_secs(60)))
        .await
        .unwrap();
    let grant =
        ClientCredentialsGrant::new(auth.token_url().parse().unwrap(), basic(&auth), http());
    auth.inject(Fault::ExpiresInString, 1);
    auth.inject(Fault::OmitField("expires_in"), 1);
    use tower_token_refresh::TokenSource;
    let with_string = grant.fetch(None).await.unwrap();
    let left = with_string.expires_at().unwrap() - tokio::time::Instant::now();
    assert!(
        left > Duration::from_secs(55) && left <= Duration::from_secs(60),
        "{left:?}"
    );
    // Opaque token, no expires_in: unknown expiry, reactive refresh only.
    let without = grant.fetch(None).await.unwrap();
    assert_eq!(without.expires_at(), None);
}

#[tokio::test]
async fn missing_fields_and_retry_after_give_exact_kinds() {
    use tower_token_refresh::TokenSource;
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let grant =
        ClientCredentialsGrant::new(auth.token_url().parse().unwrap(), basic(&auth), http());
    auth.inject(Fault::OmitField("access_token"), 1);
    auth.inject(Fault::OmitField("token_type"), 1);
    auth.inject(Fault::RetryAfter(429, "7".to_owned()), 1);
    auth.inject(
        Fault::RetryAfter(503, "Fri, 31 Dec 9999 23:59:59 GMT".to_owned()),
        1,
    );
    auth.inject(Fault::Html502, 1);
    let err = grant.fetch(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse);
    let err = grant.fetch(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse);
    let err = grant.fetch(None).await.unwrap_err();
    assert_eq!(
        (err.kind(), err.retry_after()),
        (ErrorKind::Transient, Some(Duration::from_secs(7)))
    );
    assert_eq!(err.oauth_error(), Some("slow_down"));
    let err = grant.fetch(None).await.unwrap_err();
    assert_eq!(
        (err.kind(), err.retry_after()),
        (ErrorKind::Transient, Some(Duration::from_secs(3600)))
    );
    let err = grant.fetch(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.to_string().contains("502"), "{err}");
}

#[tokio::test]
async fn introspection_of_a_revoked_token_triggers_one_refresh() {
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(Duration::from_secs(600)))
        .await
        .unwrap();
    let login = auth.login();
    let tokens = TokenManager::builder(RefreshTokenGrant::new(
        auth.token_url().parse().unwrap(),
        basic(&auth),
        http(),
    ))
    .initial(login.token_set())
    .build();
    let introspection = IntrospectionClient::new(
        auth.introspection_url().parse().unwrap(),
        basic(&auth),
        http(),
    );
    assert!(introspection.check(&tokens).await.unwrap());
    assert_eq!(auth.stats().refresh_grants, 0);

    // Revoked before its expiry: only introspection can tell.
    auth.revoke(&login.access_token);
    let info = introspection
        .introspect(&login.access_token, None)
        .await
        .unwrap();
    assert!(!info.active);
    assert!(!introspection.check(&tokens).await.unwrap());
    assert_eq!(auth.stats().refresh_grants, 1);
    let now = tokens.current().unwrap();
    assert!(auth.is_access_token_valid(now.access_token().secret()));
    assert!(introspection.check(&tokens).await.unwrap());
    assert_eq!(auth.stats().introspections, 4);
}

#[tokio::test(start_paused = true)]
async fn logout_revokes_both_tokens_retrying_503_then_ends_the_session() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let login = auth.login();
    let hooks = Arc::new(AtomicUsize::new(0));
    let h = hooks.clone();
    let tokens = TokenManager::builder(RefreshTokenGrant::new(
        auth.token_url().parse().unwrap(),
        basic(&auth),
        http(),
    ))
    .initial(login.token_set())
    .on_session_expired(move || {
        h.fetch_add(1, Ordering::SeqCst);
    })
    .build();
    auth.inject_at(Endpoint::Revocation, Fault::TemporarilyUnavailable, 2);
    let revocation =
        RevocationClient::new(auth.revocation_url().parse().unwrap(), basic(&auth), http());
    let started = tokio::time::Instant::now();
    revocation.logout(&tokens).await.unwrap();
    // 500 ms, then 1 s of backoff before the third attempt got through.
    assert_eq!(started.elapsed(), Duration::from_millis(1500));
    let stats = auth.stats();
    // Two 503s, then the refresh token (which took its grant's access token
    // with it, RFC 7009 §2.1), then the access token, already dead.
    assert_eq!((stats.revocation_requests, stats.tokens_revoked), (4, 1));
    assert!(!auth.is_refresh_token_active(&login.refresh_token));
    assert!(!auth.is_access_token_valid(&login.access_token));
    assert!(tokens.is_session_expired());
    assert_eq!(hooks.load(Ordering::SeqCst), 1);
    assert_eq!(
        tokens.authorization().await.unwrap_err().kind(),
        ErrorKind::SessionExpired
    );
}

#[tokio::test(start_paused = true)]
async fn revocation_gives_up_after_its_attempts_but_the_session_still_ends() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let login = auth.login();
    let tokens = TokenManager::builder(RefreshTokenGrant::new(
        auth.token_url().parse().unwrap(),
        basic(&auth),
        http(),
    ))
    .initial(login.token_set())
    .build();
    auth.inject_at(Endpoint::Revocation, Fault::TemporarilyUnavailable, 100);
    let revocation =
        RevocationClient::new(auth.revocation_url().parse().unwrap(), basic(&auth), http())
            .retry(3, Duration::from_millis(100));
    let err = revocation.logout(&tokens).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_eq!(auth.stats().revocation_requests, 6);
    assert!(tokens.is_session_expired());
    // Revoking an unknown token is a 200 (RFC 7009 §2.2).
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let revocation =
        RevocationClient::new(auth.revocation_url().parse().unwrap(), basic(&auth), http());
    revocation.revoke("no-such-token", None).await.unwrap();
}

#[tokio::test]
async fn discovery_finds_every_endpoint_and_its_grants_work() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let metadata = ProviderMetadata::discover(&auth.issuer(), &http())
        .await
        .unwrap();
    assert_eq!(metadata.issuer(), auth.issuer());
    assert_eq!(metadata.token_endpoint().to_string(), auth.token_url());
    assert_eq!(
        metadata.introspection_endpoint().map(ToString::to_string),
        Some(auth.introspection_url())
    );
    assert_eq!(
        metadata.revocation_endpoint().map(ToString::to_string),
        Some(auth.revocation_url())
    );
    let login = auth.login();
    let tokens = TokenManager::builder(metadata.refresh_token_grant(basic(&auth), http()))
        .initial(login.token_set())
        .build();
    tokens.refresh().await.unwrap();
    assert_eq!(auth.stats().refresh_grants, 1);
    let introspection = metadata.introspection_client(basic(&auth), http()).unwrap();
    assert!(introspection.check(&tokens).await.unwrap());
}

/// Discovers `auth`'s metadata and uses it: checks the issuer and token
/// endpoint, refreshes through the discovered token endpoint, and
/// introspects the new token if an introspection endpoint was found.
async fn discover_and_use(auth: &AuthServer) -> ProviderMetadata {
    let metadata = ProviderMetadata::discover(&auth.issuer(), &http())
        .await
        .unwrap();
    assert_eq!(metadata.issuer(), auth.issuer());
    assert_eq!(metadata.token_endpoint().to_string(), auth.token_url());
    let tokens = TokenManager::builder(metadata.refresh_token_grant(basic(auth), http()))
        .initial(auth.login().token_set())
        .build();
    tokens.refresh().await.unwrap();
    assert_eq!(auth.stats().refresh_grants, 1);
    if let Some(introspection) = metadata.introspection_client(basic(auth), http()) {
        assert!(introspection.check(&tokens).await.unwrap());
        assert_eq!(auth.stats().introspections, 1);
    }
    metadata
}

fn endpoints(metadata: &ProviderMetadata) -> (Option<String>, Option<String>) {
    (
        metadata.introspection_endpoint().map(ToString::to_string),
        metadata.revocation_endpoint().map(ToString::to_string),
    )
}

/// The grants test-util's server serves, as its OpenID Connect document
/// lists them.
const GRANT_TYPES: [&str; 5] = [
    "refresh_token",
    "client_credentials",
    "authorization_code",
    "urn:ietf:params:oauth:grant-type:device_code",
    "urn:ietf:params:oauth:grant-type:jwt-bearer",
];

#[tokio::test]
async fn discovery_reads_an_rfc_8414_document_alone() {
    let config = AuthConfig::default().metadata(MetadataDocuments::OAuthOnly);
    let auth = AuthServer::start(config).await.unwrap();
    let metadata = discover_and_use(&auth).await;
    assert_eq!(
        endpoints(&metadata),
        (Some(auth.introspection_url()), Some(auth.revocation_url()))
    );
    // Only the OpenID Connect document has it.
    assert!(metadata.grant_types_supported().is_empty());
}

#[tokio::test]
async fn discovery_reads_an_openid_configuration_alone() {
    let config = AuthConfig::default().metadata(MetadataDocuments::OpenIdOnly);
    let auth = AuthServer::start(config).await.unwrap();
    let metadata = discover_and_use(&auth).await;
    assert_eq!(
        endpoints(&metadata),
        (Some(auth.introspection_url()), Some(auth.revocation_url()))
    );
    assert_eq!(metadata.grant_types_supported(), GRANT_TYPES);
}

#[tokio::test]
async fn discovery_merges_both_documents_field_by_field() {
    // Introspection and revocation only in RFC 8414's document,
    // grant_types_supported only in the OpenID Connect one.
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let metadata = discover_and_use(&auth).await;
    assert_eq!(
        endpoints(&metadata),
        (Some(auth.introspection_url()), Some(auth.revocation_url()))
    );
    assert_eq!(metadata.grant_types_supported(), GRANT_TYPES);
    let revocation = metadata.revocation_client(basic(&auth), http()).unwrap();
    revocation.revoke("no-such-token", None).await.unwrap();
    assert_eq!(auth.stats().revocation_requests, 1);
}

#[tokio::test]
async fn discovery_of_an_issuer_with_a_path_uses_both_well_known_placements() {
    for documents in [
        MetadataDocuments::OAuthOnly,
        MetadataDocuments::OpenIdOnly,
        MetadataDocuments::Both,
    ] {
        let config = AuthConfig::default()
            .issuer_path("tenant1")
            .metadata(documents);
        let auth = AuthServer::start(config).await.unwrap();
        assert!(auth.issuer().ends_with("/tenant1"));
        let metadata = discover_and_use(&auth).await;
        assert_eq!(
            endpoints(&metadata),
            (Some(auth.introspection_url()), Some(auth.revocation_url())),
            "{documents:?}"
        );
        // The issuer without its path is another issuer, whose documents
        // the server does not publish.
        let origin = format!("http://{}", auth.addr());
        let err = ProviderMetadata::discover(&origin, &http())
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidResponse,
            "{documents:?}: {err}"
        );
    }
}

#[tokio::test]
async fn discovery_refuses_a_document_naming_another_issuer() {
    // A trailing `/` after a path is another issuer (RFC 8414 §3.3): both
    // documents are at the same URLs, and both name the issuer without it.
    for documents in [
        MetadataDocuments::OAuthOnly,
        MetadataDocuments::OpenIdOnly,
        MetadataDocuments::Both,
    ] {
        let config = AuthConfig::default()
            .issuer_path("tenant1")
            .metadata(documents);
        let auth = AuthServer::start(config).await.unwrap();
        let err = ProviderMetadata::discover(&format!("{}/", auth.issuer()), &http())
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidResponse,
            "{documents:?}: {err}"
        );
        assert!(err.to_string().contains("names another issuer"), "{err}");
    }
    // One document naming another issuer taints the pair, even when the
    // other is right: the RFC 8414 one here points at an impostor.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let issuer = format!("http://{addr}");
    let impostor =
        format!(r#"{{"issuer":"http://{addr}/evil","token_endpoint":"http://{addr}/evil/token"}}"#);
    let genuine = format!(r#"{{"issuer":"{issuer}","token_endpoint":"{issuer}/token"}}"#);
    let app = axum::Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            axum::routing::get(move || async move { impostor }),
        )
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { genuine }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let err = ProviderMetadata::discover(&issuer, &http())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{err}");
    assert!(
        err.to_string()
            .contains("authorization server metadata names another issuer"),
        "{err}"
    );
}

/// The refresh grant's error when its token endpoint is at `url`.
async fn refresh_error(url: &str, auth: &AuthServer) -> tower_token_refresh::Error {
    use tower_token_refresh::TokenSource;
    let grant = RefreshTokenGrant::new(url.parse().unwrap(), basic(auth), http());
    grant
        .fetch(Some(&auth.login().token_set()))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_refused_connection_is_not_an_unknown_outcome() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    // A port that was just free: nothing listens there now.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = refresh_error(&format!("http://{closed}/token"), &auth).await;
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(!err.is_outcome_unknown(), "{err:?}");
}

#[tokio::test]
async fn a_connection_dropped_after_the_request_is_an_unknown_outcome() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    auth.inject(Fault::DropConnection, 1);
    let err = refresh_error(&auth.token_url(), &auth).await;
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.is_outcome_unknown(), "{err:?}");
    // The request did arrive: the server could have carried it out.
    assert_eq!(auth.stats().token_requests, 1);
    assert_eq!(auth.stats().faults_served, 1);
}

#[tokio::test]
async fn a_503_answer_is_not_an_unknown_outcome() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    auth.inject(Fault::Status(503), 1);
    let err = refresh_error(&auth.token_url(), &auth).await;
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(!err.is_outcome_unknown(), "{err:?}");
    assert_eq!(auth.stats().faults_served, 1);
}

#[tokio::test]
async fn a_dropped_client_credentials_request_is_not_an_unknown_outcome() {
    use tower_token_refresh::TokenSource;
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    auth.inject(Fault::DropConnection, 1);
    let grant =
        ClientCredentialsGrant::new(auth.token_url().parse().unwrap(), basic(&auth), http());
    let err = grant.fetch(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    // No refresh token at stake: asking again costs nothing.
    assert!(!err.is_outcome_unknown(), "{err:?}");
    assert_eq!(auth.stats().faults_served, 1);
}
