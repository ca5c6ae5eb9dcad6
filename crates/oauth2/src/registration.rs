//! Dynamic client registration (RFC 7591): a client that registers itself
//! at an authorization server it was never configured for (an MCP client
//! meeting a new server), and keeps the registration with its tokens so
//! that a restart does not register again.
//!
//! Invariants:
//!
//! - The client secret and registration access token of an answer are
//!   never in `Debug` output or an error; the registration request goes
//!   over `https://` or to loopback, since its answer carries a secret.
//! - The answer is read bounded (64 KiB) and mapped to a value or a typed
//!   error; nothing a server sends panics.
//! - The client authentication is the method the answer names (RFC 7591
//!   §3.2.1: the server may change what was asked for).

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri, header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    ClientAuth, Endpoint, HttpClient, Redactor, answer_of, discovery::MAX_DOCUMENT, error_response,
    with_unread,
};
use crate::{ClientSecret, Error, ErrorKind, TokenSet};

/// A dynamic client registration request (RFC 7591 §2, §3.1): the client
/// metadata posted as JSON to the authorization server's
/// [`registration_endpoint`](crate::ProviderMetadata::registration_endpoint).
///
/// [`register`](Self::register) gives a [`RegisteredClient`]; its
/// [`client_auth`](RegisteredClient::client_auth) is the [`ClientAuth`] of
/// the grants and logins that follow. Keep it with the tokens
/// ([`RegisteredClient::store_in`]) so that the next run finds it and does
/// not register again.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use tower_token_refresh_oauth2::ClientRegistration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // The registration endpoint: it assigns an id and a secret.
/// let client = |req: Request<Bytes>| async move {
///     let sent: serde_json::Value = serde_json::from_slice(req.body()).unwrap();
///     assert_eq!(sent["client_name"], "My MCP client");
///     Response::builder().status(201).body(Bytes::from_static(br#"{
///         "client_id": "c-123", "client_secret": "s3cret",
///         "client_secret_expires_at": 0,
///         "token_endpoint_auth_method": "client_secret_post",
///         "redirect_uris": ["http://127.0.0.1/callback"]
///     }"#))
/// };
/// let registered = ClientRegistration::new()
///     .client_name("My MCP client")
///     .redirect_uris(["http://127.0.0.1/callback"])
///     .grant_types(["authorization_code", "refresh_token"])
///     .response_types(["code"])
///     .token_endpoint_auth_method("client_secret_post")
///     .register(&"https://auth.example.com/register".parse()?, &client)
///     .await?;
/// assert_eq!(registered.client_id(), "c-123");
/// let auth = registered.client_auth()?;
/// assert_eq!(auth.method(), "client_secret_post");
/// // The secret is never shown.
/// assert!(!format!("{registered:?} {auth:?}").contains("s3cret"));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClientRegistration {
    metadata: Map<String, Value>,
    allow_cleartext: bool,
}

impl ClientRegistration {
    /// A request with no metadata yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `client_name`: the name shown to the user.
    pub fn client_name(self, name: impl Into<String>) -> Self {
        self.metadata("client_name", name.into())
    }

    /// `redirect_uris`: where authorization responses may go.
    pub fn redirect_uris<I: IntoIterator<Item = S>, S: Into<String>>(self, uris: I) -> Self {
        self.metadata("redirect_uris", strings(uris))
    }

    /// `grant_types` (`authorization_code`, `refresh_token`,
    /// `client_credentials`, …).
    pub fn grant_types<I: IntoIterator<Item = S>, S: Into<String>>(self, types: I) -> Self {
        self.metadata("grant_types", strings(types))
    }

    /// `response_types` (`code`).
    pub fn response_types<I: IntoIterator<Item = S>, S: Into<String>>(self, types: I) -> Self {
        self.metadata("response_types", strings(types))
    }

    /// `token_endpoint_auth_method`: `none` (a public client),
    /// `client_secret_basic` (RFC 7591's default), `client_secret_post`,
    /// `private_key_jwt` (give `jwks` or `jwks_uri` with
    /// [`metadata`](Self::metadata) then), … The server may answer with
    /// another; the answer is what counts.
    pub fn token_endpoint_auth_method(self, method: impl Into<String>) -> Self {
        self.metadata("token_endpoint_auth_method", method.into())
    }

    /// `scope`: the scopes the client may ask for (space-separated).
    pub fn scope(self, scope: impl Into<String>) -> Self {
        self.metadata("scope", scope.into())
    }

    /// Any other client metadata field (`client_uri`, `logo_uri`, `jwks`,
    /// `software_id`, `application_type`, …), replacing one of that name.
    pub fn metadata(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(name.into(), value.into());
        self
    }

    /// Allows a cleartext `http://` registration endpoint on a host that
    /// is not loopback: for a development server only, as for
    /// [`RefreshTokenGrant::allow_cleartext`](crate::RefreshTokenGrant::allow_cleartext).
    pub fn allow_cleartext(mut self, allow: bool) -> Self {
        self.allow_cleartext = allow;
        self
    }

    /// Posts the request to `endpoint` through `client` and reads the
    /// answer (RFC 7591 §3.2.1).
    ///
    /// # Errors
    ///
    /// [`Policy`](ErrorKind::Policy), before anything is sent, if the
    /// endpoint is cleartext to a host that is not loopback (and not
    /// allowed); [`Rejected`](ErrorKind::Rejected) for an RFC 7591 §3.2.2
    /// error answer (`invalid_redirect_uri`, `invalid_client_metadata`, …;
    /// [`oauth_error`](Error::oauth_error) names it);
    /// [`Transient`](ErrorKind::Transient) if the server is unreachable or
    /// answers 5xx or 429; [`InvalidResponse`](ErrorKind::InvalidResponse)
    /// for an answer that is not a JSON object with a `client_id`, or is
    /// larger than 64 KiB.
    pub async fn register<C: HttpClient>(
        &self,
        endpoint: &Uri,
        client: &C,
    ) -> Result<RegisteredClient, Error> {
        let mut target = Endpoint::new(endpoint.clone(), "registration endpoint");
        target.set_allow_cleartext(self.allow_cleartext);
        target.check()?;
        let body = serde_json::to_vec(&self.metadata)
            .map_err(|_| Error::new(ErrorKind::Rejected, "the client metadata is not JSON"))?;
        let mut request = Request::new(Bytes::from(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = endpoint.clone();
        let headers = request.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let redactor = Redactor::of(&request);
        let (response, unread) = answer_of(client.send(request).await).map_err(|e| {
            Error::transient("the registration endpoint gave no answer").with_source(e)
        })?;
        let read = if !response.status().is_success() {
            Err(error_response(
                &response,
                "registration endpoint",
                &redactor,
            ))
        } else if response.body().len() > MAX_DOCUMENT {
            Err(Error::invalid_response(
                "the registration answer is larger than 64 KiB",
            ))
        } else {
            RegisteredClient::from_answer(response.body())
        };
        read.map_err(|err| with_unread(err, unread))
    }
}

fn strings<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Value {
    Value::Array(items.into_iter().map(|s| Value::String(s.into())).collect())
}

/// A client the authorization server registered (RFC 7591 §3.2.1): its
/// `client_id`, its secret if it has one, the authentication method the
/// server settled on, and the rest of the metadata it answered with.
///
/// # Keeping it across restarts
///
/// A registration is made once and used for as long as the server keeps
/// it. Its serde form is the registration answer itself (secrets in clear:
/// write it only where the tokens may go). To keep it with the session,
/// [`store_in`](Self::store_in) puts it in the token set under one field,
/// [`STORED_FIELD`](Self::STORED_FIELD); every store that keeps token sets
/// keeps it (the file store, Redis), and a refresh keeps it too (a token
/// set keeps the stored fields it does not know). At start,
/// [`stored_in`](Self::stored_in) finds it in the loaded set: register only
/// when there is none, or its secret has
/// [expired](Self::is_secret_expired).
///
/// ```
/// use tower_token_refresh_core::TokenSet;
/// use tower_token_refresh_oauth2::RegisteredClient;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registered: RegisteredClient = serde_json::from_str(
///     r#"{"client_id":"c-123","client_secret":"s3cret","token_endpoint_auth_method":"client_secret_basic"}"#,
/// )?;
/// // After the login: the tokens, with the registration, go to the store.
/// let login = TokenSet::bearer("at").with_refresh_token("rt");
/// let stored = registered.store_in(&login)?;
/// // The next run: the registration comes back with the tokens.
/// let reloaded = TokenSet::from_stored_json(&stored.to_stored_json())?;
/// let found = RegisteredClient::stored_in(&reloaded)?.expect("kept with the tokens");
/// assert_eq!(found.client_id(), "c-123");
/// assert_eq!(found.client_auth()?.method(), "client_secret_basic");
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RegisteredClient {
    client_id: String,
    client_secret: Option<ClientSecret>,
    client_id_issued_at: Option<u64>,
    client_secret_expires_at: Option<u64>,
    token_endpoint_auth_method: Option<String>,
    registration_access_token: Option<ClientSecret>,
    registration_client_uri: Option<String>,
    metadata: Map<String, Value>,
}

/// The registration answer, as read and as stored (RFC 7591 §3.2.1).
// No Debug: it holds secrets.
#[derive(Serialize, Deserialize)]
struct Answer {
    client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id_issued_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_secret_expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_endpoint_auth_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registration_access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registration_client_uri: Option<String>,
    #[serde(flatten)]
    metadata: Map<String, Value>,
}

impl RegisteredClient {
    /// The field of a stored token set that [`store_in`](Self::store_in)
    /// keeps the registration under.
    pub const STORED_FIELD: &'static str = "oauth2_client_registration";

    fn from_answer(body: &[u8]) -> Result<Self, Error> {
        let answer: Answer = serde_json::from_slice(body).map_err(|_| {
            Error::invalid_response(
                "the registration answer is not a JSON object with a `client_id`",
            )
        })?;
        Self::try_from(answer)
    }

    /// The `client_id` the server assigned.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The client secret, if the server issued one.
    pub fn client_secret(&self) -> Option<&ClientSecret> {
        self.client_secret.as_ref()
    }

    /// When the client id was issued (`client_id_issued_at`), if said.
    pub fn client_id_issued_at(&self) -> Option<SystemTime> {
        self.client_id_issued_at.map(unix_time)
    }

    /// When the client secret expires (`client_secret_expires_at`); `None`
    /// if it never does (`0`), or the server did not say.
    pub fn client_secret_expires_at(&self) -> Option<SystemTime> {
        self.client_secret_expires_at
            .filter(|&at| at != 0)
            .map(unix_time)
    }

    /// Whether the client secret has expired: the registration is then of
    /// no more use, and the client registers again.
    pub fn is_secret_expired(&self) -> bool {
        self.client_secret.is_some()
            && self
                .client_secret_expires_at()
                .is_some_and(|at| at <= SystemTime::now())
    }

    /// The client authentication method: the one the server answered with,
    /// else RFC 7591 §2's default, `client_secret_basic`, for a client
    /// with a secret, and `none` for one without.
    pub fn token_endpoint_auth_method(&self) -> &str {
        match (&self.token_endpoint_auth_method, &self.client_secret) {
            (Some(method), _) => method,
            (None, Some(_)) => "client_secret_basic",
            (None, None) => "none",
        }
    }

    /// The registration access token (RFC 7592), if the server issued one.
    pub fn registration_access_token(&self) -> Option<&ClientSecret> {
        self.registration_access_token.as_ref()
    }

    /// The registration's management URL (RFC 7592), if the server gave one.
    pub fn registration_client_uri(&self) -> Option<&str> {
        self.registration_client_uri.as_deref()
    }

    /// Any other field of the answer (`client_name`, `redirect_uris`,
    /// `grant_types`, `scope`, …).
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.metadata.get(name)
    }

    /// The [`ClientAuth`] of the method the server answered with
    /// ([`token_endpoint_auth_method`](Self::token_endpoint_auth_method)):
    /// `client_secret_basic`, `client_secret_post`, `none`, and with
    /// feature `jose` `client_secret_jwt`. For `private_key_jwt`, see
    /// `client_auth_with_key` (feature `jose`).
    ///
    /// # Errors
    ///
    /// [`InvalidResponse`](ErrorKind::InvalidResponse) for a secret method
    /// without a secret; [`Rejected`](ErrorKind::Rejected) for
    /// `private_key_jwt` (it needs the key) or a method this crate does not
    /// have (`tls_client_auth`, …).
    pub fn client_auth(&self) -> Result<ClientAuth, Error> {
        let secret = || {
            self.client_secret.clone().ok_or_else(|| {
                Error::invalid_response(format!(
                    "the registration names {} but no client_secret",
                    self.token_endpoint_auth_method()
                ))
            })
        };
        let id = self.client_id.clone();
        match self.token_endpoint_auth_method() {
            "client_secret_basic" => Ok(ClientAuth::basic(id, secret()?)),
            "client_secret_post" => Ok(ClientAuth::post(id, secret()?)),
            "none" => Ok(ClientAuth::none(id)),
            #[cfg(feature = "jose")]
            "client_secret_jwt" => Ok(ClientAuth::client_secret_jwt(id, secret()?)),
            "private_key_jwt" => Err(Error::new(
                ErrorKind::Rejected,
                "the registration names private_key_jwt: its client authentication needs the \
                 client's key (client_auth_with_key, feature `jose`)",
            )),
            other => Err(Error::new(
                ErrorKind::Rejected,
                format!(
                    "the registration names the client authentication method `{}`, which this \
                     crate does not have",
                    other
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(64)
                        .collect::<String>()
                ),
            )),
        }
    }

    /// [`client_auth`](Self::client_auth), but for `private_key_jwt`
    /// assertions signed with `key` whose audience (`aud`) is `issuer`,
    /// the authorization server's issuer identifier: what RFC 7523 §3
    /// allows and MCP servers expect. Feature `jose`.
    ///
    /// # Errors
    ///
    /// As for [`client_auth`](Self::client_auth), less the
    /// `private_key_jwt` refusal.
    #[cfg(feature = "jose")]
    pub fn client_auth_with_key(
        &self,
        key: crate::jose::SigningKey,
        issuer: impl Into<String>,
    ) -> Result<ClientAuth, Error> {
        if self.token_endpoint_auth_method() == "private_key_jwt" {
            return Ok(crate::ClientAssertion::new(self.client_id.clone(), key)
                .audience(issuer)
                .into());
        }
        self.client_auth()
    }

    /// `tokens` with this registration kept in them, under
    /// [`STORED_FIELD`](Self::STORED_FIELD): save them to the store (or
    /// [`TokenManager::set`](crate::TokenManager::set) them) and the
    /// registration goes along, and stays through every refresh.
    ///
    /// # Errors
    ///
    /// [`Store`](ErrorKind::Store) if the set cannot be rebuilt with the
    /// field (it cannot happen for a set this build made).
    pub fn store_in(&self, tokens: &TokenSet) -> Result<TokenSet, Error> {
        let mut stored: Map<String, Value> = serde_json::from_slice(&tokens.to_stored_json())
            .map_err(|_| Error::new(ErrorKind::Store, "the token set has no stored form"))?;
        let value = serde_json::to_value(self)
            .map_err(|_| Error::new(ErrorKind::Store, "the registration has no stored form"))?;
        stored.insert(Self::STORED_FIELD.to_owned(), value);
        let bytes = serde_json::to_vec(&stored)
            .map_err(|_| Error::new(ErrorKind::Store, "the token set has no stored form"))?;
        TokenSet::from_stored_json(&bytes)
    }

    /// The registration kept in `tokens` by [`store_in`](Self::store_in),
    /// if any.
    ///
    /// # Errors
    ///
    /// [`Store`](ErrorKind::Store) if the field is there but is no
    /// registration.
    pub fn stored_in(tokens: &TokenSet) -> Result<Option<RegisteredClient>, Error> {
        let mut stored: Map<String, Value> = serde_json::from_slice(&tokens.to_stored_json())
            .map_err(|_| Error::new(ErrorKind::Store, "the token set has no stored form"))?;
        stored
            .remove(Self::STORED_FIELD)
            .map(|value| {
                serde_json::from_value(value).map_err(|_| {
                    Error::new(
                        ErrorKind::Store,
                        "the stored client registration is unreadable",
                    )
                })
            })
            .transpose()
    }
}

fn unix_time(secs: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(UNIX_EPOCH)
}

impl TryFrom<Answer> for RegisteredClient {
    type Error = Error;

    fn try_from(answer: Answer) -> Result<Self, Error> {
        if answer.client_id.is_empty() {
            return Err(Error::invalid_response(
                "the registration answer has an empty `client_id`",
            ));
        }
        Ok(RegisteredClient {
            client_id: answer.client_id,
            client_secret: answer
                .client_secret
                .filter(|s| !s.is_empty())
                .map(ClientSecret::new),
            client_id_issued_at: answer.client_id_issued_at,
            client_secret_expires_at: answer.client_secret_expires_at,
            token_endpoint_auth_method: answer.token_endpoint_auth_method,
            registration_access_token: answer
                .registration_access_token
                .filter(|s| !s.is_empty())
                .map(ClientSecret::new),
            registration_client_uri: answer.registration_client_uri,
            metadata: answer.metadata,
        })
    }
}

impl Serialize for RegisteredClient {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Answer {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.as_ref().map(|s| s.secret().to_owned()),
            client_id_issued_at: self.client_id_issued_at,
            client_secret_expires_at: self.client_secret_expires_at,
            token_endpoint_auth_method: self.token_endpoint_auth_method.clone(),
            registration_access_token: self
                .registration_access_token
                .as_ref()
                .map(|s| s.secret().to_owned()),
            registration_client_uri: self.registration_client_uri.clone(),
            metadata: self.metadata.clone(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RegisteredClient {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let answer = Answer::deserialize(deserializer)?;
        RegisteredClient::try_from(answer).map_err(|e| serde::de::Error::custom(e.message()))
    }
}

impl fmt::Debug for RegisteredClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisteredClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("client_secret_expires_at", &self.client_secret_expires_at)
            .field(
                "token_endpoint_auth_method",
                &self.token_endpoint_auth_method(),
            )
            .field("registration_access_token", &self.registration_access_token)
            .field("metadata", &self.metadata.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: &str) -> RegisteredClient {
        RegisteredClient::from_answer(json.as_bytes()).unwrap()
    }

    #[test]
    fn an_answer_is_read_with_every_field_kept() {
        let r = answer(
            r#"{"client_id":"c1","client_secret":"s1","client_id_issued_at":1700000000,
                "client_secret_expires_at":0,"token_endpoint_auth_method":"client_secret_post",
                "registration_access_token":"rat","registration_client_uri":"https://a/reg/c1",
                "client_name":"App","redirect_uris":["http://127.0.0.1/cb"]}"#,
        );
        assert_eq!(r.client_id(), "c1");
        assert_eq!(r.client_secret().unwrap().secret(), "s1");
        assert_eq!(
            r.client_id_issued_at(),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(r.client_secret_expires_at(), None, "0 is never");
        assert!(!r.is_secret_expired());
        assert_eq!(r.token_endpoint_auth_method(), "client_secret_post");
        assert_eq!(r.registration_access_token().unwrap().secret(), "rat");
        assert_eq!(r.registration_client_uri(), Some("https://a/reg/c1"));
        assert_eq!(r.field("client_name").unwrap(), "App");
    }

    #[test]
    fn answers_that_are_no_registration_are_invalid() {
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"client_id":""}"#,
            r#"{"client_id":7}"#,
            r#"{"client_id":"c","client_secret_expires_at":"soon"}"#,
        ] {
            let err = RegisteredClient::from_answer(bad.as_bytes()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{bad}");
        }
    }

    #[test]
    fn the_method_answered_picks_the_client_auth() {
        let cases = [
            (
                r#"{"client_id":"c","client_secret":"s","token_endpoint_auth_method":"client_secret_basic"}"#,
                "client_secret_basic",
            ),
            (
                r#"{"client_id":"c","client_secret":"s","token_endpoint_auth_method":"client_secret_post"}"#,
                "client_secret_post",
            ),
            (
                r#"{"client_id":"c","token_endpoint_auth_method":"none"}"#,
                "none",
            ),
            // RFC 7591 §2: the default method is client_secret_basic.
            (
                r#"{"client_id":"c","client_secret":"s"}"#,
                "client_secret_basic",
            ),
            (r#"{"client_id":"c"}"#, "none"),
        ];
        for (json, method) in cases {
            let auth = answer(json).client_auth().unwrap();
            assert_eq!(auth.method(), method, "{json}");
            assert_eq!(auth.client_id(), Some("c"));
        }
    }

    #[test]
    fn a_method_that_cannot_be_used_is_an_error() {
        let cases = [
            (
                r#"{"client_id":"c","token_endpoint_auth_method":"client_secret_basic"}"#,
                ErrorKind::InvalidResponse,
            ),
            (
                r#"{"client_id":"c","token_endpoint_auth_method":"private_key_jwt"}"#,
                ErrorKind::Rejected,
            ),
            (
                r#"{"client_id":"c","token_endpoint_auth_method":"tls_client_auth"}"#,
                ErrorKind::Rejected,
            ),
        ];
        for (json, kind) in cases {
            assert_eq!(
                answer(json).client_auth().unwrap_err().kind(),
                kind,
                "{json}"
            );
        }
    }

    #[cfg(feature = "jose")]
    #[test]
    fn private_key_jwt_assertions_are_for_the_issuer() {
        let key = crate::jose::SigningKey::generate_es256().unwrap();
        let r = answer(r#"{"client_id":"c","token_endpoint_auth_method":"private_key_jwt"}"#);
        let auth = r.client_auth_with_key(key, "https://auth.example").unwrap();
        assert_eq!(auth.method(), "private_key_jwt");
        assert!(
            format!("{auth:?}").contains("https://auth.example"),
            "{auth:?}"
        );
        // A secret method ignores the key.
        let key = crate::jose::SigningKey::generate_es256().unwrap();
        let basic = answer(r#"{"client_id":"c","client_secret":"s"}"#);
        let auth = basic.client_auth_with_key(key, "https://a").unwrap();
        assert_eq!(auth.method(), "client_secret_basic");
    }

    #[test]
    fn an_expired_secret_is_seen() {
        let r = answer(r#"{"client_id":"c","client_secret":"s","client_secret_expires_at":1}"#);
        assert!(r.is_secret_expired());
        let far = answer(
            r#"{"client_id":"c","client_secret":"s","client_secret_expires_at":99999999999}"#,
        );
        assert!(!far.is_secret_expired());
    }

    #[test]
    fn debug_shows_no_secret() {
        let r = answer(
            r#"{"client_id":"c","client_secret":"hunter2","registration_access_token":"rat-77"}"#,
        );
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("rat-77"),
            "{shown}"
        );
        assert!(shown.contains("\"c\""), "{shown}");
    }

    #[test]
    fn the_stored_form_is_the_answer_and_survives_the_token_set() {
        let r = answer(
            r#"{"client_id":"c","client_secret":"s","client_secret_expires_at":0,"client_name":"App"}"#,
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["client_secret"], "s");
        assert_eq!(json["client_name"], "App");
        let tokens = TokenSet::bearer("at").with_refresh_token("rt");
        assert_eq!(RegisteredClient::stored_in(&tokens).unwrap(), None);
        let stored = r.store_in(&tokens).unwrap();
        assert_eq!(stored.access_token(), tokens.access_token());
        assert_eq!(stored.refresh_token(), tokens.refresh_token());
        let back = TokenSet::from_stored_json(&stored.to_stored_json()).unwrap();
        assert_eq!(RegisteredClient::stored_in(&back).unwrap(), Some(r));
        // The field's name only, never its secret, in the set's Debug.
        assert!(!format!("{back:?}").contains("\"s\""), "{back:?}");
    }
}
