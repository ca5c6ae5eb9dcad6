//! Keeping what a request carried out of the error its answer becomes.
//!
//! Authorization servers echo requests back: `error_description` quoting
//! the form body as it arrived (`refresh_token=rt%2F…`), or the decoded
//! values, or the Basic header. A [`Redactor`] is built from the request
//! as it is about to be sent, so it knows every secret in every encoding
//! this crate put on the wire, whichever endpoint sent it.
//!
//! Invariants:
//!
//! - Every form parameter is a secret except the few whose values are
//!   public ([`PUBLIC_PARAMS`]): a parameter added with `param()` (an
//!   `assertion`, a `client_assertion`) is protected without being listed.
//! - The credentials of the `Authorization` header are secret; of a Basic
//!   pair, the client secret is, raw and encoded, and so is the pair's
//!   base64 as sent and as the unencoded pair would give it.
//! - Each secret is known raw, form-encoded (`+` for a space), and
//!   percent-encoded (`%20`, with `~` kept or escaped); matching ignores
//!   ASCII case, so lower-case hex and any case mangling match too.
//! - Server text is withheld whole if it contains any [`WINDOW`] bytes in a
//!   row of one of those forms (the whole form, if it is shorter). Text is
//!   checked whole, before it is cut to length: a cut can only remove
//!   bytes, never make a fragment that was not there.

use std::collections::HashSet;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, percent_encode};

/// The shortest fragment of a secret that withholds server text quoting
/// it. A fragment shorter than this of a longer secret may survive; a
/// secret itself shorter than this is matched whole.
pub(crate) const WINDOW: usize = 8;

/// Form parameters whose values are no secret, and common enough in
/// server messages (`scope read`) that treating them as secret would
/// withhold descriptions for nothing.
const PUBLIC_PARAMS: &[&[u8]] = &[
    b"grant_type",
    b"client_assertion_type",
    b"scope",
    b"token_type_hint",
    b"client_id",
    b"audience",
    b"resource",
    b"redirect_uri",
    b"requested_token_type",
    b"subject_token_type",
    b"actor_token_type",
];

/// The secrets a request carried, in every form it carried them.
#[derive(Default)]
pub(crate) struct Redactor {
    /// Forms shorter than [`WINDOW`], ASCII-lowercased: matched whole.
    short: Vec<Vec<u8>>,
    /// Every `WINDOW`-byte run of the longer forms, ASCII-lowercased.
    windows: HashSet<[u8; WINDOW]>,
}

impl Redactor {
    /// A redactor for a request that carried no secret (discovery).
    pub(crate) fn none() -> Self {
        Self::default()
    }

    /// The secrets of `request`: its `Authorization` credentials and its
    /// form values (all but [`PUBLIC_PARAMS`]).
    pub(crate) fn of(request: &Request<Bytes>) -> Self {
        let mut redactor = Redactor::default();
        for value in request.headers().get_all(header::AUTHORIZATION) {
            redactor.add_authorization(value.as_bytes());
        }
        for pair in request.body().split(|&b| b == b'&') {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            if PUBLIC_PARAMS.contains(&form_decode(name).as_slice()) {
                continue;
            }
            // The value as sent, then every other form of it.
            redactor.add_form(value);
            redactor.add_secret(&form_decode(value));
        }
        redactor
    }

    /// Whether `text` quotes any secret this redactor knows, in any form,
    /// or a fragment of one at least [`WINDOW`] bytes long.
    pub(crate) fn quotes(&self, text: &str) -> bool {
        let text = text.as_bytes().to_ascii_lowercase();
        self.short
            .iter()
            .any(|s| text.windows(s.len()).any(|w| w == s.as_slice()))
            || text.windows(WINDOW).any(|w| self.windows.contains(w))
    }

    fn add_authorization(&mut self, value: &[u8]) {
        let value = value.trim_ascii();
        let (scheme, credentials) = match value.iter().position(|&b| b == b' ') {
            Some(i) => (&value[..i], value[i + 1..].trim_ascii()),
            None => (&b""[..], value),
        };
        self.add_form(credentials);
        if !scheme.eq_ignore_ascii_case(b"basic") {
            return;
        }
        let Ok(pair) = base64::engine::general_purpose::STANDARD.decode(credentials) else {
            return;
        };
        // RFC 6749 §2.3.1: each half form-encoded, so the first `:` splits.
        let Some(colon) = pair.iter().position(|&b| b == b':') else {
            self.add_secret(&form_decode(&pair));
            return;
        };
        let (id, secret) = (form_decode(&pair[..colon]), form_decode(&pair[colon + 1..]));
        self.add_form(&pair[colon + 1..]);
        self.add_secret(&secret);
        let raw_pair = [id.as_slice(), b":", secret.as_slice()].concat();
        for pair in [&pair, &raw_pair] {
            for engine in [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::URL_SAFE,
            ] {
                self.add_form(engine.encode(pair).as_bytes());
            }
        }
    }

    /// `secret`, raw, in both form encodings and percent-encoded.
    fn add_secret(&mut self, secret: &[u8]) {
        self.add_form(secret);
        let form = || form_urlencoded::byte_serialize(secret);
        self.add_form(form().collect::<String>().as_bytes());
        let space_as_20 = form().map(|s| if s == "+" { "%20" } else { s });
        self.add_form(space_as_20.collect::<String>().as_bytes());
        self.add_form(percent_encode(secret, URI_ESCAPED).to_string().as_bytes());
    }

    fn add_form(&mut self, form: &[u8]) {
        let form = form.to_ascii_lowercase();
        if form.is_empty() {
            return;
        }
        if form.len() < WINDOW {
            if !self.short.contains(&form) {
                self.short.push(form);
            }
            return;
        }
        for w in form.windows(WINDOW) {
            if let Ok(w) = <[u8; WINDOW]>::try_from(w) {
                self.windows.insert(w);
            }
        }
    }
}

/// What RFC 3986 percent-encodes: all but the unreserved characters.
const URI_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `application/x-www-form-urlencoded` decoding; a `%` not followed by two
/// hex digits stays as it is.
pub(super) fn form_decode(input: &[u8]) -> Vec<u8> {
    // `+` is no hex digit, so spaces first and percents after is the
    // WHATWG order (`form_urlencoded::parse` does the same per value).
    let spaced: Vec<u8> = input
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_decode(&spaced).collect()
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::{ClientAuth, Form};

    const REFRESH: &str = "rt/Secret+Value with space~*é";
    const CLIENT_SECRET: &str = "cs:s3cr&t/ünï code";

    fn sent(auth: ClientAuth) -> Request<Bytes> {
        let mut form = Form::default();
        form.pair("grant_type", "refresh_token");
        form.pair("refresh_token", REFRESH);
        form.pair("scope", "read");
        let endpoint = super::super::Endpoint::new(
            "https://auth.example.com/token".parse().unwrap(),
            "token endpoint",
        );
        super::super::token_request(&endpoint, &auth, form)
            .unwrap()
            .0
    }

    #[test]
    fn every_encoding_of_every_secret_is_recognised() {
        let request = sent(ClientAuth::basic("my-client", CLIENT_SECRET));
        let r = Redactor::of(&request);
        let header = request.headers()[header::AUTHORIZATION].to_str().unwrap();
        let body = std::str::from_utf8(request.body()).unwrap();
        for quoted in [
            body,
            header,
            REFRESH,
            CLIENT_SECRET,
            "rt%2FSecret%2BValue+with+space%7E*%C3%A9",
            "rt%2fsecret%2bvalue%20with%20space~%2a%c3%a9",
            "cs%3As3cr%26t%2F%C3%BCn%C3%AF+code",
            "cs%3as3cr%26t%2f%c3%bcn%c3%af%20code",
            &base64::engine::general_purpose::STANDARD.encode(format!("my-client:{CLIENT_SECRET}")),
            &base64::engine::general_purpose::URL_SAFE.encode(format!("my-client:{CLIENT_SECRET}")),
            // Fragments: a prefix and a suffix, cut mid-token.
            "refresh token rt/Secret+V… is revoked",
            "…with space~*é is unknown",
            "RT/SECRET+VALUE",
        ] {
            assert!(r.quotes(quoted), "not recognised: {quoted}");
        }
        for innocent in [
            "refresh token is revoked",
            "invalid client my-client",
            "scope read is not allowed",
            "rt/Secr",
            "",
        ] {
            assert!(!r.quotes(innocent), "withheld for nothing: {innocent}");
        }
    }

    #[test]
    fn post_auth_and_extra_params_are_secrets_too() {
        let mut form = Form::default();
        form.pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer");
        form.pair("assertion", "eyJhbGciOi.assertion-body.sig");
        let endpoint = super::super::Endpoint::new(
            "https://auth.example.com/token".parse().unwrap(),
            "token endpoint",
        );
        let request = super::super::token_request(
            &endpoint,
            &ClientAuth::post("my-client", CLIENT_SECRET),
            form,
        )
        .unwrap()
        .0;
        let r = Redactor::of(&request);
        assert!(r.quotes("bad assertion eyJhbGciOi.assertion…"));
        assert!(r.quotes(CLIENT_SECRET));
        assert!(!r.quotes("grant type jwt-bearer unsupported for my-client"));
    }

    #[test]
    fn a_short_secret_is_matched_whole() {
        let mut request = Request::new(Bytes::from_static(b"token=ab%2Fc"));
        request.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer xyz"),
        );
        let r = Redactor::of(&request);
        assert!(r.quotes("token AB/C"));
        assert!(r.quotes("token ab%2fc"));
        assert!(r.quotes("got xyz"));
        assert!(!r.quotes("token ab/"));
    }

    #[test]
    fn form_decoding_keeps_stray_percents() {
        assert_eq!(form_decode(b"a+b%2Fc%2f%zz%4"), b"a b/c/%zz%4");
        assert_eq!(form_decode(b"%2B+%2+%"), b"+ %2 %");
    }
}
