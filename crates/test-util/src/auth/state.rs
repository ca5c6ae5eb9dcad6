//! What the server task, its [`AuthServer`](super::AuthServer) handles and
//! resource servers share: the client credentials and, behind one mutex, the
//! token ledger, the queued faults and the [`AuthStats`] counters.

use std::sync::{Mutex, MutexGuard};

use tokio::time::Instant;

use super::{
    AuthConfig, MetadataDocuments,
    faults::FaultQueues,
    tokens::{Grant, Refusal, Tokens},
};

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

/// State shared by the server task, its handles and resource servers.
pub(crate) struct AuthShared {
    pub(super) client_id: String,
    pub(super) client_secret: String,
    pub(super) metadata: MetadataDocuments,
    pub(super) issuer_path: String,
    pub(super) finish_abandoned: bool,
    state: Mutex<AuthState>,
}

/// Everything that changes, under [`AuthShared`]'s lock.
pub(super) struct AuthState {
    pub(super) tokens: Tokens,
    pub(super) faults: FaultQueues,
    pub(super) stats: AuthStats,
}

/// What an [`AuthServer`](super::AuthServer)'s token endpoint has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthStats {
    /// Every `POST /token`, including those answered with a fault.
    pub token_requests: u64,
    /// `refresh_token` grants that issued tokens.
    pub refresh_grants: u64,
    /// `client_credentials` grants that issued a token.
    pub client_credentials_grants: u64,
    /// Refresh grants refused with `invalid_grant` by the server's own
    /// judgement (unknown, revoked or reused token), not by an injected fault.
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
    /// Every `POST /introspect` (RFC 7662), faults included.
    pub introspections: u64,
    /// Every `POST /revoke` (RFC 7009), faults included.
    pub revocation_requests: u64,
    /// Revocation requests that revoked a known, still-valid token.
    pub tokens_revoked: u64,
}

impl AuthShared {
    pub(super) fn new(config: AuthConfig) -> Self {
        AuthShared {
            client_id: config.client_id,
            client_secret: config.client_secret,
            metadata: config.metadata,
            issuer_path: config.issuer_path,
            finish_abandoned: config.finish_abandoned,
            state: Mutex::new(AuthState {
                tokens: Tokens::new(config.access_lifetime, config.rotation)
                    .with_reuse_grace(config.reuse_grace),
                faults: FaultQueues::default(),
                stats: AuthStats::default(),
            }),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, AuthState> {
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
    /// A refresh grant as the token endpoint serves it: the ledger decides,
    /// the stats count the outcome.
    pub(super) fn refresh_grant(&mut self, presented: &str) -> Result<Grant, Refusal> {
        let outcome = self.tokens.refresh_grant(presented, Instant::now());
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

    /// A client credentials grant as the token endpoint serves it, counted.
    pub(super) fn client_credentials_grant(&mut self) -> Grant {
        self.stats.client_credentials_grants += 1;
        self.tokens.client_credentials_grant()
    }
}
