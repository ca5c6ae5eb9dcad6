//! The tower adapter: `reqwest::Client` as a `Service<http::Request<B>>`.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tower::Service;

/// `reqwest::Client` as a `tower::Service<http::Request<B>>`, for any body
/// `B` reqwest can send (`Bytes`, `String`, `Vec<u8>`, `&'static str`,
/// `reqwest::Body`), answering `http::Response<reqwest::Body>`.
///
/// With it, [`TokenRefreshLayer`](tower_token_refresh::TokenRefreshLayer)
/// and tower-http middleware sit on top of reqwest. The request goes
/// through reqwest's own conversion (`reqwest::Request::try_from`, which
/// needs an absolute URI) and its client, redirects, timeouts and TLS
/// included; a request it cannot convert fails with reqwest's builder
/// error before anything is sent.
///
/// Under the layer's default replay policy
/// ([`CloneBody`](tower_token_refresh::CloneBody)), send `Bytes`, `String`
/// or `Vec<u8>` bodies: they are copied for a replay. `reqwest::Body` is not
/// a [`ReplayBody`](tower_token_refresh::ReplayBody) (reqwest keeps its
/// cheap copy private); with it, use
/// [`NoReplay`](tower_token_refresh::NoReplay), and a rejected request's 401
/// is returned as it is, the token still refreshed.
///
/// It also serves as the token endpoint's client: wrap it in
/// [`ServiceClient::with_body`](tower_token_refresh::ServiceClient::with_body)
/// with `Bytes` bodies (see the crate docs).
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use tower::ServiceBuilder;
/// use tower_token_refresh::{TokenManager, TokenRefreshLayer, TokenSet, source};
/// use tower_token_refresh_reqwest::ReqwestService;
///
/// # fn main() -> Result<(), tower_token_refresh::InvalidOrigin> {
/// # let tokens = TokenManager::builder(source::from_fn(|_| async { Ok(TokenSet::bearer("t")) })).build();
/// let client = ServiceBuilder::new()
///     .layer(TokenRefreshLayer::new(tokens).allow_origin("https://api.example.com".parse()?))
///     .service(ReqwestService::new(reqwest::Client::new()));
/// // `client` is a `Service<http::Request<Bytes>>`.
/// # fn is_service<S: tower::Service<http::Request<Bytes>>>(_: &S) {}
/// # is_service(&client);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ReqwestService {
    client: reqwest::Client,
}

impl ReqwestService {
    /// Sends requests through `client`.
    pub fn new(client: reqwest::Client) -> Self {
        ReqwestService { client }
    }

    /// The client.
    pub fn get_ref(&self) -> &reqwest::Client {
        &self.client
    }

    /// Unwraps the client.
    pub fn into_inner(self) -> reqwest::Client {
        self.client
    }
}

impl From<reqwest::Client> for ReqwestService {
    fn from(client: reqwest::Client) -> Self {
        ReqwestService::new(client)
    }
}

impl<B: Into<reqwest::Body>> Service<http::Request<B>> for ReqwestService {
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<reqwest::Request>::poll_ready(&mut self.client, cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match reqwest::Request::try_from(request) {
            Ok(request) => ResponseFuture {
                state: State::Sending {
                    future: self.client.call(request),
                },
            },
            Err(error) => ResponseFuture {
                state: State::Failed { error: Some(error) },
            },
        }
    }
}

type Pending = <reqwest::Client as Service<reqwest::Request>>::Future;

pin_project! {
    /// Response future of [`ReqwestService`].
    #[derive(Debug)]
    pub struct ResponseFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State {
        Sending { #[pin] future: Pending },
        Failed { error: Option<reqwest::Error> },
    }
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<reqwest::Body>, reqwest::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Sending { future } => future.poll(cx).map_ok(http::Response::from),
            StateProj::Failed { error } => match error.take() {
                Some(error) => Poll::Ready(Err(error)),
                None => panic!("ReqwestService's response future polled after completion"),
            },
        }
    }
}
