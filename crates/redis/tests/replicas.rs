//! Replicas sharing one refresh token through a real redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use tower::{Layer, ServiceExt};
use tower_token_refresh::{
    CloneBody, ErrorKind, RejectedToken, ServiceClient, TokenManager, TokenRefresh,
    TokenRefreshLayer,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_redis::{RedisStore, testing::RedisServer};
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, Fault, Gate, ResourceServer, hyper_client,
};

type Http = Client<HttpConnector, Full<Bytes>>;

const HOUR: Duration = Duration::from_secs(3600);

struct Replica {
    tokens: TokenManager,
    client: TokenRefresh<Http, CloneBody, RejectedToken>,
}

async fn store(redis: &RedisServer, lock_ttl: Duration) -> RedisStore {
    RedisStore::builder(redis.url())
        .prefix("test")
        .lock_ttl(lock_ttl)
        .poll_interval(Duration::from_millis(20))
        .timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap()
}

async fn replica(
    redis: &RedisServer,
    auth: &AuthServer,
    api: &ResourceServer,
    lock_ttl: Duration,
) -> Replica {
    let http = hyper_client();
    let grant = RefreshTokenGrant::new(
        auth.token_url().parse().unwrap(),
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(http.clone()),
    );
    let tokens = TokenManager::builder(grant)
        .store(store(redis, lock_ttl).await)
        .min_refresh_interval(Duration::ZERO)
        .max_attempts(6)
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .build();
    let client = TokenRefreshLayer::new(tokens.clone())
        .scope(format!("http://{}", api.addr()).parse().unwrap())
        .layer(http);
    Replica { tokens, client }
}

async fn get(
    client: &TokenRefresh<Http, CloneBody, RejectedToken>,
    url: String,
) -> Result<StatusCode, tower_token_refresh::BoxError> {
    let response = client
        .clone()
        .oneshot(Request::get(url).body(Full::default())?)
        .await?;
    Ok(response.status())
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_replicas_refresh_once_per_expiry() {
    const REPLICAS: usize = 8;
    const REQUESTS: usize = 100;
    const EXPIRIES: u64 = 5;
    let redis = RedisServer::start().await.unwrap();
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(HOUR))
        .await
        .unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        replicas.push(replica(&redis, &auth, &api, Duration::from_secs(10)).await);
    }
    // One login, shared through Redis.
    replicas[0]
        .tokens
        .set(auth.login().token_set())
        .await
        .unwrap();
    for r in &replicas[1..] {
        assert!(r.tokens.load().await.unwrap());
    }
    for expiry in 1..=EXPIRIES {
        let rejected_before = api.stats().rejected;
        auth.expire_access_tokens();
        let gate = Gate::new();
        auth.inject(Fault::Hold(gate.clone()), 1);
        let mut tasks = Vec::new();
        for r in &replicas {
            for _ in 0..REQUESTS {
                let client = r.client.clone();
                let url = api.url("/api/data");
                tasks.push(tokio::spawn(async move { get(&client, url).await }));
            }
        }
        let all = (REPLICAS * REQUESTS) as u64;
        until("every replica's requests were rejected", || {
            api.stats().rejected - rejected_before == all
        })
        .await;
        gate.open();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), StatusCode::OK);
        }
        let stats = auth.stats();
        assert_eq!(
            stats.refresh_grants, expiry,
            "one refresh grant per expiry across {REPLICAS} replicas"
        );
        assert_eq!(stats.invalid_grant, 0);
        assert_eq!(stats.reuse_detected, 0);
    }
    let adopted: u64 = replicas
        .iter()
        .map(|r| r.tokens.stats().adopted_from_store)
        .sum();
    assert!(
        adopted >= (REPLICAS as u64 - 1) * EXPIRIES,
        "followers took the leader's set: {adopted}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lock_holder_is_taken_over_after_the_lock_ttl() {
    let redis = RedisServer::start().await.unwrap();
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(HOUR))
        .await
        .unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    let login = auth.login().token_set();
    let b = replica(&redis, &auth, &api, Duration::from_secs(1)).await;
    b.tokens.set(login).await.unwrap();
    auth.expire_access_tokens();
    // The token endpoint holds the first refresh: replica A's.
    auth.inject(Fault::Hold(Gate::new()), 1);

    // Replica A lives on a runtime of its own, on another thread, so it can
    // die as a process would: every task and connection of it dropped.
    let (redis_url, token_url) = (redis.url(), auth.token_url());
    let (client_id, secret) = (auth.client_id().to_owned(), auth.client_secret().to_owned());
    let url = api.url("/api/data");
    let (took_lock_tx, took_lock_rx) = std::sync::mpsc::channel::<()>();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    let a = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let store = RedisStore::builder(redis_url)
                .prefix("test")
                .lock_ttl(Duration::from_secs(1))
                .connect()
                .await
                .unwrap();
            let http = hyper_client();
            let grant = RefreshTokenGrant::new(
                token_url.parse().unwrap(),
                ClientAuth::basic(client_id, secret),
                ServiceClient::new(http.clone()),
            );
            let tokens = TokenManager::builder(grant).store(store).build();
            assert!(tokens.load().await.unwrap());
            let client = TokenRefreshLayer::new(tokens.clone()).layer(http);
            tokio::spawn(async move { get(&client, url).await });
            while tokens.stats().refreshes_started == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            took_lock_tx.send(()).unwrap();
            // Parked until killed.
            tokio::task::spawn_blocking(move || kill_rx.recv())
                .await
                .ok();
        });
        drop(rt);
    });
    took_lock_rx.recv().unwrap();
    until("A's refresh is at the token endpoint", || {
        auth.stats().token_requests == 1
    })
    .await;
    kill_tx.send(()).unwrap();
    a.join().unwrap();

    // B needs a refresh too: it waits for A's lock to expire, then refreshes.
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        get(&b.client, api.url("/api/data")),
    )
    .await
    .expect("no request hangs past the bound");
    assert_eq!(outcome.unwrap(), StatusCode::OK);
    let stats = auth.stats();
    assert_eq!(stats.refresh_grants, 1, "B's refresh; A's never finished");
    assert_eq!(stats.reuse_detected, 0);
}

#[tokio::test]
async fn a_stale_replica_takes_the_newer_set_without_refreshing() {
    let redis = RedisServer::start().await.unwrap();
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(HOUR))
        .await
        .unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    let a = replica(&redis, &auth, &api, Duration::from_secs(5)).await;
    let b = replica(&redis, &auth, &api, Duration::from_secs(5)).await;
    a.tokens.set(auth.login().token_set()).await.unwrap();
    assert!(b.tokens.load().await.unwrap());
    auth.expire_access_tokens();
    tokio::time::sleep(Duration::from_millis(10)).await; // a later expiry for the new set
    a.tokens.refresh().await.unwrap();
    assert_eq!(auth.stats().refresh_grants, 1);
    // B still holds the old, now rejected, token.
    assert_eq!(
        get(&b.client, api.url("/api/data")).await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(auth.stats().refresh_grants, 1, "B took A's set");
    assert_eq!(b.tokens.stats().adopted_from_store, 1);
    assert_eq!(b.tokens.stats().replays, 1);
}

#[tokio::test]
async fn while_redis_is_down_valid_tokens_are_served_and_refreshes_fail_typed() {
    let mut redis = RedisServer::start().await.unwrap();
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(HOUR))
        .await
        .unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    let a = replica(&redis, &auth, &api, Duration::from_secs(5)).await;
    a.tokens.set(auth.login().token_set()).await.unwrap();
    redis.stop();
    // The hot path never touches Redis.
    for _ in 0..10 {
        assert_eq!(
            get(&a.client, api.url("/api/data")).await.unwrap(),
            StatusCode::OK
        );
    }
    // A refresh needs the store: a typed error, no refresh at the server.
    auth.expire_access_tokens();
    let err = get(&a.client, api.url("/api/data")).await.unwrap_err();
    let err = err
        .downcast_ref::<tower_token_refresh::Error>()
        .expect("typed");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.to_string().contains("Redis"), "{err}");
    assert_eq!(auth.stats().token_requests, 0);
    // Redis comes back (empty: no persistence); the next refresh works.
    redis.restart().await.unwrap();
    let mut status = None;
    for _ in 0..20 {
        match get(&a.client, api.url("/api/data")).await {
            Ok(s) => {
                status = Some(s);
                break;
            }
            // The connection is made again on the next command.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(status, Some(StatusCode::OK));
    assert_eq!(auth.stats().refresh_grants, 1);
    let stored = store(&redis, Duration::from_secs(5)).await;
    assert!(
        tower_token_refresh::TokenStore::load(&stored)
            .await
            .unwrap()
            .is_some(),
        "saved again"
    );
}

#[tokio::test]
async fn auth_passwords_work_and_wrong_ones_are_a_store_error() {
    let redis = RedisServer::start_with_password("s3cret-pw").await.unwrap();
    let store = RedisStore::connect(redis.url()).await.unwrap();
    assert!(
        tower_token_refresh::TokenStore::load(&store)
            .await
            .unwrap()
            .is_none()
    );
    let wrong = format!("redis://:wrong@127.0.0.1:{}/", redis.port());
    let err = RedisStore::connect(wrong).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store);
    assert!(!format!("{err} {err:?}").contains("s3cret-pw"));
}

#[tokio::test]
async fn acl_users_work() {
    let redis = RedisServer::start().await.unwrap();
    let admin = RedisStore::connect(redis.url()).await.unwrap();
    drop(admin);
    // A user limited to the store's keys and channel.
    let status = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port().to_string(),
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">app-pw",
            "~acl:*",
            "&acl:*",
            "+@all",
        ])
        .output()
        .unwrap();
    assert!(status.status.success());
    let url = format!("redis://app:app-pw@127.0.0.1:{}/", redis.port());
    let store = RedisStore::builder(url)
        .prefix("acl")
        .connect()
        .await
        .unwrap();
    let tokens = tower_token_refresh::TokenSet::bearer("a").with_refresh_token("r");
    tower_token_refresh::TokenStore::save(&store, &tokens)
        .await
        .unwrap();
    let back = tower_token_refresh::TokenStore::load(&store)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.access_token().secret(), "a");
    // Outside its keys the user is refused: the ACL is in force.
    let other = RedisStore::builder(format!("redis://app:app-pw@127.0.0.1:{}/", redis.port()))
        .prefix("other")
        .connect()
        .await
        .unwrap();
    let err = tower_token_refresh::TokenStore::load(&other)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store);
}

#[tokio::test]
async fn a_lease_does_not_overwrite_a_set_saved_during_it() {
    use tower_token_refresh_core::{RefreshTurn, TokenSet, TokenStore};
    let redis = RedisServer::start().await.unwrap();
    let a = store(&redis, Duration::from_secs(5)).await;
    let b = store(&redis, Duration::from_secs(5)).await;
    let RefreshTurn::Leader(lease) = a.begin_refresh().await.unwrap() else {
        panic!("the lock was free");
    };
    assert!(matches!(
        b.begin_refresh().await.unwrap(),
        RefreshTurn::Follower(_)
    ));
    // A login saved by another process while A refreshes.
    b.save(&TokenSet::bearer("login")).await.unwrap();
    let err = lease
        .commit(&TokenSet::bearer("refreshed"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store);
    assert_eq!(
        a.load().await.unwrap().unwrap().access_token().secret(),
        "login"
    );
    lease.release().await.unwrap();
    // The lock is free again, and a lease with nothing in between commits.
    let RefreshTurn::Leader(lease) = b.begin_refresh().await.unwrap() else {
        panic!("released");
    };
    lease.commit(&TokenSet::bearer("refreshed")).await.unwrap();
    lease.release().await.unwrap();
    assert_eq!(
        a.load().await.unwrap().unwrap().access_token().secret(),
        "refreshed"
    );
}

/// The leader's token request outlasts its attempt and five times the lock's
/// TTL: the heartbeat keeps the lock taken while the request is in flight,
/// so the other replica does not send the same refresh token meanwhile; the
/// slow request's result is used, once. (With a TTL this short only the
/// renewals keep the lock: without them it expires after 500 ms.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_leader_keeps_the_lock_while_its_request_is_in_flight() {
    const LOCK_TTL: Duration = Duration::from_millis(500);
    let redis = RedisServer::start().await.unwrap();
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(HOUR))
        .await
        .unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    // A follower waits at most one lock TTL, then asks again: with a TTL
    // shorter than the refresh it needs more attempts than the default.
    let slow = |b: tower_token_refresh::TokenManagerBuilder| {
        b.attempt_timeout(Duration::from_millis(500))
            .max_attempts(20)
            .backoff(Duration::from_millis(50), Duration::from_millis(100))
    };
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = store(&redis, LOCK_TTL).await;
        let http = hyper_client();
        let grant = RefreshTokenGrant::new(
            auth.token_url().parse().unwrap(),
            ClientAuth::basic(auth.client_id(), auth.client_secret()),
            ServiceClient::new(http.clone()),
        );
        let tokens = slow(
            TokenManager::builder(grant)
                .store(store)
                .min_refresh_interval(Duration::ZERO),
        )
        .build();
        let client = TokenRefreshLayer::new(tokens.clone()).layer(http);
        replicas.push(Replica { tokens, client });
    }
    replicas[0]
        .tokens
        .set(auth.login().token_set())
        .await
        .unwrap();
    assert!(replicas[1].tokens.load().await.unwrap());
    auth.expire_access_tokens();
    // The first token request takes 2.5 s: five lock TTLs, five attempts.
    auth.inject(Fault::Delay(LOCK_TTL * 5), 1);
    let a = tokio::spawn({
        let client = replicas[0].client.clone();
        let url = api.url("/api/data");
        async move { get(&client, url).await }
    });
    until("A's request is at the token endpoint", || {
        auth.stats().token_requests == 1
    })
    .await;
    let b = get(&replicas[1].client, api.url("/api/data")).await;
    assert_eq!(b.unwrap(), StatusCode::OK);
    assert_eq!(a.await.unwrap().unwrap(), StatusCode::OK);
    let stats = auth.stats();
    assert_eq!(stats.reuse_detected, 0, "{stats:?}");
    assert_eq!(stats.invalid_grant, 0);
    assert_eq!(
        stats.token_requests, 1,
        "the slow request, joined; nobody sent it again"
    );
    assert_same_new_tokens(&replicas, &auth);
}

/// Both replicas hold the same set, and it is not the login's.
fn assert_same_new_tokens(replicas: &[Replica], auth: &AuthServer) {
    let sets: Vec<_> = replicas
        .iter()
        .map(|r| r.tokens.current().expect("a token set"))
        .collect();
    for (r, set) in replicas.iter().zip(&sets) {
        assert_eq!(r.tokens.stats().sessions_expired, 0);
        assert!(auth.is_access_token_valid(set.access_token().secret()));
        assert_eq!(set.access_token().secret(), sets[0].access_token().secret());
        assert_eq!(
            set.refresh_token().map(|t| t.secret()),
            sets[0].refresh_token().map(|t| t.secret())
        );
    }
}

/// The bug this crate had: a token request slower than the lock's TTL lost
/// the lock while in flight, the other replica took it and presented the
/// same refresh token, and the rotating server logged both out. Now with
/// every setting at its default (the Redis store's and the coordinator's):
/// the token endpoint answers after 16 s, longer than the old 15 s TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_leader_with_the_default_settings_refreshes_once_for_both_replicas() {
    let redis = RedisServer::start().await.unwrap();
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(HOUR))
        .await
        .unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::builder(redis.url())
            .prefix("defaults")
            .connect()
            .await
            .unwrap();
        let http = hyper_client();
        let grant = RefreshTokenGrant::new(
            auth.token_url().parse().unwrap(),
            ClientAuth::basic(auth.client_id(), auth.client_secret()),
            ServiceClient::new(http.clone()),
        );
        let tokens = TokenManager::builder(grant).store(store).build();
        let client = TokenRefreshLayer::new(tokens.clone()).layer(http);
        replicas.push(Replica { tokens, client });
    }
    replicas[0]
        .tokens
        .set(auth.login().token_set())
        .await
        .unwrap();
    assert!(replicas[1].tokens.load().await.unwrap());
    auth.expire_access_tokens();
    auth.inject(Fault::Delay(Duration::from_secs(16)), 1);
    // Both need a refresh at once.
    let started = std::time::Instant::now();
    let tasks: Vec<_> = replicas
        .iter()
        .map(|r| {
            let client = r.client.clone();
            let url = api.url("/api/data");
            tokio::spawn(async move { get(&client, url).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(40), t)
                .await
                .expect("within the refresh deadline")
                .unwrap()
                .unwrap(),
            StatusCode::OK
        );
    }
    assert!(started.elapsed() >= Duration::from_secs(16), "the slow one");
    let stats = auth.stats();
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    assert_eq!(stats.refresh_grants, 1, "{stats:?}");
    assert_eq!(stats.reuse_detected, 0, "{stats:?}");
    assert_eq!(stats.invalid_grant, 0, "{stats:?}");
    assert_same_new_tokens(&replicas, &auth);
    assert_eq!(
        replicas
            .iter()
            .map(|r| r.tokens.stats().adopted_from_store)
            .sum::<u64>(),
        1,
        "the follower took the leader's set"
    );
}
