//! Token exchange (RFC 8693) and the JWT bearer grant with an outside
//! assertion, chained the way enterprise-managed authorization chains them
//! (an ID token exchanged at the identity provider for an ID-JAG, the
//! ID-JAG presented at the authorization server), over real HTTP.
//!
//! test-util's `AuthServer` plays both parts with its token exchange
//! switch: it takes Ann's ID token from the identity provider's client,
//! for its own issuer and one resource, and the ID-JAG it issues from the
//! authorization server's client, once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tower_token_refresh::{
    ErrorKind, ServiceClient, TokenManager, TokenSet,
    oauth2::{
        AssertionGrant, ClientAuth, ResourceIndicator, TokenExchangeGrant,
        token_exchange::token_type,
    },
    source,
};
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, Client, Echo, Fault, TokenExchange, hyper_client,
};

const ID_TOKEN: &str = "id-token-of-ann";
/// The audience the identity provider issues ID-JAGs for.
const AS_ISSUER: &str = "https://auth.example.com";
const RESOURCE: &str = "https://mcp.example.com/mcp";

type Http = ServiceClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
>;

fn http() -> Http {
    ServiceClient::new(hyper_client())
}

/// The identity provider and the authorization server, in one.
async fn servers() -> AuthServer {
    let exchange = TokenExchange::new()
        .id_token(ID_TOKEN)
        .audience(AS_ISSUER)
        .resource(RESOURCE);
    AuthServer::start(
        AuthConfig::default()
            .register(Client::secret("idp-client", "idp-secret"))
            .register(Client::secret("mcp-client", "mcp-secret"))
            .token_exchange(exchange),
    )
    .await
    .unwrap()
}

fn id_jag_exchange(auth: &AuthServer, subject: &'static str) -> TokenExchangeGrant<Http> {
    TokenExchangeGrant::new(
        auth.token_url().parse().unwrap(),
        ClientAuth::post("idp-client", "idp-secret"),
        token_type::ID_TOKEN,
        source::from_fn(move |_| async move { Ok(TokenSet::bearer(subject)) }),
        http(),
    )
    .requested_token_type(token_type::ID_JAG)
    .audience(AS_ISSUER)
    .resource(ResourceIndicator::new(RESOURCE).unwrap())
}

fn chain(auth: &AuthServer, subject: &'static str) -> AssertionGrant<Http> {
    AssertionGrant::new(
        auth.token_url().parse().unwrap(),
        id_jag_exchange(auth, subject),
        http(),
    )
    .client_auth(ClientAuth::basic("mcp-client", "mcp-secret"))
}

#[tokio::test]
async fn an_id_token_becomes_an_id_jag_and_the_id_jag_an_access_token() {
    let auth = servers().await;
    let tokens = TokenManager::builder(chain(&auth, ID_TOKEN)).build();

    let authorization = tokens.authorization().await.unwrap();
    let header = authorization.header().to_str().unwrap().to_owned();
    let access_token = header.strip_prefix("Bearer ").unwrap();
    assert!(auth.is_access_token_valid(access_token));

    let log = auth.log();
    assert_eq!(log.token_requests.len(), 2);
    let exchange = &log.token_requests[0];
    assert_eq!(exchange.get("subject_token"), ID_TOKEN);
    assert_eq!(exchange.get("subject_token_type"), token_type::ID_TOKEN);
    assert_eq!(exchange.get("requested_token_type"), token_type::ID_JAG);
    assert_eq!(exchange.get("audience"), AS_ISSUER);
    assert_eq!(exchange.get("resource"), RESOURCE);
    assert_eq!(exchange.get("client_id"), "idp-client");
    assert!(!exchange.params.contains_key("actor_token"));
    let grant = &log.token_requests[1];
    assert_eq!(
        grant.get("grant_type"),
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    );
    // base64("mcp-client:mcp-secret")
    assert_eq!(
        grant.authorization.as_deref(),
        Some("Basic bWNwLWNsaWVudDptY3Atc2VjcmV0")
    );
    assert!(grant.get("assertion").starts_with("jag_"));
    assert!(!auth.has_live_id_jags(), "the ID-JAG was presented");
    let stats = auth.stats();
    assert_eq!((stats.token_exchanges, stats.jwt_bearer_grants), (1, 1));
}

#[tokio::test]
async fn a_refused_assertion_is_rejected_and_the_next_fetch_exchanges_again() {
    let auth = servers().await;
    // The exchange is served; the grant after it refused.
    auth.inject(Fault::Delay(std::time::Duration::ZERO), 1);
    auth.inject(Fault::InvalidGrant, 1);
    let grant = chain(&auth, ID_TOKEN);

    let err = tower_token_refresh::TokenSource::fetch(&grant, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err:?}");
    assert_eq!(err.oauth_error(), Some("invalid_grant"));

    // A new ID-JAG, not the refused one again.
    let tokens = tower_token_refresh::TokenSource::fetch(&grant, None)
        .await
        .unwrap();
    assert!(auth.is_access_token_valid(tokens.access_token().secret()));
    let stats = auth.stats();
    assert_eq!((stats.token_exchanges, stats.jwt_bearer_grants), (2, 1));
    // The refused ID-JAG never reached the grant (the fault answered
    // first) and was not presented again: it is the one still live.
    assert!(auth.has_live_id_jags());
}

#[tokio::test]
async fn an_unknown_subject_token_is_refused_by_the_identity_provider() {
    let auth = servers().await;
    let err =
        tower_token_refresh::TokenSource::fetch(&chain(&auth, "someone-elses-id-token"), None)
            .await
            .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err:?}");
    assert!(format!("{err:?}").contains("invalid_grant"), "{err:?}");
    let stats = auth.stats();
    assert_eq!((stats.token_requests, stats.invalid_grant), (1, 1));
}

#[tokio::test]
async fn a_refused_subject_token_is_rejected_and_never_reaches_the_error() {
    let auth = servers().await;
    // Refused by a careless server, which echoes the token it refuses.
    let echo = Echo::json(400).error("invalid_grant").body_only().decoded();
    auth.inject(Fault::Echo(echo), 1);
    let grant = chain(&auth, "someone-elses-id-token");

    let err = tower_token_refresh::TokenSource::fetch(&grant, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err:?}");
    let mut shown = format!("{err} {err:?} {grant:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        shown.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    assert!(shown.contains("invalid_grant"), "{shown}");
    assert!(!shown.contains("someone-elses-id-token"), "{shown}");
    // The authorization server saw nothing.
    assert_eq!(auth.stats().token_requests, 1);
}

#[tokio::test]
async fn an_actor_token_goes_with_its_type() {
    let auth = servers().await;
    let exchange = id_jag_exchange(&auth, ID_TOKEN).actor(
        token_type::ACCESS_TOKEN,
        source::from_fn(|_| async { Ok(TokenSet::bearer("agent-token")) }),
    );
    tower_token_refresh::TokenSource::fetch(&exchange, None)
        .await
        .unwrap();
    let log = auth.log();
    assert_eq!(log.token_requests[0].get("actor_token"), "agent-token");
    assert_eq!(
        log.token_requests[0].get("actor_token_type"),
        token_type::ACCESS_TOKEN
    );
}

#[tokio::test]
async fn a_subject_that_cannot_be_had_sends_nothing() {
    let auth = servers().await;
    let exchange = TokenExchangeGrant::new(
        auth.token_url().parse().unwrap(),
        ClientAuth::post("idp-client", "idp-secret"),
        token_type::JWT,
        source::from_fn(|_| async {
            Err(tower_token_refresh::Error::new(
                ErrorKind::Transient,
                "the platform's token file is missing",
            ))
        }),
        http(),
    );
    let err = tower_token_refresh::TokenSource::fetch(&exchange, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.to_string().contains("subject token"), "{err}");
    assert_eq!(auth.stats().token_requests, 0);
}
