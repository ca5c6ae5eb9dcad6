//! Deciding whether a response says "this token is no longer valid".

use std::borrow::Cow;

use http::{HeaderMap, Response, StatusCode, header::WWW_AUTHENTICATE};
use tower_token_refresh_core::{ErrorCode, header::GRPC_STATUS};

/// Tells a rejected token from any other response.
///
/// Built in: [`RejectedToken`] (the default: RFC 6750's 401 rules) and
/// [`RejectedTokenWith`] (those rules, plus a 403 that names an invalid
/// token or a gRPC `UNAUTHENTICATED` status). A closure
/// `Fn(StatusCode, &HeaderMap) -> bool` is a classifier too, for APIs that
/// say "token invalid" another way; it replaces the built-in rules rather
/// than adding to them.
pub trait Classify: Clone {
    /// Whether `response` rejects the token that was sent.
    fn is_rejected<B>(&self, response: &Response<B>) -> bool;
}

impl<F> Classify for F
where
    F: Fn(StatusCode, &HeaderMap) -> bool + Clone,
{
    fn is_rejected<B>(&self, response: &Response<B>) -> bool {
        self(response.status(), response.headers())
    }
}

/// The default classifier (RFC 6750 §3.1).
///
/// A response rejects the token when its status is 401, unless a `Bearer`
/// challenge in `WWW-Authenticate` names an `error` other than
/// `invalid_token` (an `invalid_request` or `insufficient_scope` is not
/// cured by a new token), or a `DPoP` challenge asks for a nonce
/// (`use_dpop_nonce`, RFC 9449). Every challenge, in one header or several,
/// is read. A 403 never counts, nor does a gRPC status.
///
/// For APIs that also reject tokens with a 403 or with gRPC's
/// `UNAUTHENTICATED`, [`also_forbidden`](Self::also_forbidden) and
/// [`also_grpc`](Self::also_grpc) add those rules and keep these.
#[derive(Clone, Copy, Debug, Default)]
pub struct RejectedToken;

impl RejectedToken {
    /// These rules, and a 403 whose `Bearer` challenge says
    /// `error="invalid_token"`: see [`RejectedTokenWith::also_forbidden`].
    ///
    /// # Example
    ///
    /// ```
    /// use tower_token_refresh::{Classify, RejectedToken};
    ///
    /// let classifier = RejectedToken.also_forbidden();
    /// let forbidden = |challenge: &'static str| {
    ///     http::Response::builder()
    ///         .status(403)
    ///         .header("www-authenticate", challenge)
    ///         .body(())
    ///         .unwrap()
    /// };
    /// assert!(classifier.is_rejected(&forbidden(r#"Bearer error="invalid_token""#)));
    /// assert!(!classifier.is_rejected(&forbidden(r#"Bearer error="insufficient_scope""#)));
    /// // The 401 rules still hold.
    /// assert!(classifier.is_rejected(&http::Response::builder().status(401).body(()).unwrap()));
    /// ```
    pub const fn also_forbidden(self) -> RejectedTokenWith {
        RejectedTokenWith::NONE.also_forbidden()
    }

    /// These rules, and a gRPC `UNAUTHENTICATED` status (`grpc-status: 16`)
    /// in the response headers: see [`RejectedTokenWith::also_grpc`].
    ///
    /// # Example
    ///
    /// ```
    /// use tower_token_refresh::{Classify, RejectedToken};
    ///
    /// let classifier = RejectedToken.also_grpc();
    /// // A trailers-only gRPC response: HTTP 200, the status in the headers.
    /// let unauthenticated = http::Response::builder()
    ///     .header("content-type", "application/grpc")
    ///     .header("grpc-status", "16")
    ///     .body(())
    ///     .unwrap();
    /// assert!(classifier.is_rejected(&unauthenticated));
    /// ```
    pub const fn also_grpc(self) -> RejectedTokenWith {
        RejectedTokenWith::NONE.also_grpc()
    }
}

impl Classify for RejectedToken {
    fn is_rejected<B>(&self, response: &Response<B>) -> bool {
        response.status() == StatusCode::UNAUTHORIZED
            && !bearer_error_forbids_refresh(response.headers())
    }
}

/// [`RejectedToken`]'s rules and more: a 403 that names an invalid token, a
/// gRPC `UNAUTHENTICATED` status, or both.
///
/// Made by [`RejectedToken::also_forbidden`] and
/// [`RejectedToken::also_grpc`]; the two chain. Whatever is added, a
/// `Bearer` challenge that names another error (`insufficient_scope`,
/// `invalid_request`) or a `DPoP` nonce request keeps a response from
/// counting, as it does for a 401.
///
/// # Example
///
/// ```
/// use tower_token_refresh::{RejectedToken, TokenManager, TokenRefreshLayer, TokenSet, source};
///
/// # let tokens = TokenManager::builder(source::from_fn(|_| async { Ok(TokenSet::bearer("t")) })).build();
/// let layer = TokenRefreshLayer::new(tokens)
///     .classify(RejectedToken.also_grpc().also_forbidden());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectedTokenWith {
    forbidden: bool,
    grpc: bool,
}

impl RejectedTokenWith {
    const NONE: Self = RejectedTokenWith {
        forbidden: false,
        grpc: false,
    };

    /// Counts a 403 too, but only one whose `Bearer` challenge says
    /// `error="invalid_token"`.
    ///
    /// RFC 6750 §3.1 answers an invalid token with a 401 and a lack of
    /// scope with a 403; some servers send the first as a 403 too, and say
    /// so in the challenge. A 403 with no such challenge (a plain "you may
    /// not") is not counted: a new token would not change the answer, and
    /// counting it would refresh the token once for every refused request.
    /// `insufficient_scope` never counts, in a 403 or a 401.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_token_refresh::{Classify, RejectedToken};
    ///
    /// let classifier = RejectedToken.also_grpc().also_forbidden();
    /// let bare_403 = http::Response::builder().status(403).body(()).unwrap();
    /// assert!(!classifier.is_rejected(&bare_403));
    /// ```
    pub const fn also_forbidden(mut self) -> Self {
        self.forbidden = true;
        self
    }

    /// Counts a gRPC `UNAUTHENTICATED` status too: a `grpc-status` header
    /// whose value is `16`, whatever the HTTP status.
    ///
    /// gRPC answers with HTTP 200 and puts the status in the trailers, or,
    /// when there is no message to send (a rejected call), in the headers
    /// ("trailers-only"). Only the headers are read here: the layer decides
    /// before the body is polled, so a status that arrives in trailers after
    /// messages is not seen. Servers reject credentials before any message,
    /// so that is where `UNAUTHENTICATED` is found.
    ///
    /// The value is decimal digits (leading zeros allowed, as gRPC's own
    /// parsers do), with surrounding spaces ignored; anything else is not a
    /// status. `grpc-message` is not read: it is free text meant for
    /// people, with no codes to tell "invalid token" from "no token". A
    /// `Bearer` challenge in `WWW-Authenticate`, if the server sends one,
    /// is read as for a 401: `insufficient_scope` keeps the response from
    /// counting.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_token_refresh::{Classify, RejectedToken};
    ///
    /// let classifier = RejectedToken.also_grpc();
    /// let grpc = |status: &'static str| {
    ///     http::Response::builder().header("grpc-status", status).body(()).unwrap()
    /// };
    /// assert!(classifier.is_rejected(&grpc("16")));
    /// assert!(!classifier.is_rejected(&grpc("7"))); // PERMISSION_DENIED
    /// assert!(!classifier.is_rejected(&grpc("0"))); // OK
    /// ```
    pub const fn also_grpc(mut self) -> Self {
        self.grpc = true;
        self
    }
}

impl Classify for RejectedTokenWith {
    fn is_rejected<B>(&self, response: &Response<B>) -> bool {
        let status = response.status();
        let headers = response.headers();
        let candidate = status == StatusCode::UNAUTHORIZED
            || (self.grpc && grpc_status(headers) == Some(GRPC_UNAUTHENTICATED));
        if candidate {
            return !bearer_error_forbids_refresh(headers);
        }
        self.forbidden && status == StatusCode::FORBIDDEN && forbidden_names_invalid_token(headers)
    }
}

/// gRPC's `UNAUTHENTICATED` status code.
const GRPC_UNAUTHENTICATED: u32 = 16;

/// The gRPC status in `headers` (the first `grpc-status`), if it is one:
/// ASCII digits, spaces around them ignored.
fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    let value = headers.get(GRPC_STATUS)?.as_bytes();
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // All ASCII digits, so the text is UTF-8; `parse` fails only on overflow.
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A 403 counts only when a `Bearer` challenge says `invalid_token` and no
/// challenge says a new token would not help.
fn forbidden_names_invalid_token(headers: &HeaderMap) -> bool {
    let says_invalid = headers.get_all(WWW_AUTHENTICATE).iter().any(|value| {
        let text = String::from_utf8_lossy(value.as_bytes());
        parse_challenges(&text).iter().any(|c| {
            c.scheme.eq_ignore_ascii_case("bearer") && c.error() == Some(ErrorCode::InvalidToken)
        })
    });
    says_invalid && !bearer_error_forbids_refresh(headers)
}

fn bearer_error_forbids_refresh(headers: &HeaderMap) -> bool {
    headers.get_all(WWW_AUTHENTICATE).iter().any(|value| {
        // Quoted strings may carry obs-text (RFC 9110 §5.5), which `to_str`
        // refuses; the parser only needs the ASCII structure around it.
        let text = String::from_utf8_lossy(value.as_bytes());
        parse_challenges(&text).iter().any(|c| {
            let code = c.error();
            if c.scheme.eq_ignore_ascii_case("bearer") {
                // insufficient_scope, invalid_request: a new token cannot help.
                code.is_some_and(|code| code != ErrorCode::InvalidToken)
            } else {
                // RFC 9449: the server wants a DPoP nonce, not a new token.
                c.scheme.eq_ignore_ascii_case("dpop") && code == Some(ErrorCode::UseDpopNonce)
            }
        })
    })
}

/// One challenge of a `WWW-Authenticate` header (RFC 9110 §11.6.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge<'a> {
    /// The auth scheme, as written (`Bearer`, `DPoP`, `Basic`, …).
    pub scheme: &'a str,
    /// The token68, if the challenge has one instead of parameters.
    pub token68: Option<&'a str>,
    /// The parameters, names as written, values unquoted.
    pub params: Vec<(&'a str, Cow<'a, str>)>,
}

impl Challenge<'_> {
    /// The value of the parameter `name` (compared case-insensitively).
    pub fn param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| Cow::Borrowed(v.as_ref()))
    }

    /// The `error` parameter as an [`ErrorCode`] (RFC 6750 §3.1).
    ///
    /// # Example
    ///
    /// ```
    /// use tower_token_refresh::{classify::parse_challenges, oauth2::ErrorCode};
    ///
    /// let cs = parse_challenges(r#"Bearer error="insufficient_scope", scope="admin""#);
    /// assert_eq!(cs[0].error(), Some(ErrorCode::InsufficientScope));
    /// ```
    pub fn error(&self) -> Option<ErrorCode> {
        self.param("error").map(ErrorCode::from)
    }
}

/// Parses the challenges of one `WWW-Authenticate` header value.
///
/// Lenient: a malformed part is skipped, never a panic.
///
/// # Example
///
/// ```
/// use tower_token_refresh::classify::parse_challenges;
///
/// let cs = parse_challenges(r#"Bearer realm="api", error="invalid_token", DPoP algs="ES256""#);
/// assert_eq!(cs.len(), 2);
/// assert_eq!(cs[0].scheme, "Bearer");
/// assert_eq!(cs[0].param("error").as_deref(), Some("invalid_token"));
/// assert_eq!(cs[1].scheme, "DPoP");
/// ```
pub fn parse_challenges(value: &str) -> Vec<Challenge<'_>> {
    let mut p = Parser { s: value, i: 0 };
    let mut out = Vec::new();
    loop {
        p.skip_ws_and_commas();
        if p.done() {
            return out;
        }
        let scheme = p.token();
        if scheme.is_empty() {
            // Not a token character: skip it and look for the next challenge.
            p.bump();
            continue;
        }
        let mut challenge = Challenge {
            scheme,
            token68: None,
            params: Vec::new(),
        };
        p.skip_ws();
        // A token68 is token-ish characters, then '=' padding, then the end
        // or a comma.
        let mark = p.i;
        let t68 = p.token68();
        if !t68.is_empty() {
            let after = p.i;
            p.skip_ws();
            if p.done() || p.peek() == Some(b',') {
                challenge.token68 = Some(t68);
                out.push(challenge);
                continue;
            }
            p.i = after;
        }
        p.i = mark;
        // auth-params: name = value, separated by commas, until a token
        // that is not followed by '=' starts the next challenge.
        loop {
            let before = p.i;
            // Empty list elements (",,") are allowed between parameters.
            p.skip_ws_and_commas();
            let name = p.token();
            p.skip_ws();
            if name.is_empty() || p.peek() != Some(b'=') {
                p.i = before;
                break;
            }
            p.bump();
            p.skip_ws();
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                Cow::Borrowed(p.token())
            };
            challenge.params.push((name, value));
        }
        out.push(challenge);
    }
}

struct Parser<'a> {
    s: &'a str,
    i: usize,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl<'a> Parser<'a> {
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn bump(&mut self) {
        // Step over one whole character so slices stay on char boundaries.
        if let Some(c) = self.s[self.i..].chars().next() {
            self.i += c.len_utf8();
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> &'a str {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    fn token68(&mut self) -> &'a str {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
        {
            self.i += 1;
        }
        if self.i == start {
            return "";
        }
        while self.peek() == Some(b'=') {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// A quoted-string starting at `"`; backslash escapes are undone. An
    /// unterminated string runs to the end.
    fn quoted(&mut self) -> Cow<'a, str> {
        self.i += 1;
        let start = self.i;
        let bytes = self.s.as_bytes();
        let mut owned: Option<String> = None;
        while self.i < bytes.len() {
            match bytes[self.i] {
                b'"' => {
                    let end = self.i;
                    self.i += 1;
                    return match owned {
                        Some(s) => Cow::Owned(s),
                        None => Cow::Borrowed(&self.s[start..end]),
                    };
                }
                b'\\' if self.i + 1 < bytes.len() => {
                    let buf = owned.get_or_insert_with(|| self.s[start..self.i].to_owned());
                    self.i += 1;
                    let c = self.s[self.i..].chars().next().unwrap_or('\\');
                    buf.push(c);
                    self.i += c.len_utf8();
                }
                _ => {
                    let c = self.s[self.i..].chars().next().unwrap_or(' ');
                    if let Some(buf) = &mut owned {
                        buf.push(c);
                    }
                    self.i += c.len_utf8();
                }
            }
        }
        match owned {
            Some(s) => Cow::Owned(s),
            None => Cow::Borrowed(&self.s[start..]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn response(status: u16, challenges: &[&str]) -> Response<()> {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        for c in challenges {
            r.headers_mut()
                .append(WWW_AUTHENTICATE, HeaderValue::from_str(c).unwrap());
        }
        r
    }

    #[test]
    fn rejected_token_follows_rfc_6750() {
        let c = RejectedToken;
        assert!(c.is_rejected(&response(401, &[])));
        assert!(c.is_rejected(&response(401, &[r#"Bearer realm="x""#])));
        assert!(c.is_rejected(&response(
            401,
            &[r#"Bearer realm="x", error="invalid_token""#]
        )));
        assert!(!c.is_rejected(&response(401, &[r#"Bearer error="insufficient_scope""#])));
        assert!(!c.is_rejected(&response(401, &[r#"Bearer error="invalid_request""#])));
        assert!(!c.is_rejected(&response(403, &[r#"Bearer error="insufficient_scope""#])));
        assert!(!c.is_rejected(&response(403, &[])));
        assert!(!c.is_rejected(&response(200, &[])));
        // Several challenges, in one header and in several.
        assert!(c.is_rejected(&response(
            401,
            &[r#"DPoP algs="ES256", Bearer realm="x", error="invalid_token""#]
        )));
        assert!(!c.is_rejected(&response(
            401,
            &[
                r#"Basic realm="b""#,
                r#"Bearer error="insufficient_scope", scope="admin""#
            ]
        )));
    }

    #[test]
    fn parses_quoted_escapes_token68_and_junk() {
        let cs = parse_challenges(
            r#"Bearer error_description="say \"hi\", then go", error=invalid_token"#,
        );
        assert_eq!(cs.len(), 1);
        assert_eq!(
            cs[0].param("error_description").as_deref(),
            Some(r#"say "hi", then go"#)
        );
        assert_eq!(cs[0].param("ERROR").as_deref(), Some("invalid_token"));

        let cs = parse_challenges("Negotiate abc+/==, Basic realm=x");
        assert_eq!(cs[0].token68, Some("abc+/=="));
        assert_eq!(cs[1].scheme, "Basic");
        assert_eq!(cs[1].param("realm").as_deref(), Some("x"));

        for junk in [
            "",
            ",,,",
            "\"",
            "= = =",
            "Bearer error=\"unterminated",
            "é Bearer",
            "Bearer ,, realm=\"a\",,",
        ] {
            let _ = parse_challenges(junk);
        }
        assert_eq!(
            parse_challenges("Bearer ,, realm=\"a\",,")[0]
                .param("realm")
                .as_deref(),
            Some("a")
        );
    }

    #[test]
    fn non_ascii_text_does_not_hide_the_error() {
        let mut r = response(401, &[]);
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_bytes(
                "Bearer realm=\"Z\u{fc}rich\", error=\"insufficient_scope\"".as_bytes(),
            )
            .unwrap(),
        );
        assert!(!RejectedToken.is_rejected(&r));
        let mut r = response(401, &[]);
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_bytes(b"Bearer realm=\"Z\xfcrich\", error=\"invalid_token\"")
                .unwrap(),
        );
        assert!(RejectedToken.is_rejected(&r));
    }

    #[test]
    fn a_dpop_nonce_request_is_not_a_rejected_token() {
        assert!(!RejectedToken.is_rejected(&response(401, &[r#"DPoP error="use_dpop_nonce""#])));
        assert!(RejectedToken.is_rejected(&response(401, &[r#"DPoP error="invalid_token""#])));
    }

    fn with(status: u16, headers: &[(&'static str, &[u8])]) -> Response<()> {
        let mut r = response(status, &[]);
        for (name, value) in headers {
            r.headers_mut()
                .append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        r
    }

    fn grpc(value: &[u8]) -> Response<()> {
        with(200, &[("grpc-status", value)])
    }

    #[test]
    fn grpc_status_parsing() {
        let g = |value: &[u8]| grpc_status(grpc(value).headers());
        assert_eq!(g(b"16"), Some(16));
        assert_eq!(g(b" 16"), Some(16));
        assert_eq!(g(b"16\t"), Some(16));
        assert_eq!(g(b"016"), Some(16));
        assert_eq!(g(b"1"), Some(1));
        assert_eq!(g(b"0"), Some(0));
        for not_a_status in [
            &b""[..],
            b" ",
            b"+16",
            b"-16",
            b"16 16",
            b"1 6",
            b"0x10",
            b"sixteen",
            b"16\xff",
            b"\xc3\xa916",
            b"99999999999999999999",
        ] {
            assert_eq!(g(not_a_status), None, "{not_a_status:?}");
        }
        assert_eq!(grpc_status(response(200, &[]).headers()), None);
    }

    #[test]
    fn grpc_unauthenticated_counts_only_when_asked() {
        let grpc_on = RejectedToken.also_grpc();
        assert!(grpc_on.is_rejected(&grpc(b"16")));
        assert!(grpc_on.is_rejected(&grpc(b" 016")));
        // Other statuses: OK, PERMISSION_DENIED, CANCELLED; absent; junk.
        for other in [&b"0"[..], b"7", b"1", b"160", b"61", b"16\xff"] {
            assert!(!grpc_on.is_rejected(&grpc(other)), "{other:?}");
        }
        assert!(!grpc_on.is_rejected(&response(200, &[])));
        // The default and the 403 option do not read gRPC statuses.
        assert!(!RejectedToken.is_rejected(&grpc(b"16")));
        assert!(!RejectedToken.also_forbidden().is_rejected(&grpc(b"16")));
        // Only the first grpc-status is the status.
        assert!(!grpc_on.is_rejected(&with(200, &[("grpc-status", b"0"), ("grpc-status", b"16")])));
        // grpc-message is not read, whatever it says.
        assert!(grpc_on.is_rejected(&with(
            200,
            &[("grpc-status", b"16"), ("grpc-message", b"all%20fine")]
        )));
    }

    #[test]
    fn grpc_keeps_the_401_and_bearer_rules() {
        let grpc_on = RejectedToken.also_grpc();
        // A proxy in front of a gRPC server may answer 401 itself.
        assert!(grpc_on.is_rejected(&response(401, &[])));
        assert!(!grpc_on.is_rejected(&response(401, &[r#"Bearer error="insufficient_scope""#])));
        assert!(!grpc_on.is_rejected(&response(401, &[r#"DPoP error="use_dpop_nonce""#])));
        assert!(!grpc_on.is_rejected(&response(403, &[r#"Bearer error="invalid_token""#])));
        // A Bearer challenge next to grpc-status 16 is read as for a 401.
        assert!(!grpc_on.is_rejected(&with(
            200,
            &[
                ("grpc-status", b"16"),
                ("www-authenticate", br#"Bearer error="insufficient_scope""#)
            ]
        )));
        assert!(grpc_on.is_rejected(&with(
            200,
            &[
                ("grpc-status", b"16"),
                ("www-authenticate", br#"Bearer error="invalid_token""#)
            ]
        )));
    }

    #[test]
    fn also_forbidden_counts_a_403_that_names_an_invalid_token() {
        let c = RejectedToken.also_forbidden();
        assert!(c.is_rejected(&response(403, &[r#"Bearer error="invalid_token""#])));
        assert!(c.is_rejected(&response(
            403,
            &[
                r#"Basic realm="b""#,
                r#"Bearer realm="x", ERROR=invalid_token"#
            ]
        )));
        // insufficient_scope never counts; nor a bare 403, nor another error.
        assert!(!c.is_rejected(&response(403, &[r#"Bearer error="insufficient_scope""#])));
        assert!(!c.is_rejected(&response(403, &[])));
        assert!(!c.is_rejected(&response(403, &[r#"Bearer realm="x""#])));
        assert!(!c.is_rejected(&response(403, &[r#"Bearer error="invalid_request""#])));
        assert!(!c.is_rejected(&response(403, &[r#"DPoP error="invalid_token""#])));
        // Mixed signals: one challenge says a new token would not help.
        assert!(!c.is_rejected(&response(
            403,
            &[
                r#"Bearer error="invalid_token""#,
                r#"Bearer error="insufficient_scope""#
            ]
        )));
        // The 401 rules stay.
        assert!(c.is_rejected(&response(401, &[])));
        assert!(c.is_rejected(&response(401, &[r#"Bearer error="invalid_token""#])));
        assert!(!c.is_rejected(&response(401, &[r#"Bearer error="insufficient_scope""#])));
        assert!(!c.is_rejected(&response(200, &[r#"Bearer error="invalid_token""#])));
    }

    #[test]
    fn options_chain_in_either_order() {
        let both = RejectedToken.also_grpc().also_forbidden();
        assert_eq!(both, RejectedToken.also_forbidden().also_grpc());
        assert!(both.is_rejected(&grpc(b"16")));
        assert!(both.is_rejected(&response(403, &[r#"Bearer error="invalid_token""#])));
        assert!(both.is_rejected(&response(401, &[])));
        assert!(!both.is_rejected(&response(403, &[])));
        // Nothing added: exactly the default's rules.
        let none = RejectedTokenWith::default();
        for r in [
            response(401, &[]),
            response(401, &[r#"Bearer error="insufficient_scope""#]),
            response(403, &[r#"Bearer error="invalid_token""#]),
            grpc(b"16"),
            response(200, &[]),
        ] {
            assert_eq!(none.is_rejected(&r), RejectedToken.is_rejected(&r));
        }
    }

    #[test]
    fn closures_classify() {
        let on_403 = |status: StatusCode, _: &HeaderMap| status == StatusCode::FORBIDDEN;
        assert!(on_403.is_rejected(&response(403, &[])));
        assert!(!on_403.is_rejected(&response(401, &[])));
    }
}
