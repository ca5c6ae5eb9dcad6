//! Replicas sharing one rotating refresh token through a real redis-server,
//! with token-endpoint delays drawn at random across the lock's TTL and the
//! coordinator's attempt timeout: whatever the delay, no refresh token is
//! ever presented twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use tower::{Layer, ServiceExt};
use tower_token_refresh::{
    ServiceClient, TokenManager, TokenRefresh, TokenRefreshLayer,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_redis::RedisStore;
use tower_token_refresh_test_util::RedisServer;
use tower_token_refresh_test_util::{AuthConfig, AuthServer, Fault, ResourceServer, hyper_client};

type Http = Client<HttpConnector, Full<Bytes>>;
type Authed = TokenRefresh<Http>;

const LOCK_TTL: Duration = Duration::from_millis(300);
const ATTEMPT: Duration = Duration::from_millis(600);
const REPLICAS: usize = 4;
const ROUNDS: u64 = 12;

/// splitmix64: a fixed seed gives the same delays on every run.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

async fn replica(
    redis: &RedisServer,
    auth: &AuthServer,
    api: &ResourceServer,
) -> (TokenManager, Authed) {
    let http = hyper_client();
    let grant = RefreshTokenGrant::new(
        auth.token_url().parse().unwrap(),
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(http.clone()),
    );
    let store = RedisStore::builder(redis.url())
        .prefix("random-delays")
        .lock_ttl(LOCK_TTL)
        .poll_interval(Duration::from_millis(20))
        .timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let tokens = TokenManager::builder(grant)
        .store(store)
        .attempt_timeout(ATTEMPT)
        .refresh_deadline(ATTEMPT * 4)
        .min_refresh_interval(Duration::ZERO)
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .build();
    let client = TokenRefreshLayer::new(tokens.clone())
        .allow_origin(format!("http://{}", api.addr()).parse().unwrap())
        .layer(http);
    (tokens, client)
}

async fn get(client: &Authed, url: String) -> Result<StatusCode, tower_token_refresh::BoxError> {
    let response = client
        .clone()
        .oneshot(Request::get(url).body(Full::default())?)
        .await?;
    Ok(response.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_token_endpoint_delays_never_make_a_replica_present_a_spent_refresh_token() {
    let redis = RedisServer::start().await.unwrap();
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(Duration::from_secs(3600)))
        .await
        .unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        replicas.push(replica(&redis, &auth, &api).await);
    }
    replicas[0].0.set(auth.login().token_set()).await.unwrap();
    for (tokens, _) in &replicas[1..] {
        assert!(tokens.load().await.unwrap());
    }
    let mut seed = 0x7e57_u64;
    let (mut answered, mut ended) = (0, 0);
    for round in 0..ROUNDS {
        // 0 to 1.2 s: below the TTL, between the TTL and the attempt
        // timeout (the heartbeat must hold the lock), and past the attempt
        // timeout (the answer is lost; the token must not be resent).
        let delay = Duration::from_millis(next(&mut seed) % 1200);
        auth.expire_access_tokens();
        auth.inject(Fault::Delay(delay), 1);
        let calls = replicas
            .iter()
            .map(|(_, client)| get(client, api.url("/api/data")));
        let outcomes = join_all(calls).await;
        let mut session_over = false;
        for outcome in outcomes {
            match outcome {
                Ok(status) => {
                    assert_eq!(status, StatusCode::OK, "round {round}, delay {delay:?}");
                    answered += 1;
                }
                Err(err) => {
                    let err = err
                        .downcast_ref::<tower_token_refresh::Error>()
                        .unwrap_or_else(|| panic!("round {round}: untyped error {err}"));
                    assert!(
                        err.is_session_expired(),
                        "round {round}, delay {delay:?}: {err}"
                    );
                    session_over = true;
                }
            }
        }
        let stats = auth.stats();
        assert_eq!(
            stats.reuse_detected, 0,
            "round {round}, delay {delay:?}: {stats:?}"
        );
        if session_over {
            // The way out of a lost answer: a new login, shared through Redis.
            ended += 1;
            replicas[0].0.set(auth.login().token_set()).await.unwrap();
            for (tokens, _) in &replicas[1..] {
                assert!(tokens.load().await.unwrap());
            }
        }
    }
    let stats = auth.stats();
    assert_eq!(stats.reuse_detected, 0, "{stats:?}");
    assert_eq!(stats.invalid_grant, 0, "{stats:?}");
    assert!(
        answered > 0 && ended > 0,
        "the seed covers both: {answered} answered, {ended} ended"
    );
}
