//! Fault injection: the [`Fault`]s a test can queue for an [`Endpoint`], the
//! [`Gate`] that holds requests, the per-endpoint queues, and how a handler
//! serves what is queued before (or instead of) its normal answer.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use axum::{
    Extension,
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use hyper::body::Frame;
use serde_json::json;

use super::{
    echo::Echo,
    oauth::{authenticate_client, json_response, read_form},
    state::AuthShared,
};
use crate::serve::ConnControl;

// The queues keep these rules:
//
//  1. Each queued fault is taken by exactly one request to its endpoint, in
//     the order injected; endpoints do not share faults.
//  2. A request takes faults until one decides its answer: `Hold` passes it
//     on to the next queued fault once its gate opens, `Delay` ends in the
//     normal answer (later faults wait for later requests).
//  3. A `Gate` only ever goes from closed to open.

/// A fault the token endpoint serves instead of (or before) its normal answer.
/// Queue them with [`AuthServer::inject`](super::AuthServer::inject).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Wait this long (tokio's clock), then answer normally. A client that
    /// hangs up meanwhile drops the request, unless
    /// [`AuthConfig::finish_abandoned`](super::AuthConfig::finish_abandoned)
    /// is on.
    Delay(Duration),
    /// Answer with this status and a plain-text body. A number that is not a
    /// valid final status code (1xx, or outside 100–999) answers 500.
    Status(u16),
    /// 503 with `{"error":"temporarily_unavailable"}`.
    TemporarilyUnavailable,
    /// 400 with `{"error":"invalid_grant"}`, leaving the presented refresh
    /// token as it was (still usable).
    InvalidGrant,
    /// 200 with a truncated JSON body: `{"access_token": `.
    MalformedJson,
    /// 502 with an HTML page, as a proxy in front of a dead server sends.
    Html502,
    /// Close the TCP connection after reading the request, without any
    /// response. A hyper client sees an error (an incomplete message).
    DropConnection,
    /// Hold the request until the [`Gate`] opens, then serve it the next
    /// queued fault, or the normal answer if none is queued: for tests that
    /// need every request to arrive before a refresh ends.
    ///
    /// A gate never opened is a token endpoint that never answers: the
    /// request is held (counted in `token_requests` and `faults_served`,
    /// its grant not served) until the last
    /// [`AuthServer`](super::AuthServer) handle is dropped, which closes the
    /// connection without a response.
    ///
    /// A client that hangs up while its request is held drops the request,
    /// unless [`AuthConfig::finish_abandoned`](super::AuthConfig::finish_abandoned)
    /// is on: then it is carried out once the gate opens.
    ///
    /// ```
    /// use tower_token_refresh_test_util::{AuthConfig, AuthServer, Fault, Gate};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let auth = AuthServer::start(AuthConfig::default()).await?;
    /// // The next token request hangs.
    /// auth.inject(Fault::Hold(Gate::new()), 1);
    /// # Ok(()) }
    /// ```
    Hold(Gate),
    /// This status with `Retry-After` set to the given value (delay seconds
    /// or an HTTP-date, sent as is) and an OAuth2 error body:
    /// `temporarily_unavailable` for 503, `slow_down` otherwise. Use 429 or
    /// 503.
    RetryAfter(u16, String),
    /// Serve the grant normally (tokens are issued), but send `expires_in`
    /// as a JSON string (`"2"`), as some servers do.
    ExpiresInString,
    /// Serve the grant normally (tokens are issued), but leave this field
    /// out of the JSON answer (`"expires_in"`, `"access_token"`,
    /// `"token_type"`, …).
    OmitField(&'static str),
    /// Answer with the request quoted back (body, `Authorization` header,
    /// or both; as sent, decoded or re-encoded; in `error_description` or
    /// a plain-text body), as servers that echo what they received do.
    Echo(Echo),
    /// Answer with this status and a JSON body of about 70 KiB, more than
    /// the 64 KiB a client reads by default (`ServiceClient`'s
    /// `DEFAULT_MAX_BODY`).
    ///
    /// A 2xx serves the grant normally (tokens are issued and, with
    /// rotation, the refresh token presented is spent) with a `padding`
    /// member in the token response: an answer the client may not be able
    /// to read. Any other status answers with an OAuth2 error body
    /// (`temporarily_unavailable` for a 5xx, `invalid_request` otherwise)
    /// padded in its `error_description`; the grant is not served. A
    /// number that is not a valid final status code answers 500.
    OversizedBody(u16),
    /// Authenticate the client as the normal answer would (a client
    /// assertion is checked, its `jti` spent and the assertion logged; a
    /// client that fails gets its `invalid_client`), then serve this fault:
    /// for a test whose client must not resend an assertion after an
    /// error.
    ///
    /// ```
    /// use tower_token_refresh_test_util::{AuthConfig, AuthServer, Endpoint, Fault};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let auth = AuthServer::start(AuthConfig::default()).await?;
    /// let fault = Fault::Authenticated(Box::new(Fault::TemporarilyUnavailable));
    /// auth.inject_at(Endpoint::Revocation, fault, 1);
    /// # Ok(()) }
    /// ```
    Authenticated(Box<Fault>),
    /// 200 with a JSON content type and the first byte of a body (`{`),
    /// then nothing more, the connection left open: a server that stalls
    /// mid-answer.
    StalledBody,
}

/// The body of [`Fault::StalledBody`]: one byte, then never another
/// (`true` once it was sent).
struct Stalled(bool);

impl hyper::body::Body for Stalled {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.0 {
            // Never woken: the body stalls until the connection closes.
            return std::task::Poll::Pending;
        }
        self.0 = true;
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{")))))
    }
}

/// How much padding [`Fault::OversizedBody`] adds: 70 KiB.
pub(super) const OVERSIZED_PADDING: usize = 70 * 1024;

/// A final status code for `code`, or 500.
fn final_status(code: u16) -> StatusCode {
    // A 1xx is not a final response; hyper would not send it as one.
    StatusCode::from_u16(code)
        .ok()
        .filter(|s| !s.is_informational())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl Fault {
    /// The status of a [`Fault::OversizedBody`] if it is a 2xx: then the
    /// grant is served, and the fault only changes its answer.
    pub(super) fn oversized_success(&self) -> Option<StatusCode> {
        match self {
            Fault::OversizedBody(code) => Some(final_status(*code)).filter(|s| s.is_success()),
            _ => None,
        }
    }
}

/// Holds token requests served [`Fault::Hold`] until [`open`](Gate::open)
/// is called. Clones share the gate.
#[derive(Clone, Debug)]
pub struct Gate(Arc<tokio::sync::Semaphore>);

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }

    /// Lets every held request, and any later one, through.
    pub fn open(&self) {
        self.0.close();
    }

    async fn wait(&self) {
        // Resolves with an error once the semaphore is closed: that is the
        // signal, there are never permits.
        let _ = self.0.acquire().await;
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for Gate {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Gate {}

/// An endpoint of [`AuthServer`](super::AuthServer) that faults can be queued
/// for with [`AuthServer::inject_at`](super::AuthServer::inject_at).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `POST /token`.
    Token,
    /// `POST /introspect`.
    Introspection,
    /// `POST /revoke`.
    Revocation,
    /// `POST /device_authorization` (RFC 8628 §3.1).
    DeviceAuthorization,
    /// `POST /register`, dynamic client registration (RFC 7591), when
    /// [switched on](super::AuthConfig::registration).
    Registration,
}

impl Endpoint {
    /// Its path on the server, `/token`, `/introspect`, ….
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Token => "/token",
            Endpoint::Introspection => "/introspect",
            Endpoint::Revocation => "/revoke",
            Endpoint::DeviceAuthorization => "/device_authorization",
            Endpoint::Registration => "/register",
        }
    }
}

/// The faults waiting for each endpoint.
#[derive(Default)]
pub(super) struct FaultQueues(HashMap<Endpoint, VecDeque<Fault>>);

impl FaultQueues {
    /// Queues `fault` `times` times for `endpoint`, after those already queued.
    pub(super) fn push(&mut self, endpoint: Endpoint, fault: Fault, times: usize) {
        self.0
            .entry(endpoint)
            .or_default()
            .extend(std::iter::repeat_n(fault, times));
    }

    fn pop(&mut self, endpoint: Endpoint) -> Option<Fault> {
        self.0.get_mut(&endpoint)?.pop_front()
    }
}

/// What the faults queued for a request decided.
pub(super) enum Served {
    /// The normal answer, changed by this fault if any
    /// ([`Fault::ExpiresInString`], [`Fault::OmitField`]).
    Normal(Option<Fault>),
    /// This answer instead of the normal one.
    Instead(Response),
    /// No answer: close the connection ([`Fault::DropConnection`]).
    HangUp,
}

/// Serves the faults queued for `endpoint` to the request with `headers`
/// and `body`: `Err` is the answer to send instead of the normal one
/// (or, for [`Fault::DropConnection`], never comes: the connection is
/// closed); `Ok` carries a fault that changes the normal answer, if any.
pub(super) async fn serve_faults(
    shared: &AuthShared,
    endpoint: Endpoint,
    conn: Option<Extension<ConnControl>>,
    request: (&HeaderMap, &[u8]),
) -> Result<Option<Fault>, Response> {
    match take_faults(shared, endpoint, request).await {
        Served::Normal(modifier) => Ok(modifier),
        Served::Instead(response) => Err(response),
        Served::HangUp => Err(hang_up(conn).await),
    }
}

/// Takes the faults queued for `endpoint` until one decides the answer to
/// the request with `headers` and `body`, waiting as `Delay` and `Hold`
/// say.
pub(super) async fn take_faults(
    shared: &AuthShared,
    endpoint: Endpoint,
    (headers, body): (&HeaderMap, &[u8]),
) -> Served {
    let next = || {
        let mut state = shared.lock();
        let fault = state.faults.pop(endpoint);
        if fault.is_some() {
            state.stats.faults_served += 1;
        }
        fault
    };
    let mut fault = next();
    loop {
        match fault.take() {
            None => return Served::Normal(None),
            Some(Fault::Delay(delay)) => {
                tokio::time::sleep(delay).await;
                return Served::Normal(None);
            }
            // Held requests take the next queued fault once released.
            Some(Fault::Hold(gate)) => {
                gate.wait().await;
                fault = next();
            }
            Some(Fault::Authenticated(inner)) => {
                let authenticated = read_form(headers, body)
                    .and_then(|params| authenticate_client(shared, endpoint, headers, &params));
                if let Err(refusal) = authenticated {
                    return Served::Instead(refusal.into_response());
                }
                fault = Some(*inner);
            }
            Some(Fault::DropConnection) => return Served::HangUp,
            Some(fault @ (Fault::ExpiresInString | Fault::OmitField(_))) => {
                return Served::Normal(Some(fault));
            }
            Some(fault) if fault.oversized_success().is_some() => {
                return Served::Normal(Some(fault));
            }
            Some(Fault::Echo(echo)) => return Served::Instead(echo.respond(headers, body)),
            Some(fault) => return Served::Instead(fault_response(fault)),
        }
    }
}

/// Closes the connection of `conn` without an answer: never returns then.
/// Without a connection to close (a router called directly), a 500.
pub(super) async fn hang_up(conn: Option<Extension<ConnControl>>) -> Response {
    match conn {
        Some(Extension(conn)) => {
            conn.drop_connection();
            // The connection task drops this future with the connection.
            std::future::pending().await
        }
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The answer a fault that replaces the normal one sends.
fn fault_response(fault: Fault) -> Response {
    match fault {
        Fault::Status(code) => {
            let status = final_status(code);
            (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("injected fault: status {}", status.as_u16()),
            )
                .into_response()
        }
        Fault::TemporarilyUnavailable => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "temporarily_unavailable"}),
        ),
        Fault::InvalidGrant => {
            json_response(StatusCode::BAD_REQUEST, &json!({"error": "invalid_grant"}))
        }
        Fault::MalformedJson => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            r#"{"access_token": "#,
        )
            .into_response(),
        Fault::Html502 => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n\
             <body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
        )
            .into_response(),
        Fault::RetryAfter(code, after) => {
            let status = StatusCode::from_u16(code)
                .ok()
                .filter(|s| !s.is_informational())
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let error = if status == StatusCode::SERVICE_UNAVAILABLE {
                "temporarily_unavailable"
            } else {
                "slow_down"
            };
            let mut response = json_response(status, &json!({ "error": error }));
            if let Ok(value) = HeaderValue::from_str(&after) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Fault::StalledBody => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::new(Stalled(false)))
            .unwrap_or_default(),
        Fault::OversizedBody(code) => {
            let status = final_status(code);
            let error = if status.is_server_error() {
                "temporarily_unavailable"
            } else {
                "invalid_request"
            };
            json_response(
                status,
                &json!({
                    "error": error,
                    "error_description": "x".repeat(OVERSIZED_PADDING),
                }),
            )
        }
        // `take_faults` handles these before it gets here.
        Fault::Delay(_)
        | Fault::DropConnection
        | Fault::Hold(_)
        | Fault::ExpiresInString
        | Fault::OmitField(_)
        | Fault::Echo(_)
        | Fault::Authenticated(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
