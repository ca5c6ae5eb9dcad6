//! The interactive logins against a real authorization server none of us
//! wrote: node's `oidc-provider` (interop/server.mjs), on 127.0.0.1, real
//! time. No browser exists: a hyper client with a small cookie jar follows
//! the provider's redirects, and the server's test-only interaction route
//! (`/interaction/:uid`) logs the test user in and consents, or refuses.
//! Silent logins (`prompt=none`) reuse the provider session kept in that
//! jar; the browser's list of visited URLs shows they met no interaction.
//!
//! Needs node (>= 20) and `npm ci` in `interop/` (run here when
//! `interop/node_modules` is missing). Without node it prints why and
//! passes without checking anything, as `interop.rs` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use support::interop::Provider;
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_token_refresh::{
    ErrorKind, ServiceClient, TokenManager, TokenRefreshLayer, TokenSource,
    dpop::{DpopKey, DpopLayer, DpopManagerExt as _, TokenSetExt as _},
    oauth2::{
        AuthorizationCodeLogin, ClientAuth, ClientRegistration, DeviceAuthorization, DeviceLogin,
        ErrorCode, LoginError, LoginHints, ProviderMetadata, RefreshTokenGrant, ResourceIndicator,
        RevocationClient, TokenTypeHint,
    },
    source::{self, TokenSourceExt},
};
use tower_token_refresh_test_util::hyper_client;

const PUBLIC: &str = "interop-native";
const CONFIDENTIAL: &str = "interop-native-confidential";
const CONFIDENTIAL_SECRET: &str = "interop-native-secret";
/// A public native client whose tokens must all be DPoP-bound.
const DPOP_CLIENT: &str = "interop-dpop-client";
/// A public native client the provider lets log in silently: oidc-provider
/// asks every other native client for consent at each login.
const SILENT: &str = "interop-native-silent";

type Http = ServiceClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
>;

fn http() -> Http {
    ServiceClient::new(hyper_client())
}

impl Provider {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// The server's login counters (GET /test/logins).
    async fn logins(&self) -> serde_json::Value {
        self.get_json("/test/logins").await
    }

    /// GET `path` of the provider's test routes, as JSON.
    async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = hyper_client()
            .request(Request::get(self.url(path)).body(Full::default()).unwrap())
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }

    /// Whether the protected API accepts `access_token`.
    async fn api_accepts(&self, access_token: &str) -> bool {
        let request = Request::get(self.url("/api/data"))
            .header(header::AUTHORIZATION, format!("Bearer {access_token}"))
            .body(Full::default())
            .unwrap();
        hyper_client().request(request).await.unwrap().status() == StatusCode::OK
    }

    /// The server's metadata, as discovery reads it.
    async fn metadata(&self) -> ProviderMetadata {
        ProviderMetadata::discover(&self.issuer, &http())
            .await
            .unwrap()
    }

    /// A loopback login built from discovery: oidc-provider says it sends
    /// `iss` (RFC 9207), so the login checks it.
    async fn code_login(&self, auth: ClientAuth, browser: Browser) -> AuthorizationCodeLogin<Http> {
        let issuer = self.issuer.clone();
        let metadata = self.metadata().await;
        assert!(metadata.authorization_response_iss_parameter_supported());
        metadata
            .authorization_code_login(auth, http())
            .expect("an authorization endpoint")
            .scope("openid offline_access api")
            // oidc-provider grants offline_access only with prompt=consent.
            .param("prompt", "consent")
            .timeout(Duration::from_secs(30))
            .on_authorization_url(move |url| {
                let (url, issuer, browser) = (url.to_owned(), issuer.clone(), browser.clone());
                tokio::spawn(async move { browser.follow(&issuer, url).await });
            })
    }

    /// The same login made silent (`prompt=none`): it rides the provider's
    /// session in `browser`'s cookies, or comes back needing the user.
    async fn silent_login(
        &self,
        auth: ClientAuth,
        browser: Browser,
    ) -> AuthorizationCodeLogin<Http> {
        self.code_login(auth, browser)
            .await
            .silent()
            .timeout(Duration::from_secs(10))
    }

    async fn device_login(&self, auth: ClientAuth, browser: Browser) -> DeviceLogin<Http> {
        let issuer = self.issuer.clone();
        self.metadata()
            .await
            .device_login(auth, http())
            .expect("a device authorization endpoint")
            .scope("openid offline_access api")
            .on_user_code(move |shown: &DeviceAuthorization| {
                let (shown, issuer, browser) = (shown.clone(), issuer.clone(), browser.clone());
                tokio::spawn(async move { browser.confirm_user_code(&issuer, &shown).await });
            })
    }
}

/// A user agent without a browser: follows redirects, carries cookies, and
/// answers the interaction as `deny` says.
#[derive(Clone, Default)]
struct Browser {
    cookies: Arc<Mutex<Vec<(String, String)>>>,
    deny: bool,
    /// The status of the last page it landed on.
    landed: Arc<Mutex<Option<StatusCode>>>,
    /// Every URL it requested, in order.
    visited: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    fn denying() -> Browser {
        Browser {
            deny: true,
            ..Browser::default()
        }
    }

    fn cookie_header(&self) -> String {
        let jar = self.cookies.lock().unwrap();
        jar.iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&self, headers: &http::HeaderMap) {
        let mut jar = self.cookies.lock().unwrap();
        for value in headers.get_all(header::SET_COOKIE) {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            jar.retain(|(n, _)| n != name);
            if !value.is_empty() {
                jar.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> http::Response<Bytes> {
        let response = hyper_client().request(request).await.unwrap();
        self.keep_cookies(response.headers());
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        http::Response::from_parts(parts, body)
    }

    /// GETs `url` and follows its redirects (at most 10), through the
    /// interaction, to the app's loopback listener or the provider's
    /// final page.
    async fn follow(&self, issuer: &str, mut url: String) {
        for _ in 0..10 {
            if self.deny && url.starts_with(&format!("{issuer}/interaction/")) {
                url.push_str("?deny=1");
            }
            self.visited.lock().unwrap().push(url.clone());
            let request = Request::get(&url)
                .header(header::COOKIE, self.cookie_header())
                .body(Full::default())
                .unwrap();
            let response = self.send(request).await;
            let Some(location) = response.headers().get(header::LOCATION) else {
                *self.landed.lock().unwrap() = Some(response.status());
                return;
            };
            let location = location.to_str().unwrap();
            url = if location.starts_with('/') {
                format!("{issuer}{location}")
            } else {
                location.to_owned()
            };
        }
        panic!("more than 10 redirects");
    }

    /// What a user does at the verification URI: enter the code, confirm
    /// it (or abort), then log in through the interaction.
    async fn confirm_user_code(&self, issuer: &str, shown: &DeviceAuthorization) {
        let page = self
            .send(
                Request::get(shown.verification_uri())
                    .header(header::COOKIE, self.cookie_header())
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
        let html = std::str::from_utf8(page.body()).unwrap();
        let xsrf = html
            .split("name=\"xsrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the code form has an xsrf field");
        let answer = if self.deny {
            "abort=yes"
        } else {
            "confirm=yes"
        };
        let form = format!(
            "xsrf={xsrf}&user_code={}&{answer}",
            shown.user_code().replace('-', "%2D")
        );
        let response = self
            .send(
                Request::post(shown.verification_uri())
                    .header(header::COOKIE, self.cookie_header())
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(form)))
                    .unwrap(),
            )
            .await;
        match response.headers().get(header::LOCATION) {
            Some(location) => {
                let location = location.to_str().unwrap();
                let url = if location.starts_with('/') {
                    format!("{issuer}{location}")
                } else {
                    location.to_owned()
                };
                self.follow(issuer, url).await;
            }
            None => *self.landed.lock().unwrap() = Some(response.status()),
        }
    }
}

#[tokio::test]
async fn a_public_client_logs_in_with_pkce_through_a_loopback_redirect() {
    let Some(provider) = Provider::start(&[]).await else {
        return;
    };
    let browser = Browser::default();
    let login = provider
        .code_login(ClientAuth::none(PUBLIC), browser.clone())
        .await;
    let tokens = login.login().await.unwrap();
    assert!(provider.api_accepts(tokens.access_token().secret()).await);
    assert!(
        tokens.refresh_token().is_some(),
        "offline_access was granted"
    );
    assert_eq!(*browser.landed.lock().unwrap(), Some(StatusCode::OK));
    let logins = provider.logins().await;
    assert_eq!(logins["interactions"], 1);
    assert_eq!(logins["authorization_code_grants"], 1);

    // The session it started renews itself with the refresh token grant.
    let refreshed = RefreshTokenGrant::new(
        provider.url("/token").parse().unwrap(),
        ClientAuth::none(PUBLIC),
        http(),
    );
    let manager = TokenManager::builder(refreshed).initial(tokens).build();
    let new = manager.refresh().await.unwrap();
    let new = new
        .header()
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    assert!(provider.api_accepts(&new).await);
}

#[tokio::test]
async fn a_registered_client_logs_in_and_refreshes_for_its_resource() {
    let Some(provider) = Provider::start(&[]).await else {
        return;
    };
    // An MCP client that has never met this server: it registers itself.
    let metadata = provider.metadata().await;
    let registered = ClientRegistration::new()
        .client_name("interop MCP app")
        .metadata("application_type", "native")
        .redirect_uris(["http://127.0.0.1/callback"])
        .grant_types(["authorization_code", "refresh_token"])
        .response_types(["code"])
        .token_endpoint_auth_method("none")
        .scope("openid offline_access api")
        .register(metadata.registration_endpoint().unwrap(), &http())
        .await
        .unwrap();
    assert_eq!(registered.token_endpoint_auth_method(), "none");
    let auth = registered.client_auth().unwrap();
    let resource = ResourceIndicator::new(provider.url("/mcp")).unwrap();
    let tokens = provider
        .code_login(auth.clone(), Browser::default())
        .await
        .resource(resource.clone())
        .login()
        .await
        .unwrap();
    assert!(provider.api_accepts(tokens.access_token().secret()).await);
    assert!(
        tokens.refresh_token().is_some(),
        "offline_access was granted"
    );

    // The refresh names the resource again, as the server wants.
    let refresh = metadata
        .refresh_token_grant(auth, http())
        .resource(resource);
    let refreshed = refresh.fetch(Some(&tokens)).await.unwrap();
    assert!(
        provider
            .api_accepts(refreshed.access_token().secret())
            .await
    );
    assert_eq!(provider.logins().await["authorization_code_grants"], 1);
}

#[tokio::test]
async fn a_dpop_bound_pkce_login_starts_a_session_the_dpop_resource_accepts() {
    let Some(provider) = Provider::start(&[]).await else {
        return;
    };
    let dpop = DpopKey::generate().unwrap();
    let login = provider
        .code_login(ClientAuth::none(DPOP_CLIENT), Browser::default())
        .await
        .dpop(dpop.clone());
    let tokens = login.login().await.unwrap();
    assert_eq!(tokens.token_type(), "DPoP");
    assert_eq!(
        tokens.dpop_key().unwrap().thumbprint().unwrap(),
        dpop.thumbprint()
    );
    // The provider wants a nonce at its token endpoint: the code exchange
    // met the challenge and answered it (else no tokens).
    let stats = provider.get_json("/test/dpop/stats").await;
    assert_eq!(stats["token_nonce_challenges"], 1, "{stats}");
    assert_eq!(provider.logins().await["authorization_code_grants"], 1);

    // The resource takes the access token only with proofs of that key.
    let refresh = RefreshTokenGrant::new(
        provider.url("/token").parse().unwrap(),
        ClientAuth::none(DPOP_CLIENT),
        http(),
    )
    .dpop(dpop.clone());
    let manager = TokenManager::builder(refresh)
        .dpop(dpop.clone())
        .initial(tokens)
        .build();
    let client = ServiceBuilder::new()
        .layer(
            TokenRefreshLayer::new(manager.clone()).allow_origin(provider.issuer.parse().unwrap()),
        )
        .layer(DpopLayer::new(dpop.clone()))
        .service(hyper_client());
    let response = client
        .clone()
        .oneshot(
            Request::get(provider.url("/dpop/api/data"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let stats = provider.get_json("/test/dpop/stats").await;
    assert_eq!(stats["api_ok"], 1, "{stats}");

    // And the refresh token is bound to the key too: the session renews.
    manager.refresh().await.unwrap();
    assert_eq!(manager.current().unwrap().token_type(), "DPoP");
}

#[tokio::test]
async fn a_confidential_client_logs_in_with_step_up_hints() {
    let Some(provider) = Provider::start(&[]).await else {
        return;
    };
    let login = provider
        .code_login(
            ClientAuth::basic(CONFIDENTIAL, CONFIDENTIAL_SECRET),
            Browser::default(),
        )
        .await;
    let hints = LoginHints::new()
        .with_acr_values("urn:interop:mfa")
        .with_max_age(Duration::from_secs(300));
    let tokens = login.login_with(&hints).await.unwrap();
    assert!(provider.api_accepts(tokens.access_token().secret()).await);
    let logins = provider.logins().await;
    assert_eq!(logins["last_acr_values"], "urn:interop:mfa");
    assert_eq!(logins["last_max_age"], "300");
}

#[tokio::test]
async fn a_user_who_refuses_ends_the_login_with_access_denied() {
    let Some(provider) = Provider::start(&[]).await else {
        return;
    };
    let login = provider
        .code_login(ClientAuth::none(PUBLIC), Browser::denying())
        .await;
    let err = login.login().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    assert!(
        matches!(LoginError::of(&err), Some(LoginError::Denied { error, .. }) if error == "access_denied"),
        "{err:?}"
    );
    assert_eq!(provider.logins().await["authorization_code_grants"], 0);
}

#[tokio::test]
async fn the_device_flow_is_the_last_link_of_a_chain_and_says_it_answered() {
    let Some(provider) = Provider::start(&[]).await else {
        return;
    };
    let answered = Arc::new(Mutex::new(Vec::new()));
    let (a, b) = (answered.clone(), answered.clone());
    // No session yet: the refresh link has no refresh token and falls
    // through to the device login.
    let refresh = RefreshTokenGrant::new(
        provider.url("/token").parse().unwrap(),
        ClientAuth::none(PUBLIC),
        http(),
    )
    .on_success(move |_| a.lock().unwrap().push("refresh"));
    let device = provider
        .device_login(ClientAuth::none(PUBLIC), Browser::default())
        .await
        .on_success(move |_| b.lock().unwrap().push("device"));
    let tokens = TokenManager::builder(refresh.or_else(device))
        .attempt_timeout(Duration::from_secs(120))
        .build();
    let client = TokenRefreshLayer::new(tokens.clone())
        .allow_origin(provider.issuer.parse().unwrap())
        .layer(hyper_client());
    let response = client
        .oneshot(
            Request::get(provider.url("/api/data"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(*answered.lock().unwrap(), ["device"]);
    let logins = provider.logins().await;
    assert_eq!(logins["device_code_grants"], 1);
    assert_eq!(logins["interactions"], 1);
}

#[tokio::test]
async fn a_device_code_the_user_aborts_is_access_denied() {
    let Some(provider) = Provider::start(&[]).await else {
        return;
    };
    let login = provider
        .device_login(
            ClientAuth::basic(CONFIDENTIAL, CONFIDENTIAL_SECRET),
            Browser::denying(),
        )
        .await;
    let err = login.login().await.unwrap_err();
    assert!(
        matches!(LoginError::of(&err), Some(LoginError::Denied { error, .. }) if error == "access_denied"),
        "{err:?}"
    );
    assert_eq!(provider.logins().await["device_code_grants"], 0);
}

/// Whether any URL `browser` requested was the provider's interaction,
/// where a user would see a page.
fn met_an_interaction(browser: &Browser, issuer: &str) -> bool {
    let prefix = format!("{issuer}/interaction/");
    browser
        .visited
        .lock()
        .unwrap()
        .iter()
        .any(|url| url.starts_with(&prefix))
}

/// Runs a silent login as `client` in `browser` and checks that the
/// provider answered that only the user can go on, with `code`, without
/// showing an interaction page.
async fn silent_login_needs_the_user(
    provider: &Provider,
    client: &str,
    browser: &Browser,
    code: ErrorCode,
) {
    let err = provider
        .silent_login(ClientAuth::none(client), browser.clone())
        .await
        .login()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    let login = LoginError::of(&err);
    assert!(
        matches!(login, Some(LoginError::InteractionRequired { error, .. }) if *error == code),
        "{err:?}"
    );
    assert!(login.unwrap().needs_user());
    assert!(!met_an_interaction(browser, &provider.issuer));
}

#[tokio::test]
async fn a_silent_login_rides_the_provider_session_straight_back_with_a_code() {
    let Some(provider) = Provider::start(&[]).await else {
        return;
    };
    let browser = Browser::default();
    provider
        .code_login(ClientAuth::none(SILENT), browser.clone())
        .await
        .login()
        .await
        .unwrap();
    assert_eq!(provider.logins().await["interactions"], 1);
    browser.visited.lock().unwrap().clear();

    let tokens = provider
        .silent_login(ClientAuth::none(SILENT), browser.clone())
        .await
        .login()
        .await
        .unwrap();
    assert!(provider.api_accepts(tokens.access_token().secret()).await);
    // One hop: the authorization endpoint redirected to the app's
    // loopback listener at once.
    let visited = browser.visited.lock().unwrap().clone();
    assert_eq!(visited.len(), 2, "{visited:#?}");
    assert!(
        visited[0].starts_with(&provider.url("/auth?")),
        "{visited:#?}"
    );
    assert!(visited[1].contains("code="), "{visited:#?}");
    assert!(!met_an_interaction(&browser, &provider.issuer));
    let logins = provider.logins().await;
    assert_eq!(logins["interactions"], 1);
    assert_eq!(logins["authorization_code_grants"], 2);
}

#[tokio::test]
async fn a_silent_login_without_a_provider_session_is_login_required() {
    let Some(provider) = Provider::start(&[]).await else {
        return;
    };
    let browser = Browser::default();
    silent_login_needs_the_user(&provider, SILENT, &browser, ErrorCode::LoginRequired).await;
    let logins = provider.logins().await;
    assert_eq!(logins["interactions"], 0);
    assert_eq!(logins["authorization_code_grants"], 0);
}

#[tokio::test]
async fn a_chain_past_an_expired_refresh_is_answered_by_the_silent_login() {
    let Some(provider) = Provider::start(&[]).await else {
        return;
    };
    let browser = Browser::default();
    provider
        .code_login(ClientAuth::none(SILENT), browser.clone())
        .await
        .login()
        .await
        .unwrap();
    browser.visited.lock().unwrap().clear();

    let answered = Arc::new(Mutex::new(Vec::new()));
    let (a, b, c) = (answered.clone(), answered.clone(), answered.clone());
    let refresh = source::from_fn(|_| async {
        Err(tower_token_refresh::Error::session_expired(
            "the refresh token expired",
        ))
    })
    .on_success(move |_| a.lock().unwrap().push("refresh"));
    let silent = provider
        .silent_login(ClientAuth::none(SILENT), browser.clone())
        .await
        .on_success(move |_| b.lock().unwrap().push("silent"));
    let interactive = provider
        .code_login(ClientAuth::none(SILENT), browser.clone())
        .await
        .on_success(move |_| c.lock().unwrap().push("interactive"));
    let manager = TokenManager::builder(refresh.or_else(silent).or_else(interactive))
        .attempt_timeout(Duration::from_secs(60))
        .build();
    let client = TokenRefreshLayer::new(manager)
        .allow_origin(provider.issuer.parse().unwrap())
        .layer(hyper_client());
    let response = client
        .oneshot(
            Request::get(provider.url("/api/data"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(*answered.lock().unwrap(), ["silent"]);
    assert!(!met_an_interaction(&browser, &provider.issuer));
    assert_eq!(provider.logins().await["interactions"], 1);
}

#[tokio::test]
async fn a_chain_past_a_revoked_refresh_token_and_no_session_ends_at_the_user() {
    let Some(provider) = Provider::start(&[]).await else {
        return;
    };
    // A session that was, on another browser; its refresh token revoked.
    let earlier = provider
        .code_login(ClientAuth::none(SILENT), Browser::default())
        .await
        .login()
        .await
        .unwrap();
    RevocationClient::new(
        provider.url("/token/revocation").parse().unwrap(),
        ClientAuth::none(SILENT),
        http(),
    )
    .revoke(
        earlier.refresh_token().unwrap().secret(),
        Some(TokenTypeHint::RefreshToken),
    )
    .await
    .unwrap();

    // This browser has no session at the provider.
    let browser = Browser::default();
    let answered = Arc::new(Mutex::new(Vec::new()));
    let silent_failures = Arc::new(Mutex::new(Vec::new()));
    let (a, b, c) = (answered.clone(), answered.clone(), answered.clone());
    let refresh = RefreshTokenGrant::new(
        provider.url("/token").parse().unwrap(),
        ClientAuth::none(SILENT),
        http(),
    )
    .on_success(move |_| a.lock().unwrap().push("refresh"));
    let silent = Arc::new(
        provider
            .silent_login(ClientAuth::none(SILENT), browser.clone())
            .await
            .on_success(move |_| b.lock().unwrap().push("silent")),
    );
    let failures = silent_failures.clone();
    // The silent link, remembering why it failed.
    let silent = source::from_fn(move |current| {
        let (silent, failures) = (silent.clone(), failures.clone());
        async move {
            let fetched = silent.fetch(current.as_ref()).await;
            if let Err(err) = &fetched {
                failures.lock().unwrap().push(LoginError::of(err).cloned());
            }
            fetched
        }
    });
    let interactive = provider
        .code_login(ClientAuth::none(SILENT), browser.clone())
        .await
        .on_success(move |_| c.lock().unwrap().push("interactive"));
    let manager = TokenManager::builder(refresh.or_else(silent).or_else(interactive))
        .initial(earlier)
        .attempt_timeout(Duration::from_secs(60))
        .build();
    let auth = manager.refresh().await.unwrap();
    let access = auth
        .header()
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    assert!(provider.api_accepts(&access).await);
    assert_eq!(*answered.lock().unwrap(), ["interactive"]);
    let failures = silent_failures.lock().unwrap().clone();
    assert!(
        matches!(
            failures.as_slice(),
            [Some(LoginError::InteractionRequired {
                error: ErrorCode::LoginRequired,
                ..
            })]
        ),
        "{failures:?}"
    );
    let logins = provider.logins().await;
    // The earlier login's and this one's: the silent link met none.
    assert_eq!(logins["interactions"], 2);
    assert_eq!(logins["authorization_code_grants"], 2);
}

#[tokio::test]
async fn a_silent_login_of_a_native_client_the_provider_always_asks_is_interaction_required() {
    let Some(provider) = Provider::start(&[]).await else {
        return;
    };
    let browser = Browser::default();
    provider
        .code_login(ClientAuth::none(PUBLIC), browser.clone())
        .await
        .login()
        .await
        .unwrap();
    browser.visited.lock().unwrap().clear();
    // A session exists, but oidc-provider wants every native client's
    // user to consent again (RFC 8252 §8.6).
    silent_login_needs_the_user(&provider, PUBLIC, &browser, ErrorCode::InteractionRequired).await;
    assert_eq!(provider.logins().await["interactions"], 1);
}

#[tokio::test]
async fn a_silent_login_after_the_grant_was_revoked_is_consent_required() {
    let Some(provider) = Provider::start(&[]).await else {
        return;
    };
    let browser = Browser::default();
    let tokens = provider
        .code_login(ClientAuth::none(SILENT), browser.clone())
        .await
        .login()
        .await
        .unwrap();
    // Revoking the refresh token revokes its grant; the session stays.
    RevocationClient::new(
        provider.url("/token/revocation").parse().unwrap(),
        ClientAuth::none(SILENT),
        http(),
    )
    .revoke(
        tokens.refresh_token().unwrap().secret(),
        Some(TokenTypeHint::RefreshToken),
    )
    .await
    .unwrap();
    browser.visited.lock().unwrap().clear();
    silent_login_needs_the_user(&provider, SILENT, &browser, ErrorCode::ConsentRequired).await;
    assert_eq!(provider.logins().await["interactions"], 1);
}
