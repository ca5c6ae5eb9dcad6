//! An MCP client that logs in once, then keeps working across token expiry
//! and revocation.
//!
//! Starts an OAuth2 authorization server (2-second access tokens, rotating
//! refresh tokens, reuse detection) and an MCP server (rmcp's Streamable
//! HTTP server in axum, which accepts only that authorization server's
//! current access tokens) in this process on 127.0.0.1. The client logs in
//! once, then calls the `echo` tool every quarter second for five seconds:
//! two and a half token lifetimes. Halfway through, the authorization server
//! revokes the access token; the next call still answers, after one refresh
//! and one replay. Exits non-zero if a call failed or a refresh token was
//! presented twice.
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

type BoxError = Box<dyn Error + Send + Sync>;

const CALLS: u32 = 20;
const PACE: Duration = Duration::from_millis(250);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let lifetime = Duration::from_secs(2);
    let auth = AuthServer::start(
        AuthConfig::default()
            .access_lifetime(lifetime)
            .rotation(true),
    )
    .await?;
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
    println!("logged in once; MCP server at {mcp} offers {names:?}");

    let (started, mut pace, mut failed) =
        (tokio::time::Instant::now(), tokio::time::interval(PACE), 0);
    for call in 0..CALLS {
        pace.tick().await;
        let before = tokens.stats();
        if call == CALLS / 2 {
            auth.expire_access_tokens();
            println!("  -- the authorization server revokes the access token --");
        }
        let text = format!("call {call}");
        let mut arguments = serde_json::Map::new();
        arguments.insert("text".to_owned(), text.clone().into());
        let request = CallToolRequestParams::new("echo").with_arguments(arguments);
        let answer = match client.call_tool(request).await {
            Ok(result) => result
                .content
                .first()
                .and_then(|c| c.as_text())
                .map(|t| t.text.clone()),
            Err(e) => {
                eprintln!("  {text} failed: {e}");
                failed += 1;
                continue;
            }
        };
        if answer.as_deref() != Some(text.as_str()) {
            eprintln!("  {text}: unexpected answer {answer:?}");
            failed += 1;
        }
        let after = tokens.stats();
        println!(
            "  {:4.2} s  echo({text:?}) -> {answer:?}  (refreshes {:+}, replays {:+})",
            started.elapsed().as_secs_f64(),
            after.refreshes_succeeded - before.refreshes_succeeded,
            after.replays - before.replays,
        );
    }
    client.cancel().await?;

    let (server, ours) = (auth.stats(), tokens.stats());
    println!(
        "{CALLS} calls over {:.2} s, {failed} failed (access tokens live 2 s)",
        started.elapsed().as_secs_f64()
    );
    println!(
        "  refresh grants      {} (counted by the authorization server)",
        server.refresh_grants
    );
    println!(
        "  refresh-token reuse {} (the server revokes the session on reuse)",
        server.reuse_detected
    );
    println!(
        "  refreshes           {} (counted by the client)",
        ours.refreshes_succeeded
    );
    println!(
        "  replays             {} (calls answered 401, sent again with a new token)",
        ours.replays
    );
    if failed > 0 || server.reuse_detected > 0 {
        return Err("FAILED: every call must answer and no refresh token may be reused".into());
    }
    Ok(())
}

// The stand-in for a real MCP server: one tool, `echo`, served by rmcp's
// Streamable HTTP server in axum behind a bearer check.

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
        let schema =
            serde_json::json!({ "type": "object", "properties": { "text": { "type": "string" } } });
        let schema = Arc::new(schema.as_object().cloned().unwrap_or_default());
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "echo",
            "Answers its text",
            schema,
        )]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let text = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("text")?.as_str())
            .unwrap_or_default();
        Ok(CallToolResult::success(vec![ContentBlock::text(text.to_owned())]).into())
    }
}

/// Lets a request through only with an access token that `auth` accepts now.
async fn bearer(State(auth): State<AuthServer>, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match token.and_then(|v| v.strip_prefix("Bearer ")) {
        Some(token) if auth.is_access_token_valid(token) => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#)],
        )
            .into_response(),
    }
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
