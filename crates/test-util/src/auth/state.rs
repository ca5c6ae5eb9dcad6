//! What the server task, its [`AuthServer`](super::AuthServer) handles and
//! resource servers share: the client credentials and, behind one mutex, the
//! token ledger, the queued faults and the [`AuthStats`] counters.

use std::{
    collections::HashMap,
    fmt,
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use tokio::time::Instant;

use super::{
    AuthConfig, MetadataDocuments, Registration, TokenExchange,
    clients::{Assertion, Registry},
    dpop::{Nonce, NonceState},
    exchange::Exchanged,
    faults::FaultQueues,
    tokens::{Grant, Refusal, Tokens},
};
use crate::{dpop::Proof, resource::ResourceMetadata};

// Every change below happens under the one lock, so whoever takes it sees:
//
//  1. `stats.refresh_grants` counts the refresh grants the ledger served,
//     `stats.grace_reuses` those of them that took a rotated token within
//     its grace (so `grace_reuses <= refresh_grants`),
//     `stats.invalid_grant` those it refused, and `stats.reuse_detected`
//     those refused because the token was already rotated (so
//     `reuse_detected <= invalid_grant`). Injected faults count in neither.
//  2. A fault counts in `faults_served` as it leaves its queue: a request a
//     fault holds is counted before it is answered.
//  3. The client id and secret never change once the server has started.
//  4. `stats.abandoned_completed` counts a request after its grant is
//     counted (a later lock): whoever sees it counted sees the grant too.
//  5. The log only grows: what a test read from it stays true.

/// State shared by the server task, its handles and resource servers.
pub(crate) struct AuthShared {
    pub(super) client_id: String,
    pub(super) client_secret: String,
    pub(super) metadata: MetadataDocuments,
    pub(super) issuer_path: String,
    pub(super) finish_abandoned: bool,
    /// Token requests without a DPoP proof are refused.
    pub(crate) dpop_required: bool,
    /// What each resource server's nonce starts as.
    pub(crate) resource_nonce: Nonce,
    /// The protected resource metadata resource servers serve, if any.
    pub(crate) resource_metadata: Option<ResourceMetadata>,
    /// The scope resource servers require of a token, if any.
    pub(crate) resource_scope: Option<String>,
    /// The metadata documents' `scopes_supported`, if any.
    pub(super) scopes_supported: Option<Vec<String>>,
    /// `authorization_pending` answers before a device authorization is
    /// approved.
    pub(super) device_pending: usize,
    /// The device flow's polling `interval`.
    pub(super) device_interval: Duration,
    /// Dynamic client registration, if on.
    pub(super) registration: Option<Registration>,
    /// Token exchange, if on.
    pub(super) token_exchange: Option<TokenExchange>,
    state: Mutex<AuthState>,
}

/// Everything that changes, under [`AuthShared`]'s lock.
pub(crate) struct AuthState {
    pub(crate) tokens: Tokens,
    pub(super) faults: FaultQueues,
    pub(super) stats: AuthStats,
    pub(super) registry: Registry,
    pub(super) token_nonce: NonceState,
    pub(super) log: AuthLog,
    /// What each access token issued by token exchange was issued for.
    pub(super) exchanged: HashMap<String, Exchanged>,
}

/// What an [`AuthServer`](super::AuthServer) was shown, in order: the
/// record beside the [`AuthStats`] counters, read with
/// [`AuthServer::log`](super::AuthServer::log).
///
/// `Debug` shows how many refresh tokens were presented, not which.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct AuthLog {
    /// The `refresh_token` of every token request that got past the faults
    /// queued for it, whatever came of it.
    pub refresh_tokens_presented: Vec<String>,
    /// Every DPoP proof the token endpoint accepted (past the nonce).
    pub token_proofs: Vec<Proof>,
    /// Every DPoP nonce the token endpoint handed out, challenges and
    /// rotations.
    pub token_nonces: Vec<String>,
    /// Every signed assertion accepted, client assertions and JWT bearer
    /// grants.
    pub assertions: Vec<Assertion>,
    /// Every authorization request that issued a code.
    pub authorization_requests: Vec<AuthorizationRequest>,
    /// Every request the server was sent, as `"POST /token"` (its method
    /// and path, no query), unknown paths included.
    pub requests: Vec<String>,
    /// Every token request's form and `Authorization` header, once past
    /// the faults queued for it and readable as a form.
    pub token_requests: Vec<TokenRequest>,
    /// The client metadata of every dynamic registration (RFC 7591) that
    /// registered a client, as it was sent.
    pub registrations: Vec<serde_json::Value>,
}

impl fmt::Debug for AuthLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLog")
            .field(
                "refresh_tokens_presented",
                &self.refresh_tokens_presented.len(),
            )
            .field("token_proofs", &self.token_proofs)
            .field("token_nonces", &self.token_nonces)
            .field("assertions", &self.assertions)
            .field("authorization_requests", &self.authorization_requests)
            .field("registrations", &self.registrations)
            .field("requests", &self.requests)
            .field("token_requests", &self.token_requests.len())
            .finish()
    }
}

/// A token request as the token endpoint read it, in
/// [`AuthLog::token_requests`].
///
/// `Debug` shows the parameters' names, not their values.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenRequest {
    /// Its form parameters, decoded.
    pub params: std::collections::HashMap<String, String>,
    /// Its `Authorization` header, if it had one.
    pub authorization: Option<String>,
}

impl TokenRequest {
    /// The parameter `name`, or `""`.
    pub fn get(&self, name: &str) -> &str {
        self.params.get(name).map_or("", String::as_str)
    }
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.params.keys().collect();
        names.sort();
        f.debug_struct("TokenRequest")
            .field("params", &names)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// An authorization request (RFC 6749 §4.1.1) as the server took it, and
/// the code it issued.
///
/// `Debug` redacts the code.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthorizationRequest {
    /// Its query parameters, decoded.
    pub params: std::collections::HashMap<String, String>,
    /// The authorization code issued.
    pub code: String,
    /// Where the browser is sent back: the `redirect_uri` with `code`,
    /// `state` (if the request had one) and `iss` (RFC 9207).
    pub redirect: String,
}

impl AuthorizationRequest {
    /// The parameter `name`, or `""`.
    pub fn get(&self, name: &str) -> &str {
        self.params.get(name).map_or("", String::as_str)
    }
}

impl fmt::Debug for AuthorizationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationRequest")
            .field("params", &self.params)
            .field("code", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// What an [`AuthServer`](super::AuthServer)'s token endpoint has seen so
/// far, counted. What it was shown, in order, is its [`AuthLog`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthStats {
    /// Every `POST /token`, including those answered with a fault.
    pub token_requests: u64,
    /// `refresh_token` grants that issued tokens.
    pub refresh_grants: u64,
    /// `client_credentials` grants that issued a token.
    pub client_credentials_grants: u64,
    /// `authorization_code` grants that issued tokens.
    pub authorization_code_grants: u64,
    /// `urn:ietf:params:oauth:grant-type:device_code` grants that issued
    /// tokens.
    pub device_code_grants: u64,
    /// Device polls answered `authorization_pending`.
    pub authorization_pending: u64,
    /// JWT bearer grants (RFC 7523 §2.1) that issued a token.
    pub jwt_bearer_grants: u64,
    /// Grants refused with `invalid_grant` by the server's own judgement
    /// (an unknown, revoked, reused or wrongly bound refresh token; a bad
    /// code or verifier; a refused grant assertion), not by an injected
    /// fault.
    pub invalid_grant: u64,
    /// Refresh grants that presented an already-rotated refresh token, which
    /// revoked that grant family (also counted in `invalid_grant`).
    pub reuse_detected: u64,
    /// Refresh grants that presented an already-rotated refresh token within
    /// its [reuse grace](super::AuthConfig::reuse_grace) and were served
    /// (also counted in `refresh_grants`).
    pub grace_reuses: u64,
    /// Token requests whose client hung up while a `Delay` or `Hold` kept
    /// them, carried out all the same because of
    /// [`finish_abandoned`](super::AuthConfig::finish_abandoned) (also
    /// counted as what they were: `refresh_grants`, `invalid_grant`, …).
    pub abandoned_completed: u64,
    /// Requests answered with an injected [`Fault`](super::Fault) (a `Delay`
    /// counts too).
    pub faults_served: u64,
    /// Requests refused with `invalid_client`.
    pub invalid_client: u64,
    /// Token requests refused with `invalid_dpop_proof`: no proof where one
    /// is required, or one that does not verify, is not for the request, or
    /// was seen before.
    pub invalid_dpop_proof: u64,
    /// Token requests refused with `use_dpop_nonce`.
    pub dpop_nonce_challenges: u64,
    /// Every `POST /device_authorization`, faults included.
    pub device_authorizations: u64,
    /// Every `POST /introspect` (RFC 7662), faults included.
    pub introspections: u64,
    /// Every `POST /revoke` (RFC 7009), faults included.
    pub revocation_requests: u64,
    /// Revocation requests that revoked a known, still-valid token.
    pub tokens_revoked: u64,
    /// Every `POST /register` (RFC 7591), faults included.
    pub registrations: u64,
    /// Token exchange grants (RFC 8693) that issued a token.
    pub token_exchanges: u64,
}

impl AuthShared {
    pub(super) fn new(config: AuthConfig) -> Self {
        AuthShared {
            client_id: config.client_id,
            client_secret: config.client_secret,
            metadata: config.metadata,
            issuer_path: config.issuer_path,
            finish_abandoned: config.finish_abandoned,
            dpop_required: config.dpop_required,
            resource_nonce: config.resource_nonce,
            resource_metadata: config.resource_metadata,
            resource_scope: config.resource_scope,
            scopes_supported: config.scopes_supported,
            device_pending: config.device_pending,
            device_interval: config.device_interval,
            registration: config.registration,
            token_exchange: config.token_exchange,
            state: Mutex::new(AuthState {
                tokens: Tokens::new(config.access_lifetime, config.rotation)
                    .with_reuse_grace(config.reuse_grace),
                faults: FaultQueues::default(),
                stats: AuthStats::default(),
                registry: config.registry,
                token_nonce: NonceState::new(config.token_nonce),
                log: AuthLog::default(),
                exchanged: HashMap::new(),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, AuthState> {
        // Nothing holding the lock can leave the state half-updated in a way
        // that matters to a test server.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_access_token_valid(&self, token: &str) -> bool {
        let now = Instant::now();
        self.lock().tokens.access_expiry(token, now).is_some()
    }
}

impl AuthState {
    /// A refresh grant as the token endpoint serves it, with a DPoP proof
    /// of key `jkt` if any: the ledger decides, the stats count the outcome.
    pub(super) fn refresh_grant(
        &mut self,
        presented: &str,
        jkt: Option<&str>,
    ) -> Result<Grant, Refusal> {
        let outcome = self.tokens.refresh_grant(presented, jkt, Instant::now());
        match &outcome {
            Ok(grant) => {
                self.stats.refresh_grants += 1;
                if grant.by_grace {
                    self.stats.grace_reuses += 1;
                }
            }
            Err(refusal) => {
                self.stats.invalid_grant += 1;
                if *refusal == Refusal::Reused {
                    self.stats.reuse_detected += 1;
                }
            }
        }
        outcome
    }

    /// Counts a grant's refusal: `authorization_pending` or `invalid_grant`.
    pub(super) fn count_refusal(&mut self, refusal: Refusal) {
        if refusal == Refusal::Pending {
            self.stats.authorization_pending += 1;
        } else {
            self.stats.invalid_grant += 1;
        }
    }
}
