//! The MCP authorization chain (spec 2025-11-25) over real HTTP: a resource
//! server's 401, its protected resource metadata (RFC 9728), the
//! authorization server's metadata (RFC 8414 / OIDC, in the MCP order),
//! dynamic client registration (RFC 7591), the code login with RFC 8707
//! `resource`, scope selection and step-up, RFC 9207 `iss`, and a restart
//! that finds its registration in the store.
//!
//! Most tests run on test-util's `AuthServer` and `ResourceServer`, with
//! their registration, protected resource metadata and required-scope
//! switches. The conformance suite's traps that a normal server does not
//! set (metadata naming another resource, a wrong or missing RFC 9207
//! `iss`, client ID metadata documents) run on two small axum routers
//! written here after the suite's mock servers (`World`). The "browser"
//! GETs the authorization URL without following the redirect, as the
//! conformance client does, then delivers the `Location` to the login's
//! loopback listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{Router, body::Body, extract::Request, response::Response};
use base64::Engine as _;
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
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, Client, MetadataDocuments, MetadataLocation, Registration,
    ResourceMetadata, ResourceServer, hyper_client,
};

/// How the bespoke servers are set up: the conformance traps' knobs that
/// test-util's servers do not have.
#[derive(Clone, Default)]
struct Setup {
    /// The metadata's `resource`; `None`: the MCP URL.
    prm_resource: Option<String>,
    /// `client_id_metadata_document_supported`.
    cimd: bool,
    /// `authorization_response_iss_parameter_supported`.
    iss_supported: bool,
    /// What the redirect's `iss` is: none, the issuer, or another.
    iss_sent: Iss,
}

#[derive(Clone, Copy, Default, PartialEq)]
enum Iss {
    #[default]
    Absent,
    Right,
    Wrong,
}

/// What the servers saw.
#[derive(Default)]
struct Seen {
    /// Every request, as `rs GET /path` or `as POST /path`.
    requests: Vec<String>,
    registrations: Vec<serde_json::Value>,
    authorizations: Vec<HashMap<String, String>>,
    /// Token requests' forms.
    token_requests: Vec<HashMap<String, String>>,
}

/// The conformance suite's mock servers, as far as the traps below need
/// them: the resource refuses every call, names its path-based metadata
/// in the 401, and the authorization server registers `dyn-client`.
#[derive(Clone)]
struct World {
    setup: Setup,
    rs: String,
    asrv: String,
    seen: Arc<Mutex<Seen>>,
}

/// Where the bespoke resource serves its metadata.
const PRM_PATH: &str = "/.well-known/oauth-protected-resource/mcp";

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
        self.asrv.clone()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }

    async fn resource(&self, req: Request) -> Response {
        let path = req.uri().path().to_owned();
        self.seen()
            .requests
            .push(format!("rs {} {path}", req.method()));
        if req.method() == http::Method::GET && path == PRM_PATH {
            let resource = self
                .setup
                .prm_resource
                .clone()
                .unwrap_or_else(|| self.mcp_url());
            let doc = serde_json::json!({
                "resource": resource,
                "authorization_servers": [self.issuer()],
            });
            return json(StatusCode::OK, doc);
        }
        if req.method() != http::Method::POST || path != "/mcp" {
            return status(StatusCode::NOT_FOUND);
        }
        challenge(
            StatusCode::UNAUTHORIZED,
            format!(
                r#"Bearer error="invalid_token", resource_metadata="{}{PRM_PATH}""#,
                self.rs
            ),
        )
    }

    async fn authorization_server(&self, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        self.seen()
            .requests
            .push(format!("as {} {path}", parts.method));
        let s = &self.setup;
        let body = body.collect().await.unwrap().to_bytes();
        match (parts.method.as_str(), path.as_str()) {
            ("GET", "/.well-known/oauth-authorization-server") => {
                let base = self.issuer();
                let doc = serde_json::json!({
                    "issuer": base,
                    "authorization_endpoint": format!("{base}/authorize"),
                    "token_endpoint": format!("{base}/token"),
                    "registration_endpoint": format!("{base}/register"),
                    "response_types_supported": ["code"],
                    "code_challenge_methods_supported": ["S256"],
                    "token_endpoint_auth_methods_supported": ["client_secret_post"],
                    "authorization_response_iss_parameter_supported": s.iss_supported,
                    "client_id_metadata_document_supported": s.cimd,
                });
                json(StatusCode::OK, doc)
            }
            ("POST", "/register") => {
                let asked: serde_json::Value = serde_json::from_slice(&body).unwrap();
                self.seen().registrations.push(asked);
                json(
                    StatusCode::CREATED,
                    serde_json::json!({
                        "client_id": "dyn-client",
                        "client_secret": "dyn-secret",
                        "client_secret_expires_at": 0,
                        "token_endpoint_auth_method": "client_secret_post",
                    }),
                )
            }
            ("GET", "/authorize") => {
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
            ("POST", "/token") => {
                let form: HashMap<String, String> =
                    form_urlencoded::parse(&body).into_owned().collect();
                let mut seen = self.seen();
                seen.token_requests.push(form);
                let n = seen.token_requests.len();
                json(
                    StatusCode::OK,
                    serde_json::json!({
                        "access_token": format!("at-{n}"),
                        "token_type": "Bearer",
                        "expires_in": 3600,
                        "refresh_token": format!("rt-{n}"),
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
/// and `resource_metadata`.
async fn call_mcp(
    world: &World,
    token: Option<&str>,
) -> (StatusCode, Option<String>, Option<String>) {
    call(http::Request::post(world.mcp_url()), token).await
}

/// One request to a resource: its status, and the challenge's `scope` and
/// `resource_metadata`, read with the layer's challenge parser.
async fn call(
    mut request: http::request::Builder,
    token: Option<&str>,
) -> (StatusCode, Option<String>, Option<String>) {
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

// ---------------------------------------------------------------------------
// On test-util's AuthServer and ResourceServer: the chain as a normal server
// answers it. The resource's URL is its `/api/data`.

/// The two servers, and the URL a client starts from.
struct Chain {
    auth: AuthServer,
    api: ResourceServer,
}

impl Chain {
    async fn start(config: AuthConfig) -> Chain {
        let auth = AuthServer::start(config).await.unwrap();
        let api = ResourceServer::start(&auth).await.unwrap();
        Chain { auth, api }
    }

    fn url(&self) -> String {
        self.api.url("/api/data")
    }

    fn as_requested(&self, line: &str) -> bool {
        self.auth.log().requests.iter().any(|r| r == line)
    }

    fn rs_requested(&self, line: &str) -> bool {
        self.api.log().requests.iter().any(|r| r == line)
    }

    /// The scope of every authorization request, in order.
    fn authorized_scopes(&self) -> Vec<String> {
        let log = self.auth.log();
        log.authorization_requests
            .iter()
            .map(|a| a.get("scope").to_owned())
            .collect()
    }
}

/// One call to the resource: its status, and the challenge's `scope` and
/// `resource_metadata`.
async fn call_chain(
    chain: &Chain,
    token: Option<&str>,
) -> (StatusCode, Option<String>, Option<String>) {
    call(http::Request::get(chain.url()), token).await
}

/// The discovery chain from a first unauthenticated call.
async fn discover_chain(
    chain: &Chain,
) -> (ProtectedResourceMetadata, ProviderMetadata, Option<String>) {
    let (status, scope, metadata_url) = call_chain(chain, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let metadata_url = metadata_url.map(|u| u.parse().unwrap());
    let resource =
        ProtectedResourceMetadata::discover(&chain.url(), metadata_url.as_ref(), &http())
            .await
            .unwrap();
    let server = resource.authorization_server(&http()).await.unwrap();
    (resource, server, scope)
}

fn registering() -> AuthConfig {
    AuthConfig::default().registration(Registration::new())
}

#[tokio::test]
async fn the_challenges_metadata_url_leads_to_a_registered_login_with_resource_everywhere() {
    let chain = Chain::start(
        AuthConfig::default()
            .registration(Registration::new().answer_method("client_secret_post"))
            .resource_metadata(ResourceMetadata::new().challenge_scope("mcp:basic")),
    )
    .await;
    let (resource, server, challenge_scope) = discover_chain(&chain).await;
    assert_eq!(resource.resource(), chain.url());
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
    let (status, _, _) = call_chain(&chain, Some(tokens.access_token().secret())).await;
    assert_eq!(status, StatusCode::OK);

    let log = chain.auth.log();
    assert_eq!(log.registrations.len(), 1);
    assert_eq!(log.registrations[0]["client_name"], "ttr test");
    let asked = &log.authorization_requests[0];
    assert_eq!(asked.get("resource"), chain.url());
    assert_eq!(asked.get("scope"), "mcp:basic");
    assert_eq!(asked.get("client_id"), registered.client_id());
    assert_eq!(asked.get("code_challenge_method"), "S256");
    let token_request = &log.token_requests[0];
    assert_eq!(
        token_request.get("resource"),
        chain.url(),
        "the same resource both times"
    );
    assert_eq!(
        token_request.get("client_secret"),
        registered.client_secret().unwrap().secret()
    );
    assert!(token_request.authorization.is_none());
    // The suite's trap: the root document is never asked for first.
    assert!(!chain.rs_requested("GET /.well-known/oauth-protected-resource"));
}

#[tokio::test]
async fn without_a_header_the_path_based_document_and_the_root_openid_configuration_are_found() {
    // metadata-var1
    let chain = Chain::start(
        AuthConfig::default()
            .metadata(MetadataDocuments::OpenIdOnly)
            .resource_metadata(ResourceMetadata::new().in_challenge(false)),
    )
    .await;
    let (resource, server, _) = discover_chain(&chain).await;
    assert_eq!(resource.resource(), chain.url());
    assert_eq!(server.issuer(), chain.auth.issuer());
    assert!(chain.rs_requested("GET /.well-known/oauth-protected-resource/api/data"));
    assert!(!chain.rs_requested("GET /.well-known/oauth-protected-resource"));
    // RFC 8414's document was asked for first, and was not there.
    assert!(chain.as_requested("GET /.well-known/oauth-authorization-server"));
    assert!(chain.as_requested("GET /.well-known/openid-configuration"));
}

#[tokio::test]
async fn a_root_document_names_the_origin_and_a_tenant_issuer_is_never_looked_up_at_the_root() {
    // metadata-var2
    let chain = Chain::start(
        AuthConfig::default()
            .issuer_path("tenant1")
            .metadata(MetadataDocuments::OAuthOnly)
            .resource_metadata(
                ResourceMetadata::new()
                    .at(MetadataLocation::Root)
                    .in_challenge(false),
            ),
    )
    .await;
    let (resource, server, _) = discover_chain(&chain).await;
    assert_eq!(resource.resource(), chain.api.url(""));
    assert_eq!(
        server.issuer(),
        format!("http://{}/tenant1", chain.auth.addr())
    );
    // Only the tenant's document names the token endpoint.
    assert_eq!(server.token_endpoint().to_string(), chain.auth.token_url());
    assert!(chain.as_requested("GET /.well-known/oauth-authorization-server/tenant1"));
    // Path-based first, then the root.
    let requests = chain.api.log().requests;
    let path_based = requests
        .iter()
        .position(|r| r == "GET /.well-known/oauth-protected-resource/api/data")
        .unwrap();
    let root = requests
        .iter()
        .position(|r| r == "GET /.well-known/oauth-protected-resource")
        .unwrap();
    assert!(path_based < root);
    assert!(!chain.as_requested("GET /.well-known/oauth-authorization-server"));
}

#[tokio::test]
async fn a_custom_metadata_location_and_an_appended_openid_configuration_are_found() {
    // metadata-var3
    let chain = Chain::start(
        AuthConfig::default()
            .issuer_path("tenant1")
            .metadata(MetadataDocuments::OpenIdOnly)
            .resource_metadata(ResourceMetadata::new().at(MetadataLocation::Custom(
                "/custom/metadata/location.json".into(),
            ))),
    )
    .await;
    let (_, server, _) = discover_chain(&chain).await;
    assert_eq!(
        server.issuer(),
        format!("http://{}/tenant1", chain.auth.addr())
    );
    assert!(chain.as_requested("GET /.well-known/oauth-authorization-server/tenant1"));
    assert!(chain.as_requested("GET /.well-known/openid-configuration/tenant1"));
    assert!(chain.as_requested("GET /tenant1/.well-known/openid-configuration"));
    assert!(!chain.as_requested("GET /.well-known/oauth-authorization-server"));
    // The header's URL is the only one tried.
    assert!(chain.rs_requested("GET /custom/metadata/location.json"));
    assert!(!chain.rs_requested("GET /.well-known/oauth-protected-resource/api/data"));
}

#[tokio::test]
async fn scopes_supported_is_asked_for_whole_with_offline_access_when_the_server_offers_it() {
    let chain = Chain::start(
        AuthConfig::default()
            .scopes_supported(["mcp:basic", "offline_access"])
            .resource_metadata(ResourceMetadata::new().scopes_supported([
                "mcp:basic",
                "mcp:read",
                "mcp:write",
            ])),
    )
    .await;
    let (resource, server, challenge_scope) = discover_chain(&chain).await;
    assert_eq!(challenge_scope, None);
    let scope = select_scope(None, Some(&resource), Some(&server), true);
    assert_eq!(
        scope.as_deref(),
        Some("mcp:basic mcp:read mcp:write offline_access")
    );
}

/// The servers of the step-up tests: a pre-registered public client, a
/// challenge asking for `challenge_scope`, a resource requiring `required`.
async fn step_up_chain(challenge_scope: &str, required: &str) -> Chain {
    Chain::start(
        AuthConfig::default()
            .register(Client::public("pre-registered"))
            .resource_metadata(ResourceMetadata::new().challenge_scope(challenge_scope))
            .resource_required_scope(required),
    )
    .await
}

#[tokio::test]
async fn a_403_for_more_scope_reauthorizes_once_with_the_union() {
    // scope-step-up
    let chain = step_up_chain("mcp:basic", "mcp:basic mcp:write").await;
    let (resource, server, challenge_scope) = discover_chain(&chain).await;
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
        let (status, required, _) = call_chain(&chain, Some(tokens.access_token().secret())).await;
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
    assert_eq!(
        chain.authorized_scopes(),
        ["mcp:basic", "mcp:basic mcp:write"]
    );
}

#[tokio::test]
async fn a_resource_that_always_refuses_gets_three_authorizations_at_most() {
    // scope-retry-limit, with a server asking for a new scope each time
    // so that only the bound stops the client.
    let chain = step_up_chain("mcp:admin", "mcp:admin mcp:never").await;
    let (resource, server, challenge_scope) = discover_chain(&chain).await;
    let auth = ClientAuth::none("pre-registered");
    let mut step_up = ScopeStepUp::new(challenge_scope.as_deref());
    let mut scope = challenge_scope.clone().unwrap();
    let mut n = 0;
    let decision = loop {
        let tokens = login(&server, &resource, auth.clone(), Some(&scope))
            .login()
            .await
            .unwrap();
        let (status, _, _) = call_chain(&chain, Some(tokens.access_token().secret())).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        n += 1;
        match step_up.escalate(Some(&format!("mcp:admin mcp:never{n}"))) {
            StepUpDecision::Authorize(next) => scope = next,
            other => break other,
        }
    };
    assert_eq!(decision, StepUpDecision::LimitReached);
    assert_eq!(chain.auth.log().authorization_requests.len(), 3);
}

#[tokio::test]
async fn every_refresh_and_client_credentials_request_names_the_resource() {
    let chain =
        Chain::start(AuthConfig::default().resource_metadata(ResourceMetadata::new())).await;
    let (resource, server, _) = discover_chain(&chain).await;
    let indicator = ResourceIndicator::new(resource.resource()).unwrap();
    let basic = || ClientAuth::basic(chain.auth.client_id(), chain.auth.client_secret());
    let refresh = server
        .refresh_token_grant(basic(), http())
        .resource(indicator.clone());
    let login = chain.auth.login();
    let tokens = TokenManager::builder(refresh)
        .initial(
            tower_token_refresh::TokenSet::bearer("old").with_refresh_token(login.refresh_token),
        )
        .build();
    tokens.refresh().await.unwrap();
    tokens.refresh().await.unwrap();
    let cc = server
        .client_credentials_grant(basic(), http())
        .resource(indicator);
    TokenManager::builder(cc)
        .build()
        .authorization()
        .await
        .unwrap();
    let log = chain.auth.log();
    assert_eq!(log.token_requests.len(), 3);
    for form in &log.token_requests {
        assert_eq!(form.get("resource"), chain.url(), "{form:?}");
    }
    assert_eq!(chain.auth.stats().refresh_grants, 2);
}

#[tokio::test]
async fn a_restart_finds_its_registration_with_the_tokens_and_does_not_register_again() {
    let chain = Chain::start(registering().resource_metadata(ResourceMetadata::new())).await;
    let path = std::env::temp_dir().join(format!(
        "ttr-mcp-registration-{}-{}.json",
        std::process::id(),
        chain.api.addr().port()
    ));
    let _ = std::fs::remove_file(&path);

    // Run 1: discover, register, log in, keep the registration with the
    // tokens, refresh once.
    let (resource, server, _) = discover_chain(&chain).await;
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

    assert_eq!(
        chain.auth.stats().registrations,
        1,
        "registered once, across the restart"
    );
    let log = chain.auth.log();
    let refreshes: Vec<_> = log
        .token_requests
        .iter()
        .filter(|f| f.get("grant_type") == "refresh_token")
        .collect();
    assert_eq!(refreshes.len(), 2);
    assert_eq!(chain.auth.stats().refresh_grants, 2);
    // client_secret_basic, the default: the registered id and secret.
    let basic = format!(
        "{}:{}",
        registered.client_id(),
        registered.client_secret().unwrap().secret()
    );
    for form in refreshes {
        let credentials = form.authorization.as_deref().unwrap();
        let credentials = credentials.strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), basic);
    }
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn mcp_authorization_logs_in_and_refreshes_with_its_resource_and_scope() {
    let chain = Chain::start(
        registering().resource_metadata(ResourceMetadata::new().challenge_scope("mcp:basic")),
    )
    .await;
    let (status, scope, metadata_url) = call_chain(&chain, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let metadata_url: Option<http::Uri> = metadata_url.map(|u| u.parse().unwrap());
    let mcp = McpAuthorization::discover(
        &chain.url(),
        metadata_url.as_ref(),
        scope.as_deref(),
        &http(),
    )
    .await
    .unwrap();
    assert_eq!(mcp.resource().as_str(), chain.url());
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
    let (status, _, _) = call_chain(&chain, Some(tokens.access_token().secret())).await;
    assert_eq!(status, StatusCode::OK);
    let refresh = mcp.refresh_grant(who.auth, http());
    let manager = TokenManager::builder(refresh).initial(tokens).build();
    manager.refresh().await.unwrap();

    let log = chain.auth.log();
    assert_eq!(log.registrations.len(), 1);
    assert_eq!(
        log.authorization_requests[0].get("client_id"),
        registered.client_id()
    );
    assert_eq!(log.authorization_requests[0].get("resource"), chain.url());
    assert_eq!(log.authorization_requests[0].get("scope"), "mcp:basic");
    for form in &log.token_requests {
        assert_eq!(form.get("resource"), chain.url(), "{form:?}");
    }
    assert_eq!(log.token_requests.len(), 2, "the code, then the refresh");
    assert_eq!(chain.auth.stats().refresh_grants, 1);
}
