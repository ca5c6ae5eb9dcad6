//! The session state a caller can watch: fresh, refreshing, degraded but
//! valid, unavailable, ended with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use tokio::time::sleep;
use tower_token_refresh_core::{
    Error, ErrorKind, MemoryStore, SessionState, Sessions, TokenManager, TokenSet, source,
};

const LIFETIME: Duration = Duration::from_secs(600);

/// A source that answers after 1 s with the queued results, then with
/// fresh tokens.
fn manager(answers: Vec<Result<(), Error>>) -> TokenManager {
    let answers = Arc::new(Mutex::new(answers));
    TokenManager::builder(source::from_fn(move |_| {
        let answers = answers.clone();
        async move {
            sleep(Duration::from_secs(1)).await;
            let next = answers.lock().unwrap().pop();
            next.unwrap_or(Ok(()))?;
            Ok(TokenSet::bearer("new")
                .with_refresh_token("r")
                .with_expires_in(LIFETIME))
        }
    }))
    .initial(
        TokenSet::bearer("old")
            .with_refresh_token("r")
            .with_expires_in(LIFETIME),
    )
    .min_refresh_interval(Duration::ZERO)
    .max_attempts(1)
    .build()
}

fn names(states: &[SessionState]) -> Vec<String> {
    states
        .iter()
        .map(|s| match s {
            SessionState::Empty => "empty".to_owned(),
            SessionState::Fresh { generation } => format!("fresh {generation}"),
            SessionState::Refreshing { generation } => format!("refreshing {generation}"),
            SessionState::Degraded { generation, error } => {
                format!("degraded {generation} {error:?}")
            }
            SessionState::Unavailable { error } => format!("unavailable {error:?}"),
            SessionState::Ended(e) => format!("ended {:?}", e.kind()),
            other => format!("{other:?}"),
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_refresh_shows_as_refreshing_then_fresh_with_the_new_generation() {
    let tokens = manager(vec![]);
    let stream = tokens.watch().into_stream();
    // Followed as it happens (a watch folds changes nobody polled).
    let seen = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut seen = Vec::new();
        while let Some(state) = stream.next().await {
            let done = matches!(state, SessionState::Fresh { generation: 2 });
            seen.push(state);
            if done {
                return seen;
            }
        }
        seen
    });
    tokio::task::yield_now().await;
    tokens.refresh().await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), seen)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(names(&seen), ["fresh 1", "refreshing 1", "fresh 2"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_with_a_valid_token_is_degraded_and_a_success_clears_it() {
    let tokens = manager(vec![Err(Error::transient("503"))]);
    let mut watch = tokens.watch();
    assert!(tokens.refresh().await.is_err());
    assert_eq!(names(&[watch.current()]), ["degraded 1 Transient"]);
    // The token still serves.
    assert_eq!(
        tokens
            .authorization()
            .await
            .unwrap()
            .header()
            .to_str()
            .unwrap(),
        "Bearer old"
    );
    tokens.refresh().await.unwrap();
    let mut now = watch.current();
    while matches!(now, SessionState::Refreshing { .. }) {
        now = watch.changed().await;
    }
    assert_eq!(names(&[now]), ["fresh 2"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_without_a_valid_token_is_unavailable() {
    let tokens = manager(vec![Err(Error::transient("503"))]);
    let watch = tokens.watch();
    sleep(LIFETIME).await;
    assert!(tokens.authorization().await.is_err());
    assert_eq!(names(&[watch.current()]), ["unavailable Transient"]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_refresh_token_or_a_logout_ends_the_session_with_its_reason() {
    let tokens = manager(vec![Err(Error::session_expired("invalid_grant"))]);
    let watch = tokens.watch();
    assert!(tokens.refresh().await.is_err());
    let SessionState::Ended(error) = watch.current() else {
        panic!("{:?}", watch.current());
    };
    assert_eq!(error.kind(), ErrorKind::SessionExpired);

    let tokens = manager(vec![]);
    let watch = tokens.watch();
    tokens.end_session().await.unwrap();
    assert!(watch.current().is_ended());
    // A new login starts it again.
    tokens.set(TokenSet::bearer("again")).await.unwrap();
    assert!(matches!(watch.current(), SessionState::Fresh { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_watched_session_stays_in_memory_and_an_unwatched_one_is_evicted() {
    let sessions: Sessions<u32> =
        Sessions::builder(TokenManager::builder(source::from_fn(|_| async {
            Ok(TokenSet::bearer("t"))
        })))
        .store(|_: &u32| MemoryStore::new())
        .max_sessions(8)
        .build()
        .unwrap();
    sessions.set(0, TokenSet::bearer("watched")).await.unwrap();
    let watch = sessions.session(&0).watch();
    for user in 1..100 {
        sessions.set(user, TokenSet::bearer("t")).await.unwrap();
    }
    assert!(sessions.stats().evicted > 80);
    // Still the same manager: a change through the registry reaches the watch.
    sessions
        .set(0, TokenSet::bearer("watched, again"))
        .await
        .unwrap();
    let SessionState::Fresh { generation } = watch.current() else {
        panic!("{:?}", watch.current());
    };
    assert_eq!(generation, watch.manager().generation());
    assert_eq!(
        watch.manager().current().unwrap().access_token().secret(),
        "watched, again"
    );
}
