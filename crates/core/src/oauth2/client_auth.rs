//! How the client authenticates to the token endpoint (RFC 6749 §2.3):
//! `client_secret_basic`, `client_secret_post`, or a public client.
//!
//! Invariants:
//!
//! - The client secret never appears in `Debug` output, and the Basic
//!   header carrying it is marked sensitive.
//! - Basic credentials are form-urlencoded before base64 (§2.3.1), so an id
//!   or secret with `:` or `%` reaches the server as it was configured.

use std::fmt;

use base64::Engine as _;
use http::{HeaderValue, header};

use super::exchange::{Form, form_encode_into};
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

    pub(super) fn apply(
        &self,
        form: &mut Form,
        headers: &mut http::HeaderMap,
    ) -> Result<(), Error> {
        match self {
            ClientAuth::Basic {
                client_id,
                client_secret,
            } => {
                let mut pair = String::new();
                form_encode_into(&mut pair, client_id);
                pair.push(':');
                form_encode_into(&mut pair, client_secret.secret());
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
        }
        Ok(())
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (method, id) = match self {
            ClientAuth::Basic { client_id, .. } => ("client_secret_basic", client_id),
            ClientAuth::Post { client_id, .. } => ("client_secret_post", client_id),
            ClientAuth::None { client_id } => ("none", client_id),
        };
        f.debug_struct("ClientAuth")
            .field("method", &method)
            .field("client_id", id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_form_encodes_before_base64() {
        let mut form = Form::default();
        let mut headers = http::HeaderMap::new();
        ClientAuth::basic("id:1", "s&cr t")
            .apply(&mut form, &mut headers)
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
            .apply(&mut form, &mut headers)
            .unwrap();
        assert_eq!(form.as_str(), "client_id=id&client_secret=sec");
        let mut form = Form::default();
        ClientAuth::none("pub")
            .apply(&mut form, &mut headers)
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
