//! The `client_credentials` grant (RFC 6749 §4.4).

use std::fmt;

use http::Uri;

use super::{ClientAuth, HttpClient, Params, ResourceIndicator, TokenClient};
use crate::{BoxFuture, Error, TokenSet, TokenSource};

/// The OAuth2 `client_credentials` grant (RFC 6749 §4.4) as a [`TokenSource`]:
/// a service acting on its own behalf, or the re-authentication step of a
/// fallback chain ([`TokenSourceExt::or_else`](tower_token_refresh_core::source::TokenSourceExt::or_else)).
///
/// Posts `grant_type=client_credentials` with the configured `scope`,
/// `audience`, `resource` and extra parameters, authenticating with any
/// [`ClientAuth`] method. The current token set is not used: every fetch is a
/// new grant. Responses are parsed and errors mapped as for
/// [`RefreshTokenGrant`](super::RefreshTokenGrant); an `invalid_client`
/// is [`Rejected`](crate::ErrorKind::Rejected), never retried.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use tower_token_refresh_core::TokenManager;
/// use tower_token_refresh_oauth2::{ClientAuth, ClientCredentialsGrant};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = |req: Request<Bytes>| async move {
///     let form = std::str::from_utf8(req.body()).unwrap().to_owned();
///     assert!(form.contains("grant_type=client_credentials"));
///     assert!(form.contains("audience=https%3A%2F%2Fapi.example.com"));
///     Ok::<_, std::io::Error>(Response::new(Bytes::from_static(
///         br#"{"access_token":"svc","token_type":"Bearer","expires_in":300}"#,
///     )))
/// };
/// let grant = ClientCredentialsGrant::new(
///     "https://auth.example.com/token".parse()?,
///     ClientAuth::post("my-service", "my-secret"),
///     client,
/// )
/// .scope("read")
/// .audience("https://api.example.com");
/// let tokens = TokenManager::builder(grant).build();
/// assert_eq!(tokens.authorization().await?.header().to_str()?, "Bearer svc");
/// # Ok(()) }
/// ```
pub struct ClientCredentialsGrant<C> {
    token: TokenClient<C>,
    params: Params,
}

impl<C> ClientCredentialsGrant<C> {
    /// A grant posting to `token_url` through `client`.
    pub fn new(token_url: Uri, auth: ClientAuth, client: C) -> Self {
        ClientCredentialsGrant {
            token: TokenClient::new(token_url, auth, client),
            params: Params::default(),
        }
    }

    /// Asks for this scope (space-separated, RFC 6749 §3.3).
    pub fn scope(self, scope: impl Into<String>) -> Self {
        self.param("scope", scope)
    }

    /// Names the API the token is for with the `audience` parameter that
    /// Auth0, Okta and others use.
    pub fn audience(self, audience: impl Into<String>) -> Self {
        self.param("audience", audience)
    }

    /// Names the API the token is for with the `resource` parameter of
    /// RFC 8707, sent after the other parameters. May be given more than
    /// once.
    pub fn resource(mut self, resource: ResourceIndicator) -> Self {
        self.token.resources.push(resource);
        self
    }

    /// Adds a form parameter to every request.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push(name, value);
        self
    }

    /// Allows the client secret to go over cleartext `http://` to a host
    /// that is not loopback: for a development server only. Off by
    /// default, as for
    /// [`RefreshTokenGrant::allow_cleartext`](super::RefreshTokenGrant::allow_cleartext).
    pub fn allow_cleartext(mut self, allow: bool) -> Self {
        self.token.url.set_allow_cleartext(allow);
        self
    }

    /// Proves possession of a DPoP key at the token endpoint (RFC 9449;
    /// feature `jose`; see [`dpop`](crate::dpop#at-the-token-endpoint)).
    #[cfg(feature = "jose")]
    pub fn dpop(mut self, dpop: crate::dpop::DpopKey) -> Self {
        self.token.set_dpop(dpop);
        self
    }
}

impl<C> fmt::Debug for ClientCredentialsGrant<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("ClientCredentialsGrant");
        self.token.debug_fields(&mut f);
        f.field("params", &self.params).finish_non_exhaustive()
    }
}

impl<C: HttpClient> TokenSource for ClientCredentialsGrant<C> {
    fn fetch<'a>(
        &'a self,
        _current: Option<&'a TokenSet>,
    ) -> BoxFuture<'a, Result<TokenSet, Error>> {
        // No refresh token at stake: a lost answer costs only a new grant.
        Box::pin(self.token.exchange("client_credentials", false, |form| {
            self.params.write_to(form);
            Ok(())
        }))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{Request, Response};

    use super::*;
    use crate::{ClientAuth, ErrorKind};

    #[tokio::test]
    async fn a_lost_answer_is_not_outcome_unknown_without_a_refresh_token() {
        let grant = ClientCredentialsGrant::new(
            "http://127.0.0.1/token".parse().unwrap(),
            ClientAuth::basic("id", "sec"),
            |_req: Request<Bytes>| async {
                Err::<Response<Bytes>, _>(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
            },
        );
        let err = grant.fetch(None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient);
        assert!(!err.is_outcome_unknown(), "{err:?}");
    }
}
