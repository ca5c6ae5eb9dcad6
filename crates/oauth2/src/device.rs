//! The device authorization grant (RFC 8628): a login for devices and
//! terminals without a browser, the user finishing it on another device.
//!
//! Invariants (RFC 8628 §3.4, §3.5):
//!
//! - The token endpoint is polled no sooner than `interval` after the
//!   previous poll (5 s when the server names none); `slow_down` adds 5 s
//!   to the interval for this and every later poll; a poll that got no
//!   answer doubles it.
//! - `authorization_pending` and `slow_down` keep polling;
//!   `access_denied` and `expired_token` end the login with a typed
//!   [`LoginError`]; any other error ends it as mapped for the token
//!   endpoint.
//! - No poll is sent at or after the deadline (`expires_in` after the
//!   authorization answer): the login ends with [`LoginError::Expired`].
//!   The loop is bounded by that deadline and an interval of at least 1 s.
//! - The `device_code` is a secret: never in `Debug`, errors or logs.

use std::{borrow::Cow, fmt, sync::Arc, time::Duration};

use http::Uri;
use serde::Deserialize;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::{
    ClientAuth, Endpoint, ErrorCode, HttpClient, LoginError, LoginHints, Params, TokenClient,
    answer_of, error_response, login::form_of, token_request, with_unread,
};
use crate::{BoxFuture, Error, TokenSet, TokenSource};

/// The grant type of the polling requests (RFC 8628 §3.4).
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The interval when the server names none (RFC 8628 §3.2).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// What `slow_down` adds to the interval (RFC 8628 §3.5).
const SLOW_DOWN: Duration = Duration::from_secs(5);
/// Bounds on what the server may set: no busy polling, no endless login.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(60);
const MAX_LIFETIME: Duration = Duration::from_secs(3600);

type CodeHook = Arc<dyn Fn(&DeviceAuthorization) + Send + Sync>;

/// What the user must be shown: where to go and the code to enter (RFC
/// 8628 §3.2).
///
/// # Example
///
/// ```
/// # fn show(auth: &tower_token_refresh_oauth2::DeviceAuthorization) {
/// match auth.verification_uri_complete() {
///     Some(link) => eprintln!("Open {link}"),
///     None => eprintln!("Open {} and enter {}", auth.verification_uri(), auth.user_code()),
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct DeviceAuthorization {
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: Duration,
}

impl DeviceAuthorization {
    /// The code the user enters at the verification URI.
    pub fn user_code(&self) -> &str {
        &self.user_code
    }

    /// Where the user goes to enter the code.
    pub fn verification_uri(&self) -> &str {
        &self.verification_uri
    }

    /// The verification URI with the code in it, if the server gave one
    /// (for a QR code or a link).
    pub fn verification_uri_complete(&self) -> Option<&str> {
        self.verification_uri_complete.as_deref()
    }

    /// How long the user has to finish.
    pub fn expires_in(&self) -> Duration {
        self.expires_in
    }
}

impl fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The user code is for the user's eyes, not for logs.
        f.debug_struct("DeviceAuthorization")
            .field("verification_uri", &self.verification_uri)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct RawAuthorization {
    device_code: String,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: u64,
    interval: Option<u64>,
}

/// An interactive login with the device authorization grant (RFC 8628).
///
/// [`login`](Self::login) asks the device authorization endpoint for a
/// code, shows it through the [`on_user_code`](Self::on_user_code) hook,
/// and polls the token endpoint until the user has approved (tokens),
/// refused ([`LoginError::Denied`]), or the code expired
/// ([`LoginError::Expired`]).
///
/// As a [`TokenSource`] it is the last link of a fallback chain; give the
/// [`TokenManager`](crate::TokenManager) an
/// [`attempt_timeout`](tower_token_refresh_core::TokenManagerBuilder::attempt_timeout) as long
/// as the codes live (the server's `expires_in`, often 5 to 15 minutes).
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use tower_token_refresh_oauth2::{ClientAuth, DeviceLogin};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Any async closure is an HttpClient; this one plays both endpoints.
/// let http = |req: Request<Bytes>| async move {
///     let body: &[u8] = if req.uri().path() == "/device" {
///         br#"{"device_code":"dc","user_code":"WDJB-MJHT","verification_uri":"https://auth.example.com/device","expires_in":600}"#
///     } else {
///         br#"{"access_token":"at","token_type":"Bearer","expires_in":3600}"#
///     };
///     Ok::<_, std::io::Error>(Response::new(Bytes::from_static(body)))
/// };
/// let login = DeviceLogin::new(
///     "https://auth.example.com/device".parse()?,
///     "https://auth.example.com/token".parse()?,
///     ClientAuth::none("my-tv-app"),
///     http,
/// )
/// .scope("openid offline_access")
/// .on_user_code(|auth| eprintln!("Go to {} and enter {}", auth.verification_uri(), auth.user_code()));
/// let tokens = login.login().await?;
/// assert_eq!(tokens.access_token().secret(), "at");
/// # Ok(()) }
/// ```
pub struct DeviceLogin<C> {
    device_url: Endpoint,
    token: TokenClient<C>,
    hints: LoginHints,
    params: Params,
    on_code: Option<CodeHook>,
}

impl<C> DeviceLogin<C> {
    /// A login asking `device_authorization_url` for codes and polling
    /// `token_url`, both through `client`.
    pub fn new(device_authorization_url: Uri, token_url: Uri, auth: ClientAuth, client: C) -> Self {
        DeviceLogin {
            device_url: Endpoint::new(device_authorization_url, "device authorization endpoint"),
            token: TokenClient::new(token_url, auth, client),
            hints: LoginHints::new(),
            params: Params::default(),
            on_code: None,
        }
    }

    /// Asks for this scope (space-separated).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.hints = self.hints.with_scope(scope);
        self
    }

    /// The hints every login of this one sends (`acr_values`, `max_age`,
    /// as parameters of the device authorization request);
    /// [`login_with`](Self::login_with) overrides them for one login.
    pub fn hints(mut self, hints: LoginHints) -> Self {
        self.hints = hints.over(&self.hints);
        self
    }

    /// Names the resource the tokens are for (RFC 8707 `resource`), on the
    /// device authorization request and every poll of the token endpoint.
    /// May be given more than once.
    pub fn resource(mut self, resource: crate::ResourceIndicator) -> Self {
        self.token.resources.push(resource);
        self
    }

    /// Adds a parameter to the device authorization request (`audience`,
    /// …).
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push(name, value);
        self
    }

    /// Shows the user where to go and what to enter. Required; called once
    /// per login, before polling starts.
    pub fn on_user_code(
        mut self,
        hook: impl Fn(&DeviceAuthorization) + Send + Sync + 'static,
    ) -> Self {
        self.on_code = Some(Arc::new(hook));
        self
    }

    /// Allows cleartext `http://` endpoints on hosts that are not
    /// loopback: for a development server only.
    pub fn allow_cleartext(mut self, allow: bool) -> Self {
        self.device_url.set_allow_cleartext(allow);
        self.token.url.set_allow_cleartext(allow);
        self
    }

    /// Proves possession of a DPoP key at the token endpoint (RFC 9449;
    /// feature `jose`; see [`dpop`](crate::dpop#at-the-token-endpoint)):
    /// every poll carries a new proof, so the session starts bound. Give
    /// the refresh grant and the manager the same key.
    #[cfg(feature = "jose")]
    pub fn dpop(mut self, dpop: crate::dpop::DpopKey) -> Self {
        self.token.set_dpop(dpop);
        self
    }
}

impl<C: HttpClient> DeviceLogin<C> {
    /// Runs one login with the configured hints.
    ///
    /// # Errors
    ///
    /// [`LoginError::Denied`] and [`LoginError::Expired`] (as the
    /// [`Error`]'s source), the device authorization endpoint's and token
    /// endpoint's errors mapped as for
    /// [`RefreshTokenGrant`](super::RefreshTokenGrant), and a
    /// [`Rejected`](crate::ErrorKind::Rejected) error at once when no
    /// [`on_user_code`](Self::on_user_code) hook is set.
    pub async fn login(&self) -> Result<TokenSet, Error> {
        self.login_with(&LoginHints::new()).await
    }

    /// Runs one login, `hints` over the configured ones.
    ///
    /// # Errors
    ///
    /// As for [`login`](Self::login).
    pub async fn login_with(&self, hints: &LoginHints) -> Result<TokenSet, Error> {
        let Some(on_code) = &self.on_code else {
            return Err(Error::new(
                crate::ErrorKind::Rejected,
                "no on_user_code hook: the user cannot be shown the code",
            ));
        };
        self.token.url.check()?;
        let (mut raw, started) = self.authorize(&hints.over(&self.hints)).await?;
        let device_code = Zeroizing::new(std::mem::take(&mut raw.device_code));
        let expires_in = Duration::from_secs(raw.expires_in).min(MAX_LIFETIME);
        let interval = raw
            .interval
            .map_or(DEFAULT_INTERVAL, Duration::from_secs)
            .clamp(MIN_INTERVAL, MAX_INTERVAL);
        let shown = DeviceAuthorization {
            user_code: raw.user_code,
            verification_uri: raw.verification_uri,
            verification_uri_complete: raw.verification_uri_complete,
            expires_in,
        };
        on_code(&shown);
        self.poll(&device_code, started + expires_in, interval)
            .await
    }

    /// The device authorization request (RFC 8628 §3.1, §3.2), and when it
    /// was answered.
    async fn authorize(&self, hints: &LoginHints) -> Result<(RawAuthorization, Instant), Error> {
        let mut pairs: Vec<(Cow<'static, str>, String)> = Vec::new();
        hints.apply(self.params.as_slice(), &mut pairs);
        for resource in &self.token.resources {
            pairs.push(("resource".into(), resource.as_str().to_owned()));
        }
        let (request, redactor) =
            token_request(&self.device_url, &self.token.auth, form_of(&pairs))?;
        let (response, unread) = answer_of(self.token.client.send(request).await).map_err(|e| {
            Error::transient("no answer from the device authorization endpoint").with_source(e)
        })?;
        let answered = Instant::now();
        if !response.status().is_success() {
            let err = error_response(&response, "device authorization endpoint", &redactor);
            return Err(with_unread(err, unread));
        }
        let raw: RawAuthorization = serde_json::from_slice(response.body()).map_err(|_| {
            let err =
                Error::invalid_response("the device authorization answer is not the expected JSON");
            with_unread(err, unread)
        })?;
        if raw.device_code.is_empty() || raw.user_code.is_empty() || raw.expires_in == 0 {
            return Err(Error::invalid_response(
                "the device authorization answer has an empty code or no lifetime",
            ));
        }
        Ok((raw, answered))
    }

    /// Polls the token endpoint (RFC 8628 §3.4, §3.5) until an answer other
    /// than "not yet", or the deadline.
    async fn poll(
        &self,
        device_code: &str,
        deadline: Instant,
        mut interval: Duration,
    ) -> Result<TokenSet, Error> {
        loop {
            let next = Instant::now() + interval;
            if next >= deadline {
                return Err(LoginError::Expired.into());
            }
            tokio::time::sleep_until(next).await;
            let poll = self.token.exchange(GRANT_TYPE, false, |form| {
                form.pair("device_code", device_code);
                Ok(())
            });
            let err = match poll.await {
                Ok(tokens) => return Ok(tokens),
                Err(err) => err,
            };
            match err.oauth_error_code() {
                Some(ErrorCode::AuthorizationPending) => {}
                Some(ErrorCode::SlowDown) => interval = (interval + SLOW_DOWN).min(MAX_INTERVAL),
                Some(code @ ErrorCode::AccessDenied) => {
                    return Err(LoginError::denied(code.as_str(), None).into());
                }
                Some(ErrorCode::ExpiredToken) => return Err(LoginError::Expired.into()),
                // No answer: RFC 8628 §3.5 asks for backoff on a timeout.
                None if err.kind() == crate::ErrorKind::Transient => {
                    interval = (interval * 2).min(MAX_INTERVAL);
                }
                _ => return Err(err),
            }
            tracing::debug!(?interval, "device login not finished; polling again");
        }
    }
}

impl<C> fmt::Debug for DeviceLogin<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("DeviceLogin");
        f.field("device_authorization_url", self.device_url.uri());
        self.token.debug_fields(&mut f);
        f.field("hints", &self.hints).finish_non_exhaustive()
    }
}

/// A login on demand: the current set is not used, every fetch is a new
/// login with the configured hints.
impl<C: HttpClient> TokenSource for DeviceLogin<C> {
    fn fetch<'a>(
        &'a self,
        _current: Option<&'a TokenSet>,
    ) -> BoxFuture<'a, Result<TokenSet, Error>> {
        Box::pin(self.login())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;
    use http::Request;

    use super::*;
    use crate::{ErrorKind, tests::response};

    /// A device flow whose token endpoint answers `script` in turn (then
    /// `authorization_pending` forever), recording when each poll came.
    struct Script {
        polls: Arc<Mutex<Vec<Duration>>>,
    }

    fn device_login(
        authorization: &'static str,
        script: Vec<(u16, &'static str)>,
    ) -> (DeviceLogin<impl HttpClient>, Script) {
        let start = Instant::now();
        let polls = Arc::new(Mutex::new(Vec::new()));
        let seen = polls.clone();
        let script = Arc::new(Mutex::new(script.into_iter()));
        let client = move |req: Request<Bytes>| {
            let seen = seen.clone();
            let script = script.clone();
            async move {
                if req.uri().path() == "/device" {
                    return Ok::<_, std::io::Error>(response(200, authorization));
                }
                let body = std::str::from_utf8(req.body()).unwrap();
                assert!(body.contains("device_code=dc-secret"), "{body}");
                seen.lock().unwrap().push(start.elapsed());
                let next = script.lock().unwrap().next();
                Ok(match next {
                    Some((status, body)) => response(status, body),
                    None => response(400, r#"{"error":"authorization_pending"}"#),
                })
            }
        };
        let login = DeviceLogin::new(
            "https://auth.example.com/device".parse().unwrap(),
            "https://auth.example.com/token".parse().unwrap(),
            ClientAuth::none("tv"),
            client,
        )
        .on_user_code(|_| {});
        (login, Script { polls })
    }

    const AUTH: &str = r#"{"device_code":"dc-secret","user_code":"ABCD-EFGH","verification_uri":"https://auth.example.com/activate","expires_in":60,"interval":5}"#;
    const PENDING: (u16, &str) = (400, r#"{"error":"authorization_pending"}"#);
    const SLOW_DOWN_ANSWER: (u16, &str) = (400, r#"{"error":"slow_down"}"#);
    const TOKENS: (u16, &str) = (200, r#"{"access_token":"at","token_type":"Bearer"}"#);

    fn secs(list: &[u64]) -> Vec<Duration> {
        list.iter().copied().map(Duration::from_secs).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn pending_keeps_polling_at_the_interval() {
        let (login, script) = device_login(AUTH, vec![PENDING, PENDING, TOKENS]);
        let tokens = login.login().await.unwrap();
        assert_eq!(tokens.access_token().secret(), "at");
        assert_eq!(*script.polls.lock().unwrap(), secs(&[5, 10, 15]));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_down_adds_five_seconds_to_every_later_interval() {
        let (login, script) = device_login(
            AUTH,
            vec![SLOW_DOWN_ANSWER, PENDING, SLOW_DOWN_ANSWER, TOKENS],
        );
        login.login().await.unwrap();
        // 5, then +10 (slow_down), +10, then +15 (slow_down again).
        assert_eq!(*script.polls.lock().unwrap(), secs(&[5, 15, 25, 40]));
    }

    #[tokio::test(start_paused = true)]
    async fn no_interval_means_five_seconds() {
        const NO_INTERVAL: &str = r#"{"device_code":"dc-secret","user_code":"A","verification_uri":"https://a.example/","expires_in":60}"#;
        let (login, script) = device_login(NO_INTERVAL, vec![PENDING, TOKENS]);
        login.login().await.unwrap();
        assert_eq!(*script.polls.lock().unwrap(), secs(&[5, 10]));
    }

    #[tokio::test(start_paused = true)]
    async fn access_denied_ends_the_login_with_a_typed_error() {
        let (login, script) =
            device_login(AUTH, vec![PENDING, (400, r#"{"error":"access_denied"}"#)]);
        let err = login.login().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionExpired);
        assert!(matches!(
            LoginError::of(&err),
            Some(LoginError::Denied { error, .. }) if error == "access_denied"
        ));
        assert_eq!(script.polls.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_token_ends_the_login_with_a_typed_error() {
        let (login, _script) = device_login(AUTH, vec![(400, r#"{"error":"expired_token"}"#)]);
        let err = login.login().await.unwrap_err();
        assert_eq!(LoginError::of(&err), Some(&LoginError::Expired));
        assert!(!format!("{err} {err:?}").contains("dc-secret"));
    }

    #[tokio::test(start_paused = true)]
    async fn no_poll_is_sent_after_expires_in() {
        // Always pending: polls at 5 … 55 s, none at or after 60 s.
        let (login, script) = device_login(AUTH, vec![]);
        let started = Instant::now();
        let err = login.login().await.unwrap_err();
        assert_eq!(LoginError::of(&err), Some(&LoginError::Expired));
        assert_eq!(
            *script.polls.lock().unwrap(),
            secs(&[5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55])
        );
        // It gives up as soon as the next poll would be too late.
        assert_eq!(started.elapsed(), Duration::from_secs(55));
    }

    #[tokio::test(start_paused = true)]
    async fn other_token_errors_end_the_login_as_mapped() {
        let (login, script) = device_login(AUTH, vec![(401, r#"{"error":"invalid_client"}"#)]);
        let err = login.login().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Rejected);
        assert_eq!(LoginError::of(&err), None);
        assert_eq!(script.polls.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_user_is_shown_the_code_once_and_debug_hides_it() {
        let shown = Arc::new(Mutex::new(Vec::new()));
        let sink = shown.clone();
        let (login, _script) = device_login(AUTH, vec![TOKENS]);
        let login = login.on_user_code(move |auth| sink.lock().unwrap().push(auth.clone()));
        login.login().await.unwrap();
        let shown = shown.lock().unwrap();
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].user_code(), "ABCD-EFGH");
        assert_eq!(
            shown[0].verification_uri(),
            "https://auth.example.com/activate"
        );
        assert_eq!(shown[0].expires_in(), Duration::from_secs(60));
        assert!(!format!("{:?}", shown[0]).contains("ABCD"));
        assert!(!format!("{login:?}").contains("dc-secret"));
    }
}
