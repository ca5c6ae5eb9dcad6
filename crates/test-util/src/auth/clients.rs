//! The clients an [`AuthServer`](super::AuthServer) knows and how each
//! authenticates (RFC 6749 §2.3, RFC 7523 §2.2), the issuers whose
//! assertions the JWT bearer grant takes (RFC 7523 §2.1), and the checks of
//! a signed assertion.

use std::{
    collections::HashMap,
    fmt,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{hmac, signature};
use serde_json::Value;

// The registry keeps these rules:
//
//  1. A client id names one client; registering it again replaces it.
//  2. A client authenticates only the way it was registered for: a secret
//     client cannot use an assertion, a public one sends no credential.
//  3. A signed assertion is accepted only if its signature holds for the
//     registered key, it is current, lives at most an hour, and its `jti`
//     was never accepted before (the ledger's, shared by every assertion).

/// A client an [`AuthServer`](super::AuthServer) accepts, registered with
/// [`AuthConfig::register`](super::AuthConfig::register).
///
/// `Debug` redacts secrets.
///
/// # Example
///
/// ```
/// use tower_token_refresh_test_util::{AuthConfig, Client};
///
/// let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": "…", "y": "…"});
/// let config = AuthConfig::default()
///     .register(Client::public("cli"))
///     .register(Client::private_key_jwt("svc", &jwk))
///     .register(Client::client_secret_jwt("hmac", "a shared secret of 32 bytes or more"));
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct Client {
    pub(super) id: String,
    pub(super) method: Method,
}

/// How a client authenticates.
#[derive(Clone)]
pub(super) enum Method {
    /// `client_secret_basic` or `client_secret_post`.
    Secret(String),
    /// `none`: a public client, its `client_id` in the body.
    Public,
    /// `private_key_jwt`, verified with this public key.
    PrivateKeyJwt(PublicKey),
    /// `client_secret_jwt`: HS256 with this secret.
    SecretJwt(String),
}

impl Client {
    /// A confidential client with a secret, sent by HTTP Basic
    /// (`client_secret_basic`) or in the body (`client_secret_post`).
    pub fn secret(id: impl Into<String>, secret: impl Into<String>) -> Client {
        Client {
            id: id.into(),
            method: Method::Secret(secret.into()),
        }
    }

    /// A public client (`none`): it sends its `client_id` in the body and
    /// no credential. It may use every grant but `client_credentials`.
    pub fn public(id: impl Into<String>) -> Client {
        Client {
            id: id.into(),
            method: Method::Public,
        }
    }

    /// A client that signs assertions with a private key
    /// (`private_key_jwt`), verified with `jwk`, its public JWK: `EC` P-256
    /// (ES256) or `RSA` (RS256). A JWK of another kind verifies nothing.
    pub fn private_key_jwt(id: impl Into<String>, jwk: &Value) -> Client {
        Client {
            id: id.into(),
            method: Method::PrivateKeyJwt(PublicKey::from_jwk(jwk)),
        }
    }

    /// A client that signs assertions with HS256 and its secret
    /// (`client_secret_jwt`); the secret itself is never sent.
    pub fn client_secret_jwt(id: impl Into<String>, secret: impl Into<String>) -> Client {
        Client {
            id: id.into(),
            method: Method::SecretJwt(secret.into()),
        }
    }

    /// The client's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = match self.method {
            Method::Secret(_) => "client_secret_basic",
            Method::Public => "none",
            Method::PrivateKeyJwt(_) => "private_key_jwt",
            Method::SecretJwt(_) => "client_secret_jwt",
        };
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("method", &method)
            .finish()
    }
}

/// A public key an assertion's signature is checked with.
#[derive(Clone, Debug)]
pub(super) enum PublicKey {
    /// An uncompressed P-256 point.
    Es256(Vec<u8>),
    /// An RSA modulus and exponent.
    Rs256 { n: Vec<u8>, e: Vec<u8> },
    /// A JWK of a kind the server does not take.
    Unusable,
}

impl PublicKey {
    /// From a public JWK as a client registers it.
    pub(super) fn from_jwk(jwk: &Value) -> PublicKey {
        let b64 = |name: &str| {
            jwk[name]
                .as_str()
                .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
        };
        match (jwk["kty"].as_str(), jwk["crv"].as_str()) {
            (Some("EC"), Some("P-256")) => match (b64("x"), b64("y")) {
                (Some(x), Some(y)) => PublicKey::Es256([&[4u8][..], &x, &y].concat()),
                _ => PublicKey::Unusable,
            },
            (Some("RSA"), _) => match (b64("n"), b64("e")) {
                (Some(n), Some(e)) => PublicKey::Rs256 { n, e },
                _ => PublicKey::Unusable,
            },
            _ => PublicKey::Unusable,
        }
    }
}

/// What checks an assertion's signature: a client's or issuer's public key,
/// or a client's shared secret.
pub(super) enum Verifier<'a> {
    Key(&'a PublicKey),
    Secret(&'a str),
}

impl Verifier<'_> {
    fn alg(&self) -> &'static str {
        match self {
            Verifier::Key(PublicKey::Es256(_)) => "ES256",
            Verifier::Key(PublicKey::Rs256 { .. }) => "RS256",
            Verifier::Key(PublicKey::Unusable) => "none",
            Verifier::Secret(_) => "HS256",
        }
    }

    fn verify(&self, signed: &[u8], sig: &[u8]) -> bool {
        match self {
            Verifier::Key(PublicKey::Es256(point)) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed, sig)
                    .is_ok()
            }
            Verifier::Key(PublicKey::Rs256 { n, e }) => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, sig)
                .is_ok(),
            Verifier::Key(PublicKey::Unusable) => false,
            Verifier::Secret(secret) => hmac::verify(
                &hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
                signed,
                sig,
            )
            .is_ok(),
        }
    }
}

/// A signed assertion the server accepted (RFC 7523), as
/// [`AuthLog::assertions`](super::AuthLog::assertions) keeps it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Assertion {
    /// The endpoint it was posted to.
    pub endpoint: super::Endpoint,
    /// `client_assertion` (client authentication) or `assertion` (the JWT
    /// bearer grant).
    pub param: &'static str,
    /// Its JOSE header.
    pub header: Value,
    /// Its claims.
    pub claims: Value,
}

/// The claims of a compact JWS without checking anything: to find who
/// claims to have signed it.
pub(super) fn unverified_claims(jwt: &str) -> Option<Value> {
    let claims = jwt.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
}

/// Checks a compact JWS: `alg` is the verifier's, the signature holds, it
/// has not expired, `iat` is not in the future, it lives at most an hour,
/// and it has a `jti` (whose replay the caller checks). Returns its header
/// and claims.
pub(super) fn check_jws(
    jwt: &str,
    verifier: &Verifier<'_>,
) -> Result<(Value, Value), &'static str> {
    let decode = |part: &str| -> Result<Value, &'static str> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| "not base64url")?;
        serde_json::from_slice(&bytes).map_err(|_| "not JSON")
    };
    let (signed, sig) = jwt.rsplit_once('.').ok_or("not a JWS")?;
    let (header, claims) = signed.split_once('.').ok_or("not a JWS")?;
    let (header, claims) = (decode(header)?, decode(claims)?);
    if header["alg"] != verifier.alg() {
        return Err("alg mismatch");
    }
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| "not base64url")?;
    if !verifier.verify(signed.as_bytes(), &sig) {
        return Err("bad signature");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
        return Err("iat and exp are required");
    };
    if exp <= now || iat > now + 5 || exp.saturating_sub(iat) > 3600 {
        return Err("expired or too long");
    }
    if !claims["jti"].is_string() {
        return Err("jti is required");
    }
    Ok((header, claims))
}

/// The clients and assertion issuers a server knows.
#[derive(Clone, Default)]
pub(super) struct Registry {
    pub(super) clients: HashMap<String, Method>,
    /// The JWT bearer grant's issuers (`iss`) and their keys.
    pub(super) issuers: HashMap<String, PublicKey>,
}

impl Registry {
    pub(super) fn register(&mut self, client: Client) {
        self.clients.insert(client.id, client.method);
    }
}
