//! No access token, refresh token or client secret in `Debug` of any public
//! type or in tracing output, through full refresh cycles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::{capture::Captured, *};
use tower::{Service, ServiceExt};
use tower_token_refresh::{TokenRefreshLayer, oauth2::ClientAuth};
use tower_token_refresh_test_util::Fault;

fn assert_no_secret(secrets: &[String], trace: &str, debug: &str) {
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(
            !trace.contains(secret.as_str()),
            "a secret in the trace:\n{trace}"
        );
        assert!(
            !debug.contains(secret.as_str()),
            "a secret in Debug:\n{debug}"
        );
    }
}

#[tokio::test]
async fn no_secret_in_debug_or_trace_output_of_full_refresh_cycles() {
    // Current-thread runtime: every task of this test logs on this thread.
    let (captured, _guard) = Captured::trace();

    let w = world(|b| {
        b.max_attempts(2)
            .min_refresh_interval(std::time::Duration::from_millis(10))
    })
    .await;
    let mut secrets = vec![
        w.login.access_token.clone(),
        w.login.refresh_token.clone(),
        w.auth.client_secret().to_owned(),
    ];
    let mut debug = Vec::new();

    // Rotation: rejected, refreshed, replayed.
    w.auth.expire_access_tokens();
    assert_eq!(w.get("/api/data").await.unwrap().status(), StatusCode::OK);
    // A transient failure, then success.
    w.auth.expire_access_tokens();
    w.auth.inject(Fault::Html502, 1);
    assert_eq!(w.get("/api/data").await.unwrap().status(), StatusCode::OK);
    let current = w.tokens.current().unwrap();
    secrets.push(current.access_token().secret().to_owned());
    secrets.push(current.refresh_token().unwrap().secret().to_owned());

    // Debug of every public type that holds or handles a secret.
    let layer = TokenRefreshLayer::new(w.tokens.clone()).allow_origin(origin_of(w.api.addr()));
    let mut svc = tower::Layer::layer(&layer, hyper_client_for_debug());
    let in_flight = svc.ready().await.unwrap().call(
        Request::get(w.api.url("/api/data"))
            .body(Full::<Bytes>::default())
            .unwrap(),
    );
    debug.push(format!("{in_flight:?}"));
    drop(in_flight);
    debug.push(format!(
        "{:?} {:?} {:?} {:?}",
        w.tokens, layer, svc, w.client
    ));
    debug.push(format!(
        "{current:?} {:?} {:?}",
        w.tokens.current(),
        w.tokens.lookup()
    ));
    debug.push(format!("{:?}", w.tokens.authorization().await.unwrap()));
    debug.push(format!("{:?}", w.tokens.refresh()));
    debug.push(format!(
        "{:?}",
        ClientAuth::basic(w.auth.client_id(), w.auth.client_secret())
    ));
    debug.push(format!("{:?}", grant(&w.auth, hyper_client_for_debug())));
    debug.push(format!("{:?} {:?}", w.login, w.auth));

    // The session ends: invalid_grant.
    w.auth.expire_access_tokens();
    w.auth.inject(Fault::InvalidGrant, 1);
    let err = w.get("/api/data").await.unwrap_err();
    debug.push(format!("{err} {err:?}"));
    assert!(session_error(&err).unwrap().is_session_expired());

    let trace = captured.text();
    // The capture works: it saw the refreshes, the failure and the expiry.
    assert!(trace.contains("token refreshed"), "{trace}");
    assert!(trace.contains("token refresh attempt failed"), "{trace}");
    assert!(trace.contains("session expired"), "{trace}");
    let debug = debug.join("\n");
    assert_no_secret(&secrets, &trace, &debug);
}

fn hyper_client_for_debug() -> Http {
    tower_token_refresh_test_util::hyper_client()
}

/// The same search over the other paths that carry secrets: discovery,
/// introspection that refreshes, client_credentials refused, a retried 503,
/// logout by revocation with a 503 first.
#[tokio::test]
async fn no_secret_in_the_oauth2_and_retry_paths() {
    use tower_token_refresh::{
        ServiceClient,
        oauth2::{ClientCredentialsGrant, ProviderMetadata},
        retry::ServerErrorRetry,
    };
    use tower_token_refresh_test_util::{Endpoint, hyper_client};

    // Current-thread runtime: every task of this test logs on this thread.
    let (captured, _guard) = Captured::trace();

    let w = world(|b| b.min_refresh_interval(std::time::Duration::from_millis(10))).await;
    let http = ServiceClient::new(hyper_client());
    let auth = || ClientAuth::basic(w.auth.client_id(), w.auth.client_secret());
    let mut secrets = vec![
        w.login.access_token.clone(),
        w.login.refresh_token.clone(),
        w.auth.client_secret().to_owned(),
    ];
    let mut debug = Vec::new();

    let meta = ProviderMetadata::discover(&w.auth.issuer(), &http)
        .await
        .unwrap();
    debug.push(format!("{meta:?}"));
    // Introspection finds the access token revoked and refreshes once.
    w.auth.revoke(&w.login.access_token);
    let introspection = meta.introspection_client(auth(), http.clone()).unwrap();
    debug.push(format!("{introspection:?}"));
    assert!(!introspection.check(&w.tokens).await.unwrap());
    let current = w.tokens.current().unwrap();
    secrets.push(current.access_token().secret().to_owned());
    secrets.push(current.refresh_token().unwrap().secret().to_owned());

    // client_credentials with a wrong secret: refused, the secret nowhere.
    let wrong_secret = "not-the-secret-123".to_owned();
    secrets.push(wrong_secret.clone());
    let grant = ClientCredentialsGrant::new(
        w.auth.token_url().parse().unwrap(),
        ClientAuth::basic(w.auth.client_id(), wrong_secret.as_str()),
        http.clone(),
    );
    debug.push(format!("{grant:?}"));
    let err = tower_token_refresh::TokenSource::fetch(&grant, None)
        .await
        .unwrap_err();
    debug.push(format!("{err} {err:?}"));

    // A request the server-error policy retries once.
    let flaky = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let inner = tower::service_fn({
        let flaky = flaky.clone();
        move |req: Request<Full<Bytes>>| {
            let first = flaky.swap(false, std::sync::atomic::Ordering::SeqCst);
            async move {
                debug_assert!(req.headers().contains_key(http::header::AUTHORIZATION));
                let mut response = http::Response::new(Full::<Bytes>::default());
                if first {
                    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        }
    });
    let client = tower::ServiceBuilder::new()
        .layer(ServerErrorRetry::new().seed(7).into_layer())
        .layer(
            TokenRefreshLayer::new(w.tokens.clone())
                .allow_origin("https://api.example.com".parse().unwrap()),
        )
        .service(inner);
    debug.push(format!("{client:?}"));
    let response = client
        .oneshot(
            Request::get("https://api.example.com/")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Logout: the revocation endpoint answers 503 once, then revokes.
    w.auth
        .inject_at(Endpoint::Revocation, Fault::TemporarilyUnavailable, 1);
    let revocation = meta.revocation_client(auth(), http.clone()).unwrap();
    debug.push(format!("{revocation:?}"));
    revocation.logout(&w.tokens).await.unwrap();
    assert!(w.tokens.is_session_expired());

    let trace = captured.text();
    assert!(trace.contains("token refreshed"), "{trace}");
    let debug = debug.join("\n");
    assert_no_secret(&secrets, &trace, &debug);
}
