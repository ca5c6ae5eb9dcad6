//! Dynamic client registration (RFC 7591) on `AuthServer`: the switch, the
//! method granted, and the token endpoint authenticating what it
//! registered.

// A failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, Endpoint, Fault, Registration, hyper_client,
};

async fn send(request: Request<Full<Bytes>>) -> (StatusCode, Value) {
    let response = hyper_client().request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn register(auth: &AuthServer, metadata: Value) -> (StatusCode, Value) {
    let request = Request::post(auth.registration_url())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::from(metadata.to_string()))
        .unwrap();
    send(request).await
}

async fn client_credentials(auth: &AuthServer, form: String) -> StatusCode {
    let request = Request::post(auth.token_url())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::from(form))
        .unwrap();
    send(request).await.0
}

async fn metadata(auth: &AuthServer) -> Value {
    let url = format!(
        "http://{}/.well-known/oauth-authorization-server",
        auth.addr()
    );
    send(Request::get(url).body(Full::default()).unwrap())
        .await
        .1
}

#[tokio::test]
async fn registration_is_off_by_default_and_unannounced() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let (status, _) = register(&auth, json!({"client_name": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(metadata(&auth).await.get("registration_endpoint").is_none());
}

#[tokio::test]
async fn a_registered_client_gets_the_method_it_asked_for_and_its_secret_works() {
    let auth = AuthServer::start(AuthConfig::default().registration(Registration::new()))
        .await
        .unwrap();
    assert_eq!(
        metadata(&auth).await["registration_endpoint"],
        auth.registration_url()
    );
    let asked = json!({
        "client_name": "app",
        "redirect_uris": ["http://127.0.0.1/cb"],
        "token_endpoint_auth_method": "client_secret_post",
    });
    let (status, answer) = register(&auth, asked.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(answer["token_endpoint_auth_method"], "client_secret_post");
    assert_eq!(answer["client_name"], "app");
    let (id, secret) = (
        answer["client_id"].as_str().unwrap(),
        answer["client_secret"].as_str().unwrap(),
    );
    let form = format!("grant_type=client_credentials&client_id={id}&client_secret={secret}");
    assert_eq!(client_credentials(&auth, form).await, StatusCode::OK);
    let wrong = format!("grant_type=client_credentials&client_id={id}&client_secret=nope");
    assert_eq!(
        client_credentials(&auth, wrong).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(auth.stats().registrations, 1);
    assert_eq!(auth.log().registrations, [asked]);
}

#[tokio::test]
async fn the_server_may_grant_another_method_than_the_one_asked_for() {
    let config = AuthConfig::default().registration(Registration::new().answer_method("none"));
    let auth = AuthServer::start(config).await.unwrap();
    let asked = json!({"token_endpoint_auth_method": "client_secret_basic"});
    let (status, answer) = register(&auth, asked).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(answer["token_endpoint_auth_method"], "none");
    assert!(answer.get("client_secret").is_none(), "{answer}");
    // A public client: no client_credentials grant, but it is known.
    let id = answer["client_id"].as_str().unwrap();
    let form = format!("grant_type=client_credentials&client_id={id}");
    assert_eq!(
        client_credentials(&auth, form).await,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn bad_metadata_and_unsupported_methods_are_invalid_client_metadata() {
    let auth = AuthServer::start(AuthConfig::default().registration(Registration::new()))
        .await
        .unwrap();
    for asked in [
        json!([1, 2]),
        json!({"token_endpoint_auth_method": "tls_client_auth"}),
    ] {
        let (status, answer) = register(&auth, asked).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(answer["error"], "invalid_client_metadata");
    }
    assert!(auth.log().registrations.is_empty());
    assert_eq!(auth.stats().registrations, 2);
}

#[tokio::test]
async fn registration_has_its_own_fault_queue() {
    let auth = AuthServer::start(AuthConfig::default().registration(Registration::new()))
        .await
        .unwrap();
    auth.inject_at(Endpoint::Registration, Fault::TemporarilyUnavailable, 1);
    let (status, _) = register(&auth, json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, answer) = register(&auth, json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(answer["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(auth.stats().faults_served, 1);
}
