//! OpenID Connect discovery (OIDC Discovery 1.0 §4) and RFC 8414 metadata.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use serde::Deserialize;

use super::{
    AuthorizationCodeLogin, ClientAuth, ClientCredentialsGrant, DeviceLogin, HttpClient,
    IntrospectionClient, Redactor, RefreshTokenGrant, RevocationClient, answer_of,
    endpoint::{check_discovered, check_transport},
    error_response, with_unread,
};
use crate::{Error, ErrorKind};

/// What an authorization server publishes about itself: the endpoints to
/// build grants and clients from, read from its RFC 8414 authorization
/// server metadata (`/.well-known/oauth-authorization-server`) and its
/// OpenID Connect configuration (`/.well-known/openid-configuration`),
/// whichever of the two it publishes, merged if both.
///
/// The document says where secrets will go, so it obeys the same cleartext
/// rule as they do: it is fetched over `https://` (or `http://` to a
/// loopback host), and an `https://` issuer's endpoints must all be
/// `https://` (an issuer on a loopback host may name `http://` loopback
/// endpoints). For a development server without TLS, see
/// [`discover_allowing_cleartext`](Self::discover_allowing_cleartext).
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use tower_token_refresh_oauth2::{ClientAuth, ProviderMetadata};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = |req: Request<Bytes>| async move {
///     if req.uri() != "https://auth.example.com/.well-known/openid-configuration" {
///         // No RFC 8414 document.
///         return Response::builder().status(404).body(Bytes::new());
///     }
///     Ok(Response::new(Bytes::from_static(br#"{
///         "issuer": "https://auth.example.com",
///         "token_endpoint": "https://auth.example.com/oauth/token",
///         "revocation_endpoint": "https://auth.example.com/oauth/revoke"
///     }"#)))
/// };
/// let metadata = ProviderMetadata::discover("https://auth.example.com", &client).await?;
/// assert_eq!(metadata.token_endpoint(), "https://auth.example.com/oauth/token");
/// assert!(metadata.introspection_endpoint().is_none());
/// let grant = metadata.refresh_token_grant(ClientAuth::none("app"), client);
/// # let _ = grant;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderMetadata {
    issuer: String,
    token_endpoint: Uri,
    introspection_endpoint: Option<Uri>,
    revocation_endpoint: Option<Uri>,
    grant_types_supported: Vec<String>,
    token_endpoint_auth_methods_supported: Vec<String>,
    authorization_endpoint: Option<Uri>,
    device_authorization_endpoint: Option<Uri>,
    authorization_response_iss_parameter_supported: bool,
    registration_endpoint: Option<Uri>,
    scopes_supported: Vec<String>,
    client_id_metadata_document_supported: bool,
    token_endpoint_auth_signing_alg_values_supported: Vec<String>,
    code_challenge_methods_supported: Vec<String>,
    allow_cleartext: bool,
}

#[derive(Deserialize)]
struct RawMetadata {
    issuer: String,
    #[serde(default)]
    token_endpoint: Option<String>,
    #[serde(default)]
    introspection_endpoint: Option<String>,
    #[serde(default)]
    revocation_endpoint: Option<String>,
    #[serde(default)]
    grant_types_supported: Option<Vec<String>>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    device_authorization_endpoint: Option<String>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: Option<bool>,
    #[serde(default)]
    registration_endpoint: Option<String>,
    #[serde(default)]
    scopes_supported: Option<Vec<String>>,
    #[serde(default)]
    client_id_metadata_document_supported: Option<bool>,
    #[serde(default)]
    token_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
}

impl RawMetadata {
    /// `self`'s fields, each filled from `other` where `self` has none.
    fn or(self, other: RawMetadata) -> RawMetadata {
        RawMetadata {
            issuer: self.issuer,
            token_endpoint: self.token_endpoint.or(other.token_endpoint),
            introspection_endpoint: self.introspection_endpoint.or(other.introspection_endpoint),
            revocation_endpoint: self.revocation_endpoint.or(other.revocation_endpoint),
            grant_types_supported: self.grant_types_supported.or(other.grant_types_supported),
            token_endpoint_auth_methods_supported: self
                .token_endpoint_auth_methods_supported
                .or(other.token_endpoint_auth_methods_supported),
            authorization_endpoint: self.authorization_endpoint.or(other.authorization_endpoint),
            device_authorization_endpoint: self
                .device_authorization_endpoint
                .or(other.device_authorization_endpoint),
            authorization_response_iss_parameter_supported: self
                .authorization_response_iss_parameter_supported
                .or(other.authorization_response_iss_parameter_supported),
            registration_endpoint: self.registration_endpoint.or(other.registration_endpoint),
            scopes_supported: self.scopes_supported.or(other.scopes_supported),
            client_id_metadata_document_supported: self
                .client_id_metadata_document_supported
                .or(other.client_id_metadata_document_supported),
            token_endpoint_auth_signing_alg_values_supported: self
                .token_endpoint_auth_signing_alg_values_supported
                .or(other.token_endpoint_auth_signing_alg_values_supported),
            code_challenge_methods_supported: self
                .code_challenge_methods_supported
                .or(other.code_challenge_methods_supported),
        }
    }
}

/// The well-known documents an issuer may publish, at the URLs the MCP
/// authorization spec (2025-11-25) tries in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Document {
    /// RFC 8414 §3.1: `/.well-known/oauth-authorization-server` between the
    /// host and the issuer's path.
    OAuth,
    /// OIDC configuration with the well-known path inserted as RFC 8414
    /// inserts its own: `/.well-known/openid-configuration` between the
    /// host and the issuer's path. Tried only for an issuer with a path.
    OpenIdInserted,
    /// OIDC Discovery §4: `/.well-known/openid-configuration` after the
    /// issuer's path.
    OpenId,
}

impl Document {
    fn name(self) -> &'static str {
        match self {
            Document::OAuth => "authorization server metadata",
            Document::OpenIdInserted | Document::OpenId => "OpenID configuration",
        }
    }

    /// The document's URL for `issuer`.
    fn url(self, issuer: &Uri) -> Result<Uri, Error> {
        let not_absolute = || Error::new(ErrorKind::Policy, "the issuer is not an absolute URL");
        let (Some(scheme), Some(authority)) = (issuer.scheme(), issuer.authority()) else {
            return Err(not_absolute());
        };
        // RFC 8414 §3.1: a terminating `/` is removed before inserting.
        let path = issuer.path().trim_end_matches('/');
        let url = match self {
            Document::OAuth => {
                format!("{scheme}://{authority}/.well-known/oauth-authorization-server{path}")
            }
            Document::OpenIdInserted => {
                format!("{scheme}://{authority}/.well-known/openid-configuration{path}")
            }
            Document::OpenId => {
                format!("{scheme}://{authority}{path}/.well-known/openid-configuration")
            }
        };
        url.parse().map_err(|_| not_absolute())
    }

    /// The OpenID configuration URLs to try for `issuer`, in order: with a
    /// path, inserted then appended; without one the two are the same URL.
    fn openid_for(issuer: &Uri) -> &'static [Document] {
        if issuer.path().trim_end_matches('/').is_empty() {
            &[Document::OpenId]
        } else {
            &[Document::OpenIdInserted, Document::OpenId]
        }
    }
}

/// Whether two issuer identifiers are the same: identical strings (RFC 8414
/// §3.3, OIDC Discovery §4.3), except that an empty path is `/` (RFC 3986
/// §6.2.3), so `https://as.example` is `https://as.example/`.
pub(crate) fn same_issuer(published: &str, requested: &str) -> bool {
    published == requested
        || published
            .strip_suffix('/')
            .is_some_and(|p| p == requested && origin_only(p))
        || requested
            .strip_suffix('/')
            .is_some_and(|r| r == published && origin_only(r))
}

/// The rules a client ID metadata document's URL follows (draft-ietf-oauth-
/// client-id-metadata-document §3).
fn check_client_id_url(url: &str) -> Result<(), Error> {
    let refuse = |why: &str| {
        Err(Error::new(
            ErrorKind::Policy,
            format!("a client ID metadata document URL {why}"),
        ))
    };
    let Ok(uri) = url.parse::<Uri>() else {
        return refuse("must be an absolute https URL");
    };
    if !uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("https"))
        || uri.host().is_none_or(str::is_empty)
    {
        return refuse("must be an absolute https URL");
    }
    if url.contains('#') {
        return refuse("must not have a fragment");
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return refuse("must not carry user information");
    }
    let path = uri.path();
    if path.is_empty() || path == "/" {
        return refuse("must have a path");
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return refuse("must not have `.` or `..` path segments");
    }
    Ok(())
}

/// Whether `issuer` is `scheme://authority` with no path.
fn origin_only(issuer: &str) -> bool {
    issuer
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.contains('/'))
}

impl ProviderMetadata {
    /// Fetches the issuer's two metadata documents through `client`, at
    /// once, and merges them:
    ///
    /// - RFC 8414 §3.1: `/.well-known/oauth-authorization-server` goes
    ///   between the host and the issuer's path
    ///   (`https://as.example/tenant1` gives
    ///   `https://as.example/.well-known/oauth-authorization-server/tenant1`);
    /// - the OpenID configuration, at the first of these found, in the
    ///   order of the MCP authorization spec (2025-11-25):
    ///   `/.well-known/openid-configuration` between the host and the
    ///   issuer's path (`https://as.example/.well-known/openid-configuration/tenant1`;
    ///   only for an issuer with a path), then appended to the issuer (OIDC
    ///   Discovery §4: `https://as.example/tenant1/.well-known/openid-configuration`).
    ///
    /// An issuer with a path is never looked up at the root documents.
    ///
    /// A 4xx answer (other than 408 and 429) means the server does not
    /// publish that document; at least one must be there. Each document
    /// found must name exactly the requested issuer (RFC 8414 §3.3, OIDC
    /// Discovery §4.3; `https://as.example` and `https://as.example/` are
    /// one URL, but a path's trailing `/` counts).
    ///
    /// Where both documents have a field, RFC 8414's wins: the fields read
    /// here (the endpoints, the grant types, scopes and client
    /// authentication methods) are OAuth 2.0's, which RFC
    /// 8414 defines and OIDC Discovery borrows, and servers such as
    /// django-oauth-toolkit list introspection and revocation only there.
    /// Either way every endpoint comes from a document that named the
    /// issuer, and obeys the cleartext rule above.
    ///
    /// # Errors
    ///
    /// [`Transient`](ErrorKind::Transient) if the server is unreachable or
    /// answers 5xx/429 for either document;
    /// [`InvalidResponse`](ErrorKind::InvalidResponse) if it publishes
    /// neither, for another status, a document that is not JSON or lacks
    /// `issuer` or is larger than 64 KiB, merged documents without
    /// `token_endpoint`, an endpoint
    /// that is not a URL, or a document naming another issuer than the one
    /// asked for; [`Policy`](ErrorKind::Policy) if `issuer` is not an
    /// absolute URL, has a query or fragment, is `http://` to a host that
    /// is not loopback (nothing is sent then), or is `https://` and a
    /// document names a cleartext endpoint.
    pub async fn discover<C: HttpClient>(issuer: &str, client: &C) -> Result<Self, Error> {
        Self::fetch(issuer, client, false).await
    }

    /// [`discover`](Self::discover) for a development server without TLS:
    /// the issuer and its endpoints may be `http://` to any host, and the
    /// grants and clients built from the result
    /// [`allow_cleartext`](RefreshTokenGrant::allow_cleartext) too. An
    /// `https://` issuer's endpoints must still be `https://`: this allows
    /// a cleartext server, never a downgrade.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Request, Response};
    /// use tower_token_refresh_core::ErrorKind;
    /// use tower_token_refresh_oauth2::ProviderMetadata;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = |_req: Request<Bytes>| async {
    ///     Ok::<_, std::io::Error>(Response::new(Bytes::from_static(br#"{
    ///         "issuer": "http://keycloak:8080",
    ///         "token_endpoint": "http://keycloak:8080/token"
    ///     }"#)))
    /// };
    /// let err = ProviderMetadata::discover("http://keycloak:8080", &client).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Policy);
    /// let metadata = ProviderMetadata::discover_allowing_cleartext("http://keycloak:8080", &client).await?;
    /// assert_eq!(metadata.token_endpoint(), "http://keycloak:8080/token");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`discover`](Self::discover), less the cleartext refusals.
    pub async fn discover_allowing_cleartext<C: HttpClient>(
        issuer: &str,
        client: &C,
    ) -> Result<Self, Error> {
        Self::fetch(issuer, client, true).await
    }

    async fn fetch<C: HttpClient>(
        issuer: &str,
        client: &C,
        allow_cleartext: bool,
    ) -> Result<Self, Error> {
        let not_absolute = || Error::new(ErrorKind::Policy, "the issuer is not an absolute URL");
        let issuer_uri: Uri = issuer.parse().map_err(|_| not_absolute())?;
        if issuer_uri.scheme().is_none() || issuer_uri.authority().is_none() {
            return Err(not_absolute());
        }
        if issuer_uri.query().is_some() || issuer.contains('#') {
            // RFC 8414 §2: no query or fragment components.
            return Err(Error::new(
                ErrorKind::Policy,
                "the issuer has a query or fragment",
            ));
        }
        let oauth_url = Document::OAuth.url(&issuer_uri)?;
        check_transport(&oauth_url, allow_cleartext, "issuer")?;
        let mut openid_urls = Vec::new();
        for doc in Document::openid_for(&issuer_uri) {
            let url = doc.url(&issuer_uri)?;
            check_transport(&url, allow_cleartext, "issuer")?;
            openid_urls.push((*doc, url));
        }
        let (oauth, openid) = futures_util::future::join(
            fetch_document(client, Document::OAuth, oauth_url, issuer),
            first_document(client, openid_urls, issuer),
        )
        .await;
        // RFC 8414's document wins field by field; see `discover`.
        let raw = match (oauth?, openid?) {
            (Fetched::Found(oauth), Fetched::Found(openid)) => oauth.or(openid),
            (Fetched::Found(raw), Fetched::Absent(_))
            | (Fetched::Absent(_), Fetched::Found(raw)) => raw,
            (Fetched::Absent(_), Fetched::Absent(openid)) => return Err(openid),
        };
        let mut metadata = Self::from_raw(raw)?;
        let endpoints = [
            (Some(&metadata.token_endpoint), "token endpoint"),
            (
                metadata.introspection_endpoint.as_ref(),
                "introspection endpoint",
            ),
            (metadata.revocation_endpoint.as_ref(), "revocation endpoint"),
            (
                metadata.authorization_endpoint.as_ref(),
                "authorization endpoint",
            ),
            (
                metadata.device_authorization_endpoint.as_ref(),
                "device authorization endpoint",
            ),
            (
                metadata.registration_endpoint.as_ref(),
                "registration endpoint",
            ),
        ];
        for (endpoint, name) in endpoints {
            if let Some(endpoint) = endpoint {
                check_discovered(&issuer_uri, endpoint, allow_cleartext, name)?;
            }
        }
        metadata.allow_cleartext = allow_cleartext;
        Ok(metadata)
    }

    fn from_raw(raw: RawMetadata) -> Result<Self, Error> {
        let url = |s: String, name: &str| -> Result<Uri, Error> {
            let uri: Uri = s.parse().map_err(|_| {
                Error::invalid_response(format!("the discovery document's {name} is not a URL"))
            })?;
            if uri.scheme().is_none() || uri.authority().is_none() {
                return Err(Error::invalid_response(format!(
                    "the discovery document's {name} is not an absolute URL"
                )));
            }
            Ok(uri)
        };
        let token_endpoint = raw.token_endpoint.ok_or_else(|| {
            Error::invalid_response("the discovery documents name no `token_endpoint`")
        })?;
        Ok(ProviderMetadata {
            issuer: raw.issuer,
            token_endpoint: url(token_endpoint, "token_endpoint")?,
            introspection_endpoint: raw
                .introspection_endpoint
                .map(|s| url(s, "introspection_endpoint"))
                .transpose()?,
            revocation_endpoint: raw
                .revocation_endpoint
                .map(|s| url(s, "revocation_endpoint"))
                .transpose()?,
            grant_types_supported: raw.grant_types_supported.unwrap_or_default(),
            token_endpoint_auth_methods_supported: raw
                .token_endpoint_auth_methods_supported
                .unwrap_or_default(),
            authorization_endpoint: raw
                .authorization_endpoint
                .map(|s| url(s, "authorization_endpoint"))
                .transpose()?,
            device_authorization_endpoint: raw
                .device_authorization_endpoint
                .map(|s| url(s, "device_authorization_endpoint"))
                .transpose()?,
            authorization_response_iss_parameter_supported: raw
                .authorization_response_iss_parameter_supported
                .unwrap_or(false),
            registration_endpoint: raw
                .registration_endpoint
                .map(|s| url(s, "registration_endpoint"))
                .transpose()?,
            scopes_supported: raw.scopes_supported.unwrap_or_default(),
            client_id_metadata_document_supported: raw
                .client_id_metadata_document_supported
                .unwrap_or(false),
            token_endpoint_auth_signing_alg_values_supported: raw
                .token_endpoint_auth_signing_alg_values_supported
                .unwrap_or_default(),
            code_challenge_methods_supported: raw
                .code_challenge_methods_supported
                .unwrap_or_default(),
            allow_cleartext: false,
        })
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The token endpoint.
    pub fn token_endpoint(&self) -> &Uri {
        &self.token_endpoint
    }

    /// The introspection endpoint (RFC 7662), if the server has one.
    pub fn introspection_endpoint(&self) -> Option<&Uri> {
        self.introspection_endpoint.as_ref()
    }

    /// The revocation endpoint (RFC 7009), if the server has one.
    pub fn revocation_endpoint(&self) -> Option<&Uri> {
        self.revocation_endpoint.as_ref()
    }

    /// `grant_types_supported`, empty if the server did not say.
    pub fn grant_types_supported(&self) -> &[String] {
        &self.grant_types_supported
    }

    /// `token_endpoint_auth_methods_supported`, empty if the server did not say.
    pub fn token_endpoint_auth_methods_supported(&self) -> &[String] {
        &self.token_endpoint_auth_methods_supported
    }

    /// Whether this metadata came from
    /// [`discover_allowing_cleartext`](Self::discover_allowing_cleartext):
    /// the grants and clients built from it allow cleartext then.
    pub fn allows_cleartext(&self) -> bool {
        self.allow_cleartext
    }

    /// A `refresh_token` grant on this server's token endpoint.
    pub fn refresh_token_grant<C>(&self, auth: ClientAuth, client: C) -> RefreshTokenGrant<C> {
        RefreshTokenGrant::new(self.token_endpoint.clone(), auth, client)
            .allow_cleartext(self.allow_cleartext)
    }

    /// A `client_credentials` grant on this server's token endpoint.
    pub fn client_credentials_grant<C>(
        &self,
        auth: ClientAuth,
        client: C,
    ) -> ClientCredentialsGrant<C> {
        ClientCredentialsGrant::new(self.token_endpoint.clone(), auth, client)
            .allow_cleartext(self.allow_cleartext)
    }

    /// An introspection client, if the server has the endpoint.
    pub fn introspection_client<C>(
        &self,
        auth: ClientAuth,
        client: C,
    ) -> Option<IntrospectionClient<C>> {
        let url = self.introspection_endpoint.clone()?;
        Some(IntrospectionClient::new(url, auth, client).allow_cleartext(self.allow_cleartext))
    }

    /// A revocation client, if the server has the endpoint.
    pub fn revocation_client<C>(&self, auth: ClientAuth, client: C) -> Option<RevocationClient<C>> {
        let url = self.revocation_endpoint.clone()?;
        Some(RevocationClient::new(url, auth, client).allow_cleartext(self.allow_cleartext))
    }

    /// The authorization endpoint, if the server has one.
    pub fn authorization_endpoint(&self) -> Option<&Uri> {
        self.authorization_endpoint.as_ref()
    }

    /// The device authorization endpoint (RFC 8628), if the server has one.
    pub fn device_authorization_endpoint(&self) -> Option<&Uri> {
        self.device_authorization_endpoint.as_ref()
    }

    /// Whether the server names itself in every authorization response
    /// (RFC 9207 `authorization_response_iss_parameter_supported`).
    pub fn authorization_response_iss_parameter_supported(&self) -> bool {
        self.authorization_response_iss_parameter_supported
    }

    /// The dynamic client registration endpoint (RFC 7591), if the server
    /// has one: see [`ClientRegistration`](crate::ClientRegistration).
    pub fn registration_endpoint(&self) -> Option<&Uri> {
        self.registration_endpoint.as_ref()
    }

    /// `scopes_supported`, empty if the server did not say.
    pub fn scopes_supported(&self) -> &[String] {
        &self.scopes_supported
    }

    /// Whether `scope` is among the [`scopes_supported`](Self::scopes_supported).
    pub fn supports_scope(&self, scope: &str) -> bool {
        self.scopes_supported.iter().any(|s| s == scope)
    }

    /// Whether the server takes an `https://` URL naming a client ID
    /// metadata document as a `client_id`, with no registration
    /// (`client_id_metadata_document_supported`, OAuth Client ID Metadata
    /// Document draft); see
    /// [`client_id_metadata_document`](Self::client_id_metadata_document).
    pub fn client_id_metadata_document_supported(&self) -> bool {
        self.client_id_metadata_document_supported
    }

    /// The client authentication of a client identified by the URL of its
    /// client ID metadata document, if this server takes such client IDs:
    /// a public client ([`ClientAuth::none`]) whose `client_id` is
    /// `client_id_url`, used with no registration. `None` when the server
    /// does not say [`client_id_metadata_document_supported`](Self::client_id_metadata_document_supported):
    /// register then ([`ClientRegistration`](crate::ClientRegistration)),
    /// or use a pre-registered client.
    ///
    /// # Example
    ///
    /// ```
    /// # use bytes::Bytes;
    /// # use http::{Request, Response};
    /// use tower_token_refresh_oauth2::ProviderMetadata;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let client = |_req: Request<Bytes>| async {
    /// #     Ok::<_, std::io::Error>(Response::new(Bytes::from_static(br#"{
    /// #         "issuer": "https://auth.example.com", "token_endpoint": "https://auth.example.com/token",
    /// #         "client_id_metadata_document_supported": true }"#)))
    /// # };
    /// let metadata = ProviderMetadata::discover("https://auth.example.com", &client).await?;
    /// let auth = metadata
    ///     .client_id_metadata_document("https://app.example.com/oauth/client.json")?
    ///     .expect("the server takes metadata document client IDs");
    /// assert_eq!(auth.client_id(), Some("https://app.example.com/oauth/client.json"));
    /// assert_eq!(auth.method(), "none");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Policy`](ErrorKind::Policy) if `client_id_url` cannot name a
    /// metadata document: not `https://`, without a path, with a fragment,
    /// user information, or a `.` or `..` path segment.
    pub fn client_id_metadata_document(
        &self,
        client_id_url: &str,
    ) -> Result<Option<ClientAuth>, Error> {
        check_client_id_url(client_id_url)?;
        Ok(self
            .client_id_metadata_document_supported
            .then(|| ClientAuth::none(client_id_url)))
    }

    /// `token_endpoint_auth_signing_alg_values_supported`: the algorithms
    /// signed client assertions may use; empty if the server did not say.
    pub fn token_endpoint_auth_signing_alg_values_supported(&self) -> &[String] {
        &self.token_endpoint_auth_signing_alg_values_supported
    }

    /// `code_challenge_methods_supported` (PKCE methods); empty if the
    /// server did not say, which the MCP authorization spec reads as no
    /// PKCE support: an MCP client must not go on then.
    pub fn code_challenge_methods_supported(&self) -> &[String] {
        &self.code_challenge_methods_supported
    }

    /// A loopback login on this server, if it has an authorization
    /// endpoint. When the server says it sends `iss` (RFC 9207,
    /// [`authorization_response_iss_parameter_supported`](Self::authorization_response_iss_parameter_supported)),
    /// the login requires it to be this issuer
    /// ([`AuthorizationCodeLogin::issuer`]); otherwise an `iss` the
    /// redirect does carry must still be this issuer (RFC 9207 §2.4), and
    /// none is required.
    pub fn authorization_code_login<C>(
        &self,
        auth: ClientAuth,
        client: C,
    ) -> Option<AuthorizationCodeLogin<C>> {
        let url = self.authorization_endpoint.clone()?;
        let login = AuthorizationCodeLogin::new(url, self.token_endpoint.clone(), auth, client)
            .allow_cleartext(self.allow_cleartext);
        Some(if self.authorization_response_iss_parameter_supported {
            login.issuer(self.issuer.clone())
        } else {
            login.issuer_if_sent(self.issuer.clone())
        })
    }

    /// A device login on this server, if it has a device authorization
    /// endpoint.
    pub fn device_login<C>(&self, auth: ClientAuth, client: C) -> Option<DeviceLogin<C>> {
        let url = self.device_authorization_endpoint.clone()?;
        Some(
            DeviceLogin::new(url, self.token_endpoint.clone(), auth, client)
                .allow_cleartext(self.allow_cleartext),
        )
    }
}

/// The largest metadata document read: 64 KiB, as the tower adapter
/// reads at most by default. A client that reads more gets an error for a
/// larger document rather than a parse of it.
pub(crate) const MAX_DOCUMENT: usize = 64 * 1024;

/// What one well-known URL gave.
pub(crate) enum Fetched<T> {
    /// A document.
    Found(T),
    /// A 4xx (408 and 429 aside): the server does not publish this
    /// document. The error is what to report if it publishes none.
    Absent(Error),
}

/// GETs the JSON document at `url` (the `what`, in errors) and hands its
/// bytes, at most [`MAX_DOCUMENT`] of them, to `read`: the one GET of every
/// metadata document (authorization server, OpenID, protected resource).
pub(crate) async fn get_document<C: HttpClient, T>(
    client: &C,
    url: Uri,
    what: &str,
    read: impl FnOnce(&[u8]) -> Result<T, Error>,
) -> Result<Fetched<T>, Error> {
    let mut request = Request::new(Bytes::new());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = url;
    request
        .headers_mut()
        .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let (response, unread) = answer_of(client.send(request).await)
        .map_err(|e| Error::transient(format!("the {what} is unreachable")).with_source(e))?;
    let read = read_response(&response, what).and_then(|found| match found {
        Fetched::Found(body) => read(body).map(Fetched::Found),
        Fetched::Absent(err) => Ok(Fetched::Absent(err)),
    });
    match read {
        Ok(Fetched::Absent(err)) => Ok(Fetched::Absent(with_unread(err, unread))),
        Ok(found) => Ok(found),
        Err(err) => Err(with_unread(err, unread)),
    }
}

/// The body of a 2xx answer, or why there is none.
fn read_response<'r>(
    response: &'r Response<Bytes>,
    what: &str,
) -> Result<Fetched<&'r [u8]>, Error> {
    let status = response.status();
    if !status.is_success() {
        // Discovery sends no secret, so there is nothing to withhold.
        let err = error_response(response, what, &Redactor::none());
        let absent = status.is_client_error()
            && status != StatusCode::REQUEST_TIMEOUT
            && status != StatusCode::TOO_MANY_REQUESTS;
        return if absent {
            Ok(Fetched::Absent(err))
        } else {
            Err(err)
        };
    }
    if response.body().len() > MAX_DOCUMENT {
        return Err(Error::invalid_response(format!(
            "the {what} is larger than {} KiB",
            MAX_DOCUMENT / 1024
        )));
    }
    Ok(Fetched::Found(response.body()))
}

/// GETs `doc` at `url` and checks that it names `issuer`.
async fn fetch_document<C: HttpClient>(
    client: &C,
    doc: Document,
    url: Uri,
    issuer: &str,
) -> Result<Fetched<RawMetadata>, Error> {
    get_document(client, url, doc.name(), |body| {
        read_document(body, doc, issuer)
    })
    .await
}

/// The first of `urls` that has its document, tried in order; the last
/// absence if none has.
async fn first_document<C: HttpClient>(
    client: &C,
    urls: Vec<(Document, Uri)>,
    issuer: &str,
) -> Result<Fetched<RawMetadata>, Error> {
    let mut absent = Error::invalid_response("no OpenID configuration URL to try");
    for (doc, url) in urls {
        match fetch_document(client, doc, url, issuer).await? {
            Fetched::Found(raw) => return Ok(Fetched::Found(raw)),
            Fetched::Absent(err) => absent = err,
        }
    }
    Ok(Fetched::Absent(absent))
}

fn read_document(body: &[u8], doc: Document, issuer: &str) -> Result<RawMetadata, Error> {
    let raw: RawMetadata = serde_json::from_slice(body).map_err(|_| {
        Error::invalid_response(format!(
            "the {} is not a JSON object with an `issuer`",
            doc.name()
        ))
    })?;
    if !same_issuer(&raw.issuer, issuer) {
        return Err(Error::invalid_response(format!(
            "the {} names another issuer",
            doc.name()
        )));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::tests::response;

    /// What `get_document` makes of an answer for `doc`.
    fn read_answer(
        response: &Response<Bytes>,
        doc: Document,
        issuer: &str,
    ) -> Result<Fetched<RawMetadata>, Error> {
        match read_response(response, doc.name())? {
            Fetched::Found(body) => read_document(body, doc, issuer).map(Fetched::Found),
            Fetched::Absent(err) => Ok(Fetched::Absent(err)),
        }
    }

    /// What `discover` makes of `body` at `status` as the only document.
    fn read_alone(status: u16, body: &'static str) -> Result<ProviderMetadata, Error> {
        match read_answer(&response(status, body), Document::OpenId, "https://a")? {
            Fetched::Found(raw) => ProviderMetadata::from_raw(raw),
            Fetched::Absent(err) => Err(err),
        }
    }

    #[test]
    fn malformed_documents_have_exact_kinds() {
        let cases = [
            (200, r#"{"issuer":"https://a"}"#, ErrorKind::InvalidResponse),
            (
                200,
                r#"{"token_endpoint":"https://a/t"}"#,
                ErrorKind::InvalidResponse,
            ),
            (
                200,
                r#"{"issuer":"https://a","token_endpoint":"/token"}"#,
                ErrorKind::InvalidResponse,
            ),
            (
                200,
                r#"{"issuer":"https://a","token_endpoint":"https://a/t","revocation_endpoint":"not a url"}"#,
                ErrorKind::InvalidResponse,
            ),
            (200, "<html>", ErrorKind::InvalidResponse),
            (404, "", ErrorKind::InvalidResponse),
            (503, "", ErrorKind::Transient),
            (429, "", ErrorKind::Transient),
        ];
        for (status, body, kind) in cases {
            let err = read_alone(status, body).unwrap_err();
            assert_eq!(err.kind(), kind, "{status} {body}: {err}");
        }
    }

    #[test]
    fn only_a_4xx_other_than_408_and_429_means_absent() {
        for (status, absent) in [
            (404, true),
            (410, true),
            (403, true),
            (408, false),
            (429, false),
            (500, false),
        ] {
            let read = read_answer(&response(status, ""), Document::OAuth, "https://a");
            assert_eq!(matches!(read, Ok(Fetched::Absent(_))), absent, "{status}");
        }
    }

    #[test]
    fn well_known_urls_follow_rfc_8414_and_oidc() {
        let cases = [
            (
                "https://as.example",
                "https://as.example/.well-known/oauth-authorization-server",
                "https://as.example/.well-known/openid-configuration",
            ),
            (
                "https://as.example/",
                "https://as.example/.well-known/oauth-authorization-server",
                "https://as.example/.well-known/openid-configuration",
            ),
            (
                "https://as.example:8443/tenant1",
                "https://as.example:8443/.well-known/oauth-authorization-server/tenant1",
                "https://as.example:8443/tenant1/.well-known/openid-configuration",
            ),
            (
                "https://as.example/a/b/",
                "https://as.example/.well-known/oauth-authorization-server/a/b",
                "https://as.example/a/b/.well-known/openid-configuration",
            ),
        ];
        for (issuer, oauth, openid) in cases {
            let issuer: Uri = issuer.parse().unwrap();
            assert_eq!(Document::OAuth.url(&issuer).unwrap(), oauth);
            assert_eq!(Document::OpenId.url(&issuer).unwrap(), openid);
        }
    }

    /// MCP 2025-11-25: RFC 8414 inserted, OIDC inserted, OIDC appended; an
    /// issuer without a path has one OIDC URL, and no issuer with a path is
    /// ever looked up at the root.
    #[test]
    fn the_urls_tried_follow_the_mcp_order_for_every_issuer_shape() {
        let tried = |issuer: &str| -> Vec<String> {
            let issuer: Uri = issuer.parse().unwrap();
            std::iter::once(Document::OAuth)
                .chain(Document::openid_for(&issuer).iter().copied())
                .map(|doc| doc.url(&issuer).unwrap().to_string())
                .collect()
        };
        assert_eq!(
            tried("https://as.example"),
            [
                "https://as.example/.well-known/oauth-authorization-server",
                "https://as.example/.well-known/openid-configuration",
            ]
        );
        assert_eq!(tried("https://as.example/"), tried("https://as.example"));
        assert_eq!(
            tried("http://127.0.0.1:9/tenant1"),
            [
                "http://127.0.0.1:9/.well-known/oauth-authorization-server/tenant1",
                "http://127.0.0.1:9/.well-known/openid-configuration/tenant1",
                "http://127.0.0.1:9/tenant1/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            tried("https://as.example/a/b/"),
            [
                "https://as.example/.well-known/oauth-authorization-server/a/b",
                "https://as.example/.well-known/openid-configuration/a/b",
                "https://as.example/a/b/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn client_id_metadata_document_urls_are_https_with_a_path() {
        assert!(check_client_id_url("https://conformance-test.local/client-metadata.json").is_ok());
        assert!(check_client_id_url("HTTPS://app.example/c?v=1").is_ok());
        for bad in [
            "http://app.example/client.json",
            "https://app.example",
            "https://app.example/",
            "https://app.example/c.json#x",
            "https://user:pw@app.example/c.json",
            "https://app.example/a/../c.json",
            "https://app.example/./c.json",
            "/client.json",
            "not a url",
        ] {
            let err = check_client_id_url(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Policy, "{bad}");
        }
    }

    #[test]
    fn a_document_over_64_kib_is_refused() {
        let big = format!(
            r#"{{"issuer":"https://a","pad":"{}"}}"#,
            "x".repeat(MAX_DOCUMENT)
        );
        let r = Response::new(Bytes::from(big));
        let err = read_answer(&r, Document::OAuth, "https://a").err().unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
    }

    #[test]
    fn the_mcp_fields_are_read_and_merged() {
        let oauth: RawMetadata = serde_json::from_str(
            r#"{"issuer":"https://a","token_endpoint":"https://a/t",
                "registration_endpoint":"https://a/register",
                "code_challenge_methods_supported":["S256"],
                "token_endpoint_auth_signing_alg_values_supported":["ES256"]}"#,
        )
        .unwrap();
        let openid: RawMetadata = serde_json::from_str(
            r#"{"issuer":"https://a","scopes_supported":["openid","offline_access"],
                "client_id_metadata_document_supported":true,
                "code_challenge_methods_supported":["plain"]}"#,
        )
        .unwrap();
        let m = ProviderMetadata::from_raw(oauth.or(openid)).unwrap();
        assert_eq!(m.registration_endpoint().unwrap(), "https://a/register");
        assert_eq!(m.scopes_supported(), ["openid", "offline_access"]);
        assert!(m.supports_scope("offline_access"));
        assert!(!m.supports_scope("offline"));
        assert!(m.client_id_metadata_document_supported());
        assert_eq!(m.code_challenge_methods_supported(), ["S256"]);
        assert_eq!(
            m.token_endpoint_auth_signing_alg_values_supported(),
            ["ES256"]
        );
    }

    #[test]
    fn issuers_compare_exactly_but_an_empty_path_is_a_slash() {
        assert!(same_issuer("https://a", "https://a"));
        assert!(same_issuer("https://a/", "https://a"));
        assert!(same_issuer("https://a", "https://a/"));
        assert!(same_issuer("https://a/t1", "https://a/t1"));
        assert!(!same_issuer("https://a/t1/", "https://a/t1"));
        assert!(!same_issuer("https://a/t1", "https://a/t1/"));
        assert!(!same_issuer("https://A", "https://a"));
        assert!(!same_issuer("https://a/t2", "https://a/t1"));
        assert!(!same_issuer("https://a", "https://a/t1"));
    }

    #[test]
    fn rfc_8414_wins_field_by_field_and_the_other_fills_gaps() {
        let oauth: RawMetadata = serde_json::from_str(
            r#"{"issuer":"https://a","token_endpoint":"https://a/oauth/token","introspection_endpoint":"https://a/introspect"}"#,
        )
        .unwrap();
        let openid: RawMetadata = serde_json::from_str(
            r#"{"issuer":"https://a","token_endpoint":"https://a/oidc/token","revocation_endpoint":"https://a/revoke","grant_types_supported":["refresh_token"]}"#,
        )
        .unwrap();
        let merged = ProviderMetadata::from_raw(oauth.or(openid)).unwrap();
        assert_eq!(merged.token_endpoint(), "https://a/oauth/token");
        assert_eq!(
            merged.introspection_endpoint().unwrap(),
            "https://a/introspect"
        );
        assert_eq!(merged.revocation_endpoint().unwrap(), "https://a/revoke");
        assert_eq!(merged.grant_types_supported(), ["refresh_token"]);
    }

    #[tokio::test]
    async fn an_issuer_with_a_query_is_refused_before_anything_is_sent() {
        let client = |_req: Request<Bytes>| async {
            Err::<Response<Bytes>, _>(std::io::Error::other("must not be called"))
        };
        for issuer in ["https://a/?tenant=1", "https://a/t#x"] {
            let err = ProviderMetadata::discover(issuer, &client)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Policy, "{issuer}");
        }
    }

    #[tokio::test]
    async fn another_issuer_is_refused() {
        let client = |_req: Request<Bytes>| async {
            Ok::<_, std::io::Error>(Response::new(Bytes::from_static(
                br#"{"issuer":"https://evil.example","token_endpoint":"https://evil.example/t"}"#,
            )))
        };
        let err = ProviderMetadata::discover("https://auth.example", &client)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
        let err = ProviderMetadata::discover("not a url", &client)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Policy);
    }

    #[tokio::test]
    async fn the_logins_come_from_the_authorization_and_device_endpoints() {
        let client = |_req: Request<Bytes>| async {
            Ok::<_, std::io::Error>(Response::new(Bytes::from_static(
                br#"{"issuer":"https://auth.example","token_endpoint":"https://auth.example/t",
                    "authorization_endpoint":"https://auth.example/authorize",
                    "device_authorization_endpoint":"https://auth.example/device",
                    "authorization_response_iss_parameter_supported":true}"#,
            )))
        };
        let metadata = ProviderMetadata::discover("https://auth.example", &client)
            .await
            .unwrap();
        assert_eq!(
            metadata.authorization_endpoint().unwrap(),
            "https://auth.example/authorize"
        );
        assert!(metadata.authorization_response_iss_parameter_supported());
        let login = metadata
            .authorization_code_login(ClientAuth::none("app"), client)
            .unwrap();
        // The server sends `iss`, so the login requires it.
        assert!(
            format!("{login:?}").contains(r#"issuer: Some("https://auth.example")"#),
            "{login:?}"
        );
        let device = metadata.device_login(ClientAuth::none("app"), client);
        assert!(format!("{device:?}").contains("https://auth.example/device"));
    }

    #[tokio::test]
    async fn a_cleartext_authorization_endpoint_of_an_https_issuer_is_refused() {
        let client = |_req: Request<Bytes>| async {
            Ok::<_, std::io::Error>(Response::new(Bytes::from_static(
                br#"{"issuer":"https://auth.example","token_endpoint":"https://auth.example/t",
                    "authorization_endpoint":"http://auth.example/authorize"}"#,
            )))
        };
        let err = ProviderMetadata::discover("https://auth.example", &client)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Policy);
    }
}
