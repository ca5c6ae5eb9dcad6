//! Token exchange (RFC 8693): the [`TokenExchange`] switch and the grant
//! the token endpoint serves with it, issuing an access token or an
//! Identity Assertion JWT Authorization Grant (ID-JAG) that the JWT bearer
//! grant then takes once.

use std::collections::HashMap;

use axum::{http::StatusCode, response::Response};
use serde_json::json;

use super::{
    oauth::{OAuthError, json_response},
    state::AuthShared,
};

/// The token exchange grant's `grant_type` (RFC 8693 §2.1).
pub(super) const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// RFC 8693 §3's access token type.
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693 §3's ID token type.
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// The ID-JAG's token type (draft-ietf-oauth-identity-assertion-authz-grant).
const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";

/// How an [`AuthServer`](super::AuthServer) serves token exchange (RFC
/// 8693), switched on with
/// [`AuthConfig::token_exchange`](super::AuthConfig::token_exchange).
///
/// A subject token is an access token the server issued and still
/// accepts (`subject_token_type` `…:access_token`), or one of the
/// [ID tokens](Self::id_token) configured here (`…:id_token`); anything
/// else is `invalid_grant`. An `audience` or `resource` configured here
/// must be sent as such (else `invalid_target`). The server issues an
/// access token (`requested_token_type` absent or `…:access_token`) or an
/// ID-JAG (`…:id-jag`, `token_type` `N_A`), an opaque token the JWT bearer
/// grant accepts as its `assertion` once.
///
/// # Example
///
/// ```
/// use tower_token_refresh_test_util::{AuthConfig, TokenExchange};
///
/// let config = AuthConfig::default().token_exchange(
///     TokenExchange::new()
///         .id_token("id-token-of-ann")
///         .audience("https://auth.example.com")
///         .resource("https://mcp.example.com/mcp"),
/// );
/// # let _ = config;
/// ```
#[derive(Clone, Debug, Default)]
pub struct TokenExchange {
    id_tokens: Vec<String>,
    audience: Option<String>,
    resource: Option<String>,
    /// Access tokens are issued without `expires_in`.
    no_expires_in: bool,
}

impl TokenExchange {
    /// Token exchange of the server's own access tokens, for any audience
    /// and resource.
    pub fn new() -> TokenExchange {
        TokenExchange::default()
    }

    /// Accepts `id_token` as a subject token of type `…:id_token`, as an
    /// identity provider that issued it would.
    pub fn id_token(mut self, id_token: impl Into<String>) -> Self {
        self.id_tokens.push(id_token.into());
        self
    }

    /// The `audience` a request must name.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Issues access tokens without `expires_in` (RFC 6749 §5.1 only
    /// recommends it): the client cannot tell when they expire. They still
    /// live the server's access token lifetime.
    pub fn without_expires_in(mut self) -> Self {
        self.no_expires_in = true;
        self
    }

    /// The `resource` (RFC 8707) a request must name.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }
}

/// What a token exchange issued an access token for, read with
/// [`AuthServer::exchanged`](super::AuthServer::exchanged).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Exchanged {
    /// The subject token given.
    pub subject_token: String,
    /// The `audience` asked for, if any (one of them, if several).
    pub audience: Option<String>,
    /// The `scope` asked for, if any.
    pub scope: Option<String>,
}

fn refuse(code: &'static str, description: &'static str) -> OAuthError {
    OAuthError::new(StatusCode::BAD_REQUEST, code, description)
}

/// A token exchange request's answer, the token's DPoP key `jkt` if any.
pub(super) fn exchange(
    shared: &AuthShared,
    params: &HashMap<String, String>,
    jkt: Option<&str>,
) -> Result<Response, OAuthError> {
    let Some(config) = &shared.token_exchange else {
        return Err(refuse(
            "unsupported_grant_type",
            "this grant type is not supported",
        ));
    };
    let get = |name: &str| params.get(name).map(String::as_str);
    let (Some(subject), Some(subject_type)) = (get("subject_token"), get("subject_token_type"))
    else {
        return Err(refuse(
            "invalid_request",
            "subject_token and subject_token_type are required",
        ));
    };
    let mut state = shared.lock();
    let known = match subject_type {
        ACCESS_TOKEN => {
            let now = tokio::time::Instant::now();
            state.tokens.access_expiry(subject, now).is_some()
        }
        ID_TOKEN => config.id_tokens.iter().any(|t| t == subject),
        _ => false,
    };
    if !known {
        state.stats.invalid_grant += 1;
        return Err(refuse("invalid_grant", "the subject token is not accepted"));
    }
    let wrong = |want: &Option<String>, name| want.as_deref().is_some_and(|w| get(name) != Some(w));
    if wrong(&config.audience, "audience") || wrong(&config.resource, "resource") {
        return Err(refuse(
            "invalid_target",
            "not for this audience or resource",
        ));
    }
    let body = match get("requested_token_type").unwrap_or(ACCESS_TOKEN) {
        ACCESS_TOKEN => {
            let grant = state.tokens.access_only(jkt);
            let exchanged = Exchanged {
                subject_token: subject.to_owned(),
                audience: get("audience").map(str::to_owned),
                scope: get("scope").map(str::to_owned),
            };
            state
                .exchanged
                .insert(grant.access_token.clone(), exchanged);
            let mut body = json!({
                "access_token": grant.access_token,
                "issued_token_type": ACCESS_TOKEN,
                "token_type": if grant.jkt.is_some() { "DPoP" } else { "Bearer" },
            });
            if !config.no_expires_in {
                body["expires_in"] = json!(grant.lifetime.as_secs().max(1));
            }
            body
        }
        ID_JAG => json!({
            "access_token": state.tokens.issue_jag(),
            "issued_token_type": ID_JAG,
            "token_type": "N_A",
            "expires_in": 300,
        }),
        _ => {
            return Err(refuse(
                "invalid_target",
                "this requested_token_type is not issued",
            ));
        }
    };
    state.stats.token_exchanges += 1;
    Ok(json_response(StatusCode::OK, &body))
}
