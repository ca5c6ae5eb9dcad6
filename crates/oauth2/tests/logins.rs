//! The loopback login (authorization code + PKCE, RFC 8252 §7.3) over real
//! HTTP: a hyper client plays the browser that follows the redirect, a
//! small axum token endpoint on 127.0.0.1 checks the code and the PKCE
//! verifier as a real one would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Form, Json, Router, http::StatusCode, routing::post};
use bytes::Bytes;
use http_body_util::Full;
use tokio::io::AsyncWriteExt;
use tower_token_refresh::{
    Error, ErrorKind, ServiceClient, TokenManager,
    oauth2::{AuthorizationCodeLogin, ClientAuth, LoginError, LoginHints, Pkce},
    source::{self, TokenSourceExt},
};
use tower_token_refresh_test_util::hyper_client;

type Http = ServiceClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
>;

/// What the authorization endpoint was asked for, as the browser saw it.
#[derive(Clone, Debug, Default)]
struct Asked {
    params: HashMap<String, String>,
}

impl Asked {
    fn of(url: &str) -> Asked {
        let query = url.split_once('?').unwrap().1;
        let params = query
            .split('&')
            .map(|pair| {
                let (n, v) = pair.split_once('=').unwrap();
                (decode(n), decode(v))
            })
            .collect();
        Asked { params }
    }

    fn get(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or("")
    }
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A token endpoint that issues tokens for the code `the-code` once, and
/// only with the verifier of the challenge the browser was sent with.
#[derive(Clone, Default)]
struct TokenEndpoint {
    asked: Arc<Mutex<Option<Asked>>>,
    requests: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

impl TokenEndpoint {
    async fn start(&self) -> String {
        let this = self.clone();
        let app = Router::new().route(
            "/token",
            post(move |Form(form): Form<HashMap<String, String>>| {
                let this = this.clone();
                async move { this.answer(form) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/token")
    }

    fn answer(&self, form: HashMap<String, String>) -> (StatusCode, Json<serde_json::Value>) {
        self.requests.lock().unwrap().push(form.clone());
        let asked = self.asked.lock().unwrap().clone().unwrap_or_default();
        let verifier_ok = form
            .get("code_verifier")
            .and_then(|v| Pkce::from_verifier(v.clone()).ok())
            .is_some_and(|p| p.challenge() == asked.get("code_challenge"));
        let ok = form.get("grant_type").map(String::as_str) == Some("authorization_code")
            && form.get("code").map(String::as_str) == Some("the-code")
            && form.get("client_id").map(String::as_str) == Some("cli")
            && form.get("redirect_uri").map(String::as_str) == Some(asked.get("redirect_uri"))
            && asked.get("code_challenge_method") == "S256"
            && verifier_ok;
        if !ok {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": "invalid_grant"})),
            );
        }
        (
            StatusCode::OK,
            Json(serde_json::json!({
                "access_token": "at-from-code",
                "token_type": "Bearer",
                "expires_in": 300,
                "refresh_token": "rt-from-code",
            })),
        )
    }

    fn exchanges(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// What the browser does with the authorization URL: `redirect` builds the
/// query it comes back with from what was asked.
type Browser = Arc<dyn Fn(&Asked) -> String + Send + Sync>;

/// The status the browser's page came back with, once it has.
type Page = Arc<Mutex<Option<StatusCode>>>;

async fn login_with(
    browser: Browser,
    timeout: Duration,
) -> (AuthorizationCodeLogin<Http>, TokenEndpoint, Page) {
    let endpoint = TokenEndpoint::default();
    let token_url = endpoint.start().await;
    let page: Page = Arc::default();
    let (asked_slot, page_slot) = (endpoint.asked.clone(), page.clone());
    let login = AuthorizationCodeLogin::new(
        "https://auth.example.com/authorize".parse().unwrap(),
        token_url.parse().unwrap(),
        ClientAuth::none("cli"),
        ServiceClient::new(hyper_client()),
    )
    .scope("openid api")
    .timeout(timeout)
    .on_authorization_url(move |url| {
        // The hook must not block: the browser runs beside the listener.
        let asked = Asked::of(url);
        *asked_slot.lock().unwrap() = Some(asked.clone());
        let target = format!("{}?{}", asked.get("redirect_uri"), browser(&asked));
        let page = page_slot.clone();
        tokio::spawn(async move {
            let request = http::Request::get(target).body(Full::default()).unwrap();
            let response = hyper_client().request(request).await.unwrap();
            *page.lock().unwrap() = Some(response.status());
        });
    });
    (login, endpoint, page)
}

fn state_of(asked: &Asked) -> String {
    asked.get("state").to_owned()
}

#[tokio::test]
async fn a_loopback_login_exchanges_the_code_with_its_pkce_verifier() {
    let browser: Browser = Arc::new(|a| format!("code=the-code&state={}", state_of(a)));
    let (login, endpoint, page) = login_with(browser, Duration::from_secs(30)).await;
    let tokens = login.login().await.unwrap();
    assert_eq!(tokens.access_token().secret(), "at-from-code");
    assert_eq!(tokens.refresh_token().unwrap().secret(), "rt-from-code");
    assert_eq!(endpoint.exchanges(), 1);
    let asked = endpoint.asked.lock().unwrap().clone().unwrap();
    assert!(asked.get("redirect_uri").starts_with("http://127.0.0.1:"));
    assert_eq!(asked.get("response_type"), "code");
    assert_eq!(asked.get("scope"), "openid api");
    // The browser's page says it went well (it may land just after).
    for _ in 0..100 {
        if page.lock().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*page.lock().unwrap(), Some(StatusCode::OK));
}

#[tokio::test]
async fn every_login_sends_a_new_state_and_challenge() {
    let browser: Browser = Arc::new(|a| format!("code=the-code&state={}", state_of(a)));
    let (login, endpoint, _page) = login_with(browser, Duration::from_secs(30)).await;
    login.login().await.unwrap();
    let first = endpoint.asked.lock().unwrap().clone().unwrap();
    login.login().await.unwrap();
    let second = endpoint.asked.lock().unwrap().clone().unwrap();
    assert_ne!(first.get("state"), second.get("state"));
    assert_ne!(first.get("code_challenge"), second.get("code_challenge"));
    assert!(first.get("state").len() >= 22, "128 bits, base64url");
}

#[tokio::test]
async fn a_redirect_with_another_state_is_refused_and_no_code_is_exchanged() {
    let browser: Browser = Arc::new(|_| "code=the-code&state=forged".to_owned());
    let (login, endpoint, _page) = login_with(browser, Duration::from_secs(30)).await;
    let err = login.login().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy);
    assert_eq!(LoginError::of(&err), Some(&LoginError::StateMismatch));
    assert_eq!(endpoint.exchanges(), 0);
}

#[tokio::test]
async fn a_redirect_naming_another_issuer_is_refused_when_one_is_expected() {
    let forged: Browser = Arc::new(|a| {
        format!(
            "code=the-code&state={}&iss=https%3A%2F%2Fevil.example",
            state_of(a)
        )
    });
    let (login, endpoint, _page) = login_with(forged, Duration::from_secs(30)).await;
    let err = login
        .issuer("https://auth.example.com")
        .login()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy);
    assert_eq!(LoginError::of(&err), Some(&LoginError::IssuerMismatch));
    assert_eq!(endpoint.exchanges(), 0);

    let genuine: Browser = Arc::new(|a| {
        format!(
            "code=the-code&state={}&iss=https%3A%2F%2Fauth.example.com",
            state_of(a)
        )
    });
    let (login, _endpoint, _page) = login_with(genuine, Duration::from_secs(30)).await;
    let login = login.issuer("https://auth.example.com");
    assert!(login.login().await.is_ok());
}

#[tokio::test]
async fn a_redirect_without_state_is_a_mismatch() {
    let browser: Browser = Arc::new(|_| "code=the-code".to_owned());
    let (login, endpoint, _page) = login_with(browser, Duration::from_secs(30)).await;
    let err = login.login().await.unwrap_err();
    assert_eq!(LoginError::of(&err), Some(&LoginError::StateMismatch));
    assert_eq!(endpoint.exchanges(), 0);
}

#[tokio::test]
async fn access_denied_on_the_redirect_is_a_typed_denial() {
    let browser: Browser = Arc::new(|a| {
        format!(
            "error=access_denied&error_description=The+user+said+no&state={}",
            state_of(a)
        )
    });
    let (login, endpoint, _page) = login_with(browser, Duration::from_secs(30)).await;
    let err = login.login().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    assert_eq!(err.oauth_error(), Some("access_denied"));
    assert_eq!(
        LoginError::of(&err),
        Some(&LoginError::Denied {
            error: "access_denied".into(),
            description: Some("The user said no".into()),
        })
    );
    assert_eq!(endpoint.exchanges(), 0);
}

#[tokio::test]
async fn a_redirect_without_code_or_error_is_missing_code() {
    let browser: Browser = Arc::new(|a| format!("state={}", state_of(a)));
    let (login, _endpoint, _page) = login_with(browser, Duration::from_secs(30)).await;
    let err = login.login().await.unwrap_err();
    assert_eq!(LoginError::of(&err), Some(&LoginError::MissingCode));
}

#[tokio::test]
async fn a_rejected_code_is_the_token_endpoint_error_and_keeps_the_code_out() {
    let browser: Browser = Arc::new(|a| format!("code=stolen-code-123&state={}", state_of(a)));
    let (login, endpoint, _page) = login_with(browser, Duration::from_secs(30)).await;
    let err = login.login().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    assert_eq!(err.oauth_error(), Some("invalid_grant"));
    assert_eq!(endpoint.exchanges(), 1);
    assert!(!format!("{err} {err:?}").contains("stolen-code-123"));
}

#[tokio::test(start_paused = true)]
async fn the_listener_gives_up_after_its_timeout_and_closes() {
    let endpoint = TokenEndpoint::default();
    let token_url = endpoint.start().await;
    let redirect_uri = Arc::new(Mutex::new(String::new()));
    let seen = redirect_uri.clone();
    let login = AuthorizationCodeLogin::new(
        "https://auth.example.com/authorize".parse().unwrap(),
        token_url.parse().unwrap(),
        ClientAuth::none("cli"),
        ServiceClient::new(hyper_client()),
    )
    .timeout(Duration::from_secs(120))
    // No browser: the user never comes back.
    .on_authorization_url(move |url| {
        *seen.lock().unwrap() = Asked::of(url).get("redirect_uri").to_owned()
    });
    let started = tokio::time::Instant::now();
    let err = login.login().await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(120));
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    assert_eq!(LoginError::of(&err), Some(&LoginError::TimedOut));
    // The port is closed: a late redirect finds nobody.
    let late = http::Request::get(format!("{}?code=x", redirect_uri.lock().unwrap()))
        .body(Full::default())
        .unwrap();
    assert!(hyper_client().request(late).await.is_err());
}

#[tokio::test]
async fn preconnects_and_other_paths_do_not_end_the_wait() {
    let endpoint = TokenEndpoint::default();
    let token_url = endpoint.start().await;
    let asked_slot = endpoint.asked.clone();
    let favicon: Page = Arc::default();
    let favicon_slot = favicon.clone();
    let login = AuthorizationCodeLogin::new(
        "https://auth.example.com/authorize".parse().unwrap(),
        token_url.parse().unwrap(),
        ClientAuth::none("cli"),
        ServiceClient::new(hyper_client()),
    )
    .on_authorization_url(move |url| {
        let asked = Asked::of(url);
        *asked_slot.lock().unwrap() = Some(asked.clone());
        let redirect = asked.get("redirect_uri").to_owned();
        let favicon = favicon_slot.clone();
        tokio::spawn(async move {
            // A browser's speculative connection that never sends a byte.
            let authority = redirect
                .strip_prefix("http://")
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_owned();
            let mut idle = tokio::net::TcpStream::connect(&authority).await.unwrap();
            // And a request for another path.
            let base = redirect.strip_suffix("/callback").unwrap();
            let icon = http::Request::get(format!("{base}/favicon.ico"))
                .body(Full::default())
                .unwrap();
            let status = hyper_client().request(icon).await.unwrap().status();
            *favicon.lock().unwrap() = Some(status);
            let back = format!("{redirect}?code=the-code&state={}", asked.get("state"));
            let request = http::Request::get(back).body(Full::default()).unwrap();
            hyper_client().request(request).await.unwrap();
            idle.shutdown().await.ok();
        });
    });
    let tokens = login.login().await.unwrap();
    assert_eq!(tokens.access_token().secret(), "at-from-code");
    assert_eq!(*favicon.lock().unwrap(), Some(StatusCode::NOT_FOUND));
}

#[tokio::test]
async fn step_up_hints_reach_the_authorization_request() {
    let browser: Browser = Arc::new(|a| format!("code=the-code&state={}", state_of(a)));
    let (login, endpoint, _page) = login_with(browser, Duration::from_secs(30)).await;
    let hints = LoginHints::new()
        .with_acr_values("urn:example:mfa")
        .with_max_age(Duration::from_secs(0));
    login.login_with(&hints).await.unwrap();
    let asked = endpoint.asked.lock().unwrap().clone().unwrap();
    assert_eq!(asked.get("acr_values"), "urn:example:mfa");
    assert_eq!(asked.get("max_age"), "0");
    assert_eq!(asked.get("scope"), "openid api");
}

#[tokio::test]
async fn the_login_is_the_last_link_of_a_chain_and_says_it_answered() {
    let browser: Browser = Arc::new(|a| format!("code=the-code&state={}", state_of(a)));
    let (login, endpoint, _page) = login_with(browser, Duration::from_secs(30)).await;
    let answered = Arc::new(Mutex::new(Vec::new()));
    let (a, b, c) = (answered.clone(), answered.clone(), answered.clone());
    let refresh =
        source::from_fn(|_| async { Err(Error::session_expired("refresh token revoked")) })
            .on_success(move |_| a.lock().unwrap().push("refresh"));
    let silent = source::from_fn(|_| async {
        Err(Error::session_expired("silent login needs interaction"))
    })
    .on_success(move |_| b.lock().unwrap().push("silent"));
    let interactive = login.on_success(move |_| c.lock().unwrap().push("interactive"));
    let tokens = TokenManager::builder(refresh.or_else(silent).or_else(interactive))
        .attempt_timeout(Duration::from_secs(300))
        .build();
    let auth = tokens.authorization().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer at-from-code");
    assert_eq!(*answered.lock().unwrap(), ["interactive"]);
    assert_eq!(endpoint.exchanges(), 1);
}

#[tokio::test]
async fn a_flood_of_requests_that_are_not_the_redirect_ends_the_wait() {
    let endpoint = TokenEndpoint::default();
    let token_url = endpoint.start().await;
    let login = AuthorizationCodeLogin::new(
        "https://auth.example.com/authorize".parse().unwrap(),
        token_url.parse().unwrap(),
        ClientAuth::none("cli"),
        ServiceClient::new(hyper_client()),
    )
    // Without the bound it would wait for this, and fail as TimedOut.
    .timeout(Duration::from_secs(10))
    .on_authorization_url(move |url| {
        let redirect = Asked::of(url).get("redirect_uri").to_owned();
        let base = redirect.strip_suffix("/callback").unwrap().to_owned();
        tokio::spawn(async move {
            // More than the listener's bound of 16 connections; each is
            // answered 404 and closed. Later ones find the port closed.
            for _ in 0..20 {
                let other = http::Request::get(format!("{base}/other"))
                    .body(Full::default())
                    .unwrap();
                if hyper_client().request(other).await.is_err() {
                    break;
                }
            }
        });
    });
    let err = login.login().await.unwrap_err();
    assert!(
        matches!(LoginError::of(&err), Some(LoginError::BadCallback(_))),
        "{err:?}"
    );
    assert_eq!(endpoint.exchanges(), 0);
}
