//! OpenID Connect discovery (OIDC Discovery 1.0 §4) and RFC 8414 metadata.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, Uri, header};
use serde::Deserialize;

use super::{
    ClientAuth, ClientCredentialsGrant, HttpClient, IntrospectionClient, Redactor,
    RefreshTokenGrant, RevocationClient,
    endpoint::{check_discovered, check_transport},
    error_response,
};
use crate::{Error, ErrorKind};

/// What an authorization server publishes about itself at
/// `{issuer}/.well-known/openid-configuration`: the endpoints to build
/// grants and clients from.
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
/// use tower_token_refresh_core::oauth2::{ClientAuth, ProviderMetadata};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = |req: Request<Bytes>| async move {
///     assert_eq!(req.uri(), "https://auth.example.com/.well-known/openid-configuration");
///     Ok::<_, std::io::Error>(Response::new(Bytes::from_static(br#"{
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
    allow_cleartext: bool,
}

#[derive(Deserialize)]
struct RawMetadata {
    issuer: String,
    token_endpoint: String,
    #[serde(default)]
    introspection_endpoint: Option<String>,
    #[serde(default)]
    revocation_endpoint: Option<String>,
    #[serde(default)]
    grant_types_supported: Option<Vec<String>>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

impl ProviderMetadata {
    /// Fetches `{issuer}/.well-known/openid-configuration` through `client`
    /// and checks that the document names the same issuer (OIDC Discovery
    /// §4.3; a trailing `/` aside).
    ///
    /// # Errors
    ///
    /// [`Transient`](ErrorKind::Transient) if the server is unreachable or
    /// answers 5xx/429; [`InvalidResponse`](ErrorKind::InvalidResponse) for
    /// another status, a document that is not JSON or lacks `issuer` or
    /// `token_endpoint`, an endpoint that is not a URL, or an issuer that
    /// differs from the one asked for; [`Policy`](ErrorKind::Policy) if
    /// `issuer` is not an absolute URL, is `http://` to a host that is not
    /// loopback (nothing is sent then), or is `https://` and the document
    /// names a cleartext endpoint.
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
    /// use tower_token_refresh_core::{ErrorKind, oauth2::ProviderMetadata};
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
        let base = issuer.trim_end_matches('/');
        let not_absolute = || Error::new(ErrorKind::Policy, "the issuer is not an absolute URL");
        let issuer_uri: Uri = base.parse().map_err(|_| not_absolute())?;
        let url: Uri = format!("{base}/.well-known/openid-configuration")
            .parse()
            .map_err(|_| not_absolute())?;
        if url.scheme().is_none() || url.authority().is_none() {
            return Err(not_absolute());
        }
        check_transport(&url, allow_cleartext, "issuer")?;
        let mut request = Request::new(Bytes::new());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = url;
        request
            .headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let response = client
            .send(request)
            .await
            .map_err(|e| Error::transient("discovery endpoint unreachable").with_source(e))?;
        let mut metadata = Self::from_response(&response)?;
        if metadata.issuer.trim_end_matches('/') != base {
            return Err(Error::invalid_response(
                "the discovery document names another issuer",
            ));
        }
        let endpoints = [
            (Some(&metadata.token_endpoint), "token endpoint"),
            (
                metadata.introspection_endpoint.as_ref(),
                "introspection endpoint",
            ),
            (metadata.revocation_endpoint.as_ref(), "revocation endpoint"),
        ];
        for (endpoint, name) in endpoints {
            if let Some(endpoint) = endpoint {
                check_discovered(&issuer_uri, endpoint, allow_cleartext, name)?;
            }
        }
        metadata.allow_cleartext = allow_cleartext;
        Ok(metadata)
    }

    fn from_response(response: &Response<Bytes>) -> Result<Self, Error> {
        if !response.status().is_success() {
            // Discovery sends no secret, so there is nothing to withhold.
            return Err(error_response(
                response,
                "discovery endpoint",
                &Redactor::none(),
            ));
        }
        let raw: RawMetadata = serde_json::from_slice(response.body()).map_err(|_| {
            Error::invalid_response(
                "the discovery document is not JSON with `issuer` and `token_endpoint`",
            )
        })?;
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
        Ok(ProviderMetadata {
            issuer: raw.issuer,
            token_endpoint: url(raw.token_endpoint, "token_endpoint")?,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::oauth2::tests::response;

    #[test]
    fn malformed_documents_have_exact_kinds() {
        let cases = [
            (200, r#"{"issuer":"https://a"}"#, ErrorKind::InvalidResponse),
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
        ];
        for (status, body, kind) in cases {
            let err = ProviderMetadata::from_response(&response(status, body)).unwrap_err();
            assert_eq!(err.kind(), kind, "{status} {body}: {err}");
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
}
