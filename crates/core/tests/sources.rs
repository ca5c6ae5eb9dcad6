//! Fallback chains of token sources (`TokenSourceExt::or_else`). (The
//! grant and response parsing tests went to the oauth2 crate.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use tower_token_refresh_core::{
    Error, ErrorKind, TokenManager, TokenSet, TokenSource,
    source::{self, TokenSourceExt},
};

// ---------------------------------------------------------------- fallback

fn counting(calls: &Arc<AtomicUsize>, result: fn() -> Result<TokenSet, Error>) -> impl TokenSource {
    let calls = calls.clone();
    source::from_fn(move |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(result())
    })
}

#[tokio::test]
async fn or_else_tries_the_fallback_when_the_first_source_session_expired() {
    let (a, b) = (Arc::default(), Arc::default());
    let chain = counting(&a, || Err(Error::session_expired("revoked")))
        .or_else(counting(&b, || Ok(TokenSet::bearer("relogin"))));
    let tokens = chain.fetch(None).await.unwrap();
    assert_eq!(tokens.access_token().secret(), "relogin");
    assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 1));
}

#[tokio::test]
async fn or_else_tries_the_fallback_when_the_first_source_is_rejected() {
    let b = Arc::default();
    let chain =
        source::from_fn(|_| async { Err(Error::new(ErrorKind::Rejected, "unauthorized_client")) })
            .or_else(counting(&b, || Ok(TokenSet::bearer("cc"))));
    assert!(chain.fetch(None).await.is_ok());
    assert_eq!(b.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn or_else_does_not_fall_back_on_a_transient_failure() {
    let b = Arc::default();
    let chain = source::from_fn(|_| async { Err(Error::transient("down")) })
        .or_else(counting(&b, || Ok(TokenSet::bearer("x"))));
    assert_eq!(
        chain.fetch(None).await.unwrap_err().kind(),
        ErrorKind::Transient
    );
    assert_eq!(b.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn when_every_source_fails_the_chain_is_session_expired() {
    let chain = source::from_fn(|_| async { Err(Error::session_expired("refresh revoked")) })
        .or_else(source::from_fn(|_| async {
            Err(Error::new(ErrorKind::Rejected, "client disabled"))
        }))
        .or_else(source::from_fn(|_| async {
            Err(Error::session_expired("silent login needs the user"))
        }));
    let err = chain.fetch(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    // A transient fallback failure stays transient: the next refresh retries.
    let chain = source::from_fn(|_| async { Err(Error::session_expired("revoked")) })
        .or_else(source::from_fn(|_| async { Err(Error::transient("down")) }));
    assert_eq!(
        chain.fetch(None).await.unwrap_err().kind(),
        ErrorKind::Transient
    );
}

#[tokio::test(start_paused = true)]
async fn a_manager_on_a_failing_chain_fires_the_hook_once() {
    let hooks = Arc::new(AtomicUsize::new(0));
    let h = hooks.clone();
    let tokens = TokenManager::builder(
        source::from_fn(|_| async { Err(Error::session_expired("revoked")) }).or_else(
            source::from_fn(|_| async { Err(Error::session_expired("no user")) }),
        ),
    )
    .on_session_expired(move || {
        h.fetch_add(1, Ordering::SeqCst);
    })
    .build();
    for _ in 0..3 {
        let err = tokens.authorization().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
    }
    assert_eq!(hooks.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_fallback_sees_the_current_set() {
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let tokens = TokenManager::builder(
        source::from_fn(|_| async { Err(Error::session_expired("revoked")) }).or_else(
            source::from_fn(move |current: Option<TokenSet>| {
                *s.lock().unwrap() = current.map(|c| c.access_token().secret().to_owned());
                async { Ok(TokenSet::bearer("new")) }
            }),
        ),
    )
    .initial(TokenSet::bearer("old"))
    .build();
    tokens.refresh().await.unwrap();
    assert_eq!(seen.lock().unwrap().as_deref(), Some("old"));
}
