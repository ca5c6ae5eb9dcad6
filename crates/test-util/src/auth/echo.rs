//! [`Fault::Echo`](super::Fault::Echo): an answer that quotes the request
//! back, as careless servers do, for tests that no form of a secret
//! reaches an error or a log.

use axum::{
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use serde_json::json;

use super::oauth::json_response;
use crate::form;

/// What a [`Fault::Echo`](super::Fault::Echo) quotes back, in which
/// encoding, and where.
///
/// The quote is `body=<form body> authorization=<Authorization header>`
/// (or one half of it), with the body
///
/// - as sent (the default): the form exactly as it arrived
///   (`refresh_token=rt%2F…+…`), the header as it arrived (`Basic <base64>`);
/// - [`decoded`](Echo::decoded): each value form-decoded, the Basic pair
///   base64-decoded and each half form-decoded (`Basic id:secret`);
/// - [`reencoded`](Echo::reencoded): each decoded value percent-encoded
///   again the other common way (`%20` for a space, lower-case hex), the
///   Basic pair likewise.
///
/// # Example
///
/// ```
/// use tower_token_refresh_test_util::{AuthConfig, AuthServer, Echo, Fault};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// let auth = AuthServer::start(AuthConfig::default()).await?;
/// // The next token request gets a 400 whose error_description quotes the
/// // decoded body, after 180 characters of filler.
/// auth.inject(Fault::Echo(Echo::json(400).body_only().decoded().lead(180)), 1);
/// // The one after that, a plain-text 502 quoting the header as sent.
/// auth.inject(Fault::Echo(Echo::text(502).authorization_only()), 1);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Echo {
    status: u16,
    json: bool,
    error: Option<&'static str>,
    body: bool,
    authorization: bool,
    encoding: Encoding,
    lead: usize,
    cut: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    AsSent,
    Decoded,
    Reencoded,
}

impl Echo {
    /// Quote in the `error_description` of a JSON error body with this
    /// status: `error` is `temporarily_unavailable` for a 5xx,
    /// `invalid_request` otherwise.
    pub fn json(status: u16) -> Self {
        Self::new(status, true)
    }

    /// Quote as a plain-text body with this status.
    pub fn text(status: u16) -> Self {
        Self::new(status, false)
    }

    fn new(status: u16, json: bool) -> Self {
        Echo {
            status,
            json,
            error: None,
            body: true,
            authorization: true,
            encoding: Encoding::AsSent,
            lead: 0,
            cut: None,
        }
    }

    /// Send this `error` code in the JSON body instead.
    pub fn error(mut self, code: &'static str) -> Self {
        self.error = Some(code);
        self
    }

    /// Quote only the form body.
    pub fn body_only(mut self) -> Self {
        (self.body, self.authorization) = (true, false);
        self
    }

    /// Quote only the `Authorization` header.
    pub fn authorization_only(mut self) -> Self {
        (self.body, self.authorization) = (false, true);
        self
    }

    /// Quote decoded values.
    pub fn decoded(mut self) -> Self {
        self.encoding = Encoding::Decoded;
        self
    }

    /// Quote values percent-encoded with `%20` and lower-case hex.
    pub fn reencoded(mut self) -> Self {
        self.encoding = Encoding::Reencoded;
        self
    }

    /// Put this many characters of filler before the quote, so that a
    /// client cutting the text to length cuts inside it.
    pub fn lead(mut self, chars: usize) -> Self {
        self.lead = chars;
        self
    }

    /// Send only the first `chars` characters of the text (filler and
    /// quote), as a server that cuts its own descriptions does.
    pub fn cut(mut self, chars: usize) -> Self {
        self.cut = Some(chars);
        self
    }

    /// The answer to the request with these headers and body.
    pub(super) fn respond(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        let mut quote = String::new();
        if self.body {
            quote.push_str("body=");
            quote.push_str(&self.form(body));
        }
        if self.authorization {
            if !quote.is_empty() {
                quote.push(' ');
            }
            quote.push_str("authorization=");
            if let Some(value) = headers.get(header::AUTHORIZATION) {
                quote.push_str(&self.header(&String::from_utf8_lossy(value.as_bytes())));
            }
        }
        let mut text: String = "x".repeat(self.lead) + &quote;
        if let Some(cut) = self.cut {
            text = text.chars().take(cut).collect();
        }
        let status = StatusCode::from_u16(self.status)
            .ok()
            .filter(|s| !s.is_informational())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if self.json {
            let error = self.error.unwrap_or(if status.is_server_error() {
                "temporarily_unavailable"
            } else {
                "invalid_request"
            });
            json_response(
                status,
                &json!({ "error": error, "error_description": text }),
            )
        } else {
            (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                text,
            )
                .into_response()
        }
    }

    fn form(&self, body: &[u8]) -> String {
        if self.encoding == Encoding::AsSent {
            return String::from_utf8_lossy(body).into_owned();
        }
        form::parse(body)
            .into_iter()
            .map(|(name, value)| format!("{name}={}", self.value(&value)))
            .collect::<Vec<_>>()
            .join("&")
    }

    fn header(&self, value: &str) -> String {
        let basic = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .and_then(|(_, credentials)| {
                base64::engine::general_purpose::STANDARD
                    .decode(credentials.trim())
                    .ok()
            });
        match (self.encoding, basic) {
            (Encoding::AsSent, _) | (_, None) => value.to_owned(),
            (_, Some(pair)) => {
                let pair = String::from_utf8_lossy(&pair).into_owned();
                let (id, secret) = pair.split_once(':').unwrap_or((&pair, ""));
                let (id, secret) = (form::decode(id.as_bytes()), form::decode(secret.as_bytes()));
                format!("Basic {}:{}", self.value(&id), self.value(&secret))
            }
        }
    }

    fn value(&self, decoded: &str) -> String {
        match self.encoding {
            Encoding::Reencoded => percent_encode_lower(decoded),
            Encoding::AsSent | Encoding::Decoded => decoded.to_owned(),
        }
    }
}

/// RFC 3986 percent-encoding of all but the unreserved characters, with a
/// space as `%20` and lower-case hex: the form our client does not send.
fn percent_encode_lower(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for &b in input.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}
