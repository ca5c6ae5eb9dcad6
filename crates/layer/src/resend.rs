//! The one machine behind every "send, read the answer, resend once" of the
//! tower layers: [`TokenRefresh`](crate::TokenRefresh) (a rejected token:
//! wait for a newer one, replay) and [`Dpop`](crate::dpop::Dpop) (a nonce
//! challenge: sign a new proof, resend) are two [`Hook`]s on it.
//!
//! ```text
//!             ┌──────── Waiting: wait, copy the request, apply, send ───────┐
//!  call ──────┤                                                             ▼
//!             └──────────────────────────────────────────────────────► attempt
//!                                                                           │ answer
//!                            Hook::check(answer, copy) ── None ──► answer returned
//!                                        │ Some(wait)
//!                  Preparing: wait, apply to the copy; Readying: poll_ready
//!                                        │
//!                           resend ─► Hook::last(answer) ─► answer returned
//! ```
//!
//! # Invariants
//!
//! - At most one resend per call, of the copy made before the first send;
//!   the copy goes out through a clone of the service, readied first.
//! - The first send goes through the service `poll_ready` readied (the one
//!   the caller's `call` used, or, after a wait, the one taken from it).
//! - The common poll (the first attempt answers, and the hook lets it pass)
//!   touches the attempt and the `Check` step only; every other step is
//!   out of line.
//! - Polled again after its answer, the future returns an error, never
//!   panics.

use std::{
    future::Future,
    mem,
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::Service;
use tower_token_refresh_core::{BoxError, Error};

use crate::ReplayPolicy;

/// What [`Resend`] waits for before a send: its storage types, apart from
/// the behaviour in [`Hook`] so that the future's type needs no bounds.
pub(crate) trait Wait {
    /// The wait's future: a newer token, or nothing at all.
    type Wait: Future<Output = Result<Self::Ready, Error>> + Unpin;
    /// What the wait gives, to [`Hook::apply`] to a request.
    type Ready;
}

/// What one layer does around the machine.
pub(crate) trait Hook: Wait {
    /// The first attempt's answer: `Some` to resend the copy after the
    /// wait, `None` to return the answer as it is. `copy` is `None` when
    /// the policy made no copy. (By reference to the whole `Option`: the
    /// common answer, which the hook lets pass, never looks at it.)
    fn check<S, B, R>(&mut self, answer: &Response<R>, copy: &Copy<S, B>) -> Option<Self::Wait>;

    /// Puts what was waited for on a request about to be sent.
    fn apply<B>(&mut self, ready: Self::Ready, request: &mut Request<B>) -> Result<(), Error>;

    /// The resend's answer, which is returned as it is.
    fn last<R>(&mut self, answer: &Response<R>);
}

/// The service clone that sends a resend, and the copy it sends.
pub(crate) type Copy<S, B> = Option<(S, Request<B>)>;

pin_project! {
    /// The response future of a layer built on the machine.
    pub(crate) struct Resend<S, B, P, H>
    where
        S: Service<Request<B>>,
        H: Wait,
    {
        // The request in flight, first or resend. Kept apart from the rest
        // so that the common poll touches only this and one tag of `step`.
        #[pin]
        attempt: Attempt<S::Future>,
        step: Step<S, B, P, H>,
    }
}

pin_project! {
    #[project = AttemptProj]
    enum Attempt<F> {
        InFlight { #[pin] future: F },
        Idle,
    }
}

/// Where the call is, apart from the attempt in flight.
enum Step<S, B, P, H: Wait> {
    /// The first attempt's answer goes to the hook; `copy` is what a resend
    /// would send.
    Check {
        hook: H,
        copy: Copy<S, B>,
    },
    /// The attempt's answer is returned untouched (a request the layer
    /// does not handle).
    Final,
    /// The resend is out: its answer goes to [`Hook::last`].
    Resent {
        hook: H,
    },
    /// Nothing sent yet: waiting before the first send. `service` is the
    /// one `poll_ready` readied; the copy is made once the wait is over,
    /// before `apply`. (The request is boxed: a cold path, which must not
    /// make every future larger.)
    Waiting {
        hook: H,
        wait: H::Wait,
        service: S,
        request: Box<Request<B>>,
        policy: P,
    },
    /// The hook asked for a resend: waiting before the copy goes.
    Preparing {
        hook: H,
        wait: H::Wait,
        service: S,
        request: Request<B>,
    },
    /// The copy is ready: waiting for the clone to be ready.
    Readying {
        hook: H,
        service: S,
        request: Request<B>,
    },
    Failed(Error),
    /// Finished, or between two steps.
    Done,
}

fn broken() -> BoxError {
    "tower-token-refresh: response future polled after completion".into()
}

impl<S, B, P, H> Resend<S, B, P, H>
where
    S: Service<Request<B>>,
    H: Wait,
{
    /// A request the layer does not handle, sent as it is.
    pub(crate) fn pass_through(future: S::Future) -> Self {
        Resend {
            attempt: Attempt::InFlight { future },
            step: Step::Final,
        }
    }

    /// A call that fails before anything is sent.
    pub(crate) fn failed(error: Error) -> Self {
        Resend {
            attempt: Attempt::Idle,
            step: Step::Failed(error),
        }
    }

    /// A request already sent; `copy` is for the resend.
    pub(crate) fn sent(future: S::Future, hook: H, copy: Copy<S, B>) -> Self {
        Resend {
            attempt: Attempt::InFlight { future },
            step: Step::Check { hook, copy },
        }
    }

    /// A request sent once `wait` is over, through `readied`, the service
    /// `poll_ready` readied; `policy` makes its copy then.
    pub(crate) fn waiting(
        hook: H,
        wait: H::Wait,
        readied: S,
        request: Request<B>,
        policy: P,
    ) -> Self {
        Resend {
            attempt: Attempt::Idle,
            step: Step::Waiting {
                hook,
                wait,
                service: readied,
                request: Box::new(request),
                policy,
            },
        }
    }

    /// What the call is doing, for `Debug`.
    pub(crate) fn describe(&self) -> &'static str {
        match (&self.attempt, &self.step) {
            (_, Step::Waiting { .. }) => "waiting",
            (Attempt::InFlight { .. }, Step::Check { .. }) => "sent",
            (_, Step::Preparing { .. }) => "preparing resend",
            (_, Step::Readying { .. }) => "readying resend",
            (Attempt::InFlight { .. }, Step::Resent { .. }) => "resent",
            (Attempt::InFlight { .. }, _) => "sent, response final",
            (_, Step::Failed(_)) => "failed",
            _ => "done",
        }
    }
}

/// The first answer asked for a resend: moves `step` on to the wait before
/// it, or gives the answer back when there is no copy to resend.
#[cold]
#[inline(never)]
fn resend<S, B, P, H: Wait, R>(
    step: &mut Step<S, B, P, H>,
    wait: H::Wait,
    answer: Response<R>,
) -> Option<Response<R>> {
    match mem::replace(step, Step::Done) {
        Step::Check {
            hook,
            copy: Some((service, request)),
        } => {
            // The answer is not held while the wait runs.
            drop(answer);
            *step = Step::Preparing {
                hook,
                wait,
                service,
                request,
            };
            None
        }
        _ => Some(answer),
    }
}

impl<S, B, R, P, H> Future for Resend<S, B, P, H>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    P: ReplayPolicy<B>,
    H: Hook,
{
    type Output = Result<Response<R>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The common poll, kept small: the first attempt answers and the
        // hook lets it pass. Everything else is out of line.
        if let Some(output) = self.as_mut().poll_attempt(cx) {
            return output;
        }
        self.poll_steps(cx)
    }
}

impl<S, B, R, P, H> Resend<S, B, P, H>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    P: ReplayPolicy<B>,
    H: Hook,
{
    /// Polls the attempt in flight, if any: `Some` with the call's output,
    /// or `None` when there is no attempt (or its answer moved the call on
    /// to a wait before the resend).
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
        let answer = match result {
            Ok(answer) => answer,
            Err(error) => return Some(Poll::Ready(Err(error.into()))),
        };
        let wait = match this.step {
            Step::Check { hook, copy } => hook.check(&answer, copy),
            Step::Resent { hook } => {
                hook.last(&answer);
                None
            }
            _ => None,
        };
        // Without a wait the step stays: a finished attempt with no step to
        // take is what "done" is (polling again finds no attempt and a
        // `Check`, `Resent` or `Final` step, and reports the misuse).
        // Dropping it here would cost a second pass over the step on the
        // common path.
        let Some(wait) = wait else {
            return Some(Poll::Ready(Ok(answer)));
        };
        resend(this.step, wait, answer).map(|answer| Poll::Ready(Ok(answer)))
    }

    /// Every step but the common one: a wait, a resend to ready and send,
    /// an error to return.
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
            // none, the call is done.
            let ready = match &mut *this.step {
                Step::Waiting { wait, .. } | Step::Preparing { wait, .. } => {
                    match Pin::new(wait).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(ready) => ready.map(Some).map_err(BoxError::from),
                    }
                }
                Step::Readying { service, .. } => match service.poll_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(ready) => ready.map(|()| None).map_err(Into::into),
                },
                _ => Ok(None),
            };
            let step = mem::replace(this.step, Step::Done);
            let ready = match ready {
                Ok(ready) => ready,
                Err(error) => return Poll::Ready(Err(error)),
            };
            match (step, ready) {
                (
                    Step::Waiting {
                        mut hook,
                        mut service,
                        request,
                        policy,
                        ..
                    },
                    Some(ready),
                ) => {
                    let mut request = *request;
                    let copy = policy
                        .clone_request(&request)
                        .map(|copy| (service.clone(), copy));
                    if let Err(error) = hook.apply(ready, &mut request) {
                        return Poll::Ready(Err(error.into()));
                    }
                    // `service` is the one `poll_ready` readied before `call`.
                    this.attempt.set(Attempt::InFlight {
                        future: service.call(request),
                    });
                    *this.step = Step::Check { hook, copy };
                }
                (
                    Step::Preparing {
                        mut hook,
                        service,
                        mut request,
                        ..
                    },
                    Some(ready),
                ) => {
                    if let Err(error) = hook.apply(ready, &mut request) {
                        return Poll::Ready(Err(error.into()));
                    }
                    *this.step = Step::Readying {
                        hook,
                        service,
                        request,
                    };
                }
                (
                    Step::Readying {
                        hook,
                        mut service,
                        request,
                    },
                    None,
                ) => {
                    this.attempt.set(Attempt::InFlight {
                        future: service.call(request),
                    });
                    *this.step = Step::Resent { hook };
                }
                (Step::Failed(error), _) => return Poll::Ready(Err(error.into())),
                _ => return Poll::Ready(Err(broken())),
            }
        }
    }
}
