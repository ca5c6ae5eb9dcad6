//! Future types.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response, Uri};
use pin_project_lite::pin_project;
use tower::Service;
use tower_token_refresh_core::{Authorization, BoxError, Error, RefreshFuture, TokenManager};

use crate::{
    Classify, ReplayPolicy,
    layer::Shared,
    origin::OriginPolicy,
    resend::{self, Hook, Resend},
};

/// The token layer's [`Hook`] on the resend machine: a response that
/// rejects the token is replayed once, with a newer one.
pub(crate) struct TokenCheck<C> {
    shared: Arc<Shared>,
    classifier: C,
    /// The generation of the token the request carries (0 before one is
    /// on it).
    generation: u64,
}

impl<C> resend::Wait for TokenCheck<C> {
    type Wait = RefreshFuture;
    type Ready = Authorization;
}

impl<C: Classify> Hook for TokenCheck<C> {
    #[inline(always)]
    fn check<S, B, R>(
        &mut self,
        answer: &Response<R>,
        copy: &resend::Copy<S, B>,
    ) -> Option<RefreshFuture> {
        if !self.classifier.is_rejected(answer) {
            return None;
        }
        self.rejected(answer, copy.as_ref().map(|(_, copy)| copy.uri()))
    }

    fn apply<B>(&mut self, token: Authorization, request: &mut Request<B>) -> Result<(), Error> {
        self.generation = token.generation();
        self.shared.authorize(request, token.into_header());
        Ok(())
    }

    #[inline(always)]
    fn last<R>(&mut self, _: &Response<R>) {}
}

impl<C> TokenCheck<C> {
    /// The manager whose token the request carries (for a request of a
    /// layer over `Sessions`, its session: see `TokenRefresh::call`).
    fn manager(&self) -> Option<&TokenManager> {
        self.shared.tokens.one()
    }

    /// A response rejected the token: the refresh to wait for before the
    /// replay, or `None` when the response is final (no copy to replay, or
    /// it came from another origin).
    #[cold]
    #[inline(never)]
    fn rejected<R>(&self, answer: &Response<R>, sent_to: Option<&Uri>) -> Option<RefreshFuture> {
        if answered_elsewhere(answer, sent_to, &self.shared.origins) {
            // A redirect led elsewhere (FollowRedirect inside this layer):
            // that origin never saw our token.
            tracing::debug!("401 from another origin after a redirect; not ours");
            return None;
        }
        if sent_to.is_none() {
            // No copy to replay: the 401 goes back as it is, and the
            // refresh (spawned) serves later requests.
            if let Some(manager) = self.manager() {
                drop(manager.refresh_if(self.generation));
            }
            tracing::debug!(
                generation = self.generation,
                "token rejected; no replay copy"
            );
            return None;
        }
        tracing::debug!(
            generation = self.generation,
            "token rejected; replaying after refresh"
        );
        Some(self.manager()?.replay_if(self.generation))
    }
}

pin_project! {
    /// Response future of [`TokenRefresh`](crate::TokenRefresh).
    pub struct ResponseFuture<S, B, P, C>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        inner: Resend<S, B, P, TokenCheck<C>>,
    }
}

impl<S, B, P, C> fmt::Debug for ResponseFuture<S, B, P, C>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.inner.describe() {
            "waiting" => "waiting for token",
            "preparing resend" => "refreshing",
            "readying resend" => "readying replay",
            "resent" => "sent, response final",
            other => other,
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

impl<S, B, P, C> ResponseFuture<S, B, P, C>
where
    S: Service<Request<B>>,
{
    pub(crate) fn pass_through(future: S::Future) -> Self {
        ResponseFuture {
            inner: Resend::pass_through(future),
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        ResponseFuture {
            inner: Resend::failed(error),
        }
    }

    pub(crate) fn sent(
        future: S::Future,
        generation: u64,
        replay: resend::Copy<S, B>,
        shared: Arc<Shared>,
        classifier: C,
    ) -> Self {
        let hook = TokenCheck {
            shared,
            classifier,
            generation,
        };
        ResponseFuture {
            inner: Resend::sent(future, hook, replay),
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
        let hook = TokenCheck {
            shared,
            classifier,
            generation: 0,
        };
        ResponseFuture {
            inner: Resend::waiting(hook, refresh, readied, request, policy),
        }
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

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
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
