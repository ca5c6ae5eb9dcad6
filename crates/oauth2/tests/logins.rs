//! The loopback login (authorization code + PKCE, RFC 8252 §7.3) over real
//! HTTP: test-util's `AuthServer` approves the authorization request (the
//! headless `authorize`), a hyper client plays the browser that follows
//! the redirect, and the server's token endpoint on 127.0.0.1 checks the
//! code and the PKCE verifier as a real one would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::http::StatusCode;
use bytes::Bytes;
use http_body_util::Full;
use tokio::io::AsyncWriteExt;
use tower_token_refresh::{
    Error, ErrorKind, ServiceClient, TokenManager, TokenSet,
    oauth2::{AuthorizationCodeLogin, ClientAuth, LoginError, LoginHints},
    source::{self, TokenSourceExt},
};
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, AuthorizationRequest, Client, hyper_client,
};

type Http = ServiceClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
>;

/// test-util's authorization server with `cli`, a public client: it issues
/// tokens for a code it issued, once, and only with the verifier of the
/// challenge the browser was sent with.
async fn server() -> AuthServer {
    let config = AuthConfig::default()
        .access_lifetime(Duration::from_secs(300))
        .register(Client::public("cli"));
    AuthServer::start(config).await.unwrap()
}

/// A login of `cli` at `auth`.
fn login_at(auth: &AuthServer) -> AuthorizationCodeLogin<Http> {
    AuthorizationCodeLogin::new(
        auth.authorization_url().parse().unwrap(),
        auth.token_url().parse().unwrap(),
        ClientAuth::none("cli"),
        ServiceClient::new(hyper_client()),
    )
}

/// What the authorization endpoint was last asked for.
fn asked(auth: &AuthServer) -> AuthorizationRequest {
    auth.log().authorization_requests.last().unwrap().clone()
}

/// Code exchanges the token endpoint saw.
fn exchanges(auth: &AuthServer) -> u64 {
    auth.stats().token_requests
}

/// The tokens were issued by `auth` and are live there.
fn assert_issued_by(auth: &AuthServer, tokens: &TokenSet) {
    assert!(auth.is_access_token_valid(tokens.access_token().secret()));
    assert!(auth.is_refresh_token_active(tokens.refresh_token().unwrap().secret()));
    assert_eq!(auth.stats().authorization_code_grants, 1);
}

/// What the browser does with the approved authorization request:
/// `redirect` builds the query it comes back with from it.
type Browser = Arc<dyn Fn(&AuthorizationRequest) -> String + Send + Sync>;

/// The status the browser's page came back with, once it has.
type Page = Arc<Mutex<Option<StatusCode>>>;

async fn login_with(
    browser: Browser,
    timeout: Duration,
) -> (AuthorizationCodeLogin<Http>, AuthServer, Page) {
    let auth = server().await;
    let page: Page = Arc::default();
    let (server, page_slot) = (auth.clone(), page.clone());
    let login = login_at(&auth)
        .scope("openid api")
        .timeout(timeout)
        .on_authorization_url(move |url| {
            // The hook must not block: the browser runs beside the listener.
            let asked = server.authorize(url).unwrap();
            let target = format!("{}?{}", asked.get("redirect_uri"), browser(&asked));
            let page = page_slot.clone();
            tokio::spawn(async move {
                let request = http::Request::get(target).body(Full::default()).unwrap();
                let response = hyper_client().request(request).await.unwrap();
                *page.lock().unwrap() = Some(response.status());
            });
        });
    (login, auth, page)
}

/// The genuine answer: the code issued, with the state sent.
fn genuine(asked: &AuthorizationRequest) -> String {
    format!("code={}&state={}", asked.code, state_of(asked))
}

fn state_of(asked: &AuthorizationRequest) -> String {
    asked.get("state").to_owned()
}

#[tokio::test]
async fn a_loopback_login_exchanges_the_code_with_its_pkce_verifier() {
    let browser: Browser = Arc::new(genuine);
    let (login, auth, page) = login_with(browser, Duration::from_secs(30)).await;
    let tokens = login.login().await.unwrap();
    assert_issued_by(&auth, &tokens);
    assert_eq!(exchanges(&auth), 1);
    let asked = asked(&auth);
    assert_eq!(asked.get("code_challenge_method"), "S256");
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
    let browser: Browser = Arc::new(genuine);
    let (login, auth, _page) = login_with(browser, Duration::from_secs(30)).await;
    login.login().await.unwrap();
    let first = asked(&auth);
    login.login().await.unwrap();
    let second = asked(&auth);
    assert_ne!(first.get("state"), second.get("state"));
    assert_ne!(first.get("code_challenge"), second.get("code_challenge"));
    assert!(first.get("state").len() >= 22, "128 bits, base64url");
}

#[tokio::test]
async fn a_redirect_with_another_state_is_refused_and_no_code_is_exchanged() {
    let browser: Browser = Arc::new(|a| format!("code={}&state=forged", a.code));
    let (login, auth, _page) = login_with(browser, Duration::from_secs(30)).await;
    let err = login.login().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy);
    assert_eq!(LoginError::of(&err), Some(&LoginError::StateMismatch));
    assert_eq!(exchanges(&auth), 0);
}

#[tokio::test]
async fn a_redirect_naming_another_issuer_is_refused_when_one_is_expected() {
    let forged: Browser = Arc::new(|a| format!("{}&iss=https%3A%2F%2Fevil.example", genuine(a)));
    let (login, auth, _page) = login_with(forged, Duration::from_secs(30)).await;
    let err = login
        .issuer("https://auth.example.com")
        .login()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy);
    assert_eq!(LoginError::of(&err), Some(&LoginError::IssuerMismatch));
    assert_eq!(exchanges(&auth), 0);

    let named: Browser = Arc::new(|a| format!("{}&iss=https%3A%2F%2Fauth.example.com", genuine(a)));
    let (login, _auth, _page) = login_with(named, Duration::from_secs(30)).await;
    let login = login.issuer("https://auth.example.com");
    assert!(login.login().await.is_ok());
}

#[tokio::test]
async fn a_redirect_without_state_is_a_mismatch() {
    let browser: Browser = Arc::new(|a| format!("code={}", a.code));
    let (login, auth, _page) = login_with(browser, Duration::from_secs(30)).await;
    let err = login.login().await.unwrap_err();
    assert_eq!(LoginError::of(&err), Some(&LoginError::StateMismatch));
    assert_eq!(exchanges(&auth), 0);
}

#[tokio::test]
async fn access_denied_on_the_redirect_is_a_typed_denial() {
    let browser: Browser = Arc::new(|a| {
        format!(
            "error=access_denied&error_description=The+user+said+no&state={}",
            state_of(a)
        )
    });
    let (login, auth, _page) = login_with(browser, Duration::from_secs(30)).await;
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
    assert_eq!(exchanges(&auth), 0);
}

#[tokio::test]
async fn a_redirect_without_code_or_error_is_missing_code() {
    let browser: Browser = Arc::new(|a| format!("state={}", state_of(a)));
    let (login, _auth, _page) = login_with(browser, Duration::from_secs(30)).await;
    let err = login.login().await.unwrap_err();
    assert_eq!(LoginError::of(&err), Some(&LoginError::MissingCode));
}

#[tokio::test]
async fn a_rejected_code_is_the_token_endpoint_error_and_keeps_the_code_out() {
    let browser: Browser = Arc::new(|a| format!("code=stolen-code-123&state={}", state_of(a)));
    let (login, auth, _page) = login_with(browser, Duration::from_secs(30)).await;
    let err = login.login().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    assert_eq!(err.oauth_error(), Some("invalid_grant"));
    assert_eq!(exchanges(&auth), 1);
    assert_eq!(auth.stats().invalid_grant, 1);
    assert!(!format!("{err} {err:?}").contains("stolen-code-123"));
}

#[tokio::test(start_paused = true)]
async fn the_listener_gives_up_after_its_timeout_and_closes() {
    let auth = server().await;
    let redirect_uri = Arc::new(Mutex::new(String::new()));
    let (seen, server) = (redirect_uri.clone(), auth.clone());
    let login = login_at(&auth)
        .timeout(Duration::from_secs(120))
        // No browser: the user never comes back.
        .on_authorization_url(move |url| {
            *seen.lock().unwrap() = server
                .authorize(url)
                .unwrap()
                .get("redirect_uri")
                .to_owned()
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
    let auth = server().await;
    let server = auth.clone();
    let favicon: Page = Arc::default();
    let favicon_slot = favicon.clone();
    let login = login_at(&auth).on_authorization_url(move |url| {
        let asked = server.authorize(url).unwrap();
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
            let back = format!("{redirect}?{}", genuine(&asked));
            let request = http::Request::get(back).body(Full::default()).unwrap();
            hyper_client().request(request).await.unwrap();
            idle.shutdown().await.ok();
        });
    });
    let tokens = login.login().await.unwrap();
    assert_issued_by(&auth, &tokens);
    assert_eq!(*favicon.lock().unwrap(), Some(StatusCode::NOT_FOUND));
}

#[tokio::test]
async fn step_up_hints_reach_the_authorization_request() {
    let browser: Browser = Arc::new(genuine);
    let (login, auth, _page) = login_with(browser, Duration::from_secs(30)).await;
    let hints = LoginHints::new()
        .with_acr_values("urn:example:mfa")
        .with_max_age(Duration::from_secs(0));
    login.login_with(&hints).await.unwrap();
    let asked = asked(&auth);
    assert_eq!(asked.get("acr_values"), "urn:example:mfa");
    assert_eq!(asked.get("max_age"), "0");
    assert_eq!(asked.get("scope"), "openid api");
}

#[tokio::test]
async fn the_login_is_the_last_link_of_a_chain_and_says_it_answered() {
    let browser: Browser = Arc::new(genuine);
    let (login, auth, _page) = login_with(browser, Duration::from_secs(30)).await;
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
    let header = tokens.authorization().await.unwrap();
    let token = tokens.current().unwrap().access_token().secret().to_owned();
    assert_eq!(header.header().to_str().unwrap(), format!("Bearer {token}"));
    assert!(auth.is_access_token_valid(&token));
    assert_eq!(*answered.lock().unwrap(), ["interactive"]);
    assert_eq!(exchanges(&auth), 1);
}

#[tokio::test]
async fn a_flood_of_requests_that_are_not_the_redirect_ends_the_wait() {
    let auth = server().await;
    let server = auth.clone();
    let login = login_at(&auth)
        // Without the bound it would wait for this, and fail as TimedOut.
        .timeout(Duration::from_secs(10))
        .on_authorization_url(move |url| {
            let redirect = server
                .authorize(url)
                .unwrap()
                .get("redirect_uri")
                .to_owned();
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
    assert_eq!(exchanges(&auth), 0);
}
