//! An authorization server that quotes the request back (form body, Basic
//! header, both; as sent, decoded or re-encoded; cut by itself or long
//! enough that we cut it) never gets a secret, in any form, into an error's
//! `Display`, `Debug` or source chain, or into the TRACE log, of the refresh
//! grant, client credentials, introspection or revocation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{error::Error as _, fmt::Write as _, time::Duration};

use support::capture::Captured;
use tower_token_refresh::{
    Error, ErrorKind, ServiceClient, TokenManager, TokenSet,
    oauth2::{
        ClientAuth, ClientCredentialsGrant, IntrospectionClient, RefreshTokenGrant,
        RevocationClient, TokenTypeHint,
    },
};
use tower_token_refresh_test_util::{AuthConfig, AuthServer, Echo, Endpoint, Fault, hyper_client};

// Secrets with every byte class an encoder treats differently: `/`, `+`,
// space, `~`, `*`, `%`, `:`, `=`, `&` and non-ASCII.
const REFRESH_TOKEN: &str = "rt/Zq9+Xk2 Lm~Pw*8é=Rf&Yt3Vb";
const CLIENT_SECRET: &str = "cs:Hj4/Nm8+Qw 2%Er~Ty7é";
const ACCESS_TOKEN: &str = "at.Ab3/Cd4+Ef5 Gh6~Ij7*Kl8";
const CLIENT_ID: &str = "my-client";

/// The shortest run of a secret's characters that counts as quoting it.
const FRAGMENT: usize = 8;

/// Every form a secret can take on the wire or in an echo of it, written
/// here independently of the library: raw, WHATWG form-encoded (`+`),
/// percent-encoded (`%20`; `~` kept or escaped), each with upper- and
/// lower-case hex.
fn encodings(secret: &str) -> Vec<String> {
    let encode = |space: &str, keep_tilde: bool, lower: bool| {
        let mut out = String::new();
        for &b in secret.as_bytes() {
            let keep = b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'.' | b'_')
                || (b == b'*' && !keep_tilde)
                || (b == b'~' && keep_tilde);
            if keep {
                out.push(char::from(b));
            } else if b == b' ' {
                out.push_str(space);
            } else if lower {
                write!(out, "%{b:02x}").unwrap();
            } else {
                write!(out, "%{b:02X}").unwrap();
            }
        }
        out
    };
    let mut forms = vec![secret.to_owned()];
    for lower in [false, true] {
        forms.push(encode("+", false, lower));
        forms.push(encode("%20", false, lower));
        forms.push(encode("%20", true, lower));
    }
    forms
}

/// The forms of every secret, and of the Basic pair carrying the client
/// secret (base64 of the form-encoded pair, as sent, and of the raw pair).
fn all_forms() -> Vec<String> {
    let mut forms = Vec::new();
    for secret in [REFRESH_TOKEN, CLIENT_SECRET, ACCESS_TOKEN] {
        forms.extend(encodings(secret));
    }
    let form_encoded_secret = &encodings(CLIENT_SECRET)[1];
    for pair in [
        format!("{CLIENT_ID}:{form_encoded_secret}"),
        format!("{CLIENT_ID}:{CLIENT_SECRET}"),
    ] {
        for alphabet in [STANDARD, URL_SAFE] {
            // Only the part that encodes the secret: the id is public.
            let encoded = base64(pair.as_bytes(), alphabet);
            let from = CLIENT_ID.len() / 3 * 4;
            forms.push(encoded[from..].to_owned());
        }
    }
    forms
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 with padding (RFC 4648 §4, §5 with `alphabet`).
fn base64(input: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Fails if `shown` holds any `FRAGMENT` characters in a row of any form
/// of any secret, ignoring ASCII case.
fn assert_no_secret(what: &str, shown: &str) {
    let shown_lower = shown.to_ascii_lowercase();
    for form in all_forms() {
        let form = form.to_ascii_lowercase();
        let chars: Vec<char> = form.chars().collect();
        for window in chars.windows(FRAGMENT) {
            let fragment: String = window.iter().collect();
            assert!(
                !shown_lower.contains(&fragment),
                "{what} quotes {fragment:?} of {form:?}:\n{shown}"
            );
        }
    }
}

/// `Display`, `Debug` (plain and pretty) of the error and of each error in
/// its source chain.
fn everything_shown(err: &Error) -> String {
    let mut shown = format!("{err}\n{err:?}\n{err:#?}\n");
    let mut source = err.source();
    while let Some(e) = source {
        writeln!(shown, "{e}\n{e:?}").unwrap();
        source = e.source();
    }
    shown
}

/// An echo, and what its answer must still tell the user: the server's
/// `error` code for a JSON body, or a transient failure for plain text.
struct Case {
    echo: Echo,
    code: Option<&'static str>,
    status: u16,
}

impl Case {
    /// The echo was served (`times` more, `served` in all) and the error
    /// still names the server's code, yet shows no form of any secret.
    fn judge(&self, auth: &AuthServer, served: &mut u64, times: u64, err: &Error) {
        *served += times;
        assert_eq!(auth.stats().faults_served, *served, "{:?}", self.echo);
        self.check(err);
        assert_no_secret(
            &format!("{:?}: the error", self.echo),
            &everything_shown(err),
        );
    }

    fn check(&self, err: &Error) {
        match self.code {
            // The manager wraps the last attempt's error after retries: the
            // code is on the error or on one in its chain.
            Some(code) => {
                let mut codes = vec![err.oauth_error()];
                let mut source = err.source();
                while let Some(e) = source {
                    codes.extend(e.downcast_ref::<Error>().map(Error::oauth_error));
                    source = e.source();
                }
                assert!(codes.contains(&Some(code)), "{:?}: {err:?}", self.echo);
            }
            None => assert_eq!(err.kind(), ErrorKind::Transient, "{:?}: {err:?}", self.echo),
        }
    }
}

/// The echoes each call is answered with.
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |echo: Echo, code, status| cases.push(Case { echo, code, status });
    for (place, code, status) in [
        (Echo::json(400), Some("invalid_request"), 400),
        (
            Echo::json(400).error("invalid_grant"),
            Some("invalid_grant"),
            400,
        ),
        (Echo::json(503), Some("temporarily_unavailable"), 503),
        (Echo::text(502), None, 502),
    ] {
        for quote in [
            place.clone(),
            place.clone().body_only(),
            place.authorization_only(),
        ] {
            add(quote.clone(), code, status);
            add(quote.clone().decoded(), code, status);
            add(quote.reencoded(), code, status);
        }
    }
    // The library cuts descriptions to 200 bytes: filler that puts the cut
    // inside a secret, and servers that cut their own text mid-secret.
    let code = Some("invalid_request");
    for lead in [110, 125, 140, 155, 170, 185] {
        add(Echo::json(400).lead(lead), code, 400);
        add(Echo::json(400).lead(lead).decoded(), code, 400);
    }
    for cut in [60, 70, 80, 90, 100] {
        add(Echo::json(400).cut(cut), code, 400);
        add(Echo::json(400).cut(cut).decoded(), code, 400);
        add(
            Echo::json(400).cut(cut).authorization_only().decoded(),
            code,
            400,
        );
    }
    cases
}

fn auth_methods() -> [ClientAuth; 2] {
    [
        ClientAuth::basic(CLIENT_ID, CLIENT_SECRET),
        ClientAuth::post(CLIENT_ID, CLIENT_SECRET),
    ]
}

fn http() -> ServiceClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
> {
    ServiceClient::new(hyper_client())
}

#[tokio::test]
async fn a_refresh_grant_answer_quoting_the_request_shows_no_secret() {
    let (captured, _guard) = Captured::trace();
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let mut served = 0;
    for client_auth in auth_methods() {
        for case in cases() {
            auth.inject(Fault::Echo(case.echo.clone()), 1);
            let grant = RefreshTokenGrant::new(
                auth.token_url().parse().unwrap(),
                client_auth.clone(),
                http(),
            );
            let tokens = TokenManager::builder(grant)
                .initial(TokenSet::bearer(ACCESS_TOKEN).with_refresh_token(REFRESH_TOKEN))
                .max_attempts(1)
                .build();
            let err = tokens.refresh().await.unwrap_err();
            case.judge(&auth, &mut served, 1, &err);
        }
    }
    let trace = captured.text();
    assert!(trace.contains("token refresh attempt failed"), "{trace}");
    assert_no_secret("the trace", &trace);
}

#[tokio::test]
async fn a_client_credentials_answer_quoting_the_request_shows_no_secret() {
    let (captured, _guard) = Captured::trace();
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let mut served = 0;
    for client_auth in auth_methods() {
        for case in cases() {
            auth.inject(Fault::Echo(case.echo.clone()), 1);
            let grant = ClientCredentialsGrant::new(
                auth.token_url().parse().unwrap(),
                client_auth.clone(),
                http(),
            );
            let tokens = TokenManager::builder(grant).max_attempts(1).build();
            let err = tokens.authorization().await.unwrap_err();
            case.judge(&auth, &mut served, 1, &err);
        }
    }
    let trace = captured.text();
    assert!(trace.contains("token refresh attempt failed"), "{trace}");
    assert_no_secret("the trace", &trace);
}

#[tokio::test]
async fn an_introspection_answer_quoting_the_request_shows_no_secret() {
    let (captured, _guard) = Captured::trace();
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let mut served = 0;
    for client_auth in auth_methods() {
        for case in cases() {
            auth.inject_at(Endpoint::Introspection, Fault::Echo(case.echo.clone()), 1);
            let client = IntrospectionClient::new(
                auth.introspection_url().parse().unwrap(),
                client_auth.clone(),
                http(),
            );
            let err = client
                .introspect(ACCESS_TOKEN, Some(TokenTypeHint::AccessToken))
                .await
                .unwrap_err();
            case.judge(&auth, &mut served, 1, &err);
        }
    }
    assert_no_secret("the trace", &captured.text());
}

#[tokio::test]
async fn a_revocation_answer_quoting_the_request_shows_no_secret() {
    let (captured, _guard) = Captured::trace();
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let mut served = 0;
    for client_auth in auth_methods() {
        for case in cases() {
            let client = RevocationClient::new(
                auth.revocation_url().parse().unwrap(),
                client_auth.clone(),
                http(),
            )
            .retry(2, Duration::from_millis(1));
            // A 5xx is retried once (and logged); both attempts get the echo.
            let attempts = if case.status >= 500 { 2 } else { 1 };
            for (token, hint) in [
                (REFRESH_TOKEN, TokenTypeHint::RefreshToken),
                (ACCESS_TOKEN, TokenTypeHint::AccessToken),
            ] {
                auth.inject_at(
                    Endpoint::Revocation,
                    Fault::Echo(case.echo.clone()),
                    attempts,
                );
                let err = client.revoke(token, Some(hint)).await.unwrap_err();
                case.judge(&auth, &mut served, u64::try_from(attempts).unwrap(), &err);
            }
        }
    }
    let trace = captured.text();
    assert!(trace.contains("revocation failed; retrying"), "{trace}");
    assert_no_secret("the trace", &trace);
}

#[test]
fn the_test_base64_is_base64() {
    assert_eq!(base64(b"my-client:s", STANDARD), "bXktY2xpZW50OnM=");
    assert_eq!(base64(b"\xfb\xff", URL_SAFE), "-_8=");
}

#[tokio::test]
async fn a_description_quoting_no_secret_is_shown() {
    // The real server's refusal of an unknown refresh token.
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let grant = RefreshTokenGrant::new(
        auth.token_url().parse().unwrap(),
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        http(),
    );
    let tokens = TokenManager::builder(grant)
        .initial(TokenSet::bearer("a").with_refresh_token(REFRESH_TOKEN))
        .build();
    let err = tokens.refresh().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    assert_eq!(err.oauth_error(), Some("invalid_grant"));
    assert!(err.to_string().contains("unknown refresh token"), "{err}");
}
