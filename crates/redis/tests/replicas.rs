//! Replicas sharing one refresh token through a real redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use tower::{Layer, ServiceExt};
use tower_token_refresh::{
    ErrorKind, Rotation, ServiceClient, TokenManager, TokenRefresh, TokenRefreshLayer,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_redis::RedisStore;
use tower_token_refresh_test_util::RedisServer;
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, Fault, Gate, ResourceServer, hyper_client,
};

type Http = Client<HttpConnector, Full<Bytes>>;

const HOUR: Duration = Duration::from_secs(3600);

struct Replica {
    tokens: TokenManager,
    client: TokenRefresh<Http>,
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
    replica_with(redis, auth, api, lock_ttl, Rotation::Detect).await
}

async fn replica_with(
    redis: &RedisServer,
    auth: &AuthServer,
    api: &ResourceServer,
    lock_ttl: Duration,
    rotation: Rotation,
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
        .rotation(rotation)
        .build();
    let client = TokenRefreshLayer::new(tokens.clone())
        .allow_origin(format!("http://{}", api.addr()).parse().unwrap())
        .layer(http);
    Replica { tokens, client }
}

async fn get(
    client: &TokenRefresh<Http>,
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

/// What the child process of the kill test reads from its environment.
const CHILD_ENV: &str = "TTR_REDIS_TEST_LOCK_HOLDER";
/// The line the child prints once its refresh started (it holds the lock).
const CHILD_REFRESHING: &str = "ttr-child: refreshing";
/// The lock TTL of the kill test: a renewal every 500 ms.
const KILL_TTL: Duration = Duration::from_millis(1500);

/// Not a test of its own: the lock holder that
/// `a_killed_lock_holder_is_taken_over_after_the_lock_ttl` starts as a child
/// process (this test binary run again) and kills with SIGKILL. Run without
/// the environment it needs, it does nothing.
#[tokio::test]
#[ignore = "a child process of a_killed_lock_holder_is_taken_over_after_the_lock_ttl"]
async fn lock_holder_child_process() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        return;
    };
    let [redis_url, token_url, client_id, secret, api_url] =
        <[&str; 5]>::try_from(args.split(' ').collect::<Vec<_>>()).unwrap();
    let store = RedisStore::builder(redis_url)
        .prefix("test")
        .lock_ttl(KILL_TTL)
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
    let url = api_url.to_owned();
    let origin = url.parse::<http::Uri>().unwrap();
    let origin = format!("http://{}", origin.authority().unwrap());
    let client = TokenRefreshLayer::new(tokens.clone())
        .allow_origin(origin.parse().unwrap())
        .layer(http);
    tokio::spawn(async move { get(&client, url).await });
    until("the refresh started", || {
        tokens.stats().refreshes_started > 0
    })
    .await;
    println!("{CHILD_REFRESHING}");
    // The parent kills this process long before; a bound in case it died.
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// A child process, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A leader process is killed (SIGKILL) while it holds the lock, in the
/// middle of its token request (held at the server, so never answered and
/// the refresh token never rotated by it). Its heartbeat kept the lock for
/// twice the TTL while it lived; it dies with the process, the lock expires
/// one TTL after the last renewal (not sooner), and the other replica takes
/// over then (not much later) and refreshes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lock_holder_is_taken_over_after_the_lock_ttl() {
    use std::io::BufRead;
    let redis = RedisServer::start().await.unwrap();
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(HOUR))
        .await
        .unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    // B is told the refresh token may be presented again after an
    // unanswered request (the held request is never carried out here), so
    // that its takeover shows as a refresh. A replica that assumes rotation
    // ends the session instead: the killed holder's request may have spent
    // the token.
    let b = replica_with(&redis, &auth, &api, KILL_TTL, Rotation::Never).await;
    b.tokens.set(auth.login().token_set()).await.unwrap();
    auth.expire_access_tokens();
    // The token endpoint holds the first refresh, the child's, for good.
    auth.inject(Fault::Hold(Gate::new()), 1);

    let mut child = Child(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["lock_holder_child_process", "--exact", "--ignored"])
            .args(["--nocapture", "--test-threads=1"])
            .env(
                CHILD_ENV,
                [
                    redis.url(),
                    auth.token_url(),
                    auth.client_id().to_owned(),
                    auth.client_secret().to_owned(),
                    api.url("/api/data"),
                ]
                .join(" "),
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Read on a thread of its own, not on the runtime's (whose servers the
    // child talks to).
    let stdout = child.0.stdout.take().unwrap();
    let (line_tx, line_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut lines = line_rx;
        while let Some(line) = lines.recv().await {
            // The harness may have started the line ("test … ... ").
            if line.ends_with(CHILD_REFRESHING) {
                return;
            }
        }
        panic!("the child ended before its refresh started");
    })
    .await
    .expect("the child started its refresh");
    until("the child's refresh is at the token endpoint", || {
        auth.stats().token_requests == 1
    })
    .await;

    // While the child lives, its heartbeat keeps the lock: for two TTLs and
    // then half a renewal period, so the kill falls between two renewals.
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let lock = async |conn: &mut redis::aio::MultiplexedConnection| {
        let (value, pttl): (Option<String>, i64) = redis::pipe()
            .cmd("GET")
            .arg("test:lock")
            .cmd("PTTL")
            .arg("test:lock")
            .query_async(conn)
            .await
            .unwrap();
        (value, pttl)
    };
    let held = lock(&mut conn).await.0.expect("the child holds the lock");
    let lived = std::time::Instant::now();
    while lived.elapsed() < KILL_TTL * 2 + KILL_TTL / 6 {
        assert_eq!(
            lock(&mut conn).await.0.as_ref(),
            Some(&held),
            "the living child's lock, {:?} after its refresh began",
            lived.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = std::time::Instant::now();
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    // Nobody renews it now: it lives exactly what is left of it.
    let read_at = std::time::Instant::now();
    let (value, pttl) = lock(&mut conn).await;
    assert_eq!(value.as_ref(), Some(&held), "the dead child's lock is left");
    let left = Duration::from_millis(u64::try_from(pttl).unwrap());
    // Granularity of PTTL (1 ms) and of the polls.
    let slack = Duration::from_millis(10);
    assert!(
        left + slack >= KILL_TTL * 2 / 3 && left <= KILL_TTL,
        "renewed at most a third of the TTL before the kill: {left:?} left"
    );

    // B needs a refresh too: it waits for the dead child's lock to expire,
    // then refreshes.
    let request = tokio::spawn({
        let client = b.client.clone();
        let url = api.url("/api/data");
        async move { get(&client, url).await }
    });
    until("B's refresh is at the token endpoint", || {
        auth.stats().token_requests == 2
    })
    .await;
    let took_over = std::time::Instant::now();
    println!(
        "took over {:?} after the kill; the lock had {left:?} left",
        took_over - killed
    );
    assert!(
        took_over + slack >= read_at + left,
        "not before the dead child's lock expired: {:?} early",
        (read_at + left) - took_over
    );
    assert!(
        took_over - killed <= left + Duration::from_secs(1),
        "soon after it expired (at most one TTL after the kill): took over {:?} after the kill",
        took_over - killed
    );
    let outcome = tokio::time::timeout(Duration::from_secs(30), request)
        .await
        .expect("no request hangs past the bound");
    assert_eq!(outcome.unwrap().unwrap(), StatusCode::OK);
    let stats = auth.stats();
    assert_eq!(stats.refresh_grants, 1, "B's refresh; A's never finished");
    assert_eq!(stats.reuse_detected, 0);
    assert_eq!(stats.invalid_grant, 0);
    assert_eq!(b.tokens.stats().sessions_expired, 0);
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

/// The leader's token request outlasts five times the lock's TTL: the
/// heartbeat keeps the lock taken while the request is in flight,
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
    // shorter than the refresh it needs more attempts than the default. The
    // leader's attempt outlasts its request (an abandoned request would end
    // the session: it may have rotated the refresh token).
    let slow = |b: tower_token_refresh::TokenManagerBuilder| {
        b.attempt_timeout(Duration::from_secs(5))
            .max_attempts(20)
            .backoff(Duration::from_millis(50), Duration::from_millis(100))
    };
    let stores = [store(&redis, LOCK_TTL).await, store(&redis, LOCK_TTL).await];
    let replicas = seeded_pair(&auth, &api, stores, |b| {
        slow(b.min_refresh_interval(Duration::ZERO))
    })
    .await;
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
        "the slow request, waited for; nobody sent it again"
    );
    assert_same_new_tokens(&replicas, &auth);
}

/// Two replicas on `stores`, allowed to send the token to `api`, the
/// second one loaded with the login the first one saved.
async fn seeded_pair(
    auth: &AuthServer,
    api: &ResourceServer,
    stores: [RedisStore; 2],
    tweak: impl Fn(tower_token_refresh::TokenManagerBuilder) -> tower_token_refresh::TokenManagerBuilder,
) -> Vec<Replica> {
    let mut replicas = Vec::new();
    for store in stores {
        let http = hyper_client();
        let grant = RefreshTokenGrant::new(
            auth.token_url().parse().unwrap(),
            ClientAuth::basic(auth.client_id(), auth.client_secret()),
            ServiceClient::new(http.clone()),
        );
        let tokens = tweak(TokenManager::builder(grant).store(store)).build();
        let client = TokenRefreshLayer::new(tokens.clone())
            .allow_origin(format!("http://{}", api.addr()).parse().unwrap())
            .layer(http);
        replicas.push(Replica { tokens, client });
    }
    replicas[0]
        .tokens
        .set(auth.login().token_set())
        .await
        .unwrap();
    assert!(replicas[1].tokens.load().await.unwrap());
    replicas
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
///
/// The coordinator's default attempt timeout (30 s) waits for the 16 s
/// answer; the lease's heartbeat (and the 45 s TTL) keeps the lock all the
/// while; the follower is woken by the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_leader_with_the_default_settings_refreshes_once_for_both_replicas() {
    let redis = RedisServer::start().await.unwrap();
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(HOUR))
        .await
        .unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    let connect = || {
        RedisStore::builder(redis.url())
            .prefix("defaults")
            .connect()
    };
    let stores = [connect().await.unwrap(), connect().await.unwrap()];
    let replicas = seeded_pair(&auth, &api, stores, |b| b).await;
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

/// A lost answer: replica A's token request outlives its attempt timeout,
/// and the server (like oidc-provider or Django) carries it out anyway and
/// rotates the refresh token. A records the session's end in Redis before
/// it lets the lock go, so replica B, holding the same refresh token, never
/// presents it: no reuse on either replica, and both sessions end saying
/// the outcome is unknown. (The lock used to be released before the store
/// was cleared, and B then presented the spent token.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_lost_to_one_replica_is_never_presented_again_by_another() {
    let redis = RedisServer::start().await.unwrap();
    let auth = AuthServer::start(
        AuthConfig::default()
            .access_lifetime(HOUR)
            .finish_abandoned(true),
    )
    .await
    .unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    let stores = [
        store(&redis, Duration::from_secs(5)).await,
        store(&redis, Duration::from_secs(5)).await,
    ];
    let replicas = seeded_pair(&auth, &api, stores, |b| {
        b.attempt_timeout(Duration::from_millis(300))
            .min_refresh_interval(Duration::ZERO)
    })
    .await;
    auth.expire_access_tokens();
    // A's request is answered after A gave up on it, and still rotates.
    auth.inject(Fault::Delay(Duration::from_secs(1)), 1);
    let a = get(&replicas[0].client, api.url("/api/data")).await;
    let a_err = a.expect_err("A's refresh got no answer");
    let a_err = a_err
        .downcast_ref::<tower_token_refresh::Error>()
        .expect("the layer's typed error");
    assert_eq!(a_err.kind(), ErrorKind::SessionExpired);
    assert!(a_err.is_outcome_unknown());
    until("the abandoned request was carried out", || {
        auth.stats().abandoned_completed == 1
    })
    .await;
    // B holds the same refresh token; its refresh finds the tombstone.
    let b = get(&replicas[1].client, api.url("/api/data")).await;
    let b_err = b.expect_err("B's session ended too");
    let b_err = b_err
        .downcast_ref::<tower_token_refresh::Error>()
        .expect("the layer's typed error");
    assert_eq!(b_err.kind(), ErrorKind::SessionExpired);
    assert!(b_err.is_outcome_unknown(), "{b_err}");
    let stats = auth.stats();
    assert_eq!(stats.token_requests, 1, "B presented nothing: {stats:?}");
    assert_eq!(stats.reuse_detected, 0, "{stats:?}");
    assert_eq!(stats.invalid_grant, 0, "{stats:?}");
    let stored = replicas[1].tokens.current();
    assert!(stored.is_none_or(|s| s.refresh_token().is_none()));
}
