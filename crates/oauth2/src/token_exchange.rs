//! Token exchange (RFC 8693) and the JWT bearer grant with an assertion got
//! elsewhere (RFC 7523 §2.1): the two steps of enterprise-managed
//! authorization (an ID token exchanged at the identity provider for an
//! identity assertion JWT, an "ID-JAG", then presented at the
//! authorization server) and of workload identity (a platform's token
//! exchanged for a cloud's).
//!
//! Both are [`TokenSource`]s built on other sources: the token they give
//! away (the exchange's subject, the grant's assertion) is the access token
//! of another source, fetched anew for every request. So the steps chain:
//!
//! ```text
//! AssertionGrant (at the authorization server)
//!   └─ assertion: TokenExchangeGrant (at the identity provider)
//!        └─ subject: the ID token (a fixed one, a login, a file re-read)
//! ```
//!
//! Invariants:
//!
//! - Every request fetches its subject, actor and assertion anew: nothing
//!   given away is cached here (a cache belongs to the source that knows
//!   the token's lifetime), and a refused one is not sent again.
//! - The tokens given away are credentials: the form values `subject_token`,
//!   `actor_token` and `assertion` never reach `Debug` output or an error.
//! - `invalid_grant` (the subject or the assertion was refused) is
//!   [`Rejected`](ErrorKind::Rejected), not a session that ended: the next
//!   request fetches a new one. Nothing here holds a refresh token, so a
//!   lost answer is never outcome unknown.

use std::{fmt, sync::Arc};

use http::Uri;

use super::{ClientAuth, ErrorCode, HttpClient, Params, ResourceIndicator, TokenClient};
use crate::{BoxFuture, Error, ErrorKind, TokenSet, TokenSource};

/// The `grant_type` of token exchange (RFC 8693 §2.1).
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// The `grant_type` of the JWT bearer grant (RFC 7523 §2.1).
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Token type identifiers (RFC 8693 §3, and the identity assertion JWT of
/// the OAuth identity chaining drafts).
pub mod token_type {
    /// An OAuth 2.0 access token.
    pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
    /// An OAuth 2.0 refresh token.
    pub const REFRESH_TOKEN: &str = "urn:ietf:params:oauth:token-type:refresh_token";
    /// An OpenID Connect ID token.
    pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
    /// A JWT (RFC 7519), such as a workload identity token.
    pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
    /// A base64url-encoded SAML 2.0 assertion.
    pub const SAML2: &str = "urn:ietf:params:oauth:token-type:saml2";
    /// An identity assertion JWT authorization grant ("ID-JAG"), which an
    /// identity provider issues for an authorization server to accept as a
    /// JWT bearer assertion (enterprise-managed authorization).
    pub const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";
}

/// A token the exchange gives away: its type and the source whose access
/// token it is, fetched anew for each request.
#[derive(Clone)]
struct Given {
    token_type: String,
    source: Arc<dyn TokenSource>,
}

impl Given {
    async fn fetch(&self, what: &str) -> Result<String, Error> {
        let tokens = self.source.fetch(None).await.map_err(|e| {
            Error::new(e.kind(), format!("could not get the {what} to exchange")).with_source(e)
        })?;
        Ok(tokens.access_token().secret().to_owned())
    }
}

impl fmt::Debug for Given {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Given")
            .field("token_type", &self.token_type)
            .finish_non_exhaustive()
    }
}

/// Token exchange (RFC 8693) as a [`TokenSource`]: each fetch gives the
/// token endpoint a subject token (and, for delegation, an actor token)
/// and gets back a token for another audience, resource or type.
///
/// The subject is the access token of any [`TokenSource`]: a fixed token
/// ([`source::from_fn`](tower_token_refresh_core::source::from_fn)
/// returning a set), a login's tokens, a file a platform rewrites. Each
/// fetch posts `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`,
/// `subject_token`, `subject_token_type`, and what the builder adds:
/// `actor_token` and `actor_token_type`, `requested_token_type`, each
/// `audience` and `resource`, `scope`.
///
/// The answer is parsed as any token response: the issued token is the
/// set's access token (whatever its `issued_token_type`; an ID-JAG comes
/// with `token_type` `N_A`), its `expires_in` the set's expiry. Errors are
/// mapped as for [`ClientCredentialsGrant`](super::ClientCredentialsGrant),
/// except that `invalid_grant` (the subject or actor token was refused) is
/// [`Rejected`](ErrorKind::Rejected), and an `invalid_target` (an audience
/// or resource the server will not issue for) keeps its code.
///
/// # Example
///
/// Enterprise-managed authorization: an ID token exchanged at the identity
/// provider for an ID-JAG, which [`AssertionGrant`] presents at the
/// authorization server.
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use tower_token_refresh_core::{TokenManager, TokenSet, source};
/// use tower_token_refresh_oauth2::{
///     AssertionGrant, ClientAuth, ResourceIndicator, TokenExchangeGrant,
///     token_exchange::token_type,
/// };
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let client = |req: Request<Bytes>| async move {
/// #     let body: &[u8] = if req.uri().host() == Some("idp.example.com") {
/// #         br#"{"access_token":"jag","issued_token_type":"urn:ietf:params:oauth:token-type:id-jag","token_type":"N_A","expires_in":300}"#
/// #     } else {
/// #         br#"{"access_token":"at","token_type":"Bearer","expires_in":3600}"#
/// #     };
/// #     Ok::<_, std::io::Error>(Response::new(Bytes::from_static(body)))
/// # };
/// let id_token = source::from_fn(|_| async { Ok(TokenSet::bearer("eyJ...the user's ID token")) });
/// let id_jag = TokenExchangeGrant::new(
///     "https://idp.example.com/token".parse()?,
///     ClientAuth::post("idp-client", "idp-secret"),
///     token_type::ID_TOKEN,
///     id_token,
///     client.clone(),
/// )
/// .requested_token_type(token_type::ID_JAG)
/// .audience("https://auth.example.com")
/// .resource(ResourceIndicator::new("https://mcp.example.com/mcp")?);
/// let grant = AssertionGrant::new(
///     "https://auth.example.com/token".parse()?,
///     id_jag,
///     client,
/// )
/// .client_auth(ClientAuth::basic("mcp-client", "mcp-secret"));
/// let tokens = TokenManager::builder(grant).build();
/// assert_eq!(tokens.authorization().await?.header().to_str()?, "Bearer at");
/// # Ok(()) }
/// ```
pub struct TokenExchangeGrant<C> {
    token: TokenClient<C>,
    subject: Given,
    actor: Option<Given>,
    params: Params,
}

impl<C> TokenExchangeGrant<C> {
    /// An exchange at `token_url`, authenticated with `auth`, giving away
    /// the access token of `subject` as a token of `subject_token_type`
    /// (one of [`token_type`], or another URI the server knows).
    pub fn new(
        token_url: Uri,
        auth: ClientAuth,
        subject_token_type: impl Into<String>,
        subject: impl TokenSource,
        client: C,
    ) -> Self {
        TokenExchangeGrant {
            token: TokenClient::new(token_url, auth, client),
            subject: Given {
                token_type: subject_token_type.into(),
                source: Arc::new(subject),
            },
            actor: None,
            params: Params::default(),
        }
    }

    /// Acts for the subject (delegation, RFC 8693 §1.1): the access token
    /// of `actor` goes as `actor_token`, of type `actor_token_type`.
    pub fn actor(mut self, actor_token_type: impl Into<String>, actor: impl TokenSource) -> Self {
        self.actor = Some(Given {
            token_type: actor_token_type.into(),
            source: Arc::new(actor),
        });
        self
    }

    /// The type of token to issue (`requested_token_type`); by default the
    /// server chooses.
    pub fn requested_token_type(self, token_type: impl Into<String>) -> Self {
        self.param("requested_token_type", token_type)
    }

    /// A logical name of the service the token is for (`audience`). May be
    /// given more than once.
    pub fn audience(self, audience: impl Into<String>) -> Self {
        self.param("audience", audience)
    }

    /// The resource the token is for (`resource`, RFC 8707). May be given
    /// more than once.
    pub fn resource(mut self, resource: ResourceIndicator) -> Self {
        self.token.resources.push(resource);
        self
    }

    /// Asks for this scope (space-separated).
    pub fn scope(self, scope: impl Into<String>) -> Self {
        self.param("scope", scope)
    }

    /// Adds a form parameter to every request.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push(name, value);
        self
    }

    /// Allows the tokens to go over cleartext `http://` to a host that is
    /// not loopback: for a development server only. Off by default.
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

impl<C> fmt::Debug for TokenExchangeGrant<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("TokenExchangeGrant");
        self.token.debug_fields(&mut f);
        f.field("subject_token_type", &self.subject.token_type)
            .field(
                "actor_token_type",
                &self.actor.as_ref().map(|a| &a.token_type),
            )
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl<C: HttpClient> TokenSource for TokenExchangeGrant<C> {
    fn fetch<'a>(
        &'a self,
        _current: Option<&'a TokenSet>,
    ) -> BoxFuture<'a, Result<TokenSet, Error>> {
        Box::pin(async move {
            let subject = self.subject.fetch("subject token").await?;
            let actor = match &self.actor {
                Some(actor) => Some((actor.fetch("actor token").await?, &actor.token_type)),
                None => None,
            };
            let actor = actor
                .as_ref()
                .map(|(token, kind)| (token.as_str(), kind.as_str()));
            exchange(
                &self.token,
                (&subject, &self.subject.token_type),
                actor,
                &self.params,
            )
            .await
        })
    }
}

/// One token exchange request (RFC 8693 §2.1) through `token`: `subject`
/// and `actor` are (token, token type) pairs, `params` follow them, then
/// the client's `resource`s. `invalid_grant` is
/// [`Rejected`](ErrorKind::Rejected). Shared by [`TokenExchangeGrant`] and
/// [`OnBehalfOf`](crate::OnBehalfOf).
pub(crate) async fn exchange<C: HttpClient>(
    token: &TokenClient<C>,
    subject: (&str, &str),
    actor: Option<(&str, &str)>,
    params: &Params,
) -> Result<TokenSet, Error> {
    let answer = token
        .exchange(TOKEN_EXCHANGE, false, |form| {
            form.pair("subject_token", subject.0);
            form.pair("subject_token_type", subject.1);
            if let Some((token, token_type)) = actor {
                form.pair("actor_token", token);
                form.pair("actor_token_type", token_type);
            }
            params.write_to(form);
            Ok(())
        })
        .await;
    answer.map_err(refused_is_rejected)
}

/// The JWT bearer grant (RFC 7523 §2.1) with an assertion got elsewhere:
/// each fetch presents the access token of another [`TokenSource`] as the
/// `assertion` (an ID-JAG from a [`TokenExchangeGrant`], a workload
/// identity token), where `JwtBearerGrant` (feature
/// `jose`) signs its own.
///
/// Every fetch posts `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`
/// and `assertion`, with the client authentication of
/// [`client_auth`](Self::client_auth) (none by default, RFC 7523 §3.1).
/// Errors are mapped as for [`TokenExchangeGrant`]: a refused assertion is
/// [`Rejected`](ErrorKind::Rejected), and the next fetch gets a new one.
/// See [`TokenExchangeGrant`] for an example.
pub struct AssertionGrant<C> {
    token: TokenClient<C>,
    assertion: Arc<dyn TokenSource>,
    params: Params,
}

impl<C> AssertionGrant<C> {
    /// A grant at `token_url` presenting the access token of `assertion`.
    pub fn new(token_url: Uri, assertion: impl TokenSource, client: C) -> Self {
        AssertionGrant {
            token: TokenClient::new(token_url, ClientAuth::Anonymous, client),
            assertion: Arc::new(assertion),
            params: Params::default(),
        }
    }

    /// Authenticates the client too (an ID-JAG is bound to the client it
    /// was issued for). Default [`ClientAuth::Anonymous`].
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.token.auth = auth;
        self
    }

    /// Asks for this scope (space-separated).
    pub fn scope(self, scope: impl Into<String>) -> Self {
        self.param("scope", scope)
    }

    /// The resource the token is for (`resource`, RFC 8707). May be given
    /// more than once.
    pub fn resource(mut self, resource: ResourceIndicator) -> Self {
        self.token.resources.push(resource);
        self
    }

    /// Adds a form parameter to every request.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push(name, value);
        self
    }

    /// Allows the assertion to go over cleartext `http://` to a host that
    /// is not loopback: for a development server only. Off by default.
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

impl<C> fmt::Debug for AssertionGrant<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("AssertionGrant");
        self.token.debug_fields(&mut f);
        f.field("params", &self.params).finish_non_exhaustive()
    }
}

impl<C: HttpClient> TokenSource for AssertionGrant<C> {
    fn fetch<'a>(
        &'a self,
        _current: Option<&'a TokenSet>,
    ) -> BoxFuture<'a, Result<TokenSet, Error>> {
        Box::pin(async move {
            let assertion = self.assertion.fetch(None).await.map_err(|e| {
                Error::new(e.kind(), "could not get the assertion to present").with_source(e)
            })?;
            let answer = self
                .token
                .exchange(JWT_BEARER, false, |form| {
                    form.pair("assertion", assertion.access_token().secret());
                    self.params.write_to(form);
                    Ok(())
                })
                .await;
            answer.map_err(refused_is_rejected)
        })
    }
}

/// `invalid_grant` from a grant that holds no session (the token or
/// assertion it gave away was refused) is [`Rejected`](ErrorKind::Rejected):
/// there is no session to end, and the next fetch gets or signs a new one.
pub(crate) fn refused_is_rejected(err: Error) -> Error {
    if err.oauth_error_code() == Some(&ErrorCode::InvalidGrant) {
        err.with_kind(ErrorKind::Rejected)
    } else {
        err
    }
}
