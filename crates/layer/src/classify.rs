//! Deciding whether a response says "this token is no longer valid".

use std::borrow::Cow;

use http::{HeaderMap, Response, StatusCode, header::WWW_AUTHENTICATE};

/// Tells a rejected token from any other response.
///
/// Built in: [`RejectedToken`] (the default). A closure
/// `Fn(StatusCode, &HeaderMap) -> bool` is a classifier too, for APIs that
/// say "token invalid" another way (a 403, say).
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
/// is read. A 403 never counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct RejectedToken;

impl Classify for RejectedToken {
    fn is_rejected<B>(&self, response: &Response<B>) -> bool {
        response.status() == StatusCode::UNAUTHORIZED
            && !bearer_error_forbids_refresh(response.headers())
    }
}

fn bearer_error_forbids_refresh(headers: &HeaderMap) -> bool {
    headers.get_all(WWW_AUTHENTICATE).iter().any(|value| {
        // Quoted strings may carry obs-text (RFC 9110 §5.5), which `to_str`
        // refuses; the parser only needs the ASCII structure around it.
        let text = String::from_utf8_lossy(value.as_bytes());
        parse_challenges(&text).iter().any(|c| {
            let code = c.param("error");
            let code = code.as_deref();
            if c.scheme.eq_ignore_ascii_case("bearer") {
                // insufficient_scope, invalid_request: a new token cannot help.
                code.is_some_and(|code| code != "invalid_token")
            } else {
                // RFC 9449: the server wants a DPoP nonce, not a new token.
                c.scheme.eq_ignore_ascii_case("dpop") && code == Some("use_dpop_nonce")
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

    #[test]
    fn closures_classify() {
        let on_403 = |status: StatusCode, _: &HeaderMap| status == StatusCode::FORBIDDEN;
        assert!(on_403.is_rejected(&response(403, &[])));
        assert!(!on_403.is_rejected(&response(401, &[])));
    }
}
