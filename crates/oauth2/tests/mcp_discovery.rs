//! The MCP authorization chain (spec 2025-11-25) over real HTTP: a resource
//! server's 401, its protected resource metadata (RFC 9728), the
//! authorization server's metadata (RFC 8414 / OIDC, in the MCP order),
//! dynamic client registration (RFC 7591), the code login with RFC 8707
//! `resource`, scope selection and step-up, RFC 9207 `iss`, and a restart
//! that finds its registration in the store.
//!
//! The two servers are small axum routers on 127.0.0.1 port 0, written
//! here after the MCP conformance suite's mock servers (same paths, same
//! traps); they will move into test-util's `AuthServer` as switches. The
//! "browser" GETs the authorization URL without following the redirect,
//! as the conformance client does, then delivers the `Location` to the
//! login's loopback listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{Router, body::Body, extract::Request, response::Response};
use http::{StatusCode, header};
use http_body_util::{BodyExt, Full};
mod support;

use support::{Http, http};
use tower_token_refresh::{
    ErrorKind, FileStore, TokenManager, TokenStore,
    classify::parse_challenges,
    oauth2::{
        AuthorizationCodeLogin, ClientAuth, ClientCredentialsGrant, ClientIdentity,
        ClientRegistration, LoginError, McpAuthorization, ProtectedResourceMetadata,
        ProviderMetadata, RefreshTokenGrant, RegisteredClient, ResourceIndicator, ScopeStepUp,
        StepUpDecision, select_scope,
    },
};
use tower_token_refresh_test_util::hyper_client;

/// How the two servers are set up: the conformance scenarios' knobs.
#[derive(Clone)]
struct Setup {
    /// Where the resource serves its metadata.
    prm_path: &'static str,
    /// Whether the 401 names it (`resource_metadata`).
    prm_in_header: bool,
    /// The metadata's `resource`; `None`: the conformance default (the
    /// MCP URL, or the origin for the root document).
    prm_resource: Option<String>,
    prm_scopes: Option<&'static [&'static str]>,
    /// The `scope` of the 401 challenge.
    challenge_scope: Option<&'static str>,
    /// The scope `/mcp` requires of a token; a token without it gets a 403.
    required_scope: Option<&'static str>,
    /// The issuer's path (`/tenant1`) and where its metadata is served.
    issuer_path: &'static str,
    as_metadata_path: &'static str,
    as_scopes: Option<&'static [&'static str]>,
    cimd: bool,
    iss_supported: bool,
    /// What the redirect's `iss` is: none, the issuer, or another.
    iss_sent: Iss,
    /// The `token_endpoint_auth_method` the registration answers with.
    registered_method: &'static str,
}

#[derive(Clone, Copy, PartialEq)]
enum Iss {
    Absent,
    Right,
    Wrong,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            prm_path: "/.well-known/oauth-protected-resource/mcp",
            prm_in_header: true,
            prm_resource: None,
            prm_scopes: None,
            challenge_scope: None,
            required_scope: None,
            issuer_path: "",
            as_metadata_path: "/.well-known/oauth-authorization-server",
            as_scopes: None,
            cimd: false,
            iss_supported: false,
            iss_sent: Iss::Absent,
            registered_method: "client_secret_post",
        }
    }
}

/// What the servers saw.
#[derive(Default)]
struct Seen {
    /// Every request, as `rs GET /path` or `as POST /path`.
    requests: Vec<String>,
    registrations: Vec<serde_json::Value>,
    authorizations: Vec<HashMap<String, String>>,
    /// Token requests: the form and the `Authorization` header.
    token_requests: Vec<(HashMap<String, String>, Option<String>)>,
    /// Access token → the scope it was granted.
    issued: HashMap<String, String>,
}

#[derive(Clone)]
struct World {
    setup: Setup,
    rs: String,
    asrv: String,
    seen: Arc<Mutex<Seen>>,
}

impl World {
    async fn start(setup: Setup) -> World {
        let rs_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let as_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let world = World {
            setup,
            rs: format!("http://{}", rs_listener.local_addr().unwrap()),
            asrv: format!("http://{}", as_listener.local_addr().unwrap()),
            seen: Arc::default(),
        };
        for (listener, is_rs) in [(rs_listener, true), (as_listener, false)] {
            let w = world.clone();
            let app = Router::new().fallback(move |req: Request| {
                let w = w.clone();
                async move {
                    if is_rs {
                        w.resource(req).await
                    } else {
                        w.authorization_server(req).await
                    }
                }
            });
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        world
    }

    fn mcp_url(&self) -> String {
        format!("{}/mcp", self.rs)
    }

    fn issuer(&self) -> String {
        format!("{}{}", self.asrv, self.setup.issuer_path)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }

    fn requested(&self, line: &str) -> bool {
        self.seen().requests.iter().any(|r| r == line)
    }

    async fn resource(&self, req: Request) -> Response {
        let path = req.uri().path().to_owned();
        self.seen()
            .requests
            .push(format!("rs {} {path}", req.method()));
        let s = &self.setup;
        if req.method() == http::Method::GET && path == s.prm_path {
            let resource = s.prm_resource.clone().unwrap_or_else(|| {
                if s.prm_path == "/.well-known/oauth-protected-resource" {
                    self.rs.clone()
                } else {
                    self.mcp_url()
                }
            });
            let mut doc = serde_json::json!({
                "resource": resource,
                "authorization_servers": [self.issuer()],
            });
            if let Some(scopes) = s.prm_scopes {
                doc["scopes_supported"] = serde_json::json!(scopes);
            }
            return json(StatusCode::OK, doc);
        }
        if req.method() != http::Method::POST || path != "/mcp" {
            return status(StatusCode::NOT_FOUND);
        }
        let granted = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|token| self.seen().issued.get(token).cloned());
        let metadata = if s.prm_in_header {
            format!(r#", resource_metadata="{}{}""#, self.rs, s.prm_path)
        } else {
            String::new()
        };
        let Some(granted) = granted else {
            let scope = s
                .challenge_scope
                .map(|sc| format!(r#", scope="{sc}""#))
                .unwrap_or_default();
            return challenge(
                StatusCode::UNAUTHORIZED,
                format!(r#"Bearer error="invalid_token"{scope}{metadata}"#),
            );
        };
        if let Some(required) = s.required_scope {
            let has = |sc: &str| granted.split(' ').any(|g| g == sc);
            if !required.split(' ').all(has) {
                return challenge(
                    StatusCode::FORBIDDEN,
                    format!(r#"Bearer error="insufficient_scope", scope="{required}"{metadata}"#),
                );
            }
        }
        json(StatusCode::OK, serde_json::json!({"ok": true}))
    }

    async fn authorization_server(&self, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        self.seen()
            .requests
            .push(format!("as {} {path}", parts.method));
        let s = &self.setup;
        let prefix = s.issuer_path;
        let body = body.collect().await.unwrap().to_bytes();
        let form =
            || -> HashMap<String, String> { form_urlencoded::parse(&body).into_owned().collect() };
        match (parts.method.as_str(), path.strip_prefix(prefix)) {
            ("GET", _) if path == s.as_metadata_path => {
                let base = self.issuer();
                let mut doc = serde_json::json!({
                    "issuer": base,
                    "authorization_endpoint": format!("{base}/authorize"),
                    "token_endpoint": format!("{base}/token"),
                    "registration_endpoint": format!("{base}/register"),
                    "response_types_supported": ["code"],
                    "code_challenge_methods_supported": ["S256"],
                    "token_endpoint_auth_methods_supported": [s.registered_method],
                    "authorization_response_iss_parameter_supported": s.iss_supported,
                    "client_id_metadata_document_supported": s.cimd,
                });
                if let Some(scopes) = s.as_scopes {
                    doc["scopes_supported"] = serde_json::json!(scopes);
                }
                json(StatusCode::OK, doc)
            }
            ("POST", Some("/register")) => {
                let asked: serde_json::Value = serde_json::from_slice(&body).unwrap();
                self.seen().registrations.push(asked);
                json(
                    StatusCode::CREATED,
                    serde_json::json!({
                        "client_id": "dyn-client",
                        "client_secret": "dyn-secret",
                        "client_secret_expires_at": 0,
                        "token_endpoint_auth_method": s.registered_method,
                    }),
                )
            }
            ("GET", Some("/authorize")) => {
                let query: HashMap<String, String> =
                    form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                        .into_owned()
                        .collect();
                let mut location = format!(
                    "{}?code=code-{}&state={}",
                    query["redirect_uri"],
                    self.seen().authorizations.len(),
                    query["state"]
                );
                match s.iss_sent {
                    Iss::Absent => {}
                    Iss::Right => location.push_str(&format!("&iss={}", encode(&self.issuer()))),
                    Iss::Wrong => location.push_str("&iss=https%3A%2F%2Fevil.example"),
                }
                self.seen().authorizations.push(query);
                Response::builder()
                    .status(StatusCode::FOUND)
                    .header(header::LOCATION, location)
                    .body(Body::empty())
                    .unwrap()
            }
            ("POST", Some("/token")) => {
                let form = form();
                let auth = parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .map(|v| v.to_str().unwrap().to_owned());
                let mut seen = self.seen();
                seen.token_requests.push((form.clone(), auth));
                // The scope of the latest authorization, as the suite grants.
                let scope = seen
                    .authorizations
                    .last()
                    .and_then(|a| a.get("scope").cloned())
                    .unwrap_or_default();
                let n = seen.token_requests.len();
                let token = format!("at-{n}");
                seen.issued.insert(token.clone(), scope.clone());
                json(
                    StatusCode::OK,
                    serde_json::json!({
                        "access_token": token,
                        "token_type": "Bearer",
                        "expires_in": 3600,
                        "refresh_token": format!("rt-{n}"),
                        "scope": scope,
                    }),
                )
            }
            _ => status(StatusCode::NOT_FOUND),
        }
    }
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn status(status: StatusCode) -> Response {
    Response::builder()
        .status(status)
        .body(Body::empty())
        .unwrap()
}

fn challenge(status: StatusCode, value: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::WWW_AUTHENTICATE, value)
        .body(Body::empty())
        .unwrap()
}

/// One POST to the MCP endpoint: its status, and the challenge's `scope`
/// and `resource_metadata`, read with the layer's challenge parser.
async fn call_mcp(
    world: &World,
    token: Option<&str>,
) -> (StatusCode, Option<String>, Option<String>) {
    let mut request = http::Request::post(world.mcp_url());
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = hyper_client()
        .request(request.body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let value = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let challenges = parse_challenges(&value);
    let param = |name: &str| {
        challenges
            .iter()
            .find_map(|c| c.param(name).map(|v| v.into_owned()))
    };
    (status, param("scope"), param("resource_metadata"))
}

/// The "browser": GETs the authorization URL without following the
/// redirect, then takes the `Location` to the login's listener.
fn browser(url: &str) {
    let url = url.to_owned();
    tokio::spawn(async move {
        let authorize = http::Request::get(url).body(Full::default()).unwrap();
        let response = hyper_client().request(authorize).await.unwrap();
        assert_eq!(response.status(), StatusCode::FOUND);
        let location = response.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .to_owned();
        let redirect = http::Request::get(location).body(Full::default()).unwrap();
        let _ = hyper_client().request(redirect).await;
    });
}

/// The discovery chain from a first unauthenticated call: the 401, the
/// resource's metadata, the authorization server's.
async fn discover(world: &World) -> (ProtectedResourceMetadata, ProviderMetadata, Option<String>) {
    let (status, scope, metadata_url) = call_mcp(world, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let metadata_url = metadata_url.map(|u| u.parse().unwrap());
    let resource =
        ProtectedResourceMetadata::discover(&world.mcp_url(), metadata_url.as_ref(), &http())
            .await
            .unwrap();
    let server = resource.authorization_server(&http()).await.unwrap();
    (resource, server, scope)
}

/// A login on `server` for the resource, as `auth`, asking for `scope`.
fn login(
    server: &ProviderMetadata,
    resource: &ProtectedResourceMetadata,
    auth: ClientAuth,
    scope: Option<&str>,
) -> AuthorizationCodeLogin<Http> {
    let login = server
        .authorization_code_login(auth, http())
        .unwrap()
        .resource(ResourceIndicator::new(resource.resource()).unwrap())
        .on_authorization_url(browser);
    match scope {
        Some(scope) => login.scope(scope),
        None => login,
    }
}

#[tokio::test]
async fn the_challenges_metadata_url_leads_to_a_registered_login_with_resource_everywhere() {
    let world = World::start(Setup {
        challenge_scope: Some("mcp:basic"),
        ..Setup::default()
    })
    .await;
    let (resource, server, challenge_scope) = discover(&world).await;
    assert_eq!(resource.resource(), world.mcp_url());
    let registered = ClientRegistration::new()
        .client_name("ttr test")
        .redirect_uris(["http://127.0.0.1/callback"])
        .grant_types(["authorization_code", "refresh_token"])
        .response_types(["code"])
        .token_endpoint_auth_method("client_secret_basic")
        .register(server.registration_endpoint().unwrap(), &http())
        .await
        .unwrap();
    // The server answered client_secret_post: that is what is used.
    let auth = registered.client_auth().unwrap();
    assert_eq!(auth.method(), "client_secret_post");
    let scope = select_scope(
        challenge_scope.as_deref(),
        Some(&resource),
        Some(&server),
        true,
    );
    assert_eq!(scope.as_deref(), Some("mcp:basic"));
    let tokens = login(&server, &resource, auth, scope.as_deref())
        .login()
        .await
        .unwrap();
    let (status, _, _) = call_mcp(&world, Some(tokens.access_token().secret())).await;
    assert_eq!(status, StatusCode::OK);

    let seen = world.seen();
    assert_eq!(seen.registrations.len(), 1);
    assert_eq!(seen.registrations[0]["client_name"], "ttr test");
    let asked = &seen.authorizations[0];
    assert_eq!(asked["resource"], world.mcp_url());
    assert_eq!(asked["scope"], "mcp:basic");
    assert_eq!(asked["client_id"], "dyn-client");
    assert_eq!(asked["code_challenge_method"], "S256");
    let (form, basic) = &seen.token_requests[0];
    assert_eq!(
        form["resource"],
        world.mcp_url(),
        "the same resource both times"
    );
    assert_eq!(form["client_secret"], "dyn-secret");
    assert!(basic.is_none());
    // The suite's trap: the root document is never asked for first.
    assert!(
        !seen
            .requests
            .iter()
            .any(|r| r == "rs GET /.well-known/oauth-protected-resource")
    );
}

#[tokio::test]
async fn without_a_header_the_path_based_document_and_the_root_openid_configuration_are_found() {
    // metadata-var1
    let world = World::start(Setup {
        prm_in_header: false,
        as_metadata_path: "/.well-known/openid-configuration",
        ..Setup::default()
    })
    .await;
    let (resource, server, _) = discover(&world).await;
    assert_eq!(resource.resource(), world.mcp_url());
    assert_eq!(server.issuer(), world.issuer());
    assert!(world.requested("rs GET /.well-known/oauth-protected-resource/mcp"));
    assert!(!world.requested("rs GET /.well-known/oauth-protected-resource"));
    // RFC 8414's document was asked for first, and was not there.
    assert!(world.requested("as GET /.well-known/oauth-authorization-server"));
}

#[tokio::test]
async fn a_root_document_names_the_origin_and_a_tenant_issuer_is_never_looked_up_at_the_root() {
    // metadata-var2
    let world = World::start(Setup {
        prm_path: "/.well-known/oauth-protected-resource",
        prm_in_header: false,
        issuer_path: "/tenant1",
        as_metadata_path: "/.well-known/oauth-authorization-server/tenant1",
        ..Setup::default()
    })
    .await;
    let (resource, server, _) = discover(&world).await;
    assert_eq!(resource.resource(), world.rs);
    assert_eq!(server.issuer(), format!("{}/tenant1", world.asrv));
    assert_eq!(
        server.token_endpoint().to_string(),
        format!("{}/tenant1/token", world.asrv)
    );
    // Path-based first, then the root.
    let requests = world.seen().requests.clone();
    let path_based = requests
        .iter()
        .position(|r| r == "rs GET /.well-known/oauth-protected-resource/mcp")
        .unwrap();
    let root = requests
        .iter()
        .position(|r| r == "rs GET /.well-known/oauth-protected-resource")
        .unwrap();
    assert!(path_based < root);
    assert!(!world.requested("as GET /.well-known/oauth-authorization-server"));
}

#[tokio::test]
async fn a_custom_metadata_location_and_an_appended_openid_configuration_are_found() {
    // metadata-var3
    let world = World::start(Setup {
        prm_path: "/custom/metadata/location.json",
        issuer_path: "/tenant1",
        as_metadata_path: "/tenant1/.well-known/openid-configuration",
        ..Setup::default()
    })
    .await;
    let (_, server, _) = discover(&world).await;
    assert_eq!(server.issuer(), format!("{}/tenant1", world.asrv));
    assert!(world.requested("as GET /.well-known/oauth-authorization-server/tenant1"));
    assert!(world.requested("as GET /.well-known/openid-configuration/tenant1"));
    assert!(!world.requested("as GET /.well-known/oauth-authorization-server"));
    // The header's URL is the only one tried.
    assert!(!world.requested("rs GET /.well-known/oauth-protected-resource/mcp"));
}

#[tokio::test]
async fn metadata_for_another_resource_stops_everything_before_the_authorization_server() {
    let world = World::start(Setup {
        prm_resource: Some("http://127.0.0.1:1/mcp".to_owned()),
        ..Setup::default()
    })
    .await;
    let (_, _, metadata_url) = call_mcp(&world, None).await;
    let metadata_url = metadata_url.map(|u| u.parse().unwrap());
    let err = ProtectedResourceMetadata::discover(&world.mcp_url(), metadata_url.as_ref(), &http())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse);
    assert!(world.seen().requests.iter().all(|r| r.starts_with("rs ")));
}

#[tokio::test]
async fn scopes_supported_is_asked_for_whole_with_offline_access_when_the_server_offers_it() {
    let world = World::start(Setup {
        prm_scopes: Some(&["mcp:basic", "mcp:read", "mcp:write"]),
        as_scopes: Some(&["mcp:basic", "offline_access"]),
        ..Setup::default()
    })
    .await;
    let (resource, server, challenge_scope) = discover(&world).await;
    assert_eq!(challenge_scope, None);
    let scope = select_scope(None, Some(&resource), Some(&server), true);
    assert_eq!(
        scope.as_deref(),
        Some("mcp:basic mcp:read mcp:write offline_access")
    );
}

#[tokio::test]
async fn a_403_for_more_scope_reauthorizes_once_with_the_union() {
    // scope-step-up
    let world = World::start(Setup {
        challenge_scope: Some("mcp:basic"),
        required_scope: Some("mcp:basic mcp:write"),
        registered_method: "none",
        ..Setup::default()
    })
    .await;
    let (resource, server, challenge_scope) = discover(&world).await;
    let auth = ClientAuth::none("pre-registered");
    let scope = select_scope(
        challenge_scope.as_deref(),
        Some(&resource),
        Some(&server),
        false,
    );
    let mut step_up = ScopeStepUp::new(scope.as_deref());
    let mut tokens = login(&server, &resource, auth.clone(), scope.as_deref())
        .login()
        .await
        .unwrap();
    let status = loop {
        let (status, required, _) = call_mcp(&world, Some(tokens.access_token().secret())).await;
        if status != StatusCode::FORBIDDEN {
            break status;
        }
        match step_up.escalate(required.as_deref()) {
            StepUpDecision::Authorize(scope) => {
                tokens = login(&server, &resource, auth.clone(), Some(&scope))
                    .login()
                    .await
                    .unwrap();
            }
            other => panic!("gave up: {other:?}"),
        }
    };
    assert_eq!(status, StatusCode::OK);
    let seen = world.seen();
    let scopes: Vec<&str> = seen
        .authorizations
        .iter()
        .map(|a| a["scope"].as_str())
        .collect();
    assert_eq!(scopes, ["mcp:basic", "mcp:basic mcp:write"]);
}

#[tokio::test]
async fn a_resource_that_always_refuses_gets_three_authorizations_at_most() {
    // scope-retry-limit, with a server asking for a new scope each time
    // so that only the bound stops the client.
    let world = World::start(Setup {
        challenge_scope: Some("mcp:admin"),
        required_scope: Some("mcp:admin mcp:never"),
        registered_method: "none",
        ..Setup::default()
    })
    .await;
    let (resource, server, challenge_scope) = discover(&world).await;
    let auth = ClientAuth::none("pre-registered");
    let mut step_up = ScopeStepUp::new(challenge_scope.as_deref());
    let mut scope = challenge_scope.clone().unwrap();
    let mut n = 0;
    let decision = loop {
        let tokens = login(&server, &resource, auth.clone(), Some(&scope))
            .login()
            .await
            .unwrap();
        let (status, _, _) = call_mcp(&world, Some(tokens.access_token().secret())).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        n += 1;
        match step_up.escalate(Some(&format!("mcp:admin mcp:never{n}"))) {
            StepUpDecision::Authorize(next) => scope = next,
            other => break other,
        }
    };
    assert_eq!(decision, StepUpDecision::LimitReached);
    assert_eq!(world.seen().authorizations.len(), 3);
}

#[tokio::test]
async fn a_client_id_metadata_document_url_is_the_client_id_and_nothing_is_registered() {
    // basic-cimd
    let world = World::start(Setup {
        cimd: true,
        ..Setup::default()
    })
    .await;
    let (resource, server, _) = discover(&world).await;
    let cimd = "https://conformance-test.local/client-metadata.json";
    let auth = server.client_id_metadata_document(cimd).unwrap().unwrap();
    login(&server, &resource, auth, None).login().await.unwrap();
    let seen = world.seen();
    assert_eq!(seen.authorizations[0]["client_id"], cimd);
    assert!(!seen.authorizations[0].contains_key("scope"));
    assert!(seen.registrations.is_empty());
}

#[tokio::test]
async fn an_iss_is_required_when_the_server_says_it_sends_one() {
    for (supported, sent, ok) in [
        (true, Iss::Right, true),
        (true, Iss::Absent, false),
        (true, Iss::Wrong, false),
        // Not announced: checked only when present (RFC 9207 §2.4).
        (false, Iss::Absent, true),
        (false, Iss::Right, true),
        (false, Iss::Wrong, false),
    ] {
        let world = World::start(Setup {
            iss_supported: supported,
            iss_sent: sent,
            ..Setup::default()
        })
        .await;
        let (resource, server, _) = discover(&world).await;
        let result = login(&server, &resource, ClientAuth::none("app"), None)
            .login()
            .await;
        match result {
            Ok(_) => assert!(ok, "supported={supported}"),
            Err(err) => {
                assert!(!ok, "supported={supported}: {err}");
                assert_eq!(LoginError::of(&err), Some(&LoginError::IssuerMismatch));
                assert!(world.seen().token_requests.is_empty(), "no code exchanged");
            }
        }
    }
}

#[tokio::test]
async fn every_refresh_and_client_credentials_request_names_the_resource() {
    let world = World::start(Setup::default()).await;
    let (resource, server, _) = discover(&world).await;
    let indicator = ResourceIndicator::new(resource.resource()).unwrap();
    let refresh = server
        .refresh_token_grant(ClientAuth::basic("c", "s"), http())
        .resource(indicator.clone());
    let tokens = TokenManager::builder(refresh)
        .initial(tower_token_refresh::TokenSet::bearer("old").with_refresh_token("rt-0"))
        .build();
    tokens.refresh().await.unwrap();
    tokens.refresh().await.unwrap();
    let cc = server
        .client_credentials_grant(ClientAuth::basic("c", "s"), http())
        .resource(indicator);
    TokenManager::builder(cc)
        .build()
        .authorization()
        .await
        .unwrap();
    let seen = world.seen();
    assert_eq!(seen.token_requests.len(), 3);
    for (form, _) in &seen.token_requests {
        assert_eq!(form["resource"], world.mcp_url(), "{form:?}");
    }
}

#[tokio::test]
async fn a_restart_finds_its_registration_with_the_tokens_and_does_not_register_again() {
    let world = World::start(Setup::default()).await;
    let path = std::env::temp_dir().join(format!(
        "ttr-mcp-registration-{}-{}.json",
        std::process::id(),
        world.rs.rsplit(':').next().unwrap()
    ));
    let _ = std::fs::remove_file(&path);

    // Run 1: discover, register, log in, keep the registration with the
    // tokens, refresh once.
    let (resource, server, _) = discover(&world).await;
    let registered = ClientRegistration::new()
        .client_name("restart test")
        .redirect_uris(["http://127.0.0.1/callback"])
        .register(server.registration_endpoint().unwrap(), &http())
        .await
        .unwrap();
    let login_tokens = login(&server, &resource, registered.client_auth().unwrap(), None)
        .login()
        .await
        .unwrap();
    let grant = server.refresh_token_grant(registered.client_auth().unwrap(), http());
    let manager = TokenManager::builder(grant)
        .store(FileStore::new(&path))
        .build();
    manager
        .set(registered.store_in(&login_tokens).unwrap())
        .await
        .unwrap();
    manager.refresh().await.unwrap();
    drop(manager);

    // Run 2: what the store holds says who the client is.
    let stored = FileStore::new(&path).load().await.unwrap().unwrap();
    let found = RegisteredClient::stored_in(&stored)
        .unwrap()
        .expect("the registration survived the refresh");
    assert_eq!(found, registered);
    let grant = server.refresh_token_grant(found.client_auth().unwrap(), http());
    let manager = TokenManager::builder(grant)
        .store(FileStore::new(&path))
        .build();
    assert!(manager.load().await.unwrap());
    manager.refresh().await.unwrap();

    let seen = world.seen();
    assert_eq!(
        seen.registrations.len(),
        1,
        "registered once, across the restart"
    );
    let refreshes: Vec<_> = seen
        .token_requests
        .iter()
        .filter(|(f, _)| f["grant_type"] == "refresh_token")
        .collect();
    assert_eq!(refreshes.len(), 2);
    for (form, _) in refreshes {
        assert_eq!(form["client_id"], "dyn-client");
        assert_eq!(form["client_secret"], "dyn-secret");
    }
    drop(seen);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn an_unused_grant_shows_its_resource_but_never_its_secret() {
    let grant = ClientCredentialsGrant::new(
        "https://auth.example/token".parse().unwrap(),
        ClientAuth::basic("c", "s3cret-value"),
        http(),
    )
    .resource(ResourceIndicator::new("https://mcp.example/mcp").unwrap());
    let shown = format!("{grant:?}");
    assert!(shown.contains("https://mcp.example/mcp"), "{shown}");
    assert!(!shown.contains("s3cret-value"), "{shown}");
    let grant = RefreshTokenGrant::new(
        "https://auth.example/token".parse().unwrap(),
        ClientAuth::none("c"),
        http(),
    );
    assert!(format!("{grant:?}").contains("resources: []"));
}

/// The chain as one value: what the 401 said, the discovery, the identity.
async fn mcp_authorization(world: &World) -> McpAuthorization {
    let (status, scope, metadata_url) = call_mcp(world, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let metadata_url: Option<http::Uri> = metadata_url.map(|u| u.parse().unwrap());
    McpAuthorization::discover(
        &world.mcp_url(),
        metadata_url.as_ref(),
        scope.as_deref(),
        &http(),
    )
    .await
    .unwrap()
}

fn registration() -> ClientRegistration {
    ClientRegistration::new()
        .client_name("identity test")
        .redirect_uris(["http://127.0.0.1/callback"])
}

#[tokio::test]
async fn mcp_authorization_logs_in_and_refreshes_with_its_resource_and_scope() {
    let world = World::start(Setup {
        challenge_scope: Some("mcp:basic"),
        ..Setup::default()
    })
    .await;
    let mcp = mcp_authorization(&world).await;
    assert_eq!(mcp.resource().as_str(), world.mcp_url());
    assert_eq!(mcp.scope(), Some("mcp:basic"));

    let who = mcp
        .client_auth(&ClientIdentity::new().registration(registration()), &http())
        .await
        .unwrap();
    let registered = who.registered.expect("registered just now");
    let login = mcp
        .login(who.auth.clone(), http())
        .unwrap()
        .on_authorization_url(browser);
    let tokens = login.login().await.unwrap();
    let (status, _, _) = call_mcp(&world, Some(tokens.access_token().secret())).await;
    assert_eq!(status, StatusCode::OK);
    let refresh = mcp.refresh_grant(who.auth, http());
    let manager = TokenManager::builder(refresh).initial(tokens).build();
    manager.refresh().await.unwrap();

    let seen = world.seen();
    assert_eq!(seen.registrations.len(), 1);
    assert_eq!(registered.client_id(), "dyn-client");
    assert_eq!(seen.authorizations[0]["resource"], world.mcp_url());
    assert_eq!(seen.authorizations[0]["scope"], "mcp:basic");
    for (form, _) in &seen.token_requests {
        assert_eq!(form["resource"], world.mcp_url(), "{form:?}");
    }
    assert_eq!(seen.token_requests.len(), 2, "the code, then the refresh");
}

#[tokio::test]
async fn mcp_authorization_takes_the_identity_in_the_specs_order() {
    let world = World::start(Setup {
        cimd: true,
        ..Setup::default()
    })
    .await;
    let mcp = mcp_authorization(&world).await;
    let cimd = "https://app.example.com/oauth/client.json";
    let everything = ClientIdentity::new()
        .metadata_document(cimd)
        .registration(registration());

    // Pre-registered credentials come first.
    let who = mcp
        .client_auth(
            &everything
                .clone()
                .pre_registered(ClientAuth::basic("pre", "secret")),
            &http(),
        )
        .await
        .unwrap();
    assert_eq!(who.auth.client_id(), Some("pre"));
    assert!(who.registered.is_none());

    // Then the metadata document, the server taking them: no registration.
    let who = mcp.client_auth(&everything, &http()).await.unwrap();
    assert_eq!(who.auth.client_id(), Some(cimd));
    assert_eq!(who.auth.method(), "none");
    assert!(world.seen().registrations.is_empty());

    // A server without metadata document support: registration.
    let world = World::start(Setup::default()).await;
    let mcp = mcp_authorization(&world).await;
    let who = mcp.client_auth(&everything, &http()).await.unwrap();
    assert_eq!(who.auth.client_id(), Some("dyn-client"));
    let registered = who.registered.unwrap();
    assert_eq!(world.seen().registrations.len(), 1);

    // A kept registration is used instead of registering again.
    let who = mcp
        .client_auth(&everything.clone().stored(registered), &http())
        .await
        .unwrap();
    assert_eq!(who.auth.client_id(), Some("dyn-client"));
    assert!(who.registered.is_none());
    assert_eq!(world.seen().registrations.len(), 1, "not registered again");

    // Nothing applies: refused, and said why.
    let err = mcp
        .client_auth(&ClientIdentity::new(), &http())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);
}
