//! `set`, `clear` and `end_session` while a refresh holds the Redis lock:
//! this replica's own (they write through its lease, without waiting for
//! its token request) and another replica's (they wait for it, then write).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tower_token_refresh::{
    ServiceClient,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_core::{
    Authorization, Error, ErrorKind, RefreshTurn, TokenManager, TokenSet, TokenStore,
};
use tower_token_refresh_redis::RedisStore;
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, Fault, Gate, RedisServer, hyper_client, until,
};

async fn store(redis: &RedisServer) -> RedisStore {
    RedisStore::builder(redis.url())
        .prefix("writes")
        .poll_interval(Duration::from_millis(20))
        .timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap()
}

async fn replica(redis: &RedisServer, auth: &AuthServer) -> TokenManager {
    let grant = RefreshTokenGrant::new(
        auth.token_url().parse().unwrap(),
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(hyper_client()),
    );
    TokenManager::builder(grant)
        .store(store(redis).await)
        // Short, so that a write stuck behind the lock fails fast on a
        // regression instead of hanging the suite.
        .attempt_timeout(Duration::from_secs(5))
        .build()
}

type Refresh = tokio::task::JoinHandle<Result<Authorization, Error>>;

/// A replica whose refresh is in flight with the lock held: its token
/// request is held at the server until the gate opens.
async fn refreshing(redis: &RedisServer, auth: &AuthServer) -> (TokenManager, Refresh, Gate) {
    let tokens = replica(redis, auth).await;
    tokens.set(auth.login().token_set()).await.unwrap();
    let gate = Gate::new();
    auth.inject(Fault::Hold(gate.clone()), 1);
    let refresh = tokio::spawn(tokens.refresh());
    until("the refresh is at the token endpoint", || {
        auth.stats().token_requests == 1
    })
    .await;
    (tokens, refresh, gate)
}

fn first() -> TokenSet {
    TokenSet::bearer("acc-1")
        .with_refresh_token("ref-1")
        .with_expires_in(Duration::from_secs(300))
}

fn login() -> TokenSet {
    TokenSet::bearer("acc-login")
        .with_refresh_token("ref-login")
        .with_expires_in(Duration::from_secs(600))
}

async fn stored(redis: &RedisServer) -> Option<TokenSet> {
    store(redis).await.load().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_during_this_replicas_refresh_is_saved_through_its_lease() {
    let redis = RedisServer::start().await.unwrap();
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let (tokens, refresh, gate) = refreshing(&redis, &auth).await;

    // The token request is still pending: the set must not wait for it.
    tokens.set(login()).await.unwrap();
    gate.open();
    let _ = refresh.await.unwrap();

    let auth = tokens.authorization().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer acc-login");
    let stored = stored(&redis).await.unwrap();
    assert_eq!(stored.access_token().secret(), "acc-login");
    assert_eq!(stored.refresh_token().unwrap().secret(), "ref-login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_during_this_replicas_refresh_empties_the_store() {
    let redis = RedisServer::start().await.unwrap();
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let (tokens, refresh, gate) = refreshing(&redis, &auth).await;

    tokens.clear().await.unwrap();
    gate.open();
    let _ = refresh.await.unwrap();

    assert!(tokens.current().is_none());
    assert!(stored(&redis).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_session_during_this_replicas_refresh_leaves_its_tombstone() {
    let redis = RedisServer::start().await.unwrap();
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let (tokens, refresh, gate) = refreshing(&redis, &auth).await;

    tokens.end_session().await.unwrap();
    gate.open();
    let _ = refresh.await.unwrap();

    assert!(tokens.is_session_expired());
    assert!(stored(&redis).await.unwrap().ended().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_during_another_replicas_refresh_waits_for_it_then_wins() {
    let redis = RedisServer::start().await.unwrap();
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let (a, refresh, gate) = refreshing(&redis, &auth).await;
    let b = replica(&redis, &auth).await;

    let set = tokio::spawn(async move { b.set(login()).await });
    // The rule: a login does not land inside another replica's refresh.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!set.is_finished(), "B's set went ahead of A's refresh");
    gate.open();
    refresh.await.unwrap().unwrap();
    set.await.unwrap().unwrap();

    let stored = stored(&redis).await.unwrap();
    assert_eq!(stored.access_token().secret(), "acc-login");
    // A finds B's login in the store.
    assert!(a.load().await.unwrap());
    assert_eq!(a.current().unwrap().access_token().secret(), "acc-login");
}

#[tokio::test]
async fn a_lease_clears_only_while_it_holds_the_lock() {
    let redis = RedisServer::start().await.unwrap();
    let (a, b) = (store(&redis).await, store(&redis).await);
    a.save(&first()).await.unwrap();
    let RefreshTurn::Leader(lease) = a.begin_refresh().await.unwrap() else {
        panic!("the lock was free");
    };
    lease.clear().await.unwrap();
    assert!(b.load().await.unwrap().is_none());
    lease.release().await.unwrap();

    // Released: its clear is refused and the store keeps what it holds.
    b.save(&first()).await.unwrap();
    assert_eq!(lease.clear().await.unwrap_err().kind(), ErrorKind::Store);
    assert!(b.load().await.unwrap().is_some());
}
