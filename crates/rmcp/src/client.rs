//! [`McpHttpClient`]: rmcp's `StreamableHttpClient` over a tower service.

use std::{borrow::Cow, collections::HashMap, fmt, sync::Arc};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode,
    header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE},
};
use http_body::Body;
use http_body_util::Full;
use rmcp::{
    model::{ClientJsonRpcMessage, ClientRequest, ErrorData, JsonRpcMessage, ServerJsonRpcMessage},
    transport::streamable_http_client::{
        AuthRequiredError, HttpStatusError, InsufficientScopeError, SseError, StreamableHttpClient,
        StreamableHttpError, StreamableHttpPostResponse, StreamableHttpResponseLimits,
    },
};
use sse_stream::Sse;
use tower::{Service, ServiceExt};
use tower_token_refresh::{BoxError, classify::parse_challenges};

use crate::{
    Error,
    body::{ReadError, read_limited, sse_events},
};

type HttpError = StreamableHttpError<Error>;

const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
const EVENT_STREAM: &str = "text/event-stream";
const JSON: &str = "application/json";

/// rmcp's [`StreamableHttpClient`] over a tower HTTP service: hand it to
/// [`StreamableHttpClientTransport::with_client`](rmcp::transport::StreamableHttpClientTransport::with_client).
///
/// The service is usually a [`TokenRefresh`](tower_token_refresh::TokenRefresh)
/// over hyper-util's client, so that every MCP request (the POSTs, the SSE
/// `GET`, the session `DELETE`) carries the [`TokenManager`](tower_token_refresh::TokenManager)'s
/// token, a 401 is answered by one shared refresh and a replay, and the
/// layer's origin rules and stores apply. Any
/// `Service<http::Request<Full<Bytes>>>` will do; each request goes through
/// a clone of it, readied first.
///
/// Requests and responses follow rmcp's own reqwest client (see the crate
/// docs for the mapping and where it differs).
///
/// # Authorization
///
/// The token layer owns the `Authorization` header: leave rmcp's
/// [`auth_header`](rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::auth_header)
/// unset. If it is set, the request goes out with `Bearer <auth_header>`,
/// which the layer replaces with its own token on the origins it serves;
/// on any other origin (a request the layer lets through untouched) the
/// `auth_header` token is what the server gets.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use hyper_util::{client::legacy::Client, rt::TokioExecutor};
/// use rmcp::transport::{StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig};
/// use tower_token_refresh_rmcp::McpHttpClient;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // No token layer here: see the crate docs for one.
/// let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
/// let config = StreamableHttpClientTransportConfig::with_uri("http://127.0.0.1:8080/mcp");
/// let transport = StreamableHttpClientTransport::with_client(McpHttpClient::new(http), config);
/// # drop(transport);
/// # }
/// ```
#[derive(Clone)]
pub struct McpHttpClient<S> {
    service: S,
}

impl<S> McpHttpClient<S> {
    /// Sends rmcp's requests through `service`.
    pub const fn new(service: S) -> Self {
        McpHttpClient { service }
    }

    /// The service.
    pub fn get_ref(&self) -> &S {
        &self.service
    }

    /// The service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.service
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.service
    }
}

impl<S> fmt::Debug for McpHttpClient<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpHttpClient").finish_non_exhaustive()
    }
}

// Each method clones the service and returns a future that does not borrow
// `self`: the futures are `Send` without asking `S: Sync`, so a
// `BoxCloneService` will do.
impl<S, B> StreamableHttpClient for McpHttpClient<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Error = Error;

    fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<Output = Result<StreamableHttpPostResponse, HttpError>> + Send + '_ {
        self.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            StreamableHttpResponseLimits::default(),
        )
    }

    fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> impl Future<Output = Result<StreamableHttpPostResponse, HttpError>> + Send + '_ {
        let mut limits = StreamableHttpResponseLimits::default();
        limits.max_sse_event_size = max_sse_event_size;
        self.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            limits,
        )
    }

    fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> impl Future<Output = Result<StreamableHttpPostResponse, HttpError>> + Send + '_ {
        let service = self.service.clone();
        async move {
            let body = serde_json::to_vec(&message).map_err(client_error)?;
            let mut request = request(Method::POST, &uri, custom_headers, auth_header, body)?;
            let headers = request.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
            headers.insert(ACCEPT, accept());
            let session_attached = session_id.is_some();
            if let Some(session_id) = session_id {
                headers.insert(SESSION_ID, header_value(&session_id)?);
            }

            let (parts, body) = send(service, request).await?.into_parts();
            let status = parts.status;
            challenged(status, &parts.headers)?;
            if matches!(status, StatusCode::ACCEPTED | StatusCode::NO_CONTENT) {
                return Ok(StreamableHttpPostResponse::Accepted);
            }
            if status == StatusCode::NOT_FOUND && session_attached {
                return Err(StreamableHttpError::SessionExpired);
            }
            let content_type = parts.headers.get(CONTENT_TYPE);
            let new_session_id = parts
                .headers
                .get(SESSION_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if !status.is_success() {
                let failure = Failure {
                    status,
                    status_error: status_error(status, &parts.headers),
                    is_json: content_type.is_some_and(|ct| media_type_is(ct, JSON)),
                    session_attached,
                    session_id: new_session_id,
                };
                return failure.read(body, &message, limits).await;
            }
            // Nothing awaits an answer to a notification or a response: any
            // 2xx will do, as rmcp's client takes it (some servers answer
            // `notifications/initialized` with an empty 200).
            let awaits_no_response = matches!(
                message,
                JsonRpcMessage::Notification(_)
                    | JsonRpcMessage::Response(_)
                    | JsonRpcMessage::Error(_)
            );
            if awaits_no_response && body.size_hint().exact() == Some(0) {
                return Ok(StreamableHttpPostResponse::Accepted);
            }
            match content_type {
                Some(ct) if media_type_is(ct, EVENT_STREAM) => Ok(StreamableHttpPostResponse::Sse(
                    sse_events(body, limits.max_sse_event_size),
                    new_session_id,
                )),
                Some(ct) if media_type_is(ct, JSON) => {
                    let json = read_json(body, limits.max_json_response_size).await?;
                    match serde_json::from_slice::<ServerJsonRpcMessage>(&json) {
                        Ok(message) => {
                            Ok(StreamableHttpPostResponse::Json(message, new_session_id))
                        }
                        Err(_) if awaits_no_response => Ok(StreamableHttpPostResponse::Accepted),
                        Err(e) => Err(StreamableHttpError::UnexpectedServerResponse(Cow::Owned(
                            format!(
                                "the JSON response is no JSON-RPC message ({})",
                                where_json_fails(&e)
                            ),
                        ))),
                    }
                }
                _ if awaits_no_response => Ok(StreamableHttpPostResponse::Accepted),
                ct => {
                    Err(StreamableHttpError::UnexpectedContentType(ct.map(|ct| {
                        String::from_utf8_lossy(ct.as_bytes()).into_owned()
                    })))
                }
            }
        }
    }

    fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<Output = Result<(), HttpError>> + Send + '_ {
        let service = self.service.clone();
        async move {
            let mut request = request(
                Method::DELETE,
                &uri,
                custom_headers,
                auth_header,
                Vec::new(),
            )?;
            request
                .headers_mut()
                .insert(SESSION_ID, header_value(&session_id)?);
            let response = send(service, request).await?;
            let status = response.status();
            if status == StatusCode::METHOD_NOT_ALLOWED {
                return Err(StreamableHttpError::ServerDoesNotSupportDeleteSession);
            }
            challenged(status, response.headers())?;
            if let Some(error) = status_error(status, response.headers()) {
                return Err(error.into());
            }
            if !status.is_success() {
                return Err(unexpected_status(status));
            }
            Ok(())
        }
    }

    fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<Output = Result<BoxStream<'static, Result<Sse, SseError>>, HttpError>> + Send + '_
    {
        self.get_stream_with_max_sse_event_size(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            StreamableHttpResponseLimits::default().max_sse_event_size,
        )
    }

    fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> impl Future<Output = Result<BoxStream<'static, Result<Sse, SseError>>, HttpError>> + Send + '_
    {
        let service = self.service.clone();
        async move {
            let mut request = request(Method::GET, &uri, custom_headers, auth_header, Vec::new())?;
            let headers = request.headers_mut();
            headers.insert(ACCEPT, accept());
            if let Some(session_id) = session_id {
                headers.insert(SESSION_ID, header_value(&session_id)?);
            }
            if let Some(last_event_id) = last_event_id {
                headers.insert(LAST_EVENT_ID, header_value(&last_event_id)?);
            }
            let (parts, body) = send(service, request).await?.into_parts();
            let status = parts.status;
            if status == StatusCode::METHOD_NOT_ALLOWED {
                return Err(StreamableHttpError::ServerDoesNotSupportSse);
            }
            challenged(status, &parts.headers)?;
            if let Some(error) = status_error(status, &parts.headers) {
                return Err(error.into());
            }
            if !status.is_success() {
                return Err(unexpected_status(status));
            }
            match parts.headers.get(CONTENT_TYPE) {
                Some(ct) if media_type_is(ct, EVENT_STREAM) || media_type_is(ct, JSON) => {
                    Ok(sse_events(body, max_sse_event_size))
                }
                ct => {
                    Err(StreamableHttpError::UnexpectedContentType(ct.map(|ct| {
                        String::from_utf8_lossy(ct.as_bytes()).into_owned()
                    })))
                }
            }
        }
    }
}

/// A request to `uri` with `body`, rmcp's custom headers (those rmcp's own
/// client reserves refused) and `auth_header` as a `Bearer` credential.
fn request(
    method: Method,
    uri: &str,
    custom_headers: HashMap<HeaderName, HeaderValue>,
    auth_header: Option<String>,
    body: Vec<u8>,
) -> Result<Request<Full<Bytes>>, HttpError> {
    let mut request = Request::new(Full::new(Bytes::from(body)));
    *request.method_mut() = method;
    *request.uri_mut() = uri.parse().map_err(client_error)?;
    let headers = request.headers_mut();
    for (name, value) in custom_headers {
        // `MCP-Protocol-Version` is reserved too, but rmcp's worker sends it
        // as a custom header once the session is initialized.
        if name == ACCEPT || name == SESSION_ID || name == LAST_EVENT_ID {
            return Err(StreamableHttpError::ReservedHeaderConflict(
                name.to_string(),
            ));
        }
        headers.insert(name, value);
    }
    if let Some(token) = auth_header {
        let mut value = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| client_error("the auth_header is not a valid header value"))?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(request)
}

fn accept() -> HeaderValue {
    HeaderValue::from_static("text/event-stream, application/json")
}

fn header_value(value: &str) -> Result<HeaderValue, HttpError> {
    HeaderValue::from_str(value).map_err(client_error)
}

async fn send<S, B>(service: S, request: Request<Full<Bytes>>) -> Result<Response<B>, HttpError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    service.oneshot(request).await.map_err(client_error)
}

fn client_error(e: impl Into<BoxError>) -> HttpError {
    StreamableHttpError::Client(Error::new(e))
}

/// A 401 or 403 that carries a challenge: rmcp's `AuthRequired` (what the
/// token layer could not answer with a refresh and a replay) or
/// `InsufficientScope` (with the scope the `Bearer` or `DPoP` challenge
/// asks for). Several `WWW-Authenticate` fields are joined into one list.
fn challenged(status: StatusCode, headers: &HeaderMap) -> Result<(), HttpError> {
    if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
        return Ok(());
    }
    let mut challenge = String::new();
    for value in headers.get_all(WWW_AUTHENTICATE) {
        let value = value.to_str().map_err(|_| {
            StreamableHttpError::UnexpectedServerResponse(Cow::Borrowed(
                "invalid www-authenticate header value",
            ))
        })?;
        if !challenge.is_empty() {
            challenge.push_str(", ");
        }
        challenge.push_str(value);
    }
    if challenge.is_empty() {
        return Ok(());
    }
    if status == StatusCode::UNAUTHORIZED {
        return Err(StreamableHttpError::AuthRequired(AuthRequiredError::new(
            challenge,
        )));
    }
    let scope = parse_challenges(&challenge)
        .iter()
        .filter(|c| {
            c.scheme.eq_ignore_ascii_case("bearer") || c.scheme.eq_ignore_ascii_case("dpop")
        })
        .find_map(|c| c.param("scope").map(Cow::into_owned));
    Err(StreamableHttpError::InsufficientScope(
        InsufficientScopeError::new(challenge, scope),
    ))
}

/// rmcp's [`HttpStatusError`] for a 429 or a 5xx, with its raw
/// `Retry-After` (rmcp leaves reading it to the caller).
fn status_error(status: StatusCode, headers: &HeaderMap) -> Option<HttpStatusError> {
    if status != StatusCode::TOO_MANY_REQUESTS && !status.is_server_error() {
        return None;
    }
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Some(HttpStatusError::new(status.as_u16(), retry_after))
}

/// The status alone: a server's error text may quote the request's token.
fn unexpected_status(status: StatusCode) -> HttpError {
    StreamableHttpError::UnexpectedServerResponse(Cow::Owned(format!("HTTP {status}")))
}

/// Whether a `Content-Type` is `expected`, whatever its case and parameters.
fn media_type_is(value: &HeaderValue, expected: &str) -> bool {
    value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(expected))
}

async fn read_json<B>(body: B, max: usize) -> Result<Bytes, HttpError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    read_limited(body, max).await.map_err(|e| match e {
        ReadError::TooLarge => StreamableHttpError::ResponseBodyTooLarge { max_size: max },
        ReadError::Body(e) => client_error(e),
    })
}

/// Where a body failed to parse, without quoting it (serde's messages
/// quote the values they did not expect).
fn where_json_fails(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// A POST answered with a status other than 2xx, 202 and 204 aside.
struct Failure {
    status: StatusCode,
    status_error: Option<HttpStatusError>,
    is_json: bool,
    session_attached: bool,
    session_id: Option<String>,
}

impl Failure {
    /// What rmcp makes of it: the JSON-RPC error in a JSON body (read
    /// within the JSON limit) if there is one, else the status. A 429, a
    /// 401 or 403 without a challenge, and any body that is not JSON are
    /// not read at all.
    async fn read<B>(
        self,
        body: B,
        message: &ClientJsonRpcMessage,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, HttpError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let status = self.status;
        let readable = self.is_json
            && !matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            );
        let mut json_rpc_error = None;
        if readable {
            match read_limited(body, limits.max_json_response_size).await {
                Ok(json) => {
                    if let Ok(JsonRpcMessage::Error(error)) =
                        serde_json::from_slice::<ServerJsonRpcMessage>(&json)
                    {
                        json_rpc_error = Some(error);
                    }
                }
                Err(ReadError::TooLarge) => {
                    return Err(match self.status_error {
                        Some(error) => error.into(),
                        None => StreamableHttpError::ResponseBodyTooLarge {
                            max_size: limits.max_json_response_size,
                        },
                    });
                }
                // A broken error body: the status still says what happened.
                Err(ReadError::Body(_)) => {}
            }
        }
        if let Some(answer) = discover_rejected(message, &self, json_rpc_error.as_ref()) {
            return Ok(answer);
        }
        if let Some(error) = json_rpc_error {
            return Ok(StreamableHttpPostResponse::Json(
                JsonRpcMessage::Error(error),
                self.session_id,
            ));
        }
        Err(match self.status_error {
            Some(error) => error.into(),
            None => unexpected_status(status),
        })
    }
}

/// A sessionless `server/discover` refused with a 4xx (not 401 or 403), as
/// a server from before that method does: answered as a JSON-RPC error with
/// the request's id, the server's own error if it sent one, so that rmcp's
/// lifecycle falls back to `initialize` (as rmcp's own client does).
fn discover_rejected(
    message: &ClientJsonRpcMessage,
    failure: &Failure,
    error: Option<&rmcp::model::JsonRpcError>,
) -> Option<StreamableHttpPostResponse> {
    let status = failure.status;
    if failure.session_attached
        || !status.is_client_error()
        || matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
    {
        return None;
    }
    let JsonRpcMessage::Request(request) = message else {
        return None;
    };
    if !matches!(request.request, ClientRequest::DiscoverRequest(_)) {
        return None;
    }
    let error = match error {
        Some(error) => error.error.clone(),
        None => {
            ErrorData::invalid_request(format!("server/discover rejected with HTTP {status}"), None)
        }
    };
    Some(StreamableHttpPostResponse::Json(
        ServerJsonRpcMessage::error(error, Some(request.id.clone())),
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(challenges: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for c in challenges {
            headers.append(WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        headers
    }

    #[test]
    fn the_scope_comes_from_the_bearer_challenge_not_any_scope_text() {
        let h = headers(&[
            r#"Basic realm="scope=wrong""#,
            r#"Bearer error="insufficient_scope", scope="mcp:write files""#,
        ]);
        let Err(StreamableHttpError::InsufficientScope(e)) = challenged(StatusCode::FORBIDDEN, &h)
        else {
            panic!("not InsufficientScope");
        };
        assert_eq!(e.required_scope.as_deref(), Some("mcp:write files"));
        assert!(e.www_authenticate_header.starts_with("Basic"));
    }

    #[test]
    fn a_401_or_403_without_a_challenge_is_left_to_the_status() {
        assert!(challenged(StatusCode::UNAUTHORIZED, &HeaderMap::new()).is_ok());
        assert!(challenged(StatusCode::FORBIDDEN, &HeaderMap::new()).is_ok());
    }

    #[test]
    fn media_types_ignore_case_and_parameters() {
        let ct = HeaderValue::from_static("Application/JSON; charset=utf-8");
        assert!(media_type_is(&ct, JSON));
        assert!(!media_type_is(&ct, EVENT_STREAM));
    }

    #[test]
    fn reserved_custom_headers_are_refused() {
        for name in ["accept", "mcp-session-id", "last-event-id"] {
            let custom =
                HashMap::from([(HeaderName::from_static(name), HeaderValue::from_static("x"))]);
            let result = request(
                Method::POST,
                "http://127.0.0.1/mcp",
                custom,
                None,
                Vec::new(),
            );
            assert!(
                matches!(result, Err(StreamableHttpError::ReservedHeaderConflict(ref n)) if n == name),
                "{name}"
            );
        }
        let version = HashMap::from([(
            HeaderName::from_static("mcp-protocol-version"),
            HeaderValue::from_static("2025-11-25"),
        )]);
        let request = request(
            Method::POST,
            "http://127.0.0.1/mcp",
            version,
            None,
            Vec::new(),
        );
        assert!(request.is_ok());
    }

    #[test]
    fn an_auth_header_goes_as_a_sensitive_bearer_credential() {
        let request = request(
            Method::GET,
            "http://127.0.0.1/mcp",
            HashMap::new(),
            Some("abc".to_owned()),
            Vec::new(),
        )
        .unwrap();
        let value = &request.headers()[AUTHORIZATION];
        assert_eq!(value, "Bearer abc");
        assert!(value.is_sensitive());
    }
}
