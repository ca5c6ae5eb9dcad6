//! Future types.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{Request, Response, Uri};
use pin_project_lite::pin_project;
use tower::Service;
use tower_token_refresh_core::{BoxError, Error, RefreshFuture};

use crate::{Classify, Origin, ReplayPolicy, layer::Shared};

/// What an authorized request needs once it is sent: where to report a
/// rejection, how to recognize one, and which token generation it carried.
struct Auth<C> {
    shared: Arc<Shared>,
    classifier: C,
    generation: u64,
}

/// The service clone that sends a replay, and the copy it sends.
type Replay<S, B> = Option<(S, Request<B>)>;

pin_project! {
    /// Response future of [`TokenRefresh`](crate::TokenRefresh).
    pub struct ResponseFuture<S, B, P, C>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future, S, B, P>,
        auth: Option<Auth<C>>,
    }
}

pin_project! {
    // Each state owns what the next needs, so the future stays about as
    // small as the inner future plus one request.
    #[project = StateProj]
    enum State<F, S, B, P> {
        // No usable token yet: waiting for the shared refresh. `service` is
        // the one `poll_ready` readied; the replay copy is made once the
        // token is on the request.
        // (Boxed: a cold path, which must not make every future larger.)
        Waiting {
            refresh: RefreshFuture,
            service: Option<S>,
            request: Option<Box<Request<B>>>,
            policy: P,
        },
        // The first attempt is in flight.
        Sent { #[pin] future: F, replay: Replay<S, B> },
        // The token was rejected: waiting for a newer one.
        Refreshing { refresh: RefreshFuture, replay: Replay<S, B> },
        // A newer token is on the copy: waiting for the clone to be ready.
        ReadyingReplay { replay: Replay<S, B> },
        // The one replay is in flight; its response is final.
        Replayed { #[pin] future: F },
        // Out of scope: the inner service's future, untouched.
        PassThrough { #[pin] future: F },
        Failed { error: Option<Error> },
    }
}

impl<S, B, P, C> fmt::Debug for ResponseFuture<S, B, P, C>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } => "waiting for token",
            State::Sent { .. } => "sent",
            State::Refreshing { .. } => "refreshing",
            State::ReadyingReplay { .. } => "readying replay",
            State::Replayed { .. } => "replayed",
            State::PassThrough { .. } => "pass-through",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

/// Whether the response came from another origin than the request was
/// sent to: tower-http's `FollowRedirect`, inside this layer, followed a
/// redirect and records the last URI on the response. The replay copy holds
/// the URI the request was sent to; without one, the configured scope
/// decides (and with no scope, the response counts as ours).
#[cfg(feature = "follow-redirect")]
fn answered_elsewhere<R>(
    response: &Response<R>,
    sent_to: Option<&Uri>,
    origins: &[Origin],
) -> bool {
    use tower_http::follow_redirect::RequestUri;
    let Some(RequestUri(last)) = response.extensions().get::<RequestUri>() else {
        return false;
    };
    match sent_to {
        Some(sent_to) => !crate::scope::same_origin(sent_to, last),
        None => !origins.is_empty() && !origins.iter().any(|o| o.matches(last)),
    }
}

#[cfg(not(feature = "follow-redirect"))]
fn answered_elsewhere<R>(_: &Response<R>, _: Option<&Uri>, _: &[Origin]) -> bool {
    false
}

fn broken() -> BoxError {
    "tower-token-refresh: response future polled after completion".into()
}

impl<S, B, P, C> ResponseFuture<S, B, P, C>
where
    S: Service<Request<B>>,
{
    pub(crate) fn pass_through(future: S::Future) -> Self {
        ResponseFuture {
            state: State::PassThrough { future },
            auth: None,
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
            auth: None,
        }
    }

    pub(crate) fn sent(
        future: S::Future,
        generation: u64,
        replay: Replay<S, B>,
        shared: Arc<Shared>,
        classifier: C,
    ) -> Self {
        ResponseFuture {
            state: State::Sent { future, replay },
            auth: Some(Auth {
                shared,
                classifier,
                generation,
            }),
        }
    }

    pub(crate) fn waiting(
        refresh: RefreshFuture,
        readied: S,
        request: Request<B>,
        policy: P,
        shared: Arc<Shared>,
        classifier: C,
    ) -> Self {
        ResponseFuture {
            state: State::Waiting {
                refresh,
                service: Some(readied),
                request: Some(Box::new(request)),
                policy,
            },
            auth: Some(Auth {
                shared,
                classifier,
                generation: 0,
            }),
        }
    }
}

/// A response rejected the token: asks for a newer one and returns the state
/// that waits for it with the replay copy, or gives the response back when
/// it is final (no copy to replay, or it came from another origin).
#[cold]
fn on_rejection<F, S, B, P, C, R>(
    auth: &Auth<C>,
    response: Response<R>,
    replay: &mut Replay<S, B>,
) -> Result<State<F, S, B, P>, Response<R>> {
    let sent_to = replay.as_ref().map(|(_, copy)| copy.uri());
    if answered_elsewhere(&response, sent_to, &auth.shared.origins) {
        // A redirect led elsewhere (FollowRedirect inside this layer): that
        // origin never saw our token.
        tracing::debug!("401 from another origin after a redirect; not ours");
        return Err(response);
    }
    let refresh = auth.shared.manager.refresh_if(auth.generation);
    let Some(replay) = replay.take() else {
        // No copy to replay: the 401 goes back as it is, and the refresh
        // (spawned) serves later requests.
        tracing::debug!(
            generation = auth.generation,
            "token rejected; no replay copy"
        );
        return Err(response);
    };
    tracing::debug!(
        generation = auth.generation,
        "token rejected; replaying after refresh"
    );
    Ok(State::Refreshing {
        refresh,
        replay: Some(replay),
    })
}

impl<S, B, R, P, C> Future for ResponseFuture<S, B, P, C>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    P: ReplayPolicy<B>,
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
                StateProj::Waiting {
                    refresh,
                    service,
                    request,
                    policy,
                } => {
                    let token = ready!(Pin::new(refresh).poll(cx))?;
                    let auth = this.auth.as_mut().ok_or_else(broken)?;
                    let (Some(mut service), Some(request)) = (service.take(), request.take())
                    else {
                        return Poll::Ready(Err(broken()));
                    };
                    let mut request = *request;
                    let replay = policy
                        .clone_request(&request)
                        .map(|copy| (service.clone(), copy));
                    auth.generation = token.generation();
                    auth.shared.authorize(&mut request, token.into_header());
                    // `service` is the one `poll_ready` readied before `call`.
                    let future = service.call(request);
                    this.state.set(State::Sent { future, replay });
                }
                StateProj::Sent { future, replay } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    let auth = this.auth.as_ref().ok_or_else(broken)?;
                    if !auth.classifier.is_rejected(&response) {
                        return Poll::Ready(Ok(response));
                    }
                    match on_rejection(auth, response, replay) {
                        Ok(refreshing) => this.state.set(refreshing),
                        Err(response) => return Poll::Ready(Ok(response)),
                    }
                }
                StateProj::Refreshing { refresh, replay } => {
                    let token = ready!(Pin::new(refresh).poll(cx))?;
                    let auth = this.auth.as_mut().ok_or_else(broken)?;
                    let (service, mut request) = replay.take().ok_or_else(broken)?;
                    auth.generation = token.generation();
                    auth.shared.authorize(&mut request, token.into_header());
                    this.state.set(State::ReadyingReplay {
                        replay: Some((service, request)),
                    });
                }
                StateProj::ReadyingReplay { replay } => {
                    let (service, _) = replay.as_mut().ok_or_else(broken)?;
                    ready!(service.poll_ready(cx)).map_err(Into::into)?;
                    let (mut service, request) = replay.take().ok_or_else(broken)?;
                    if let Some(auth) = this.auth.as_ref() {
                        auth.shared.manager.record_replay();
                    }
                    let future = service.call(request);
                    this.state.set(State::Replayed { future });
                }
            }
        }
    }
}
