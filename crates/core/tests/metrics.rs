//! The instruments of the `metrics` feature, recorded by a
//! `DebuggingRecorder` around a current-thread runtime with paused time:
//! each story moves each instrument by exactly what happened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::time::sleep;
use tower_token_refresh_core::{
    BoxFuture, Error, ErrorKind, MemoryStore, RefreshTurn, Sessions, TokenManager, TokenSet,
    TokenSource, TokenStore,
    metrics::{
        CAUSE, LEASE_WAIT_DURATION, LEASE_WAITS, REASON, REFRESH_DURATION, REFRESHES_FAILED,
        REFRESHES_STARTED, REFRESHES_SUCCEEDED, REPLAYS, SESSIONS_ENDED, SESSIONS_EVICTED,
        SESSIONS_HELD, WAITERS_COALESCED,
    },
    source,
};

const HOUR: Duration = Duration::from_secs(3600);
const LATENCY: Duration = Duration::from_millis(100);

/// What the recorder saw, added up over every snapshot taken (a snapshot
/// resets what it reads).
struct Seen {
    snapshotter: Snapshotter,
    counters: HashMap<(String, Vec<(String, String)>), u64>,
    gauges: HashMap<String, f64>,
    histograms: HashMap<String, Vec<f64>>,
}

impl Seen {
    fn new(snapshotter: Snapshotter) -> Self {
        Seen {
            snapshotter,
            counters: HashMap::new(),
            gauges: HashMap::new(),
            histograms: HashMap::new(),
        }
    }

    fn take(&mut self) {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let name = key.key().name().to_owned();
            match value {
                DebugValue::Counter(n) => {
                    let mut labels: Vec<_> = key
                        .key()
                        .labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect();
                    labels.sort();
                    *self.counters.entry((name, labels)).or_default() += n;
                }
                DebugValue::Gauge(v) => *self.gauges.entry(name).or_default() += v.into_inner(),
                DebugValue::Histogram(vs) => self
                    .histograms
                    .entry(name)
                    .or_default()
                    .extend(vs.into_iter().map(|v| v.into_inner())),
            }
        }
    }

    /// A counter without labels.
    fn count(&mut self, name: &str) -> u64 {
        self.labelled(name, &[])
    }

    fn labelled(&mut self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.take();
        let mut labels: Vec<_> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        self.counters
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0)
    }

    /// Every series of `name`, whatever its labels, added up.
    fn total(&mut self, name: &str) -> u64 {
        self.take();
        self.counters
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }

    fn gauge(&mut self, name: &str) -> f64 {
        self.take();
        self.gauges.get(name).copied().unwrap_or(0.0)
    }

    fn histogram(&mut self, name: &str) -> Vec<f64> {
        self.take();
        self.histograms.get(name).cloned().unwrap_or_default()
    }
}

/// Runs `story` on a current-thread runtime with paused time, with a
/// recorder of its own, and returns what it recorded.
fn recorded<F, Fut>(story: F) -> Seen
where
    F: FnOnce(Snapshotter) -> Fut,
    Fut: Future<Output = ()>,
{
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let seen = Seen::new(snapshotter.clone());
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(story(snapshotter));
    });
    seen
}

/// Issues `token-N`/`refresh-N` after `LATENCY`, or the next queued error.
#[derive(Clone, Default)]
struct Source {
    calls: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<Error>>>,
}

impl Source {
    fn fail_next(&self, errors: impl IntoIterator<Item = Error>) {
        let mut queued = self.errors.lock().unwrap();
        let mut errors: Vec<_> = errors.into_iter().collect();
        errors.reverse();
        queued.extend(errors);
    }

    fn get(&self) -> impl TokenSource {
        let this = self.clone();
        source::from_fn(move |_: Option<TokenSet>| {
            let this = this.clone();
            async move {
                let n = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
                sleep(LATENCY).await;
                if let Some(err) = this.errors.lock().unwrap().pop() {
                    return Err(err);
                }
                Ok(TokenSet::bearer(format!("token-{n}"))
                    .with_expires_in(HOUR)
                    .with_refresh_token(format!("refresh-{n}")))
            }
        })
    }
}

fn live(n: u32) -> TokenSet {
    TokenSet::bearer(format!("live-{n}"))
        .with_expires_in(HOUR)
        .with_refresh_token(format!("live-refresh-{n}"))
}

#[test]
fn a_refresh_that_succeeds_counts_its_start_its_success_and_its_duration() {
    let mut seen = recorded(|_| async {
        let source = Source::default();
        let tokens = TokenManager::builder(source.get()).build();
        tokens.authorization().await.unwrap();
    });
    assert_eq!(seen.count(REFRESHES_STARTED), 1);
    assert_eq!(seen.count(REFRESHES_SUCCEEDED), 1);
    assert_eq!(seen.total(REFRESHES_FAILED), 0);
    let durations = seen.histogram(REFRESH_DURATION);
    assert_eq!(durations.len(), 1);
    // Paused time: the refresh took exactly the source's latency.
    assert!(
        (durations[0] - LATENCY.as_secs_f64()).abs() < 1e-3,
        "{durations:?}"
    );
    // Nothing waited, joined or ended.
    assert_eq!(seen.count(WAITERS_COALESCED), 0);
    assert_eq!(seen.total(SESSIONS_ENDED), 0);
}

#[test]
fn ten_concurrent_callers_share_one_refresh_and_nine_count_as_coalesced() {
    let mut seen = recorded(|_| async {
        let source = Source::default();
        let tokens = TokenManager::builder(source.get()).build();
        let callers = (0..10).map(|_| tokens.authorization());
        let results = futures_util::future::join_all(callers).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(source.calls.load(Ordering::SeqCst), 1);
    });
    assert_eq!(seen.count(REFRESHES_STARTED), 1);
    assert_eq!(seen.count(REFRESHES_SUCCEEDED), 1);
    assert_eq!(seen.count(WAITERS_COALESCED), 9);
}

#[test]
fn a_fresh_lookup_records_nothing() {
    let mut seen = recorded(|snapshotter| async move {
        let source = Source::default();
        let tokens = TokenManager::builder(source.get()).initial(live(1)).build();
        // Whatever building the manager recorded (descriptions only).
        let _ = snapshotter.snapshot();
        for _ in 0..100 {
            tokens.authorization().await.unwrap();
        }
    });
    seen.take();
    assert!(
        seen.counters.values().all(|n| *n == 0),
        "{:?}",
        seen.counters
    );
    assert!(
        seen.histograms.values().all(Vec::is_empty),
        "{:?}",
        seen.histograms
    );
}

#[test]
fn a_transient_failure_counts_one_failed_refresh_with_reason_transient() {
    let mut seen = recorded(|_| async {
        let source = Source::default();
        source.fail_next((0..3).map(|_| Error::transient("503")));
        let tokens = TokenManager::builder(source.get())
            .max_attempts(3)
            .backoff(Duration::from_millis(10), Duration::from_millis(10))
            .build();
        let err = tokens.authorization().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient);
        assert_eq!(source.calls.load(Ordering::SeqCst), 3);
    });
    assert_eq!(seen.count(REFRESHES_STARTED), 1);
    assert_eq!(seen.count(REFRESHES_SUCCEEDED), 0);
    assert_eq!(seen.labelled(REFRESHES_FAILED, &[(REASON, "transient")]), 1);
    assert_eq!(seen.total(REFRESHES_FAILED), 1);
    // Three attempts of 100 ms and two backoffs of at most 10 ms each.
    let durations = seen.histogram(REFRESH_DURATION);
    assert_eq!(durations.len(), 1);
    assert!(
        (0.3 - 1e-3..=0.32 + 1e-3).contains(&durations[0]),
        "{durations:?}"
    );
    // A transient failure ends no session.
    assert_eq!(seen.total(SESSIONS_ENDED), 0);
}

#[test]
fn a_replay_is_counted_once_its_credential_comes() {
    let mut seen = recorded(|_| async {
        let source = Source::default();
        let tokens = TokenManager::builder(source.get()).initial(live(1)).build();
        let rejected = tokens.authorization().await.unwrap().generation();
        let replayed = tokens.replay_if(rejected).await.unwrap();
        assert_ne!(replayed.generation(), rejected);
        // A late rejection of the same generation replays at once with the
        // newer credential, without a refresh: still a replay.
        tokens.replay_if(rejected).await.unwrap();
        assert_eq!(tokens.stats().replays, 2);
    });
    assert_eq!(seen.count(REPLAYS), 2);
    assert_eq!(seen.count(REFRESHES_STARTED), 1);
    assert_eq!(seen.count(REFRESHES_SUCCEEDED), 1);
}

#[test]
fn a_failed_refresh_replays_nothing() {
    let mut seen = recorded(|_| async {
        let source = Source::default();
        source.fail_next([Error::new(ErrorKind::Rejected, "invalid_client")]);
        let tokens = TokenManager::builder(source.get()).initial(live(1)).build();
        let rejected = tokens.generation();
        assert!(tokens.replay_if(rejected).await.is_err());
    });
    assert_eq!(seen.count(REPLAYS), 0);
    assert_eq!(seen.labelled(REFRESHES_FAILED, &[(REASON, "rejected")]), 1);
}

#[test]
fn a_refused_refresh_token_ends_the_session_with_cause_invalid_grant() {
    let mut seen = recorded(|_| async {
        let source = Source::default();
        source.fail_next([Error::session_expired("refused").with_oauth_error("invalid_grant")]);
        let tokens = TokenManager::builder(source.get()).initial(live(1)).build();
        let err = tokens.refresh().await.unwrap_err();
        assert!(err.is_session_expired());
        assert_eq!(tokens.stats().sessions_expired, 1);
    });
    assert_eq!(
        seen.labelled(SESSIONS_ENDED, &[(CAUSE, "invalid_grant")]),
        1
    );
    assert_eq!(seen.total(SESSIONS_ENDED), 1);
    assert_eq!(
        seen.labelled(REFRESHES_FAILED, &[(REASON, "session_expired")]),
        1
    );
}

#[test]
fn a_lost_answer_on_a_rotating_server_ends_the_session_with_cause_lost_answer() {
    let mut seen = recorded(|_| async {
        let source = Source::default();
        source.fail_next([Error::transient("connection reset").with_outcome_unknown()]);
        let tokens = TokenManager::builder(source.get())
            .initial(live(1))
            .rotation(tower_token_refresh_core::Rotation::Always)
            .build();
        // Rejected by the server: the access token cannot serve on.
        let err = tokens.refresh_if(tokens.generation()).await.unwrap_err();
        assert!(err.is_session_expired());
        assert!(err.is_outcome_unknown());
    });
    assert_eq!(seen.labelled(SESSIONS_ENDED, &[(CAUSE, "lost_answer")]), 1);
    assert_eq!(seen.total(SESSIONS_ENDED), 1);
}

#[test]
fn a_session_another_process_ended_is_counted_as_ended_elsewhere() {
    let mut seen = recorded(|_| async {
        // Two processes sharing one store and one login.
        let store = Arc::new(MemoryStore::new());
        let refusing = Source::default();
        refusing.fail_next([Error::session_expired("refused").with_oauth_error("invalid_grant")]);
        let first = TokenManager::builder(refusing.get())
            .initial(live(1))
            .store(Arc::clone(&store))
            .build();
        let second_source = Source::default();
        let second = TokenManager::builder(second_source.get())
            .initial(live(1))
            .store(Arc::clone(&store))
            .build();
        assert!(first.refresh().await.unwrap_err().is_session_expired());
        // The second finds the first's tombstone and presents nothing.
        assert!(second.refresh().await.unwrap_err().is_session_expired());
        assert_eq!(second_source.calls.load(Ordering::SeqCst), 0);
    });
    assert_eq!(
        seen.labelled(SESSIONS_ENDED, &[(CAUSE, "invalid_grant")]),
        1
    );
    assert_eq!(
        seen.labelled(SESSIONS_ENDED, &[(CAUSE, "ended_elsewhere")]),
        1
    );
    assert_eq!(seen.total(SESSIONS_ENDED), 2);
}

#[test]
fn a_logout_ends_the_session_with_cause_logout() {
    let mut seen = recorded(|_| async {
        let source = Source::default();
        let tokens = TokenManager::builder(source.get()).initial(live(1)).build();
        tokens.end_session().await.unwrap();
        assert!(tokens.is_session_expired());
    });
    assert_eq!(seen.labelled(SESSIONS_ENDED, &[(CAUSE, "logout")]), 1);
    assert_eq!(seen.total(SESSIONS_ENDED), 1);
    // A logout is no refresh.
    assert_eq!(seen.count(REFRESHES_STARTED), 0);
}

/// A shared store whose first refresh turn finds another process
/// refreshing: that one stores its answer after `WAIT`.
struct Busy {
    store: Arc<MemoryStore>,
    busy: Mutex<bool>,
}

const WAIT: Duration = Duration::from_secs(2);

impl TokenStore for Busy {
    fn load(&self) -> BoxFuture<'_, Result<Option<TokenSet>, Error>> {
        self.store.load()
    }

    fn save<'a>(&'a self, tokens: &'a TokenSet) -> BoxFuture<'a, Result<(), Error>> {
        self.store.save(tokens)
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        self.store.clear()
    }

    fn begin_refresh(&self) -> BoxFuture<'_, Result<RefreshTurn, Error>> {
        let busy = std::mem::take(&mut *self.busy.lock().unwrap());
        let store = Arc::clone(&self.store);
        Box::pin(async move {
            if !busy {
                return Ok(RefreshTurn::Uncoordinated);
            }
            Ok(RefreshTurn::Follower(Box::pin(async move {
                sleep(WAIT).await;
                store.save(&live(2)).await
            })))
        })
    }
}

#[test]
fn a_refresh_that_waits_for_another_process_counts_the_wait_and_its_length() {
    let mut seen = recorded(|_| async {
        let source = Source::default();
        let tokens = TokenManager::builder(source.get())
            .store(Busy {
                store: Arc::new(MemoryStore::new()),
                busy: Mutex::new(true),
            })
            .build();
        let auth = tokens.authorization().await.unwrap();
        // The other process's answer, adopted: no token request here.
        assert_eq!(auth.header().to_str().unwrap(), "Bearer live-2");
        assert_eq!(source.calls.load(Ordering::SeqCst), 0);
    });
    assert_eq!(seen.count(LEASE_WAITS), 1);
    let waits = seen.histogram(LEASE_WAIT_DURATION);
    assert_eq!(waits.len(), 1);
    assert!((waits[0] - WAIT.as_secs_f64()).abs() < 1e-3, "{waits:?}");
    assert_eq!(seen.count(REFRESHES_SUCCEEDED), 1);
}

#[test]
fn a_sessions_registry_reports_what_it_holds_and_what_it_evicts() {
    let mut seen = recorded(|snapshotter| async move {
        let mut seen = Seen::new(snapshotter);
        let source = Source::default();
        let sessions: Sessions<String> = Sessions::builder(TokenManager::builder(source.get()))
            .store(|_: &String| MemoryStore::new())
            .max_sessions(4)
            .idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        for user in 0..4 {
            sessions
                .set(format!("user-{user}"), live(user))
                .await
                .unwrap();
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        assert_eq!(seen.gauge(SESSIONS_HELD), 4.0);
        assert_eq!(seen.count(SESSIONS_EVICTED), 0);

        // A fifth session passes the bound: the one idle longest goes.
        sessions.set("user-4".to_owned(), live(4)).await.unwrap();
        assert_eq!(sessions.len(), 4);
        assert_eq!(seen.gauge(SESSIONS_HELD), 4.0);
        assert_eq!(seen.count(SESSIONS_EVICTED), 1);

        // Idle past the timeout: every session goes.
        tokio::time::advance(Duration::from_secs(61)).await;
        sessions.evict_idle();
        assert!(sessions.is_empty());
        assert_eq!(seen.gauge(SESSIONS_HELD), 0.0);
        assert_eq!(seen.count(SESSIONS_EVICTED), 5);

        // A registry dropped with sessions held takes them off the gauge.
        sessions.set("user-5".to_owned(), live(5)).await.unwrap();
        sessions.set("user-6".to_owned(), live(6)).await.unwrap();
        assert_eq!(seen.gauge(SESSIONS_HELD), 2.0);
        drop(sessions);
        assert_eq!(seen.gauge(SESSIONS_HELD), 0.0);
        assert_eq!(seen.count(SESSIONS_EVICTED), 5);
    });
    // Every snapshot was taken inside; nothing moved after.
    assert_eq!(seen.count(SESSIONS_EVICTED), 0);
}

#[test]
fn the_sessions_of_a_registry_record_into_the_same_instruments() {
    let mut seen = recorded(|_| async {
        let source = Source::default();
        source.fail_next([Error::session_expired("refused").with_oauth_error("invalid_grant")]);
        let sessions: Sessions<String> = Sessions::builder(TokenManager::builder(source.get()))
            .store(|_: &String| MemoryStore::new())
            .build()
            .unwrap();
        sessions.set("alice".to_owned(), live(1)).await.unwrap();
        sessions.set("bob".to_owned(), live(2)).await.unwrap();
        // Alice's refresh token is refused; Bob logs out.
        let alice = sessions.session(&"alice".to_owned());
        assert!(alice.refresh().await.unwrap_err().is_session_expired());
        sessions.end_session(&"bob".to_owned()).await.unwrap();
    });
    assert_eq!(
        seen.labelled(SESSIONS_ENDED, &[(CAUSE, "invalid_grant")]),
        1
    );
    assert_eq!(seen.labelled(SESSIONS_ENDED, &[(CAUSE, "logout")]), 1);
    assert_eq!(seen.count(REFRESHES_STARTED), 1);
    // The registry went at the end of the story, and its sessions with it.
    assert_eq!(seen.gauge(SESSIONS_HELD), 0.0);
}

#[test]
fn building_a_manager_describes_every_instrument_with_its_unit() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let tokens = TokenManager::builder(Source::default().get())
            .initial(live(1))
            .build();
        drop(tokens);
        // Descriptions alone do not show in a snapshot: record one.
        metrics::histogram!(REFRESH_DURATION).record(1.0);
    });
    let (_, unit, description, _) = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(k, ..)| k.key().name() == REFRESH_DURATION)
        .unwrap();
    assert_eq!(unit, Some(metrics::Unit::Seconds));
    assert!(description.unwrap().contains("in s"));
}
