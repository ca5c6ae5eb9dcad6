//! What a refresh that got no answer costs, and what one manager's ending
//! of a session means for another sharing its store: the still-valid
//! access token serves on, a reuse grace allows one more presentation, a
//! tombstone ends every holder of the refresh token, a newer stored set is
//! taken for its refresh token even when its access token expired, and
//! stored fields a build does not know survive a refresh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::sleep;
use tower_token_refresh_core::{
    EndReason, Error, ErrorKind, Lookup, MemoryStore, Rotation, TokenManager, TokenSet,
    TokenSource, TokenStore, source,
};

/// A token endpoint that hangs on the calls listed in `hang` and records
/// which refresh token each call presented.
#[derive(Clone, Default)]
struct Endpoint {
    calls: Arc<AtomicU64>,
    hang: Arc<Mutex<Vec<u64>>>,
    refuse: Arc<Mutex<Vec<u64>>>,
    presented: Arc<Mutex<Vec<Option<String>>>>,
}

impl Endpoint {
    fn hanging_on(calls: &[u64]) -> Self {
        let e = Endpoint::default();
        e.hang.lock().unwrap().extend(calls);
        e
    }

    fn presented(&self) -> Vec<Option<String>> {
        self.presented.lock().unwrap().clone()
    }

    fn source(&self) -> impl TokenSource {
        let this = self.clone();
        source::from_fn(move |current: Option<TokenSet>| {
            let this = this.clone();
            async move {
                let n = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
                this.presented
                    .lock()
                    .unwrap()
                    .push(current.and_then(|c| c.refresh_token().map(|r| r.secret().to_owned())));
                if this.hang.lock().unwrap().contains(&n) {
                    std::future::pending::<()>().await;
                }
                if this.refuse.lock().unwrap().contains(&n) {
                    return Err(
                        Error::session_expired("invalid_grant").with_oauth_error("invalid_grant")
                    );
                }
                Ok(TokenSet::bearer(format!("token-{n}"))
                    .with_expires_in(Duration::from_secs(100))
                    .with_refresh_token(format!("refresh-{n}")))
            }
        })
    }
}

fn header(tokens: &TokenManager) -> Option<String> {
    match tokens.lookup() {
        Lookup::Ready(auth) => Some(auth.header().to_str().unwrap().to_owned()),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_refresh_ahead_serves_the_access_token_until_it_expires() {
    let endpoint = Endpoint::hanging_on(&[1]);
    let hook = Arc::new(AtomicUsize::new(0));
    let tokens = TokenManager::builder(endpoint.source())
        .initial(
            TokenSet::bearer("token-0")
                .with_expires_in(Duration::from_secs(20))
                .with_refresh_token("refresh-0"),
        )
        .refresh_ahead(Duration::from_secs(10))
        .refresh_jitter(0.0)
        .expiry_leeway(Duration::ZERO)
        .attempt_timeout(Duration::from_secs(2))
        .on_session_expired({
            let hook = hook.clone();
            move || {
                hook.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build();
    assert_eq!(header(&tokens).as_deref(), Some("Bearer token-0"));
    // Into the refresh-ahead window: a background refresh starts, and its
    // request gets no answer (at 11 + 2 s).
    sleep(Duration::from_secs(11)).await;
    assert_eq!(header(&tokens).as_deref(), Some("Bearer token-0"));
    sleep(Duration::from_secs(4)).await;
    assert_eq!(endpoint.calls.load(Ordering::SeqCst), 1);
    // 5 s of life left: still served, and no second presentation.
    assert!(!tokens.is_session_expired());
    assert_eq!(header(&tokens).as_deref(), Some("Bearer token-0"));
    assert_eq!(hook.load(Ordering::SeqCst), 0);
    // Past its expiry the session ends, once, saying why.
    sleep(Duration::from_secs(6)).await;
    let err = tokens.authorization().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    assert!(err.is_outcome_unknown(), "{err}");
    assert_eq!(hook.load(Ordering::SeqCst), 1);
    assert_eq!(endpoint.presented(), [Some("refresh-0".to_owned())]);
}

#[tokio::test(start_paused = true)]
async fn a_rejected_token_after_an_unanswered_refresh_ends_the_session() {
    let endpoint = Endpoint::hanging_on(&[1]);
    let tokens = TokenManager::builder(endpoint.source())
        .initial(
            TokenSet::bearer("token-0")
                .with_expires_in(Duration::from_secs(100))
                .with_refresh_token("refresh-0"),
        )
        .attempt_timeout(Duration::from_secs(2))
        .build();
    // A server rejected token-0: the refresh it starts gets no answer, so
    // token-0 is not handed back to the caller that rejected it.
    let err = tokens.refresh().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    assert_eq!(endpoint.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn within_the_reuse_grace_an_unanswered_refresh_token_is_presented_once_more() {
    let endpoint = Endpoint::hanging_on(&[1]);
    let tokens = TokenManager::builder(endpoint.source())
        .initial(TokenSet::bearer("token-0").with_refresh_token("refresh-0"))
        .attempt_timeout(Duration::from_millis(200))
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .rotation(Rotation::Grace(Duration::from_secs(60)))
        .build();
    let auth = tokens.refresh().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer token-2");
    assert_eq!(
        endpoint.presented(),
        [Some("refresh-0".to_owned()), Some("refresh-0".to_owned())],
        "the one retry the grace allows"
    );
}

#[tokio::test(start_paused = true)]
async fn a_grace_retry_that_gets_no_answer_ends_the_session() {
    let endpoint = Endpoint::hanging_on(&[1, 2]);
    let tokens = TokenManager::builder(endpoint.source())
        .initial(TokenSet::bearer("token-0").with_refresh_token("refresh-0"))
        .attempt_timeout(Duration::from_millis(200))
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .max_attempts(5)
        .rotation(Rotation::Grace(Duration::from_secs(60)))
        .build();
    let err = tokens.refresh().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    assert!(err.is_outcome_unknown());
    assert_eq!(
        endpoint.calls.load(Ordering::SeqCst),
        2,
        "never a third time"
    );
}

#[tokio::test(start_paused = true)]
async fn a_session_refused_in_one_manager_ends_in_another_without_presenting() {
    let store = Arc::new(MemoryStore::new());
    let set = TokenSet::bearer("token-0")
        .with_expires_in(Duration::from_secs(100))
        .with_refresh_token("refresh-0");
    store.save(&set).await.unwrap();
    let refusing = Endpoint::default();
    refusing.refuse.lock().unwrap().push(1);
    let a = TokenManager::builder(refusing.source())
        .store(store.clone())
        .build();
    let other = Endpoint::default();
    let b = TokenManager::builder(other.source())
        .store(store.clone())
        .build();
    assert!(a.load().await.unwrap() && b.load().await.unwrap());
    assert!(a.refresh().await.unwrap_err().is_session_expired());
    // The store holds a tombstone: no refresh token, its fingerprint only.
    let stored = store.load().await.unwrap().unwrap();
    assert_eq!(stored.ended(), Some(EndReason::InvalidGrant));
    assert!(stored.refresh_token().is_none());
    assert!(
        !String::from_utf8(stored.to_stored_json())
            .unwrap()
            .contains("refresh-0")
    );
    // B holds refresh-0 too, and does not present it.
    assert!(b.refresh().await.unwrap_err().is_session_expired());
    assert_eq!(other.calls.load(Ordering::SeqCst), 0);
    // A new login replaces the tombstone.
    b.set(TokenSet::bearer("fresh").with_refresh_token("refresh-new"))
        .await
        .unwrap();
    assert_eq!(store.load().await.unwrap().unwrap().ended(), None);
}

#[tokio::test(start_paused = true)]
async fn a_newer_stored_set_is_taken_for_its_refresh_token_even_when_its_access_token_expired() {
    let store = Arc::new(MemoryStore::new());
    let a_endpoint = Endpoint::default();
    let a = TokenManager::builder(a_endpoint.source())
        .store(store.clone())
        .build();
    let b_endpoint = Endpoint::default();
    let b = TokenManager::builder(b_endpoint.source())
        .store(store.clone())
        .build();
    a.set(
        TokenSet::bearer("token-0")
            .with_expires_in(Duration::from_secs(10))
            .with_refresh_token("refresh-0"),
    )
    .await
    .unwrap();
    assert!(b.load().await.unwrap());
    // A refreshes: refresh-0 is spent, refresh-1 stored with a 100 s token.
    a.refresh().await.unwrap();
    // Long after, both access tokens have expired; B still holds refresh-0.
    sleep(Duration::from_secs(200)).await;
    b.authorization().await.unwrap();
    assert_eq!(
        b_endpoint.presented(),
        [Some("refresh-1".to_owned())],
        "B presents the live refresh token, never the spent one"
    );
}

#[tokio::test(start_paused = true)]
async fn stored_fields_this_build_does_not_know_survive_a_refresh() {
    let store = Arc::new(MemoryStore::new());
    let json = br#"{"version":1,"access_token":"token-0","token_type":"Bearer","refresh_token":"refresh-0","x_newer_build":{"kept":true}}"#;
    store
        .save(&TokenSet::from_stored_json(json).unwrap())
        .await
        .unwrap();
    let endpoint = Endpoint::default();
    let tokens = TokenManager::builder(endpoint.source())
        .store(store.clone())
        .build();
    assert!(tokens.load().await.unwrap());
    tokens.refresh().await.unwrap();
    let saved = String::from_utf8(store.load().await.unwrap().unwrap().to_stored_json()).unwrap();
    assert!(saved.contains("token-1"), "{saved}");
    assert!(
        saved.contains(r#""x_newer_build":{"kept":true}"#),
        "{saved}"
    );
}

#[tokio::test(start_paused = true)]
async fn under_a_grace_an_unanswered_refresh_ahead_leaves_its_retry_until_a_token_is_needed() {
    let endpoint = Endpoint::hanging_on(&[1]);
    let tokens = TokenManager::builder(endpoint.source())
        .initial(
            TokenSet::bearer("token-0")
                .with_expires_in(Duration::from_secs(20))
                .with_refresh_token("refresh-0"),
        )
        .refresh_ahead(Duration::from_secs(10))
        .refresh_jitter(0.0)
        .expiry_leeway(Duration::ZERO)
        .attempt_timeout(Duration::from_secs(2))
        .rotation(Rotation::Grace(Duration::from_secs(60)))
        .build();
    // The background refresh at 11 s gets no answer by 13 s.
    sleep(Duration::from_secs(11)).await;
    assert_eq!(header(&tokens).as_deref(), Some("Bearer token-0"));
    sleep(Duration::from_secs(5)).await;
    // No retry of its own while token-0 serves: another process sharing the
    // store may need a token first and make the one retry.
    assert_eq!(endpoint.calls.load(Ordering::SeqCst), 1);
    assert_eq!(header(&tokens).as_deref(), Some("Bearer token-0"));
    // Once token-0 is stale, this process needs a token and retries.
    sleep(Duration::from_secs(5)).await;
    let auth = tokens.authorization().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer token-2");
    assert_eq!(
        endpoint.presented(),
        [Some("refresh-0".to_owned()), Some("refresh-0".to_owned())]
    );
}
