//! Bad input never panics: property tests (fixed seed, bounded case count)
//! of the token response parser and the JWT `exp` reader behind it. (Token
//! values that cannot be header values are core's: its `bad_tokens` tests.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::Response;
use proptest::{
    prelude::*,
    test_runner::{Config, RngSeed},
};
use serde_json::{Value, json};
use tokio::time::Instant;
use tower_token_refresh_core::ErrorKind;
use tower_token_refresh_oauth2::{parse_token_response, token_response};

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0xBAD_1A9F7),
        failure_persistence: None,
        ..Config::default()
    }
}

const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("access_token".to_owned()),
                    Just("token_type".to_owned()),
                    Just("expires_in".to_owned()),
                    Just("refresh_token".to_owned()),
                    Just("scope".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn within(got: Duration, want: Duration, slack: Duration) -> bool {
    got <= want + slack && got + slack >= want
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

proptest! {
    #![proptest_config(config(1_000))]

    #[test]
    fn arbitrary_bytes_are_a_typed_error_or_a_token_set(
        body in prop::collection::vec(any::<u8>(), 0..256)
    ) {
        if let Err(e) = token_response::parse(&body) {
            prop_assert_eq!(e.kind(), ErrorKind::InvalidResponse);
        }
    }

    #[test]
    fn arbitrary_json_is_a_typed_error_or_a_token_set(value in json_value()) {
        let body = serde_json::to_vec(&value).unwrap();
        if let Err(e) = token_response::parse(&body) {
            prop_assert_eq!(e.kind(), ErrorKind::InvalidResponse);
        }
    }

    #[test]
    fn arbitrary_token_endpoint_answers_never_panic(
        status in 200u16..600,
        value in json_value(),
        raw in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        retry_after in prop::option::of("[ -~]{0,30}"),
    ) {
        let body = raw.unwrap_or_else(|| serde_json::to_vec(&value).unwrap());
        let mut response = Response::builder().status(status);
        if let Some(after) = retry_after {
            response = response.header(http::header::RETRY_AFTER, after);
        }
        let response = response.body(Bytes::from(body)).unwrap();
        let _ = parse_token_response(&http::Request::new(Bytes::new()), response);
    }

    #[test]
    fn valid_token_responses_parse_exactly(
        access in "\\PC{1,40}",
        token_type in prop_oneof![
            Just("bearer"), Just("Bearer"), Just("BEARER"), Just("DPoP"), Just("N_A")
        ],
        expires_in in prop::option::of(0u64..1_000_000_000_000),
        expires_form in 0u8..3,
        refresh in prop::option::of("\\PC{0,20}"),
        scope in prop::option::of("[ -~]{0,20}"),
        extra in prop::collection::btree_map("x_[a-z]{1,6}", json_value(), 0..3),
    ) {
        let mut body = json!({ "access_token": access, "token_type": token_type });
        let object = body.as_object_mut().unwrap();
        if let Some(n) = expires_in {
            object.insert(
                "expires_in".into(),
                match expires_form {
                    0 => json!(n),
                    1 => json!(n.to_string()),
                    _ => json!(n as f64),
                },
            );
        }
        if let Some(r) = &refresh {
            object.insert("refresh_token".into(), json!(r));
        }
        if let Some(s) = &scope {
            object.insert("scope".into(), json!(s));
        }
        object.extend(extra);
        let before = Instant::now();
        let tokens = token_response::parse(&serde_json::to_vec(&body).unwrap()).unwrap();
        prop_assert_eq!(tokens.access_token().secret(), access.as_str());
        let want_type = if token_type.eq_ignore_ascii_case("bearer") { "Bearer" } else { token_type };
        prop_assert_eq!(tokens.token_type(), want_type);
        prop_assert_eq!(
            tokens.refresh_token().map(|r| r.secret()),
            refresh.as_deref().filter(|r| !r.is_empty())
        );
        prop_assert_eq!(tokens.scope(), scope.as_deref());
        match expires_in {
            Some(n) => {
                let lifetime = tokens.expires_at().unwrap().duration_since(before);
                let want = Duration::from_secs(n).min(TEN_YEARS);
                prop_assert!(within(lifetime, want, Duration::from_secs(1)), "{lifetime:?} vs {want:?}");
            }
            None => prop_assert_eq!(tokens.expires_at(), None),
        }
    }

    #[test]
    fn a_jwt_access_tokens_exp_is_read_when_expires_in_is_missing(
        ahead in 60u64..(5 * 365 * 24 * 3600),
        sub in "[a-z]{0,12}",
        header in "[A-Za-z0-9_-]{1,20}",
        signature in "[A-Za-z0-9_-]{0,40}",
    ) {
        let exp = unix_now() + ahead;
        let payload = b64(json!({ "sub": sub, "exp": exp }).to_string().as_bytes());
        let jwt = format!("{header}.{payload}.{signature}");
        let body = json!({ "access_token": jwt, "token_type": "Bearer" });
        let before = Instant::now();
        let tokens = token_response::parse(body.to_string().as_bytes()).unwrap();
        let lifetime = tokens.expires_at().unwrap().duration_since(before);
        prop_assert!(
            within(lifetime, Duration::from_secs(ahead), Duration::from_secs(2)),
            "{lifetime:?} vs {ahead}s"
        );
    }

    #[test]
    fn jwt_lookalikes_never_panic(
        header in "[A-Za-z0-9_=-]{0,20}",
        payload in prop_oneof![
            "[A-Za-z0-9_=+/-]{0,60}",
            prop::collection::vec(any::<u8>(), 0..48).prop_map(|b| b64(&b)),
            json_value().prop_map(|v| b64(v.to_string().as_bytes())),
        ],
        dots in 0usize..4,
    ) {
        let jwt = format!("{header}.{payload}{}", ".sig".repeat(dots));
        let body = json!({ "access_token": jwt, "token_type": "Bearer" });
        let tokens = token_response::parse(body.to_string().as_bytes()).unwrap();
        let _ = tokens.expires_at();
    }
}
