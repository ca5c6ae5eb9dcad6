//! The MCP authorization chain (MCP specification 2025-11-25) as one
//! value: from a resource server's `401` to the grants and logins of a
//! session, every rule of the spec applied once.
//!
//! ```text
//! 401 challenge ── resource_metadata, scope
//!   └─ McpAuthorization::discover
//!        ├─ protected resource metadata (RFC 9728), its resource checked
//!        ├─ authorization server metadata (RFC 8414 / OIDC, the MCP order)
//!        └─ the scope to ask for (challenge, else scopes_supported)
//!   └─ client_auth(identity): pre-registered, stored registration,
//!        client ID metadata document, or dynamic registration (RFC 7591)
//!   └─ login / refresh_grant / client_credentials: RFC 8707 `resource`
//!        and the scope on every request; PKCE S256 required
//!   └─ step_up: a 403 insufficient_scope widens the scope, bounded
//! ```
//!
//! The `401` itself is the caller's to read (the layer crate's
//! `StepUp::from_response` gives `resource_metadata()` and `scope()`; the
//! rmcp crate probes a server with one request).
//!
//! # Example
//!
//! ```no_run
//! use tower_token_refresh_core::{TokenManager, source::TokenSourceExt as _};
//! use tower_token_refresh_oauth2::{ClientIdentity, ClientRegistration, HttpClient, McpAuthorization};
//!
//! # async fn run(client: impl HttpClient + Clone) -> Result<(), tower_token_refresh_core::Error> {
//! // What the MCP server's 401 said: no metadata URL, scope "mcp:basic".
//! let mcp = McpAuthorization::discover("https://mcp.example.com/mcp", None, Some("mcp:basic"), &client).await?;
//! let identity = ClientIdentity::new()
//!     .metadata_document("https://app.example.com/oauth/client.json")
//!     .registration(ClientRegistration::new().client_name("My agent").redirect_uris(["http://127.0.0.1/callback"]));
//! let who = mcp.client_auth(&identity, &client).await?;
//! let login = mcp.login(who.auth.clone(), client.clone())?
//!     .on_authorization_url(|url| println!("open {url}"));
//! let refresh = mcp.refresh_grant(who.auth, client);
//! let tokens = TokenManager::builder(refresh.or_else(login)).build();
//! # let _ = tokens;
//! # Ok(()) }
//! ```

use std::fmt;

use http::Uri;

use super::{
    AuthorizationCodeLogin, ClientAuth, ClientCredentialsGrant, ClientRegistration, HttpClient,
    ProtectedResourceMetadata, ProviderMetadata, RefreshTokenGrant, RegisteredClient,
    ResourceIndicator, ScopeStepUp, select_scope,
};
use crate::{Error, ErrorKind};

/// The chain's discoveries for one MCP server: its protected resource
/// metadata, its authorization server's metadata, the resource indicator
/// and the scope to ask for. Built by [`discover`](Self::discover).
#[derive(Clone)]
pub struct McpAuthorization {
    resource: ProtectedResourceMetadata,
    server: ProviderMetadata,
    indicator: ResourceIndicator,
    scope: Option<String>,
}

/// Who the client is at an authorization server, in the order the MCP
/// specification prefers: credentials registered beforehand, then a
/// registration kept from an earlier run, then a client ID metadata
/// document (when the server takes one), then a new dynamic registration
/// (when the server has an endpoint for it). Give what the application
/// has; [`McpAuthorization::client_auth`] picks.
#[derive(Clone, Default)]
pub struct ClientIdentity {
    pre_registered: Option<ClientAuth>,
    stored: Option<RegisteredClient>,
    metadata_document: Option<String>,
    registration: Option<ClientRegistration>,
}

impl ClientIdentity {
    /// No identity yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Credentials registered with the server beforehand: used first.
    pub fn pre_registered(mut self, auth: ClientAuth) -> Self {
        self.pre_registered = Some(auth);
        self
    }

    /// A registration an earlier run made and kept (see
    /// [`RegisteredClient::stored_in`]): used unless its secret expired.
    pub fn stored(mut self, registered: RegisteredClient) -> Self {
        self.stored = Some(registered);
        self
    }

    /// The `https://` URL of the client's metadata document, its client ID
    /// where the server supports them.
    pub fn metadata_document(mut self, url: impl Into<String>) -> Self {
        self.metadata_document = Some(url.into());
        self
    }

    /// What to register when nothing else applies.
    pub fn registration(mut self, registration: ClientRegistration) -> Self {
        self.registration = Some(registration);
        self
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("pre_registered", &self.pre_registered.is_some())
            .field("stored", &self.stored.is_some())
            .field("metadata_document", &self.metadata_document)
            .field("registration", &self.registration.is_some())
            .finish()
    }
}

/// The client's authentication at the server, from
/// [`McpAuthorization::client_auth`], and the registration made for it
/// if one was: keep that with the tokens
/// ([`RegisteredClient::store_in`]) so that a restart does not register
/// again.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Identified {
    /// How the client authenticates at the token endpoint.
    pub auth: ClientAuth,
    /// The registration made just now, if the identity came from one.
    pub registered: Option<RegisteredClient>,
}

impl McpAuthorization {
    /// Discovers the chain for the MCP server at `server_url` (the URL the
    /// client calls), from what its `401` said: `resource_metadata` (the
    /// challenge's URL of the protected resource metadata; without one the
    /// well-known URLs are probed) and `challenge_scope` (its `scope`).
    ///
    /// The metadata's `resource` must be the server called (RFC 9728
    /// §3.3), and the first of its authorization servers is used. The scope
    /// is the challenge's, else all of the resource's `scopes_supported`,
    /// else none; `offline_access` is added when the authorization server
    /// offers it ([`select_scope`]).
    ///
    /// # Errors
    ///
    /// Those of [`ProtectedResourceMetadata::discover`] and
    /// [`ProviderMetadata::discover`]; [`InvalidResponse`](ErrorKind::InvalidResponse)
    /// if the metadata's `resource` is no valid resource indicator.
    pub async fn discover<C: HttpClient>(
        server_url: &str,
        resource_metadata: Option<&Uri>,
        challenge_scope: Option<&str>,
        client: &C,
    ) -> Result<Self, Error> {
        let resource =
            ProtectedResourceMetadata::discover(server_url, resource_metadata, client).await?;
        let server = resource.authorization_server(client).await?;
        let indicator = ResourceIndicator::new(resource.resource()).map_err(|e| {
            Error::invalid_response("the protected resource metadata names no usable resource")
                .with_source(e)
        })?;
        let scope = select_scope(challenge_scope, Some(&resource), Some(&server), true);
        Ok(McpAuthorization {
            resource,
            server,
            indicator,
            scope,
        })
    }

    /// The protected resource metadata.
    pub fn resource_metadata(&self) -> &ProtectedResourceMetadata {
        &self.resource
    }

    /// The authorization server's metadata.
    pub fn server(&self) -> &ProviderMetadata {
        &self.server
    }

    /// The resource indicator every request names (RFC 8707).
    pub fn resource(&self) -> &ResourceIndicator {
        &self.indicator
    }

    /// The scope a login asks for, if any.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// Who the client is, by the first of `identity`'s ways that applies
    /// (see [`ClientIdentity`]); registers when that is the way.
    ///
    /// # Errors
    ///
    /// [`Rejected`](ErrorKind::Rejected) if no way applies (nothing
    /// pre-registered or stored, no metadata document support, no
    /// registration endpoint); those of
    /// [`ClientRegistration::register`] and
    /// [`RegisteredClient::client_auth`];
    /// [`Policy`](ErrorKind::Policy) for a metadata document URL that
    /// cannot be one.
    pub async fn client_auth<C: HttpClient>(
        &self,
        identity: &ClientIdentity,
        client: &C,
    ) -> Result<Identified, Error> {
        if let Some(auth) = &identity.pre_registered {
            return Ok(Identified {
                auth: auth.clone(),
                registered: None,
            });
        }
        if let Some(stored) = identity.stored.as_ref().filter(|s| !s.is_secret_expired()) {
            return Ok(Identified {
                auth: stored.client_auth()?,
                registered: None,
            });
        }
        if let Some(url) = &identity.metadata_document
            && let Some(auth) = self.server.client_id_metadata_document(url)?
        {
            return Ok(Identified {
                auth,
                registered: None,
            });
        }
        if let (Some(registration), Some(endpoint)) =
            (&identity.registration, self.server.registration_endpoint())
        {
            let registered = registration.register(endpoint, client).await?;
            return Ok(Identified {
                auth: registered.client_auth()?,
                registered: Some(registered),
            });
        }
        Err(Error::new(
            ErrorKind::Rejected,
            "the client has no identity at this authorization server: nothing registered \
             beforehand or kept, no client ID metadata document support, no registration endpoint",
        ))
    }

    /// An authorization code login (PKCE S256, a loopback redirect) for
    /// the resource, asking for [`scope`](Self::scope). Add its
    /// `on_authorization_url` hook to open the browser.
    ///
    /// # Errors
    ///
    /// [`Rejected`](ErrorKind::Rejected) if the server has no
    /// authorization endpoint; [`Policy`](ErrorKind::Policy) if its
    /// metadata does not list `S256` in `code_challenge_methods_supported`
    /// (the MCP specification forbids going on without PKCE).
    pub fn login<C>(
        &self,
        auth: ClientAuth,
        client: C,
    ) -> Result<AuthorizationCodeLogin<C>, Error> {
        if !self
            .server
            .code_challenge_methods_supported()
            .iter()
            .any(|m| m == "S256")
        {
            return Err(Error::new(
                ErrorKind::Policy,
                "the authorization server does not say it supports PKCE S256",
            ));
        }
        let login = self
            .server
            .authorization_code_login(auth, client)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Rejected,
                    "the authorization server has no authorization endpoint",
                )
            })?
            .resource(self.indicator.clone());
        Ok(match &self.scope {
            Some(scope) => login.scope(scope.clone()),
            None => login,
        })
    }

    /// The refresh token grant for the sessions a [`login`](Self::login)
    /// starts, naming the resource.
    pub fn refresh_grant<C>(&self, auth: ClientAuth, client: C) -> RefreshTokenGrant<C> {
        self.server
            .refresh_token_grant(auth, client)
            .resource(self.indicator.clone())
    }

    /// A `client_credentials` grant for the resource (no user), asking for
    /// [`scope`](Self::scope).
    pub fn client_credentials<C>(&self, auth: ClientAuth, client: C) -> ClientCredentialsGrant<C> {
        let grant = self
            .server
            .client_credentials_grant(auth, client)
            .resource(self.indicator.clone());
        match &self.scope {
            Some(scope) => grant.scope(scope.clone()),
            None => grant,
        }
    }

    /// The bounded step-up for `403 insufficient_scope` answers, starting
    /// from [`scope`](Self::scope): each
    /// [`Authorize`](super::StepUpDecision::Authorize) is a scope for
    /// `login_with`.
    pub fn step_up(&self) -> ScopeStepUp {
        ScopeStepUp::new(self.scope.as_deref())
    }
}

impl fmt::Debug for McpAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpAuthorization")
            .field("resource", &self.indicator)
            .field("issuer", &self.server.issuer())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}
