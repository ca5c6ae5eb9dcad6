//! The step every token-endpoint call shares: build the form-encoded POST,
//! send it through the [`HttpClient`], and map the answer to a [`TokenSet`]
//! or a typed [`Error`] (RFC 6749 §5.1, §5.2).
//!
//! Invariants:
//!
//! - A secret the library sent (the client secret, a refresh token) is
//!   never copied into an error: server text quoting one is withheld.
//! - Every answer maps to a value or a typed error: a non-2xx status by the
//!   §5.2 rules, a 2xx body that is no token response to
//!   [`InvalidResponse`](ErrorKind::InvalidResponse). Nothing a server sends
//!   panics, and nothing but a 2xx token response is success.
//! - A transport failure of a request that presented a refresh token is
//!   [outcome unknown](Error::is_outcome_unknown) unless the error shows the
//!   request never left ([`was_not_sent`]). An HTTP answer, of any status,
//!   is an answer: never outcome unknown.

use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};

use super::{ClientAuth, HttpClient, retry_after::parse_retry_after, was_not_sent};
use crate::{Error, ErrorKind, TokenSet, token::OAuthErrorBody};

/// Posts a token request and parses the answer: the shared step of every
/// grant.
///
/// `refresh_token` is the one the form presents, if any: server text
/// quoting it or the client secret is withheld from the error, and a
/// request lost in flight leaves it in doubt (outcome unknown).
pub(crate) async fn exchange<C: HttpClient>(
    client: &C,
    url: &Uri,
    auth: &ClientAuth,
    form: Form,
    refresh_token: Option<&str>,
) -> Result<TokenSet, Error> {
    let request = token_request(url, auth, form)?;
    let response = client
        .send(request)
        .await
        .map_err(|e| transport_error(e, refresh_token.is_some()))?;
    parse_token_response(response)
        .map_err(|e| e.scrub(&[refresh_token.unwrap_or(""), auth.secret()]))
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
/// See [`RefreshTokenGrant`](super::RefreshTokenGrant) for the mapping.
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

    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// The WHATWG `application/x-www-form-urlencoded` byte serializer.
pub(super) fn form_encode_into(out: &mut String, input: &str) {
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
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::oauth2::tests::response;

    #[test]
    fn form_encoding_follows_whatwg() {
        let mut out = String::new();
        form_encode_into(&mut out, "a b&c=d/é~*-._");
        assert_eq!(out, "a+b%26c%3Dd%2F%C3%A9%7E*-._");
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
}
