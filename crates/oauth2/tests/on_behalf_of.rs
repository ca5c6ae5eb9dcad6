//! `OnBehalfOf` against test-util's `AuthServer` with token exchange
//! switched on, over real HTTP: the cache key (subject, audience), single
//! flight, expiry, failures and the bound on entries.
//!
//! The server counts what it served (`token_exchanges`, `token_requests`)
//! and tells which subject each exchanged token was issued for
//! (`AuthServer::exchanged`): a hit is a request it never saw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::future::join_all;
use tower_token_refresh::{
    ErrorKind, ServiceClient,
    oauth2::{ClientAuth, Downstream, ErrorCode, OnBehalfOf, token_exchange::token_type},
};
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, Fault, Gate, TokenExchange, hyper_client, until,
};

type Http = ServiceClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
>;

const ORDERS: &str = "https://orders.example.com";
const BILLING: &str = "https://billing.example.com";

/// Tokens live an hour unless a test says otherwise.
async fn server() -> AuthServer {
    let config = AuthConfig::default()
        .access_lifetime(Duration::from_secs(3600))
        .token_exchange(TokenExchange::new());
    AuthServer::start(config).await.unwrap()
}

fn on_behalf_of(auth: &AuthServer) -> OnBehalfOf<Http> {
    OnBehalfOf::new(
        auth.token_url().parse().unwrap(),
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(hyper_client()),
    )
}

fn to(audience: &str) -> Downstream {
    Downstream::new().audience(audience).scope("read")
}

#[tokio::test]
async fn the_same_subject_and_audience_are_served_from_the_cache() {
    let auth = server().await;
    let obo = on_behalf_of(&auth);
    let ann = auth.login().access_token;

    let first = obo.token(&ann, &to(ORDERS)).await.unwrap();
    let second = obo.token(&ann, &to(ORDERS)).await.unwrap();

    assert_eq!(
        first.access_token().secret(),
        second.access_token().secret()
    );
    assert_eq!(auth.stats().token_exchanges, 1);
    let issued = auth.exchanged(first.access_token().secret()).unwrap();
    assert_eq!(issued.subject_token, ann);
    assert_eq!(issued.audience.as_deref(), Some(ORDERS));
    let stats = obo.stats();
    assert_eq!((stats.hits, stats.misses, stats.exchanges), (1, 1, 1));
}

#[tokio::test]
async fn another_audience_is_another_exchange() {
    let auth = server().await;
    let obo = on_behalf_of(&auth);
    let ann = auth.login().access_token;

    let orders = obo.token(&ann, &to(ORDERS)).await.unwrap();
    let billing = obo.token(&ann, &to(BILLING)).await.unwrap();

    assert_eq!(auth.stats().token_exchanges, 2);
    assert_ne!(
        orders.access_token().secret(),
        billing.access_token().secret()
    );
    let issued = auth.exchanged(billing.access_token().secret()).unwrap();
    assert_eq!(issued.audience.as_deref(), Some(BILLING));
    // A scope of its own is a key of its own too.
    obo.token(&ann, &Downstream::new().audience(ORDERS).scope("write"))
        .await
        .unwrap();
    assert_eq!(auth.stats().token_exchanges, 3);
}

#[tokio::test]
async fn a_subject_never_gets_the_token_of_another() {
    let auth = server().await;
    let obo = on_behalf_of(&auth);
    let (ann, bob) = (auth.login().access_token, auth.login().access_token);

    let for_ann = obo.token(&ann, &to(ORDERS)).await.unwrap();
    let for_bob = obo.token(&bob, &to(ORDERS)).await.unwrap();

    assert_eq!(auth.stats().token_exchanges, 2);
    assert_ne!(
        for_ann.access_token().secret(),
        for_bob.access_token().secret()
    );
    let issued = auth.exchanged(for_bob.access_token().secret()).unwrap();
    assert_eq!(issued.subject_token, bob, "Bob's token was issued for Bob");
    // And each keeps getting their own from the cache.
    let again = obo.token(&ann, &to(ORDERS)).await.unwrap();
    assert_eq!(
        again.access_token().secret(),
        for_ann.access_token().secret()
    );
    let again = obo.token(&bob, &to(ORDERS)).await.unwrap();
    assert_eq!(
        again.access_token().secret(),
        for_bob.access_token().secret()
    );
    assert_eq!(auth.stats().token_exchanges, 2);
}

#[tokio::test]
async fn fifty_concurrent_callers_with_one_key_make_one_exchange() {
    let auth = server().await;
    let obo = Arc::new(on_behalf_of(&auth));
    let ann = auth.login().access_token;
    // The exchange is held until every caller has arrived.
    let gate = Gate::new();
    auth.inject(Fault::Hold(gate.clone()), 1);

    let callers: Vec<_> = (0..50)
        .map(|_| {
            let (obo, ann) = (obo.clone(), ann.clone());
            tokio::spawn(async move { obo.token(&ann, &to(ORDERS)).await })
        })
        .collect();
    until("every caller found the exchange in flight", || {
        obo.stats().misses == 50
    })
    .await;
    gate.open();
    let tokens: Vec<_> = join_all(callers)
        .await
        .into_iter()
        .map(|joined| joined.unwrap().unwrap())
        .collect();

    assert_eq!(auth.stats().token_requests, 1);
    assert_eq!(auth.stats().token_exchanges, 1);
    let first = tokens[0].access_token().secret();
    assert!(tokens.iter().all(|t| t.access_token().secret() == first));
    assert_eq!(obo.stats().exchanges, 1);
}

#[tokio::test]
async fn other_keys_are_not_held_up_by_an_exchange_in_flight() {
    let auth = server().await;
    let obo = Arc::new(on_behalf_of(&auth));
    let (ann, bob) = (auth.login().access_token, auth.login().access_token);
    let gate = Gate::new();
    auth.inject(Fault::Hold(gate.clone()), 1);

    let held = {
        let (obo, ann) = (obo.clone(), ann.clone());
        tokio::spawn(async move { obo.token(&ann, &to(ORDERS)).await })
    };
    until("Ann's exchange reached the server", || {
        auth.stats().token_requests == 1
    })
    .await;
    // Bob's exchange is served while Ann's is still held.
    let for_bob = obo.token(&bob, &to(ORDERS)).await.unwrap();
    assert_eq!(
        auth.exchanged(for_bob.access_token().secret())
            .unwrap()
            .subject_token,
        bob
    );
    assert!(!held.is_finished());

    gate.open();
    let for_ann = held.await.unwrap().unwrap();
    assert_eq!(
        auth.exchanged(for_ann.access_token().secret())
            .unwrap()
            .subject_token,
        ann
    );
    assert_eq!(auth.stats().token_exchanges, 2);
}

#[tokio::test(start_paused = true)]
async fn an_entry_near_its_expiry_is_exchanged_again() {
    let auth = server().await;
    let ann = auth.login().access_token;
    auth.set_access_lifetime(Duration::from_secs(60));
    let obo = on_behalf_of(&auth).expiry_leeway(Duration::from_secs(10));

    let first = obo.token(&ann, &to(ORDERS)).await.unwrap();
    tokio::time::advance(Duration::from_secs(45)).await;
    let still = obo.token(&ann, &to(ORDERS)).await.unwrap();
    assert_eq!(still.access_token().secret(), first.access_token().secret());
    assert_eq!(auth.stats().token_exchanges, 1);

    // Ten seconds from its expiry: inside the leeway.
    tokio::time::advance(Duration::from_secs(6)).await;
    let next = obo.token(&ann, &to(ORDERS)).await.unwrap();
    assert_ne!(next.access_token().secret(), first.access_token().secret());
    assert_eq!(auth.stats().token_exchanges, 2);
    assert!(auth.is_access_token_valid(next.access_token().secret()));
}

#[tokio::test(start_paused = true)]
async fn an_entry_is_never_served_past_the_exp_of_a_jwt_subject() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // An ID token that expires in a minute, exchanged for hour-long tokens.
    let claims = format!(r#"{{"sub":"ann","exp":{}}}"#, unix + 60);
    let id_token = format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(&claims));
    let config = AuthConfig::default()
        .access_lifetime(Duration::from_secs(3600))
        .token_exchange(TokenExchange::new().id_token(&id_token));
    let auth = AuthServer::start(config).await.unwrap();
    let obo = on_behalf_of(&auth).expiry_leeway(Duration::from_secs(10));
    let downstream = to(ORDERS).subject_token_type(token_type::ID_TOKEN);

    obo.token(&id_token, &downstream).await.unwrap();
    tokio::time::advance(Duration::from_secs(40)).await;
    obo.token(&id_token, &downstream).await.unwrap();
    assert_eq!(auth.stats().token_exchanges, 1);
    // Within the leeway of the subject's exp: the hour-long token is not
    // served for it any more.
    tokio::time::advance(Duration::from_secs(15)).await;
    obo.token(&id_token, &downstream).await.unwrap();
    assert_eq!(auth.stats().token_exchanges, 2);
}

#[tokio::test(start_paused = true)]
async fn a_token_without_expires_in_is_served_for_the_unknown_lifetime() {
    let config = AuthConfig::default()
        .access_lifetime(Duration::from_secs(3600))
        .token_exchange(TokenExchange::new().without_expires_in());
    let auth = AuthServer::start(config).await.unwrap();
    let ann = auth.login().access_token;
    let obo = on_behalf_of(&auth).unknown_lifetime(Duration::from_secs(30));

    let first = obo.token(&ann, &to(ORDERS)).await.unwrap();
    assert_eq!(first.expires_at(), None);
    tokio::time::advance(Duration::from_secs(29)).await;
    obo.token(&ann, &to(ORDERS)).await.unwrap();
    assert_eq!(auth.stats().token_exchanges, 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    obo.token(&ann, &to(ORDERS)).await.unwrap();
    assert_eq!(auth.stats().token_exchanges, 2);

    // Zero: such tokens are not cached at all.
    let uncached = on_behalf_of(&auth).unknown_lifetime(Duration::ZERO);
    uncached.token(&ann, &to(ORDERS)).await.unwrap();
    uncached.token(&ann, &to(ORDERS)).await.unwrap();
    assert_eq!(auth.stats().token_exchanges, 4);
    assert_eq!(uncached.stats().entries, 0);
}

#[tokio::test]
async fn a_failed_exchange_is_not_cached() {
    let auth = server().await;
    let obo = on_behalf_of(&auth);
    let ann = auth.login().access_token;
    auth.inject(Fault::TemporarilyUnavailable, 1);

    let err = obo.token(&ann, &to(ORDERS)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err:?}");
    let tokens = obo.token(&ann, &to(ORDERS)).await.unwrap();

    assert!(auth.is_access_token_valid(tokens.access_token().secret()));
    assert_eq!(auth.stats().token_requests, 2);
    let stats = obo.stats();
    assert_eq!((stats.exchanges, stats.failures, stats.hits), (2, 1, 0));
}

#[tokio::test]
async fn a_refused_subject_is_invalid_grant_for_every_waiter_and_asked_again_next_time() {
    let auth = server().await;
    let obo = Arc::new(on_behalf_of(&auth));
    let gate = Gate::new();
    auth.inject(Fault::Hold(gate.clone()), 1);

    let callers: Vec<_> = (0..10)
        .map(|_| {
            let obo = obo.clone();
            tokio::spawn(async move { obo.token("not-a-token-it-issued", &to(ORDERS)).await })
        })
        .collect();
    until("every caller found the exchange in flight", || {
        obo.stats().misses == 10
    })
    .await;
    gate.open();
    for joined in join_all(callers).await {
        let err = joined.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Rejected, "{err:?}");
        assert_eq!(err.oauth_error_code(), Some(&ErrorCode::InvalidGrant));
        assert!(!format!("{err:?}").contains("not-a-token-it-issued"));
    }
    assert_eq!(auth.stats().token_requests, 1);

    obo.token("not-a-token-it-issued", &to(ORDERS))
        .await
        .unwrap_err();
    assert_eq!(auth.stats().token_requests, 2);
    assert_eq!(auth.stats().invalid_grant, 2);
    assert_eq!(obo.stats().entries, 0);
}

#[tokio::test]
async fn the_bound_evicts_the_entry_that_expires_soonest() {
    let auth = server().await;
    let obo = on_behalf_of(&auth).max_entries(2);
    let users: Vec<String> = (0..3).map(|_| auth.login().access_token).collect();

    // Ann's token expires first, then Bob's, then Carol's.
    for (user, minutes) in users.iter().zip([10, 20, 30]) {
        auth.set_access_lifetime(Duration::from_secs(60 * minutes));
        obo.token(user, &to(ORDERS)).await.unwrap();
    }
    let stats = obo.stats();
    assert_eq!((stats.entries, stats.evictions, stats.exchanges), (2, 1, 3));

    // Bob and Carol are still cached; Ann was evicted.
    obo.token(&users[1], &to(ORDERS)).await.unwrap();
    obo.token(&users[2], &to(ORDERS)).await.unwrap();
    assert_eq!(auth.stats().token_exchanges, 3);
    obo.token(&users[0], &to(ORDERS)).await.unwrap();
    assert_eq!(auth.stats().token_exchanges, 4);
    assert_eq!(obo.stats().entries, 2);
}

#[tokio::test]
async fn a_dropped_caller_hands_its_exchange_to_a_waiter() {
    let auth = server().await;
    let obo = Arc::new(on_behalf_of(&auth));
    let ann = auth.login().access_token;
    // The first request is never answered; the next is served.
    auth.inject(Fault::Hold(Gate::new()), 1);

    let leader = {
        let (obo, ann) = (obo.clone(), ann.clone());
        tokio::spawn(async move { obo.token(&ann, &to(ORDERS)).await })
    };
    until("the first exchange reached the server", || {
        auth.stats().token_requests == 1
    })
    .await;
    let waiter = {
        let (obo, ann) = (obo.clone(), ann.clone());
        tokio::spawn(async move { obo.token(&ann, &to(ORDERS)).await })
    };
    until("the waiter found the exchange in flight", || {
        obo.stats().misses == 2
    })
    .await;
    leader.abort();

    let tokens = waiter.await.unwrap().unwrap();
    assert_eq!(
        auth.exchanged(tokens.access_token().secret())
            .unwrap()
            .subject_token,
        ann
    );
    assert_eq!(auth.stats().token_requests, 2);
    // The waiter's exchange is cached.
    obo.token(&ann, &to(ORDERS)).await.unwrap();
    assert_eq!(auth.stats().token_requests, 2);
}

#[tokio::test]
async fn forgetting_a_subject_touches_no_other() {
    let auth = server().await;
    let obo = on_behalf_of(&auth);
    let (ann, bob) = (auth.login().access_token, auth.login().access_token);
    for user in [&ann, &bob] {
        for audience in [ORDERS, BILLING] {
            obo.token(user, &to(audience)).await.unwrap();
        }
    }
    obo.remove_subject(&ann);
    assert_eq!(obo.stats().entries, 2);
    obo.token(&bob, &to(BILLING)).await.unwrap();
    assert_eq!(auth.stats().token_exchanges, 4);
    obo.token(&ann, &to(BILLING)).await.unwrap();
    assert_eq!(auth.stats().token_exchanges, 5);
}
