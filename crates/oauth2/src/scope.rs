//! Which scope to ask for (MCP authorization 2025-11-25, "Scope Selection
//! Strategy") and the bounded re-authorization a resource's `403
//! insufficient_scope` asks for ("Step-Up Authorization Flow").

use super::{ProtectedResourceMetadata, ProviderMetadata};

/// The scope that asks for a refresh token (OpenID Connect Core §11).
const OFFLINE_ACCESS: &str = "offline_access";

/// The scope to request in an authorization, as the MCP authorization
/// spec (2025-11-25) chooses it:
///
/// 1. the `scope` of the resource's challenge (`WWW-Authenticate`), if it
///    named one;
/// 2. else all of the protected resource metadata's `scopes_supported`;
/// 3. else none: the parameter is left out and the server applies its
///    default.
///
/// `offline_access` is added when `wants_refresh_token` and the
/// authorization server lists it in its `scopes_supported`, and only to a
/// scope chosen by 1 or 2: alone it would replace the server's default
/// scope with a refresh token for nothing.
///
/// # Example
///
/// ```
/// use tower_token_refresh_oauth2::select_scope;
///
/// // The challenge said `scope="mcp:basic"`; no metadata at hand.
/// assert_eq!(select_scope(Some("mcp:basic"), None, None, true).as_deref(), Some("mcp:basic"));
/// // Nothing says which scope: none is asked for.
/// assert_eq!(select_scope(None, None, None, true), None);
/// ```
pub fn select_scope(
    challenge_scope: Option<&str>,
    resource: Option<&ProtectedResourceMetadata>,
    server: Option<&ProviderMetadata>,
    wants_refresh_token: bool,
) -> Option<String> {
    let mut scope = Scopes::default();
    match challenge_scope.map(str::trim).filter(|s| !s.is_empty()) {
        Some(challenge) => {
            scope.add(challenge);
        }
        None => {
            for s in resource.map(|r| r.scopes_supported()).unwrap_or_default() {
                scope.add(s);
            }
        }
    }
    if !scope.is_empty()
        && wants_refresh_token
        && server.is_some_and(|s| s.supports_scope(OFFLINE_ACCESS))
    {
        scope.add(OFFLINE_ACCESS);
    }
    scope.joined()
}

/// Space-separated scope tokens (RFC 6749 §3.3), each once, in the order
/// first given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Scopes(Vec<String>);

impl Scopes {
    /// Adds each token of `scope` not there yet; whether any was new.
    fn add(&mut self, scope: &str) -> bool {
        let mut added = false;
        for token in scope.split(' ').filter(|t| !t.is_empty()) {
            if !self.0.iter().any(|t| t == token) {
                self.0.push(token.to_owned());
                added = true;
            }
        }
        added
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn joined(&self) -> Option<String> {
        (!self.is_empty()).then(|| self.0.join(" "))
    }
}

/// The re-authorizations that `403 insufficient_scope` answers ask for,
/// bounded: each asks for the union of every scope asked so far and the
/// one the challenge requires (MCP authorization 2025-11-25, "Step-Up
/// Authorization Flow"), and there are at most
/// [`max_authorizations`](Self::max_authorizations) authorizations in all,
/// the first one included: a resource that refuses every token cannot
/// loop the client (and the user) through logins.
///
/// The caller drives it: the layer, an rmcp client, a conformance client.
/// It makes no request itself.
///
/// # Example
///
/// ```
/// use tower_token_refresh_oauth2::{ScopeStepUp, StepUpDecision};
///
/// // The first authorization asked for what the 401 said.
/// let mut step_up = ScopeStepUp::new(Some("mcp:basic"));
/// // A tool call is refused: 403 insufficient_scope, scope="mcp:basic mcp:write".
/// assert_eq!(
///     step_up.escalate(Some("mcp:basic mcp:write")),
///     StepUpDecision::Authorize("mcp:basic mcp:write".to_owned()),
/// );
/// // Refused again for a scope already asked for: asking again won't help.
/// assert_eq!(step_up.escalate(Some("mcp:write")), StepUpDecision::NothingNew);
/// assert_eq!(step_up.authorizations(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeStepUp {
    asked: Scopes,
    authorizations: u32,
    max: u32,
}

/// What to do about one `403 insufficient_scope`
/// ([`ScopeStepUp::escalate`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepUpDecision {
    /// Authorize again with this scope: every scope asked so far and the
    /// ones the challenge requires.
    Authorize(String),
    /// The challenge requires nothing that was not asked for already: the
    /// server (or the user) declined it, and asking again would not help.
    /// Give the `403` to the caller.
    NothingNew,
    /// The bound of authorizations is reached. Give the `403` to the
    /// caller.
    LimitReached,
}

impl ScopeStepUp {
    /// The default bound on authorizations, the first one included: 3.
    pub const DEFAULT_MAX_AUTHORIZATIONS: u32 = 3;

    /// A step-up after a first authorization that asked for `first_scope`
    /// (`None`: no scope parameter).
    pub fn new(first_scope: Option<&str>) -> Self {
        let mut asked = Scopes::default();
        if let Some(scope) = first_scope {
            asked.add(scope);
        }
        ScopeStepUp {
            asked,
            authorizations: 1,
            max: Self::DEFAULT_MAX_AUTHORIZATIONS,
        }
    }

    /// At most `max` authorizations in all, the first one included
    /// (at least 1); [`DEFAULT_MAX_AUTHORIZATIONS`](Self::DEFAULT_MAX_AUTHORIZATIONS)
    /// by default.
    pub fn max_authorizations(mut self, max: u32) -> Self {
        self.max = max.max(1);
        self
    }

    /// What to do about a `403 insufficient_scope` whose challenge
    /// requires `required_scope`. An [`Authorize`](StepUpDecision::Authorize)
    /// counts as one more authorization.
    pub fn escalate(&mut self, required_scope: Option<&str>) -> StepUpDecision {
        if self.authorizations >= self.max {
            return StepUpDecision::LimitReached;
        }
        let mut union = self.asked.clone();
        if !union.add(required_scope.unwrap_or_default()) {
            return StepUpDecision::NothingNew;
        }
        self.asked = union;
        self.authorizations += 1;
        StepUpDecision::Authorize(self.asked.joined().unwrap_or_default())
    }

    /// The scope the latest authorization asked for, if any.
    pub fn scope(&self) -> Option<String> {
        self.asked.joined()
    }

    /// How many authorizations there have been, the first one included.
    pub fn authorizations(&self) -> u32 {
        self.authorizations
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{Request, Response};

    use super::*;

    /// Protected resource metadata with `scopes_supported`, and
    /// authorization server metadata with its own.
    async fn metadata(
        resource_scopes: &str,
        server_scopes: &str,
    ) -> (ProtectedResourceMetadata, ProviderMetadata) {
        let prm = format!(
            r#"{{"resource":"https://r.example/mcp","authorization_servers":["https://a.example"],
                "scopes_supported":{resource_scopes}}}"#
        );
        let asm = format!(
            r#"{{"issuer":"https://a.example","token_endpoint":"https://a.example/t",
                "scopes_supported":{server_scopes}}}"#
        );
        let client = move |req: Request<Bytes>| {
            let body = match req.uri().path() {
                "/.well-known/oauth-protected-resource/mcp" => Some(prm.clone()),
                "/.well-known/oauth-authorization-server" => Some(asm.clone()),
                _ => None,
            };
            async move {
                match body {
                    Some(b) => Response::builder().body(Bytes::from(b)),
                    None => Response::builder().status(404).body(Bytes::new()),
                }
            }
        };
        let prm = ProtectedResourceMetadata::discover("https://r.example/mcp", None, &client)
            .await
            .unwrap();
        let asm = prm.authorization_server(&client).await.unwrap();
        (prm, asm)
    }

    #[tokio::test]
    async fn the_challenge_wins_over_scopes_supported() {
        let (prm, asm) = metadata(r#"["mcp:basic","mcp:read"]"#, "[]").await;
        assert_eq!(
            select_scope(Some("mcp:admin"), Some(&prm), Some(&asm), false).as_deref(),
            Some("mcp:admin")
        );
        assert_eq!(
            select_scope(Some("  "), Some(&prm), Some(&asm), false).as_deref(),
            Some("mcp:basic mcp:read"),
            "an empty challenge scope is no scope"
        );
    }

    #[tokio::test]
    async fn without_a_challenge_scope_every_supported_scope_is_asked_for() {
        let (prm, asm) = metadata(r#"["mcp:basic","mcp:read","mcp:write"]"#, "[]").await;
        assert_eq!(
            select_scope(None, Some(&prm), Some(&asm), true).as_deref(),
            Some("mcp:basic mcp:read mcp:write")
        );
    }

    #[tokio::test]
    async fn no_scope_anywhere_asks_for_none() {
        let (prm, asm) = metadata("[]", r#"["offline_access"]"#).await;
        assert_eq!(select_scope(None, Some(&prm), Some(&asm), true), None);
    }

    #[tokio::test]
    async fn offline_access_is_added_only_when_offered_and_wanted() {
        let (prm, offers) = metadata(r#"["mcp:basic"]"#, r#"["openid","offline_access"]"#).await;
        let (_, silent) = metadata(r#"["mcp:basic"]"#, "[]").await;
        let cases = [
            (Some(&offers), true, "mcp:basic offline_access"),
            (Some(&offers), false, "mcp:basic"),
            (Some(&silent), true, "mcp:basic"),
            (None, true, "mcp:basic"),
        ];
        for (server, wanted, expected) in cases {
            assert_eq!(
                select_scope(None, Some(&prm), server, wanted).as_deref(),
                Some(expected)
            );
        }
        // Asked already: not twice.
        assert_eq!(
            select_scope(Some("offline_access mcp:x"), None, Some(&offers), true).as_deref(),
            Some("offline_access mcp:x")
        );
    }

    #[test]
    fn a_step_up_asks_for_the_union_of_every_scope_asked() {
        let mut step_up = ScopeStepUp::new(Some("mcp:basic offline_access"));
        assert_eq!(
            step_up.escalate(Some("mcp:basic mcp:write")),
            StepUpDecision::Authorize("mcp:basic offline_access mcp:write".to_owned())
        );
        assert_eq!(
            step_up.escalate(Some("mcp:admin")),
            StepUpDecision::Authorize("mcp:basic offline_access mcp:write mcp:admin".to_owned())
        );
        assert_eq!(step_up.authorizations(), 3);
    }

    #[test]
    fn three_authorizations_in_all_by_default() {
        let mut step_up = ScopeStepUp::new(None);
        assert_eq!(
            step_up.escalate(Some("a")),
            StepUpDecision::Authorize("a".to_owned())
        );
        assert_eq!(
            step_up.escalate(Some("b")),
            StepUpDecision::Authorize("a b".to_owned())
        );
        assert_eq!(step_up.escalate(Some("c")), StepUpDecision::LimitReached);
        assert_eq!(step_up.authorizations(), 3);
        assert_eq!(step_up.scope().as_deref(), Some("a b"));
    }

    #[test]
    fn the_bound_is_the_callers_to_set_but_never_below_one() {
        let mut once = ScopeStepUp::new(Some("a")).max_authorizations(0);
        assert_eq!(once.escalate(Some("b")), StepUpDecision::LimitReached);
        let mut five = ScopeStepUp::new(None).max_authorizations(5);
        for scope in ["a", "b", "c", "d"] {
            assert!(matches!(
                five.escalate(Some(scope)),
                StepUpDecision::Authorize(_)
            ));
        }
        assert_eq!(five.escalate(Some("e")), StepUpDecision::LimitReached);
    }

    #[test]
    fn a_refusal_for_a_scope_already_asked_does_not_authorize_again() {
        let mut step_up = ScopeStepUp::new(Some("mcp:admin"));
        assert_eq!(
            step_up.escalate(Some("mcp:admin")),
            StepUpDecision::NothingNew
        );
        assert_eq!(step_up.escalate(None), StepUpDecision::NothingNew);
        assert_eq!(step_up.authorizations(), 1);
    }
}
