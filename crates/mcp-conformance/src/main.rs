//! The client the official MCP conformance suite
//! (`@modelcontextprotocol/conformance`) runs: `scripts/mcp-conformance`
//! passes it as `--command`, and the runner calls it with the MCP server's
//! URL as its last argument, the scenario's name in
//! `MCP_CONFORMANCE_SCENARIO` and, for some scenarios, credentials in
//! `MCP_CONFORMANCE_CONTEXT` (JSON).
//!
//! It is what an MCP client author writes with these crates, and no more:
//!
//! 1. `tower_token_refresh_rmcp::probe`: an unauthenticated request, whose
//!    `401` challenge names the protected resource metadata and the scope
//!    (RFC 9728, RFC 6750);
//! 2. `oauth2::McpAuthorization`: the resource's metadata, checked against
//!    the server called, its authorization server's, the scope; the
//!    client's identity (`ClientIdentity`: pre-registered, a client ID
//!    metadata document, or a dynamic registration, RFC 7591); then a
//!    token source for the scenario: an authorization code login with PKCE,
//!    `resource` (RFC 8707) and the scope; client credentials (basic, or a
//!    `private_key_jwt` assertion whose `aud` is the issuer); or
//!    enterprise-managed authorization (an ID token exchanged for an
//!    ID-JAG, presented in a JWT bearer grant);
//! 4. an rmcp client over `tower-token-refresh-rmcp` and the token layer:
//!    `initialize`, `tools/list`, `tools/call`; a `403 insufficient_scope`
//!    authorizes again with the union of scopes, at most three times in
//!    all (`ScopeStepUp`).
//!
//! The suite's authorization endpoint redirects at once, without a page:
//! the login's `on_authorization_url` hook plays the browser, fetching the
//! URL without following the redirect and delivering the redirect to the
//! login's loopback listener.
//!
//! Exits 0 when the session worked, 1 with the error's chain on stderr.

use std::{error::Error as StdError, process::ExitCode, sync::Arc};

use bytes::Bytes;
use http::{Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use rmcp::{
    ServiceExt as _,
    model::{CallToolRequestParams, ClientConfig, ProtocolVersion},
    transport::{
        StreamableHttpClientTransport,
        streamable_http_client::{InsufficientScopeError, StreamableHttpClientTransportConfig},
    },
};
use serde_json::Value;
use tower::Layer as _;
use tower_token_refresh::{
    BoxError, ServiceClient, TokenManager, TokenRefreshLayer, TokenSet, TokenSource,
    jose::SigningKey,
    oauth2::{
        AssertionGrant, AuthorizationCodeLogin, ClientAssertion, ClientAuth, ClientIdentity,
        ClientRegistration, LoginHints, McpAuthorization, ScopeStepUp, StepUpDecision,
        TokenExchangeGrant, token_exchange::token_type,
    },
    source,
};
use tower_token_refresh_rmcp::{McpHttpClient, Unauthenticated, probe};

type Http = Client<HttpConnector, Full<Bytes>>;
type OAuthHttp = ServiceClient<Http>;

/// The client ID metadata document the `basic-cimd` scenario expects.
const CLIENT_METADATA_URL: &str = "https://conformance-test.local/client-metadata.json";

/// What a registration asks to be redirected to: the login's loopback
/// listener (RFC 8252 §7.3: any port).
const REDIRECT_URI: &str = "http://127.0.0.1/callback";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mcp-conformance-client: {error}");
            let mut source = error.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let server = std::env::args()
        .next_back()
        .filter(|a| a.starts_with("http"))
        .ok_or("usage: mcp-conformance-client <server URL>")?;
    let scenario = std::env::var("MCP_CONFORMANCE_SCENARIO").unwrap_or_default();
    let context: Value = match std::env::var("MCP_CONFORMANCE_CONTEXT") {
        Ok(json) => serde_json::from_str(&json)?,
        Err(_) => Value::Null,
    };
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let oauth = ServiceClient::new(http.clone());

    let (resource_metadata, scope) = match probe(http.clone(), &server).await? {
        Unauthenticated::Challenged {
            resource_metadata,
            scope,
        } => (resource_metadata, scope),
        // The server wants no token.
        _ => return session(&http, &server, None, None).await,
    };
    let mcp = McpAuthorization::discover(
        &server,
        resource_metadata.as_ref(),
        scope.as_deref(),
        &oauth,
    )
    .await?;
    let issuer = mcp.server();

    match scenario.as_str() {
        "auth/client-credentials-basic" => {
            let auth = ClientAuth::basic(
                field(&context, "client_id")?,
                field(&context, "client_secret")?,
            );
            let grant = mcp.client_credentials(auth, oauth);
            session(&http, &server, Some(manager(grant)), None).await
        }
        "auth/client-credentials-jwt" => {
            let key = SigningKey::from_pkcs8_pem(field(&context, "private_key_pem")?)?;
            // The MCP extension (and the suite) check `aud` against the
            // issuer, not the token endpoint.
            let auth =
                ClientAssertion::new(field(&context, "client_id")?, key).audience(issuer.issuer());
            let grant = mcp.client_credentials(auth.into(), oauth);
            session(&http, &server, Some(manager(grant)), None).await
        }
        "auth/cross-app-access-complete-flow" => {
            let id_token = field(&context, "idp_id_token")?.to_owned();
            let subject = source::from_fn(move |_| {
                let id_token = id_token.clone();
                async move { Ok(TokenSet::bearer(id_token)) }
            });
            let id_jag = TokenExchangeGrant::new(
                field(&context, "idp_token_endpoint")?.parse()?,
                ClientAuth::none(field(&context, "idp_client_id")?),
                token_type::ID_TOKEN,
                subject,
                oauth.clone(),
            )
            .requested_token_type(token_type::ID_JAG)
            .audience(issuer.issuer())
            .resource(mcp.resource().clone());
            let grant = AssertionGrant::new(issuer.token_endpoint().clone(), id_jag, oauth)
                .client_auth(ClientAuth::basic(
                    field(&context, "client_id")?,
                    field(&context, "client_secret")?,
                ));
            session(&http, &server, Some(manager(grant)), None).await
        }
        _ => {
            let mut identity = ClientIdentity::new()
                .metadata_document(CLIENT_METADATA_URL)
                .registration(
                    ClientRegistration::new()
                        .client_name("tower-token-refresh MCP conformance client")
                        .redirect_uris([REDIRECT_URI])
                        .grant_types(["authorization_code", "refresh_token"])
                        .response_types(["code"])
                        .allow_cleartext(true),
                );
            if let (Ok(id), Ok(secret)) = (
                field(&context, "client_id"),
                field(&context, "client_secret"),
            ) {
                identity = identity.pre_registered(ClientAuth::basic(id, secret));
            }
            let who = mcp.client_auth(&identity, &oauth).await?;
            let login = Arc::new(
                mcp.login(who.auth, oauth)?
                    .on_authorization_url(play_the_browser(http.clone())),
            );
            let step_up = mcp.step_up();
            session(
                &http,
                &server,
                Some(manager(login.clone())),
                Some((login, step_up)),
            )
            .await
        }
    }
}

/// The login's browser: fetches the authorization URL without following
/// its redirect, then delivers the redirect to the login's listener.
fn play_the_browser(http: Http) -> impl Fn(&str) + Send + Sync + 'static {
    move |url: &str| {
        let http = http.clone();
        let url = url.to_owned();
        tokio::spawn(async move {
            if let Err(error) = follow_once(&http, &url).await {
                eprintln!("mcp-conformance-client: the browser failed: {error}");
            }
        });
    }
}

async fn follow_once(http: &Http, url: &str) -> Result<(), BoxError> {
    let answer = http.get(url.parse()?).await?;
    let location = answer
        .headers()
        .get(header::LOCATION)
        .ok_or("the authorization endpoint did not redirect")?
        .to_str()?
        .parse::<Uri>()?;
    let delivered = http.get(location).await?;
    drop(delivered.into_body().collect().await?);
    Ok(())
}

fn manager(source: impl TokenSource) -> TokenManager {
    TokenManager::builder(source).build()
}

/// The MCP session: `initialize`, `tools/list`, `tools/call test-tool`,
/// through the token layer (or without one when the server wants no
/// token). With `step_up`, a `403 insufficient_scope` authorizes again
/// with the union of scopes and retries the call.
async fn session(
    http: &Http,
    server: &str,
    tokens: Option<TokenManager>,
    mut step_up: Option<(Arc<AuthorizationCodeLogin<OAuthHttp>>, ScopeStepUp)>,
) -> Result<(), BoxError> {
    let origin = origin_of(server)?;
    let config = StreamableHttpClientTransportConfig::with_uri(server.to_owned());
    let mut info = ClientConfig::default();
    // The suite speaks the 2025 revisions and their `initialize`.
    info.protocol_version = ProtocolVersion::V_2025_11_25;
    let client = match &tokens {
        Some(tokens) => {
            let authorized = TokenRefreshLayer::new(tokens.clone())
                .allow_origin(origin.parse()?)
                .layer(http.clone());
            let transport =
                StreamableHttpClientTransport::with_client(McpHttpClient::new(authorized), config);
            info.serve(transport).await?
        }
        None => {
            let transport = StreamableHttpClientTransport::with_client(
                McpHttpClient::new(http.clone()),
                config,
            );
            info.serve(transport).await?
        }
    };
    client.list_tools(Default::default()).await?;
    loop {
        let call = client
            .call_tool(CallToolRequestParams::new("test-tool"))
            .await;
        let error = match call {
            Ok(_) => break,
            Err(error) => error,
        };
        let (Some(tokens), Some((login, step_up)), Some(refused)) = (
            &tokens,
            &mut step_up,
            find::<InsufficientScopeError>(&error),
        ) else {
            return Err(error.into());
        };
        match step_up.escalate(refused.get_required_scope()) {
            StepUpDecision::Authorize(scope) => {
                let widened = login
                    .login_with(&LoginHints::new().with_scope(scope))
                    .await?;
                tokens.set(widened).await?;
            }
            _ => return Err(error.into()),
        }
    }
    client.cancel().await?;
    Ok(())
}

/// `scheme://authority` of `url`.
fn origin_of(url: &str) -> Result<String, BoxError> {
    let uri: Uri = url.parse()?;
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => Ok(format!("{scheme}://{authority}")),
        _ => Err(format!("not an absolute URL: {url}").into()),
    }
}

/// A string field of the scenario's context.
fn field<'a>(context: &'a Value, name: &str) -> Result<&'a str, BoxError> {
    context
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the scenario's context has no {name}").into())
}

/// The first error of type `T` in `error`'s source chain.
fn find<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(found) = current.downcast_ref::<T>() {
            return Some(found);
        }
        next = current.source();
    }
    None
}
