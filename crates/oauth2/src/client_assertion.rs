//! Signed client assertions: `private_key_jwt` and `client_secret_jwt`
//! client authentication (RFC 7523 §2.2, OpenID Connect Core §9).
//!
//! Invariants:
//!
//! - Every request gets a fresh assertion: a new `jti`, `iat` now, `exp` a
//!   short lifetime later. Servers refuse a `jti` they have seen, so a
//!   retried request must never resend the assertion of its first attempt.
//! - The assertion is a credential: it goes only into the form body of a
//!   request the cleartext rule allowed, never into `Debug` output or an
//!   error; the [`Redactor`](super::Redactor) treats the `client_assertion`
//!   value as a secret like any other form value.

use std::{fmt, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use http::Uri;
use serde_json::{Map, Value};

use super::exchange::Form;
use crate::{
    ClientSecret, Error,
    crypto::random_urlsafe,
    jose::{SigningKey, unix_now},
};

/// The `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub(super) const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long an assertion is valid by default: it is used at once, and
/// short-lived ones are what servers accept (Azure AD, Okta: at most an
/// hour).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

/// A client that authenticates with a signed JWT instead of sending its
/// secret: `private_key_jwt` with an ES256 or RS256 key, or
/// `client_secret_jwt` with an HMAC (HS256) of the client secret (RFC 7523
/// §2.2, OpenID Connect Core §9). Feature `jose`.
///
/// Turned into a [`ClientAuth`](super::ClientAuth) (`.into()`, or the
/// shortcuts [`ClientAuth::private_key_jwt`](super::ClientAuth::private_key_jwt)
/// and [`ClientAuth::client_secret_jwt`](super::ClientAuth::client_secret_jwt)),
/// it authenticates every token-endpoint call: grants, introspection,
/// revocation. Each request carries a new assertion:
///
/// - `iss` and `sub`: the client id;
/// - `aud`: the [`audience`](Self::audience) if set, else the URL the
///   request is posted to (the token endpoint, for a grant);
/// - `jti`: 128 random bits; `iat`: now; `exp`: `iat` plus the
///   [`lifetime`](Self::lifetime) (60 s by default);
/// - the JWS header: `alg`, and `kid` when the key has a
///   [key id](SigningKey::with_key_id);
/// - any [`claim`](Self::claim)s and [`header_param`](Self::header_param)s
///   a provider wants besides (Azure AD: the certificate's thumbprint as
///   `x5t`).
///
/// The form carries `client_id`, `client_assertion_type =
/// urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and
/// `client_assertion`.
///
/// Which audience: OpenID Connect asks for the token endpoint URL, which
/// is the default for grants. Introspection and revocation then name their
/// own URL, which some servers (`oidc-provider`) accept and others do not;
/// the issuer identifier is what the IETF's update of RFC 7523 recommends
/// and what most servers accept everywhere. When you know the issuer, set
/// it with [`audience`](Self::audience) (after discovery:
/// [`ProviderMetadata::issuer`](super::ProviderMetadata::issuer)).
///
/// # Example
///
/// `private_key_jwt` with a key from a PEM file, registered with the
/// authorization server under the key id `"key-1"`:
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use tower_token_refresh_core::TokenManager;
/// use tower_token_refresh_oauth2::{ClientAssertion, ClientCredentialsGrant, jose::SigningKey};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/p256.pem");
/// let pem = std::fs::read_to_string(path)?;
/// let key = SigningKey::from_pkcs8_pem(&pem)?.with_key_id("key-1");
/// let auth = ClientAssertion::new("my-service", key)
///     .audience("https://auth.example.com");
///
/// # let client = |req: Request<Bytes>| async move {
/// #     let form = std::str::from_utf8(req.body()).unwrap().to_owned();
/// #     assert!(form.contains("client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"));
/// #     assert!(form.contains("&client_assertion=ey"));
/// #     assert!(!req.headers().contains_key("authorization"));
/// #     Ok::<_, std::io::Error>(Response::new(Bytes::from_static(
/// #         br#"{"access_token":"svc","token_type":"Bearer","expires_in":300}"#,
/// #     )))
/// # };
/// let grant = ClientCredentialsGrant::new(
///     "https://auth.example.com/token".parse()?,
///     auth.into(),
///     client,
/// );
/// let tokens = TokenManager::builder(grant).build();
/// assert_eq!(tokens.authorization().await?.header().to_str()?, "Bearer svc");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientAssertion {
    client_id: String,
    jwt: JwtTemplate,
}

/// What every assertion of one signer shares: the key, the JWS header,
/// the added claims, the audience and the lifetime. Client assertions and
/// the JWT bearer grant sign theirs with it.
#[derive(Clone)]
pub(super) struct JwtTemplate {
    pub(super) key: SigningKey,
    typ: Option<&'static str>,
    /// The base64url JWS header: constant for the key.
    header: String,
    extra_header: Map<String, Value>,
    claims: Map<String, Value>,
    pub(super) audience: Option<String>,
    pub(super) lifetime: Duration,
}

impl JwtTemplate {
    /// Assertions signed with `key`, `typ` in their header if given, valid
    /// for 60 s.
    pub(super) fn new(key: SigningKey, typ: Option<&'static str>) -> Self {
        let header = key.encoded_header(typ, false);
        JwtTemplate {
            key,
            typ,
            header,
            extra_header: Map::new(),
            claims: Map::new(),
            audience: None,
            lifetime: DEFAULT_LIFETIME,
        }
    }

    /// Adds a claim; the registered ones [`sign`](Self::sign) sets win.
    pub(super) fn claim(&mut self, name: String, value: Value) {
        self.claims.insert(name, value);
    }

    /// Adds a header member; `alg` and `kid` stay the key's.
    pub(super) fn header_param(&mut self, name: String, value: Value) {
        self.extra_header.insert(name, value);
        self.header = encoded_header(&self.key, self.typ, &self.extra_header);
    }

    /// A new signed assertion: the added claims, then `iss`, `sub` (removed
    /// when `None`), `aud` (the set audience, else `endpoint`), a fresh
    /// `jti`, `iat` now and `exp` the lifetime later.
    pub(super) fn sign(
        &self,
        iss: &str,
        sub: Option<&str>,
        endpoint: &Uri,
    ) -> Result<String, Error> {
        let aud = match &self.audience {
            Some(audience) => audience.clone(),
            None => endpoint.to_string(),
        };
        let iat = unix_now();
        let mut claims = self.claims.clone();
        claims.insert("iss".into(), iss.into());
        match sub {
            Some(sub) => claims.insert("sub".into(), sub.into()),
            None => claims.remove("sub"),
        };
        claims.insert("aud".into(), aud.into());
        claims.insert("jti".into(), random_urlsafe(16)?.into());
        claims.insert("iat".into(), iat.into());
        claims.insert(
            "exp".into(),
            iat.saturating_add(self.lifetime.as_secs().max(1)).into(),
        );
        self.key.sign_jwt(&self.header, &claims)
    }

    /// The names of the added claims and header members, for `Debug`: the
    /// values may be private.
    pub(super) fn debug_fields(&self, f: &mut fmt::DebugStruct<'_, '_>) {
        f.field("key", &self.key)
            .field("audience", &self.audience)
            .field("lifetime", &self.lifetime)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .field(
                "header_params",
                &self.extra_header.keys().collect::<Vec<_>>(),
            );
    }
}

/// The base64url JWS header for `key` (`alg`, `typ` if given, `kid` if
/// set) with the `extra` members; `alg` and `kid` cannot be replaced.
fn encoded_header(key: &SigningKey, typ: Option<&str>, extra: &Map<String, Value>) -> String {
    let base = key.encoded_header(typ, false);
    if extra.is_empty() {
        return base;
    }
    let mut header: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(&base)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or_default();
    for (name, value) in extra {
        if name != "alg" && name != "kid" {
            header.insert(name.clone(), value.clone());
        }
    }
    header.insert("alg".into(), key.algorithm().into());
    URL_SAFE_NO_PAD.encode(Value::Object(header).to_string())
}

impl ClientAssertion {
    /// Assertions for `client_id` signed with `key`: `private_key_jwt` for
    /// an ES256 or RS256 key (the server holds its public JWK), or
    /// `client_secret_jwt` for an HS256 key.
    pub fn new(client_id: impl Into<String>, key: SigningKey) -> Self {
        ClientAssertion {
            client_id: client_id.into(),
            jwt: JwtTemplate::new(key, None),
        }
    }

    /// `client_secret_jwt`: assertions signed with HS256 keyed by the
    /// client secret's bytes. The secret itself is never sent.
    pub fn from_client_secret(
        client_id: impl Into<String>,
        client_secret: impl Into<ClientSecret>,
    ) -> Self {
        let secret = client_secret.into();
        Self::new(client_id, SigningKey::hs256(secret.secret().as_bytes()))
    }

    /// Puts `audience` (the issuer identifier, usually) in every
    /// assertion's `aud` instead of the URL each request is posted to.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.jwt.audience = Some(audience.into());
        self
    }

    /// How long each assertion is valid (`exp - iat`, whole seconds, at
    /// least 1). Default 60 s.
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.jwt.lifetime = lifetime;
        self
    }

    /// Adds a claim to every assertion (`nbf`, say). `iss`, `sub`, `aud`,
    /// `jti`, `iat` and `exp` are the assertion's own: claims of those
    /// names are replaced.
    pub fn claim(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.jwt.claim(name.into(), value.into());
        self
    }

    /// Adds a member to every assertion's JWS header: `x5t` (the base64url
    /// SHA-1 thumbprint of the certificate) or `typ` for Azure AD's
    /// certificate credentials. `alg` and `kid` come from the key and are
    /// not replaced.
    pub fn header_param(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.jwt.header_param(name.into(), value.into());
        self
    }

    /// The client id: the assertions' `iss` and `sub`.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The registered name of the method (OpenID Connect's
    /// `token_endpoint_auth_method`): `"client_secret_jwt"` for an HS256
    /// key, else `"private_key_jwt"`.
    pub fn method(&self) -> &'static str {
        if self.jwt.key.algorithm() == "HS256" {
            "client_secret_jwt"
        } else {
            "private_key_jwt"
        }
    }

    /// A new signed assertion for a request to `endpoint`.
    pub(super) fn sign(&self, endpoint: &Uri) -> Result<String, Error> {
        self.jwt
            .sign(&self.client_id, Some(&self.client_id), endpoint)
    }

    /// Adds `client_id`, `client_assertion_type` and a fresh
    /// `client_assertion` to `form`. The `client_id` is optional by RFC
    /// 7521 §4.2 but some servers (Azure AD) want it.
    pub(super) fn apply(&self, form: &mut Form, endpoint: &Uri) -> Result<(), Error> {
        let assertion = self.sign(endpoint)?;
        form.pair("client_id", &self.client_id);
        form.pair("client_assertion_type", JWT_BEARER_ASSERTION_TYPE);
        form.pair("client_assertion", &assertion);
        Ok(())
    }
}

impl fmt::Debug for ClientAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("ClientAssertion");
        f.field("method", &self.method())
            .field("client_id", &self.client_id);
        self.jwt.debug_fields(&mut f);
        f.finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(jwt: &str) -> serde_json::Value {
        let payload = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    #[test]
    fn the_audience_is_the_endpoint_unless_set() {
        let endpoint: Uri = "https://auth.example.com/oauth/token".parse().unwrap();
        let key = SigningKey::generate_es256().unwrap();
        let default = ClientAssertion::new("app", key.clone());
        assert_eq!(
            claims(&default.sign(&endpoint).unwrap())["aud"],
            "https://auth.example.com/oauth/token"
        );
        let issuer = ClientAssertion::new("app", key).audience("https://auth.example.com");
        assert_eq!(
            claims(&issuer.sign(&endpoint).unwrap())["aud"],
            "https://auth.example.com"
        );
    }

    #[test]
    fn extra_header_members_and_claims_never_replace_the_own_ones() {
        let endpoint: Uri = "https://auth.example.com/token".parse().unwrap();
        let key = SigningKey::generate_es256().unwrap().with_key_id("k1");
        let jwt = ClientAssertion::new("app", key)
            .header_param("x5t", "thumb")
            .header_param("alg", "none")
            .header_param("kid", "other")
            .claim("nbf", 5)
            .claim("iss", "forged")
            .sign(&endpoint)
            .unwrap();
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(jwt.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "ES256", "kid": "k1", "x5t": "thumb"})
        );
        let claims = claims(&jwt);
        assert_eq!(claims["iss"], "app");
        assert_eq!(claims["nbf"], 5);
    }

    #[test]
    fn the_method_follows_the_key() {
        let secret = ClientAssertion::from_client_secret("app", "s3cret-s3cret-s3cret-s3cret-s3cr");
        assert_eq!(secret.method(), "client_secret_jwt");
        let key = ClientAssertion::new("app", SigningKey::generate_es256().unwrap());
        assert_eq!(key.method(), "private_key_jwt");
    }

    #[test]
    fn debug_shows_neither_the_secret_nor_the_key() {
        let shown = format!(
            "{:?}",
            ClientAssertion::from_client_secret("app", "hunter2-hunter2")
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("client_secret_jwt"), "{shown}");
    }
}
