//! `set`, `clear` and `end_session` while a refresh holds the Redis lock:
//! this replica's own (they write through its lease, without waiting for
//! its token request) and another replica's (they wait for it, then write).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;
use tower_token_refresh_core::{
    Authorization, Error, ErrorKind, RefreshTurn, TokenManager, TokenSet, TokenSource, TokenStore,
    source,
};
use tower_token_refresh_redis::RedisStore;
use tower_token_refresh_test_util::RedisServer;

async fn store(redis: &RedisServer) -> RedisStore {
    RedisStore::builder(redis.url())
        .prefix("writes")
        .poll_interval(Duration::from_millis(20))
        .timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap()
}

/// A source whose token request waits for `gate` (with the lock held),
/// and says when it started.
fn gated() -> (impl TokenSource, Arc<Notify>, Arc<Notify>) {
    let (entered, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (e, g) = (Arc::clone(&entered), Arc::clone(&gate));
    let source = source::from_fn(move |_| {
        let (e, g) = (Arc::clone(&e), Arc::clone(&g));
        async move {
            e.notify_one();
            g.notified().await;
            Ok(TokenSet::bearer("acc-refreshed")
                .with_refresh_token("ref-refreshed")
                .with_expires_in(Duration::from_secs(300)))
        }
    });
    (source, entered, gate)
}

fn manager(source: impl TokenSource, store: RedisStore) -> TokenManager {
    TokenManager::builder(source)
        .store(store)
        // Short, so that a write stuck behind the lock fails fast on a
        // regression instead of hanging the suite.
        .attempt_timeout(Duration::from_secs(5))
        .build()
}

type Refresh = tokio::task::JoinHandle<Result<Authorization, Error>>;

/// A replica whose refresh is in flight with the lock held, waiting for
/// the gate.
async fn refreshing(redis: &RedisServer) -> (TokenManager, Refresh, Arc<Notify>) {
    let (source, entered, gate) = gated();
    let tokens = manager(source, store(redis).await);
    tokens.set(first()).await.unwrap();
    let refresh = tokio::spawn(tokens.refresh());
    entered.notified().await;
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
    let (tokens, refresh, gate) = refreshing(&redis).await;

    // The token request is still pending: the set must not wait for it.
    tokens.set(login()).await.unwrap();
    gate.notify_one();
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
    let (tokens, refresh, gate) = refreshing(&redis).await;

    tokens.clear().await.unwrap();
    gate.notify_one();
    let _ = refresh.await.unwrap();

    assert!(tokens.current().is_none());
    assert!(stored(&redis).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_session_during_this_replicas_refresh_leaves_its_tombstone() {
    let redis = RedisServer::start().await.unwrap();
    let (tokens, refresh, gate) = refreshing(&redis).await;

    tokens.end_session().await.unwrap();
    gate.notify_one();
    let _ = refresh.await.unwrap();

    assert!(tokens.is_session_expired());
    assert!(stored(&redis).await.unwrap().ended().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_during_another_replicas_refresh_waits_for_it_then_wins() {
    let redis = RedisServer::start().await.unwrap();
    let (a, refresh, gate) = refreshing(&redis).await;
    let b = manager(
        source::from_fn(|_| async { Err(Error::transient("B does not refresh")) }),
        store(&redis).await,
    );

    let set = tokio::spawn(async move { b.set(login()).await });
    // The rule: a login does not land inside another replica's refresh.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!set.is_finished(), "B's set went ahead of A's refresh");
    gate.notify_one();
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
