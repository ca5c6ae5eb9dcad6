//! gRPC through the layer, for real: a tonic client (`tonic::client::Grpc`
//! over a tonic `Channel`, hand-written glue, raw-bytes codec) and
//! test-util's tonic server on 127.0.0.1, whose tokens come from
//! test-util's authorization server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use tonic::{Code, body::Body, transport::Channel};
use tower::{Layer, ServiceBuilder};
use tower_token_refresh::{
    BufferBody, BufferedTokenRefresh, RejectedToken, RejectedTokenWith, TokenManager,
    TokenManagerBuilder, TokenRefreshLayer, WatchTrailersLayer, trailers::WatchTrailers,
};
use tower_token_refresh_test_util::{AuthConfig, AuthServer, BytesCodec, GrpcServer, hyper_client};

use support::{HOUR, grant, origin_of};

type Rebuild = fn(tower_token_refresh::Buffered<Body>) -> Body;
type Authed = BufferedTokenRefresh<WatchTrailers<Channel>, Rebuild, RejectedTokenWith>;

struct Grpc {
    auth: AuthServer,
    server: GrpcServer,
    tokens: TokenManager,
    client: tonic::client::Grpc<Authed>,
}

async fn grpc_world(
    lifetime: Duration,
    tweak: impl FnOnce(BufferBody<Rebuild>) -> BufferBody<Rebuild>,
) -> Grpc {
    grpc_world_with(lifetime, tweak, |b| b).await
}

async fn grpc_world_with(
    lifetime: Duration,
    tweak: impl FnOnce(BufferBody<Rebuild>) -> BufferBody<Rebuild>,
    tweak_manager: impl FnOnce(TokenManagerBuilder) -> TokenManagerBuilder,
) -> Grpc {
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(lifetime))
        .await
        .unwrap();
    let server = GrpcServer::start(&auth).await.unwrap();
    let tokens = tweak_manager(
        TokenManager::builder(grant(&auth, hyper_client())).initial(auth.login().token_set()),
    )
    .build();
    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    // tonic sends origin-form URIs (`/test.Echo/Unary`): the channel's one
    // connection says where they go.
    let auth_layer = TokenRefreshLayer::new(tokens.clone())
        .connection_origin(origin_of(server.addr()))
        .classify(RejectedToken.also_grpc());
    let watch = auth_layer.watch_trailers();
    let layer = auth_layer.buffer(tweak(BufferBody::new(Body::new as Rebuild)));
    let service = ServiceBuilder::new()
        .layer(layer)
        .layer(watch)
        .service(channel);
    Grpc {
        auth,
        server,
        tokens,
        client: tonic::client::Grpc::new(service),
    }
}

impl Grpc {
    async fn call(&self, method: &'static str, message: &[u8]) -> Result<Bytes, tonic::Status> {
        let mut client = self.client.clone();
        client.ready().await.map_err(tonic::Status::from_error)?;
        let request = tonic::Request::new(Bytes::copy_from_slice(message));
        let response = client
            .unary(request, PathAndQuery::from_static(method), BytesCodec)
            .await?;
        Ok(response.into_inner())
    }

    async fn unary(&self, message: &[u8]) -> Result<Bytes, tonic::Status> {
        self.call("/test.Echo/Unary", message).await
    }

    /// A server-streaming call, read to its end: the messages.
    async fn stream(&self, message: &[u8]) -> Result<Vec<Bytes>, tonic::Status> {
        let mut client = self.client.clone();
        client.ready().await.map_err(tonic::Status::from_error)?;
        let request = tonic::Request::new(Bytes::copy_from_slice(message));
        let mut stream = client
            .server_streaming(
                request,
                PathAndQuery::from_static("/test.Echo/Stream"),
                BytesCodec,
            )
            .await?
            .into_inner();
        let mut messages = Vec::new();
        while let Some(message) = stream.message().await? {
            messages.push(message);
        }
        Ok(messages)
    }
}

#[tokio::test]
async fn a_unary_call_carries_the_token() {
    let world = grpc_world(HOUR, |b| b).await;
    let answer = world.unary(b"hello").await.unwrap();
    assert_eq!(answer, "hello");
    let stats = world.server.stats();
    assert_eq!((stats.ok, stats.unauthenticated), (1, 0));
    assert_eq!(stats.missing_credentials, 0);
    assert_eq!(world.auth.stats().refresh_grants, 0);
}

#[tokio::test]
async fn a_revoked_token_is_refreshed_once_and_the_unary_call_replayed() {
    let world = grpc_world(HOUR, |b| b).await;
    world.auth.expire_access_tokens();
    let answer = world.unary(b"replay me").await.unwrap();
    assert_eq!(answer, "replay me");
    let stats = world.server.stats();
    // Rejected trailers-only, then replayed with the whole message.
    assert_eq!((stats.unauthenticated, stats.ok), (1, 1));
    assert_eq!(stats.message_sizes, vec![b"replay me".len()]);
    assert_eq!(world.auth.stats().refresh_grants, 1);
    assert_eq!(world.tokens.generation(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_rejected_server_streaming_call_is_replayed_too() {
    // Its request is one message, read whole; the rejection comes
    // trailers-only, before any message, so the call can still be replayed.
    let world = grpc_world(HOUR, |b| b).await;
    world.auth.expire_access_tokens();
    let messages = world.stream(b"again").await.unwrap();
    assert_eq!(messages, vec![Bytes::from_static(b"again"); 3]);
    let stats = world.server.stats();
    assert_eq!((stats.unauthenticated, stats.ok), (1, 1));
    assert_eq!(world.auth.stats().refresh_grants, 1);
}

#[tokio::test]
async fn concurrent_calls_share_one_refresh() {
    let world = std::sync::Arc::new(grpc_world(HOUR, |b| b).await);
    world.auth.expire_access_tokens();
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let world = world.clone();
            tokio::spawn(async move { world.unary(format!("call {i}").as_bytes()).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), format!("call {i}"));
    }
    assert_eq!(world.auth.stats().refresh_grants, 1);
    assert_eq!(world.server.stats().ok, 8);
}

#[tokio::test]
async fn a_call_over_the_buffer_limit_is_sent_whole_and_not_replayed() {
    let world = grpc_world(HOUR, |b| b.limit(16)).await;
    let big = vec![b'x'; 100];
    // Sent whole: the part read, then the rest.
    assert_eq!(world.unary(&big).await.unwrap(), big);
    assert_eq!(world.server.stats().message_sizes, vec![100]);

    world.auth.expire_access_tokens();
    let status = world.unary(&big).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // Not replayed, but the token was refreshed for the next call.
    tower_token_refresh_test_util_until(|| world.tokens.generation() == 2).await;
    assert_eq!(world.unary(&big).await.unwrap(), big);
    assert_eq!(world.server.stats().unauthenticated, 1);
    assert_eq!(world.auth.stats().refresh_grants, 1);
}

#[tokio::test]
async fn unauthenticated_in_trailers_refreshes_so_the_next_call_succeeds() {
    let world = grpc_world(HOUR, |b| b).await;
    world.auth.expire_access_tokens();
    // `Late` answers its message first and UNAUTHENTICATED in the
    // trailers: the response was handed out, so no replay.
    let status = world.call("/test.Echo/Late", b"late").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(world.server.stats().unauthenticated_in_trailers, 1);
    tower_token_refresh_test_util_until(|| world.tokens.generation() == 2).await;
    // The next call carries the new token: accepted at once.
    assert_eq!(
        world.call("/test.Echo/Late", b"again").await.unwrap(),
        "again"
    );
    let stats = world.server.stats();
    assert_eq!((stats.unauthenticated_in_trailers, stats.ok), (1, 1));
    assert_eq!(world.auth.stats().refresh_grants, 1);
}

#[tokio::test]
async fn a_trailers_rejection_of_a_replaced_token_does_not_refresh_again() {
    // No rate limit: a refresh asked for would start at its first poll.
    let world = grpc_world_with(HOUR, |b| b, |m| m.min_refresh_interval(Duration::ZERO)).await;
    world.auth.expire_access_tokens();
    let mut client = world.client.clone();
    client.ready().await.unwrap();
    let request = tonic::Request::new(Bytes::from_static(b"old"));
    let mut late = client
        .server_streaming(
            request,
            PathAndQuery::from_static("/test.Echo/Late"),
            BytesCodec,
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(late.message().await.unwrap().unwrap(), "old");
    // A newer token becomes current before the old one's trailers are read.
    world.tokens.refresh().await.unwrap();
    assert_eq!(world.auth.stats().refresh_grants, 1);
    let status = late.message().await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // The rejection was of a token already replaced: no second refresh.
    // One asked for as the trailers went by would have been spawned; on
    // this one-thread runtime, yielding lets it start.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(world.tokens.stats().refreshes_started, 1);
    assert_eq!(world.tokens.generation(), 2);
    assert_eq!(world.unary(b"new").await.unwrap(), "new");
}

#[tokio::test(start_paused = true)]
async fn a_streaming_call_gets_a_refreshed_token_proactively() {
    // The call starts after the first token expired: the layer waits for a
    // new one before the call goes out.
    let world = grpc_world(HOUR, |b| b).await;
    assert_eq!(world.stream(b"tick").await.unwrap().len(), 3);
    tokio::time::advance(HOUR + Duration::from_secs(1)).await;
    let messages = world.stream(b"tock").await.unwrap();
    assert_eq!(messages, vec![Bytes::from_static(b"tock"); 3]);
    // Refreshed before the call, not after a rejection of it.
    assert_eq!(world.server.stats().unauthenticated, 0);
    assert_eq!(world.auth.stats().refresh_grants, 1);
    assert_eq!(world.server.stats().ok, 2);
}

/// Waits, in bounded steps, until `cond` holds (the refresh that a
/// rejection starts is spawned).
async fn tower_token_refresh_test_util_until(cond: impl FnMut() -> bool) {
    support::until("the refresh ran", cond).await;
}

#[test]
fn the_watch_layer_is_a_layer() {
    // The stand-alone constructor, for a stack without the token layer's
    // helper (the header name defaults to Authorization).
    fn is_layer<L: Layer<Channel>>(_: &L) {}
    let tokens = TokenManager::builder(tower_token_refresh::source::from_fn(|_| async {
        Ok(tower_token_refresh::TokenSet::bearer("t"))
    }))
    .build();
    is_layer(&WatchTrailersLayer::new(tokens));
}
