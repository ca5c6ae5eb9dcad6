//! Step-up and resource discovery through the layer: a real axum resource
//! on 127.0.0.1 answers RFC 9470 and RFC 9728 challenges, the layered
//! hyper client returns them untouched (no refresh, no replay: a new token
//! cannot answer them), and `StepUp::from_response` turns them into the
//! hints a login takes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, http::HeaderMap, routing::get};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use tower::{Layer, ServiceExt};
use tower_token_refresh::{StepUp, TokenManager, TokenRefreshLayer, TokenSet, source};
use tower_token_refresh_test_util::hyper_client;

const MFA: &str = r#"Bearer realm="api", error="insufficient_user_authentication", error_description="A different authentication level is required", acr_values="urn:example:mfa phr", max_age="300", resource_metadata="https://api.example.com/.well-known/oauth-protected-resource""#;
const SCOPE: &str = r#"Bearer realm="api", error="insufficient_scope", scope="admin""#;
const DISCOVER: &str =
    r#"Bearer resource_metadata="http://127.0.0.1/.well-known/oauth-protected-resource""#;

/// A resource that answers each path with its challenge, counting calls.
async fn resource() -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let challenge = |status: StatusCode, value: &'static str| {
        let calls = calls.clone();
        move |headers: HeaderMap| {
            calls.fetch_add(1, Ordering::SeqCst);
            assert!(headers.contains_key(header::AUTHORIZATION));
            async move { (status, [(header::WWW_AUTHENTICATE, value)], "") }
        }
    };
    let router = Router::new()
        .route("/mfa", get(challenge(StatusCode::UNAUTHORIZED, MFA)))
        .route("/admin", get(challenge(StatusCode::FORBIDDEN, SCOPE)))
        // RFC 9728 §5.1: a request without a token gets only the pointer.
        .route(
            "/discover",
            get(challenge(StatusCode::UNAUTHORIZED, DISCOVER)),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{addr}"), calls)
}

fn tokens() -> (TokenManager, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let manager = TokenManager::builder(source::from_fn(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok(TokenSet::bearer("new").with_expires_in(Duration::from_secs(3600))) }
    }))
    .initial(TokenSet::bearer("old").with_expires_in(Duration::from_secs(3600)))
    .build();
    (manager, fetches)
}

/// GETs `path` through the layered client: the StepUp of the response,
/// its status, how many requests the resource saw, how many refreshes ran.
async fn through_layer(path: &str) -> (Option<StepUp>, StatusCode, usize, usize) {
    let (base, calls) = resource().await;
    let (tokens, fetches) = tokens();
    let client = TokenRefreshLayer::new(tokens.clone())
        .allow_origin(base.parse().unwrap())
        .layer(hyper_client());
    let request = Request::get(format!("{base}{path}"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    (
        StepUp::from_response(&response),
        response.status(),
        calls.load(Ordering::SeqCst),
        fetches.load(Ordering::SeqCst),
    )
}

#[tokio::test]
async fn a_step_up_401_passes_through_and_yields_acr_values_and_max_age() {
    let (step_up, status, calls, fetches) = through_layer("/mfa").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!((calls, fetches), (1, 0), "no refresh, no replay");
    let step_up = step_up.unwrap();
    assert!(step_up.is_step_up());
    assert_eq!(step_up.status(), StatusCode::UNAUTHORIZED);
    let hints = step_up.login_hints();
    assert_eq!(hints.acr_values(), Some("urn:example:mfa phr"));
    assert_eq!(hints.max_age(), Some(Duration::from_secs(300)));
    assert_eq!(
        step_up.resource_metadata().unwrap().to_string(),
        "https://api.example.com/.well-known/oauth-protected-resource"
    );
}

#[tokio::test]
async fn an_insufficient_scope_403_yields_the_scope_to_ask_for() {
    let (step_up, status, calls, fetches) = through_layer("/admin").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!((calls, fetches), (1, 0));
    let step_up = step_up.unwrap();
    assert!(step_up.is_insufficient_scope());
    assert!(!step_up.is_step_up());
    assert_eq!(step_up.login_hints().scope(), Some("admin"));
}

#[tokio::test]
async fn a_bare_resource_metadata_challenge_is_found() {
    let (step_up, status, _, fetches) = through_layer("/discover").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // No error code: the layer takes it for a rejected token and replays
    // once with a new one (RFC 6750 §3.1); the pointer is still there.
    assert_eq!(fetches, 1);
    let step_up = step_up.unwrap();
    assert_eq!(
        step_up.resource_metadata().unwrap().to_string(),
        "http://127.0.0.1/.well-known/oauth-protected-resource"
    );
    assert!(step_up.login_hints().is_empty());
}
