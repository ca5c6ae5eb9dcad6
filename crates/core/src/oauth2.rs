//! OAuth2 token sources (RFC 6749) and the small HTTP client trait they use.
//!
//! Core does not depend on tower: a grant calls its token endpoint through
//! [`HttpClient`], which any async closure implements. The `tower-token-refresh`
//! crate adapts any `tower::Service` (hyper-util's client, say) to it.

use std::{
    fmt,
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};

use crate::{
    BoxError, BoxFuture, ClientSecret, Error, ErrorKind, TokenSet, TokenSource,
    token::OAuthErrorBody,
};

mod client_credentials;
mod discovery;
mod introspection;
mod revocation;

pub use client_credentials::ClientCredentialsGrant;
pub use discovery::ProviderMetadata;
pub use introspection::{Introspection, IntrospectionClient};
pub use revocation::{RevocationClient, TokenTypeHint};

/// Sends one request to a token endpoint and returns the whole response.
///
/// Implementations should limit the size of the body they collect (the
/// tower adapter in `tower-token-refresh` stops at 64 KiB by default).
/// Any async closure `Fn(Request<Bytes>) -> Future<Output = Result<Response<Bytes>, E>>`
/// is an `HttpClient`.
pub trait HttpClient: Send + Sync + 'static {
    /// Sends `request` and collects the response.
    fn send(&self, request: Request<Bytes>) -> BoxFuture<'_, Result<Response<Bytes>, BoxError>>;
}

impl<F, Fut, E> HttpClient for F
where
    F: Fn(Request<Bytes>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Bytes>, E>> + Send + 'static,
    E: Into<BoxError>,
{
    fn send(&self, request: Request<Bytes>) -> BoxFuture<'_, Result<Response<Bytes>, BoxError>> {
        let fut = self(request);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

impl<T: HttpClient + ?Sized> HttpClient for Arc<T> {
    fn send(&self, request: Request<Bytes>) -> BoxFuture<'_, Result<Response<Bytes>, BoxError>> {
        (**self).send(request)
    }
}

/// How the client authenticates to the token endpoint (RFC 6749 §2.3).
#[derive(Clone)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic with the id and secret, each
    /// form-urlencoded first (§2.3.1).
    Basic {
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: ClientSecret,
    },
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    Post {
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: ClientSecret,
    },
    /// A public client: only `client_id` in the form body.
    None {
        /// The client id.
        client_id: String,
    },
}

impl ClientAuth {
    /// `client_secret_basic`.
    pub fn basic(client_id: impl Into<String>, client_secret: impl Into<ClientSecret>) -> Self {
        ClientAuth::Basic {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        }
    }

    /// `client_secret_post`.
    pub fn post(client_id: impl Into<String>, client_secret: impl Into<ClientSecret>) -> Self {
        ClientAuth::Post {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        }
    }

    /// A public client (no secret).
    pub fn none(client_id: impl Into<String>) -> Self {
        ClientAuth::None {
            client_id: client_id.into(),
        }
    }

    fn apply(&self, form: &mut Form, headers: &mut http::HeaderMap) -> Result<(), Error> {
        match self {
            ClientAuth::Basic {
                client_id,
                client_secret,
            } => {
                let mut pair = String::new();
                form_encode_into(&mut pair, client_id);
                pair.push(':');
                form_encode_into(&mut pair, client_secret.secret());
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                let mut value =
                    HeaderValue::try_from(format!("Basic {encoded}")).map_err(|_| {
                        Error::new(
                            ErrorKind::Rejected,
                            "client credentials do not fit a header",
                        )
                    })?;
                value.set_sensitive(true);
                headers.insert(header::AUTHORIZATION, value);
            }
            ClientAuth::Post {
                client_id,
                client_secret,
            } => {
                form.pair("client_id", client_id);
                form.pair("client_secret", client_secret.secret());
            }
            ClientAuth::None { client_id } => form.pair("client_id", client_id),
        }
        Ok(())
    }
}

impl ClientAuth {
    /// The client secret, or `""` for a public client: what error texts
    /// must not quote.
    pub(crate) fn secret(&self) -> &str {
        match self {
            ClientAuth::Basic { client_secret, .. } | ClientAuth::Post { client_secret, .. } => {
                client_secret.secret()
            }
            ClientAuth::None { .. } => "",
        }
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (method, id) = match self {
            ClientAuth::Basic { client_id, .. } => ("client_secret_basic", client_id),
            ClientAuth::Post { client_id, .. } => ("client_secret_post", client_id),
            ClientAuth::None { client_id } => ("none", client_id),
        };
        f.debug_struct("ClientAuth")
            .field("method", &method)
            .field("client_id", id)
            .finish_non_exhaustive()
    }
}

/// The OAuth2 `refresh_token` grant (RFC 6749 §6) as a [`TokenSource`].
///
/// Posts `grant_type=refresh_token` with the current refresh token. A
/// response without a refresh token keeps the old one; one with a new refresh
/// token replaces it (rotation). `invalid_grant` ends the session; other
/// §5.2 errors are [`Rejected`](ErrorKind::Rejected); 5xx, 429 and
/// `temporarily_unavailable` are [`Transient`](ErrorKind::Transient) (with
/// `Retry-After` when given); an unparsable answer is
/// [`InvalidResponse`](ErrorKind::InvalidResponse).
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use tower_token_refresh_core::{oauth2::{ClientAuth, RefreshTokenGrant}, TokenManager, TokenSet};
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
    token_url: Uri,
    auth: ClientAuth,
    client: C,
    scope: Option<String>,
    extra: Vec<(String, String)>,
}

impl<C> RefreshTokenGrant<C> {
    /// A grant posting to `token_url` through `client`.
    pub fn new(token_url: Uri, auth: ClientAuth, client: C) -> Self {
        RefreshTokenGrant {
            token_url,
            auth,
            client,
            scope: None,
            extra: Vec::new(),
        }
    }

    /// Asks for this scope (no wider than the original grant's, §6).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Adds a form parameter to every request (`resource`, `audience`, …).
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((name.into(), value.into()));
        self
    }
}

impl<C> fmt::Debug for RefreshTokenGrant<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshTokenGrant")
            .field("token_url", &self.token_url)
            .field("auth", &self.auth)
            .field("scope", &self.scope)
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
            let mut form = Form::default();
            form.pair("grant_type", "refresh_token");
            form.pair("refresh_token", refresh_token.secret());
            if let Some(scope) = &self.scope {
                form.pair("scope", scope);
            }
            for (name, value) in &self.extra {
                form.pair(name, value);
            }
            let tokens = exchange(
                &self.client,
                &self.token_url,
                &self.auth,
                form,
                &[refresh_token.secret()],
            )
            .await?;
            Ok(match tokens.refresh_token() {
                Some(_) => tokens,
                None => tokens.with_refresh_token_opt(Some(refresh_token.clone())),
            })
        })
    }
}

/// Posts a token request and parses the answer: the shared step of every
/// grant. Server text quoting the client secret or one of `secrets` is
/// withheld from the error.
pub(crate) async fn exchange<C: HttpClient>(
    client: &C,
    url: &Uri,
    auth: &ClientAuth,
    form: Form,
    secrets: &[&str],
) -> Result<TokenSet, Error> {
    let request = token_request(url, auth, form)?;
    let response = client
        .send(request)
        .await
        .map_err(|e| Error::transient("token endpoint unreachable").with_source(e))?;
    parse_token_response(response).map_err(|e| {
        let mut all = secrets.to_vec();
        all.push(auth.secret());
        e.scrub(&all)
    })
}

pub(crate) fn token_request(
    url: &Uri,
    auth: &ClientAuth,
    mut form: Form,
) -> Result<Request<Bytes>, Error> {
    let mut headers = http::HeaderMap::new();
    auth.apply(&mut form, &mut headers)?;
    let mut request = Request::new(Bytes::from(form.0));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = url.clone();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    *request.headers_mut() = headers;
    Ok(request)
}

/// Maps a token endpoint's response to a token set or a typed error
/// (RFC 6749 §5.1, §5.2).
///
/// # Errors
///
/// See [`RefreshTokenGrant`] for the mapping.
pub fn parse_token_response(response: Response<Bytes>) -> Result<TokenSet, Error> {
    let status = response.status();
    if status.is_success() {
        return TokenSet::from_response_json(response.body());
    }
    Err(error_response(&response, "token endpoint"))
}

/// The typed error for a non-2xx answer of a token, introspection or
/// revocation endpoint (RFC 6749 §5.2 mapping, `Retry-After` kept).
pub(crate) fn error_response(response: &Response<Bytes>, endpoint: &str) -> Error {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let body: Option<OAuthErrorBody> = serde_json::from_slice(response.body()).ok();
    let mut err = match &body {
        Some(b) => {
            let description = b
                .error_description
                .as_deref()
                .map(|d| truncate(d, 200))
                .unwrap_or("no description");
            let kind = match b.error.as_str() {
                "invalid_grant" => ErrorKind::SessionExpired,
                "temporarily_unavailable" | "slow_down" => ErrorKind::Transient,
                _ if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                    ErrorKind::Transient
                }
                _ => ErrorKind::Rejected,
            };
            Error::new(kind, format!("HTTP {}: {description}", status.as_u16()))
                .with_oauth_error(truncate(&b.error, 64))
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

/// The longest `Retry-After` believed: an hour.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A `Retry-After` value (RFC 9110 §10.2.3): delay seconds, or an HTTP-date
/// in IMF-fixdate form, turned into a wait from `now` (a date in the past is
/// no wait). At most an hour.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = parse_imf_fixdate(value)?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 §5.6.7), strictly.
fn parse_imf_fixdate(s: &str) -> Option<SystemTime> {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = s.as_bytes();
    if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    if b[7] != b' ' || b[11] != b' ' || b[16] != b' ' || b[19] != b':' || b[22] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0u64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
        })
    };
    let weekday = DAYS.iter().position(|d| d.as_bytes() == &b[..3])?;
    let day = num(5..7)?;
    let month = MONTHS.iter().position(|m| m.as_bytes() == &b[8..11])? as u64 + 1;
    let year = num(12..16)?;
    let (hour, minute, second) = (num(17..19)?, num(20..22)?, num(23..25)?);
    if year < 1970 || hour > 23 || minute > 59 || second > 60 || day == 0 {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    // 1970-01-01 was a Thursday (index 3 with Monday as 0).
    if (days + 3) % 7 != weekday as u64 {
        return None;
    }
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59);
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`), for years from 1970; `None` for a day the month lacks.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_len = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day > month_len {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
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

/// An `application/x-www-form-urlencoded` body under construction.
#[derive(Default)]
pub(crate) struct Form(String);

impl Form {
    pub(crate) fn pair(&mut self, name: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        form_encode_into(&mut self.0, name);
        self.0.push('=');
        form_encode_into(&mut self.0, value);
    }
}

/// The WHATWG `application/x-www-form-urlencoded` byte serializer.
fn form_encode_into(out: &mut String, input: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in input.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 0xf)] as char);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A token-endpoint-like response with this status and body; shared by
    /// the tests of the oauth2 modules.
    pub(crate) fn response(status: u16, body: &'static str) -> Response<Bytes> {
        let mut r = Response::new(Bytes::from_static(body.as_bytes()));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r
    }

    #[test]
    fn form_encoding_follows_whatwg() {
        let mut out = String::new();
        form_encode_into(&mut out, "a b&c=d/é~*-._");
        assert_eq!(out, "a+b%26c%3Dd%2F%C3%A9%7E*-._");
    }

    #[test]
    fn basic_auth_form_encodes_before_base64() {
        let mut form = Form::default();
        let mut headers = http::HeaderMap::new();
        ClientAuth::basic("id:1", "s&cr t")
            .apply(&mut form, &mut headers)
            .unwrap();
        let value = headers[header::AUTHORIZATION].to_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(decoded, b"id%3A1:s%26cr+t");
        assert!(headers[header::AUTHORIZATION].is_sensitive());
        assert!(form.0.is_empty());
    }

    #[test]
    fn post_and_none_auth_go_in_the_body() {
        let mut form = Form::default();
        let mut headers = http::HeaderMap::new();
        ClientAuth::post("id", "sec")
            .apply(&mut form, &mut headers)
            .unwrap();
        assert_eq!(form.0, "client_id=id&client_secret=sec");
        let mut form = Form::default();
        ClientAuth::none("pub")
            .apply(&mut form, &mut headers)
            .unwrap();
        assert_eq!(form.0, "client_id=pub");
        assert!(headers.is_empty());
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
            let err = parse_token_response(response(status, body)).unwrap_err();
            assert_eq!(err.kind(), kind, "{status} {body}: {err}");
        }
    }

    #[test]
    fn retry_after_seconds_are_kept() {
        let mut r = response(429, "");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        let err = parse_token_response(r).unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn retry_after_http_date_is_a_wait_from_now() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        // In the past: no wait. Far ahead: an hour at most.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        for junk in [
            "Mon, 06 Nov 1994 08:49:37 GMT", // wrong weekday
            "Sun, 31 Nov 1994 08:49:37 GMT", // no such day
            "Sun, 06 Nov 1994 24:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "-5",
            "soon",
            "",
        ] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk}");
        }
    }

    #[test]
    fn imf_fixdate_matches_known_dates() {
        let at = |s| {
            parse_imf_fixdate(s)
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        assert_eq!(at("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
        assert_eq!(at("Tue, 29 Feb 2000 12:00:00 GMT"), 951_825_600);
        assert_eq!(at("Tue, 14 Nov 2023 22:13:20 GMT"), 1_700_000_000);
        assert!(parse_imf_fixdate("Thu, 29 Feb 2100 00:00:00 GMT").is_none());
    }

    #[test]
    fn retry_after_date_on_a_429_reaches_the_error() {
        let mut r = response(429, r#"{"error":"slow_down"}"#);
        let soon = httpdate_in(Duration::from_secs(90));
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_str(&soon).unwrap());
        let err = parse_token_response(r).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient);
        let wait = err.retry_after().unwrap();
        assert!(
            wait <= Duration::from_secs(90) && wait >= Duration::from_secs(85),
            "{wait:?}"
        );
    }

    /// An IMF-fixdate `ahead` from now, written by hand like the parser.
    fn httpdate_in(ahead: Duration) -> String {
        const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let secs = (SystemTime::now() + ahead)
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let days = secs / 86_400;
        let (mut year, mut rest) = (1970, days);
        loop {
            let len = if days_from_civil(year + 1, 1, 1).unwrap()
                - days_from_civil(year, 1, 1).unwrap()
                > rest
            {
                break;
            } else {
                days_from_civil(year + 1, 1, 1).unwrap() - days_from_civil(year, 1, 1).unwrap()
            };
            rest -= len;
            year += 1;
        }
        let mut month = 1;
        while month < 12 && days_from_civil(year, month + 1, 1).unwrap() <= days {
            month += 1;
        }
        let day = days - days_from_civil(year, month, 1).unwrap() + 1;
        format!(
            "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
            DAYS[(days % 7) as usize],
            MONTHS[(month - 1) as usize],
            secs % 86_400 / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    }

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

    #[test]
    fn client_auth_debug_hides_the_secret() {
        let shown = format!("{:?}", ClientAuth::basic("id", "hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
