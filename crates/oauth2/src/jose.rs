//! Signed JSON Web Tokens: the keys that sign them, their compact JWS form
//! (RFC 7515), the public JWK a key publishes (RFC 7517) and its thumbprint
//! (RFC 7638). DPoP proofs (RFC 9449) and signed client assertions
//! (RFC 7523, OIDC Core §9) are made of these. Feature `jose`; the
//! signatures come from `ring`.
//!
//! Invariants:
//!
//! - Key material never appears in `Debug` output; the PKCS#8 bytes a key
//!   keeps for persistence are wiped when the last clone is dropped.
//! - A signature is over exactly `base64url(header) "." base64url(claims)`,
//!   both without padding, as RFC 7515 §7.1 says; ES256 signatures are the
//!   fixed 64-byte `r || s` form JWS requires (§3.4 of RFC 7518), not DER.
//! - A thumbprint hashes the required members only, in lexicographic order,
//!   with no whitespace (RFC 7638 §3), so it matches what a server computes.

use std::{fmt, sync::Arc};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    hmac,
    rand::SystemRandom,
    rsa::PublicKeyComponents,
    signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair},
};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::{Error, ErrorKind, crypto::sha256_b64url};

/// A key that signs JWTs: ES256 (ECDSA P-256), RS256 (RSA PKCS#1 v1.5 with
/// SHA-256) or HS256 (HMAC with a shared secret).
///
/// Cheap to clone (an `Arc` inside). `Debug` shows the algorithm and key id,
/// never the key.
///
/// # Example
///
/// ```
/// use tower_token_refresh_oauth2::jose::SigningKey;
///
/// let key = SigningKey::generate_es256()?.with_key_id("key-1");
/// assert_eq!(key.algorithm(), "ES256");
/// let jwk = key.public_jwk().expect("an asymmetric key has a public JWK");
/// assert_eq!(jwk["kty"], "EC");
/// assert_eq!(key.thumbprint().map(|t| t.len()), Some(43)); // base64url of 32 bytes
/// # Ok::<(), tower_token_refresh_core::Error>(())
/// ```
#[derive(Clone)]
pub struct SigningKey {
    inner: Arc<Inner>,
    kid: Option<Arc<str>>,
}

enum Inner {
    Es256 {
        pair: EcdsaKeyPair,
        pkcs8: Zeroizing<Vec<u8>>,
    },
    Rs256 {
        pair: RsaKeyPair,
    },
    Hs256 {
        key: hmac::Key,
    },
}

fn key_error(what: &'static str, detail: impl fmt::Display) -> Error {
    // ring's KeyRejected names the reason ("InvalidEncoding", …), never the key.
    Error::new(ErrorKind::Rejected, format!("{what}: {detail}"))
}

impl SigningKey {
    /// A new ES256 key pair from the operating system's random numbers: what
    /// DPoP (RFC 9449) wants, one per session.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Rejected`] if no random numbers could be had.
    pub fn generate_es256() -> Result<Self, Error> {
        let rng = SystemRandom::new();
        let document =
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| key_error("could not generate an ES256 key", "no randomness"))?;
        Self::es256_from_pkcs8(document.as_ref())
    }

    /// An ES256 key from its unencrypted PKCS#8 (DER) form.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Rejected`] if the bytes are not a P-256 PKCS#8 key.
    pub fn es256_from_pkcs8(der: &[u8]) -> Result<Self, Error> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| key_error("not an ES256 (P-256) PKCS#8 key", e))?;
        Ok(Self::from_inner(Inner::Es256 {
            pair,
            pkcs8: Zeroizing::new(der.to_vec()),
        }))
    }

    /// An RS256 key from its unencrypted PKCS#8 (DER) form (2048 bits or
    /// more).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Rejected`] if the bytes are not an RSA PKCS#8 key ring
    /// accepts.
    pub fn rs256_from_pkcs8(der: &[u8]) -> Result<Self, Error> {
        let pair =
            RsaKeyPair::from_pkcs8(der).map_err(|e| key_error("not an RSA PKCS#8 key", e))?;
        Ok(Self::from_inner(Inner::Rs256 { pair }))
    }

    /// A key from a PEM `-----BEGIN PRIVATE KEY-----` block (unencrypted
    /// PKCS#8), as `openssl genpkey` writes it: ES256 for a P-256 key, RS256
    /// for an RSA key.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Rejected`] if there is no such block, or it holds
    /// neither kind of key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, Error> {
        let der = Zeroizing::new(pem_body(pem, "PRIVATE KEY")?);
        Self::es256_from_pkcs8(&der).or_else(|_| Self::rs256_from_pkcs8(&der))
    }

    /// An HS256 key: HMAC-SHA-256 with a shared secret (`client_secret_jwt`
    /// uses the client secret).
    pub fn hs256(secret: &[u8]) -> Self {
        Self::from_inner(Inner::Hs256 {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    fn from_inner(inner: Inner) -> Self {
        SigningKey {
            inner: Arc::new(inner),
            kid: None,
        }
    }

    /// This key with a key id, sent as the JWS `kid` header so that a server
    /// holding several of the client's keys knows which one to check with.
    pub fn with_key_id(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(Arc::from(kid.into()));
        self
    }

    /// The key id, if one was given.
    pub fn key_id(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The JWS `alg`: `"ES256"`, `"RS256"` or `"HS256"`.
    pub fn algorithm(&self) -> &'static str {
        match &*self.inner {
            Inner::Es256 { .. } => "ES256",
            Inner::Rs256 { .. } => "RS256",
            Inner::Hs256 { .. } => "HS256",
        }
    }

    /// The public key as a JWK (RFC 7517; `kid` included when set), for a
    /// DPoP proof's header or a client's registered JWK set. `None` for an
    /// HS256 key, which has no public half.
    pub fn public_jwk(&self) -> Option<serde_json::Value> {
        let mut jwk = self.required_members()?;
        if let (Some(kid), Some(map)) = (&self.kid, jwk.as_object_mut()) {
            map.insert("kid".into(), serde_json::Value::from(&**kid));
        }
        Some(jwk)
    }

    /// The JWK thumbprint (RFC 7638): base64url of the SHA-256 of the
    /// required public members. DPoP binds tokens to it (`cnf.jkt`). `None`
    /// for an HS256 key.
    pub fn thumbprint(&self) -> Option<String> {
        // serde_json's maps are ordered by key and it writes no whitespace:
        // exactly RFC 7638's canonical form.
        let canonical = serde_json::to_vec(&self.required_members()?).ok()?;
        Some(sha256_b64url(&canonical))
    }

    /// The unencrypted PKCS#8 form of an ES256 key, for persisting it with
    /// the tokens bound to it. `None` for other keys (loaded from the
    /// application's own files, which it keeps).
    pub fn es256_pkcs8(&self) -> Option<&[u8]> {
        match &*self.inner {
            Inner::Es256 { pkcs8, .. } => Some(pkcs8),
            _ => None,
        }
    }

    fn required_members(&self) -> Option<serde_json::Value> {
        match &*self.inner {
            Inner::Es256 { pair, .. } => {
                // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
                let point = pair.public_key().as_ref();
                let (x, y) = point.get(1..)?.split_at_checked(32)?;
                Some(serde_json::json!({
                    "crv": "P-256",
                    "kty": "EC",
                    "x": URL_SAFE_NO_PAD.encode(x),
                    "y": URL_SAFE_NO_PAD.encode(y),
                }))
            }
            Inner::Rs256 { pair } => {
                let public = PublicKeyComponents::<Vec<u8>>::from(pair.public());
                Some(serde_json::json!({
                    "e": URL_SAFE_NO_PAD.encode(&public.e),
                    "kty": "RSA",
                    "n": URL_SAFE_NO_PAD.encode(&public.n),
                }))
            }
            Inner::Hs256 { .. } => None,
        }
    }

    /// The base64url JOSE header for this key: `alg`, then `typ` if given,
    /// `kid` if set, and the public JWK if `embed_jwk` (DPoP proofs carry
    /// it). Constant for a key, so a caller signing many tokens encodes it
    /// once.
    pub(crate) fn encoded_header(&self, typ: Option<&str>, embed_jwk: bool) -> String {
        let mut header = serde_json::Map::new();
        header.insert("alg".into(), self.algorithm().into());
        if let Some(typ) = typ {
            header.insert("typ".into(), typ.into());
        }
        if let Some(kid) = &self.kid {
            header.insert("kid".into(), (&**kid).into());
        }
        if embed_jwk && let Some(jwk) = self.required_members() {
            header.insert("jwk".into(), jwk);
        }
        URL_SAFE_NO_PAD.encode(serde_json::Value::Object(header).to_string())
    }

    /// A compact JWS: `encoded_header` (from [`encoded_header`]
    /// (Self::encoded_header)), the claims, and the signature over both.
    pub(crate) fn sign_jwt(
        &self,
        encoded_header: &str,
        claims: &impl Serialize,
    ) -> Result<String, Error> {
        let claims = serde_json::to_vec(claims)
            .map_err(|e| key_error("could not encode the JWT claims", e))?;
        let mut jwt = String::with_capacity(encoded_header.len() + claims.len() * 4 / 3 + 100);
        jwt.push_str(encoded_header);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut jwt);
        let signature = self.sign_bytes(jwt.as_bytes())?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jwt);
        Ok(jwt)
    }

    fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let rng = SystemRandom::new();
        match &*self.inner {
            Inner::Es256 { pair, .. } => pair
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| key_error("ES256 signing failed", "no randomness")),
            Inner::Rs256 { pair } => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut out)
                    .map_err(|_| key_error("RS256 signing failed", "unspecified"))?;
                Ok(out)
            }
            Inner::Hs256 { key } => Ok(hmac::sign(key, message).as_ref().to_vec()),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.algorithm())
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch from the wall clock: JWT times (`iat`,
/// `exp`) are compared with the server's clock, not tokio's.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The bytes of the first PEM block labelled `label`.
fn pem_body(pem: &str, label: &str) -> Result<Vec<u8>, Error> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = pem
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(body, _)| body)
        .ok_or_else(|| key_error("no PEM block found", label))?;
    let text = Zeroizing::new(
        body.chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect::<String>(),
    );
    base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|_| key_error("the PEM block is not base64", label))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::UnparsedPublicKey;

    fn parts(jwt: &str) -> (String, Vec<u8>) {
        let (signed, signature) = jwt.rsplit_once('.').unwrap();
        (
            signed.to_owned(),
            URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
    }

    fn decode_json(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn an_es256_jwt_verifies_with_the_public_key_of_its_header() {
        let key = SigningKey::generate_es256().unwrap().with_key_id("k1");
        let header = key.encoded_header(Some("dpop+jwt"), true);
        let jwt = key
            .sign_jwt(&header, &serde_json::json!({"jti": "x", "iat": 1}))
            .unwrap();
        let (signed, signature) = parts(&jwt);
        let mut pieces = signed.split('.');
        let header = decode_json(pieces.next().unwrap());
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["kid"], "k1");
        assert_eq!(decode_json(pieces.next().unwrap())["jti"], "x");
        let x = URL_SAFE_NO_PAD
            .decode(header["jwk"]["x"].as_str().unwrap())
            .unwrap();
        let y = URL_SAFE_NO_PAD
            .decode(header["jwk"]["y"].as_str().unwrap())
            .unwrap();
        let point = [&[4u8][..], &x, &y].concat();
        assert_eq!(signature.len(), 64, "JWS wants r || s, not DER");
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(signed.as_bytes(), &signature)
            .unwrap();
        // Any other message fails: the check above is a real one.
        let other = format!("{signed}x");
        assert!(
            UnparsedPublicKey::new(
                &signature::ECDSA_P256_SHA256_FIXED,
                [&[4u8][..], &x, &y].concat()
            )
            .verify(other.as_bytes(), &signature)
            .is_err()
        );
    }

    #[test]
    fn an_es256_key_survives_its_pkcs8_form() {
        let key = SigningKey::generate_es256().unwrap();
        let back = SigningKey::es256_from_pkcs8(key.es256_pkcs8().unwrap()).unwrap();
        assert_eq!(key.thumbprint(), back.thumbprint());
        assert_ne!(
            key.thumbprint(),
            SigningKey::generate_es256().unwrap().thumbprint()
        );
    }

    #[test]
    fn an_hs256_jwt_is_the_hmac_of_its_signing_input() {
        let key = SigningKey::hs256(b"a shared secret of enough length!");
        let jwt = key
            .sign_jwt(
                &key.encoded_header(None, true),
                &serde_json::json!({"a": 1}),
            )
            .unwrap();
        let (signed, signature) = parts(&jwt);
        assert_eq!(
            decode_json(signed.split('.').next().unwrap()),
            serde_json::json!({"alg": "HS256"})
        );
        let check = hmac::Key::new(hmac::HMAC_SHA256, b"a shared secret of enough length!");
        hmac::verify(&check, signed.as_bytes(), &signature).unwrap();
        assert!(key.public_jwk().is_none() && key.thumbprint().is_none());
    }

    #[test]
    fn the_thumbprint_of_rfc_7638s_example_key() {
        // RFC 7638 §3.1: the RSA key and its thumbprint.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let members = serde_json::json!({"e": "AQAB", "kty": "RSA", "n": n});
        let canonical = serde_json::to_vec(&members).unwrap();
        assert_eq!(
            sha256_b64url(&canonical),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn bad_keys_are_typed_errors_that_quote_no_key_bytes() {
        let err = SigningKey::es256_from_pkcs8(b"not a key").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Rejected);
        let err = SigningKey::from_pkcs8_pem(
            "-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----",
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Rejected);
        assert!(!err.to_string().contains("QUJD"));
        assert!(SigningKey::from_pkcs8_pem("no pem here").is_err());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = SigningKey::generate_es256().unwrap();
        let pkcs8 = URL_SAFE_NO_PAD.encode(key.es256_pkcs8().unwrap());
        let debug = format!("{key:?}");
        assert!(debug.contains("ES256"));
        assert!(!debug.contains(&pkcs8[..16]));
    }

    #[test]
    fn pem_keys_from_openssl_sign_what_their_public_jwk_verifies() {
        for (pem, alg) in [
            (include_str!("../testdata/p256.pem"), "ES256"),
            (include_str!("../testdata/rsa-2048.pem"), "RS256"),
        ] {
            let key = SigningKey::from_pkcs8_pem(pem).unwrap();
            assert_eq!(key.algorithm(), alg);
            let jwt = key
                .sign_jwt(
                    &key.encoded_header(Some("JWT"), false),
                    &serde_json::json!({"sub": "c"}),
                )
                .unwrap();
            let (signed, signature) = parts(&jwt);
            let jwk = key.public_jwk().unwrap();
            let b64 = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
            let verified = if alg == "ES256" {
                let point = [&[4u8][..], &b64("x"), &b64("y")].concat();
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed.as_bytes(), &signature)
            } else {
                signature::RsaPublicKeyComponents {
                    n: b64("n"),
                    e: b64("e"),
                }
                .verify(
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                    signed.as_bytes(),
                    &signature,
                )
            };
            verified.unwrap();
        }
    }
}
