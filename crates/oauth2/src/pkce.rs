//! Proof Key for Code Exchange (RFC 7636), `S256` only, and the random
//! values a login needs (`state`, the code verifier).
//!
//! Invariants:
//!
//! - Every random value comes from the operating system (`getrandom`); a
//!   failure to get one is an error, never a weaker value.
//! - The verifier is a secret: it never appears in `Debug` output and is
//!   wiped when dropped. The challenge is public (it is in the
//!   authorization URL).
//! - Only `S256`: `plain` sends the verifier itself through the browser,
//!   which is what PKCE exists to avoid (RFC 7636 §7.2).

use std::fmt;

use zeroize::Zeroizing;

use crate::{
    Error, ErrorKind,
    crypto::{random_urlsafe, sha256_b64url},
};

/// A PKCE code verifier and its `S256` challenge (RFC 7636).
///
/// The login flows of this crate make one per login; use it directly for
/// an authorization code flow of your own.
///
/// # Example
///
/// The test vector of RFC 7636 appendix B:
///
/// ```
/// use tower_token_refresh_oauth2::Pkce;
///
/// let pkce = Pkce::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk").unwrap();
/// assert_eq!(pkce.challenge(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
/// assert_eq!(pkce.method(), "S256");
/// assert!(!format!("{pkce:?}").contains("dBjftJeZ"));
/// ```
#[derive(Clone)]
pub struct Pkce {
    verifier: Zeroizing<String>,
    challenge: String,
}

impl Pkce {
    /// A new verifier of 32 random bytes (43 characters, RFC 7636 §4.1's
    /// recommendation) and its challenge.
    ///
    /// # Errors
    ///
    /// A [`Policy`](ErrorKind::Policy) error if the operating system gives
    /// no random bytes.
    pub fn new() -> Result<Self, Error> {
        Self::from_verifier(random_urlsafe(32)?)
    }

    /// The challenge of a verifier you chose (for tests, or a verifier kept
    /// across a restart).
    ///
    /// # Errors
    ///
    /// A [`Rejected`](ErrorKind::Rejected) error if `verifier` is not 43 to
    /// 128 characters of `[A-Za-z0-9-._~]` (RFC 7636 §4.1).
    pub fn from_verifier(verifier: impl Into<String>) -> Result<Self, Error> {
        let verifier = Zeroizing::new(verifier.into());
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if !(43..=128).contains(&verifier.len()) || !verifier.bytes().all(allowed) {
            return Err(Error::new(
                ErrorKind::Rejected,
                "a PKCE code verifier is 43 to 128 characters of A-Z a-z 0-9 - . _ ~",
            ));
        }
        let challenge = sha256_b64url(verifier.as_bytes());
        Ok(Pkce {
            verifier,
            challenge,
        })
    }

    /// The `code_challenge` for the authorization request.
    pub fn challenge(&self) -> &str {
        &self.challenge
    }

    /// The `code_challenge_method`: always `S256`.
    pub fn method(&self) -> &'static str {
        "S256"
    }

    /// The `code_verifier` for the token request. A secret: do not log it.
    pub fn verifier(&self) -> &str {
        &self.verifier
    }
}

impl fmt::Debug for Pkce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkce")
            .field("challenge", &self.challenge)
            .field("method", &"S256")
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    #[test]
    fn rfc_7636_appendix_b_vector() {
        // The verifier of appendix B is the base64url of these 32 octets.
        let octets: [u8; 32] = [
            116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212,
            37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121,
        ];
        let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(octets);
        assert_eq!(verifier, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        let pkce = Pkce::from_verifier(verifier).unwrap();
        assert_eq!(
            pkce.challenge(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn new_verifiers_are_random_and_well_formed() {
        let a = Pkce::new().unwrap();
        let b = Pkce::new().unwrap();
        assert_eq!(a.verifier().len(), 43);
        assert_ne!(a.verifier(), b.verifier());
        assert_ne!(a.challenge(), b.challenge());
        assert!(Pkce::from_verifier(a.verifier()).is_ok());
    }

    #[test]
    fn malformed_verifiers_are_refused() {
        for bad in ["short", &"a".repeat(129), &format!("{}!", "a".repeat(43))] {
            let err = Pkce::from_verifier(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Rejected, "{bad}");
        }
    }

    #[test]
    fn debug_shows_the_challenge_not_the_verifier() {
        let pkce = Pkce::new().unwrap();
        let shown = format!("{pkce:?}");
        assert!(shown.contains(pkce.challenge()), "{shown}");
        assert!(!shown.contains(pkce.verifier()), "{shown}");
    }
}
