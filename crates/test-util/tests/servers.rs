//! The servers, driven by a real hyper client over 127.0.0.1.

// A failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use serde_json::Value;
use tokio::time::Instant;
use tower_token_refresh_core::{ErrorKind, TokenSource};
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, AuthStats, CountingSource, Fault, Gate, ResourceServer, ResourceStats,
    hyper_client, until,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;
type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn send(
    client: &HttpClient,
    request: Request<Full<Bytes>>,
) -> Result<Reply, Box<dyn std::error::Error>> {
    let response = client.request(request).await?;
    let (parts, body) = response.into_parts();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}

fn token_request(auth: &AuthServer, form: &str) -> Request<Full<Bytes>> {
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        auth.client_id(),
        auth.client_secret()
    ));
    Request::post(auth.token_url())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::AUTHORIZATION, format!("Basic {credentials}"))
        .body(Full::from(form.to_owned()))
        .unwrap()
}

async fn refresh(client: &HttpClient, auth: &AuthServer, refresh_token: &str) -> Reply {
    let form = format!("grant_type=refresh_token&refresh_token={refresh_token}");
    send(client, token_request(auth, &form)).await.unwrap()
}

fn api_request(method: &str, url: String, token: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(url)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::default())
        .unwrap()
}

async fn get_data(client: &HttpClient, api: &ResourceServer, token: &str) -> StatusCode {
    send(client, api_request("GET", api.url("/api/data"), token))
        .await
        .unwrap()
        .status
}

const INVALID_TOKEN: &str = r#"Bearer realm="test", error="invalid_token", error_description="the access token expired or was revoked""#;

// ---------------------------------------------------------------- token grants

#[tokio::test]
async fn refresh_with_rotation_issues_a_new_refresh_token() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let client = hyper_client();
    let login = auth.login();
    assert_eq!(login.expires_in, Duration::from_secs(2));

    let reply = refresh(&client, &auth, &login.refresh_token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header(header::CACHE_CONTROL), "no-store");
    assert_eq!(reply.header(header::CONTENT_TYPE), "application/json");
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 2);
    let new_refresh = body["refresh_token"].as_str().unwrap_or_default();
    assert!(!new_refresh.is_empty() && new_refresh != login.refresh_token);
    let new_access = body["access_token"].as_str().unwrap_or_default();
    assert!(new_access != login.access_token && auth.is_access_token_valid(new_access));
    // The core parser accepts what the server sends.
    assert!(tower_token_refresh::oauth2::token_response::parse(&reply.body).is_ok());

    // The new refresh token works in turn.
    assert_eq!(
        refresh(&client, &auth, new_refresh).await.status,
        StatusCode::OK
    );
    let stats = auth.stats();
    assert_eq!((stats.token_requests, stats.refresh_grants), (2, 2));
    Ok(())
}

#[tokio::test]
async fn without_rotation_the_refresh_token_stays_and_none_is_sent() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default().rotation(false)).await?;
    let client = hyper_client();
    let login = auth.login();
    for _ in 0..2 {
        let reply = refresh(&client, &auth, &login.refresh_token).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.json().get("refresh_token").is_none());
    }
    assert_eq!(auth.stats().refresh_grants, 2);
    Ok(())
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_family() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let api = ResourceServer::start(&auth).await?;
    let client = hyper_client();
    let login = auth.login();
    let bystander = auth.login();

    let rotated = refresh(&client, &auth, &login.refresh_token).await.json();
    let access = rotated["access_token"].as_str().unwrap_or_default();
    let active_refresh = rotated["refresh_token"].as_str().unwrap_or_default();
    assert_eq!(get_data(&client, &api, access).await, StatusCode::OK);

    // A second refresh with the old token, as a racing process would send.
    let reuse = refresh(&client, &auth, &login.refresh_token).await;
    assert_eq!(reuse.status, StatusCode::BAD_REQUEST);
    assert_eq!(reuse.json()["error"], "invalid_grant");

    assert_eq!(
        get_data(&client, &api, access).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(!auth.is_access_token_valid(&login.access_token));
    let after = refresh(&client, &auth, active_refresh).await;
    assert_eq!(after.json()["error"], "invalid_grant");

    // Other grant families are untouched.
    assert_eq!(
        get_data(&client, &api, &bystander.access_token).await,
        StatusCode::OK
    );
    assert_eq!(
        refresh(&client, &auth, &bystander.refresh_token)
            .await
            .status,
        StatusCode::OK
    );

    let stats = auth.stats();
    assert_eq!(stats.reuse_detected, 1);
    assert_eq!(stats.invalid_grant, 2);
    assert_eq!(stats.refresh_grants, 2);
    Ok(())
}

// ---------------------------------------------------------------- reuse grace

fn refresh_token_of(reply: &Reply) -> String {
    reply.json()["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(start_paused = true)]
async fn reuse_grace_accepts_a_rotated_token_once_and_revokes_its_successor() -> TestResult {
    let grace = AuthConfig::default().reuse_grace(Duration::from_secs(30));
    let auth = AuthServer::start(grace).await?;
    let client = hyper_client();
    let login = auth.login();
    let lost = refresh_token_of(&refresh(&client, &auth, &login.refresh_token).await);

    // The answer never arrived, so the client presents the old token again.
    tokio::time::sleep(Duration::from_secs(29)).await;
    let retry = refresh(&client, &auth, &login.refresh_token).await;
    assert_eq!(retry.status, StatusCode::OK);
    let kept = refresh_token_of(&retry);
    assert!(!kept.is_empty() && kept != lost && kept != login.refresh_token);
    assert!(auth.is_refresh_token_active(&kept));
    assert!(!auth.is_refresh_token_active(&lost));
    let stats = auth.stats();
    assert_eq!(
        (
            stats.refresh_grants,
            stats.grace_reuses,
            stats.reuse_detected
        ),
        (2, 1, 0)
    );

    // The grace is spent: a third presentation is reuse, and ends the grant.
    let reuse = refresh(&client, &auth, &login.refresh_token).await;
    assert_eq!(reuse.json()["error"], "invalid_grant");
    assert!(!auth.is_refresh_token_active(&kept));
    let stats = auth.stats();
    assert_eq!(
        (
            stats.refresh_grants,
            stats.grace_reuses,
            stats.reuse_detected
        ),
        (2, 1, 1)
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn reuse_once_the_grace_is_over_revokes_the_whole_family() -> TestResult {
    let grace = AuthConfig::default().reuse_grace(Duration::from_secs(30));
    let auth = AuthServer::start(grace).await?;
    let client = hyper_client();
    let login = auth.login();
    let successor = refresh_token_of(&refresh(&client, &auth, &login.refresh_token).await);

    tokio::time::sleep(Duration::from_secs(30)).await;
    let reuse = refresh(&client, &auth, &login.refresh_token).await;
    assert_eq!(reuse.status, StatusCode::BAD_REQUEST);
    assert_eq!(reuse.json()["error"], "invalid_grant");
    assert!(!auth.is_refresh_token_active(&successor));
    let stats = auth.stats();
    assert_eq!(
        (
            stats.grace_reuses,
            stats.reuse_detected,
            stats.invalid_grant
        ),
        (0, 1, 1)
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn reuse_grace_does_not_cover_a_token_whose_successor_was_used() -> TestResult {
    let grace = AuthConfig::default().reuse_grace(Duration::from_secs(30));
    let auth = AuthServer::start(grace).await?;
    let client = hyper_client();
    let login = auth.login();
    let second = refresh_token_of(&refresh(&client, &auth, &login.refresh_token).await);
    let third = refresh_token_of(&refresh(&client, &auth, &second).await);

    // Someone holds the lineage on: the old token is no lost answer's retry.
    let reuse = refresh(&client, &auth, &login.refresh_token).await;
    assert_eq!(reuse.json()["error"], "invalid_grant");
    assert!(!auth.is_refresh_token_active(&third));
    assert_eq!(
        (auth.stats().grace_reuses, auth.stats().reuse_detected),
        (0, 1)
    );
    Ok(())
}

#[tokio::test]
async fn unknown_refresh_token_is_invalid_grant() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let reply = refresh(&hyper_client(), &auth, "rt_nope").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"], "invalid_grant");
    assert_eq!(auth.stats().invalid_grant, 1);
    assert_eq!(auth.stats().reuse_detected, 0);
    Ok(())
}

#[tokio::test]
async fn client_credentials_grant_issues_an_access_token_only() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let reply = send(
        &hyper_client(),
        token_request(&auth, "grant_type=client_credentials"),
    )
    .await?;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert!(body.get("refresh_token").is_none());
    assert!(auth.is_access_token_valid(body["access_token"].as_str().unwrap_or_default()));
    assert_eq!(auth.stats().client_credentials_grants, 1);
    Ok(())
}

#[tokio::test]
async fn bad_requests_get_their_oauth_error_codes() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let client = hyper_client();
    for (form, code) in [
        (
            "grant_type=password&username=u&password=p",
            "unsupported_grant_type",
        ),
        ("refresh_token=abc", "invalid_request"),
        ("grant_type=refresh_token", "invalid_request"),
        // RFC 6749 §3.1: an empty value counts as missing.
        ("grant_type=refresh_token&refresh_token=", "invalid_request"),
        (
            "grant_type=refresh_token&grant_type=refresh_token&refresh_token=x",
            "invalid_request",
        ),
    ] {
        let reply = send(&client, token_request(&auth, form)).await?;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{form}");
        assert_eq!(reply.json()["error"], code, "{form}");
    }

    let mut json_body = token_request(&auth, "grant_type=client_credentials");
    json_body
        .headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse()?);
    let reply = send(&client, json_body).await?;
    assert_eq!(reply.json()["error"], "invalid_request");
    Ok(())
}

// ---------------------------------------------------------- client authentication

#[tokio::test]
async fn basic_credentials_are_form_urlencoded_before_base64() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default().client("id:1", "s&cr t+%")).await?;
    let client = hyper_client();
    let basic = |id: &str, secret: &str| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        Request::post(auth.token_url())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::AUTHORIZATION, format!("basic {encoded}"))
            .body(Full::from("grant_type=client_credentials"))
            .unwrap()
    };
    let ok = send(&client, basic("id%3A1", "s%26cr+t%2B%25")).await?;
    assert_eq!(ok.status, StatusCode::OK);

    let wrong = send(&client, basic("id%3A1", "wrong")).await?;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json()["error"], "invalid_client");
    assert_eq!(
        wrong.header(header::WWW_AUTHENTICATE),
        r#"Basic realm="test""#
    );
    assert_eq!(auth.stats().invalid_client, 1);
    Ok(())
}

#[tokio::test]
async fn body_credentials_work_and_mixing_methods_is_refused() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default().client("my client", "p@ss+word")).await?;
    let client = hyper_client();
    let in_body = |form: &str| {
        Request::post(auth.token_url())
            .header(
                header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=UTF-8",
            )
            .body(Full::from(form.to_owned()))
            .unwrap()
    };
    let form = "grant_type=client_credentials&client_id=my+client&client_secret=p%40ss%2Bword";
    assert_eq!(send(&client, in_body(form)).await?.status, StatusCode::OK);

    let missing = send(&client, in_body("grant_type=client_credentials")).await?;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.json()["error"], "invalid_client");

    let wrong = send(
        &client,
        in_body("grant_type=client_credentials&client_id=my+client&client_secret=x"),
    )
    .await?;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    // Basic and a body secret at once (RFC 6749 §2.3: one method only).
    let both = token_request(&auth, form);
    let reply = send(&client, both).await?;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"], "invalid_request");
    assert_eq!(auth.stats().invalid_client, 2);
    Ok(())
}

// ---------------------------------------------------------------------- faults

#[tokio::test(start_paused = true)]
async fn delay_fault_answers_normally_after_the_delay_on_tokio_time() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let login = auth.login();
    auth.inject(Fault::Delay(Duration::from_secs(30)), 1);
    let start = Instant::now();
    let reply = refresh(&hyper_client(), &auth, &login.refresh_token).await;
    assert!(start.elapsed() >= Duration::from_secs(30));
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(auth.stats().faults_served, 1);
    assert_eq!(auth.stats().refresh_grants, 1);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn refresh_answered_after_a_delay_fault_still_rotates() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let client = hyper_client();
    let login = auth.login();
    auth.inject(Fault::Delay(Duration::from_secs(30)), 1);
    let reply = refresh(&client, &auth, &login.refresh_token).await;
    assert_eq!(reply.status, StatusCode::OK);
    let rotated = reply.json()["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!rotated.is_empty() && rotated != login.refresh_token);
    assert!(auth.is_refresh_token_active(&rotated));
    assert!(!auth.is_refresh_token_active(&login.refresh_token));

    // The retired token is reuse, as after an undelayed grant.
    let reply = refresh(&client, &auth, &login.refresh_token).await;
    assert_eq!(reply.json()["error"], "invalid_grant");
    assert!(!auth.is_refresh_token_active(&rotated));
    let stats = auth.stats();
    assert_eq!(
        (
            stats.refresh_grants,
            stats.reuse_detected,
            stats.faults_served
        ),
        (1, 1, 1)
    );
    Ok(())
}

#[tokio::test]
async fn status_fault_answers_that_status_in_plain_text() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    auth.inject(Fault::Status(429), 1);
    let reply = send(
        &hyper_client(),
        token_request(&auth, "grant_type=client_credentials"),
    )
    .await?;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(reply.header(header::CONTENT_TYPE).starts_with("text/plain"));

    // Not a final status: answered as a 500 rather than confusing hyper.
    auth.inject(Fault::Status(101), 1);
    let reply = send(
        &hyper_client(),
        token_request(&auth, "grant_type=client_credentials"),
    )
    .await?;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    Ok(())
}

#[tokio::test]
async fn temporarily_unavailable_fault_is_a_503_oauth_error() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    auth.inject(Fault::TemporarilyUnavailable, 1);
    let reply = send(
        &hyper_client(),
        token_request(&auth, "grant_type=client_credentials"),
    )
    .await?;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["error"], "temporarily_unavailable");
    Ok(())
}

#[tokio::test]
async fn invalid_grant_fault_leaves_the_refresh_token_usable() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let client = hyper_client();
    let login = auth.login();
    auth.inject(Fault::InvalidGrant, 1);
    let reply = refresh(&client, &auth, &login.refresh_token).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"], "invalid_grant");
    assert_eq!(
        refresh(&client, &auth, &login.refresh_token).await.status,
        StatusCode::OK
    );
    let stats = auth.stats();
    assert_eq!(
        (
            stats.invalid_grant,
            stats.reuse_detected,
            stats.faults_served
        ),
        (0, 0, 1)
    );
    Ok(())
}

#[tokio::test]
async fn malformed_json_fault_is_a_200_the_core_parser_refuses() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    auth.inject(Fault::MalformedJson, 1);
    let reply = send(
        &hyper_client(),
        token_request(&auth, "grant_type=client_credentials"),
    )
    .await?;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..], br#"{"access_token": "#);
    let err = tower_token_refresh::oauth2::token_response::parse(&reply.body)
        .err()
        .map(|e| e.kind());
    assert_eq!(err, Some(ErrorKind::InvalidResponse));
    Ok(())
}

#[tokio::test]
async fn html_502_fault_is_an_html_page() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    auth.inject(Fault::Html502, 1);
    let reply = send(
        &hyper_client(),
        token_request(&auth, "grant_type=client_credentials"),
    )
    .await?;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(reply.header(header::CONTENT_TYPE).starts_with("text/html"));
    assert!(reply.body.starts_with(b"<html>"));
    Ok(())
}

#[tokio::test]
async fn oversized_body_fault_pads_an_error_or_a_served_grant_past_64_kib() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let client = hyper_client();
    let login = auth.login();
    auth.inject(Fault::OversizedBody(400), 1);
    auth.inject(Fault::OversizedBody(503), 1);
    auth.inject(Fault::OversizedBody(200), 1);

    for (status, error) in [
        (StatusCode::BAD_REQUEST, "invalid_request"),
        (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
    ] {
        let reply = refresh(&client, &auth, &login.refresh_token).await;
        assert_eq!(reply.status, status);
        assert!(reply.body.len() > 64 * 1024, "{}", reply.body.len());
        assert_eq!(reply.json()["error"], error);
    }
    assert!(auth.is_refresh_token_active(&login.refresh_token));

    // A 2xx is the grant served, its answer padded.
    let reply = refresh(&client, &auth, &login.refresh_token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.len() > 64 * 1024, "{}", reply.body.len());
    assert!(tower_token_refresh::oauth2::token_response::parse(&reply.body).is_ok());
    assert!(!auth.is_refresh_token_active(&login.refresh_token));
    let stats = auth.stats();
    assert_eq!((stats.faults_served, stats.refresh_grants), (3, 1));
    Ok(())
}

#[tokio::test]
async fn drop_connection_fault_gives_the_client_a_connection_error() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let client = hyper_client();
    let login = auth.login();
    // Warm the pool so the fault hits a reused keep-alive connection too.
    assert_eq!(
        send(
            &client,
            token_request(&auth, "grant_type=client_credentials")
        )
        .await?
        .status,
        StatusCode::OK
    );
    auth.inject(Fault::DropConnection, 2);
    for _ in 0..2 {
        let form = format!(
            "grant_type=refresh_token&refresh_token={}",
            login.refresh_token
        );
        let err = match client.request(token_request(&auth, &form)).await {
            Ok(response) => panic!("expected a connection error, got {}", response.status()),
            Err(err) => err,
        };
        let hyper_err =
            std::error::Error::source(&err).and_then(|e| e.downcast_ref::<hyper::Error>());
        assert!(
            hyper_err.is_some_and(hyper::Error::is_incomplete_message),
            "{err:?}"
        );
    }
    // The grant was never processed, so the refresh token is still active.
    assert_eq!(
        refresh(&client, &auth, &login.refresh_token).await.status,
        StatusCode::OK
    );
    let stats = auth.stats();
    assert_eq!(
        (
            stats.token_requests,
            stats.faults_served,
            stats.refresh_grants
        ),
        (4, 2, 1)
    );
    Ok(())
}

#[tokio::test]
async fn hold_with_a_gate_never_opened_never_answers_until_the_server_is_dropped() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let login = auth.login();
    auth.inject(Fault::Hold(Gate::new()), 1);
    let form = format!(
        "grant_type=refresh_token&refresh_token={}",
        login.refresh_token
    );
    let pending = tokio::spawn(hyper_client().request(token_request(&auth, &form)));
    tokio::time::timeout(Duration::from_secs(5), async {
        while auth.stats().faults_served == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await?;
    // Held, not answered: the grant was not served.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished());
    assert_eq!(auth.stats().refresh_grants, 0);
    assert!(auth.is_refresh_token_active(&login.refresh_token));

    // Dropping the server closes the connection without an answer.
    drop(auth);
    let result = tokio::time::timeout(Duration::from_secs(5), pending).await??;
    let err = result.err().ok_or("the held request got an answer")?;
    let hyper_err = std::error::Error::source(&err).and_then(|e| e.downcast_ref::<hyper::Error>());
    assert!(
        hyper_err.is_some_and(hyper::Error::is_incomplete_message),
        "{err:?}"
    );
    Ok(())
}

// ------------------------------------------------------ requests hung up on

/// Sends a refresh of `refresh_token` and hangs up once the server has
/// taken the request (a fault left its queue), before any answer.
async fn refresh_and_hang_up(auth: &AuthServer, refresh_token: &str) {
    let served = auth.stats().faults_served;
    let form = format!("grant_type=refresh_token&refresh_token={refresh_token}");
    let request = hyper_client().request(token_request(auth, &form));
    let pending = tokio::spawn(request);
    until("the server holds the request", || {
        auth.stats().faults_served > served
    })
    .await;
    // Dropping the response future makes hyper close the connection.
    pending.abort();
    assert!(pending.await.is_err_and(|e| e.is_cancelled()));
}

#[tokio::test(start_paused = true)]
async fn a_delayed_request_whose_client_hung_up_is_dropped_by_default() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let login = auth.login();
    auth.inject(Fault::Delay(Duration::from_secs(30)), 1);
    refresh_and_hang_up(&auth, &login.refresh_token).await;

    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(auth.is_refresh_token_active(&login.refresh_token));
    let stats = auth.stats();
    assert_eq!((stats.refresh_grants, stats.abandoned_completed), (0, 0));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn finish_abandoned_serves_a_delayed_grant_whose_client_hung_up() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default().finish_abandoned(true)).await?;
    let client = hyper_client();
    let login = auth.login();
    auth.inject(Fault::Delay(Duration::from_secs(30)), 1);
    refresh_and_hang_up(&auth, &login.refresh_token).await;
    assert!(auth.is_refresh_token_active(&login.refresh_token));

    tokio::time::sleep(Duration::from_secs(30)).await;
    until("the abandoned grant is served", || {
        auth.stats().abandoned_completed == 1
    })
    .await;
    // Rotated away to a successor nobody received: presenting it is reuse.
    assert!(!auth.is_refresh_token_active(&login.refresh_token));
    let reuse = refresh(&client, &auth, &login.refresh_token).await;
    assert_eq!(reuse.json()["error"], "invalid_grant");
    let stats = auth.stats();
    assert_eq!(
        (
            stats.refresh_grants,
            stats.abandoned_completed,
            stats.reuse_detected
        ),
        (1, 1, 1)
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn finish_abandoned_serves_a_held_grant_once_its_gate_opens() -> TestResult {
    for finish in [false, true] {
        let auth = AuthServer::start(AuthConfig::default().finish_abandoned(finish)).await?;
        let login = auth.login();
        let gate = Gate::new();
        auth.inject(Fault::Hold(gate.clone()), 1);
        refresh_and_hang_up(&auth, &login.refresh_token).await;
        // Long enough for the server to see the connection close.
        tokio::time::sleep(Duration::from_secs(1)).await;

        gate.open();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stats = auth.stats();
        assert_eq!(
            (stats.refresh_grants, stats.abandoned_completed),
            (u64::from(finish), u64::from(finish)),
            "finish_abandoned({finish})"
        );
        assert_eq!(auth.is_refresh_token_active(&login.refresh_token), !finish);
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn finish_abandoned_leaves_answered_and_dropped_requests_as_they_were() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default().finish_abandoned(true)).await?;
    let client = hyper_client();
    let login = auth.login();

    // A client that waits gets its answer, as without the switch.
    auth.inject(Fault::Delay(Duration::from_secs(30)), 1);
    let reply = refresh(&client, &auth, &login.refresh_token).await;
    assert_eq!(reply.status, StatusCode::OK);
    let next = refresh_token_of(&reply);

    // A connection the server drops carries nothing out.
    auth.inject(Fault::DropConnection, 1);
    let form = format!("grant_type=refresh_token&refresh_token={next}");
    assert!(client.request(token_request(&auth, &form)).await.is_err());
    assert!(auth.is_refresh_token_active(&next));

    // Nor does a fault that answers instead of the server, hung up on.
    let gate = Gate::new();
    auth.inject(Fault::Hold(gate.clone()), 1);
    auth.inject(Fault::TemporarilyUnavailable, 1);
    refresh_and_hang_up(&auth, &next).await;
    gate.open();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(auth.is_refresh_token_active(&next));

    let stats = auth.stats();
    assert_eq!(
        (
            stats.token_requests,
            stats.refresh_grants,
            stats.abandoned_completed
        ),
        (3, 1, 0)
    );
    Ok(())
}

#[tokio::test]
async fn faults_are_served_in_the_order_injected() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let client = hyper_client();
    auth.inject(Fault::Status(500), 2);
    auth.inject(Fault::TemporarilyUnavailable, 1);
    auth.inject(Fault::Status(500), 0);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            send(
                &client,
                token_request(&auth, "grant_type=client_credentials"),
            )
            .await?
            .status
            .as_u16(),
        );
    }
    assert_eq!(statuses, [500, 500, 503, 200]);
    assert_eq!(
        auth.stats(),
        AuthStats {
            token_requests: 4,
            client_credentials_grants: 1,
            faults_served: 3,
            ..AuthStats::default()
        }
    );
    Ok(())
}

// ------------------------------------------------------------ access token life

#[tokio::test]
async fn expire_access_tokens_invalidates_issued_tokens_but_not_refresh_tokens() -> TestResult {
    let auth =
        AuthServer::start(AuthConfig::default().access_lifetime(Duration::from_secs(3600))).await?;
    let api = ResourceServer::start(&auth).await?;
    let client = hyper_client();
    let login = auth.login();
    assert_eq!(
        get_data(&client, &api, &login.access_token).await,
        StatusCode::OK
    );

    auth.expire_access_tokens();
    let reply = send(
        &client,
        api_request("GET", api.url("/api/data"), &login.access_token),
    )
    .await?;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header(header::WWW_AUTHENTICATE), INVALID_TOKEN);

    let fresh = refresh(&client, &auth, &login.refresh_token).await.json();
    let access = fresh["access_token"].as_str().unwrap_or_default();
    assert_eq!(get_data(&client, &api, access).await, StatusCode::OK);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn access_tokens_expire_on_the_paused_tokio_clock() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let api = ResourceServer::start(&auth).await?;
    let client = hyper_client();
    let login = auth.login();
    tokio::time::advance(Duration::from_millis(1999)).await;
    assert_eq!(
        get_data(&client, &api, &login.access_token).await,
        StatusCode::OK
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        get_data(&client, &api, &login.access_token).await,
        StatusCode::UNAUTHORIZED
    );
    Ok(())
}

#[tokio::test]
async fn set_access_lifetime_applies_to_later_tokens_and_expires_in_is_at_least_one() -> TestResult
{
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let client = hyper_client();
    let login = auth.login();
    auth.set_access_lifetime(Duration::from_secs(90));
    let body = refresh(&client, &auth, &login.refresh_token).await.json();
    assert_eq!(body["expires_in"], 90);
    auth.set_access_lifetime(Duration::from_millis(300));
    let body = refresh(
        &client,
        &auth,
        body["refresh_token"].as_str().unwrap_or_default(),
    )
    .await
    .json();
    assert_eq!(body["expires_in"], 1);
    assert!(auth.is_access_token_valid(&login.access_token));
    Ok(())
}

// ----------------------------------------------------------------- resource

#[tokio::test]
async fn resource_routes_answer_as_documented() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let api = ResourceServer::start(&auth).await?;
    let client = hyper_client();
    let token = auth.login().access_token;

    let data = send(&client, api_request("GET", api.url("/api/data"), &token)).await?;
    assert_eq!(data.status, StatusCode::OK);
    assert_eq!(data.json(), serde_json::json!({"ok": true}));

    let payload: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let mut echo = api_request("POST", api.url("/api/echo"), &token);
    *echo.body_mut() = Full::from(payload.clone());
    let echoed = send(&client, echo).await?;
    assert_eq!(echoed.status, StatusCode::OK);
    assert_eq!(echoed.body, payload);

    let admin = send(&client, api_request("GET", api.url("/api/admin"), &token)).await?;
    assert_eq!(admin.status, StatusCode::FORBIDDEN);
    assert_eq!(
        admin.header(header::WWW_AUTHENTICATE),
        r#"Bearer realm="test", error="insufficient_scope", scope="admin""#
    );

    let always = send(
        &client,
        api_request("GET", api.url("/api/always-401"), &token),
    )
    .await?;
    assert_eq!(always.status, StatusCode::UNAUTHORIZED);
    assert_eq!(always.header(header::WWW_AUTHENTICATE), INVALID_TOKEN);

    assert_eq!(
        api.stats(),
        ResourceStats {
            requests: 4,
            ok: 2,
            rejected: 1,
            forbidden: 1,
            missing_credentials: 0,
            invalid_dpop_proof: 0,
            dpop_nonce_challenges: 0,
            metadata_requests: 0,
        }
    );
    assert_eq!(api.requests_with(&token), 4);
    Ok(())
}

#[tokio::test]
async fn missing_or_non_bearer_credentials_get_a_challenge_without_error() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let api = ResourceServer::start(&auth).await?;
    let client = hyper_client();
    let token = auth.login().access_token;

    let none = Request::get(api.url("/api/data")).body(Full::default())?;
    let basic = Request::get(api.url("/api/data"))
        .header(header::AUTHORIZATION, "Basic dTpw")
        .body(Full::default())?;
    for request in [none, basic] {
        let reply = send(&client, request).await?;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            reply.header(header::WWW_AUTHENTICATE),
            r#"Bearer realm="test""#
        );
    }

    // The scheme is case-insensitive.
    let lower = Request::get(api.url("/api/data"))
        .header(header::AUTHORIZATION, format!("bearer {token}"))
        .body(Full::default())?;
    assert_eq!(send(&client, lower).await?.status, StatusCode::OK);

    let stats = api.stats();
    assert_eq!(
        (
            stats.requests,
            stats.rejected,
            stats.missing_credentials,
            stats.ok
        ),
        (3, 2, 2, 1)
    );
    Ok(())
}

#[tokio::test]
async fn requests_with_counts_invalid_tokens_too() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let api = ResourceServer::start(&auth).await?;
    let client = hyper_client();
    assert_eq!(
        get_data(&client, &api, "at_forged").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_data(&client, &api, "at_forged").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(api.requests_with("at_forged"), 2);
    assert_eq!(api.requests_with("at_other"), 0);
    assert_eq!(api.stats().missing_credentials, 0);
    Ok(())
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server() -> TestResult {
    let auth = AuthServer::start(AuthConfig::default()).await?;
    let clone = auth.clone();
    let url = auth.token_url();
    let client = hyper_client();
    drop(auth);
    // A clone keeps it running.
    assert_eq!(
        send(
            &client,
            token_request(&clone, "grant_type=client_credentials")
        )
        .await?
        .status,
        StatusCode::OK
    );

    let request = token_request(&clone, "grant_type=client_credentials");
    drop(clone);
    // Let the aborted tasks unwind (listener and pooled connection close).
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        client.request(request).await.is_err(),
        "{url} still answers"
    );
    Ok(())
}

// ------------------------------------------------------------ CountingSource

#[tokio::test(start_paused = true)]
async fn counting_source_numbers_its_tokens_and_shares_counts_with_clones() {
    let source = CountingSource::new(Duration::from_secs(60));
    let handle = source.clone();
    for n in 1..=2 {
        let tokens = source.fetch(None).await.unwrap();
        assert_eq!(
            tokens.access_token().secret(),
            CountingSource::issued_token(n)
        );
        assert_eq!(
            tokens.refresh_token().map(|r| r.secret().to_owned()),
            Some(CountingSource::issued_refresh_token(n))
        );
        assert_eq!(
            tokens.expires_at(),
            Some(Instant::now() + Duration::from_secs(60))
        );
    }
    assert_eq!((handle.calls(), handle.completed()), (2, 2));
    assert_eq!(CountingSource::issued_token(7), "token-7");
}

#[tokio::test(start_paused = true)]
async fn counting_source_latency_is_a_tokio_sleep() {
    let source = CountingSource::new(Duration::from_secs(60)).latency(Duration::from_secs(5));
    let fetching = tokio::spawn({
        let source = source.clone();
        async move { source.fetch(None).await.map(|t| t.expires_at()) }
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!((source.calls(), source.completed()), (1, 0));
    let start = Instant::now();
    let expires_at = fetching.await.unwrap().unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    // Lifetime counts from the answer, not the call.
    assert_eq!(expires_at, Some(Instant::now() + Duration::from_secs(60)));
    assert_eq!(source.completed(), 1);
}

#[tokio::test(start_paused = true)]
async fn counting_source_fails_the_next_calls_in_order() {
    let source = CountingSource::new(Duration::from_secs(60));
    source.fail_next(1, ErrorKind::Transient);
    source.fail_next(1, ErrorKind::SessionExpired);
    let first = source.fetch(None).await.unwrap_err();
    assert_eq!(
        (first.kind(), first.message()),
        (ErrorKind::Transient, "injected")
    );
    assert!(source.fetch(None).await.unwrap_err().is_session_expired());
    // Failed calls take their number too.
    let third = source.fetch(None).await.unwrap();
    assert_eq!(
        third.access_token().secret(),
        CountingSource::issued_token(3)
    );
    assert_eq!(source.calls(), 3);
}
