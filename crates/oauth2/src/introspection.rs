//! Token introspection (RFC 7662).

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{Response, Uri};

use super::{
    ClientAuth, Endpoint, HttpClient, Redactor, TokenTypeHint, answer_of, error_response,
    revocation::token_form, token_request, with_unread,
};
use crate::{Error, TokenManager};

/// Asks an authorization server whether a token is still active
/// (RFC 7662), to notice a token revoked before its expiry.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use tower_token_refresh_core::{source, TokenManager, TokenSet};
/// use tower_token_refresh_oauth2::{ClientAuth, IntrospectionClient};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // This server says every token is revoked.
/// let client = |_req: Request<Bytes>| async {
///     Ok::<_, std::io::Error>(Response::new(Bytes::from_static(br#"{"active":false}"#)))
/// };
/// let introspection = IntrospectionClient::new(
///     "https://auth.example.com/introspect".parse()?,
///     ClientAuth::basic("my-client", "my-secret"),
///     client,
/// );
/// let tokens = TokenManager::builder(source::from_fn(|_| async { Ok(TokenSet::bearer("new")) }))
///     .initial(TokenSet::bearer("revoked"))
///     .build();
/// // Inactive: the manager refreshes before this returns.
/// assert!(!introspection.check(&tokens).await?);
/// assert_eq!(tokens.current().unwrap().access_token().secret(), "new");
/// # Ok(()) }
/// ```
pub struct IntrospectionClient<C> {
    url: Endpoint,
    auth: ClientAuth,
    client: C,
}

impl<C> IntrospectionClient<C> {
    /// A client of the introspection endpoint at `url`.
    pub fn new(url: Uri, auth: ClientAuth, client: C) -> Self {
        IntrospectionClient {
            url: Endpoint::new(url, "introspection endpoint"),
            auth,
            client,
        }
    }

    /// Allows the token and client secret to go over cleartext `http://`
    /// to a host that is not loopback: for a development server only. Off
    /// by default, as for
    /// [`RefreshTokenGrant::allow_cleartext`](super::RefreshTokenGrant::allow_cleartext).
    pub fn allow_cleartext(mut self, allow: bool) -> Self {
        self.url.set_allow_cleartext(allow);
        self
    }
}

impl<C> fmt::Debug for IntrospectionClient<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("IntrospectionClient");
        self.url.debug_fields(&mut f, "url");
        f.field("auth", &self.auth).finish_non_exhaustive()
    }
}

impl<C: HttpClient> IntrospectionClient<C> {
    /// Introspects `token`.
    ///
    /// # Errors
    ///
    /// [`Transient`](crate::ErrorKind::Transient) when the endpoint is
    /// unreachable or answers 5xx/429; the §5.2 mapping for OAuth2 error
    /// bodies (`invalid_client` is [`Rejected`](crate::ErrorKind::Rejected));
    /// [`InvalidResponse`](crate::ErrorKind::InvalidResponse) for a body
    /// without a boolean `active`; [`Policy`](crate::ErrorKind::Policy),
    /// before anything is sent, for a cleartext URL to a host that is not
    /// loopback (see [`allow_cleartext`](Self::allow_cleartext)). No error
    /// quotes the token or the client secret, in any encoding.
    pub async fn introspect(
        &self,
        token: &str,
        hint: Option<TokenTypeHint>,
    ) -> Result<Introspection, Error> {
        let (request, redactor) = token_request(&self.url, &self.auth, token_form(token, hint))?;
        let (response, unread) = answer_of(self.client.send(request).await)
            .map_err(|e| Error::transient("introspection endpoint unreachable").with_source(e))?;
        parse_introspection(&response, &redactor).map_err(|e| with_unread(e, unread))
    }

    /// Introspects the manager's current access token. An inactive one (or
    /// none) makes the manager refresh, unless a newer token replaced the
    /// one checked meanwhile; the refresh is awaited. Returns whether the
    /// token was active.
    ///
    /// # Errors
    ///
    /// The introspection's error (nothing is refreshed then), or the
    /// refresh's.
    pub async fn check(&self, manager: &TokenManager) -> Result<bool, Error> {
        // The generation first: if the token changes after this, the refresh
        // below is skipped rather than run against a token nobody checked.
        let generation = manager.generation();
        let active = match manager.current() {
            Some(tokens) => {
                self.introspect(
                    tokens.access_token().secret(),
                    Some(TokenTypeHint::AccessToken),
                )
                .await?
                .active
            }
            None => false,
        };
        if !active {
            tracing::debug!(generation, "introspection: token inactive; refreshing");
            manager.refresh_if(generation).await?;
        }
        Ok(active)
    }
}

/// An introspection response (RFC 7662 §2.2). Only `active` is required;
/// the rest is what the server chose to say.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Introspection {
    /// Whether the token is active (issued, not expired, not revoked).
    pub active: bool,
    /// The token's scope.
    pub scope: Option<String>,
    /// The client the token was issued to.
    pub client_id: Option<String>,
    /// The subject (usually the user).
    pub sub: Option<String>,
    /// When the token expires.
    pub exp: Option<SystemTime>,
    /// The token's type (`Bearer`, …).
    pub token_type: Option<String>,
}

fn parse_introspection(
    response: &Response<Bytes>,
    redactor: &Redactor,
) -> Result<Introspection, Error> {
    if !response.status().is_success() {
        return Err(error_response(response, "introspection endpoint", redactor));
    }
    // Unknown or mistyped optional members are dropped; only `active` counts.
    let value: serde_json::Value = serde_json::from_slice(response.body())
        .map_err(|_| Error::invalid_response("introspection response is not JSON"))?;
    let active = value
        .get("active")
        .and_then(serde_json::Value::as_bool)
        .ok_or_else(|| Error::invalid_response("introspection response has no boolean `active`"))?;
    let exp = value
        .get("exp")
        .and_then(serde_json::Value::as_f64)
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 253_402_300_800.0)
        .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs_f64(s)));
    Ok(Introspection {
        active,
        scope: string_member(&value, "scope"),
        client_id: string_member(&value, "client_id"),
        sub: string_member(&value, "sub"),
        exp,
        token_type: string_member(&value, "token_type"),
    })
}

fn string_member(value: &serde_json::Value, name: &str) -> Option<String> {
    value.get(name)?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::tests::response;

    #[test]
    fn active_and_inactive_answers_parse() {
        let i = parse_introspection(
            &response(
                200,
                r#"{"active":true,"scope":"a b","client_id":"c","exp":1700000000,"extra":[1]}"#,
            ),
            &Redactor::none(),
        )
        .unwrap();
        assert!(i.active);
        assert_eq!(i.scope.as_deref(), Some("a b"));
        assert_eq!(i.exp, Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
        let i =
            parse_introspection(&response(200, r#"{"active":false}"#), &Redactor::none()).unwrap();
        assert!(!i.active);
    }

    #[test]
    fn malformed_answers_have_exact_kinds() {
        let cases = [
            (200, r#"{"scope":"x"}"#, ErrorKind::InvalidResponse),
            (200, r#"{"active":"true"}"#, ErrorKind::InvalidResponse),
            (200, "<html>", ErrorKind::InvalidResponse),
            (200, "[]", ErrorKind::InvalidResponse),
            (401, r#"{"error":"invalid_client"}"#, ErrorKind::Rejected),
            (503, "", ErrorKind::Transient),
            (404, "nope", ErrorKind::InvalidResponse),
        ];
        for (status, body, kind) in cases {
            let err = parse_introspection(&response(status, body), &Redactor::none()).unwrap_err();
            assert_eq!(err.kind(), kind, "{status} {body}: {err}");
        }
    }

    #[test]
    fn mistyped_optional_members_are_dropped() {
        let i = parse_introspection(
            &response(200, r#"{"active":true,"scope":5,"exp":"soon","sub":null}"#),
            &Redactor::none(),
        )
        .unwrap();
        assert_eq!((i.scope, i.exp, i.sub), (None, None, None));
    }
}
