//! The lease's heartbeat against a real redis-server: it keeps the lock past
//! its TTL while the lease lives, notices a lock it lost, keeps trying while
//! Redis fails, and leaves no task behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::time::Instant;
use tower_token_refresh_core::{ErrorKind, RefreshLease, RefreshTurn, TokenSet, TokenStore};
use tower_token_refresh_redis::RedisStore;
use tower_token_refresh_test_util::RedisServer;

const LOCK: &str = "hb:lock";

async fn store(url: String, lock_ttl: Duration) -> RedisStore {
    RedisStore::builder(url)
        .prefix("hb")
        .lock_ttl(lock_ttl)
        .poll_interval(Duration::from_millis(20))
        .timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap()
}

async fn leader(store: &RedisStore) -> Box<dyn RefreshLease> {
    match store.begin_refresh().await.unwrap() {
        RefreshTurn::Leader(lease) => lease,
        other => panic!("the lock was free, got {other:?}"),
    }
}

/// A plain connection, to look at and meddle with the keys directly.
async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn lock_pttl(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    redis::cmd("PTTL")
        .arg(LOCK)
        .query_async(conn)
        .await
        .unwrap()
}

async fn lock_value(conn: &mut redis::aio::MultiplexedConnection) -> Option<String> {
    redis::cmd("GET").arg(LOCK).query_async(conn).await.unwrap()
}

/// Polls `cond` every 5 ms, at most `bound`; returns when it held.
async fn within(bound: Duration, what: &str, mut cond: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < bound {
        if cond().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("not within {bound:?}: {what}");
}

#[tokio::test]
async fn a_lease_keeps_its_lock_for_several_ttls_and_commits() {
    const TTL: Duration = Duration::from_millis(300);
    let redis = RedisServer::start().await.unwrap();
    let a = store(redis.url(), TTL).await;
    let b = store(redis.url(), TTL).await;
    let mut conn = raw(&redis).await;
    let lease = leader(&a).await;
    let value = lock_value(&mut conn).await.expect("locked");
    // Four TTLs: without renewals the lock would be gone after the first.
    let start = Instant::now();
    while start.elapsed() < 4 * TTL {
        let pttl = lock_pttl(&mut conn).await;
        assert!(
            pttl > 0 && pttl <= TTL.as_millis() as i64,
            "the lock lives, with the TTL renewed (PTTL {pttl} ms after {:?})",
            start.elapsed()
        );
        assert_eq!(lock_value(&mut conn).await.as_ref(), Some(&value));
        assert!(lease.is_held());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        matches!(b.begin_refresh().await.unwrap(), RefreshTurn::Follower(_)),
        "another store finds the lock taken"
    );
    lease.commit(&TokenSet::bearer("renewed")).await.unwrap();
    lease.release().await.unwrap();
    assert!(!lease.is_held(), "released");
    assert_eq!(lock_value(&mut conn).await, None, "released");
    assert_eq!(
        b.load().await.unwrap().unwrap().access_token().secret(),
        "renewed"
    );
}

#[tokio::test]
async fn the_heartbeat_task_ends_with_the_lease() {
    let redis = RedisServer::start().await.unwrap();
    let a = store(redis.url(), Duration::from_millis(300)).await;
    let mut conn = raw(&redis).await;
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    // The store's connection tasks, and nothing of a lease yet.
    let baseline = alive();

    // Released.
    let lease = leader(&a).await;
    assert_eq!(alive(), baseline + 1, "one heartbeat task per lease");
    tokio::time::sleep(Duration::from_millis(250)).await; // a renewal or two
    lease.release().await.unwrap();
    assert_eq!(alive(), baseline, "stopped by release");
    drop(lease);

    // Committed: a lease commits its mark before the token request and
    // the answer after it, so the heartbeat lives on until the release.
    let lease = leader(&a).await;
    assert_eq!(alive(), baseline + 1);
    lease.commit(&TokenSet::bearer("x")).await.unwrap();
    lease.commit(&TokenSet::bearer("y")).await.unwrap();
    assert_eq!(alive(), baseline + 1, "kept through its commits");
    lease.release().await.unwrap();
    assert_eq!(alive(), baseline, "stopped by release");
    drop(lease);

    // Dropped without a release: the task ends, and the lock expires.
    let lease = leader(&a).await;
    assert_eq!(alive(), baseline + 1);
    drop(lease);
    within(
        Duration::from_secs(1),
        "the dropped lease's task ended",
        async || alive() == baseline,
    )
    .await;
    within(
        Duration::from_secs(2),
        "the dropped lease's lock expired",
        async || lock_value(&mut conn).await.is_none(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(alive(), baseline, "nothing came back");
}

#[tokio::test]
async fn a_lease_whose_lock_was_taken_over_knows_it_and_cannot_commit() {
    const TTL: Duration = Duration::from_millis(600);
    let redis = RedisServer::start().await.unwrap();
    let a = store(redis.url(), TTL).await;
    let mut conn = raw(&redis).await;
    let lease = leader(&a).await;
    assert!(lease.is_held());
    // Another process takes the lock (as after an expiry nobody noticed).
    let () = redis::cmd("DEL")
        .arg(LOCK)
        .query_async(&mut conn)
        .await
        .map(|_: i64| ())
        .unwrap();
    let () = redis::cmd("SET")
        .arg(LOCK)
        .arg("someone-else")
        .arg("PX")
        .arg(10_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    // The next heartbeat (a third of the TTL) finds it out.
    let took = within(TTL, "the lease notices it lost its lock", async || {
        !lease.is_held()
    })
    .await;
    assert!(took <= TTL / 3 + Duration::from_millis(150), "{took:?}");
    // Later renewals do not take it back or extend it.
    tokio::time::sleep(TTL).await;
    assert!(!lease.is_held());
    assert_eq!(lock_value(&mut conn).await.as_deref(), Some("someone-else"));
    assert!(lock_pttl(&mut conn).await <= 10_000 - TTL.as_millis() as i64);
    let err = lease
        .commit(&TokenSet::bearer("refreshed"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store, "{err}");
    assert!(err.to_string().contains("lost"), "{err}");
    assert!(a.load().await.unwrap().is_none(), "nothing written");
    lease.release().await.unwrap();
    assert_eq!(
        lock_value(&mut conn).await.as_deref(),
        Some("someone-else"),
        "a release leaves another's lock alone"
    );

    // A lock that is just gone (deleted, nobody took it) counts as lost too.
    let () = redis::cmd("DEL")
        .arg(LOCK)
        .query_async(&mut conn)
        .await
        .map(|_: i64| ())
        .unwrap();
    let lease = leader(&a).await;
    let () = redis::cmd("DEL")
        .arg(LOCK)
        .query_async(&mut conn)
        .await
        .map(|_: i64| ())
        .unwrap();
    within(TTL, "the lease notices its lock is gone", async || {
        !lease.is_held()
    })
    .await;
    assert_commit_refused(&*lease, "refreshed").await;
    assert_eq!(lock_value(&mut conn).await, None, "not recreated");
}

/// Renewals that Redis refuses for a while (the store's user is denied
/// every command) are tried again; one that gets through before the TTL
/// runs out keeps the lease.
#[tokio::test]
async fn failed_renewals_are_tried_again_until_one_gets_through() {
    const TTL: Duration = Duration::from_millis(1500);
    let redis = RedisServer::start().await.unwrap();
    let mut admin = raw(&redis).await;
    let acl = async |conn: &mut redis::aio::MultiplexedConnection, rule: &str| {
        let () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("app")
            .arg(rule)
            .query_async(conn)
            .await
            .unwrap();
    };
    let () = redis::cmd("ACL")
        .arg(&["SETUSER", "app", "on", ">app-pw", "~hb:*", "&hb:*", "+@all"])
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://app:app-pw@127.0.0.1:{}/", redis.port());
    let a = store(url, TTL).await;
    let lease = leader(&a).await;
    let start = Instant::now();
    acl(&mut admin, "-@all").await;
    // Denied across the first renewal (at a third of the TTL) and a few
    // retries after it.
    tokio::time::sleep_until(start + TTL * 2 / 3).await;
    assert!(lease.is_held(), "still within the TTL");
    acl(&mut admin, "+@all").await;
    // Redis logs repeated refusals as one entry with a count.
    let log: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("ACL")
        .arg("LOG")
        .query_async(&mut admin)
        .await
        .unwrap();
    let denied: i64 = log
        .iter()
        .map(|entry| match entry.get("count") {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("an ACL LOG entry without a count: {other:?}"),
        })
        .sum();
    assert!(
        denied >= 2,
        "the first renewal was refused and tried again: {denied} refusals"
    );
    // Past the first TTL, and past the second renewal: held all along.
    while start.elapsed() < TTL * 2 {
        assert!(lease.is_held(), "held at {:?}", start.elapsed());
        assert!(lock_pttl(&mut admin).await > 0, "at {:?}", start.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lease.commit(&TokenSet::bearer("kept")).await.unwrap();
    lease.release().await.unwrap();
}

/// With Redis gone, the heartbeat keeps trying until the lock's TTL would
/// have run out, and no longer: then the lease counts as lost.
#[tokio::test]
async fn with_redis_unreachable_a_lease_is_lost_once_its_ttl_has_run_out() {
    const TTL: Duration = Duration::from_millis(1500);
    let mut redis = RedisServer::start().await.unwrap();
    let a = store(redis.url(), TTL).await;
    let lease = leader(&a).await;
    // Past a renewal or two.
    tokio::time::sleep(TTL / 2).await;
    redis.stop();
    let stopped = Instant::now();
    // The last renewal was at most a third of the TTL before the stop.
    while stopped.elapsed() < TTL * 2 / 3 - Duration::from_millis(100) {
        assert!(
            lease.is_held(),
            "kept while the TTL may still run, at {:?}",
            stopped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    within(
        TTL / 3 + Duration::from_millis(300),
        "lost once the TTL has run out",
        async || !lease.is_held(),
    )
    .await;
    assert_commit_refused(&*lease, "late").await;
}

/// A lease that lost its lock must not write: its commit is a Store error.
async fn assert_commit_refused(lease: &dyn RefreshLease, access_token: &str) {
    let err = lease
        .commit(&TokenSet::bearer(access_token.to_owned()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store, "{err}");
}
