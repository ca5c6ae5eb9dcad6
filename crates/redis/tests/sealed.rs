//! `RedisStoreBuilder::sealer` against a real redis-server: Redis holds no
//! token in clear (saves and lease commits alike), a wrong key, an altered
//! value or one copied from another prefix is a store error, and replicas
//! and restarts share the sealed session.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use redis::AsyncCommands as _;
use tower_token_refresh_core::{
    Error, ErrorKind, RefreshTurn, TokenManager, TokenSet, TokenSource, TokenStore,
    XChaCha20Poly1305Sealer, source,
};
use tower_token_refresh_redis::RedisStore;
use tower_token_refresh_test_util::RedisServer;

const ACCESS: &str = "access-5e1d77-SECRET";
const REFRESH: &str = "refresh-c0ffee-SECRET";
const KEY: [u8; 32] = [0x24; 32];
const OTHER_KEY: [u8; 32] = [0x25; 32];

fn sample() -> TokenSet {
    TokenSet::bearer(ACCESS)
        .with_refresh_token(REFRESH)
        .with_expires_in(Duration::from_secs(300))
}

async fn sealed(redis: &RedisServer, prefix: &str, key: &[u8; 32]) -> RedisStore {
    RedisStore::builder(redis.url())
        .prefix(prefix)
        .sealer(XChaCha20Poly1305Sealer::new(1, key))
        .connect()
        .await
        .unwrap()
}

async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Every value Redis holds, whatever its key.
async fn everything(redis: &RedisServer) -> Vec<(String, Vec<u8>)> {
    let mut conn = raw(redis).await;
    let keys: Vec<String> = conn.keys("*").await.unwrap();
    let mut values = Vec::new();
    for key in keys {
        if let Ok(value) = conn.get::<_, Vec<u8>>(&key).await {
            values.push((key, value));
        }
    }
    values
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn assert_nothing_in_clear(redis: &RedisServer, secrets: &[&str]) {
    let values = everything(redis).await;
    assert!(values.iter().any(|(k, _)| k.ends_with(":tokens")));
    for (key, value) in &values {
        for secret in secrets {
            assert!(!contains(value, secret), "{secret} in clear at {key}");
        }
    }
}

#[tokio::test]
async fn redis_holds_no_token_bytes_and_the_set_loads_back() {
    let redis = RedisServer::start().await.unwrap();
    let store = sealed(&redis, "app", &KEY).await;
    store.save(&sample()).await.unwrap();
    assert_nothing_in_clear(&redis, &[ACCESS, REFRESH, "5e1d77", "c0ffee"]).await;

    let loaded = store.load().await.unwrap().unwrap();
    assert_eq!(loaded.access_token().secret(), ACCESS);
    assert_eq!(loaded.refresh_token().unwrap().secret(), REFRESH);
}

#[tokio::test]
async fn a_wrong_key_is_a_store_error_not_an_empty_store() {
    let redis = RedisServer::start().await.unwrap();
    sealed(&redis, "app", &KEY)
        .await
        .save(&sample())
        .await
        .unwrap();
    let wrong = sealed(&redis, "app", &OTHER_KEY).await;
    let err = wrong.load().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store, "{err}");

    let tokens = TokenManager::builder(never()).store(wrong).build();
    assert_eq!(tokens.load().await.unwrap_err().kind(), ErrorKind::Store);
    assert!(tokens.current().is_none());
}

#[tokio::test]
async fn an_altered_value_is_a_store_error() {
    let redis = RedisServer::start().await.unwrap();
    let store = sealed(&redis, "app", &KEY).await;
    store.save(&sample()).await.unwrap();
    let mut conn = raw(&redis).await;
    let good: Vec<u8> = conn.get("app:tokens").await.unwrap();
    // A few bytes in each part: magic, header, nonce, ciphertext, tag.
    for i in [0, 12, 13, 15, 20, 40, good.len() / 2, good.len() - 1] {
        let mut altered = good.clone();
        altered[i] ^= 0x80;
        let () = conn.set("app:tokens", altered).await.unwrap();
        let err = store.load().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Store, "byte {i}: {err}");
    }
    // Plain JSON written behind the store's back is refused too.
    let () = conn
        .set("app:tokens", sample().to_stored_json())
        .await
        .unwrap();
    let err = store.load().await.unwrap_err();
    assert!(err.to_string().contains("not sealed"), "{err}");
}

#[tokio::test]
async fn a_value_copied_from_another_prefix_does_not_open() {
    let redis = RedisServer::start().await.unwrap();
    let orders = sealed(&redis, "orders", &KEY).await;
    let billing = sealed(&redis, "billing", &KEY).await;
    orders.save(&sample()).await.unwrap();
    billing.save(&TokenSet::bearer("billing")).await.unwrap();

    let mut conn = raw(&redis).await;
    let value: Vec<u8> = conn.get("orders:tokens").await.unwrap();
    let () = conn.set("billing:tokens", value).await.unwrap();
    let err = billing.load().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store, "{err}");
}

fn never() -> impl TokenSource {
    source::from_fn(|_| async { Err(Error::transient("this test does not refresh")) })
}

#[tokio::test]
async fn a_lease_commits_the_refreshed_set_sealed_and_another_replica_opens_it() {
    let redis = RedisServer::start().await.unwrap();
    let a = TokenManager::builder(source::from_fn(|_| async {
        Ok(TokenSet::bearer("access-after-refresh")
            .with_refresh_token("refresh-after-refresh")
            .with_expires_in(Duration::from_secs(300)))
    }))
    .store(sealed(&redis, "app", &KEY).await)
    .build();
    a.set(TokenSet::bearer("old").with_refresh_token("old-refresh"))
        .await
        .unwrap();
    let before = a.stats();
    a.refresh().await.unwrap();
    assert_eq!(a.stats().refreshes_started, before.refreshes_started + 1);
    assert_nothing_in_clear(&redis, &["after-refresh", "old-refresh"]).await;

    // The leader committed through its lease (a Redis store's refresh always
    // does) and released the lock; another replica opens what it committed.
    let b_store = sealed(&redis, "app", &KEY).await;
    assert!(matches!(
        b_store.begin_refresh().await.unwrap(),
        RefreshTurn::Leader(_)
    ));
    let b = TokenManager::builder(never()).store(b_store).build();
    assert!(b.load().await.unwrap());
    assert_eq!(
        b.current().unwrap().refresh_token().unwrap().secret(),
        "refresh-after-refresh"
    );
}

#[tokio::test]
async fn a_manager_on_a_sealed_store_survives_a_restart() {
    let redis = RedisServer::start().await.unwrap();
    let first = TokenManager::builder(never())
        .store(sealed(&redis, "app", &KEY).await)
        .build();
    first.set(sample()).await.unwrap();
    drop(first);

    let second = TokenManager::builder(never())
        .store(sealed(&redis, "app", &KEY).await)
        .build();
    assert!(second.current().is_none());
    assert!(second.load().await.unwrap());
    let auth = second.authorization().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), format!("Bearer {ACCESS}"));
    assert_eq!(
        second.current().unwrap().refresh_token().unwrap().secret(),
        REFRESH
    );
}
