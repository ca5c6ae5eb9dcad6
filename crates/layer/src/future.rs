//! Future types.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::Service;
use tower_token_refresh_core::{BoxError, Error, RefreshFuture};

use crate::{Classify, layer::Shared};

/// What an authorized request needs after it is sent.
struct Ctx<S, B, C> {
    shared: Arc<Shared>,
    classifier: C,
    generation: u64,
    /// The readied service (while waiting for a token), then the clone that
    /// sends the replay.
    service: Option<S>,
    /// A request waiting for its token.
    request: Option<Request<B>>,
    /// The copy to replay if the first is rejected.
    replay: Option<Request<B>>,
}

pin_project! {
    /// Response future of [`TokenRefresh`](crate::TokenRefresh).
    pub struct ResponseFuture<S, B, C>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future>,
        ctx: Option<Ctx<S, B, C>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // No usable token yet: waiting for the shared refresh.
        Waiting { refresh: RefreshFuture },
        // The first attempt is in flight.
        Sent { #[pin] future: F },
        // The token was rejected: waiting for a newer one.
        Refreshing { refresh: RefreshFuture },
        // A newer token is on the copy: waiting for the service to be ready.
        ReadyingReplay,
        // The one replay is in flight; its response is final.
        Replayed { #[pin] future: F },
        // Out of scope: the inner service's future, untouched.
        PassThrough { #[pin] future: F },
        Failed { error: Option<Error> },
    }
}

impl<S, B, C> fmt::Debug for ResponseFuture<S, B, C>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } => "waiting for token",
            State::Sent { .. } => "sent",
            State::Refreshing { .. } => "refreshing",
            State::ReadyingReplay => "readying replay",
            State::Replayed { .. } => "replayed",
            State::PassThrough { .. } => "pass-through",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

fn broken() -> BoxError {
    "tower-token-refresh: response future polled after completion".into()
}

impl<S, B, C> ResponseFuture<S, B, C>
where
    S: Service<Request<B>>,
    C: Clone,
{
    pub(crate) fn pass_through(future: S::Future) -> Self {
        ResponseFuture {
            state: State::PassThrough { future },
            ctx: None,
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
            ctx: None,
        }
    }

    pub(crate) fn sent(
        future: S::Future,
        generation: u64,
        replay: Option<(S, Request<B>)>,
        shared: &Arc<Shared>,
        classifier: &C,
    ) -> Self {
        let (service, replay) = match replay {
            Some((s, r)) => (Some(s), Some(r)),
            None => (None, None),
        };
        ResponseFuture {
            state: State::Sent { future },
            ctx: Some(Ctx {
                shared: shared.clone(),
                classifier: classifier.clone(),
                generation,
                service,
                request: None,
                replay,
            }),
        }
    }

    pub(crate) fn waiting(
        refresh: RefreshFuture,
        readied: S,
        request: Request<B>,
        replay: Option<Request<B>>,
        shared: &Arc<Shared>,
        classifier: &C,
    ) -> Self {
        ResponseFuture {
            state: State::Waiting { refresh },
            ctx: Some(Ctx {
                shared: shared.clone(),
                classifier: classifier.clone(),
                generation: 0,
                service: Some(readied),
                request: Some(request),
                replay,
            }),
        }
    }
}

impl<S, B, R, C> Future for ResponseFuture<S, B, C>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    C: Classify,
{
    type Output = Result<Response<R>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::PassThrough { future } | StateProj::Replayed { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().map_or_else(broken, Into::into)));
                }
                StateProj::Waiting { refresh } => {
                    let outcome = ready!(Pin::new(refresh).poll(cx));
                    let auth = match outcome {
                        Ok(auth) => auth,
                        Err(e) => return Poll::Ready(Err(e.into())),
                    };
                    let ctx = this.ctx.as_mut().ok_or_else(broken)?;
                    let (mut service, mut request) = match (ctx.service.take(), ctx.request.take())
                    {
                        (Some(s), Some(r)) => (s, r),
                        _ => return Poll::Ready(Err(broken())),
                    };
                    ctx.generation = auth.generation();
                    request
                        .headers_mut()
                        .insert(ctx.shared.header_name.clone(), auth.into_header());
                    if ctx.replay.is_some() {
                        ctx.service = Some(service.clone());
                    }
                    // `service` is the one `poll_ready` readied before `call`.
                    let future = service.call(request);
                    this.state.set(State::Sent { future });
                }
                StateProj::Sent { future } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    let ctx = this.ctx.as_mut().ok_or_else(broken)?;
                    if !ctx.classifier.is_rejected(&response) {
                        return Poll::Ready(Ok(response));
                    }
                    let refresh = ctx.shared.manager.refresh_if(ctx.generation);
                    if ctx.replay.is_none() || ctx.service.is_none() {
                        // No copy to replay: the 401 goes back as it is,
                        // and the refresh (spawned) serves later requests.
                        tracing::debug!(
                            generation = ctx.generation,
                            "token rejected; no replay copy"
                        );
                        drop(refresh);
                        return Poll::Ready(Ok(response));
                    }
                    tracing::debug!(
                        generation = ctx.generation,
                        "token rejected; replaying after refresh"
                    );
                    drop(response);
                    this.state.set(State::Refreshing { refresh });
                }
                StateProj::Refreshing { refresh } => {
                    let auth = ready!(Pin::new(refresh).poll(cx)).map_err(BoxError::from)?;
                    let ctx = this.ctx.as_mut().ok_or_else(broken)?;
                    let replay = ctx.replay.as_mut().ok_or_else(broken)?;
                    ctx.generation = auth.generation();
                    replay
                        .headers_mut()
                        .insert(ctx.shared.header_name.clone(), auth.into_header());
                    this.state.set(State::ReadyingReplay);
                }
                StateProj::ReadyingReplay => {
                    let ctx = this.ctx.as_mut().ok_or_else(broken)?;
                    let service = ctx.service.as_mut().ok_or_else(broken)?;
                    ready!(service.poll_ready(cx)).map_err(Into::into)?;
                    let request = ctx.replay.take().ok_or_else(broken)?;
                    ctx.shared.manager.record_replay();
                    let future = service.call(request);
                    this.state.set(State::Replayed { future });
                }
            }
        }
    }
}
