//! A DPoP-bound session (RFC 9449) in Redis: the key is stored with the
//! tokens bound to it, sealed like them, and a replica that loads the set
//! signs with that key from then on, whatever key it started with.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use redis::AsyncCommands as _;
use tower_token_refresh_core::{
    Error, TokenManager, TokenSet, TokenSource, XChaCha20Poly1305Sealer, source,
};
use tower_token_refresh_oauth2::dpop::{DpopKey, DpopManagerExt as _};
use tower_token_refresh_redis::RedisStore;
use tower_token_refresh_test_util::RedisServer;

const KEY: [u8; 32] = [0x31; 32];

async fn sealed(redis: &RedisServer) -> RedisStore {
    RedisStore::builder(redis.url())
        .prefix("app")
        .sealer(XChaCha20Poly1305Sealer::new(1, &KEY))
        .connect()
        .await
        .unwrap()
}

fn never() -> impl TokenSource {
    source::from_fn(|_| async { Err(Error::transient("this replica does not refresh")) })
}

#[tokio::test]
async fn a_replica_takes_the_stored_sessions_dpop_key_and_redis_holds_it_sealed() {
    let redis = RedisServer::start().await.unwrap();
    let leader_key = DpopKey::generate().unwrap();
    let leader = TokenManager::builder(source::from_fn(|_| async {
        Ok(TokenSet::bearer("at-2")
            .with_token_type("DPoP")
            .with_refresh_token("rt-2")
            .with_expires_in(Duration::from_secs(300)))
    }))
    .dpop(leader_key.clone())
    .store(sealed(&redis).await)
    .build();
    leader
        .set(
            TokenSet::bearer("at-1")
                .with_token_type("DPoP")
                .with_refresh_token("rt-1"),
        )
        .await
        .unwrap();
    leader.refresh().await.unwrap();

    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stored: Vec<u8> = conn.get("app:tokens").await.unwrap();
    // In clear the set would read `..."dpop_key":"<base64url PKCS#8>"...`.
    for clear in [&b"dpop_key"[..], b"rt-2", b"at-2"] {
        assert!(!stored.windows(clear.len()).any(|w| w == clear));
    }
    let der = leader_key.signing_key();
    let der = der.es256_pkcs8().unwrap();
    assert!(!stored.windows(der.len()).any(|w| w == der));

    let replica_key = DpopKey::generate().unwrap();
    assert_ne!(replica_key.thumbprint(), leader_key.thumbprint());
    let replica = TokenManager::builder(never())
        .dpop(replica_key.clone())
        .store(sealed(&redis).await)
        .build();
    assert!(replica.load().await.unwrap());
    assert_eq!(replica_key.thumbprint(), leader_key.thumbprint());
    let auth = replica.authorization().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "DPoP at-2");
}
