//! How the client authenticates to the token endpoint (RFC 6749 §2.3):
//! `client_secret_basic`, `client_secret_post`, a public client, signed
//! JWT assertions (`private_key_jwt`, `client_secret_jwt`, feature `jose`),
//! or not at all.
//!
//! Invariants:
//!
//! - The client secret, key and assertions never appear in `Debug` output,
//!   and the Basic header carrying a secret is marked sensitive.
//! - Basic credentials are form-urlencoded before base64 (§2.3.1), so an id
//!   or secret with `:` or `%` reaches the server as it was configured.

use std::fmt;

use base64::Engine as _;
use http::{HeaderValue, Uri, header};

#[cfg(feature = "jose")]
use super::ClientAssertion;
use super::exchange::Form;
use crate::{ClientSecret, Error, ErrorKind};

/// How the client authenticates to the token endpoint (RFC 6749 §2.3).
#[derive(Clone)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic with the id and secret, each
    /// form-urlencoded first (§2.3.1).
    Basic {
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: ClientSecret,
    },
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    Post {
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: ClientSecret,
    },
    /// A public client: only `client_id` in the form body.
    None {
        /// The client id.
        client_id: String,
    },
    /// `private_key_jwt` or `client_secret_jwt`: a fresh signed assertion
    /// in the form body of every request (RFC 7523 §2.2, OpenID Connect
    /// Core §9). Feature `jose`.
    #[cfg(feature = "jose")]
    Jwt(ClientAssertion),
    /// No client authentication and no `client_id`: for a grant whose
    /// assertion alone identifies the client, as the JWT bearer grant's may
    /// (RFC 7523 §3.1), where the server asks for nothing more.
    Anonymous,
}

impl ClientAuth {
    /// `client_secret_basic`.
    pub fn basic(client_id: impl Into<String>, client_secret: impl Into<ClientSecret>) -> Self {
        ClientAuth::Basic {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        }
    }

    /// `client_secret_post`.
    pub fn post(client_id: impl Into<String>, client_secret: impl Into<ClientSecret>) -> Self {
        ClientAuth::Post {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        }
    }

    /// A public client (no secret).
    pub fn none(client_id: impl Into<String>) -> Self {
        ClientAuth::None {
            client_id: client_id.into(),
        }
    }

    /// `private_key_jwt`: assertions for `client_id` signed with `key`
    /// (ES256 or RS256), their audience the URL each request is posted
    /// to. For another audience or lifetime, build a [`ClientAssertion`]
    /// and convert it. Feature `jose`.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_token_refresh_oauth2::{jose::SigningKey, ClientAuth};
    ///
    /// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/rsa-2048.pem");
    /// let key = SigningKey::from_pkcs8_pem(&std::fs::read_to_string(path)?)?;
    /// let auth = ClientAuth::private_key_jwt("my-client", key.with_key_id("2026-01"));
    /// assert_eq!(auth.method(), "private_key_jwt");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "jose")]
    pub fn private_key_jwt(client_id: impl Into<String>, key: crate::jose::SigningKey) -> Self {
        ClientAuth::Jwt(ClientAssertion::new(client_id, key))
    }

    /// `client_secret_jwt`: assertions for `client_id` signed with HS256
    /// keyed by `client_secret`, which is never sent itself. Feature `jose`.
    #[cfg(feature = "jose")]
    pub fn client_secret_jwt(
        client_id: impl Into<String>,
        client_secret: impl Into<ClientSecret>,
    ) -> Self {
        ClientAuth::Jwt(ClientAssertion::from_client_secret(
            client_id,
            client_secret,
        ))
    }

    /// No client authentication at all (see [`ClientAuth::Anonymous`]).
    pub fn anonymous() -> Self {
        ClientAuth::Anonymous
    }

    /// The registered name of the method (OpenID Connect's
    /// `token_endpoint_auth_method`): `"client_secret_basic"`,
    /// `"client_secret_post"`, `"none"`, `"private_key_jwt"`,
    /// `"client_secret_jwt"`, or `"anonymous"` (no registered name: not
    /// even a client id is sent).
    pub fn method(&self) -> &'static str {
        match self {
            ClientAuth::Basic { .. } => "client_secret_basic",
            ClientAuth::Post { .. } => "client_secret_post",
            ClientAuth::None { .. } => "none",
            #[cfg(feature = "jose")]
            ClientAuth::Jwt(assertion) => assertion.method(),
            ClientAuth::Anonymous => "anonymous",
        }
    }

    /// The client id, if this method sends one.
    pub fn client_id(&self) -> Option<&str> {
        match self {
            ClientAuth::Basic { client_id, .. }
            | ClientAuth::Post { client_id, .. }
            | ClientAuth::None { client_id } => Some(client_id),
            #[cfg(feature = "jose")]
            ClientAuth::Jwt(assertion) => Some(assertion.client_id()),
            ClientAuth::Anonymous => None,
        }
    }

    /// Authenticates a request to `endpoint` (a JWT assertion's default
    /// audience) whose body is `form`.
    pub(super) fn apply(
        &self,
        form: &mut Form,
        headers: &mut http::HeaderMap,
        endpoint: &Uri,
    ) -> Result<(), Error> {
        #[cfg(not(feature = "jose"))]
        let _ = endpoint;
        match self {
            ClientAuth::Basic {
                client_id,
                client_secret,
            } => {
                // RFC 6749 §2.3.1: each form-encoded, then joined by a colon.
                let mut pair: String =
                    form_urlencoded::byte_serialize(client_id.as_bytes()).collect();
                pair.push(':');
                pair.extend(form_urlencoded::byte_serialize(
                    client_secret.secret().as_bytes(),
                ));
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                let mut value =
                    HeaderValue::try_from(format!("Basic {encoded}")).map_err(|_| {
                        Error::new(
                            ErrorKind::Rejected,
                            "client credentials do not fit a header",
                        )
                    })?;
                value.set_sensitive(true);
                headers.insert(header::AUTHORIZATION, value);
            }
            ClientAuth::Post {
                client_id,
                client_secret,
            } => {
                form.pair("client_id", client_id);
                form.pair("client_secret", client_secret.secret());
            }
            ClientAuth::None { client_id } => form.pair("client_id", client_id),
            #[cfg(feature = "jose")]
            ClientAuth::Jwt(assertion) => assertion.apply(form, endpoint)?,
            ClientAuth::Anonymous => {}
        }
        Ok(())
    }
}

#[cfg(feature = "jose")]
impl From<ClientAssertion> for ClientAuth {
    fn from(assertion: ClientAssertion) -> Self {
        ClientAuth::Jwt(assertion)
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[cfg(feature = "jose")]
        if let ClientAuth::Jwt(assertion) = self {
            return f.debug_tuple("ClientAuth").field(assertion).finish();
        }
        let mut shown = f.debug_struct("ClientAuth");
        shown.field("method", &self.method());
        if let Some(client_id) = self.client_id() {
            shown.field("client_id", &client_id);
        }
        shown.finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Uri {
        Uri::from_static("https://auth.example.com/token")
    }

    #[test]
    fn basic_auth_form_encodes_before_base64() {
        let mut form = Form::default();
        let mut headers = http::HeaderMap::new();
        ClientAuth::basic("id:1", "s&cr t")
            .apply(&mut form, &mut headers, &endpoint())
            .unwrap();
        let value = headers[header::AUTHORIZATION].to_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(decoded, b"id%3A1:s%26cr+t");
        assert!(headers[header::AUTHORIZATION].is_sensitive());
        assert!(form.as_str().is_empty());
    }

    #[test]
    fn post_and_none_auth_go_in_the_body() {
        let mut form = Form::default();
        let mut headers = http::HeaderMap::new();
        ClientAuth::post("id", "sec")
            .apply(&mut form, &mut headers, &endpoint())
            .unwrap();
        assert_eq!(form.as_str(), "client_id=id&client_secret=sec");
        let mut form = Form::default();
        ClientAuth::none("pub")
            .apply(&mut form, &mut headers, &endpoint())
            .unwrap();
        assert_eq!(form.as_str(), "client_id=pub");
        assert!(headers.is_empty());
    }

    #[test]
    fn client_auth_debug_hides_the_secret() {
        let shown = format!("{:?}", ClientAuth::basic("id", "hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
