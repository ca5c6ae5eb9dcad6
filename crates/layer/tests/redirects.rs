//! Redirects with tower-http's `FollowRedirect`, against real servers of
//! different origins on 127.0.0.1: a redirector `X` (our API, for these
//! tests), and `E`, a resource server of another authorization server that
//! records which tokens it was sent (or, for the credential-header tests, a
//! second redirector that records every header it was sent).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode as AxumStatus, header},
    response::IntoResponse,
};
use bytes::Bytes;
use http::{HeaderName, Request, StatusCode};
use http_body_util::Full;
use support::*;
use tower::{Layer, ServiceBuilder};
use tower_http::follow_redirect::FollowRedirectLayer;
use tower_token_refresh::{Scheme, TokenManager, TokenRefreshLayer, TokenSet, source};
use tower_token_refresh_test_util::{AuthConfig, AuthServer, ResourceServer, hyper_client};

/// The `Authorization` and `x-api-key` headers `X` received, in order
/// (`None`: none).
type Seen = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

const API_KEY: HeaderName = HeaderName::from_static("x-api-key");

struct Redirector {
    addr: SocketAddr,
    seen: Seen,
}

impl Redirector {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn origin(&self) -> tower_token_refresh::Origin {
        format!("http://{}", self.addr).parse().unwrap()
    }

    /// The `Authorization` headers received.
    fn seen(&self) -> Vec<Option<String>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.0.clone())
            .collect()
    }

    /// The values of `header` (`Authorization` or `x-api-key`) received.
    fn seen_in(&self, header: &HeaderName) -> Vec<Option<String>> {
        let seen = self.seen.lock().unwrap();
        if header == header::AUTHORIZATION {
            seen.iter().map(|s| s.0.clone()).collect()
        } else {
            seen.iter().map(|s| s.1.clone()).collect()
        }
    }
}

/// `X`: `/leave` redirects to `E`, `/same` to its own `/ok`, `/same-401`
/// to its own `/reject` (a 401 `invalid_token`).
async fn redirector(elsewhere: String) -> Redirector {
    let seen: Seen = Arc::default();
    let state = (seen.clone(), elsewhere);
    let handler = |State((seen, elsewhere)): State<(Seen, String)>,
                   uri: axum::http::Uri,
                   headers: HeaderMap| async move {
        let get = |name: &HeaderName| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
        seen.lock()
            .unwrap()
            .push((get(&header::AUTHORIZATION), get(&API_KEY)));
        let found = |to: String| (AxumStatus::FOUND, [(header::LOCATION, to)]).into_response();
        match uri.path() {
            "/leave" => found(elsewhere),
            "/same" => found("/ok".to_owned()),
            "/same-401" => found("/reject".to_owned()),
            "/ok" => "ok".into_response(),
            "/reject" => (
                AxumStatus::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#)],
            )
                .into_response(),
            _ => AxumStatus::NOT_FOUND.into_response(),
        }
    };
    let router = Router::new().fallback(handler).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Redirector { addr, seen }
}

/// `E`: a resource server of another authorization server. Without
/// credentials it answers 401 `Bearer realm="test"`, which by itself would
/// count as a rejected token.
async fn elsewhere() -> (AuthServer, ResourceServer) {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    (auth, api)
}

fn get_req(url: String) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

#[tokio::test]
async fn inside_follow_redirect_a_scoped_layer_never_sends_the_token_across_origins() {
    let w = world(|b| b).await;
    let (_e_auth, e) = elsewhere().await;
    let x = redirector(e.url("/api/data")).await;
    let token = format!("Bearer {}", w.login.access_token);
    let client = ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .layer(
            TokenRefreshLayer::new(w.tokens.clone())
                .allow_origin(x.origin())
                .pass_through_other_origins(true),
        )
        .service(hyper_client());

    let response = send(&client, get_req(x.url("/leave"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "E's answer");
    assert_eq!(x.seen(), vec![Some(token.clone())], "X is in scope");
    assert_eq!(e.stats().requests, 1);
    assert_eq!(e.stats().missing_credentials, 1, "E got no token");
    assert_eq!(e.requests_with(&w.login.access_token), 0);
    // E's 401 was out of scope: no refresh, no replay.
    assert_eq!(w.tokens.stats().refreshes_started, 0);
    assert_eq!(w.tokens.stats().replays, 0);

    // A same-origin redirect carries the token on both hops.
    let response = send(&client, get_req(x.url("/same"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(x.seen()[1..], [Some(token.clone()), Some(token)]);
}

/// Why `any_origin` is a last resort: the layer adds the token to every hop.
#[tokio::test]
async fn inside_follow_redirect_any_origin_would_leak_the_token() {
    let w = world(|b| b).await;
    let (_e_auth, e) = elsewhere().await;
    let x = redirector(e.url("/api/data")).await;
    let client = FollowRedirectLayer::new().layer(
        TokenRefreshLayer::new(w.tokens.clone())
            .any_origin()
            .layer(hyper_client()),
    );
    let _ = send(&client, get_req(x.url("/leave"))).await;
    assert_eq!(e.requests_with(&w.login.access_token), 1);
}

#[cfg(feature = "follow-redirect")]
#[tokio::test]
async fn outside_follow_redirect_a_401_from_another_origin_is_not_our_tokens_rejection() {
    let w = world(|b| b).await;
    let (_e_auth, e) = elsewhere().await;
    let x = redirector(e.url("/api/data")).await;
    let token = format!("Bearer {}", w.login.access_token);
    let client = ServiceBuilder::new()
        .layer(TokenRefreshLayer::new(w.tokens.clone()).allow_origin(x.origin()))
        .layer(FollowRedirectLayer::new())
        .service(hyper_client());

    let response = send(&client, get_req(x.url("/leave"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "E's answer");
    assert_eq!(x.seen(), vec![Some(token.clone())]);
    // FollowRedirect stripped the token on the cross-origin hop...
    assert_eq!(e.stats().missing_credentials, 1);
    assert_eq!(e.requests_with(&w.login.access_token), 0);
    // ...and E's 401 did not count against our token.
    assert_eq!(w.tokens.stats().refreshes_started, 0);
    assert_eq!(w.tokens.stats().replays, 0);
    assert_eq!(w.auth.stats().token_requests, 0);
    assert_eq!(x.seen().len(), 1, "not replayed");

    // A 401 from our own origin after a same-origin redirect still counts:
    // one refresh, one replay (through both hops again).
    let response = send(&client, get_req(x.url("/same-401"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(w.tokens.stats().refreshes_started, 1);
    assert_eq!(w.tokens.stats().replays, 1);
    assert_eq!(w.auth.stats().refresh_grants, 1);
    let seen = x.seen();
    assert_eq!(seen.len(), 1 + 4);
    let new = format!(
        "Bearer {}",
        w.tokens.current().unwrap().access_token().secret()
    );
    assert_eq!(
        seen[1..],
        [
            Some(token.clone()),
            Some(token),
            Some(new.clone()),
            Some(new)
        ]
    );
}

/// Our API (`R`, the world's resource server) reached through a redirect
/// from another origin: only the hop to `R` carries the token (`X` is let
/// through without it).
#[tokio::test]
async fn a_redirect_into_scope_carries_the_token_only_on_the_scoped_hop() {
    let w = world(|b| b).await;
    let x = redirector(w.api.url("/api/data")).await;
    let client = ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .layer(
            TokenRefreshLayer::new(w.tokens.clone())
                .allow_origin(origin_of(w.api.addr()))
                .pass_through_other_origins(true),
        )
        .service(hyper_client());
    let response = send(&client, get_req(x.url("/leave"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(x.seen(), vec![None], "X is out of scope");
    assert_eq!(w.api.requests_with(&w.login.access_token), 1);
}

/// A manager whose credential is the bare key `k3y`, for `x-api-key`.
fn api_key_tokens() -> TokenManager {
    let key = || TokenSet::bearer("k3y").with_expires_in(HOUR);
    TokenManager::builder(source::from_fn(move |_| async move { Ok(key()) }))
        .initial(key())
        .scheme(Scheme::None)
        .build()
}

/// What a request through `X` to `E` should carry in `header`: the token
/// layer for `X`'s origin only, sending `header`.
fn layer_for(x: &Redirector, header: &HeaderName, w: &World) -> TokenRefreshLayer {
    let tokens = if header == http::header::AUTHORIZATION {
        w.tokens.clone()
    } else {
        api_key_tokens()
    };
    TokenRefreshLayer::new(tokens)
        .allow_origin(x.origin())
        .header_name(header.clone())
}

fn credential(header: &HeaderName, w: &World) -> String {
    if header == http::header::AUTHORIZATION {
        format!("Bearer {}", w.login.access_token)
    } else {
        "k3y".to_owned()
    }
}

#[cfg(feature = "follow-redirect")]
/// Layer outside `FollowRedirect`, which has the layer's policy: the first
/// hop carries the credential, the hop to `E` does not, whatever the
/// header.
async fn outside_strips_on_the_cross_origin_hop(header: HeaderName) {
    let w = world(|b| b).await;
    let e = redirector(String::new()).await;
    let x = redirector(e.url("/ok")).await;
    let auth = layer_for(&x, &header, &w);
    let client = ServiceBuilder::new()
        .layer(auth.clone())
        .layer(FollowRedirectLayer::with_policy(auth.redirect_policy()))
        .service(hyper_client());

    let response = send(&client, get_req(x.url("/leave"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "E's answer");
    assert_eq!(x.seen_in(&header), vec![Some(credential(&header, &w))]);
    assert_eq!(e.seen_in(&header), vec![None], "E got the credential");
    assert_eq!(e.seen(), vec![None], "nor any Authorization");

    // A same-origin redirect keeps it on both hops.
    let response = send(&client, get_req(x.url("/same"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cred = Some(credential(&header, &w));
    assert_eq!(x.seen_in(&header)[1..], [cred.clone(), cred]);
}

#[cfg(feature = "follow-redirect")]
/// tower-http strips only `Authorization`, `Cookie` and
/// `Proxy-Authorization` on a cross-origin hop; the layer's redirect policy
/// strips its custom token header too.
#[tokio::test]
async fn outside_follow_redirect_a_custom_header_is_stripped_on_a_cross_origin_hop() {
    outside_strips_on_the_cross_origin_hop(API_KEY).await;
}

#[cfg(feature = "follow-redirect")]
#[tokio::test]
async fn outside_follow_redirect_authorization_is_stripped_on_a_cross_origin_hop() {
    outside_strips_on_the_cross_origin_hop(http::header::AUTHORIZATION).await;
}

/// Why the layer's redirect policy matters: tower-http's own lets a custom
/// credential header follow the redirect.
#[tokio::test]
async fn outside_follow_redirect_the_standard_policy_alone_leaks_a_custom_header() {
    let w = world(|b| b).await;
    let e = redirector(String::new()).await;
    let x = redirector(e.url("/ok")).await;
    let client = ServiceBuilder::new()
        .layer(layer_for(&x, &API_KEY, &w))
        .layer(FollowRedirectLayer::new())
        .service(hyper_client());
    send(&client, get_req(x.url("/leave"))).await.unwrap();
    assert_eq!(e.seen_in(&API_KEY), vec![Some("k3y".to_owned())]);
}

/// Layer inside `FollowRedirect`: the hop to `E` passes the layer again,
/// and its origin policy refuses to add the credential. By default the hop
/// is refused outright (a typed policy error, `E` never asked); with
/// `pass_through_other_origins` it goes to `E` without the credential.
async fn inside_refuses_the_credential_for_the_other_origin(header: HeaderName) {
    let w = world(|b| b).await;
    let e = redirector(String::new()).await;
    let x = redirector(e.url("/ok")).await;
    let refusing = ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .layer(layer_for(&x, &header, &w))
        .service(hyper_client());
    let err = send(&refusing, get_req(x.url("/leave"))).await.unwrap_err();
    assert_eq!(
        session_error(&err).map(|e| e.kind()),
        Some(tower_token_refresh::ErrorKind::Policy),
        "{err}"
    );
    assert_eq!(x.seen_in(&header), vec![Some(credential(&header, &w))]);
    assert!(e.seen().is_empty(), "E was not asked");

    let passing = ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .layer(layer_for(&x, &header, &w).pass_through_other_origins(true))
        .service(hyper_client());
    let response = send(&passing, get_req(x.url("/leave"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "E's answer");
    assert_eq!(e.seen_in(&header), vec![None], "E got the credential");
    assert_eq!(e.seen(), vec![None]);
}

#[tokio::test]
async fn inside_follow_redirect_a_custom_header_is_refused_for_another_origin() {
    inside_refuses_the_credential_for_the_other_origin(API_KEY).await;
}

#[tokio::test]
async fn inside_follow_redirect_authorization_is_refused_for_another_origin() {
    inside_refuses_the_credential_for_the_other_origin(http::header::AUTHORIZATION).await;
}
