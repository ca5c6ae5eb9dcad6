//! Grants and response parsing, against in-process `HttpClient` closures
//! (the other tests of this crate use test-util's real servers). The
//! fallback chain tests stayed in core (`sources`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use proptest::prelude::*;
use tower_token_refresh_core::{ErrorKind, TokenSource};
use tower_token_refresh_oauth2::{
    ClientAuth, ClientCredentialsGrant, HttpClient, parse_token_response,
    token_response::jwt_expiry,
};

type Seen = Arc<Mutex<Vec<Request<Bytes>>>>;

/// A token endpoint that records requests and answers `status` + `body`.
fn endpoint(status: u16, body: &'static str) -> (Seen, impl HttpClient) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let client = move |req: Request<Bytes>| {
        log.lock().unwrap().push(req);
        let mut r = Response::new(Bytes::from_static(body.as_bytes()));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        std::future::ready(Ok::<_, std::io::Error>(r))
    };
    (seen, client)
}

fn body_of(req: &Request<Bytes>) -> String {
    String::from_utf8(req.body().to_vec()).unwrap()
}

const OK: &str = r#"{"access_token":"cc","token_type":"bearer","expires_in":60}"#;

#[tokio::test]
async fn client_credentials_posts_scope_audience_resource_and_extra_params() {
    let (seen, client) = endpoint(200, OK);
    let grant = ClientCredentialsGrant::new(
        "http://127.0.0.1:1/token".parse().unwrap(),
        ClientAuth::basic("svc", "s3cret"),
        client,
    )
    .scope("read write")
    .audience("https://api.example")
    .resource("https://r1.example".parse().unwrap())
    .param("tenant", "t-1");
    let tokens = grant.fetch(None).await.unwrap();
    assert_eq!(tokens.access_token().secret(), "cc");
    assert!(tokens.refresh_token().is_none());
    let req = &seen.lock().unwrap()[0];
    assert_eq!(req.method(), http::Method::POST);
    assert_eq!(
        body_of(req),
        "grant_type=client_credentials&scope=read+write&audience=https%3A%2F%2Fapi.example\
         &tenant=t-1&resource=https%3A%2F%2Fr1.example"
    );
    assert!(req.headers()["authorization"].is_sensitive());
    assert!(!format!("{grant:?}").contains("s3cret"));
}

#[tokio::test]
async fn client_credentials_supports_post_and_public_clients() {
    let (seen, client) = endpoint(200, OK);
    let post = ClientCredentialsGrant::new(
        "http://127.0.0.1:1/token".parse().unwrap(),
        ClientAuth::post("svc", "s3cret"),
        client,
    );
    post.fetch(None).await.unwrap();
    let (seen_none, client) = endpoint(200, OK);
    let public = ClientCredentialsGrant::new(
        "http://127.0.0.1:1/token".parse().unwrap(),
        ClientAuth::none("app"),
        client,
    );
    public.fetch(None).await.unwrap();
    let post_req = &seen.lock().unwrap()[0];
    assert_eq!(
        body_of(post_req),
        "grant_type=client_credentials&client_id=svc&client_secret=s3cret"
    );
    assert!(post_req.headers().get("authorization").is_none());
    assert_eq!(
        body_of(&seen_none.lock().unwrap()[0]),
        "grant_type=client_credentials&client_id=app"
    );
}

#[tokio::test]
async fn client_credentials_errors_map_and_never_quote_the_secret() {
    let cases = [
        (
            401,
            r#"{"error":"invalid_client","error_description":"bad secret s3cret"}"#,
            ErrorKind::Rejected,
        ),
        (400, r#"{"error":"invalid_scope"}"#, ErrorKind::Rejected),
        (
            503,
            r#"{"error":"temporarily_unavailable"}"#,
            ErrorKind::Transient,
        ),
        (502, "<html>Bad Gateway</html>", ErrorKind::Transient),
        (
            200,
            r#"{"token_type":"Bearer"}"#,
            ErrorKind::InvalidResponse,
        ),
    ];
    for (status, body, kind) in cases {
        let (_, client) = endpoint(status, body);
        let grant = ClientCredentialsGrant::new(
            "http://127.0.0.1:1/token".parse().unwrap(),
            ClientAuth::post("svc", "s3cret"),
            client,
        );
        let err = grant.fetch(None).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{status} {body}");
        assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
    }
}

/// Each malformed token response, with the exact kind it must give.
#[tokio::test(start_paused = true)]
async fn malformed_token_responses_have_exact_kinds() {
    let cases: [(u16, &str, Option<ErrorKind>); 14] = [
        (
            200,
            r#"{"access_token":"a","token_type":"Bearer","expires_in":"60"}"#,
            None,
        ),
        (200, r#"{"access_token":"a","token_type":"Bearer"}"#, None),
        (
            200,
            r#"{"access_token":"a","token_type":"Bearer","expires_in":"1h"}"#,
            Some(ErrorKind::InvalidResponse),
        ),
        (
            200,
            r#"{"access_token":"a","token_type":"Bearer","expires_in":null}"#,
            None,
        ),
        (
            200,
            r#"{"access_token":"a","token_type":"Bearer","expires_in":true}"#,
            Some(ErrorKind::InvalidResponse),
        ),
        (
            200,
            r#"{"token_type":"Bearer"}"#,
            Some(ErrorKind::InvalidResponse),
        ),
        (
            200,
            r#"{"access_token":"a"}"#,
            Some(ErrorKind::InvalidResponse),
        ),
        (
            200,
            r#"{"access_token":7,"token_type":"Bearer"}"#,
            Some(ErrorKind::InvalidResponse),
        ),
        (
            200,
            "<html><body>Login</body></html>",
            Some(ErrorKind::InvalidResponse),
        ),
        (200, "", Some(ErrorKind::InvalidResponse)),
        (
            502,
            "<html>502 Bad Gateway</html>",
            Some(ErrorKind::Transient),
        ),
        (
            400,
            r#"{"error":"invalid_grant"}"#,
            Some(ErrorKind::SessionExpired),
        ),
        (
            400,
            r#"{"error":"unauthorized_client"}"#,
            Some(ErrorKind::Rejected),
        ),
        (
            403,
            "<html>Forbidden</html>",
            Some(ErrorKind::InvalidResponse),
        ),
    ];
    for (status, body, expected) in cases {
        let mut r = Response::new(Bytes::from_static(body.as_bytes()));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        let got = parse_token_response(&http::Request::new(Bytes::new()), r)
            .map(|_| ())
            .map_err(|e| e.kind());
        match expected {
            None => assert_eq!(got, Ok(()), "{status} {body}"),
            Some(kind) => assert_eq!(got, Err(kind), "{status} {body}"),
        }
    }
}

// ---------------------------------------------------------------- properties

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        // A fixed seed: the same cases on every run and in CI.
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x7474_7200_2024),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn jwt_expiry_never_panics_on_arbitrary_text(token in ".{0,300}") {
        let _ = jwt_expiry(&token);
    }

    #[test]
    fn jwt_expiry_never_panics_on_arbitrary_payload_bytes(
        payload in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let _ = jwt_expiry(&format!("e30.{}.sig", b64url(&payload)));
    }

    #[test]
    fn jwt_expiry_round_trips_valid_tokens(
        exp in 0u64..253_402_300_799,
        sub in "[a-zA-Z0-9]{0,20}",
        padded in any::<bool>(),
    ) {
        let payload = format!(r#"{{"sub":"{sub}","exp":{exp},"iat":1}}"#);
        let mut encoded = b64url(payload.as_bytes());
        if padded {
            while !encoded.len().is_multiple_of(4) {
                encoded.push('=');
            }
        }
        let token = format!("{}.{encoded}.c2ln", b64url(br#"{"alg":"ES256"}"#));
        prop_assert_eq!(jwt_expiry(&token), Some(UNIX_EPOCH + Duration::from_secs(exp)));
    }

    #[test]
    fn token_response_parser_never_panics_on_arbitrary_bytes(
        status in 100u16..600,
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let _guard = rt.enter();
        let mut r = Response::new(Bytes::from(body));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        let _ = parse_token_response(&http::Request::new(Bytes::new()), r);
    }

    #[test]
    fn token_response_parser_never_panics_on_arbitrary_json(value in json_value()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let _guard = rt.enter();
        for status in [200u16, 400, 503] {
            let mut r = Response::new(Bytes::from(value.to_string()));
            *r.status_mut() = StatusCode::from_u16(status).unwrap();
            let _ = parse_token_response(&http::Request::new(Bytes::new()), r);
        }
    }
}

/// JSON values biased towards token-response shapes.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::from),
        (0u64..u64::MAX).prop_map(|exp| {
            Value::from(format!(
                "e30.{}.x",
                b64url(format!(r#"{{"exp":{exp}}}"#).as_bytes())
            ))
        }),
    ];
    let value = leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let keys = prop_oneof![
        Just("access_token"),
        Just("token_type"),
        Just("expires_in"),
        Just("refresh_token"),
        Just("scope"),
        Just("error"),
        Just("error_description"),
    ];
    prop_oneof![
        value.clone(),
        proptest::collection::btree_map(keys, value, 0..7).prop_map(|m| {
            serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        }),
    ]
}

#[test]
fn jwt_expiry_reads_a_token_that_expires_in_the_future() {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let token = format!(
        "{}.{}.sig",
        b64url(b"{}"),
        b64url(format!(r#"{{"exp":{exp}}}"#).as_bytes())
    );
    assert!(jwt_expiry(&token).unwrap() > SystemTime::now());
}
