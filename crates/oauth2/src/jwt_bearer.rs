//! The JWT bearer grant (RFC 7523 §2.1): a signed assertion exchanged for
//! an access token, as Google service accounts and Okta service apps do.
//!
//! Invariants:
//!
//! - Every fetch signs a new assertion (new `jti`, `iat` now): a server
//!   that remembers `jti`s never sees one twice.
//! - The assertion is a credential: never in `Debug` output or an error
//!   (the [`Redactor`](super::Redactor) treats the `assertion` form value as
//!   a secret).
//! - A refused assertion is [`Rejected`](crate::ErrorKind::Rejected), not a
//!   session that expired: there is no session, only a key, and the next
//!   fetch signs a new assertion.

use std::{fmt, time::Duration};

use http::Uri;
use serde_json::Value;

use super::{ClientAuth, HttpClient, Params, TokenClient, client_assertion::JwtTemplate};
use crate::{BoxFuture, Error, TokenSet, TokenSource, jose::SigningKey};

/// The `grant_type` of the JWT bearer grant (RFC 7523 §2.1).
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The JWT bearer grant (RFC 7523 §2.1) as a [`TokenSource`]: a service
/// account signs an assertion with its key and exchanges it for an access
/// token. Feature `jose`.
///
/// Every fetch posts `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`
/// and `assertion`, a new JWT signed with the key (`kid` in its header
/// when the key has one) with the claims:
///
/// - `iss`: the issuer given to [`new`](Self::new) (Google: the service
///   account's email; Okta: the client id);
/// - `sub`: the [`subject`](Self::subject), if set (the user a service
///   account acts for; Okta: the client id);
/// - `aud`: the [`audience`](Self::audience), by default the token
///   endpoint URL;
/// - `iat` now, `exp` [`lifetime`](Self::lifetime) later (60 s by
///   default), a unique `jti`;
/// - any [`claim`](Self::claim)s added (Google wants `scope` here).
///
/// The request carries no client authentication unless one is given with
/// [`client_auth`](Self::client_auth) (RFC 7523 §3.1: the assertion may
/// be all the server needs). The current token set is not used; answers
/// are parsed and errors mapped as for
/// [`ClientCredentialsGrant`](super::ClientCredentialsGrant), except that
/// `invalid_grant` (the assertion was refused: bad signature, wrong
/// audience, clock skew) is [`Rejected`](crate::ErrorKind::Rejected), which a
/// later request retries, not [`SessionExpired`](crate::ErrorKind::SessionExpired).
///
/// # Example
///
/// A Google-style service account: scope in the claims, the key from its
/// PEM file.
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use tower_token_refresh_core::TokenManager;
/// use tower_token_refresh_oauth2::{jose::SigningKey, JwtBearerGrant};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/rsa-2048.pem");
/// let key = SigningKey::from_pkcs8_pem(&std::fs::read_to_string(path)?)?
///     .with_key_id("0123abcd"); // the service account key's id
/// # let client = |req: Request<Bytes>| async move {
/// #     let form = std::str::from_utf8(req.body()).unwrap().to_owned();
/// #     assert!(form.starts_with("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=ey"));
/// #     Ok::<_, std::io::Error>(Response::new(Bytes::from_static(
/// #         br#"{"access_token":"ya29.x","token_type":"Bearer","expires_in":3599}"#,
/// #     )))
/// # };
/// let grant = JwtBearerGrant::new(
///     "https://oauth2.googleapis.com/token".parse()?,
///     key,
///     "robot@my-project.iam.gserviceaccount.com",
///     client,
/// )
/// .claim("scope", "https://www.googleapis.com/auth/cloud-platform");
/// let tokens = TokenManager::builder(grant).build();
/// assert_eq!(tokens.authorization().await?.header().to_str()?, "Bearer ya29.x");
/// # Ok(()) }
/// ```
pub struct JwtBearerGrant<C> {
    token: TokenClient<C>,
    jwt: JwtTemplate,
    issuer: String,
    subject: Option<String>,
    params: Params,
}

impl<C> JwtBearerGrant<C> {
    /// A grant posting assertions signed with `key`, issued by `issuer`, to
    /// `token_url` through `client`.
    pub fn new(token_url: Uri, key: SigningKey, issuer: impl Into<String>, client: C) -> Self {
        JwtBearerGrant {
            token: TokenClient::new(token_url, ClientAuth::Anonymous, client),
            jwt: JwtTemplate::new(key, Some("JWT")),
            issuer: issuer.into(),
            subject: None,
            params: Params::default(),
        }
    }

    /// The assertion's `sub`: whom the token is for (a user a service
    /// account impersonates; the client id at Okta).
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// The assertion's `aud`, instead of the token endpoint URL.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.jwt.audience = Some(audience.into());
        self
    }

    /// How long each assertion is valid (`exp - iat`, whole seconds, at
    /// least 1). Default 60 s; Google and Okta accept at most an hour.
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.jwt.lifetime = lifetime;
        self
    }

    /// Adds a claim to every assertion. `iss`, `sub`, `aud`, `iat`, `exp`
    /// and `jti` are the grant's own: claims of those names are replaced.
    pub fn claim(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.jwt.claim(name.into(), value.into());
        self
    }

    /// Adds a member to every assertion's JWS header (`typ` is `JWT`; `alg`
    /// and `kid` come from the key and are not replaced).
    pub fn header_param(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.jwt.header_param(name.into(), value.into());
        self
    }

    /// Asks for this scope with the form's `scope` parameter (RFC 6749
    /// §3.3). Google wants it as a [`claim`](Self::claim) instead.
    pub fn scope(self, scope: impl Into<String>) -> Self {
        self.param("scope", scope)
    }

    /// Adds a form parameter to every request.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push(name, value);
        self
    }

    /// Authenticates the client too, for servers that want both an
    /// assertion grant and client authentication. Default
    /// [`ClientAuth::Anonymous`].
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.token.auth = auth;
        self
    }

    /// Allows the assertion to go over cleartext `http://` to a host that
    /// is not loopback: for a development server only. Off by default.
    pub fn allow_cleartext(mut self, allow: bool) -> Self {
        self.token.url.set_allow_cleartext(allow);
        self
    }

    /// Proves possession of a DPoP key at the token endpoint (RFC 9449;
    /// see [`dpop`](crate::dpop#at-the-token-endpoint)): a nonce retry
    /// carries a new assertion too.
    pub fn dpop(mut self, dpop: crate::dpop::DpopKey) -> Self {
        self.token.set_dpop(dpop);
        self
    }

    /// A new signed assertion.
    fn assertion(&self) -> Result<String, Error> {
        self.jwt
            .sign(&self.issuer, self.subject.as_deref(), self.token.url.uri())
    }
}

impl<C> fmt::Debug for JwtBearerGrant<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("JwtBearerGrant");
        self.token.debug_fields(&mut f);
        f.field("issuer", &self.issuer)
            .field("subject", &self.subject);
        self.jwt.debug_fields(&mut f);
        f.field("params", &self.params).finish_non_exhaustive()
    }
}

impl<C: HttpClient> TokenSource for JwtBearerGrant<C> {
    fn fetch<'a>(
        &'a self,
        _current: Option<&'a TokenSet>,
    ) -> BoxFuture<'a, Result<TokenSet, Error>> {
        Box::pin(async move {
            // A new assertion for every request, a DPoP nonce retry's too.
            // No refresh token at stake: a lost answer costs a new assertion.
            let grant = self.token.exchange(GRANT_TYPE, false, |form| {
                form.pair("assertion", &self.assertion()?);
                self.params.write_to(form);
                Ok(())
            });
            // There is no session to end, only a key: the next fetch signs
            // a new assertion.
            grant
                .await
                .map_err(super::token_exchange::refused_is_rejected)
        })
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

    use super::*;

    fn part(jwt: &str, i: usize) -> serde_json::Value {
        let part = jwt.split('.').nth(i).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn grant() -> JwtBearerGrant<()> {
        let key = SigningKey::generate_es256().unwrap().with_key_id("k1");
        JwtBearerGrant::new(
            "https://auth.example.com/token".parse().unwrap(),
            key,
            "robot@example.com",
            (),
        )
    }

    #[test]
    fn registered_claims_win_over_extra_ones() {
        let jwt = grant()
            .header_param("x5t", "thumb")
            .header_param("typ", "at+jwt")
            .claim("scope", "a b")
            .claim("iss", "forged")
            .claim("sub", "forged")
            .lifetime(Duration::from_secs(300))
            .assertion()
            .unwrap();
        let claims = part(&jwt, 1);
        assert_eq!(claims["iss"], "robot@example.com");
        assert!(claims.get("sub").is_none(), "{claims}");
        assert_eq!(claims["aud"], "https://auth.example.com/token");
        assert_eq!(claims["scope"], "a b");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            300
        );
        let header = part(&jwt, 0);
        assert_eq!(header["kid"], "k1");
        assert_eq!(header["typ"], "at+jwt");
        assert_eq!(header["x5t"], "thumb");
        assert_eq!(header["alg"], "ES256");
    }

    #[test]
    fn debug_names_claims_but_shows_no_key() {
        let shown = format!("{:?}", grant().claim("scope", "secret-scope-value"));
        assert!(shown.contains("scope"), "{shown}");
        assert!(!shown.contains("secret-scope-value"), "{shown}");
    }
}
