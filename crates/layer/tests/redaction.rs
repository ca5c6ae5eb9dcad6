//! No access token, refresh token or client secret in `Debug` of any public
//! type or in tracing output, through full refresh cycles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    io,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;
use tower::{Service, ServiceExt};
use tower_token_refresh::{TokenRefreshLayer, oauth2::ClientAuth};
use tower_token_refresh_test_util::Fault;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn no_secret_in_debug_or_trace_output_of_full_refresh_cycles() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    // Current-thread runtime: every task of this test logs on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

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
    let layer = TokenRefreshLayer::new(w.tokens.clone());
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

    let trace = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // The capture works: it saw the refreshes, the failure and the expiry.
    assert!(trace.contains("token refreshed"), "{trace}");
    assert!(trace.contains("token refresh attempt failed"), "{trace}");
    assert!(trace.contains("session expired"), "{trace}");
    let debug = debug.join("\n");
    for secret in &secrets {
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

fn hyper_client_for_debug() -> Http {
    tower_token_refresh_test_util::hyper_client()
}
