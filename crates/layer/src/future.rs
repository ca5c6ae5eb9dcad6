//! Future types.

use std::{
    fmt,
    future::Future,
    mem,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response, Uri};
use pin_project_lite::pin_project;
use tower::Service;
use tower_token_refresh_core::{BoxError, Error, RefreshFuture};

use crate::{Classify, ReplayPolicy, layer::Shared, origin::OriginPolicy};

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
        // The request in flight, first or replay. Kept apart from the rest
        // so that the common poll (the first attempt answers, and not with
        // a rejection) touches only this and one flag of `step`.
        #[pin]
        attempt: Attempt<S::Future>,
        step: Step<S, B, P, C>,
    }
}

pin_project! {
    #[project = AttemptProj]
    enum Attempt<F> {
        InFlight { #[pin] future: F },
        Idle,
    }
}

/// Where the request is, apart from the attempt in flight.
enum Step<S, B, P, C> {
    /// The attempt carries a token: a response that rejects it is replayed
    /// once (when there is a copy) with a newer one.
    Check {
        auth: Auth<C>,
        replay: Replay<S, B>,
    },
    /// The attempt's response is final: out of scope, or the replay.
    Final,
    /// No usable token yet: waiting for the shared refresh. `service` is the
    /// one `poll_ready` readied; the replay copy is made once the token is
    /// on the request. (The request is boxed: a cold path, which must not
    /// make every future larger.)
    Waiting {
        auth: Auth<C>,
        refresh: RefreshFuture,
        service: S,
        request: Box<Request<B>>,
        policy: P,
    },
    /// The token was rejected: waiting for a newer one.
    Refreshing {
        auth: Auth<C>,
        refresh: RefreshFuture,
        service: S,
        request: Request<B>,
    },
    /// A newer token is on the copy: waiting for the clone to be ready.
    ReadyingReplay {
        service: S,
        request: Request<B>,
    },
    Failed(Error),
    /// Finished, or between two steps.
    Done,
}

impl<S, B, P, C> fmt::Debug for ResponseFuture<S, B, P, C>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match (&self.attempt, &self.step) {
            (_, Step::Waiting { .. }) => "waiting for token",
            (Attempt::InFlight { .. }, Step::Check { .. }) => "sent",
            (_, Step::Refreshing { .. }) => "refreshing",
            (_, Step::ReadyingReplay { .. }) => "readying replay",
            (Attempt::InFlight { .. }, _) => "sent, response final",
            (_, Step::Failed(_)) => "failed",
            _ => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

/// Whether the response came from another origin than the request was
/// sent to: tower-http's `FollowRedirect`, inside this layer, followed a
/// redirect and records the last URI on the response. The replay copy holds
/// the URI the request was sent to; without one, the allowed origins
/// decide (and with any origin allowed, the response counts as ours).
#[cfg(feature = "follow-redirect")]
fn answered_elsewhere<R>(
    response: &Response<R>,
    sent_to: Option<&Uri>,
    origins: &OriginPolicy,
) -> bool {
    use tower_http::follow_redirect::RequestUri;
    let Some(RequestUri(last)) = response.extensions().get::<RequestUri>() else {
        return false;
    };
    match sent_to {
        Some(sent_to) => !crate::origin::same_origin(sent_to, last),
        None => !origins.may_answer(last),
    }
}

#[cfg(not(feature = "follow-redirect"))]
fn answered_elsewhere<R>(_: &Response<R>, _: Option<&Uri>, _: &OriginPolicy) -> bool {
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
            attempt: Attempt::InFlight { future },
            step: Step::Final,
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        ResponseFuture {
            attempt: Attempt::Idle,
            step: Step::Failed(error),
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
            attempt: Attempt::InFlight { future },
            step: Step::Check {
                auth: Auth {
                    shared,
                    classifier,
                    generation,
                },
                replay,
            },
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
            attempt: Attempt::Idle,
            step: Step::Waiting {
                auth: Auth {
                    shared,
                    classifier,
                    generation: 0,
                },
                refresh,
                service: readied,
                request: Box::new(request),
                policy,
            },
        }
    }
}

/// A response rejected the token: asks for a newer one and returns the step
/// that waits for it with the replay copy, or gives the response back when
/// it is final (no copy to replay, or it came from another origin).
#[cold]
fn on_rejection<S, B, P, C, R>(
    auth: Auth<C>,
    response: Response<R>,
    replay: Replay<S, B>,
) -> Result<Step<S, B, P, C>, Response<R>> {
    let sent_to = replay.as_ref().map(|(_, copy)| copy.uri());
    if answered_elsewhere(&response, sent_to, &auth.shared.origins) {
        // A redirect led elsewhere (FollowRedirect inside this layer): that
        // origin never saw our token.
        tracing::debug!("401 from another origin after a redirect; not ours");
        return Err(response);
    }
    let Some((service, request)) = replay else {
        // No copy to replay: the 401 goes back as it is, and the refresh
        // (spawned) serves later requests.
        drop(auth.shared.manager.refresh_if(auth.generation));
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
    let refresh = auth.shared.manager.replay_if(auth.generation);
    Ok(Step::Refreshing {
        auth,
        refresh,
        service,
        request,
    })
}

/// The attempt's response rejected its token: moves `step` on to waiting for
/// a newer one, or gives the response back when it is final.
#[cold]
#[inline(never)]
fn reject<S, B, P, C, R>(
    step: &mut Step<S, B, P, C>,
    response: Response<R>,
) -> Option<Response<R>> {
    let Step::Check { auth, replay } = mem::replace(step, Step::Done) else {
        return Some(response);
    };
    match on_rejection(auth, response, replay) {
        Ok(next) => {
            *step = next;
            None
        }
        Err(response) => Some(response),
    }
}

impl<S, B, R, P, C> Future for ResponseFuture<S, B, P, C>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    P: ReplayPolicy<B>,
    C: Classify,
{
    type Output = Result<Response<R>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The common poll, kept small: the first attempt answers, and not
        // with a rejection. Everything else is out of line.
        if let Some(output) = self.as_mut().poll_attempt(cx) {
            return output;
        }
        self.poll_steps(cx)
    }
}

impl<S, B, R, P, C> ResponseFuture<S, B, P, C>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    P: ReplayPolicy<B>,
    C: Classify,
{
    /// Polls the attempt in flight, if any: `Some` with the future's output,
    /// or `None` when there is no attempt (or a rejection of it moved on to
    /// a step that waits for a newer token).
    #[inline(always)]
    fn poll_attempt(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Option<Poll<Result<Response<R>, BoxError>>> {
        let mut this = self.project();
        let AttemptProj::InFlight { future } = this.attempt.as_mut().project() else {
            return None;
        };
        let result = match future.poll(cx) {
            Poll::Pending => return Some(Poll::Pending),
            Poll::Ready(result) => result,
        };
        this.attempt.set(Attempt::Idle);
        let response = match result {
            Ok(response) => response,
            Err(error) => return Some(Poll::Ready(Err(error.into()))),
        };
        let rejected = match this.step {
            Step::Check { auth, .. } => auth.classifier.is_rejected(&response),
            _ => false,
        };
        if !rejected {
            // The step stays: a finished attempt with no step to take is
            // what "done" is (polling again finds no attempt and a `Check`
            // or `Final` step, and reports the misuse). Dropping it here
            // would cost a second pass over the step on the common path.
            return Some(Poll::Ready(Ok(response)));
        }
        reject(this.step, response).map(|response| Poll::Ready(Ok(response)))
    }

    /// Every step but the common one: a token to wait for, a replay to
    /// ready and send, an error to return.
    #[inline(never)]
    fn poll_steps(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<R>, BoxError>> {
        loop {
            if let Some(output) = self.as_mut().poll_attempt(cx) {
                return output;
            }
            let mut this = self.as_mut().project();
            // Each step is polled in place and taken apart only once it is
            // ready to give way to the next; on an error, or a step that has
            // none, the future is done.
            let ready = match &mut *this.step {
                Step::Waiting { refresh, .. } | Step::Refreshing { refresh, .. } => {
                    match Pin::new(refresh).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(token) => token.map(Some).map_err(BoxError::from),
                    }
                }
                Step::ReadyingReplay { service, .. } => match service.poll_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(ready) => ready.map(|()| None).map_err(Into::into),
                },
                _ => Ok(None),
            };
            let step = mem::replace(this.step, Step::Done);
            let token = match ready {
                Ok(token) => token,
                Err(error) => return Poll::Ready(Err(error)),
            };
            match (step, token) {
                (
                    Step::Waiting {
                        mut auth,
                        mut service,
                        request,
                        policy,
                        ..
                    },
                    Some(token),
                ) => {
                    let mut request = *request;
                    let replay = policy
                        .clone_request(&request)
                        .map(|copy| (service.clone(), copy));
                    auth.generation = token.generation();
                    auth.shared.authorize(&mut request, token.into_header());
                    // `service` is the one `poll_ready` readied before `call`.
                    this.attempt.set(Attempt::InFlight {
                        future: service.call(request),
                    });
                    *this.step = Step::Check { auth, replay };
                }
                (
                    Step::Refreshing {
                        auth,
                        service,
                        mut request,
                        ..
                    },
                    Some(token),
                ) => {
                    auth.shared.authorize(&mut request, token.into_header());
                    *this.step = Step::ReadyingReplay { service, request };
                }
                (
                    Step::ReadyingReplay {
                        mut service,
                        request,
                    },
                    None,
                ) => {
                    this.attempt.set(Attempt::InFlight {
                        future: service.call(request),
                    });
                    *this.step = Step::Final;
                }
                (Step::Failed(error), _) => return Poll::Ready(Err(error.into())),
                _ => return Poll::Ready(Err(broken())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, future::Ready, time::Duration};

    use http::StatusCode;
    use tower::{Layer, service_fn};
    use tower_token_refresh_core::{TokenManager, TokenSet, source};

    use super::*;
    use crate::{NoReplay, TokenRefreshLayer};

    fn manager() -> TokenManager {
        TokenManager::builder(source::from_fn(|_| async {
            Ok(TokenSet::bearer("fresh").with_expires_in(Duration::from_secs(3600)))
        }))
        .initial(TokenSet::bearer("fresh").with_expires_in(Duration::from_secs(3600)))
        .build()
    }

    fn answer(
        status: StatusCode,
    ) -> impl Service<
        Request<()>,
        Response = Response<()>,
        Error = Infallible,
        Future = Ready<Result<Response<()>, Infallible>>,
    > + Clone {
        service_fn(move |_: Request<()>| {
            let mut response = Response::new(());
            *response.status_mut() = status;
            std::future::ready(Ok::<_, Infallible>(response))
        })
    }

    fn api() -> crate::Origin {
        "https://api.test".parse().unwrap()
    }

    #[tokio::test]
    async fn a_future_polled_again_after_its_answer_returns_an_error() {
        for status in [StatusCode::OK, StatusCode::UNAUTHORIZED] {
            let mut svc = TokenRefreshLayer::new(manager())
                .allow_origin(api())
                .replay(NoReplay)
                .layer(answer(status));
            let future = svc.call(Request::get("https://api.test/").body(()).unwrap());
            let first = answer_then_poll_again(future).await;
            assert_eq!(first.unwrap().status(), status);
        }
    }

    /// Polls `future` to its answer, checks that polling it once more is an
    /// error rather than a panic, and returns the answer.
    async fn answer_then_poll_again<F, T>(future: F) -> Result<T, BoxError>
    where
        F: Future<Output = Result<T, BoxError>>,
    {
        let mut future = std::pin::pin!(future);
        let first = std::future::poll_fn(|cx| future.as_mut().poll(cx)).await;
        let again = std::future::poll_fn(|cx| future.as_mut().poll(cx)).await;
        let Err(error) = again else {
            panic!("polled after its answer, the future answered again");
        };
        assert!(
            error.to_string().contains("polled after completion"),
            "{error}"
        );
        first
    }

    #[tokio::test]
    async fn a_failed_wait_for_a_token_polled_again_returns_an_error() {
        let tokens = TokenManager::builder(source::from_fn(|_| async {
            Err(tower_token_refresh_core::Error::new(
                tower_token_refresh_core::ErrorKind::Rejected,
                "no",
            ))
        }))
        .build();
        let mut svc = TokenRefreshLayer::new(tokens)
            .allow_origin(api())
            .layer(answer(StatusCode::OK));
        let future = svc.call(Request::get("https://api.test/").body(()).unwrap());
        assert!(format!("{future:?}").contains("waiting for token"));
        assert!(answer_then_poll_again(future).await.is_err());
    }

    #[tokio::test]
    async fn debug_names_the_step() {
        let mut svc = TokenRefreshLayer::new(manager())
            .allow_origin(api())
            .layer(answer(StatusCode::OK));
        let future = svc.call(Request::get("https://api.test/").body(()).unwrap());
        assert!(format!("{future:?}").contains("\"sent\""), "{future:?}");
        let refused = svc.call(Request::get("http://api.test/").body(()).unwrap());
        assert!(format!("{refused:?}").contains("\"failed\""), "{refused:?}");
    }
}
