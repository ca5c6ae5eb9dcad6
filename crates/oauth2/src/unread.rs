//! [`UnreadBody`]: an answer whose status arrived but whose body did not,
//! and how the endpoints' clients take such an answer back from an
//! [`HttpClient`](super::HttpClient) error.
//!
//! Invariant: once the status line has arrived the server has answered.
//! Whatever became of the body, the answer is read by its status, never
//! as a request that got no answer.

use std::{error::Error as StdError, fmt, io};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, response::Parts};

use crate::BoxError;

/// An [`HttpClient`](super::HttpClient) error for an answer whose status
/// line and headers arrived but whose body could not be read: it was larger
/// than the client reads, it broke off, or it outlasted the client's
/// timeout.
///
/// The status is the server's answer whatever its body, so the grants read
/// it as one:
///
/// - A non-2xx status is classified by its status alone, as an answer
///   whose body is no OAuth2 error: 5xx and 429 are
///   [`Transient`](crate::ErrorKind::Transient) (with their `Retry-After`),
///   any other [`InvalidResponse`](crate::ErrorKind::InvalidResponse). The
///   server refused the request: it is never
///   [outcome unknown](crate::Error::is_outcome_unknown).
/// - A 2xx is [`InvalidResponse`](crate::ErrorKind::InvalidResponse). The
///   server carried the grant out, and if it rotates refresh tokens, the
///   new one is in the body we lost: for a request that presented a
///   refresh token, and only for one, the error is outcome unknown.
///
/// Without `UnreadBody`, a failed body read is an error like any other
/// transport failure: no answer, outcome unknown. `ServiceClient` in
/// `tower-token-refresh` returns it; an [`HttpClient`](super::HttpClient) of
/// your own should too, alone or anywhere in the error's
/// [`source`](StdError::source) chain, for any failure after the head of
/// the response arrived.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use tower_token_refresh_core::{ErrorKind, TokenSet, TokenSource};
/// use tower_token_refresh_oauth2::{ClientAuth, RefreshTokenGrant, UnreadBody};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // A 400 whose body was too large to read.
/// let client = |_req: Request<Bytes>| async {
///     let head = Response::builder().status(StatusCode::BAD_REQUEST).body(()).unwrap();
///     Err::<Response<Bytes>, _>(UnreadBody::new(head.into_parts().0, "body over 64 KiB"))
/// };
/// let grant = RefreshTokenGrant::new(
///     "https://auth.example.com/token".parse().unwrap(),
///     ClientAuth::basic("my-client", "my-secret"),
///     client,
/// );
/// let current = TokenSet::bearer("old").with_refresh_token("r1");
/// let err = grant.fetch(Some(&current)).await.unwrap_err();
/// // Refused, not lost: the refresh token was not spent.
/// assert_eq!(err.kind(), ErrorKind::InvalidResponse);
/// assert!(!err.is_outcome_unknown());
/// # }
/// ```
pub struct UnreadBody {
    status: StatusCode,
    headers: HeaderMap,
    cause: BoxError,
}

impl UnreadBody {
    /// The answer whose head is `head` (its status and headers are kept)
    /// and whose body could not be read because of `cause`.
    pub fn new(head: Parts, cause: impl Into<BoxError>) -> Self {
        UnreadBody {
            status: head.status,
            headers: head.headers,
            cause: cause.into(),
        }
    }

    /// The status the server answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers of the answer.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Why the body could not be read.
    pub fn into_cause(self) -> BoxError {
        self.cause
    }

    /// The answer without its body.
    fn head(&self) -> Response<Bytes> {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

impl fmt::Debug for UnreadBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Headers may carry cookies; the status and the cause say enough.
        f.debug_struct("UnreadBody")
            .field("status", &self.status)
            .field("cause", &self.cause)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for UnreadBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The cause is the source, not repeated here.
        write!(
            f,
            "the body of an HTTP {} answer could not be read",
            self.status.as_u16()
        )
    }
}

impl StdError for UnreadBody {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.cause)
    }
}

/// What an [`HttpClient`](super::HttpClient) call brought back, as an
/// answer: the response; or, when only its body could not be read (an
/// [`UnreadBody`] in the error's chain), its head with an empty body and
/// the error, to attach as the source of whatever the answer means. `Err`:
/// no answer at all.
pub(crate) fn answer_of(
    sent: Result<Response<Bytes>, BoxError>,
) -> Result<(Response<Bytes>, Option<BoxError>), BoxError> {
    match sent {
        Ok(response) => Ok((response, None)),
        Err(err) => match find(&*err) {
            Some(unread) => Ok((unread.head(), Some(err))),
            None => Err(err),
        },
    }
}

/// `err` with `unread` (why the body of its answer could not be read) as
/// its source, if there is one.
pub(crate) fn with_unread(err: crate::Error, unread: Option<BoxError>) -> crate::Error {
    match unread {
        Some(cause) => err.with_source(cause),
        None => err,
    }
}

/// The [`UnreadBody`] in `error`'s source chain, if any.
fn find<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a UnreadBody> {
    let mut next = Some(error);
    // Chains are short; the bound only guards against a pathological one.
    for _ in 0..32 {
        let error = next?;
        if let Some(unread) = error.downcast_ref::<UnreadBody>() {
            return Some(unread);
        }
        next = error.source();
        // An io::Error's `source` skips the error it wraps.
        if let Some(inner) = error
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
        {
            next = Some(inner);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unread(status: u16) -> UnreadBody {
        let head = Response::builder()
            .status(status)
            .header(http::header::RETRY_AFTER, "7")
            .body(())
            .unwrap();
        UnreadBody::new(head.into_parts().0, "length limit exceeded")
    }

    #[test]
    fn an_unread_body_deep_in_the_chain_is_an_answer() {
        let wrapped: BoxError = Box::new(io::Error::other(unread(503)));
        let (response, cause) = answer_of(Err(wrapped)).unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "7");
        assert!(response.body().is_empty());
        assert!(cause.is_some());
    }

    #[test]
    fn any_other_error_is_no_answer() {
        let err: BoxError = Box::new(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(answer_of(Err(err)).is_err());
    }

    #[test]
    fn it_shows_the_status_and_its_cause_as_source() {
        let err = unread(400);
        assert_eq!(
            err.to_string(),
            "the body of an HTTP 400 answer could not be read"
        );
        assert_eq!(
            err.source().map(ToString::to_string).as_deref(),
            Some("length limit exceeded")
        );
        assert!(!format!("{err:?}").contains("retry-after"));
    }
}
