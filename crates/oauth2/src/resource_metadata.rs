//! OAuth 2.0 protected resource metadata (RFC 9728): what a resource
//! server says about itself, above all which authorization servers issue
//! its tokens. The first link of the MCP discovery chain.
//!
//! Invariants:
//!
//! - The document is used only if its `resource` is identical to the
//!   resource identifier it was looked up for (§3.3): the URL that was
//!   called when the document's URL came from a `WWW-Authenticate`
//!   `resource_metadata`, else the identifier the well-known path was
//!   inserted into. Otherwise discovery fails and nothing is authorized.
//! - Every URL fetched, and every authorization server named by the
//!   document of an `https://` resource, obeys the cleartext rule of
//!   endpoint module: `https://`, or `http://` to loopback.
//! - Reads are bounded (64 KiB); nothing a server sends panics.

use http::Uri;
use serde::Deserialize;

use super::{
    HttpClient, ProviderMetadata,
    discovery::{Fetched, get_document, same_issuer},
    endpoint::{check_discovered, check_transport},
};
use crate::{Error, ErrorKind};

/// The well-known path of protected resource metadata (RFC 9728 §3).
const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// What a protected resource publishes about itself (RFC 9728 §2): its
/// resource identifier, the authorization servers whose tokens it takes,
/// the scopes it knows, and how it takes a bearer token. Fields this crate
/// does not read are kept ([`field`](Self::field)).
///
/// [`discover`](Self::discover) finds it as the MCP authorization spec
/// (2025-11-25) asks: at the `resource_metadata` URL of the resource's
/// `401` challenge if it sent one (the `tower-token-refresh` layer's
/// `StepUp::resource_metadata` reads it), else at the path-based
/// well-known URL, then at the root one. Then
/// [`authorization_server`](Self::authorization_server) discovers the
/// first authorization server's metadata.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use tower_token_refresh_oauth2::ProtectedResourceMetadata;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = |req: Request<Bytes>| async move {
///     let body: &'static [u8] = match req.uri().to_string().as_str() {
///         "https://mcp.example.com/.well-known/oauth-protected-resource/mcp" => br#"{
///             "resource": "https://mcp.example.com/mcp",
///             "authorization_servers": ["https://auth.example.com"],
///             "scopes_supported": ["mcp:read", "mcp:write"]
///         }"#,
///         "https://auth.example.com/.well-known/oauth-authorization-server" => br#"{
///             "issuer": "https://auth.example.com",
///             "token_endpoint": "https://auth.example.com/token",
///             "registration_endpoint": "https://auth.example.com/register"
///         }"#,
///         _ => return Response::builder().status(404).body(Bytes::new()),
///     };
///     Ok(Response::new(Bytes::from_static(body)))
/// };
/// // No `resource_metadata` in the challenge: the well-known URLs are probed.
/// let resource = ProtectedResourceMetadata::discover("https://mcp.example.com/mcp", None, &client).await?;
/// assert_eq!(resource.scopes_supported(), ["mcp:read", "mcp:write"]);
/// let server = resource.authorization_server(&client).await?;
/// assert_eq!(server.token_endpoint(), "https://auth.example.com/token");
/// assert!(server.registration_endpoint().is_some());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectedResourceMetadata {
    resource: String,
    authorization_servers: Vec<String>,
    scopes_supported: Vec<String>,
    bearer_methods_supported: Vec<String>,
    other: serde_json::Map<String, serde_json::Value>,
    allow_cleartext: bool,
}

#[derive(Deserialize)]
struct RawResourceMetadata {
    resource: String,
    #[serde(default)]
    authorization_servers: Vec<String>,
    #[serde(default)]
    scopes_supported: Vec<String>,
    #[serde(default)]
    bearer_methods_supported: Vec<String>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// Where a document is looked for, and the resource identifier its
/// `resource` must then be (RFC 9728 §3.3).
#[derive(Debug, PartialEq, Eq)]
struct Candidate {
    url: Uri,
    expected_resource: String,
}

impl ProtectedResourceMetadata {
    /// Finds the metadata of the resource at `server_url` (the URL the
    /// client calls, such as an MCP server's endpoint) through `client`:
    ///
    /// 1. at `resource_metadata`, the URL the resource's `401` challenge
    ///    named (RFC 9728 §5.1), if given: its `resource` must then be
    ///    `server_url`. No other URL is tried.
    /// 2. Else at the path-based well-known URL (§3.1: the well-known
    ///    path between host and path, `https://r.example/mcp` giving
    ///    `https://r.example/.well-known/oauth-protected-resource/mcp`),
    ///    its `resource` then `server_url`;
    /// 3. and if that is absent (a 4xx other than 408 and 429), at the root
    ///    (`https://r.example/.well-known/oauth-protected-resource`), its
    ///    `resource` then the origin, `https://r.example`.
    ///
    /// `resource` and the URL it must match compare as RFC 9728 §3.3 says,
    /// as identical strings, but that an empty path is `/` (RFC 3986
    /// §6.2.3).
    ///
    /// # Errors
    ///
    /// [`Policy`](ErrorKind::Policy), before anything is sent, if
    /// `server_url` is not an absolute URL without a fragment, or it or
    /// `resource_metadata` is `http://` to a host that is not loopback; or
    /// if the document of an `https://` resource names a cleartext
    /// authorization server. [`InvalidResponse`](ErrorKind::InvalidResponse)
    /// if no document is found, one is not JSON with a `resource`, is
    /// larger than 64 KiB, or names another resource than the one asked
    /// for. [`Transient`](ErrorKind::Transient) if the resource is
    /// unreachable or answers 5xx or 429.
    pub async fn discover<C: HttpClient>(
        server_url: &str,
        resource_metadata: Option<&Uri>,
        client: &C,
    ) -> Result<Self, Error> {
        Self::fetch(server_url, resource_metadata, client, false).await
    }

    /// [`discover`](Self::discover) for a development resource without
    /// TLS: `http://` to any host is allowed, and
    /// [`authorization_server`](Self::authorization_server) discovers with
    /// [`ProviderMetadata::discover_allowing_cleartext`].
    ///
    /// # Errors
    ///
    /// As for [`discover`](Self::discover), less the cleartext refusals.
    pub async fn discover_allowing_cleartext<C: HttpClient>(
        server_url: &str,
        resource_metadata: Option<&Uri>,
        client: &C,
    ) -> Result<Self, Error> {
        Self::fetch(server_url, resource_metadata, client, true).await
    }

    async fn fetch<C: HttpClient>(
        server_url: &str,
        resource_metadata: Option<&Uri>,
        client: &C,
        allow_cleartext: bool,
    ) -> Result<Self, Error> {
        let server = parse_server_url(server_url)?;
        check_transport(&server, allow_cleartext, "protected resource")?;
        let candidates = match resource_metadata {
            Some(url) => vec![Candidate {
                url: url.clone(),
                expected_resource: server_url.to_owned(),
            }],
            None => well_known_candidates(&server, server_url)?,
        };
        for candidate in &candidates {
            check_transport(
                &candidate.url,
                allow_cleartext,
                "protected resource metadata",
            )?;
        }
        let mut absent = None;
        for candidate in candidates {
            let expected = candidate.expected_resource;
            let found = get_document(
                client,
                candidate.url,
                "protected resource metadata",
                |body| read_document(body, &expected),
            )
            .await?;
            match found {
                Fetched::Found(raw) => {
                    for issuer in &raw.authorization_servers {
                        check_authorization_server(&server, issuer, allow_cleartext)?;
                    }
                    return Ok(ProtectedResourceMetadata {
                        resource: raw.resource,
                        authorization_servers: raw.authorization_servers,
                        scopes_supported: raw.scopes_supported,
                        bearer_methods_supported: raw.bearer_methods_supported,
                        other: raw.other,
                        allow_cleartext,
                    });
                }
                Fetched::Absent(err) => absent = Some(err),
            }
        }
        Err(absent.unwrap_or_else(|| {
            Error::invalid_response("no protected resource metadata URL to try")
        }))
    }

    /// The resource identifier (`resource`): the value to send as RFC 8707
    /// `resource` ([`ResourceIndicator`](crate::ResourceIndicator)).
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// `authorization_servers`: the issuers whose tokens the resource
    /// takes; empty if it did not say.
    pub fn authorization_servers(&self) -> &[String] {
        &self.authorization_servers
    }

    /// `scopes_supported`; empty if the resource did not say.
    pub fn scopes_supported(&self) -> &[String] {
        &self.scopes_supported
    }

    /// `bearer_methods_supported` (`header`, `body`, `query`); empty if
    /// the resource did not say.
    pub fn bearer_methods_supported(&self) -> &[String] {
        &self.bearer_methods_supported
    }

    /// A field of the document this type does not read
    /// (`resource_name`, `jwks_uri`, `dpop_signing_alg_values_supported`, …).
    pub fn field(&self, name: &str) -> Option<&serde_json::Value> {
        self.other.get(name)
    }

    /// Whether this came from
    /// [`discover_allowing_cleartext`](Self::discover_allowing_cleartext).
    pub fn allows_cleartext(&self) -> bool {
        self.allow_cleartext
    }

    /// Discovers the metadata of the first of the
    /// [`authorization_servers`](Self::authorization_servers)
    /// ([`ProviderMetadata::discover`], or its cleartext variant if this
    /// came from one).
    ///
    /// # Errors
    ///
    /// [`InvalidResponse`](ErrorKind::InvalidResponse) if the document
    /// names no authorization server; otherwise those of
    /// [`ProviderMetadata::discover`].
    pub async fn authorization_server<C: HttpClient>(
        &self,
        client: &C,
    ) -> Result<ProviderMetadata, Error> {
        let Some(issuer) = self.authorization_servers.first() else {
            return Err(Error::invalid_response(
                "the protected resource metadata names no authorization server",
            ));
        };
        if self.allow_cleartext {
            ProviderMetadata::discover_allowing_cleartext(issuer, client).await
        } else {
            ProviderMetadata::discover(issuer, client).await
        }
    }
}

/// `server_url` as a URI: absolute, without a fragment.
fn parse_server_url(server_url: &str) -> Result<Uri, Error> {
    let refuse = || {
        Error::new(
            ErrorKind::Policy,
            "the protected resource URL is not an absolute URL without a fragment",
        )
    };
    if server_url.contains('#') {
        return Err(refuse());
    }
    let uri: Uri = server_url.parse().map_err(|_| refuse())?;
    if uri.scheme().is_none() || uri.authority().is_none() {
        return Err(refuse());
    }
    Ok(uri)
}

/// The well-known URLs for `server` (given as `server_url`), in the order
/// to try them, each with the identifier its document must name (RFC 9728
/// §3.1, §3.3).
fn well_known_candidates(server: &Uri, server_url: &str) -> Result<Vec<Candidate>, Error> {
    let (Some(scheme), Some(authority)) = (server.scheme(), server.authority()) else {
        return Err(Error::new(
            ErrorKind::Policy,
            "the protected resource URL is not absolute",
        ));
    };
    let origin = format!("{scheme}://{authority}");
    let url = |s: String| {
        s.parse::<Uri>().map_err(|_| {
            Error::new(
                ErrorKind::Policy,
                "the protected resource URL gives no well-known URL",
            )
        })
    };
    // §3.1: a terminating `/` after the host is removed; a query stays.
    let path = server.path().trim_end_matches('/');
    let query = server.query().map(|q| format!("?{q}")).unwrap_or_default();
    let mut candidates = Vec::with_capacity(2);
    if !path.is_empty() || !query.is_empty() {
        candidates.push(Candidate {
            url: url(format!("{origin}{WELL_KNOWN}{path}{query}"))?,
            expected_resource: server_url.to_owned(),
        });
    }
    candidates.push(Candidate {
        url: url(format!("{origin}{WELL_KNOWN}"))?,
        expected_resource: origin,
    });
    Ok(candidates)
}

/// Whether a published `resource` is the identifier expected (§3.3):
/// identical, but that an empty path is `/`, as for issuers.
fn same_resource(published: &str, expected: &str) -> bool {
    same_issuer(published, expected)
}

fn read_document(body: &[u8], expected_resource: &str) -> Result<RawResourceMetadata, Error> {
    let raw: RawResourceMetadata = serde_json::from_slice(body).map_err(|_| {
        Error::invalid_response(
            "the protected resource metadata is not a JSON object with a `resource`",
        )
    })?;
    if !same_resource(&raw.resource, expected_resource) {
        return Err(Error::invalid_response(
            "the protected resource metadata names another resource than the one called \
             (RFC 9728 §3.3); it is not used",
        ));
    }
    Ok(raw)
}

/// The cleartext rule for an authorization server a resource's document
/// names: as for an endpoint its issuer's document names.
fn check_authorization_server(
    server: &Uri,
    issuer: &str,
    allow_cleartext: bool,
) -> Result<(), Error> {
    let issuer: Uri = issuer.parse().map_err(|_| {
        Error::invalid_response(
            "the protected resource metadata names an authorization server that is not a URL",
        )
    })?;
    check_discovered(server, &issuer, allow_cleartext, "authorization server")
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{Request, Response};

    use super::*;

    fn candidates(server: &str) -> Vec<(String, String)> {
        well_known_candidates(&server.parse().unwrap(), server)
            .unwrap()
            .into_iter()
            .map(|c| (c.url.to_string(), c.expected_resource))
            .collect()
    }

    fn pair(url: &str, resource: &str) -> (String, String) {
        (url.to_owned(), resource.to_owned())
    }

    #[test]
    fn the_path_based_url_comes_before_the_root_one() {
        assert_eq!(
            candidates("http://localhost:3000/mcp"),
            [
                pair(
                    "http://localhost:3000/.well-known/oauth-protected-resource/mcp",
                    "http://localhost:3000/mcp"
                ),
                pair(
                    "http://localhost:3000/.well-known/oauth-protected-resource",
                    "http://localhost:3000"
                ),
            ]
        );
        assert_eq!(
            candidates("https://r.example/a/b/?x=1"),
            [
                pair(
                    "https://r.example/.well-known/oauth-protected-resource/a/b?x=1",
                    "https://r.example/a/b/?x=1"
                ),
                pair(
                    "https://r.example/.well-known/oauth-protected-resource",
                    "https://r.example"
                ),
            ]
        );
    }

    #[test]
    fn a_resource_without_a_path_has_only_the_root_url() {
        for server in ["https://r.example", "https://r.example/"] {
            assert_eq!(
                candidates(server),
                [pair(
                    "https://r.example/.well-known/oauth-protected-resource",
                    "https://r.example"
                )]
            );
        }
    }

    #[test]
    fn resources_compare_exactly_but_an_empty_path_is_a_slash() {
        assert!(same_resource(
            "https://r.example/mcp",
            "https://r.example/mcp"
        ));
        assert!(same_resource("https://r.example/", "https://r.example"));
        assert!(same_resource("https://r.example", "https://r.example/"));
        assert!(!same_resource(
            "https://r.example/mcp/",
            "https://r.example/mcp"
        ));
        assert!(!same_resource("https://r.example", "https://r.example/mcp"));
        assert!(!same_resource(
            "https://evil.example/mcp",
            "https://r.example/mcp"
        ));
        assert!(!same_resource(
            "https://R.example/mcp",
            "https://r.example/mcp"
        ));
        assert!(!same_resource(
            "http://r.example/mcp",
            "https://r.example/mcp"
        ));
    }

    #[test]
    fn documents_are_read_with_unknown_fields_kept() {
        let raw = read_document(
            br#"{"resource":"https://r/mcp","authorization_servers":["https://a"],
                "bearer_methods_supported":["header"],"resource_name":"R"}"#,
            "https://r/mcp",
        )
        .unwrap();
        assert_eq!(raw.authorization_servers, ["https://a"]);
        assert_eq!(raw.bearer_methods_supported, ["header"]);
        assert!(raw.scopes_supported.is_empty());
        assert_eq!(raw.other["resource_name"], "R");
        for bad in [&b"{}"[..], b"[]", b"<html>", br#"{"resource":3}"#] {
            let err = read_document(bad, "https://r/mcp").err().unwrap();
            assert_eq!(err.kind(), ErrorKind::InvalidResponse);
        }
    }

    type Seen = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

    /// A client answering `body` at `at` and 404 elsewhere, recording URLs.
    fn serving(at: &'static str, body: &'static str) -> (Seen, impl HttpClient) {
        let seen = Seen::default();
        let log = seen.clone();
        let client = move |req: Request<Bytes>| {
            let url = req.uri().to_string();
            log.lock().unwrap().push(url.clone());
            async move {
                let status = if url == at { 200 } else { 404 };
                let body = if url == at { body } else { "" };
                Response::builder()
                    .status(status)
                    .body(Bytes::from_static(body.as_bytes()))
            }
        };
        (seen, client)
    }

    #[tokio::test]
    async fn a_document_for_another_resource_is_an_error() {
        let (_, client) = serving(
            "https://r.example/.well-known/oauth-protected-resource/mcp",
            r#"{"resource":"https://evil.example/mcp","authorization_servers":["https://a"]}"#,
        );
        let err = ProtectedResourceMetadata::discover("https://r.example/mcp", None, &client)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
        assert!(err.message().contains("another resource"), "{err}");
    }

    #[tokio::test]
    async fn the_challenges_url_is_the_only_one_tried_and_must_name_the_called_url() {
        let (seen, client) = serving(
            "https://r.example/custom/meta.json",
            r#"{"resource":"https://r.example","authorization_servers":["https://a"]}"#,
        );
        let at: Uri = "https://r.example/custom/meta.json".parse().unwrap();
        // The root's identifier, but the called URL is /mcp.
        let err = ProtectedResourceMetadata::discover("https://r.example/mcp", Some(&at), &client)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
        assert_eq!(
            *seen.lock().unwrap(),
            ["https://r.example/custom/meta.json"]
        );
    }

    #[tokio::test]
    async fn only_an_absent_path_based_document_sends_the_client_to_the_root() {
        let seen = Seen::default();
        let log = seen.clone();
        let client = move |req: Request<Bytes>| {
            log.lock().unwrap().push(req.uri().to_string());
            async { Response::builder().status(503).body(Bytes::new()) }
        };
        let err = ProtectedResourceMetadata::discover("https://r.example/mcp", None, &client)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient);
        assert_eq!(
            *seen.lock().unwrap(),
            ["https://r.example/.well-known/oauth-protected-resource/mcp"]
        );
    }

    #[tokio::test]
    async fn cleartext_is_refused_before_anything_is_sent() {
        let (seen, client) = serving("", "");
        for (server, at) in [
            ("http://r.example/mcp", None),
            ("https://r.example/mcp", Some("http://r.example/meta")),
        ] {
            let at = at.map(|a| a.parse::<Uri>().unwrap());
            let err = ProtectedResourceMetadata::discover(server, at.as_ref(), &client)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Policy, "{server}");
        }
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_https_resource_naming_a_cleartext_authorization_server_is_refused() {
        let (_, client) = serving(
            "https://r.example/.well-known/oauth-protected-resource/mcp",
            r#"{"resource":"https://r.example/mcp","authorization_servers":["http://auth.example"]}"#,
        );
        let err = ProtectedResourceMetadata::discover("https://r.example/mcp", None, &client)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Policy);
    }
}
