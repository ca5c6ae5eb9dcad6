//! The step every token-endpoint call shares: build the form-encoded POST,
//! send it through the [`HttpClient`], and map the answer to a [`TokenSet`]
//! or a typed [`Error`] (RFC 6749 §5.1, §5.2).
//!
//! Invariants:
//!
//! - No request carrying a secret is built for an endpoint the cleartext
//!   rule refuses ([`Endpoint::check`]).
//! - A secret the request carried is never copied into an error, in any
//!   encoding: of the answer only the JSON `error` and `error_description`
//!   are kept, each withheld whole if it quotes what was sent
//!   ([`Redactor`]), and checked before it is cut to length. Other bodies
//!   (HTML, plain text) are never copied.
//! - Every answer maps to a value or a typed error: a non-2xx status by the
//!   §5.2 rules, a 2xx body that is no token response to
//!   [`InvalidResponse`](ErrorKind::InvalidResponse). Nothing a server sends
//!   panics, and nothing but a 2xx token response is success.
//! - A transport failure of a request that presented a refresh token is
//!   [outcome unknown](Error::is_outcome_unknown) unless the error shows the
//!   request never left ([`was_not_sent`]). An HTTP answer, of any status,
//!   is an answer: never outcome unknown, even when its body could not be
//!   read ([`UnreadBody`](super::UnreadBody)). The one exception is a 2xx
//!   whose body could not be read, to a request that presented a refresh
//!   token: the server carried the grant out and may have rotated the
//!   refresh token, and the new one is in the body we lost.

use std::{
    borrow::Cow,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use super::{
    ClientAuth, ErrorCode, HttpClient, ResourceIndicator, answer_of, endpoint::Endpoint,
    redact::Redactor, was_not_sent,
};
use crate::{BoxError, Error, ErrorKind, TokenSet, token_response::OAuthErrorBody};
use tower_token_refresh_core::{backoff::retry_after, metrics};

/// The longest `Retry-After` of an authorization server believed: an hour.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The DPoP key a grant proves possession of, if it has one (feature
/// `jose`; without it, never).
#[cfg(feature = "jose")]
pub(crate) type DpopRef<'a> = Option<&'a crate::dpop::DpopKey>;
/// The DPoP key a grant proves possession of: none without feature `jose`.
#[cfg(not(feature = "jose"))]
pub(crate) type DpopRef<'a> = Option<&'a std::convert::Infallible>;

/// What every grant and login posts with: the token endpoint, the client
/// authentication, the [`HttpClient`], and the DPoP key the requests prove
/// possession of (feature `jose`).
pub(crate) struct TokenClient<C> {
    pub(crate) url: Endpoint,
    pub(crate) auth: ClientAuth,
    pub(crate) client: C,
    /// RFC 8707 `resource`s, sent on every request after the grant's own
    /// parameters.
    pub(crate) resources: Vec<ResourceIndicator>,
    #[cfg(feature = "jose")]
    dpop: Option<crate::dpop::DpopKey>,
}

impl<C> TokenClient<C> {
    pub(crate) fn new(token_url: http::Uri, auth: ClientAuth, client: C) -> Self {
        TokenClient {
            url: Endpoint::new(token_url, "token endpoint"),
            auth,
            client,
            resources: Vec::new(),
            #[cfg(feature = "jose")]
            dpop: None,
        }
    }

    /// Signs every later request with a proof of `dpop`.
    #[cfg(feature = "jose")]
    pub(crate) fn set_dpop(&mut self, dpop: crate::dpop::DpopKey) {
        self.dpop = Some(dpop);
    }

    /// The DPoP key the requests prove possession of, if any.
    pub(crate) fn dpop(&self) -> DpopRef<'_> {
        #[cfg(feature = "jose")]
        return self.dpop.as_ref();
        #[cfg(not(feature = "jose"))]
        None
    }

    /// The `Debug` fields every grant shows: never a secret.
    pub(crate) fn debug_fields(&self, f: &mut std::fmt::DebugStruct<'_, '_>) {
        self.url.debug_fields(f, "token_url");
        f.field("auth", &self.auth)
            .field("resources", &self.resources)
            .field("dpop", &self.dpop().is_some());
    }
}

impl<C: HttpClient> TokenClient<C> {
    /// Carries out the grant `grant_type` (RFC 6749 §4, §6): posts a form
    /// of `grant_type` and the pairs `pairs` writes after it, and maps the
    /// answer: the shared step of every grant and login.
    ///
    /// Every RFC 8707 `resource` of the client follows `pairs`.
    ///
    /// The endpoint is checked against the cleartext rule first, before
    /// `pairs` makes anything secret (a signed assertion).
    ///
    /// `presents_refresh_token`: the form presents a refresh token, which a
    /// request lost in flight leaves in doubt (outcome unknown).
    ///
    /// With a DPoP key (RFC 9449) the request carries a proof, the tokens
    /// are bound to the key, and a `use_dpop_nonce` answer is retried once
    /// with the server's nonce. The retry is built anew, `pairs` called
    /// again: a grant or client assertion is never sent twice (a server
    /// refuses a `jti` it has seen).
    pub(crate) async fn exchange<F>(
        &self,
        grant_type: &str,
        presents_refresh_token: bool,
        pairs: F,
    ) -> Result<TokenSet, Error>
    where
        F: Fn(&mut Form) -> Result<(), Error>,
    {
        self.url.check()?;
        let form = || {
            let mut form = Form::default();
            form.pair("grant_type", grant_type);
            pairs(&mut form)?;
            for resource in &self.resources {
                form.pair("resource", resource.as_str());
            }
            Ok::<_, Error>(form)
        };
        #[cfg(feature = "jose")]
        if let Some(dpop) = self.dpop() {
            return self
                .dpop_exchange(&form, presents_refresh_token, dpop)
                .await;
        }
        let (request, redactor) = token_request(&self.url, &self.auth, form()?)?;
        let (response, unread) = answer_of(self.client.send(request).await)
            .map_err(|e| transport_error(e, presents_refresh_token))?;
        received_answer(response, unread, &redactor, presents_refresh_token)
    }

    /// [`exchange`](Self::exchange) with DPoP proofs: a new proof per
    /// request, the nonces the endpoint hands out remembered, one retry for
    /// `use_dpop_nonce`.
    #[cfg(feature = "jose")]
    async fn dpop_exchange<F>(
        &self,
        form: &F,
        presents_refresh_token: bool,
        dpop: &crate::dpop::DpopKey,
    ) -> Result<TokenSet, Error>
    where
        F: Fn() -> Result<Form, Error>,
    {
        // The tokens are bound to the key this proof is signed with, even
        // if a store load switches `dpop` while the request is out.
        let key = dpop.signing_key();
        let uri = self.url.uri();
        let mut retried = false;
        loop {
            let (mut request, redactor) = token_request(&self.url, &self.auth, form()?)?;
            let proof = dpop.endpoint_proof(request.method(), uri)?;
            request.headers_mut().insert(crate::dpop::DPOP, proof);
            let (response, unread) = answer_of(self.client.send(request).await)
                .map_err(|e| transport_error(e, presents_refresh_token))?;
            // An answer whose body was lost still brings its headers.
            let fresh_nonce = dpop.remember_endpoint_nonce(uri, response.headers());
            // RFC 9449 §8: the server refused the proof for want of a nonce
            // before it carried out the grant. Presenting the same refresh
            // token again is therefore not reuse (RFC 9700 §4.14.2): the
            // first request spent nothing. Once only: a server that keeps
            // asking gets its error back.
            if !retried && fresh_nonce && asks_for_nonce(&response) {
                tracing::debug!("token endpoint asked for a DPoP nonce; retrying once with it");
                metrics::dpop_nonce_retry(metrics::NonceEndpoint::Token);
                retried = true;
                continue;
            }
            return received_answer(response, unread, &redactor, presents_refresh_token)
                .map(|t| crate::dpop::TokenSetExt::with_dpop_key(t, key));
        }
    }
}

/// A 400 whose OAuth2 error is `use_dpop_nonce` (RFC 9449 §8).
#[cfg(feature = "jose")]
fn asks_for_nonce(response: &Response<Bytes>) -> bool {
    response.status() == StatusCode::BAD_REQUEST
        && serde_json::from_slice::<OAuthErrorBody>(response.body())
            .is_ok_and(|b| ErrorCode::from(b.error) == ErrorCode::UseDpopNonce)
}

/// The error for an [`HttpClient`] failure: no answer came. Outcome unknown
/// when the request presented a refresh token and may have left.
fn transport_error(cause: crate::BoxError, presented_refresh_token: bool) -> Error {
    if was_not_sent(&*cause) {
        return Error::transient("token endpoint unreachable").with_source(cause);
    }
    let err = Error::transient("no answer from the token endpoint").with_source(cause);
    if presented_refresh_token {
        err.with_outcome_unknown()
    } else {
        err
    }
}

/// The POST of `form` to `endpoint`, authenticated with `auth`, and the
/// [`Redactor`] for its answer. Refused (a [`Policy`](ErrorKind::Policy)
/// error) before it is built if the cleartext rule forbids the endpoint.
pub(crate) fn token_request(
    endpoint: &Endpoint,
    auth: &ClientAuth,
    mut form: Form,
) -> Result<(Request<Bytes>, Redactor), Error> {
    endpoint.check()?;
    let mut headers = http::HeaderMap::new();
    auth.apply(&mut form, &mut headers, endpoint.uri())?;
    let mut request = Request::new(Bytes::from(form.0));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = endpoint.uri().clone();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    *request.headers_mut() = headers;
    let redactor = Redactor::of(&request);
    Ok((request, redactor))
}

/// [`token_answer`] for what a client brought back: `unread` is why the
/// body of `response` could not be read, if it could not (then `response`
/// has only the status and headers).
fn received_answer(
    response: Response<Bytes>,
    unread: Option<BoxError>,
    redactor: &Redactor,
    presented_refresh_token: bool,
) -> Result<TokenSet, Error> {
    let Some(cause) = unread else {
        return token_answer(response, redactor);
    };
    let status = response.status();
    if !status.is_success() {
        // The server refused, whatever the body said: read as an error body
        // that is no OAuth2 error.
        return Err(error_response(&response, "token endpoint", redactor).with_source(cause));
    }
    // The server carried the grant out and its tokens are in the body we
    // lost. That is a wrong answer, not a lost one, but for one thing: a
    // server that rotates refresh tokens has spent the one presented and
    // sent its successor in that body. Only for that is it outcome unknown.
    let err = if presented_refresh_token {
        Error::invalid_response(format!(
            "token endpoint answered HTTP {} with a body that could not be read; \
             the server may have rotated the refresh token, and the new one is in that body",
            status.as_u16()
        ))
        .with_outcome_unknown()
    } else {
        Error::invalid_response(format!(
            "token endpoint answered HTTP {} with a body that could not be read",
            status.as_u16()
        ))
    };
    Err(err.with_source(cause))
}

fn token_answer(response: Response<Bytes>, redactor: &Redactor) -> Result<TokenSet, Error> {
    if response.status().is_success() {
        return crate::token_response::parse(response.body());
    }
    Err(error_response(&response, "token endpoint", redactor))
}

/// Maps a token endpoint's response to `request` to a token set or a
/// typed error (RFC 6749 §5.1, §5.2), for a grant this crate does not
/// have.
///
/// `request` is what was sent: no secret it carried (its `Authorization`
/// credentials, its form values but `grant_type`, `scope`, `client_id` and
/// the like), in any encoding, is copied from the answer into the error.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use tower_token_refresh_core::ErrorKind;
/// use tower_token_refresh_oauth2::parse_token_response;
///
/// let request = Request::post("https://auth.example.com/token")
///     .body(Bytes::from_static(b"grant_type=password&username=ann&password=hunter2%21"))
///     .unwrap();
/// let mut response = Response::new(Bytes::from_static(
///     br#"{"error":"invalid_grant","error_description":"bad password hunter2!"}"#,
/// ));
/// *response.status_mut() = StatusCode::BAD_REQUEST;
/// let err = parse_token_response(&request, response).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::SessionExpired);
/// assert_eq!(err.oauth_error(), Some("invalid_grant"));
/// assert!(!err.to_string().contains("hunter2"));
/// ```
///
/// # Errors
///
/// See [`RefreshTokenGrant`](super::RefreshTokenGrant) for the mapping.
pub fn parse_token_response(
    request: &Request<Bytes>,
    response: Response<Bytes>,
) -> Result<TokenSet, Error> {
    token_answer(response, &Redactor::of(request))
}

/// The typed error for a non-2xx answer of a token, introspection,
/// revocation or discovery endpoint (RFC 6749 §5.2 mapping, `Retry-After`
/// kept, up to an hour). Of the body only a JSON `error` and `error_description` are
/// copied, each withheld whole if `redactor` finds a secret in it, then
/// cut to length.
pub(crate) fn error_response(
    response: &Response<Bytes>,
    endpoint: &str,
    redactor: &Redactor,
) -> Error {
    let status = response.status();
    let retry_after =
        retry_after(response.headers(), SystemTime::now()).map(|after| after.min(MAX_RETRY_AFTER));
    let body: Option<OAuthErrorBody> = serde_json::from_slice(response.body()).ok();
    let mut err = match &body {
        Some(b) => {
            let description = match b.error_description.as_deref() {
                None => Cow::Borrowed("no description"),
                Some(d) if redactor.quotes(d) => Cow::Borrowed(
                    "the server's error description was withheld: it quoted a credential",
                ),
                Some(d) => printable(truncate(d, 200)),
            };
            let code = ErrorCode::from(b.error.as_str());
            let kind = match code {
                ErrorCode::InvalidGrant => ErrorKind::SessionExpired,
                ErrorCode::TemporarilyUnavailable | ErrorCode::SlowDown => ErrorKind::Transient,
                _ if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                    ErrorKind::Transient
                }
                _ => ErrorKind::Rejected,
            };
            let code = if redactor.quotes(&b.error) {
                ErrorCode::from("<withheld>")
            } else if let ErrorCode::Other(text) = &code {
                ErrorCode::from(printable(truncate(text, 64)))
            } else {
                code
            };
            Error::new(kind, format!("HTTP {}: {description}", status.as_u16()))
                .with_oauth_error(code)
        }
        None if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
            Error::transient(format!("{endpoint} answered HTTP {}", status.as_u16()))
        }
        None => Error::invalid_response(format!(
            "{endpoint} answered HTTP {} without an OAuth2 error body",
            status.as_u16()
        )),
    };
    if let Some(after) = retry_after {
        err = err.with_retry_after(after);
    }
    err
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` with control characters replaced, so that server text cannot forge
/// log lines or terminal output.
fn printable(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(
            s.chars()
                .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

/// An `application/x-www-form-urlencoded` body under construction.
#[derive(Clone, Default)]
pub(crate) struct Form(String);

impl Form {
    pub(crate) fn pair(&mut self, name: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0
            .extend(form_urlencoded::byte_serialize(name.as_bytes()));
        self.0.push('=');
        self.0
            .extend(form_urlencoded::byte_serialize(value.as_bytes()));
    }

    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::response;

    #[test]
    fn form_encoding_follows_whatwg() {
        let mut form = Form::default();
        form.pair("a b&c=d/é~*-._", "x+y");
        form.pair("empty", "");
        assert_eq!(form.as_str(), "a+b%26c%3Dd%2F%C3%A9%7E*-._=x%2By&empty=");
    }

    #[test]
    fn error_responses_map_to_kinds() {
        let cases = [
            (
                400,
                r#"{"error":"invalid_grant"}"#,
                ErrorKind::SessionExpired,
            ),
            (401, r#"{"error":"invalid_client"}"#, ErrorKind::Rejected),
            (400, r#"{"error":"invalid_scope"}"#, ErrorKind::Rejected),
            (
                400,
                r#"{"error":"unsupported_grant_type"}"#,
                ErrorKind::Rejected,
            ),
            (
                503,
                r#"{"error":"temporarily_unavailable"}"#,
                ErrorKind::Transient,
            ),
            (500, "<html>oops</html>", ErrorKind::Transient),
            (429, "", ErrorKind::Transient),
            (404, "not found", ErrorKind::InvalidResponse),
            (200, "{not json", ErrorKind::InvalidResponse),
        ];
        for (status, body, kind) in cases {
            let err = token_answer(response(status, body), &Redactor::none()).unwrap_err();
            assert_eq!(err.kind(), kind, "{status} {body}: {err}");
        }
    }

    #[test]
    fn control_characters_in_server_text_are_replaced() {
        let err = token_answer(
            response(
                400,
                r#"{"error":"invalid_request\n","error_description":"bad\r\nINFO forged line\u001b[31m"}"#,
            ),
            &Redactor::none(),
        )
        .unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(err.oauth_error(), Some("invalid_request\u{FFFD}"));
    }

    #[test]
    fn a_description_is_checked_whole_before_it_is_cut() {
        // The secret starts at byte 195: the cut at 200 leaves 5 bytes of
        // it, too few to match; checked first, the whole is withheld.
        let secret = "rt-0123456789abcdef";
        let description = format!("{}{secret} is revoked", "x".repeat(195));
        let body = serde_json::json!({"error": "invalid_grant", "error_description": description});
        let r = Response::builder()
            .status(400)
            .body(Bytes::from(body.to_string()))
            .unwrap();
        let sent = Request::new(Bytes::from(format!(
            "grant_type=refresh_token&refresh_token={secret}"
        )));
        let err = parse_token_response(&sent, r).unwrap_err();
        assert!(err.message().contains("withheld"), "{err}");
        assert!(!err.to_string().contains("rt-01"), "{err}");
    }

    #[test]
    fn retry_after_seconds_are_kept() {
        let mut r = response(429, "");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        let err = token_answer(r, &Redactor::none()).unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn retry_after_date_on_a_429_reaches_the_error_at_most_an_hour() {
        let in_90s = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(90));
        let mut r = response(429, r#"{"error":"slow_down"}"#);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_str(&in_90s).unwrap());
        let err = token_answer(r, &Redactor::none()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient);
        let wait = err.retry_after().unwrap();
        assert!(
            wait <= Duration::from_secs(90) && wait >= Duration::from_secs(85),
            "{wait:?}"
        );

        let mut r = response(503, "");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("86400"));
        let err = token_answer(r, &Redactor::none()).unwrap_err();
        assert_eq!(err.retry_after(), Some(MAX_RETRY_AFTER));
    }
}
