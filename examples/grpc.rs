//! gRPC with tonic: a tonic client whose calls carry OAuth2 access tokens,
//! refreshed once for all concurrent calls, and a unary call rejected with
//! `UNAUTHENTICATED` replayed with the new token.
//!
//! The stack, from the outside in: tonic's `Grpc` client, the token layer
//! with [`BufferBody`] (tonic's request body cannot be copied: it is read
//! into memory, up to 64 KiB, so that it can be replayed), the trailers
//! watcher (`UNAUTHENTICATED` after a body refreshes for the next call), and
//! a tonic `Channel`. No protobuf: the messages are raw bytes, through
//! test-util's `BytesCodec`.
//!
//! Starts the in-process authorization server (3-second access tokens) and
//! a tonic server on 127.0.0.1, makes four rounds of calls (eight
//! concurrent unary calls and a server-streaming call each), revokes every
//! access token before rounds two and three and lets the token expire
//! before round four. Exits non-zero unless every call succeeded and the
//! authorization server granted exactly one refresh per revocation or
//! expiry.
//!
//! ```text
//! cargo run --example grpc
//! ```

use std::{process::ExitCode, time::Duration};

use bytes::Bytes;
use http::uri::PathAndQuery;
use tonic::{body::Body, client::Grpc, transport::Channel};
use tower::ServiceBuilder;
use tower_token_refresh::{
    BufferBody, RejectedToken, ServiceClient, TokenManager, TokenRefreshLayer,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_test_util::{AuthConfig, AuthServer, BytesCodec, GrpcServer, hyper_client};

const LIFETIME: Duration = Duration::from_secs(3);
const CONCURRENT: usize = 8;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<ExitCode, BoxError> {
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(LIFETIME)).await?;
    let server = GrpcServer::start(&auth).await?;

    let grant = RefreshTokenGrant::new(
        auth.token_url().parse()?,
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(hyper_client()),
    );
    // Short-lived tokens: refresh when they expire, not ahead of time, so
    // that each expiry is one refresh.
    let tokens = TokenManager::builder(grant)
        .initial(auth.login().token_set())
        .refresh_ahead(Duration::ZERO)
        .expiry_leeway(Duration::from_millis(200))
        .build();

    let channel = Channel::from_shared(server.url())?.connect().await?;
    // tonic's requests carry `/package.Service/Method` URIs: the channel's
    // one connection is the origin the token goes to.
    let auth_layer = TokenRefreshLayer::new(tokens.clone())
        .connection_origin(server.url().parse()?)
        .classify(RejectedToken.also_grpc());
    let watch = auth_layer.watch_trailers();
    let client = Grpc::new(
        ServiceBuilder::new()
            .layer(auth_layer.buffer(BufferBody::new(Body::new)))
            .layer(watch)
            .service(channel),
    );

    let mut failed = 0;
    let mut calls = 0;
    let (mut revocations, mut expiries) = (0, 0);
    for round in 1..=4 {
        match round {
            2 | 3 => {
                auth.expire_access_tokens();
                revocations += 1;
                println!("round {round}: every access token revoked");
            }
            4 => {
                tokio::time::sleep(LIFETIME + Duration::from_millis(200)).await;
                expiries += 1;
                println!("round {round}: the access token expired");
            }
            _ => {}
        }
        let mut unary = Vec::new();
        for i in 0..CONCURRENT {
            let mut client = client.clone();
            unary.push(tokio::spawn(async move {
                let message = Bytes::from(format!("round {round} call {i}"));
                client.ready().await.map_err(tonic::Status::from_error)?;
                let answer = client
                    .unary(
                        tonic::Request::new(message.clone()),
                        PathAndQuery::from_static("/test.Echo/Unary"),
                        BytesCodec,
                    )
                    .await?;
                Ok::<_, tonic::Status>(answer.into_inner() == message)
            }));
        }
        let mut stream_client = client.clone();
        let streamed = async {
            stream_client
                .ready()
                .await
                .map_err(tonic::Status::from_error)?;
            let mut stream = stream_client
                .server_streaming(
                    tonic::Request::new(Bytes::from_static(b"tick")),
                    PathAndQuery::from_static("/test.Echo/Stream"),
                    BytesCodec,
                )
                .await?
                .into_inner();
            let mut messages = 0;
            while stream.message().await?.is_some() {
                messages += 1;
            }
            Ok::<_, tonic::Status>(messages == 3)
        }
        .await;
        let mut outcomes = vec![streamed];
        for call in unary {
            outcomes.push(call.await?);
        }
        for outcome in outcomes {
            calls += 1;
            match outcome {
                Ok(true) => {}
                Ok(false) => {
                    failed += 1;
                    eprintln!("round {round}: a call answered the wrong messages");
                }
                Err(status) => {
                    failed += 1;
                    eprintln!("round {round}: a call failed: {status}");
                }
            }
        }
    }

    let grants = auth.stats().refresh_grants;
    let stats = server.stats();
    println!(
        "{calls} calls, {failed} failed; {} rejected by the server and replayed; \
         {grants} refresh grants for {revocations} revocations and {expiries} expiry",
        stats.unauthenticated
    );
    if failed > 0 || grants != revocations + expiries {
        eprintln!(
            "FAILED: expected every call to succeed and one refresh per revocation or expiry"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
