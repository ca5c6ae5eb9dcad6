//! `rediss://` against a real redis-server serving TLS (feature `tls`).
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tower_token_refresh_core::{ErrorKind, TokenSet, TokenStore};
use tower_token_refresh_redis::RedisStore;
use tower_token_refresh_test_util::RedisServer;

#[tokio::test]
async fn the_store_works_over_tls_and_refuses_an_untrusted_server() {
    let redis = RedisServer::start_tls().await.unwrap();
    assert!(redis.url().starts_with("rediss://"));
    let store = RedisStore::builder(redis.url())
        .root_certificate_pem(redis.ca_pem().unwrap().to_vec())
        .connect()
        .await
        .unwrap();
    store
        .save(&TokenSet::bearer("over-tls").with_refresh_token("r"))
        .await
        .unwrap();
    let back = store.load().await.unwrap().unwrap();
    assert_eq!(back.access_token().secret(), "over-tls");
    // Without the private CA the server's certificate is not trusted.
    let err = RedisStore::connect(redis.url()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store);
}
