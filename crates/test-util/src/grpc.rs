//! The in-process gRPC server (feature `grpc`).

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
};

use bytes::{Buf, BufMut, Bytes};
use tokio::task::JoinHandle;
use tonic::{
    Status,
    body::Body,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataMap,
    transport::server::TcpIncoming,
};
use tower::{Service, service_fn};

use crate::AuthServer;

/// A gRPC codec whose messages are raw bytes: no protobuf, no `protoc`.
#[derive(Clone, Copy, Debug, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}

/// What a [`GrpcServer`] has seen so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcStats {
    /// Every call, whatever its outcome.
    pub calls: u64,
    /// Calls answered with their messages and status OK.
    pub ok: u64,
    /// Calls answered UNAUTHENTICATED in the response headers
    /// (trailers-only), before any message.
    pub unauthenticated: u64,
    /// `Late` calls answered UNAUTHENTICATED in real trailers, after a
    /// message.
    pub unauthenticated_in_trailers: u64,
    /// Calls that came without `authorization: Bearer` metadata (also
    /// counted in `unauthenticated`).
    pub missing_credentials: u64,
    /// The request messages' sizes, in order, for calls that got past the
    /// token check.
    pub message_sizes: Vec<usize>,
}

struct Shared {
    auth: AuthServer,
    stats: Mutex<GrpcStats>,
}

impl Shared {
    fn stats(&self) -> MutexGuard<'_, GrpcStats> {
        // A panic elsewhere in a test must not hide this server's counts.
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bearer token in `metadata`, if the authorization server accepts it.
    fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            });
        match token {
            Some(token) if self.auth.is_access_token_valid(token) => Ok(()),
            Some(_) => Err(Status::unauthenticated(
                "the access token expired or was revoked",
            )),
            None => {
                self.stats().missing_credentials += 1;
                Err(Status::unauthenticated("no bearer token"))
            }
        }
    }
}

/// A gRPC server on 127.0.0.1 (tonic, HTTP/2 without TLS) that accepts the
/// access tokens of one [`AuthServer`], sent as `authorization: Bearer`
/// metadata. Messages are raw bytes ([`BytesCodec`]). Methods:
///
/// | method | answer |
/// |---|---|
/// | `/test.Echo/Unary` | the request message |
/// | `/test.Echo/Stream` | the request message three times, a second apart |
/// | `/test.Echo/Late` | the request message, then the token is checked: OK, or UNAUTHENTICATED in real trailers |
///
/// A call without a valid token gets UNAUTHENTICATED (grpc-status 16,
/// HTTP 200) in the response headers, trailers-only, as gRPC servers
/// answer; `Late` checks the token only after its first message, so its
/// UNAUTHENTICATED comes in real trailers after a body.
///
/// Clones share the server; it stops when the last clone is dropped.
///
/// # Example
///
/// ```
/// use tower_token_refresh_test_util::{AuthConfig, AuthServer, GrpcServer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// let auth = AuthServer::start(AuthConfig::default()).await?;
/// let grpc = GrpcServer::start(&auth).await?;
/// assert_eq!(grpc.url(), format!("http://{}", grpc.addr()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct GrpcServer {
    shared: Arc<Shared>,
    task: Arc<Task>,
}

struct Task {
    addr: SocketAddr,
    handle: JoinHandle<()>,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcServer")
            .field("addr", &self.task.addr)
            .finish_non_exhaustive()
    }
}

impl GrpcServer {
    /// Starts the server on 127.0.0.1 on a free port, in a task on the
    /// current runtime (so a paused test clock applies to it).
    ///
    /// # Errors
    ///
    /// When the listening socket cannot be bound.
    pub async fn start(auth: &AuthServer) -> std::io::Result<GrpcServer> {
        let shared = Arc::new(Shared {
            auth: auth.clone(),
            stats: Mutex::default(),
        });
        let incoming = TcpIncoming::bind((Ipv4Addr::LOCALHOST, 0).into())?;
        let addr = incoming.local_addr()?;
        let routes = Routes {
            shared: shared.clone(),
        };
        let handle = tokio::spawn(async move {
            // The server ends only with an accept error; the test sees it as
            // failed calls.
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming(routes, incoming)
                .await;
        });
        Ok(GrpcServer {
            shared,
            task: Arc::new(Task { addr, handle }),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.task.addr
    }

    /// `http://127.0.0.1:PORT`, for a tonic `Channel` or a connection origin.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// What the server has seen so far.
    pub fn stats(&self) -> GrpcStats {
        self.shared.stats().clone()
    }
}

#[derive(Clone)]
struct Routes {
    shared: Arc<Shared>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<http::Request<Body>> for Routes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            shared.stats().calls += 1;
            let mut grpc = tonic::server::Grpc::new(BytesCodec);
            let path = request.uri().path().to_owned();
            let response = match path.as_str() {
                "/test.Echo/Unary" => {
                    let shared = shared.clone();
                    let unary = service_fn(move |call: tonic::Request<Bytes>| {
                        let shared = shared.clone();
                        async move {
                            shared.authorize(&call)?;
                            shared.stats().ok += 1;
                            Ok::<_, Status>(tonic::Response::new(call.into_inner()))
                        }
                    });
                    grpc.unary(unary, request).await
                }
                "/test.Echo/Stream" => {
                    let shared = shared.clone();
                    let stream = service_fn(move |call: tonic::Request<Bytes>| {
                        let shared = shared.clone();
                        async move {
                            shared.authorize(&call)?;
                            shared.stats().ok += 1;
                            let message = call.into_inner();
                            let messages = futures_util::stream::unfold(0u8, move |sent| {
                                let message = message.clone();
                                async move {
                                    if sent == 3 {
                                        return None;
                                    }
                                    if sent > 0 {
                                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                                    }
                                    Some((Ok::<_, Status>(message), sent + 1))
                                }
                            });
                            Ok::<_, Status>(tonic::Response::new(Box::pin(messages)))
                        }
                    });
                    grpc.server_streaming(stream, request).await
                }
                "/test.Echo/Late" => {
                    let shared = shared.clone();
                    let late = service_fn(move |call: tonic::Request<Bytes>| {
                        let shared = shared.clone();
                        async move {
                            let verdict = shared.check(call.metadata());
                            shared.stats().message_sizes.push(call.get_ref().len());
                            let first = Ok::<_, Status>(call.into_inner());
                            let last = match verdict {
                                Ok(()) => {
                                    shared.stats().ok += 1;
                                    None
                                }
                                Err(status) => {
                                    shared.stats().unauthenticated_in_trailers += 1;
                                    Some(Err(status))
                                }
                            };
                            let messages =
                                futures_util::stream::iter(std::iter::once(first).chain(last));
                            Ok::<_, Status>(tonic::Response::new(messages))
                        }
                    });
                    grpc.server_streaming(late, request).await
                }
                _ => Status::unimplemented(path).into_http(),
            };
            Ok(response)
        })
    }
}

impl Shared {
    /// Checks the call's token, counting the outcome.
    fn authorize(&self, call: &tonic::Request<Bytes>) -> Result<(), Status> {
        let verdict = self.check(call.metadata());
        let mut stats = self.stats();
        match verdict {
            Ok(()) => stats.message_sizes.push(call.get_ref().len()),
            Err(_) => stats.unauthenticated += 1,
        }
        verdict
    }
}
