//! Replicas acting for many users through one Redis: each user's session
//! lives under its own keys ([`RedisStore::keyed`]), and the replicas
//! refresh each session once between them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tower::{Layer, ServiceExt};
use tower_token_refresh::{
    ServiceClient, SessionKey, Sessions, TokenManager, TokenRefreshLayer,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_redis::RedisStore;
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, RedisServer, ResourceServer, hyper_client,
};

const HOUR: Duration = Duration::from_secs(3600);

async fn replica(redis: &RedisServer, auth: &AuthServer) -> Sessions<u32> {
    let store = RedisStore::builder(redis.url())
        .prefix("bff")
        .poll_interval(Duration::from_millis(20))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let grant = RefreshTokenGrant::new(
        auth.token_url().parse().unwrap(),
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(hyper_client()),
    );
    Sessions::builder(TokenManager::builder(grant).min_refresh_interval(Duration::ZERO))
        .store(move |user: &u32| store.keyed(user.to_be_bytes()))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_refresh_each_users_session_once_per_expiry() {
    const USERS: u32 = 50;
    const EXPIRIES: u64 = 3;
    let redis = RedisServer::start().await.unwrap();
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(HOUR))
        .await
        .unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica(&redis, &auth).await);
    }
    // Each user logs in once, at the first replica; the others find the
    // session in Redis.
    let mut logins = Vec::new();
    for user in 0..USERS {
        let login = auth.login();
        replicas[0].set(user, login.token_set()).await.unwrap();
        logins.push(login);
    }
    let origin: tower_token_refresh::Origin = format!("http://{}", api.addr()).parse().unwrap();
    for expiry in 1..=EXPIRIES {
        auth.expire_access_tokens();
        let mut tasks = Vec::new();
        for sessions in &replicas {
            let client = TokenRefreshLayer::sessions(sessions.clone())
                .allow_origin(origin.clone())
                .layer(hyper_client());
            for user in 0..USERS {
                for _ in 0..2 {
                    let client = client.clone();
                    let url = api.url("/api/data");
                    tasks.push(tokio::spawn(async move {
                        let mut request = Request::get(url).body(Full::<Bytes>::default()).unwrap();
                        request.extensions_mut().insert(SessionKey(user));
                        client.oneshot(request).await.map(|r| r.status())
                    }));
                }
            }
        }
        for task in tasks {
            assert_eq!(
                task.await.unwrap().unwrap(),
                StatusCode::OK,
                "expiry {expiry}"
            );
        }
        let stats = auth.stats();
        assert_eq!(
            stats.refresh_grants,
            u64::from(USERS) * expiry,
            "one refresh per user per expiry, between the replicas"
        );
        assert_eq!(stats.reuse_detected, 0);
        assert_eq!(stats.invalid_grant, 0);
    }
    // Every user's current refresh token is the one rotated from their own
    // login: no session took another's.
    for (user, login) in logins.iter().enumerate() {
        let user = u32::try_from(user).unwrap();
        let current = replicas[2].session(&user).current().unwrap();
        assert_eq!(
            auth.grant_of(current.access_token().secret()),
            auth.grant_of(&login.access_token)
        );
    }
}
