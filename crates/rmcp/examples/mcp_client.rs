//! An MCP client that logs in once, then keeps working across token expiry
//! and revocation.
//!
//! Starts an OAuth2 authorization server (2-second access tokens, rotating
//! refresh tokens, reuse detection) and an MCP server that accepts only its
//! current access tokens, both on 127.0.0.1. The client logs in once, then
//! calls the `echo` tool every quarter second for five seconds: two and a
//! half token lifetimes, each refreshed before it expires. Halfway through,
//! the authorization server revokes the access token; the next call still
//! answers, after one refresh (which waits out the manager's minimum second
//! between refreshes) and one replay. Exits non-zero if a call failed or a
//! refresh token was reused.
//!
//! ```text
//! cargo run -p tower-token-refresh-rmcp --example mcp_client
//! ```

use std::{error::Error, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use http::{StatusCode, header};
use rmcp::{
    ErrorData, RoleServer, ServerHandler, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
        PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    },
    service::RequestContext,
    transport::{
        StreamableHttpClientTransport,
        streamable_http_client::StreamableHttpClientTransportConfig,
        streamable_http_server::{StreamableHttpService, session::local::LocalSessionManager},
    },
};
use tower::Layer;
use tower_token_refresh::{
    ServiceClient, TokenManager, TokenRefreshLayer,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_rmcp::McpHttpClient;
use tower_token_refresh_test_util::{AuthConfig, AuthServer, hyper_client};

const LIFETIME: Duration = Duration::from_secs(2);
const CALLS: u32 = 20;
const PACE: Duration = Duration::from_millis(250);

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    // Refresh tokens rotate (the default), and a reused one ends the session.
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(LIFETIME)).await?;
    let mcp = start_mcp_server(&auth).await?;
    // The user's login (a browser and a redirect, in a real client).
    let login = auth.login().token_set();

    // What an MCP client writes: a manager seeded with the login, the token
    // layer over hyper-util's client, and rmcp's transport over that.
    let http = hyper_client();
    let grant = RefreshTokenGrant::new(
        auth.token_url().parse()?,
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(http.clone()),
    );
    let tokens = TokenManager::builder(grant)
        .initial(login)
        .on_session_expired(|| eprintln!("session expired: the user must log in again"))
        .build();
    let authorized = TokenRefreshLayer::new(tokens.clone())
        .allow_origin(format!("http://{mcp}").parse()?)
        .layer(http);
    // No `auth_header`: the layer owns `Authorization`.
    let config = StreamableHttpClientTransportConfig::with_uri(format!("http://{mcp}/mcp"));
    let transport =
        StreamableHttpClientTransport::with_client(McpHttpClient::new(authorized), config);
    let client = ().serve(transport).await?;
    let tools = client.list_tools(None).await?.tools;
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    println!("logged in once; the MCP server at {mcp} offers {names:?}");

    let (started, mut pace, mut failed) =
        (tokio::time::Instant::now(), tokio::time::interval(PACE), 0);
    for call in 0..CALLS {
        pace.tick().await;
        if call == CALLS / 2 {
            auth.expire_access_tokens();
            println!("  -- the authorization server revokes the access token --");
        }
        let before = tokens.stats();
        let text = format!("call {call}");
        let arguments = serde_json::Map::from_iter([("text".to_owned(), text.clone().into())]);
        let request = CallToolRequestParams::new("echo").with_arguments(arguments);
        let answer = client.call_tool(request).await.map(|result| {
            let first = result.content.first().and_then(|c| c.as_text());
            first.map(|t| t.text.clone())
        });
        let after = tokens.stats();
        match answer {
            Ok(Some(answer)) if answer == text => println!(
                "  {:.2} s  echo({text:?}) -> {answer:?}  (refreshes {:+}, replays {:+})",
                started.elapsed().as_secs_f64(),
                after.refreshes_succeeded - before.refreshes_succeeded,
                after.replays - before.replays,
            ),
            other => {
                eprintln!("  echo({text:?}) failed: {other:?}");
                failed += 1;
            }
        }
    }
    client.cancel().await?;

    let (server, ours) = (auth.stats(), tokens.stats());
    println!(
        "{CALLS} calls in {:.2} s, {failed} failed (access tokens live {LIFETIME:?})\n\
         authorization server: {} refresh grants, {} refresh tokens reused\n\
         client (stats()):     {} refreshes, {} replays",
        started.elapsed().as_secs_f64(),
        server.refresh_grants,
        server.reuse_detected,
        ours.refreshes_succeeded,
        ours.replays,
    );
    if failed > 0 || server.reuse_detected > 0 || ours.replays == 0 {
        return Err(
            "FAILED: a call failed, none was replayed, or a refresh token was reused".into(),
        );
    }
    Ok(())
}

// The stand-in for a real MCP server: rmcp's Streamable HTTP server in axum,
// with one tool, `echo`, behind a bearer check against the authorization server.

#[derive(Clone)]
struct Echo;

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = serde_json::Map::from_iter([("type".to_owned(), "object".into())]);
        let echo = Tool::new("echo", "Answers its `text` argument", Arc::new(schema));
        Ok(ListToolsResult::with_all_items(vec![echo]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = request.arguments.unwrap_or_default();
        let text = arguments
            .get("text")
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        Ok(CallToolResult::success(vec![ContentBlock::text(text.to_owned())]).into())
    }
}

/// Lets a request through only with an access token that `auth` accepts now.
async fn bearer(State(auth): State<AuthServer>, request: Request, next: Next) -> Response {
    let header = request.headers().get(header::AUTHORIZATION);
    let token = header.and_then(|v| v.to_str().ok()?.strip_prefix("Bearer "));
    if token.is_some_and(|token| auth.is_access_token_valid(token)) {
        return next.run(request).await;
    }
    let challenge = [(header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#)];
    (StatusCode::UNAUTHORIZED, challenge).into_response()
}

async fn start_mcp_server(auth: &AuthServer) -> std::io::Result<SocketAddr> {
    let mcp: StreamableHttpService<Echo, LocalSessionManager> =
        StreamableHttpService::new(|| Ok(Echo), Default::default(), Default::default());
    let router = Router::new()
        .nest_service("/mcp", mcp)
        .layer(middleware::from_fn_with_state(auth.clone(), bearer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}
