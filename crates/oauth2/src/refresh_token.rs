//! The `refresh_token` grant (RFC 6749 §6).
//!
//! Invariants:
//!
//! - The refresh token presented is never quoted in an error.
//! - A failure without an answer is outcome unknown unless it is known that
//!   the request never left: the refresh token may have been spent.
//! - A response without a refresh token keeps the presented one; a response
//!   with one replaces it (rotation): the set returned always holds the
//!   refresh token to present next.

use std::fmt;

use http::Uri;

use super::{ClientAuth, HttpClient, Params, ResourceIndicator, TokenClient};
use crate::{BoxFuture, Error, TokenSet, TokenSource};

/// The OAuth2 `refresh_token` grant (RFC 6749 §6) as a [`TokenSource`].
///
/// Posts `grant_type=refresh_token` with the current refresh token. A
/// response without a refresh token keeps the old one; one with a new refresh
/// token replaces it (rotation). `invalid_grant` ends the session; other
/// §5.2 errors are [`Rejected`](crate::ErrorKind::Rejected); 5xx, 429 and
/// `temporarily_unavailable` are [`Transient`](crate::ErrorKind::Transient) (with
/// `Retry-After` when given); an unparsable answer is
/// [`InvalidResponse`](crate::ErrorKind::InvalidResponse).
///
/// A request that got no answer is [`Transient`](crate::ErrorKind::Transient) and,
/// unless the [`HttpClient`] error shows it never left (a refused
/// connection; see [`NotSent`](super::NotSent)), marked
/// [outcome unknown](Error::is_outcome_unknown): the server may have carried
/// out the refresh and rotated the refresh token presented.
///
/// An answer whose body could not be read ([`UnreadBody`](super::UnreadBody):
/// too large, broken off) is still an answer, read by its status: a non-2xx
/// maps as an error body that is no OAuth2 error would, never outcome
/// unknown; a 2xx is [`InvalidResponse`](crate::ErrorKind::InvalidResponse)
/// and outcome unknown, since the refresh token that replaced the one
/// presented may be in the body that was lost.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use tower_token_refresh_core::{TokenManager, TokenSet};
/// use tower_token_refresh_oauth2::{ClientAuth, RefreshTokenGrant};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Any async closure is an HttpClient; this one plays the token endpoint.
/// let client = |req: Request<Bytes>| async move {
///     assert!(std::str::from_utf8(req.body()).unwrap().contains("grant_type=refresh_token"));
///     Ok::<_, std::io::Error>(Response::new(Bytes::from_static(
///         br#"{"access_token":"new","token_type":"Bearer","expires_in":3600}"#,
///     )))
/// };
/// let grant = RefreshTokenGrant::new(
///     "https://auth.example.com/token".parse()?,
///     ClientAuth::basic("my-client", "my-secret"),
///     client,
/// );
/// let tokens = TokenManager::builder(grant)
///     .initial(TokenSet::bearer("old").with_refresh_token("r1"))
///     .build();
/// let auth = tokens.refresh().await?;
/// assert_eq!(auth.header().to_str()?, "Bearer new");
/// // No refresh token in the response: the old one is kept.
/// assert_eq!(tokens.current().unwrap().refresh_token().unwrap().secret(), "r1");
/// # Ok(()) }
/// ```
pub struct RefreshTokenGrant<C> {
    token: TokenClient<C>,
    scope: Option<String>,
    params: Params,
}

impl<C> RefreshTokenGrant<C> {
    /// A grant posting to `token_url` through `client`.
    pub fn new(token_url: Uri, auth: ClientAuth, client: C) -> Self {
        RefreshTokenGrant {
            token: TokenClient::new(token_url, auth, client),
            scope: None,
            params: Params::default(),
        }
    }

    /// Asks for this scope (no wider than the original grant's, §6).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Names the resource the tokens are for (RFC 8707 `resource`) on
    /// every refresh: the one the session began with, which some servers
    /// require again (a refresh without it gets `invalid_grant`). May be
    /// given more than once.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Request, Response};
    /// use tower_token_refresh_core::{TokenSet, TokenSource};
    /// use tower_token_refresh_oauth2::{ClientAuth, RefreshTokenGrant, ResourceIndicator};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = |req: Request<Bytes>| async move {
    ///     let form = std::str::from_utf8(req.body()).unwrap().to_owned();
    ///     assert!(form.contains("&resource=https%3A%2F%2Fmcp.example.com%2Fmcp"));
    ///     Ok::<_, std::io::Error>(Response::new(Bytes::from_static(
    ///         br#"{"access_token":"new","token_type":"Bearer"}"#,
    ///     )))
    /// };
    /// let grant = RefreshTokenGrant::new(
    ///     "https://auth.example.com/token".parse()?,
    ///     ClientAuth::none("my-app"),
    ///     client,
    /// )
    /// .resource(ResourceIndicator::new("https://mcp.example.com/mcp")?);
    /// grant.fetch(Some(&TokenSet::bearer("old").with_refresh_token("r1"))).await?;
    /// # Ok(()) }
    /// ```
    pub fn resource(mut self, resource: ResourceIndicator) -> Self {
        self.token.resources.push(resource);
        self
    }

    /// Adds a form parameter to every request (`audience`, …).
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push(name, value);
        self
    }

    /// Allows the refresh token and client secret to go over cleartext
    /// `http://` to a host that is not loopback: for a development server
    /// only. Off by default, when such a grant fails with a
    /// [`Policy`](crate::ErrorKind::Policy) error before anything is sent;
    /// `http://` to `localhost`, `127.0.0.0/8` or `[::1]` is always allowed.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Request, Response};
    /// use tower_token_refresh_core::{ErrorKind, TokenSet, TokenSource};
    /// use tower_token_refresh_oauth2::{ClientAuth, RefreshTokenGrant};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = |_req: Request<Bytes>| async {
    ///     Ok::<_, std::io::Error>(Response::new(Bytes::from_static(
    ///         br#"{"access_token":"new","token_type":"Bearer"}"#,
    ///     )))
    /// };
    /// let url: http::Uri = "http://keycloak:8080/token".parse()?;
    /// let current = TokenSet::bearer("old").with_refresh_token("r1");
    ///
    /// let grant = RefreshTokenGrant::new(url.clone(), ClientAuth::basic("app", "secret"), client);
    /// let err = grant.fetch(Some(&current)).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Policy);
    ///
    /// let grant = RefreshTokenGrant::new(url, ClientAuth::basic("app", "secret"), client)
    ///     .allow_cleartext(true);
    /// assert!(grant.fetch(Some(&current)).await.is_ok());
    /// # Ok(()) }
    /// ```
    pub fn allow_cleartext(mut self, allow: bool) -> Self {
        self.token.url.set_allow_cleartext(allow);
        self
    }

    /// Proves possession of a DPoP key at the token endpoint (RFC 9449;
    /// feature `jose`; see [`dpop`](crate::dpop#at-the-token-endpoint)).
    /// A refresh token is presented with a proof of the key its set is
    /// bound to, should the manager hold another.
    #[cfg(feature = "jose")]
    pub fn dpop(mut self, dpop: crate::dpop::DpopKey) -> Self {
        self.token.set_dpop(dpop);
        self
    }
}

impl<C> fmt::Debug for RefreshTokenGrant<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("RefreshTokenGrant");
        self.token.debug_fields(&mut f);
        f.field("scope", &self.scope)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl<C: HttpClient> TokenSource for RefreshTokenGrant<C> {
    fn fetch<'a>(
        &'a self,
        current: Option<&'a TokenSet>,
    ) -> BoxFuture<'a, Result<TokenSet, Error>> {
        Box::pin(async move {
            let refresh_token = current
                .and_then(TokenSet::refresh_token)
                .ok_or_else(|| Error::session_expired("no refresh token"))?;
            // The refresh token is bound to the key of the set it came in:
            // sign with that one, even if the manager was not told of it.
            #[cfg(feature = "jose")]
            if let (Some(dpop), Some(bound)) = (
                self.token.dpop(),
                current.and_then(crate::dpop::TokenSetExt::dpop_key),
            ) {
                dpop.adopt(&bound);
            }
            let tokens = self
                .token
                .exchange("refresh_token", true, |form| {
                    form.pair("refresh_token", refresh_token.secret());
                    if let Some(scope) = &self.scope {
                        form.pair("scope", scope);
                    }
                    self.params.write_to(form);
                    Ok(())
                })
                .await?;
            Ok(match tokens.refresh_token() {
                Some(_) => tokens,
                None => tokens.with_refresh_token_opt(Some(refresh_token.clone())),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{Request, Response, StatusCode};

    use super::*;
    use crate::ErrorKind;

    #[tokio::test]
    async fn an_error_description_quoting_the_refresh_token_is_withheld() {
        let grant = RefreshTokenGrant::new(
            "http://127.0.0.1/token".parse().unwrap(),
            ClientAuth::basic("id", "sec"),
            |_req: Request<Bytes>| async {
                let mut r = Response::new(Bytes::from_static(
                    br#"{"error":"invalid_grant","error_description":"refresh token rt-secret-1 is revoked"}"#,
                ));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                Ok::<_, std::io::Error>(r)
            },
        );
        let current = TokenSet::bearer("a").with_refresh_token("rt-secret-1");
        let err = grant.fetch(Some(&current)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
        assert_eq!(err.oauth_error(), Some("invalid_grant"));
        assert!(!format!("{err} {err:?}").contains("rt-secret-1"), "{err:?}");
    }

    /// What the grant returns when its client fails with `error`.
    async fn failure(error: impl Fn() -> crate::BoxError + Send + Sync + 'static) -> Error {
        let grant = RefreshTokenGrant::new(
            "http://127.0.0.1/token".parse().unwrap(),
            ClientAuth::basic("id", "sec"),
            move |_req: Request<Bytes>| {
                let err = error();
                async move { Err::<Response<Bytes>, _>(err) }
            },
        );
        let current = TokenSet::bearer("a").with_refresh_token("rt-1");
        grant.fetch(Some(&current)).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_request_lost_in_flight_is_outcome_unknown() {
        for kind in [
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::TimedOut,
            std::io::ErrorKind::UnexpectedEof,
        ] {
            let err = failure(move || std::io::Error::from(kind).into()).await;
            assert_eq!(err.kind(), ErrorKind::Transient);
            assert!(err.is_outcome_unknown(), "{kind:?}: {err:?}");
        }
        // An error the client describes only in words may have been sent too.
        let err = failure(|| "something broke".into()).await;
        assert!(err.is_outcome_unknown(), "{err:?}");
    }

    #[tokio::test]
    async fn a_request_that_never_left_is_not_outcome_unknown() {
        let refused =
            failure(|| std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into()).await;
        assert_eq!(refused.kind(), ErrorKind::Transient);
        assert!(!refused.is_outcome_unknown(), "{refused:?}");
        let not_sent = failure(|| Box::new(super::super::NotSent::new("proxy down"))).await;
        assert!(!not_sent.is_outcome_unknown(), "{not_sent:?}");
    }

    /// An [`UnreadBody`](super::super::UnreadBody) error: an answer of
    /// `status` (with `Retry-After: 7`) whose body could not be read.
    fn unread(status: u16) -> crate::BoxError {
        let head = Response::builder()
            .status(status)
            .header(http::header::RETRY_AFTER, "7")
            .body(())
            .unwrap();
        let cause = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        Box::new(super::super::UnreadBody::new(head.into_parts().0, cause))
    }

    #[tokio::test]
    async fn an_error_status_whose_body_could_not_be_read_is_read_by_its_status() {
        for (status, kind) in [
            (400, ErrorKind::InvalidResponse),
            (401, ErrorKind::InvalidResponse),
            (429, ErrorKind::Transient),
            (503, ErrorKind::Transient),
        ] {
            let err = failure(move || unread(status)).await;
            assert_eq!(err.kind(), kind, "{status}: {err:?}");
            assert!(!err.is_outcome_unknown(), "{status}: {err:?}");
            assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(7)));
        }
        // Wrapped, as a client may return it.
        let err = failure(|| std::io::Error::other(unread(400)).into()).await;
        assert!(!err.is_outcome_unknown(), "{err:?}");
    }

    #[tokio::test]
    async fn a_success_whose_body_could_not_be_read_may_have_rotated_the_refresh_token() {
        let err = failure(|| unread(200)).await;
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
        assert!(err.is_outcome_unknown(), "{err:?}");
        assert!(err.message().contains("rotated the refresh token"), "{err}");
    }

    #[tokio::test]
    async fn an_http_error_answer_is_not_outcome_unknown() {
        for (status, body) in [
            (503, r#"{"error":"temporarily_unavailable"}"#),
            (502, "<html>bad gateway</html>"),
            (400, r#"{"error":"invalid_grant"}"#),
        ] {
            let grant = RefreshTokenGrant::new(
                "http://127.0.0.1/token".parse().unwrap(),
                ClientAuth::basic("id", "sec"),
                move |_req: Request<Bytes>| async move {
                    Ok::<_, std::io::Error>(crate::tests::response(status, body))
                },
            );
            let current = TokenSet::bearer("a").with_refresh_token("rt-1");
            let err = grant.fetch(Some(&current)).await.unwrap_err();
            assert!(!err.is_outcome_unknown(), "{status}: {err:?}");
        }
    }
}
