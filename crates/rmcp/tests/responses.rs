//! What the server answers, and what rmcp gets: SSE and JSON through the
//! layer end to end, then the status mapping and the size limits against
//! small axum routes, through hyper-util's client without the layer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    response::IntoResponse,
    routing::{get, post},
};
use futures_util::StreamExt;
use http::{HeaderName, HeaderValue, StatusCode, header};
use rmcp::{
    model::{ClientJsonRpcMessage, ClientRequest, PingRequest, ProtocolVersion, RequestId},
    transport::streamable_http_client::{
        StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
        StreamableHttpResponseLimits,
    },
};
use support::*;
use tower_token_refresh_rmcp::{Error, McpHttpClient};
use tower_token_refresh_test_util::{hyper_client, until};

#[tokio::test(start_paused = true)]
async fn sse_answers_a_session_and_its_stream_go_through_the_layer() {
    let w = World::hour(Answers::SessionsAndSse).await;
    let client = w.connect(ProtocolVersion::V_2025_11_25).await;
    assert_eq!(client.list_tools(None).await.unwrap().tools.len(), 1);
    assert_eq!(echo(&client, "over sse").await.unwrap(), "over sse");
    until("the server's stream is open", || w.mcp.stats().gets == 1).await;
    client.cancel().await.unwrap();
    until("the session is deleted", || w.mcp.stats().deletes == 1).await;

    let stats = w.mcp.stats();
    // initialize, the GET stream, tools/list, tools/call.
    assert_eq!(stats.sse, 4);
    assert_eq!(stats.json, 0);
    assert_eq!(stats.rejected, 0);
    assert_eq!(w.auth.stats().token_requests, 0);
}

#[tokio::test(start_paused = true)]
async fn json_answers_without_a_session_go_through_the_layer() {
    let w = World::hour(Answers::StatelessJson).await;
    let client = w.connect(ProtocolVersion::LATEST).await;
    assert_eq!(client.list_tools(None).await.unwrap().tools.len(), 1);
    assert_eq!(echo(&client, "over json").await.unwrap(), "over json");

    let stats = w.mcp.stats();
    // initialize, tools/list, tools/call.
    assert_eq!(stats.json, 3);
    assert_eq!(stats.sse, 0);
    assert_eq!((stats.gets, stats.deletes), (0, 0));
    assert_eq!(stats.rejected, 0);
}

/// Routes that answer what each test needs.
async fn routes() -> String {
    let app = Router::new()
        .route(
            "/no-sse",
            get(|| async { StatusCode::METHOD_NOT_ALLOWED })
                .delete(|| async { StatusCode::METHOD_NOT_ALLOWED }),
        )
        .route(
            "/busy",
            post(|| async { (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "7")]) }),
        )
        .route("/gone", post(|| async { StatusCode::NOT_FOUND }))
        .route("/accepted", post(|| async { StatusCode::ACCEPTED }))
        .route(
            "/big-event",
            post(|| async {
                let event = format!("data: {}\n\n", "x".repeat(100));
                ([(header::CONTENT_TYPE, "text/event-stream")], event)
            }),
        )
        .route(
            "/big-json",
            post(|| async {
                let body = format!(
                    r#"{{"jsonrpc":"2.0","id":1,"result":{{"x":"{}"}}}}"#,
                    "x".repeat(100)
                );
                ([(header::CONTENT_TYPE, "application/json")], body)
            }),
        )
        .route(
            "/json-rpc-error",
            post(|| async {
                let body =
                    r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"overloaded"}}"#;
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response()
            }),
        )
        .route(
            "/echoes",
            post(|| async { (StatusCode::BAD_REQUEST, "token tok-secret-1 is not welcome") }),
        );
    format!("http://{}", serve(app).await)
}

fn client() -> McpHttpClient<Http> {
    McpHttpClient::new(hyper_client())
}

fn ping() -> ClientJsonRpcMessage {
    ClientJsonRpcMessage::request(
        ClientRequest::PingRequest(PingRequest::default()),
        RequestId::Number(1),
    )
}

async fn send(
    url: String,
    session: Option<&str>,
    limits: StreamableHttpResponseLimits,
) -> Result<StreamableHttpPostResponse, StreamableHttpError<Error>> {
    client()
        .post_message_with_response_limits(
            Arc::from(url),
            ping(),
            session.map(Arc::from),
            None,
            HashMap::new(),
            limits,
        )
        .await
}

fn limits(sse_event: usize, json: usize) -> StreamableHttpResponseLimits {
    let mut limits = StreamableHttpResponseLimits::default();
    limits.max_sse_event_size = sse_event;
    limits.max_json_response_size = json;
    limits
}

#[tokio::test]
async fn a_get_answered_405_means_the_server_offers_no_sse_stream() {
    let base = routes().await;
    let result = client()
        .get_stream(
            Arc::from(format!("{base}/no-sse")),
            Some(Arc::from("session-1")),
            None,
            None,
            HashMap::new(),
        )
        .await;
    assert!(
        matches!(result, Err(StreamableHttpError::ServerDoesNotSupportSse)),
        "{:?}",
        result.err()
    );
}

#[tokio::test]
async fn a_delete_answered_405_means_the_server_keeps_its_sessions() {
    let base = routes().await;
    let result = client()
        .delete_session(
            Arc::from(format!("{base}/no-sse")),
            Arc::from("session-1"),
            None,
            HashMap::new(),
        )
        .await;
    assert!(matches!(
        result,
        Err(StreamableHttpError::ServerDoesNotSupportDeleteSession)
    ));
}

#[tokio::test]
async fn a_429_is_an_http_status_with_its_retry_after() {
    let base = routes().await;
    let result = send(format!("{base}/busy"), None, Default::default()).await;
    let Err(StreamableHttpError::HttpStatus(status)) = result else {
        panic!("not HttpStatus: {result:?}");
    };
    assert_eq!(status.status, 429);
    assert_eq!(status.retry_after.as_deref(), Some("7"));
}

#[tokio::test]
async fn a_404_in_a_session_means_the_session_expired_and_without_one_it_does_not() {
    let base = routes().await;
    let in_session = send(
        format!("{base}/gone"),
        Some("session-1"),
        Default::default(),
    )
    .await;
    assert!(matches!(
        in_session,
        Err(StreamableHttpError::SessionExpired)
    ));
    let without = send(format!("{base}/gone"), None, Default::default()).await;
    assert!(
        matches!(without, Err(StreamableHttpError::UnexpectedServerResponse(ref m)) if m.contains("404")),
        "{without:?}"
    );
}

#[tokio::test]
async fn a_202_is_accepted() {
    let base = routes().await;
    let result = send(format!("{base}/accepted"), None, Default::default()).await;
    assert!(matches!(result, Ok(StreamableHttpPostResponse::Accepted)));
}

#[tokio::test]
async fn an_sse_event_over_the_limit_ends_the_stream_with_an_error() {
    let base = routes().await;
    let result = send(format!("{base}/big-event"), None, limits(64, 1 << 20)).await;
    let Ok(StreamableHttpPostResponse::Sse(mut events, _)) = result else {
        panic!("not SSE: {result:?}");
    };
    let error = events.next().await.unwrap().unwrap_err();
    assert!(
        error.to_string().contains("maximum size of 64 bytes"),
        "{error}"
    );
    assert!(events.next().await.is_none());

    // The same event within a limit that fits it.
    let result = send(format!("{base}/big-event"), None, limits(106, 1 << 20)).await;
    let Ok(StreamableHttpPostResponse::Sse(mut events, _)) = result else {
        panic!("not SSE");
    };
    let event = events.next().await.unwrap().unwrap();
    assert_eq!(event.data.unwrap().len(), 100);
}

#[tokio::test]
async fn a_json_body_over_the_limit_is_refused() {
    let base = routes().await;
    let result = send(format!("{base}/big-json"), None, limits(1 << 20, 64)).await;
    assert!(
        matches!(
            result,
            Err(StreamableHttpError::ResponseBodyTooLarge { max_size: 64 })
        ),
        "{result:?}"
    );
    let result = send(format!("{base}/big-json"), None, limits(1 << 20, 1024)).await;
    assert!(
        matches!(result, Ok(StreamableHttpPostResponse::Json(..))),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_5xx_that_carries_a_json_rpc_error_is_the_servers_answer() {
    let base = routes().await;
    let result = send(format!("{base}/json-rpc-error"), None, Default::default()).await;
    let Ok(StreamableHttpPostResponse::Json(message, _)) = result else {
        panic!("not the JSON-RPC error: {result:?}");
    };
    let json = serde_json::to_value(&message).unwrap();
    assert_eq!(json["error"]["message"], "overloaded");
}

#[tokio::test]
async fn the_servers_error_text_is_not_copied_into_the_error() {
    let base = routes().await;
    let result = send(format!("{base}/echoes"), None, Default::default()).await;
    let error = result.unwrap_err();
    let shown = format!("{error} {error:?}");
    assert!(shown.contains("400"), "{shown}");
    assert!(!shown.contains("tok-secret-1"), "{shown}");
}

#[tokio::test]
async fn reserved_custom_headers_are_refused_before_anything_is_sent() {
    let base = routes().await;
    let custom = HashMap::from([(
        HeaderName::from_static("mcp-session-id"),
        HeaderValue::from_static("forged"),
    )]);
    let result = client()
        .post_message(
            Arc::from(format!("{base}/accepted")),
            ping(),
            None,
            None,
            custom,
        )
        .await;
    assert!(matches!(
        result,
        Err(StreamableHttpError::ReservedHeaderConflict(ref name)) if name == "mcp-session-id"
    ));
}
