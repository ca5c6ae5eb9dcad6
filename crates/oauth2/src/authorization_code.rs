//! The authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636) for
//! CLIs and desktop apps, with a loopback redirect (RFC 8252 §7.3).
//!
//! Invariants:
//!
//! - One login, one fresh `state` (128 random bits) and one fresh PKCE
//!   verifier (`S256`); a redirect whose `state` differs is refused before
//!   anything else is read from it, and no code is exchanged; so is one
//!   naming another issuer (RFC 9207 `iss`) when an issuer is set.
//! - The listener is 127.0.0.1 on a port the OS picks, and is closed when
//!   the redirect came or the timeout passed, whichever is first.
//! - The library never opens a browser: the application's hook gets the
//!   URL. The code and the verifier go only to the token endpoint, under
//!   the cleartext rule, and never into an error or a log.

use std::{borrow::Cow, fmt, sync::Arc, time::Duration};

use http::Uri;

use super::{
    ClientAuth, Endpoint, HttpClient, LoginError, LoginHints, Params, Pkce, TokenClient,
    loopback::Loopback,
};
use crate::{BoxFuture, Error, ErrorKind, TokenSet, TokenSource, crypto::random_urlsafe};

type UrlHook = Arc<dyn Fn(&str) + Send + Sync>;

/// An interactive login with the authorization code grant and PKCE, the
/// redirect caught by a one-shot listener on `http://127.0.0.1:{port}`.
///
/// [`login`](Self::login) binds the listener, hands the authorization URL
/// to the [`on_authorization_url`](Self::on_authorization_url) hook (open
/// it in a browser, print it), waits for the one redirect (5 minutes by
/// default), checks its `state`, and exchanges the code with the
/// `code_verifier` at the token endpoint. The server must accept a
/// loopback redirect URI with any port (RFC 8252 §7.3): register
/// `http://127.0.0.1/callback` (or your [`redirect_path`](Self::redirect_path)).
///
/// As a [`TokenSource`] it is the last link of a fallback chain: when the
/// refresh token is spent, the user logs in again. A login takes as long as
/// the user does, so give the [`TokenManager`](crate::TokenManager) an
/// [`attempt_timeout`](tower_token_refresh_core::TokenManagerBuilder::attempt_timeout) at
/// least as long as the login's [`timeout`](Self::timeout).
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use tower_token_refresh_oauth2::{AuthorizationCodeLogin, ClientAuth};
/// # use bytes::Bytes;
/// # use http::{Request, Response};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let http = |_req: Request<Bytes>| async { Ok::<_, std::io::Error>(Response::new(Bytes::new())) };
/// let login = AuthorizationCodeLogin::new(
///     "https://auth.example.com/authorize".parse()?,
///     "https://auth.example.com/token".parse()?,
///     ClientAuth::none("my-cli"),
///     http,
/// )
/// .scope("openid offline_access api")
/// .on_authorization_url(|url| eprintln!("Open this page to sign in: {url}"));
/// let tokens = login.login().await?;
/// # let _ = tokens; Ok(()) }
/// ```
pub struct AuthorizationCodeLogin<C> {
    authorization_url: Endpoint,
    token: TokenClient<C>,
    hints: LoginHints,
    params: Params,
    redirect_path: String,
    timeout: Duration,
    issuer: Option<String>,
    /// Whether a redirect without `iss` is refused: the server said it
    /// sends one. Otherwise an `iss` is checked only when present.
    issuer_required: bool,
    on_url: Option<UrlHook>,
}

/// The default wait for the redirect.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

impl<C> AuthorizationCodeLogin<C> {
    /// A login at `authorization_url`, exchanging the code at `token_url`
    /// through `client`.
    pub fn new(authorization_url: Uri, token_url: Uri, auth: ClientAuth, client: C) -> Self {
        AuthorizationCodeLogin {
            authorization_url: Endpoint::new(authorization_url, "authorization endpoint"),
            token: TokenClient::new(token_url, auth, client),
            hints: LoginHints::new(),
            params: Params::default(),
            redirect_path: "/callback".to_owned(),
            timeout: DEFAULT_TIMEOUT,
            issuer: None,
            issuer_required: false,
            on_url: None,
        }
    }

    /// Asks for this scope (space-separated).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.hints = self.hints.with_scope(scope);
        self
    }

    /// The hints every login of this one sends (`acr_values`, `max_age`);
    /// [`login_with`](Self::login_with) overrides them for one login.
    pub fn hints(mut self, hints: LoginHints) -> Self {
        self.hints = hints.over(&self.hints);
        self
    }

    /// Names the resource the tokens are for (RFC 8707 `resource`), on the
    /// authorization request and the code exchange alike. May be given
    /// more than once.
    ///
    /// # Example
    ///
    /// ```
    /// # use bytes::Bytes;
    /// # use http::{Request, Response};
    /// use tower_token_refresh_oauth2::{AuthorizationCodeLogin, ClientAuth, ResourceIndicator};
    ///
    /// # let http = |_req: Request<Bytes>| async { Ok::<_, std::io::Error>(Response::new(Bytes::new())) };
    /// let login = AuthorizationCodeLogin::new(
    ///     "https://auth.example.com/authorize".parse()?,
    ///     "https://auth.example.com/token".parse()?,
    ///     ClientAuth::none("my-cli"),
    ///     http,
    /// )
    /// .resource(ResourceIndicator::new("https://mcp.example.com/mcp")?);
    /// # let _ = login;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resource(mut self, resource: crate::ResourceIndicator) -> Self {
        self.token.resources.push(resource);
        self
    }

    /// Adds a parameter to the authorization request (`prompt`,
    /// `login_hint`, `audience`, …).
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push(name, value);
        self
    }

    /// Makes this a silent login (OpenID Connect `prompt=none`): the
    /// authorization server answers at once, with a code when the user
    /// still has a session there, else with
    /// [`LoginError::InteractionRequired`] (`login_required`, …), and never
    /// shows the user a page. Put a silent login before an interactive one
    /// in a fallback chain, after the refresh token grant:
    /// `refresh.or_else(silent_login).or_else(login)`. The
    /// browser still opens the authorization URL (that is where the
    /// server's session cookie is); a short [`timeout`](Self::timeout)
    /// suits it.
    ///
    /// It replaces a `prompt` set before with [`param`](Self::param) (say
    /// `consent`, for the interactive login it was copied from): `none`
    /// stands alone (OpenID Connect Core §3.1.2.1), and a repeated
    /// parameter is an `invalid_request` (RFC 6749 §3.1).
    ///
    /// Some servers never let a public native client in silently, as its
    /// id can be claimed by any app (RFC 8252 §8.6): `oidc-provider`, by
    /// default, asks for consent at every login of one and answers
    /// `interaction_required`.
    pub fn silent(mut self) -> Self {
        self.params.set("prompt", "none");
        self
    }

    /// The path of the redirect URI, `/callback` by default. Must start
    /// with `/`.
    pub fn redirect_path(mut self, path: impl Into<String>) -> Self {
        self.redirect_path = path.into();
        self
    }

    /// How long to wait for the redirect; 5 minutes by default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The issuer the redirect must name in its `iss` parameter (RFC 9207),
    /// against mix-up attacks when the app talks to several authorization
    /// servers. Set it when the server sends `iss` (its metadata says
    /// `authorization_response_iss_parameter_supported`): a redirect
    /// without it, or naming another issuer, then ends the login with
    /// [`LoginError::IssuerMismatch`] and no code is exchanged.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self.issuer_required = true;
        self
    }

    /// The issuer an `iss` on the redirect must name if the redirect has
    /// one (RFC 9207 §2.4: a client checks an `iss` it receives), for a
    /// server that did not say it always sends one.
    pub(crate) fn issuer_if_sent(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self.issuer_required = false;
        self
    }

    /// What to do with the authorization URL: open it in the system
    /// browser, print it. Required; called once per login, before the wait.
    pub fn on_authorization_url(mut self, hook: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_url = Some(Arc::new(hook));
        self
    }

    /// Allows cleartext `http://` endpoints on hosts that are not
    /// loopback: for a development server only, as for
    /// [`RefreshTokenGrant::allow_cleartext`](super::RefreshTokenGrant::allow_cleartext).
    pub fn allow_cleartext(mut self, allow: bool) -> Self {
        self.authorization_url.set_allow_cleartext(allow);
        self.token.url.set_allow_cleartext(allow);
        self
    }

    /// Proves possession of a DPoP key at the token endpoint (RFC 9449;
    /// feature `jose`; see [`dpop`](crate::dpop#at-the-token-endpoint)):
    /// the code's exchange carries a proof, so the session starts bound.
    /// Give the refresh grant and the manager the same key.
    #[cfg(feature = "jose")]
    pub fn dpop(mut self, dpop: crate::dpop::DpopKey) -> Self {
        self.token.set_dpop(dpop);
        self
    }
}

impl<C: HttpClient> AuthorizationCodeLogin<C> {
    /// Runs one login with the configured hints.
    ///
    /// # Errors
    ///
    /// [`LoginError`]s (as the [`Error`]'s source: a state mismatch, a
    /// denial, the timeout) and every error of the code exchange, mapped as
    /// for [`RefreshTokenGrant`](super::RefreshTokenGrant). A
    /// [`Rejected`](ErrorKind::Rejected) error at once when no
    /// [`on_authorization_url`](Self::on_authorization_url) hook is set.
    pub async fn login(&self) -> Result<TokenSet, Error> {
        self.login_with(&LoginHints::new()).await
    }

    /// Runs one login, `hints` over the configured ones: the step-up a
    /// resource asked for (RFC 9470).
    ///
    /// # Errors
    ///
    /// As for [`login`](Self::login).
    pub async fn login_with(&self, hints: &LoginHints) -> Result<TokenSet, Error> {
        let Some(on_url) = &self.on_url else {
            return Err(Error::new(
                ErrorKind::Rejected,
                "no on_authorization_url hook: the user cannot be sent to sign in",
            ));
        };
        if !self.redirect_path.starts_with('/') {
            return Err(Error::new(
                ErrorKind::Rejected,
                "the redirect path must start with '/'",
            ));
        }
        let Some(client_id) = self.token.auth.client_id() else {
            return Err(Error::new(
                ErrorKind::Rejected,
                "an authorization code login needs a client id (ClientAuth::anonymous has none)",
            ));
        };
        // Both endpoints are checked before the user is sent anywhere.
        self.authorization_url.check()?;
        self.token.url.check()?;
        let listener = Loopback::bind().await?;
        let redirect_uri = listener.redirect_uri(&self.redirect_path);
        let state = random_urlsafe(16)?;
        let pkce = Pkce::new()?;
        let url = self.authorization_request(
            client_id,
            &hints.over(&self.hints),
            &redirect_uri,
            &state,
            &pkce,
        );
        tracing::debug!(redirect_uri = %redirect_uri, "waiting for the authorization redirect");
        on_url(&url);

        let redirect = listener
            .redirect(&self.redirect_path, self.timeout, |r| {
                r.get("state").ok().flatten() == Some(state.as_str())
                    && r.get("code").ok().flatten().is_some()
            })
            .await?;
        if redirect.get("state")? != Some(state.as_str()) {
            return Err(LoginError::StateMismatch.into());
        }
        // RFC 9207 §2.4: checked for error responses too.
        if let Some(issuer) = &self.issuer {
            match redirect.get("iss")? {
                Some(iss) if iss == issuer => {}
                None if !self.issuer_required => {}
                _ => return Err(LoginError::IssuerMismatch.into()),
            }
        }
        if let Some(error) = redirect.get("error")? {
            return Err(LoginError::denied(error, redirect.get("error_description")?).into());
        }
        let Some(code) = redirect.get("code")? else {
            return Err(LoginError::MissingCode.into());
        };
        // A code is single-use but presents no refresh token: a lost answer
        // costs a new login, nothing the coordinator must guard.
        let grant = self.token.exchange("authorization_code", false, |form| {
            form.pair("code", code);
            form.pair("redirect_uri", &redirect_uri);
            form.pair("code_verifier", pkce.verifier());
            Ok(())
        });
        grant.await
    }

    /// The authorization URL for one login.
    fn authorization_request(
        &self,
        client_id: &str,
        hints: &LoginHints,
        redirect_uri: &str,
        state: &str,
        pkce: &Pkce,
    ) -> String {
        let mut pairs: Vec<(Cow<'static, str>, String)> = vec![
            ("response_type".into(), "code".to_owned()),
            ("client_id".into(), client_id.to_owned()),
            ("redirect_uri".into(), redirect_uri.to_owned()),
            ("state".into(), state.to_owned()),
            ("code_challenge".into(), pkce.challenge().to_owned()),
            ("code_challenge_method".into(), pkce.method().to_owned()),
        ];
        hints.apply(self.params.as_slice(), &mut pairs);
        for resource in &self.token.resources {
            pairs.push(("resource".into(), resource.as_str().to_owned()));
        }
        let mut url = self.authorization_url.uri().to_string();
        url.push(if url.contains('?') { '&' } else { '?' });
        let start = url.len();
        let mut query = form_urlencoded::Serializer::for_suffix(url, start);
        for (name, value) in &pairs {
            query.append_pair(name, value);
        }
        query.finish()
    }
}

impl<C> fmt::Debug for AuthorizationCodeLogin<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("AuthorizationCodeLogin");
        f.field("authorization_url", self.authorization_url.uri());
        self.token.debug_fields(&mut f);
        f.field("hints", &self.hints)
            .field("redirect_path", &self.redirect_path)
            .field("timeout", &self.timeout)
            .field("issuer", &self.issuer)
            .field("issuer_required", &self.issuer_required)
            .finish_non_exhaustive()
    }
}

/// A login on demand: the current set is not used, every fetch is a new
/// login with the configured hints.
impl<C: HttpClient> TokenSource for AuthorizationCodeLogin<C> {
    fn fetch<'a>(
        &'a self,
        _current: Option<&'a TokenSet>,
    ) -> BoxFuture<'a, Result<TokenSet, Error>> {
        Box::pin(self.login())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{Request, Response};

    use super::*;

    fn login() -> AuthorizationCodeLogin<impl HttpClient> {
        AuthorizationCodeLogin::new(
            "https://auth.example.com/authorize?tenant=a"
                .parse()
                .unwrap(),
            "https://auth.example.com/token".parse().unwrap(),
            ClientAuth::none("cli app"),
            |_req: Request<Bytes>| async { Ok::<_, std::io::Error>(Response::new(Bytes::new())) },
        )
    }

    #[test]
    fn the_authorization_url_carries_pkce_state_and_hints() {
        let pkce = Pkce::new().unwrap();
        let login = login().scope("openid api").hints(
            LoginHints::new()
                .with_acr_values("mfa")
                .with_max_age(Duration::from_secs(60)),
        );
        let url = login.authorization_request(
            "cli app",
            &login.hints,
            "http://127.0.0.1:5/callback",
            "st8",
            &pkce,
        );
        assert!(url.starts_with("https://auth.example.com/authorize?tenant=a&response_type=code&"));
        for part in [
            "client_id=cli+app",
            "redirect_uri=http%3A%2F%2F127.0.0.1%3A5%2Fcallback",
            "state=st8",
            &format!("code_challenge={}", pkce.challenge()),
            "code_challenge_method=S256",
            "scope=openid+api",
            "acr_values=mfa",
            "max_age=60",
        ] {
            assert!(url.contains(part), "{part} not in {url}");
        }
        assert!(!url.contains(pkce.verifier()));
    }

    #[test]
    fn a_silent_login_sends_prompt_none_alone() {
        let pkce = Pkce::new().unwrap();
        let login = login().param("prompt", "consent").silent();
        let url = login.authorization_request(
            "cli app",
            &login.hints,
            "http://127.0.0.1:5/callback",
            "st8",
            &pkce,
        );
        assert_eq!(url.matches("prompt=").count(), 1, "{url}");
        assert!(url.contains("prompt=none"), "{url}");
    }

    #[tokio::test]
    async fn a_login_without_a_url_hook_fails_at_once() {
        let err = login().login().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Rejected);
    }

    #[tokio::test]
    async fn a_cleartext_authorization_endpoint_is_refused_before_the_user_is_sent() {
        let sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = sent.clone();
        let err = AuthorizationCodeLogin::new(
            "http://auth.example.com/authorize".parse().unwrap(),
            "https://auth.example.com/token".parse().unwrap(),
            ClientAuth::none("app"),
            |_req: Request<Bytes>| async { Ok::<_, std::io::Error>(Response::new(Bytes::new())) },
        )
        .on_authorization_url(move |_| seen.store(true, std::sync::atomic::Ordering::SeqCst))
        .login()
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Policy);
        assert!(!sent.load(std::sync::atomic::Ordering::SeqCst));
    }
}
