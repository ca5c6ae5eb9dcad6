//! DPoP (RFC 9449) proofs on the server side, for tests: [`verify_proof`]
//! checks a proof the way a server does (the signature against the JWK in
//! the proof's own header, `typ`, `alg`) and returns its claims; [`ath`] is
//! the access token hash a resource's proof must carry.
//!
//! The servers that use them are [`AuthServer`](crate::AuthServer) (with
//! [`AuthConfig::dpop_required`](crate::AuthConfig::dpop_required) and
//! the [nonces](crate::Nonce)) and [`ResourceServer`](crate::ResourceServer).
//!
//! # Example
//!
//! ```
//! use tower_token_refresh_test_util::{AuthConfig, AuthServer, ResourceServer, hyper_client};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let auth = AuthServer::start(AuthConfig::default().dpop_required(true)).await?;
//! let api = ResourceServer::start(&auth).await?;
//! let login = auth.login_dpop("the-key-thumbprint");
//! // A DPoP-bound token without its proof is refused with a DPoP challenge.
//! let request = http::Request::get(api.url("/api/data"))
//!     .header("authorization", format!("DPoP {}", login.access_token))
//!     .body(http_body_util::Full::default())?;
//! let response = hyper_client().request(request).await?;
//! assert_eq!(response.status(), 401);
//! assert!(response.headers()["www-authenticate"].to_str()?.starts_with("DPoP"));
//! assert_eq!(api.stats().invalid_dpop_proof, 1);
//! # Ok(()) }
//! ```

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    digest,
    signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey},
};
use serde::Deserialize;

/// What a verified proof says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    /// The proof's unique id.
    pub jti: String,
    /// The HTTP method it was made for.
    pub htm: String,
    /// The target URI it was made for.
    pub htu: String,
    /// When it was made (Unix seconds).
    pub iat: u64,
    /// base64url SHA-256 of the access token it goes with, if any.
    pub ath: Option<String>,
    /// The server nonce it carries, if any.
    pub nonce: Option<String>,
    /// The RFC 7638 thumbprint of the key that signed it (`cnf.jkt`).
    pub jkt: String,
}

#[derive(Deserialize)]
struct Header {
    typ: String,
    alg: String,
    jwk: Jwk,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: String,
    x: String,
    y: String,
    #[serde(default)]
    d: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    jti: String,
    htm: String,
    htu: String,
    iat: u64,
    #[serde(default)]
    ath: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

/// Verifies an ES256 DPoP proof: `typ` is `dpop+jwt`, the header's JWK is
/// a public P-256 key, the signature is that key's over the first two
/// parts. Returns the claims and the key's thumbprint; the caller checks
/// them against the request.
///
/// # Errors
///
/// A description of what is wrong with the proof.
pub fn verify_proof(proof: &str) -> Result<Proof, String> {
    let mut parts = proof.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS".into());
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| format!("bad base64url: {e}"))
    };
    let h: Header = serde_json::from_slice(&decode(header)?).map_err(|e| e.to_string())?;
    if h.typ != "dpop+jwt" || h.alg != "ES256" {
        return Err(format!("typ {} alg {}", h.typ, h.alg));
    }
    if h.jwk.kty != "EC" || h.jwk.crv != "P-256" || h.jwk.d.is_some() {
        return Err("the jwk is not a public P-256 key".into());
    }
    let point = [&[4u8][..], &decode(&h.jwk.x)?, &decode(&h.jwk.y)?].concat();
    let signed = &proof[..header.len() + 1 + claims.len()];
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        .verify(signed.as_bytes(), &decode(signature)?)
        .map_err(|_| "bad signature".to_owned())?;
    let c: Claims = serde_json::from_slice(&decode(claims)?).map_err(|e| e.to_string())?;
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        h.jwk.x, h.jwk.y
    );
    Ok(Proof {
        jti: c.jti,
        htm: c.htm,
        htu: c.htu,
        iat: c.iat,
        ath: c.ath,
        nonce: c.nonce,
        jkt: URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes())),
    })
}

/// base64url SHA-256 of an access token: what a proof's `ath` must be.
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, access_token.as_bytes()))
}
