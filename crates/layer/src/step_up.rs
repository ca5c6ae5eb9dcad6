//! What a resource asks of the next login, read from its 401 or 403:
//! step-up authentication (RFC 9470 `insufficient_user_authentication`,
//! with `acr_values` and `max_age`), a wider scope (RFC 6750
//! `insufficient_scope`), and where its metadata is (RFC 9728
//! `resource_metadata`).
//!
//! A new token from the refresh token cannot answer these: the user must
//! log in again, more strongly or more widely. The layer leaves such
//! responses alone (its classifier counts only `invalid_token` as a
//! rejected token), so the application gets them, reads a [`StepUp`] with
//! [`StepUp::from_response`], and starts a login with its
//! [`login_hints`](StepUp::login_hints).
//!
//! The challenges are parsed by [`parse_challenges`], the layer's one
//! `WWW-Authenticate` parser.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::{Response, StatusCode};
//! use tower_token_refresh::step_up::StepUp;
//!
//! let response = Response::builder()
//!     .status(StatusCode::UNAUTHORIZED)
//!     .header(
//!         "www-authenticate",
//!         r#"Bearer error="insufficient_user_authentication", acr_values="urn:example:mfa", max_age="300""#,
//!     )
//!     .body(())
//!     .unwrap();
//! let step_up = StepUp::from_response(&response).unwrap();
//! assert!(step_up.is_step_up());
//! let hints = step_up.login_hints();
//! assert_eq!(hints.acr_values(), Some("urn:example:mfa"));
//! assert_eq!(hints.max_age(), Some(Duration::from_secs(300)));
//! // Then: `login.login_with(&hints).await` and `tokens.set(new_tokens)`.
//! ```

use std::time::Duration;

use http::{HeaderMap, Response, StatusCode, Uri, header};
use tower_token_refresh_core::{ErrorCode, is_loopback_host};
use tower_token_refresh_oauth2::LoginHints;

use crate::classify::parse_challenges;

/// What a 401 or 403 asks of the next login: step-up, a wider scope, or
/// where the resource's metadata is.
///
/// Found in the response's `Bearer` (or `DPoP`) challenge; the first such
/// challenge that says anything of these wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepUp {
    status: StatusCode,
    error: Option<ErrorCode>,
    /// What the challenge asks of the login: `acr_values`, `max_age`, `scope`.
    hints: LoginHints,
    resource_metadata: Option<Uri>,
}

impl StepUp {
    /// What `response` asks of the next login; `None` if it is no 401 or
    /// 403, or its challenges ask nothing of a login (a plain
    /// `invalid_token`, which a refresh answers, or no challenge).
    pub fn from_response<B>(response: &Response<B>) -> Option<StepUp> {
        Self::from_parts(response.status(), response.headers())
    }

    /// As [`from_response`](Self::from_response), from a status and headers.
    pub fn from_parts(status: StatusCode, headers: &HeaderMap) -> Option<StepUp> {
        if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
            return None;
        }
        for value in headers.get_all(header::WWW_AUTHENTICATE) {
            let Ok(value) = value.to_str() else { continue };
            for challenge in parse_challenges(value) {
                if !challenge.scheme.eq_ignore_ascii_case("bearer")
                    && !challenge.scheme.eq_ignore_ascii_case("dpop")
                {
                    continue;
                }
                let error = challenge.error();
                let asks_login = matches!(
                    error,
                    Some(ErrorCode::InsufficientUserAuthentication | ErrorCode::InsufficientScope)
                );
                let resource_metadata = challenge
                    .param("resource_metadata")
                    .and_then(|v| metadata_url(&v));
                if !asks_login && resource_metadata.is_none() {
                    continue;
                }
                let mut hints = LoginHints::new();
                if let Some(acr) = challenge.param("acr_values").filter(|v| !v.is_empty()) {
                    hints = hints.with_acr_values(acr.into_owned());
                }
                // RFC 9470 §3: a non-negative integer of seconds; anything
                // else is ignored rather than guessed at.
                if let Some(max_age) = challenge.param("max_age").and_then(|v| v.parse().ok()) {
                    hints = hints.with_max_age(Duration::from_secs(max_age));
                }
                if let Some(scope) = challenge.param("scope").filter(|v| !v.is_empty()) {
                    hints = hints.with_scope(scope.into_owned());
                }
                return Some(StepUp {
                    status,
                    error,
                    hints,
                    resource_metadata,
                });
            }
        }
        None
    }

    /// The response's status: 401 or 403.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The challenge's `error` code, if any, as text;
    /// [`error_code`](Self::error_code) to match on it.
    pub fn error(&self) -> Option<&str> {
        self.error.as_ref().map(ErrorCode::as_str)
    }

    /// The challenge's `error` code, if any.
    pub fn error_code(&self) -> Option<&ErrorCode> {
        self.error.as_ref()
    }

    /// Whether the resource asks for a stronger or more recent
    /// authentication (`insufficient_user_authentication`, RFC 9470).
    pub fn is_step_up(&self) -> bool {
        matches!(self.error, Some(ErrorCode::InsufficientUserAuthentication))
    }

    /// Whether the resource asks for more scope (`insufficient_scope`).
    pub fn is_insufficient_scope(&self) -> bool {
        matches!(self.error, Some(ErrorCode::InsufficientScope))
    }

    /// The authentication context classes the resource accepts.
    pub fn acr_values(&self) -> Option<&str> {
        self.hints.acr_values()
    }

    /// How recent the user's authentication must be.
    pub fn max_age(&self) -> Option<Duration> {
        self.hints.max_age()
    }

    /// The scope the resource needs.
    pub fn scope(&self) -> Option<&str> {
        self.hints.scope()
    }

    /// Where the resource's RFC 9728 metadata is (its authorization
    /// servers, the scopes it knows). An absolute `https://` URL, or
    /// `http://` to a loopback host; anything else is dropped. Check the
    /// document's `resource` against the URL you called before you trust
    /// it (RFC 9728 §3.3).
    pub fn resource_metadata(&self) -> Option<&Uri> {
        self.resource_metadata.as_ref()
    }

    /// The hints for the login that answers this: `acr_values` and
    /// `max_age` of a step-up, the `scope` of an `insufficient_scope`.
    pub fn login_hints(&self) -> LoginHints {
        self.hints.clone()
    }
}

/// A `resource_metadata` value the application may fetch: absolute,
/// `https`, or `http` to a loopback host.
fn metadata_url(value: &str) -> Option<Uri> {
    let uri: Uri = value.parse().ok()?;
    let host = uri.host()?;
    match uri.scheme_str()? {
        s if s.eq_ignore_ascii_case("https") => Some(uri),
        s if s.eq_ignore_ascii_case("http") && is_loopback_host(host) => Some(uri),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn parts(status: u16, challenges: &[&'static str]) -> Option<StepUp> {
        let mut headers = HeaderMap::new();
        for c in challenges {
            headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        StepUp::from_parts(StatusCode::from_u16(status).unwrap(), &headers)
    }

    #[test]
    fn rfc_9470_step_up_challenge() {
        let s = parts(
            401,
            &[r#"Bearer error="insufficient_user_authentication", error_description="A different authentication level is required", acr_values="myACR""#],
        )
        .unwrap();
        assert!(s.is_step_up());
        assert_eq!(s.acr_values(), Some("myACR"));
        assert_eq!(s.max_age(), None);
        let s = parts(
            401,
            &[r#"Bearer error="insufficient_user_authentication", error_description="More recent authentication is required", max_age="5""#],
        )
        .unwrap();
        assert_eq!(s.max_age(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn rfc_9728_resource_metadata_alone_is_found() {
        let s = parts(
            401,
            &[r#"Bearer resource_metadata="https://resource.example.com/.well-known/oauth-protected-resource""#],
        )
        .unwrap();
        assert!(!s.is_step_up());
        assert_eq!(
            s.resource_metadata().unwrap().to_string(),
            "https://resource.example.com/.well-known/oauth-protected-resource"
        );
        assert!(s.login_hints().is_empty());
    }

    #[test]
    fn the_bearer_challenge_is_found_among_others_and_across_headers() {
        let s = parts(
            403,
            &[
                r#"Basic realm="x""#,
                r#"Newauth realm="y", DPoP algs="ES256", Bearer error="insufficient_scope", scope="admin write""#,
            ],
        )
        .unwrap();
        assert!(s.is_insufficient_scope());
        assert_eq!(s.login_hints().scope(), Some("admin write"));
    }

    #[test]
    fn nothing_for_a_login_is_none() {
        assert!(parts(401, &[r#"Bearer error="invalid_token""#]).is_none());
        assert!(parts(401, &[r#"Bearer realm="api""#]).is_none());
        assert!(parts(401, &[]).is_none());
        assert!(parts(403, &[r#"Basic error="insufficient_scope""#]).is_none());
        // Only 401 and 403 carry these.
        assert!(parts(400, &[r#"Bearer error="insufficient_scope""#]).is_none());
    }

    #[test]
    fn unusable_values_are_dropped_not_guessed() {
        let s = parts(
            401,
            &[r#"Bearer error="insufficient_user_authentication", max_age="-1", acr_values="", resource_metadata="http://evil.example/meta""#],
        )
        .unwrap();
        assert_eq!(s.max_age(), None);
        assert_eq!(s.acr_values(), None);
        assert_eq!(s.resource_metadata(), None);
        for bad in ["/relative", "ftp://x/", "javascript:alert(1)"] {
            assert!(metadata_url(bad).is_none(), "{bad}");
        }
        assert!(metadata_url("http://127.0.0.1:9/m").is_some());
        assert!(metadata_url("http://[::1]:9/m").is_some());
    }
}
