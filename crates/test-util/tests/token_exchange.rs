//! Token exchange (RFC 8693) on `AuthServer`: the switch, the subjects it
//! takes, the checks of `audience` and `resource`, and the ID-JAG the JWT
//! bearer grant takes once.

// A failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used)]

use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower_token_refresh_test_util::{AuthConfig, AuthServer, TokenExchange, hyper_client};

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";

async fn token(auth: &AuthServer, params: &[(&str, &str)]) -> (StatusCode, Value) {
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", auth.client_id())
        .append_pair("client_secret", auth.client_secret())
        .extend_pairs(params)
        .finish();
    let request = Request::post(auth.token_url())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::from(form))
        .unwrap();
    let response = hyper_client().request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn exchanging() -> AuthConfig {
    AuthConfig::default().token_exchange(
        TokenExchange::new()
            .id_token("id-of-ann")
            .audience("https://as.example")
            .resource("https://api.example"),
    )
}

#[tokio::test]
async fn token_exchange_is_off_by_default() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let subject = auth.login().access_token;
    let params = [
        ("grant_type", EXCHANGE),
        ("subject_token", subject.as_str()),
        ("subject_token_type", ACCESS_TOKEN),
    ];
    let (status, answer) = token(&auth, &params).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "unsupported_grant_type");
}

#[tokio::test]
async fn an_access_token_of_the_ledger_is_exchanged_for_another() {
    let auth = AuthServer::start(exchanging()).await.unwrap();
    let subject = auth.login().access_token;
    let params = [
        ("grant_type", EXCHANGE),
        ("subject_token", subject.as_str()),
        ("subject_token_type", ACCESS_TOKEN),
        ("audience", "https://as.example"),
        ("resource", "https://api.example"),
    ];
    let (status, answer) = token(&auth, &params).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(answer["token_type"], "Bearer");
    let issued = answer["access_token"].as_str().unwrap();
    assert_ne!(issued, subject);
    assert!(auth.is_access_token_valid(issued));
    assert_eq!(auth.stats().token_exchanges, 1);
}

#[tokio::test]
async fn the_server_tells_which_subject_and_audience_an_exchanged_token_is_for() {
    let auth = AuthServer::start(AuthConfig::default().token_exchange(TokenExchange::new()))
        .await
        .unwrap();
    let (ann, bob) = (auth.login().access_token, auth.login().access_token);
    let mut issued = Vec::new();
    for (subject, audience) in [(&ann, "orders"), (&bob, "billing")] {
        let params = [
            ("grant_type", EXCHANGE),
            ("subject_token", subject.as_str()),
            ("subject_token_type", ACCESS_TOKEN),
            ("audience", audience),
            ("scope", "read"),
        ];
        let (status, answer) = token(&auth, &params).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        issued.push(answer["access_token"].as_str().unwrap().to_owned());
    }
    let for_ann = auth.exchanged(&issued[0]).unwrap();
    assert_eq!(for_ann.subject_token, ann);
    assert_eq!(for_ann.audience.as_deref(), Some("orders"));
    assert_eq!(for_ann.scope.as_deref(), Some("read"));
    let for_bob = auth.exchanged(&issued[1]).unwrap();
    assert_eq!(for_bob.subject_token, bob);
    assert_eq!(for_bob.audience.as_deref(), Some("billing"));
    // A token a login issued was not exchanged.
    assert_eq!(auth.exchanged(&ann), None);
}

#[tokio::test]
async fn without_expires_in_the_answer_does_not_say_when_the_token_expires() {
    let exchange = TokenExchange::new().without_expires_in();
    let auth = AuthServer::start(AuthConfig::default().token_exchange(exchange))
        .await
        .unwrap();
    let subject = auth.login().access_token;
    let params = [
        ("grant_type", EXCHANGE),
        ("subject_token", subject.as_str()),
        ("subject_token_type", ACCESS_TOKEN),
    ];
    let (status, answer) = token(&auth, &params).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer.get("expires_in").is_none(), "{answer}");
    assert!(auth.is_access_token_valid(answer["access_token"].as_str().unwrap()));
}

#[tokio::test]
async fn unknown_subjects_and_wrong_targets_are_refused() {
    let auth = AuthServer::start(exchanging()).await.unwrap();
    let base = [
        ("grant_type", EXCHANGE),
        ("subject_token_type", ID_TOKEN),
        ("audience", "https://as.example"),
        ("resource", "https://api.example"),
    ];
    let with = |extra: [(&'static str, &'static str); 1]| {
        let mut params = base.to_vec();
        params.retain(|(name, _)| *name != extra[0].0);
        params.extend(extra);
        params
    };
    let (status, answer) = token(&auth, &with([("subject_token", "id-of-bob")])).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let mut wrong_audience = with([("audience", "https://elsewhere")]);
    wrong_audience.push(("subject_token", "id-of-ann"));
    let (_, answer) = token(&auth, &wrong_audience).await;
    assert_eq!(answer["error"], "invalid_target");
    let mut no_resource = base.to_vec();
    no_resource.retain(|(name, _)| *name != "resource");
    no_resource.push(("subject_token", "id-of-ann"));
    let (_, answer) = token(&auth, &no_resource).await;
    assert_eq!(answer["error"], "invalid_target");
    assert_eq!(auth.stats().token_exchanges, 0);
}

#[tokio::test]
async fn an_id_jag_is_taken_by_the_jwt_bearer_grant_once() {
    let auth = AuthServer::start(exchanging()).await.unwrap();
    let params = [
        ("grant_type", EXCHANGE),
        ("subject_token", "id-of-ann"),
        ("subject_token_type", ID_TOKEN),
        ("requested_token_type", ID_JAG),
        ("audience", "https://as.example"),
        ("resource", "https://api.example"),
    ];
    let (status, answer) = token(&auth, &params).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["issued_token_type"], ID_JAG);
    assert_eq!(answer["token_type"], "N_A");
    let jag = answer["access_token"].as_str().unwrap().to_owned();
    assert!(auth.has_live_id_jags());
    let grant = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", jag.as_str()),
    ];
    let (status, answer) = token(&auth, &grant).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(auth.is_access_token_valid(answer["access_token"].as_str().unwrap()));
    assert!(!auth.has_live_id_jags());
    let (status, answer) = token(&auth, &grant).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}
