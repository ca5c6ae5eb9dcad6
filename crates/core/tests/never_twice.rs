//! The coordinator's central promise under slow, hung and odd token
//! endpoints: a refresh token is never presented twice, a new one is never
//! dropped, and the manager never wedges. Paused tokio time throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::{Instant, sleep};
use tower_token_refresh_core::{
    Error, ErrorKind, Lookup, MemoryStore, Rotation, TokenManager, TokenSet, TokenStore, source,
};

const HOUR: Duration = Duration::from_secs(3600);

/// What a scripted token endpoint does on one call.
#[derive(Clone)]
enum Answer {
    /// Never answers.
    Hang,
    /// Answers `access` (already expired if `expired`) with refresh token
    /// `refresh`, after `delay`.
    Tokens {
        access: &'static str,
        refresh: &'static str,
        expired: bool,
        delay: Duration,
    },
}

fn tokens(access: &'static str, refresh: &'static str) -> Answer {
    slow(access, refresh, Duration::ZERO)
}

fn slow(access: &'static str, refresh: &'static str, delay: Duration) -> Answer {
    Answer::Tokens {
        access,
        refresh,
        expired: false,
        delay,
    }
}

/// Tokens whose access token is already expired when they arrive.
fn expired(access: &'static str, refresh: &'static str) -> Answer {
    Answer::Tokens {
        access,
        refresh,
        expired: true,
        delay: Duration::ZERO,
    }
}

/// A token source that plays `script` call by call (the last answer
/// repeats) and records the refresh token each call presented.
#[derive(Clone, Default)]
struct Script {
    answers: Arc<Mutex<Vec<Answer>>>,
    presented: Arc<Mutex<Vec<Option<String>>>>,
}

impl Script {
    fn new(answers: Vec<Answer>) -> Self {
        Script {
            answers: Arc::new(Mutex::new(answers)),
            presented: Arc::default(),
        }
    }

    fn presented(&self) -> Vec<Option<String>> {
        self.presented.lock().unwrap().clone()
    }

    fn source(&self) -> impl tower_token_refresh_core::TokenSource {
        let this = self.clone();
        source::from_fn(move |current: Option<TokenSet>| {
            let this = this.clone();
            async move {
                this.presented
                    .lock()
                    .unwrap()
                    .push(current.and_then(|c| c.refresh_token().map(|r| r.secret().to_owned())));
                let answer = {
                    let mut answers = this.answers.lock().unwrap();
                    if answers.len() > 1 {
                        answers.remove(0)
                    } else {
                        answers[0].clone()
                    }
                };
                match answer {
                    Answer::Hang => std::future::pending().await,
                    Answer::Tokens {
                        access,
                        refresh,
                        expired,
                        delay,
                    } => {
                        sleep(delay).await;
                        let lifetime = if expired { Duration::ZERO } else { HOUR };
                        Ok(TokenSet::bearer(access)
                            .with_expires_in(lifetime)
                            .with_refresh_token(refresh))
                    }
                }
            }
        })
    }
}

fn login() -> TokenSet {
    TokenSet::bearer("a0")
        .with_expires_in(HOUR)
        .with_refresh_token("r0")
}

fn some(tokens: &[&str]) -> Vec<Option<String>> {
    tokens.iter().map(|t| Some((*t).to_owned())).collect()
}

fn refresh_token(tokens: &TokenManager) -> Option<String> {
    tokens
        .current()
        .and_then(|t| t.refresh_token().map(|r| r.secret().to_owned()))
}

// 1. A token request that never answers.

#[tokio::test(start_paused = true)]
async fn a_token_request_that_never_answers_does_not_wedge_the_manager() {
    // Seven refreshes over an hour against an endpoint that never answers,
    // then it comes back. The server does not rotate, so each attempt may
    // ask again; none may wait on an earlier one.
    let hung = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicU64::new(0));
    let (h, c) = (hung.clone(), calls.clone());
    let source = source::from_fn(move |_| {
        let (hung, n) = (h.load(Ordering::SeqCst), c.fetch_add(1, Ordering::SeqCst));
        async move {
            if hung {
                std::future::pending::<()>().await;
            }
            Ok(TokenSet::bearer(format!("a{n}"))
                .with_expires_in(HOUR)
                .with_refresh_token("r0"))
        }
    });
    let tokens = TokenManager::builder(source)
        .initial(login())
        .rotation(Rotation::Never)
        .build();
    for round in 0..7 {
        let started = Instant::now();
        let err = tokens.refresh().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient, "round {round}: {err}");
        assert!(
            started.elapsed() <= Duration::from_secs(60),
            "round {round} waited {:?}, past the refresh deadline",
            started.elapsed()
        );
        sleep(Duration::from_secs(510)).await;
    }
    let asked = calls.load(Ordering::SeqCst);
    assert!(asked >= 14, "every attempt asks anew: {asked} calls");
    hung.store(false, Ordering::SeqCst);
    let auth = tokens.refresh().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), format!("Bearer a{asked}"));
}

#[tokio::test(start_paused = true)]
async fn a_hung_request_without_a_refresh_token_is_simply_asked_again() {
    // client_credentials: nothing can be spent, so a hang is a transient
    // failure whatever the rotation setting.
    let script = Script::new(vec![Answer::Hang, tokens("a1", "r1")]);
    let tokens = TokenManager::builder(script.source()).build();
    let auth = tokens.authorization().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer a1");
    assert_eq!(script.presented(), vec![None, None]);
}

// 2. A rotated answer is never lost, an old refresh token never resent.

#[tokio::test(start_paused = true)]
async fn an_answer_later_than_the_attempt_is_not_followed_by_the_old_refresh_token() {
    // The answer would come at 45 s, after the attempt (30 s). The server
    // may rotate: r0 is never sent again.
    let script = Script::new(vec![slow("a1", "r1", Duration::from_secs(45))]);
    let tokens = TokenManager::builder(script.source())
        .initial(login())
        .build();
    let err = tokens.refresh().await.unwrap_err();
    assert!(
        err.is_session_expired() && err.is_outcome_unknown(),
        "{err}"
    );
    for _ in 0..3 {
        sleep(Duration::from_secs(60)).await;
        let later = tokens.authorization().await.unwrap_err();
        assert!(later.is_session_expired());
    }
    assert_eq!(script.presented(), some(&["r0"]));
    // A new login starts over.
    tokens
        .set(TokenSet::bearer("b0").with_refresh_token("rb"))
        .await
        .unwrap();
    assert!(!tokens.is_session_expired());
}

#[tokio::test(start_paused = true)]
async fn a_set_of_the_current_tokens_during_a_refresh_keeps_the_rotated_refresh_token() {
    let script = Script::new(vec![
        slow("a1", "r1", Duration::from_secs(1)),
        tokens("a2", "r2"),
    ]);
    let store = Arc::new(MemoryStore::new());
    let tokens = TokenManager::builder(script.source())
        .initial(login())
        .store(store.clone())
        .min_refresh_interval(Duration::ZERO)
        .build();
    let refresh = tokens.refresh();
    sleep(Duration::from_millis(100)).await;
    // The application writes back what it read, r0 included.
    tokens.set(tokens.current().unwrap()).await.unwrap();
    let outcome = refresh.await.unwrap();
    // The newer access token (the set's) stays; the refresh token is the
    // one the server issued in exchange for r0.
    assert_eq!(outcome.header().to_str().unwrap(), "Bearer a0");
    assert_eq!(refresh_token(&tokens).as_deref(), Some("r1"));
    let stored = store.load().await.unwrap().unwrap();
    assert_eq!(stored.refresh_token().unwrap().secret(), "r1");
    // The next refresh presents r1, not r0.
    tokens.refresh().await.unwrap();
    assert_eq!(script.presented(), some(&["r0", "r1"]));
}

#[tokio::test(start_paused = true)]
async fn a_rejection_of_the_set_that_overtook_a_refresh_is_refreshed_with_the_new_token() {
    let script = Script::new(vec![
        slow("a1", "r1", Duration::from_secs(1)),
        tokens("a2", "r2"),
    ]);
    let tokens = TokenManager::builder(script.source())
        .initial(login())
        .min_refresh_interval(Duration::ZERO)
        .build();
    drop(tokens.refresh());
    sleep(Duration::from_millis(100)).await;
    tokens.set(tokens.current().unwrap()).await.unwrap();
    // The resource rejects the set's access token while the refresh runs.
    let replay = tokens.refresh_if(tokens.generation()).await.unwrap();
    assert_eq!(replay.header().to_str().unwrap(), "Bearer a2");
    assert_eq!(script.presented(), some(&["r0", "r1"]));
}

#[tokio::test(start_paused = true)]
async fn an_expired_access_token_beside_a_new_refresh_token_keeps_the_refresh_token() {
    let script = Script::new(vec![expired("a1", "r1"), tokens("a2", "r2")]);
    let tokens = TokenManager::builder(script.source())
        .initial(login())
        .backoff(Duration::ZERO, Duration::ZERO)
        .build();
    let auth = tokens.refresh().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer a2");
    assert_eq!(script.presented(), some(&["r0", "r1"]));
}

#[tokio::test(start_paused = true)]
async fn a_refresh_that_only_got_unusable_access_tokens_leaves_the_newest_refresh_token() {
    let script = Script::new(vec![
        expired("a1", "r1"),
        // Not a header value at all.
        tokens("a\n2", "r2"),
        tokens("a3", "r3"),
    ]);
    let store = Arc::new(MemoryStore::new());
    let tokens = TokenManager::builder(script.source())
        .initial(login())
        .store(store.clone())
        .max_attempts(2)
        .min_refresh_interval(Duration::ZERO)
        .backoff(Duration::ZERO, Duration::ZERO)
        .build();
    let err = tokens.refresh().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert_eq!(refresh_token(&tokens).as_deref(), Some("r2"));
    let stored = store.load().await.unwrap().unwrap();
    assert_eq!(stored.refresh_token().unwrap().secret(), "r2");
    // Nothing unusable is ever sent: the next caller waits for a refresh.
    assert!(matches!(tokens.lookup(), Lookup::Pending(_)));
    let auth = tokens.authorization().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer a3");
    assert_eq!(script.presented(), some(&["r0", "r1", "r2"]));
}

// 4. No task per credential.

#[tokio::test(start_paused = true)]
async fn ten_thousand_refreshes_leave_a_bounded_number_of_tasks() {
    let n = Arc::new(AtomicU64::new(0));
    let counter = n.clone();
    let source = source::from_fn(move |_| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        async move {
            Ok(TokenSet::bearer(format!("a{n}"))
                .with_expires_in(HOUR)
                .with_refresh_token(format!("r{n}")))
        }
    });
    let tokens = TokenManager::builder(source)
        .min_refresh_interval(Duration::ZERO)
        .build();
    let metrics = tokio::runtime::Handle::current().metrics();
    let mut most = 0;
    for _ in 0..10_000 {
        tokens.refresh().await.unwrap();
        // A lookup of each new credential is what armed a timer per
        // credential before.
        assert!(matches!(tokens.lookup(), Lookup::Ready(_)));
        tokio::task::yield_now().await;
        most = most.max(metrics.num_alive_tasks());
    }
    assert_eq!(tokens.stats().refreshes_succeeded, 10_000);
    assert!(
        most <= 2,
        "at most a driver and a refresh alive, saw {most}"
    );
    drop(tokens);
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        metrics.num_alive_tasks(),
        0,
        "the driver ends with its manager"
    );
}

// 5. No panics without a runtime or its time driver.

#[test]
fn without_a_time_driver_every_method_answers_no_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let script = Script::new(vec![tokens("a1", "r1")]);
        let ready = TokenManager::builder(script.source())
            .initial(login())
            .build();
        // A fresh credential is still served: the lookup reads the clock.
        for _ in 0..3 {
            assert!(matches!(ready.lookup(), Lookup::Ready(_)));
        }
        let no_runtime =
            |r: Result<(), Error>| assert_eq!(r.unwrap_err().kind(), ErrorKind::NoRuntime);
        no_runtime(ready.refresh().await.map(drop));
        no_runtime(ready.set(login()).await);
        no_runtime(ready.load().await.map(drop));
        no_runtime(ready.clear().await);
        no_runtime(ready.end_session().await);
        let empty = TokenManager::builder(script.source()).build();
        no_runtime(empty.authorization().await.map(drop));
        assert!(script.presented().is_empty());
    });
}

#[test]
fn outside_any_runtime_every_method_answers_no_runtime() {
    let script = Script::new(vec![tokens("a1", "r1")]);
    let tokens = TokenManager::builder(script.source())
        .initial(login())
        .build();
    assert!(matches!(tokens.lookup(), Lookup::Ready(_)));
    let now = |f: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + '_>>| {
        let mut task = tokio_test::task::spawn(f);
        match task.poll() {
            std::task::Poll::Ready(r) => assert_eq!(r.unwrap_err().kind(), ErrorKind::NoRuntime),
            std::task::Poll::Pending => panic!("expected an immediate answer"),
        }
    };
    now(Box::pin(async { tokens.refresh().await.map(drop) }));
    now(Box::pin(tokens.set(login())));
    now(Box::pin(async { tokens.load().await.map(drop) }));
    now(Box::pin(tokens.clear()));
    now(Box::pin(tokens.end_session()));
}

#[tokio::test(start_paused = true)]
async fn a_refresh_that_ran_out_of_attempts_keeps_the_servers_error_code() {
    let source = source::from_fn(|_| async {
        Err::<TokenSet, _>(Error::transient("HTTP 503").with_oauth_error("temporarily_unavailable"))
    });
    let tokens = TokenManager::builder(source)
        .initial(login())
        .max_attempts(2)
        .build();
    let err = tokens.refresh().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.message().contains("2 attempts"), "{err}");
    assert_eq!(err.oauth_error(), Some("temporarily_unavailable"));
}
