//! Successful token responses (RFC 6749 §5.1) as [`TokenSet`]s, and the
//! `exp` of a JWT access token for servers that leave out `expires_in`.
//!
//! Every grant of this crate parses its answers here; use [`parse`]
//! directly for a token endpoint this crate does not call.
//!
//! # Example
//!
//! ```
//! use tower_token_refresh_oauth2::token_response;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let tokens = token_response::parse(br#"{"access_token":"a","token_type":"bearer"}"#).unwrap();
//! assert_eq!(tokens.token_type(), "Bearer");
//! # }
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::time::Instant;
use tower_token_refresh_core::{AccessToken, Error, RefreshToken, TokenSet};

/// The longest lifetime we believe from `expires_in`: ten years (what
/// [`TokenSet::with_expires_in`] clamps to). Larger values are clamped so
/// that arithmetic on instants cannot overflow.
const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Parses a successful token response body (RFC 6749 §5.1).
///
/// `access_token` and `token_type` are required (`token_type` in any
/// case); `expires_in` may be a number or a numeric string, negative
/// values count as zero and huge ones are clamped to ten years; unknown
/// fields are ignored.
///
/// # Errors
///
/// [`ErrorKind::InvalidResponse`](tower_token_refresh_core::ErrorKind::InvalidResponse) when
/// the body is not JSON, a required field is missing or empty, or
/// `expires_in` is not a number. The message never contains the body.
///
/// # Example
///
/// ```
/// use tower_token_refresh_oauth2::token_response;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let body = br#"{"access_token":"a1","token_type":"bearer","expires_in":"60","refresh_token":"r1"}"#;
/// let tokens = token_response::parse(body).unwrap();
/// assert_eq!(tokens.access_token().secret(), "a1");
/// assert_eq!(tokens.token_type(), "Bearer");
/// assert!(token_response::parse(b"<html>bad gateway</html>").is_err());
/// # }
/// ```
pub fn parse(body: &[u8]) -> Result<TokenSet, Error> {
    let raw: RawTokenResponse = serde_json::from_slice(body).map_err(|e| {
        Error::invalid_response(format!(
            "token response is not the expected JSON (line {}, column {}: {})",
            e.line(),
            e.column(),
            describe_json_error(&e)
        ))
    })?;
    if raw.access_token.is_empty() {
        return Err(Error::invalid_response(
            "token response has an empty access_token",
        ));
    }
    if raw.token_type.is_empty() {
        return Err(Error::invalid_response(
            "token response has an empty token_type",
        ));
    }
    let expires_at = match raw.expires_in {
        Some(value) => Some(Instant::now() + value.into_duration()?),
        // RFC 6749 §5.1 only recommends `expires_in`; a JWT access
        // token still says when it expires.
        None => jwt_expiry(&raw.access_token).map(system_time_to_instant),
    };
    let tokens = TokenSet::bearer(AccessToken::new(raw.access_token))
        .with_token_type(&raw.token_type)
        .with_expires_at(expires_at)
        .with_refresh_token_opt(
            raw.refresh_token
                .filter(|r| !r.is_empty())
                .map(RefreshToken::new),
        );
    Ok(match raw.scope {
        Some(scope) => tokens.with_scope(scope),
        None => tokens,
    })
}

/// A wall-clock time as an instant on tokio's clock; times in the past
/// become now (expired), far futures are clamped.
pub(crate) fn system_time_to_instant(at: SystemTime) -> Instant {
    let now = Instant::now();
    match at.duration_since(SystemTime::now()) {
        Ok(ahead) => now + ahead.min(MAX_LIFETIME),
        Err(_) => now,
    }
}

/// serde's messages can quote the input; keep only the category.
fn describe_json_error(e: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match e.classify() {
        Category::Io => "read error",
        Category::Syntax => "syntax error",
        Category::Data => "missing or mistyped field",
        Category::Eof => "unexpected end",
    }
}

/// The `exp` claim of a JWT (RFC 7519 §4.1.4) as a wall-clock time, read
/// without verifying anything: the client is not the token's audience, it
/// only wants to know when to refresh.
///
/// Returns `None` for anything that is not a JWS in compact form (three
/// base64url segments) whose payload is a JSON object with a numeric `exp`
/// (an integer or a fraction of seconds since the Unix epoch, at most ten
/// years ahead of the epoch's far end; negative values are refused).
/// Encrypted tokens (JWE, five segments) and opaque tokens give `None`.
/// It never panics, whatever the input.
///
/// # Example
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use base64::Engine as _;
/// use tower_token_refresh_oauth2::token_response::jwt_expiry;
///
/// let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
/// let jwt = format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(r#"{"sub":"u","exp":1700000000}"#));
/// assert_eq!(jwt_expiry(&jwt), Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
/// assert_eq!(jwt_expiry("an-opaque-token"), None);
/// ```
pub fn jwt_expiry(token: &str) -> Option<SystemTime> {
    use base64::Engine as _;

    // A JWT in a response is small; refuse to decode megabytes.
    const MAX_JWT: usize = 16 * 1024;
    if token.len() > MAX_JWT {
        return None;
    }
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    // base64url without padding (RFC 7515 §2); tolerate padding anyway.
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let payload = engine.decode(payload).ok()?;
    #[derive(Deserialize)]
    struct Claims {
        exp: Option<serde_json::Number>,
    }
    let claims: Claims = serde_json::from_slice(&payload).ok()?;
    let exp = claims.exp?.as_f64()?;
    if !(0.0..=MAX_JWT_EXP_SECS).contains(&exp) {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::from_secs_f64(exp))
}

/// Year 9999: later `exp` values are junk, not lifetimes.
const MAX_JWT_EXP_SECS: f64 = 253_402_300_799.0;

// No Debug derive: the raw response holds secrets.
#[derive(Deserialize)]
struct RawTokenResponse {
    access_token: String,
    token_type: String,
    #[serde(default)]
    expires_in: Option<ExpiresIn>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ExpiresIn {
    Int(i64),
    Float(f64),
    Text(String),
}

impl ExpiresIn {
    fn into_duration(self) -> Result<Duration, Error> {
        let secs = match self {
            ExpiresIn::Int(n) => n as f64,
            ExpiresIn::Float(f) => f,
            ExpiresIn::Text(s) => s.trim().parse::<f64>().map_err(|_| {
                Error::invalid_response("token response has a non-numeric expires_in")
            })?,
        };
        if secs.is_nan() {
            return Err(Error::invalid_response(
                "token response has a non-numeric expires_in",
            ));
        }
        let clamped = secs.clamp(0.0, MAX_LIFETIME.as_secs_f64());
        Ok(Duration::from_secs_f64(clamped))
    }
}

/// An OAuth2 error response body (RFC 6749 §5.2).
#[derive(Debug, Deserialize)]
pub(crate) struct OAuthErrorBody {
    pub(crate) error: String,
    #[serde(default)]
    pub(crate) error_description: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_token_refresh_core::ErrorKind;

    #[tokio::test(start_paused = true)]
    async fn parses_required_and_optional_fields() {
        let t = parse(
            br#"{"access_token":"a","token_type":"BEARER","expires_in":120,"refresh_token":"r","scope":"read write","extra":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(t.access_token().secret(), "a");
        assert_eq!(t.token_type(), "Bearer");
        assert_eq!(
            t.expires_at(),
            Some(Instant::now() + Duration::from_secs(120))
        );
        assert_eq!(t.refresh_token().map(|r| r.secret()), Some("r"));
        assert_eq!(t.scope(), Some("read write"));
    }

    #[tokio::test(start_paused = true)]
    async fn expires_in_as_string_negative_and_huge() {
        let t =
            parse(br#"{"access_token":"a","token_type":"Bearer","expires_in":" 30 "}"#).unwrap();
        assert_eq!(
            t.expires_at(),
            Some(Instant::now() + Duration::from_secs(30))
        );
        let t = parse(br#"{"access_token":"a","token_type":"Bearer","expires_in":-5}"#).unwrap();
        assert_eq!(t.expires_at(), Some(Instant::now()));
        let t = parse(br#"{"access_token":"a","token_type":"Bearer","expires_in":1e300}"#).unwrap();
        assert_eq!(t.expires_at(), Some(Instant::now() + MAX_LIFETIME));
        let t = parse(br#"{"access_token":"a","token_type":"Bearer"}"#).unwrap();
        assert_eq!(t.expires_at(), None);
    }

    fn jwt(payload: &str) -> String {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256","typ":"at+jwt"}"#),
            b64(payload)
        )
    }

    #[tokio::test(start_paused = true)]
    async fn missing_expires_in_falls_back_to_the_jwt_exp() {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let token = jwt(&format!(r#"{{"sub":"u","exp":{exp}}}"#));
        let body = format!(r#"{{"access_token":"{token}","token_type":"Bearer"}}"#);
        let t = parse(body.as_bytes()).unwrap();
        let left = t.expires_at().unwrap() - Instant::now();
        assert!(
            left <= Duration::from_secs(600) && left > Duration::from_secs(595),
            "{left:?}"
        );
        // `expires_in` wins over `exp` when both are there.
        let body = format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":30}}"#);
        let t = parse(body.as_bytes()).unwrap();
        assert_eq!(
            t.expires_at(),
            Some(Instant::now() + Duration::from_secs(30))
        );
        // An `exp` in the past: expired now (the coordinator refuses it).
        let past = jwt(r#"{"exp":1000}"#);
        let body = format!(r#"{{"access_token":"{past}","token_type":"Bearer"}}"#);
        let t = parse(body.as_bytes()).unwrap();
        assert_eq!(t.expires_at(), Some(Instant::now()));
    }

    #[test]
    fn jwt_expiry_refuses_what_is_not_a_readable_jws() {
        for token in [
            "opaque".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d.e".to_owned(),
            jwt(r#"{"exp":"1700000000"}"#),
            jwt(r#"{"exp":-1}"#),
            jwt(r#"{"exp":1e300}"#),
            jwt(r#"{"sub":"no exp"}"#),
            jwt(r#"[1,2]"#),
            "e30.!!!.x".to_owned(),
        ] {
            assert_eq!(jwt_expiry(&token), None, "{token}");
        }
        assert_eq!(
            jwt_expiry(&jwt(r#"{"exp":1700000000.5}"#)),
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_500))
        );
    }

    #[tokio::test]
    async fn malformed_bodies_are_invalid_response_without_echoing_input() {
        for body in [
            &b"<html>502 Bad Gateway secret-ish</html>"[..],
            br#"{"token_type":"Bearer"}"#,
            br#"{"access_token":"","token_type":"Bearer"}"#,
            br#"{"access_token":"tok-123","token_type":"Bearer","expires_in":"soon"}"#,
            br#"{"access_token":"tok-123","token_type":"Bearer","expires_in":[1]}"#,
            b"",
        ] {
            let err = parse(body).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{err}");
            let shown = format!("{err} {err:?}");
            assert!(
                !shown.contains("tok-123") && !shown.contains("secret-ish"),
                "{shown}"
            );
        }
    }
}
