//! Token exchange (RFC 8693) and the JWT bearer grant with an outside
//! assertion, chained the way enterprise-managed authorization chains them
//! (an ID token exchanged at the identity provider for an ID-JAG, the
//! ID-JAG presented at the authorization server), against two token
//! endpoints on 127.0.0.1 over real HTTP.
//!
//! The two endpoints are small axum routes of this file: they check every
//! form field the chain must send and keep what they were sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use serde_json::json;
use tower_token_refresh::{
    ErrorKind, ServiceClient, TokenManager, TokenSet,
    oauth2::{
        AssertionGrant, ClientAuth, ResourceIndicator, TokenExchangeGrant,
        token_exchange::token_type,
    },
    source,
};
use tower_token_refresh_test_util::hyper_client;

const ID_TOKEN: &str = "id-token-of-ann";
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

/// What the two endpoints saw and how they answer.
#[derive(Default)]
struct Ledger {
    exchanges: Vec<HashMap<String, String>>,
    grants: Vec<(HashMap<String, String>, Option<String>)>,
    /// ID-JAGs issued and not yet presented.
    live_jags: Vec<String>,
    /// The authorization server refuses the next assertion.
    refuse_next: bool,
}

type Shared = Arc<Mutex<Ledger>>;

fn form(body: &str) -> HashMap<String, String> {
    form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn oauth_error(code: &str) -> (StatusCode, Json<serde_json::Value>) {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": code })))
}

/// The identity provider's token endpoint: exchanges Ann's ID token for an
/// ID-JAG for the authorization server, and nothing else.
async fn idp_token(
    State(ledger): State<Shared>,
    body: String,
) -> (StatusCode, Json<serde_json::Value>) {
    let form = form(&body);
    let mut ledger = ledger.lock().unwrap();
    ledger.exchanges.push(form.clone());
    let field = |name: &str| form.get(name).map(String::as_str);
    if field("grant_type") != Some("urn:ietf:params:oauth:grant-type:token-exchange") {
        return oauth_error("unsupported_grant_type");
    }
    if field("subject_token") != Some(ID_TOKEN)
        || field("subject_token_type") != Some(token_type::ID_TOKEN)
    {
        // Echoes the token it refuses, as careless servers do.
        let description = format!("unknown subject {}", field("subject_token").unwrap_or(""));
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_grant", "error_description": description })),
        );
    }
    if field("requested_token_type") != Some(token_type::ID_JAG)
        || field("audience") != Some(AS_ISSUER)
        || field("resource") != Some(RESOURCE)
    {
        return oauth_error("invalid_target");
    }
    let jag = format!("jag-{}", ledger.exchanges.len());
    ledger.live_jags.push(jag.clone());
    (
        StatusCode::OK,
        Json(json!({
            "access_token": jag,
            "issued_token_type": token_type::ID_JAG,
            "token_type": "N_A",
            "expires_in": 300,
        })),
    )
}

/// The authorization server's token endpoint: a JWT bearer grant with an
/// ID-JAG the identity provider issued, presented once, by the client with
/// its Basic credentials.
async fn as_token(
    State(ledger): State<Shared>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<serde_json::Value>) {
    let form = form(&body);
    let mut ledger = ledger.lock().unwrap();
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    ledger.grants.push((form.clone(), basic.clone()));
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return oauth_error("unsupported_grant_type");
    }
    // base64("mcp-client:mcp-secret")
    if basic.as_deref() != Some("Basic bWNwLWNsaWVudDptY3Atc2VjcmV0") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "invalid_client" })),
        );
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error("invalid_request");
    };
    let Some(at) = ledger.live_jags.iter().position(|j| j == assertion) else {
        return oauth_error("invalid_grant");
    };
    // An ID-JAG is good once.
    ledger.live_jags.remove(at);
    if std::mem::take(&mut ledger.refuse_next) {
        return oauth_error("invalid_grant");
    }
    (
        StatusCode::OK,
        Json(json!({
            "access_token": format!("at-for-{assertion}"),
            "token_type": "Bearer",
            "expires_in": 3600,
        })),
    )
}

/// Both endpoints on one listener: `/idp/token` and `/as/token`.
async fn servers() -> (String, Shared) {
    let ledger = Shared::default();
    let app = Router::new()
        .route("/idp/token", post(idp_token))
        .route("/as/token", post(as_token))
        .with_state(ledger.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (origin, ledger)
}

fn id_jag_exchange(origin: &str, subject: &'static str) -> TokenExchangeGrant<Http> {
    TokenExchangeGrant::new(
        format!("{origin}/idp/token").parse().unwrap(),
        ClientAuth::post("idp-client", "idp-secret"),
        token_type::ID_TOKEN,
        source::from_fn(move |_| async move { Ok(TokenSet::bearer(subject)) }),
        http(),
    )
    .requested_token_type(token_type::ID_JAG)
    .audience(AS_ISSUER)
    .resource(ResourceIndicator::new(RESOURCE).unwrap())
}

fn chain(origin: &str, subject: &'static str) -> AssertionGrant<Http> {
    AssertionGrant::new(
        format!("{origin}/as/token").parse().unwrap(),
        id_jag_exchange(origin, subject),
        http(),
    )
    .client_auth(ClientAuth::basic("mcp-client", "mcp-secret"))
}

#[tokio::test]
async fn an_id_token_becomes_an_id_jag_and_the_id_jag_an_access_token() {
    let (origin, ledger) = servers().await;
    let tokens = TokenManager::builder(chain(&origin, ID_TOKEN)).build();

    let authorization = tokens.authorization().await.unwrap();
    assert_eq!(
        authorization.header().to_str().unwrap(),
        "Bearer at-for-jag-1"
    );

    let ledger = ledger.lock().unwrap();
    assert_eq!(ledger.exchanges.len(), 1);
    let exchange = &ledger.exchanges[0];
    assert_eq!(exchange["subject_token"], ID_TOKEN);
    assert_eq!(exchange["subject_token_type"], token_type::ID_TOKEN);
    assert_eq!(exchange["requested_token_type"], token_type::ID_JAG);
    assert_eq!(exchange["audience"], AS_ISSUER);
    assert_eq!(exchange["resource"], RESOURCE);
    assert_eq!(exchange["client_id"], "idp-client");
    assert!(!exchange.contains_key("actor_token"));
    assert_eq!(ledger.grants.len(), 1);
    assert_eq!(ledger.grants[0].0["assertion"], "jag-1");
    assert!(ledger.live_jags.is_empty(), "the ID-JAG was presented");
}

#[tokio::test]
async fn a_refused_assertion_is_rejected_and_the_next_fetch_exchanges_again() {
    let (origin, ledger) = servers().await;
    ledger.lock().unwrap().refuse_next = true;
    let grant = chain(&origin, ID_TOKEN);

    let err = tower_token_refresh::TokenSource::fetch(&grant, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err:?}");
    assert_eq!(err.oauth_error(), Some("invalid_grant"));

    // A new ID-JAG, not the refused one again.
    let tokens = tower_token_refresh::TokenSource::fetch(&grant, None)
        .await
        .unwrap();
    assert_eq!(tokens.access_token().secret(), "at-for-jag-2");
    let ledger = ledger.lock().unwrap();
    let presented: Vec<&str> = ledger
        .grants
        .iter()
        .map(|(form, _)| form["assertion"].as_str())
        .collect();
    assert_eq!(presented, ["jag-1", "jag-2"]);
}

#[tokio::test]
async fn a_refused_subject_token_is_rejected_and_never_reaches_the_error() {
    let (origin, ledger) = servers().await;
    let grant = chain(&origin, "someone-elses-id-token");

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
    assert!(ledger.lock().unwrap().grants.is_empty());
}

#[tokio::test]
async fn an_actor_token_goes_with_its_type() {
    let (origin, ledger) = servers().await;
    let exchange = id_jag_exchange(&origin, ID_TOKEN).actor(
        token_type::ACCESS_TOKEN,
        source::from_fn(|_| async { Ok(TokenSet::bearer("agent-token")) }),
    );
    tower_token_refresh::TokenSource::fetch(&exchange, None)
        .await
        .unwrap();
    let ledger = ledger.lock().unwrap();
    assert_eq!(ledger.exchanges[0]["actor_token"], "agent-token");
    assert_eq!(
        ledger.exchanges[0]["actor_token_type"],
        token_type::ACCESS_TOKEN
    );
}

#[tokio::test]
async fn a_subject_that_cannot_be_had_sends_nothing() {
    let (origin, ledger) = servers().await;
    let exchange = TokenExchangeGrant::new(
        format!("{origin}/idp/token").parse().unwrap(),
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
    assert!(ledger.lock().unwrap().exchanges.is_empty());
}
