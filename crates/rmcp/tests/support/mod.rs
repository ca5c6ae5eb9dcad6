//! Real parts on 127.0.0.1: test-util's authorization server, an rmcp
//! Streamable HTTP server behind a bearer-token check in axum, and an rmcp
//! client over `McpHttpClient<TokenRefresh<hyper-util client>>`.
#![allow(dead_code, unreachable_pub)]

use std::{
    error::Error as StdError,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    extract::{Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    serve::ListenerExt,
};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use rmcp::{
    ErrorData, RoleClient, ServerHandler, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ClientConfig, ContentBlock,
        ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
        Tool,
    },
    service::{RequestContext, RunningService},
    transport::{
        StreamableHttpClientTransport,
        streamable_http_client::{StreamableHttpClientTransportConfig, StreamableHttpError},
        streamable_http_server::{
            StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
        },
    },
};
use tower::Layer;
use tower_token_refresh::{
    ServiceClient, TokenManager, TokenRefresh, TokenRefreshLayer,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_rmcp::{Error, McpHttpClient};
use tower_token_refresh_test_util::{AuthConfig, AuthServer, IssuedTokens, hyper_client};

pub type Http = Client<HttpConnector, Full<Bytes>>;
pub type Mcp = RunningService<RoleClient, ClientConfig>;

pub const HOUR: Duration = Duration::from_secs(3600);

/// The one tool: `echo`, which answers its `text` argument.
#[derive(Clone)]
struct Echo {
    stats: Arc<Mutex<McpStats>>,
}

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<rmcp::RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = serde_json::json!({
            "type": "object",
            "properties": { "text": { "type": "string" } }
        });
        let schema = schema.as_object().cloned().unwrap_or_default();
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "echo",
            "Answers its text",
            Arc::new(schema),
        )]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<rmcp::RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let text = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("text"))
            .and_then(|t| t.as_str())
            .unwrap_or_default()
            .to_owned();
        self.stats.lock().unwrap().echoes += 1;
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }
}

/// What the MCP server's bearer check saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct McpStats {
    /// Requests let through, by method.
    pub posts: u64,
    pub gets: u64,
    pub deletes: u64,
    /// 401s: no token, or one the authorization server does not accept now.
    pub rejected: u64,
    /// 403s for want of scope.
    pub forbidden: u64,
    /// Responses let through, by content type.
    pub sse: u64,
    pub json: u64,
    /// `echo` calls the tool answered.
    pub echoes: u64,
}

#[derive(Clone)]
struct Guard {
    auth: AuthServer,
    stats: Arc<Mutex<McpStats>>,
    required_scope: Arc<Mutex<Option<String>>>,
}

/// Lets a request through only with a bearer token that `auth` issued and
/// would accept now, as a resource server that introspects would.
async fn guard(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let challenge = match token {
        None => Some(r#"Bearer realm="mcp""#),
        Some(token) if !guard.auth.is_access_token_valid(token) => {
            Some(r#"Bearer realm="mcp", error="invalid_token""#)
        }
        Some(_) => None,
    };
    if let Some(challenge) = challenge {
        guard.stats.lock().unwrap().rejected += 1;
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge)],
        )
            .into_response();
    }
    // Scope guards the POSTs (the tools), not the server's SSE stream.
    let required = guard.required_scope.lock().unwrap().clone();
    if let Some(scope) = required.filter(|_| request.method() == http::Method::POST) {
        guard.stats.lock().unwrap().forbidden += 1;
        let challenge =
            format!(r#"Bearer realm="mcp", error="insufficient_scope", scope="{scope}""#);
        return (
            StatusCode::FORBIDDEN,
            [(header::WWW_AUTHENTICATE, challenge)],
        )
            .into_response();
    }
    let method = request.method().clone();
    let response = next.run(request).await;
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut stats = guard.stats.lock().unwrap();
    match method.as_str() {
        "POST" => stats.posts += 1,
        "GET" => stats.gets += 1,
        "DELETE" => stats.deletes += 1,
        _ => {}
    }
    if content_type.starts_with("text/event-stream") {
        stats.sse += 1;
    } else if content_type.starts_with("application/json") {
        stats.json += 1;
    }
    response
}

/// How the MCP server answers.
#[derive(Clone, Copy, Debug)]
pub enum Answers {
    /// rmcp's defaults: sessions (for the versions that have them) and SSE.
    SessionsAndSse,
    /// No sessions, and `application/json` for plain request-response.
    StatelessJson,
}

/// rmcp's Streamable HTTP server at `/mcp`, behind the bearer check.
pub struct McpServer {
    addr: SocketAddr,
    stats: Arc<Mutex<McpStats>>,
    required_scope: Arc<Mutex<Option<String>>>,
}

impl McpServer {
    pub async fn start(auth: &AuthServer, answers: Answers) -> McpServer {
        // No SSE keep-alive: sse-stream 0.2 sets its next ping from
        // `std::time::Instant`, so under paused time the pings come due at
        // once, one after the other, and tokio's clock can no longer jump.
        let config = StreamableHttpServerConfig::default().with_sse_keep_alive(None);
        let config = match answers {
            Answers::SessionsAndSse => config,
            Answers::StatelessJson => config
                .with_legacy_session_mode(false)
                .with_json_response(true),
        };
        let stats: Arc<Mutex<McpStats>> = Arc::default();
        let echo = Echo {
            stats: stats.clone(),
        };
        let service: StreamableHttpService<Echo, LocalSessionManager> =
            StreamableHttpService::new(move || Ok(echo.clone()), Default::default(), config);
        let guard = Guard {
            auth: auth.clone(),
            stats: stats.clone(),
            required_scope: Arc::default(),
        };
        let required_scope = guard.required_scope.clone();
        let router = Router::new()
            .nest_service("/mcp", service)
            .layer(middleware::from_fn_with_state(guard, self::guard));
        let addr = serve(router).await;
        McpServer {
            addr,
            stats,
            required_scope,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    pub fn stats(&self) -> McpStats {
        *self.stats.lock().unwrap()
    }

    /// From now on, every POST is refused with a 403 that asks for `scope`.
    pub fn require_scope(&self, scope: &str) {
        *self.required_scope.lock().unwrap() = Some(scope.to_owned());
    }
}

/// Serves `router` on 127.0.0.1, on a free port.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Without TCP_NODELAY an SSE event written after another waits ~40 ms
    // for a delayed ACK, and paused time jumps ahead meanwhile.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// The authorization server, the MCP server, and a manager seeded with a
/// login whose refresh grant goes to that authorization server.
pub struct World {
    pub auth: AuthServer,
    pub mcp: McpServer,
    pub tokens: TokenManager,
    pub login: IssuedTokens,
    http: Http,
}

impl World {
    pub async fn start(config: AuthConfig, answers: Answers) -> World {
        let auth = AuthServer::start(config).await.unwrap();
        let mcp = McpServer::start(&auth, answers).await;
        let http = hyper_client();
        let login = auth.login();
        let grant = RefreshTokenGrant::new(
            auth.token_url().parse().unwrap(),
            ClientAuth::basic(auth.client_id(), auth.client_secret()),
            ServiceClient::new(http.clone()),
        );
        let tokens = TokenManager::builder(grant)
            .initial(login.token_set())
            .build();
        World {
            auth,
            mcp,
            tokens,
            login,
            http,
        }
    }

    /// Tokens that live an hour: nothing expires unless the test says so.
    pub async fn hour(answers: Answers) -> World {
        World::start(AuthConfig::default().access_lifetime(HOUR), answers).await
    }

    /// The token layer over hyper-util's client, serving the MCP server's origin.
    pub fn authorized(&self) -> McpHttpClient<TokenRefresh<Http>> {
        let origin = format!("http://{}", self.mcp.addr).parse().unwrap();
        let layer = TokenRefreshLayer::new(self.tokens.clone()).allow_origin(origin);
        McpHttpClient::new(layer.layer(self.http.clone()))
    }

    /// An rmcp client, initialized, speaking `version`.
    pub async fn connect(&self, version: ProtocolVersion) -> Mcp {
        let config = StreamableHttpClientTransportConfig::with_uri(self.mcp.url());
        let transport = StreamableHttpClientTransport::with_client(self.authorized(), config);
        let mut info = ClientConfig::default();
        info.protocol_version = version;
        info.serve(transport).await.unwrap()
    }
}

/// The text of the first content block of `echo`'s answer to `text`.
pub async fn echo(client: &Mcp, text: &str) -> Result<String, rmcp::ServiceError> {
    let mut arguments = serde_json::Map::new();
    arguments.insert("text".to_owned(), text.into());
    let result = client
        .call_tool(CallToolRequestParams::new("echo").with_arguments(arguments))
        .await?;
    Ok(result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default())
}

/// The first error of type `T` in `error`'s chain of sources.
pub fn find<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(found) = current.downcast_ref::<T>() {
            return Some(found);
        }
        next = current.source();
    }
    None
}

/// The transport's error in `error`'s chain: rmcp boxes it, and a
/// `StreamableHttpError::Client` has no source to follow further.
pub fn transport_error<'a>(
    error: &'a (dyn StdError + 'static),
) -> Option<&'a StreamableHttpError<Error>> {
    find::<StreamableHttpError<Error>>(error)
}

pub fn header(value: &'static str) -> HeaderValue {
    HeaderValue::from_static(value)
}
