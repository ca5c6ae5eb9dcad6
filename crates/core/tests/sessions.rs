//! Many sessions in one registry: keys never cross, one refresh per key,
//! ending one session touches no other, eviction keeps the bound and an
//! evicted session reloads from its store without a token request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::sleep;
use tower_token_refresh_core::{
    Error, ErrorKind, FileStore, MemoryStore, Sessions, TokenManager, TokenSet, TokenSource, source,
};

const LIFETIME: Duration = Duration::from_secs(600);

/// A refresh-token grant for many users: `{user}:rt{n}` is exchanged for
/// `{user}:at{n+1}` / `{user}:rt{n+1}`; a revoked user's token is refused.
#[derive(Clone, Default)]
struct Grant {
    calls: Arc<Mutex<HashMap<String, u64>>>,
    revoked: Arc<Mutex<Vec<String>>>,
    total: Arc<AtomicU64>,
    in_flight: Arc<AtomicU64>,
    most_in_flight: Arc<AtomicU64>,
}

impl Grant {
    fn calls_for(&self, user: &str) -> u64 {
        self.calls.lock().unwrap().get(user).copied().unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    fn source(&self) -> impl TokenSource {
        let this = self.clone();
        source::from_fn(move |current: Option<TokenSet>| {
            let this = this.clone();
            async move {
                let refresh = current
                    .and_then(|c| c.refresh_token().map(|r| r.secret().to_owned()))
                    .ok_or_else(|| Error::session_expired("no refresh token"))?;
                let (user, n) = refresh.split_once(":rt").unwrap();
                let n: u64 = n.parse().unwrap();
                this.total.fetch_add(1, Ordering::SeqCst);
                *this
                    .calls
                    .lock()
                    .unwrap()
                    .entry(user.to_owned())
                    .or_default() += 1;
                let now = this.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                this.most_in_flight.fetch_max(now, Ordering::SeqCst);
                sleep(Duration::from_millis(50)).await;
                this.in_flight.fetch_sub(1, Ordering::SeqCst);
                if this.revoked.lock().unwrap().iter().any(|r| r == user) {
                    return Err(Error::session_expired("invalid_grant"));
                }
                Ok(login(user, n + 1))
            }
        })
    }
}

fn login(user: &str, n: u64) -> TokenSet {
    TokenSet::bearer(format!("{user}:at{n}"))
        .with_refresh_token(format!("{user}:rt{n}"))
        .with_expires_in(LIFETIME)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ttr-sessions-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn registry(grant: &Grant, dir: &Path, max: usize) -> Sessions<String> {
    let dir = dir.to_path_buf();
    Sessions::builder(TokenManager::builder(grant.source()))
        .store(move |user: &String| FileStore::keyed(&dir, user))
        .max_sessions(max)
        .build()
        .unwrap()
}

async fn header(sessions: &Sessions<String>, user: &str) -> String {
    let auth = sessions
        .session(&user.to_owned())
        .authorization()
        .await
        .unwrap();
    auth.header().to_str().unwrap().to_owned()
}

#[tokio::test(start_paused = true)]
async fn each_key_gets_its_own_token_and_one_refresh_per_expiry() {
    let grant = Grant::default();
    let dir = temp_dir("own");
    let sessions = registry(&grant, &dir, 1_000);
    for u in 0..20 {
        sessions
            .set(format!("u{u}"), login(&format!("u{u}"), 1))
            .await
            .unwrap();
    }
    for u in 0..20 {
        assert_eq!(
            header(&sessions, &format!("u{u}")).await,
            format!("Bearer u{u}:at1")
        );
    }
    sleep(LIFETIME).await;
    // 20 users, 10 concurrent callers each, all past expiry.
    let mut tasks = Vec::new();
    for u in 0..20 {
        for _ in 0..10 {
            let sessions = sessions.clone();
            tasks.push(tokio::spawn(async move {
                let user = format!("u{u}");
                (header(&sessions, &user).await, user)
            }));
        }
    }
    for task in tasks {
        let (header, user) = task.await.unwrap();
        assert_eq!(header, format!("Bearer {user}:at2"));
    }
    for u in 0..20 {
        assert_eq!(grant.calls_for(&format!("u{u}")), 1, "one refresh for u{u}");
    }
    assert_eq!(sessions.stats().tokens.refreshes_succeeded, 20);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(start_paused = true)]
async fn a_storm_of_expiries_reaches_the_token_endpoint_a_bounded_number_at_a_time() {
    let grant = Grant::default();
    let dir = temp_dir("storm");
    let store_dir = dir.clone();
    let sessions: Sessions<String> = Sessions::builder(TokenManager::builder(grant.source()))
        .store(move |user: &String| FileStore::keyed(&store_dir, user))
        .max_concurrent_refreshes(8)
        .build()
        .unwrap();
    for u in 0..200 {
        let user = format!("u{u}");
        sessions.set(user.clone(), login(&user, 1)).await.unwrap();
    }
    sleep(LIFETIME).await;
    let mut tasks = Vec::new();
    for u in 0..200 {
        let sessions = sessions.clone();
        tasks.push(tokio::spawn(async move {
            header(&sessions, &format!("u{u}")).await
        }));
    }
    for (u, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), format!("Bearer u{u}:at2"));
    }
    assert_eq!(grant.total(), 200, "one refresh per session");
    assert_eq!(
        grant.most_in_flight.load(Ordering::SeqCst),
        8,
        "never more than 8 at once"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(start_paused = true)]
async fn ending_one_session_touches_no_other_and_runs_the_hook_with_its_key() {
    let grant = Grant::default();
    let dir = temp_dir("end");
    let ended = Arc::new(Mutex::new(Vec::new()));
    let seen = ended.clone();
    let store_dir = dir.clone();
    let sessions: Sessions<String> = Sessions::builder(TokenManager::builder(grant.source()))
        .store(move |user: &String| FileStore::keyed(&store_dir, user))
        .on_session_ended(move |user: &String| seen.lock().unwrap().push(user.clone()))
        .build()
        .unwrap();
    for user in ["alice", "bob", "carol"] {
        sessions.set(user.to_owned(), login(user, 1)).await.unwrap();
    }
    // Bob logs out; Carol's grant is revoked at the server.
    sessions.end_session(&"bob".to_owned()).await.unwrap();
    grant.revoked.lock().unwrap().push("carol".to_owned());
    sleep(LIFETIME).await;

    assert_eq!(header(&sessions, "alice").await, "Bearer alice:at2");
    let bob = sessions.session(&"bob".to_owned()).authorization().await;
    assert_eq!(bob.unwrap_err().kind(), ErrorKind::SessionExpired);
    let carol = sessions.session(&"carol".to_owned()).authorization().await;
    assert_eq!(carol.unwrap_err().kind(), ErrorKind::SessionExpired);
    assert_eq!(header(&sessions, "alice").await, "Bearer alice:at2");

    let mut ended = ended.lock().unwrap().clone();
    ended.sort();
    assert_eq!(ended, ["bob", "carol"]);
    assert_eq!(
        grant.calls_for("bob"),
        0,
        "a logged-out refresh token is never presented"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(start_paused = true)]
async fn past_the_bound_sessions_are_evicted_and_reload_from_their_store() {
    let grant = Grant::default();
    let dir = temp_dir("evict");
    let sessions = registry(&grant, &dir, 16);
    for u in 0..200 {
        let user = format!("u{u}");
        sessions.set(user.clone(), login(&user, 1)).await.unwrap();
        assert!(sessions.len() <= 16, "held {} sessions", sessions.len());
    }
    let stats = sessions.stats();
    assert!(stats.evicted >= 184, "evicted {}", stats.evicted);
    // Every user, evicted or not, still has their own token: loaded from
    // their file, with no token request.
    for u in 0..200 {
        let user = format!("u{u}");
        assert_eq!(header(&sessions, &user).await, format!("Bearer {user}:at1"));
        assert!(sessions.len() <= 16);
    }
    assert_eq!(
        grant.total(),
        0,
        "nobody was refreshed, nobody logged in again"
    );
    // Each refreshes once, with the refresh token from its file. (Stored
    // expiry is wall-clock time, which paused tokio time does not move: a
    // forced refresh stands in for the expiry.)
    for u in 0..200 {
        let user = format!("u{u}");
        let session = sessions.session(&user);
        assert_eq!(header(&sessions, &user).await, format!("Bearer {user}:at1"));
        let auth = session.refresh().await.unwrap();
        drop(session);
        assert_eq!(
            auth.header().to_str().unwrap(),
            format!("Bearer {user}:at2")
        );
        assert_eq!(header(&sessions, &user).await, format!("Bearer {user}:at2"));
    }
    assert_eq!(grant.total(), 200);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(start_paused = true)]
async fn a_session_in_use_is_never_evicted_so_one_key_has_one_manager() {
    let grant = Grant::default();
    let dir = temp_dir("held");
    let sessions = registry(&grant, &dir, 4);
    sessions
        .set("held".to_owned(), login("held", 1))
        .await
        .unwrap();
    let held = sessions.session(&"held".to_owned());
    for u in 0..50 {
        let user = format!("u{u}");
        sessions.set(user.clone(), login(&user, 1)).await.unwrap();
    }
    assert!(sessions.stats().evicted > 0);
    // The held handle is still the registry's: a refresh through it is
    // seen by a fresh lookup of the key (same manager, same generation).
    let again = sessions.session(&"held".to_owned());
    let before = again.generation();
    drop(held.refresh().await.unwrap());
    assert_eq!(again.generation(), before + 1);
    assert_eq!(grant.calls_for("held"), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(start_paused = true)]
async fn idle_sessions_are_evicted_on_request() {
    let grant = Grant::default();
    let dir = temp_dir("idle");
    let store_dir = dir.clone();
    let sessions: Sessions<String> = Sessions::builder(TokenManager::builder(grant.source()))
        .store(move |user: &String| FileStore::keyed(&store_dir, user))
        .idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    sessions
        .set("old".to_owned(), login("old", 1))
        .await
        .unwrap();
    sleep(Duration::from_secs(61)).await;
    sessions
        .set("new".to_owned(), login("new", 1))
        .await
        .unwrap();
    sessions.evict_idle();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions.stats().evicted, 1);
    assert_eq!(header(&sessions, "old").await, "Bearer old:at1");
    assert_eq!(sessions.len(), 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(start_paused = true)]
async fn sessions_start_no_task_of_their_own() {
    let grant = Grant::default();
    let dir = temp_dir("tasks");
    let sessions = registry(&grant, &dir, 10_000);
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    for u in 0..500 {
        let user = format!("u{u}");
        sessions.set(user.clone(), login(&user, 1)).await.unwrap();
        header(&sessions, &user).await;
    }
    assert_eq!(metrics.num_alive_tasks(), before);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_registry_refuses_what_belongs_to_one_session() {
    let source = || source::from_fn(|_| async { Ok(TokenSet::bearer("t")) });
    let no_store = Sessions::<String>::builder(TokenManager::builder(source())).build();
    assert_eq!(no_store.unwrap_err().kind(), ErrorKind::Rejected);
    let builders = [
        TokenManager::builder(source()).store(MemoryStore::new()),
        TokenManager::builder(source()).initial(TokenSet::bearer("someone's")),
        TokenManager::builder(source()).on_session_expired(|| {}),
    ];
    for builder in builders {
        let built = Sessions::<String>::builder(builder)
            .store(|_: &String| MemoryStore::new())
            .build();
        assert_eq!(built.unwrap_err().kind(), ErrorKind::Rejected);
    }
}
