//! Token revocation (RFC 7009) and logout.

use std::{fmt, time::Duration};

use http::{StatusCode, Uri};

use super::{
    ClientAuth, Endpoint, Form, HttpClient, answer_of, error_response, token_request, with_unread,
};
use crate::{Error, ErrorKind, TokenManager};

/// Which kind of token is presented (`token_type_hint`, RFC 7009 §2.1,
/// RFC 7662 §2.1). A hint only speeds up the server's lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenTypeHint {
    /// `access_token`
    AccessToken,
    /// `refresh_token`
    RefreshToken,
}

impl TokenTypeHint {
    /// The parameter's value.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenTypeHint::AccessToken => "access_token",
            TokenTypeHint::RefreshToken => "refresh_token",
        }
    }
}

/// The form of a request about `token` to an introspection (RFC 7662
/// §2.1) or revocation (RFC 7009 §2.1) endpoint.
pub(crate) fn token_form(token: &str, hint: Option<TokenTypeHint>) -> Form {
    let mut form = Form::default();
    form.pair("token", token);
    if let Some(hint) = hint {
        form.pair("token_type_hint", hint.as_str());
    }
    form
}

/// Revokes tokens at an authorization server (RFC 7009), and logs out.
///
/// A 503 (the server could not revoke yet, §2.2.1), another 5xx, a 429 or a
/// transport error is retried with exponential backoff (honouring
/// `Retry-After`, at most 30 s a wait), 4 attempts in all by default. A 200
/// is success even for a token the server does not know (§2.2).
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use tower_token_refresh_core::{source, TokenManager, TokenSet};
/// use tower_token_refresh_oauth2::{ClientAuth, RevocationClient};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = |_req: Request<Bytes>| async {
///     Ok::<_, std::io::Error>(Response::new(Bytes::new()))
/// };
/// let revocation = RevocationClient::new(
///     "https://auth.example.com/revoke".parse()?,
///     ClientAuth::basic("my-client", "my-secret"),
///     client,
/// );
/// let tokens = TokenManager::builder(source::from_fn(|_| async { Ok(TokenSet::bearer("x")) }))
///     .initial(TokenSet::bearer("a").with_refresh_token("r"))
///     .build();
/// revocation.logout(&tokens).await?;
/// assert!(tokens.is_session_expired());
/// # Ok(()) }
/// ```
pub struct RevocationClient<C> {
    url: Endpoint,
    auth: ClientAuth,
    client: C,
    attempts: u32,
    backoff: Duration,
}

impl<C> RevocationClient<C> {
    /// A client of the revocation endpoint at `url`.
    pub fn new(url: Uri, auth: ClientAuth, client: C) -> Self {
        RevocationClient {
            url: Endpoint::new(url, "revocation endpoint"),
            auth,
            client,
            attempts: 4,
            backoff: Duration::from_millis(500),
        }
    }

    /// Attempts per token (at least 1) and the first backoff, which doubles
    /// after each failed attempt. Default: 4 attempts from 500 ms.
    pub fn retry(mut self, attempts: u32, first_backoff: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.backoff = first_backoff;
        self
    }

    /// Allows tokens and the client secret to go over cleartext `http://`
    /// to a host that is not loopback: for a development server only. Off
    /// by default, as for
    /// [`RefreshTokenGrant::allow_cleartext`](super::RefreshTokenGrant::allow_cleartext).
    pub fn allow_cleartext(mut self, allow: bool) -> Self {
        self.url.set_allow_cleartext(allow);
        self
    }
}

impl<C> fmt::Debug for RevocationClient<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("RevocationClient");
        self.url.debug_fields(&mut f, "url");
        f.field("auth", &self.auth)
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// The longest single wait between revocation attempts.
const MAX_WAIT: Duration = Duration::from_secs(30);

impl<C: HttpClient> RevocationClient<C> {
    /// Revokes `token`.
    ///
    /// # Errors
    ///
    /// [`Transient`](ErrorKind::Transient) when the retries ran out; the
    /// §5.2 mapping for an OAuth2 error body (`unsupported_token_type`,
    /// `invalid_client`: [`Rejected`](ErrorKind::Rejected));
    /// [`Policy`](ErrorKind::Policy), before anything is sent, for a
    /// cleartext URL to a host that is not loopback (see
    /// [`allow_cleartext`](Self::allow_cleartext)). No error quotes the
    /// token or the client secret, in any encoding.
    pub async fn revoke(&self, token: &str, hint: Option<TokenTypeHint>) -> Result<(), Error> {
        let mut wait = self.backoff;
        let mut attempt = 1;
        loop {
            let (request, redactor) =
                token_request(&self.url, &self.auth, token_form(token, hint))?;
            // The status is the answer: a 200 whose body could not be read
            // is a revocation done.
            let err = match answer_of(self.client.send(request).await) {
                Ok((response, _)) if response.status() == StatusCode::OK => return Ok(()),
                // Some servers answer 204; RFC 7009 says 200, nobody minds.
                Ok((response, _)) if response.status().is_success() => return Ok(()),
                Ok((response, unread)) => with_unread(
                    error_response(&response, "revocation endpoint", &redactor),
                    unread,
                ),
                Err(e) => Error::transient("revocation endpoint unreachable").with_source(e),
            };
            if err.kind() != ErrorKind::Transient || attempt >= self.attempts {
                return Err(err);
            }
            let delay = err.retry_after().unwrap_or(wait).min(MAX_WAIT);
            tracing::debug!(attempt, ?delay, error = %err, "revocation failed; retrying");
            tokio::time::sleep(delay).await;
            wait = wait.saturating_mul(2);
            attempt += 1;
        }
    }

    /// Logs out: revokes the manager's refresh token, then its access token
    /// (each with retries), then ends the session with
    /// [`TokenManager::end_session`], which clears the store and fires the
    /// `on_session_expired` hook.
    ///
    /// The session ends locally even when revocation fails: the user asked
    /// to be logged out. A refresh running at that moment may still obtain
    /// tokens the server keeps until they expire; its result is dropped.
    ///
    /// # Errors
    ///
    /// The first revocation error, else the store's error from
    /// `end_session`.
    pub async fn logout(&self, manager: &TokenManager) -> Result<(), Error> {
        let mut first_error = None;
        if let Some(tokens) = manager.current() {
            // The refresh token first: at most servers revoking it also
            // revokes the access tokens issued from it.
            if let Some(refresh) = tokens.refresh_token()
                && let Err(e) = self
                    .revoke(refresh.secret(), Some(TokenTypeHint::RefreshToken))
                    .await
            {
                first_error.get_or_insert(e);
            }
            if let Err(e) = self
                .revoke(
                    tokens.access_token().secret(),
                    Some(TokenTypeHint::AccessToken),
                )
                .await
            {
                first_error.get_or_insert(e);
            }
        }
        let ended = manager.end_session().await;
        match first_error {
            Some(e) => Err(e),
            None => ended,
        }
    }
}
