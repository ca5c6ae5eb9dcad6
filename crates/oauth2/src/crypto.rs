//! The two primitives PKCE, `state`, DPoP proofs and signed JWTs share:
//! random identifiers from the operating system and SHA-256, both
//! base64url-encoded without padding.
//!
//! Invariants:
//!
//! - Every random value comes from the operating system (`getrandom`); a
//!   failure to get one is an error, never a weaker value.
//! - The random bytes are wiped once encoded.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::{Error, ErrorKind};

/// `n` random bytes from the operating system, base64url without padding:
/// a `state` and a JWT's `jti` (16 bytes), a PKCE verifier (32 bytes).
///
/// # Errors
///
/// A [`Policy`](ErrorKind::Policy) error if the operating system gives no
/// random bytes.
pub(crate) fn random_urlsafe(n: usize) -> Result<String, Error> {
    let mut bytes = Zeroizing::new(vec![0u8; n]);
    getrandom::getrandom(&mut bytes).map_err(|e| {
        Error::new(
            ErrorKind::Policy,
            format!("the operating system gave no random bytes: {e}"),
        )
    })?;
    Ok(URL_SAFE_NO_PAD.encode(&*bytes))
}

/// The base64url SHA-256 of `bytes`: a PKCE `S256` challenge over the
/// verifier, a DPoP proof's `ath` over the access token, a JWK thumbprint
/// over the key's canonical members.
pub(crate) fn sha256_b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_identifiers_differ_and_have_the_asked_length() {
        let a = random_urlsafe(16).unwrap();
        assert_ne!(a, random_urlsafe(16).unwrap());
        assert_eq!(a.len(), 22);
        assert_eq!(random_urlsafe(32).unwrap().len(), 43);
    }

    #[test]
    fn sha256_of_the_empty_string() {
        assert_eq!(
            sha256_b64url(b""),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }
}
