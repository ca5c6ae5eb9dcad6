//! OAuth 2.0 `error` codes as a type: each code's spelling in one place,
//! read once from a server's text and matched as a variant afterwards.

use std::{borrow::Cow, convert::Infallible, fmt, hash, str::FromStr};

/// Declares [`ErrorCode`] from `Variant = "spelling"` lines, so that the
/// enum, [`ErrorCode::as_str`] and the parser cannot disagree.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// An OAuth 2.0 `error` code, from a token endpoint's JSON error
        /// (RFC 6749 §5.2), an authorization redirect (RFC 6749 §4.1.2.1,
        /// OpenID Connect Core §3.1.2.6), a device login (RFC 8628 §3.5) or
        /// a resource's `WWW-Authenticate` challenge (RFC 6750 §3.1,
        /// RFC 9449, RFC 9470).
        ///
        /// Made from text with [`From`] (or [`str::parse`], which cannot
        /// fail): a code this type has no variant for is
        /// [`Other`](Self::Other). Codes compare, hash and print as their
        /// text, so an `Other` spelling a known code equals that variant.
        ///
        /// # Example
        ///
        /// ```
        /// use tower_token_refresh_core::ErrorCode;
        ///
        /// let code = ErrorCode::from("invalid_grant");
        /// assert_eq!(code, ErrorCode::InvalidGrant);
        /// assert_eq!(code.as_str(), "invalid_grant");
        /// assert!(matches!(ErrorCode::from("x_custom"), ErrorCode::Other(_)));
        /// ```
        #[derive(Clone, Debug)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
            /// Any other code, as the server wrote it.
            Other(Box<str>),
        }

        impl ErrorCode {
            /// The code as it is written on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                    ErrorCode::Other(code) => code,
                }
            }

            fn known(code: &str) -> Option<ErrorCode> {
                match code {
                    $($text => Some(ErrorCode::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// The request is malformed (RFC 6749).
    InvalidRequest = "invalid_request",
    /// The client failed to authenticate (RFC 6749 §5.2).
    InvalidClient = "invalid_client",
    /// The grant (refresh token, code, assertion) is invalid, expired or
    /// revoked (RFC 6749 §5.2): for a refresh, the session is over.
    InvalidGrant = "invalid_grant",
    /// The client may not use this grant or flow (RFC 6749).
    UnauthorizedClient = "unauthorized_client",
    /// The server does not support the grant type (RFC 6749 §5.2).
    UnsupportedGrantType = "unsupported_grant_type",
    /// The scope asked for is invalid or too wide (RFC 6749).
    InvalidScope = "invalid_scope",
    /// The user or the server refused (RFC 6749 §4.1.2.1, RFC 8628 §3.5).
    AccessDenied = "access_denied",
    /// The authorization server failed (RFC 6749 §4.1.2.1).
    ServerError = "server_error",
    /// The authorization server is overloaded or down for maintenance
    /// (RFC 6749 §4.1.2.1): try again later.
    TemporarilyUnavailable = "temporarily_unavailable",
    /// The user has not finished the device login yet (RFC 8628 §3.5).
    AuthorizationPending = "authorization_pending",
    /// Poll more slowly (RFC 8628 §3.5).
    SlowDown = "slow_down",
    /// The device code expired (RFC 8628 §3.5).
    ExpiredToken = "expired_token",
    /// The server wants a DPoP proof with its nonce (RFC 9449 §8, §9).
    UseDpopNonce = "use_dpop_nonce",
    /// The DPoP proof is invalid (RFC 9449 §5).
    InvalidDpopProof = "invalid_dpop_proof",
    /// The access token is expired, revoked or malformed (RFC 6750 §3.1): a
    /// new token may help.
    InvalidToken = "invalid_token",
    /// The access token lacks a scope (RFC 6750 §3.1): a new login with a
    /// wider scope may help, a refresh does not.
    InsufficientScope = "insufficient_scope",
    /// The user's authentication is not strong or recent enough (RFC 9470).
    InsufficientUserAuthentication = "insufficient_user_authentication",
    /// The user must log in (OpenID Connect Core §3.1.2.6).
    LoginRequired = "login_required",
    /// The user must consent (OpenID Connect Core §3.1.2.6).
    ConsentRequired = "consent_required",
    /// The user must interact with the server (OpenID Connect Core
    /// §3.1.2.6).
    InteractionRequired = "interaction_required",
    /// The user must choose an account (OpenID Connect Core §3.1.2.6).
    AccountSelectionRequired = "account_selection_required",
}

impl From<&str> for ErrorCode {
    fn from(code: &str) -> Self {
        ErrorCode::known(code).unwrap_or_else(|| ErrorCode::Other(code.into()))
    }
}

impl From<String> for ErrorCode {
    fn from(code: String) -> Self {
        ErrorCode::known(&code).unwrap_or_else(|| ErrorCode::Other(code.into()))
    }
}

impl From<Box<str>> for ErrorCode {
    fn from(code: Box<str>) -> Self {
        ErrorCode::known(&code).unwrap_or(ErrorCode::Other(code))
    }
}

impl From<Cow<'_, str>> for ErrorCode {
    fn from(code: Cow<'_, str>) -> Self {
        match code {
            Cow::Borrowed(code) => code.into(),
            Cow::Owned(code) => code.into(),
        }
    }
}

impl FromStr for ErrorCode {
    type Err = Infallible;

    fn from_str(code: &str) -> Result<Self, Infallible> {
        Ok(code.into())
    }
}

impl PartialEq for ErrorCode {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ErrorCode {}

impl hash::Hash for ErrorCode {
    fn hash<H: hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_read_back_as_their_spelling() {
        for code in [
            "invalid_request",
            "invalid_client",
            "invalid_grant",
            "unauthorized_client",
            "unsupported_grant_type",
            "invalid_scope",
            "access_denied",
            "server_error",
            "temporarily_unavailable",
            "authorization_pending",
            "slow_down",
            "expired_token",
            "use_dpop_nonce",
            "invalid_dpop_proof",
            "invalid_token",
            "insufficient_scope",
            "insufficient_user_authentication",
            "login_required",
            "consent_required",
            "interaction_required",
            "account_selection_required",
        ] {
            let parsed = ErrorCode::from(code);
            assert!(!matches!(parsed, ErrorCode::Other(_)), "{code}");
            assert_eq!(parsed.as_str(), code);
            assert_eq!(parsed.to_string(), code);
        }
    }

    #[test]
    fn other_codes_are_kept_as_written_and_compare_by_text() {
        let other = ErrorCode::from("Invalid_Grant");
        assert_eq!(other, ErrorCode::Other("Invalid_Grant".into()));
        assert_ne!(other, ErrorCode::InvalidGrant, "codes are case-sensitive");
        assert_eq!(
            ErrorCode::Other("invalid_grant".into()),
            ErrorCode::InvalidGrant
        );
        for made in [
            ErrorCode::from(String::from("slow_down")),
            ErrorCode::from(Box::<str>::from("slow_down")),
            ErrorCode::from(Cow::Borrowed("slow_down")),
            "slow_down".parse().unwrap_or(ErrorCode::InvalidRequest),
        ] {
            assert!(matches!(made, ErrorCode::SlowDown), "{made:?}");
        }
    }
}
