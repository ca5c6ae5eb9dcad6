//! The token ledger: every access and refresh token the server has minted,
//! the grant family each belongs to, and what has become of it. Grants,
//! refresh token rotation, reuse detection and revocation are decided here;
//! counting them in [`AuthStats`](super::AuthStats) is left to the caller
//! (`state`), so that [`AuthServer::login`](super::AuthServer::login) and
//! administrative revocation count nothing.

use std::{
    collections::HashMap,
    fmt,
    hash::{BuildHasher, RandomState},
    time::Duration,
};

use tokio::time::Instant;
use tower_token_refresh_core::TokenSet;

// The ledger keeps these rules, whatever the order of calls:
//
//  1. A refresh token goes from `Active` to `Rotated` (a grant served it,
//     with rotation on) or to `Revoked`, and never back: with rotation on,
//     a refresh token is served at most once, or twice with a reuse grace.
//  2. Presenting a `Rotated` refresh token is reuse: it revokes the whole
//     grant family (every refresh token and access token of it) and is
//     refused as `Refusal::Reused`. The one exception is a reuse grace: the
//     first presentation less than `reuse_grace` after the rotation, while
//     the successor is still `Active`, is served as a new rotation, which
//     revokes that successor alone (it was never used, so whoever holds it
//     lost nothing it had spent).
//  3. An access token is valid while it is not revoked and tokio's clock
//     is before its `expires_at`; `expires_at` only ever moves earlier.
//  4. Minted tokens are unique (a counter) and safe in a header value.
//  5. A `client_credentials` access token belongs to no family: only
//     revoking that token itself revokes it.

/// All tokens minted so far, and the settings new ones are minted with.
pub(super) struct Tokens {
    access_lifetime: Duration,
    rotation: bool,
    reuse_grace: Option<Duration>,
    seed: u64,
    minted: u64,
    families: u64,
    access: HashMap<String, AccessEntry>,
    refresh: HashMap<String, RefreshEntry>,
}

struct AccessEntry {
    family: Option<u64>,
    expires_at: Instant,
    revoked: bool,
}

struct RefreshEntry {
    family: u64,
    status: RefreshStatus,
    /// The refresh token issued when this one was last rotated.
    successor: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RefreshStatus {
    Active,
    /// Rotated away at `at`; `grace_used` once presented again within the
    /// reuse grace.
    Rotated {
        at: Instant,
        grace_used: bool,
    },
    Revoked,
}

/// What a successful grant issued.
pub(super) struct Grant {
    pub(super) access_token: String,
    pub(super) lifetime: Duration,
    pub(super) refresh_token: Option<String>,
    /// Served to a rotated refresh token within its reuse grace.
    pub(super) by_grace: bool,
}

/// Why a refresh grant was refused (`invalid_grant`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The ledger never minted this refresh token.
    Unknown,
    /// Its family was revoked.
    Revoked,
    /// It was already rotated; its family is now revoked.
    Reused,
}

impl Refusal {
    /// The `error_description` sent with `invalid_grant`.
    pub(super) fn description(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown refresh token",
            Refusal::Revoked => "refresh token revoked",
            Refusal::Reused => "refresh token reused; grant revoked",
        }
    }
}

/// Tokens as a user login would hand them to the application.
///
/// `Debug` redacts both tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedTokens {
    /// The access token.
    pub access_token: String,
    /// The refresh token of a new grant family.
    pub refresh_token: String,
    /// The access token's lifetime.
    pub expires_in: Duration,
}

impl IssuedTokens {
    /// The same tokens as a core [`TokenSet`] (bearer, expiring `expires_in`
    /// from now on tokio's clock), ready to seed a token manager.
    pub fn token_set(&self) -> TokenSet {
        TokenSet::bearer(self.access_token.clone())
            .with_expires_in(self.expires_in)
            .with_refresh_token(self.refresh_token.clone())
    }
}

impl fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

impl Tokens {
    /// An empty ledger with a fresh random seed.
    pub(super) fn new(access_lifetime: Duration, rotation: bool) -> Self {
        Tokens {
            access_lifetime,
            rotation,
            reuse_grace: None,
            seed: RandomState::new().hash_one(0x746f6b656e_u64),
            minted: 0,
            families: 0,
            access: HashMap::new(),
            refresh: HashMap::new(),
        }
    }

    /// Accepts a rotated refresh token once more within `grace` of its
    /// rotation (`None`: never).
    pub(super) fn with_reuse_grace(mut self, grace: Option<Duration>) -> Self {
        self.reuse_grace = grace;
        self
    }

    /// Sets the lifetime of access tokens issued from now on.
    pub(super) fn set_access_lifetime(&mut self, lifetime: Duration) {
        self.access_lifetime = lifetime;
    }

    /// An unguessable-enough token: a counter (unique) and a mix of it with a
    /// per-server random seed.
    fn mint(&mut self, prefix: &str) -> String {
        self.minted += 1;
        let n = self.minted;
        format!("{prefix}_{n}_{:016x}", splitmix64(self.seed ^ n))
    }

    fn issue_access(&mut self, family: Option<u64>) -> (String, Duration) {
        let token = self.mint("at");
        let lifetime = self.access_lifetime;
        self.access.insert(
            token.clone(),
            AccessEntry {
                family,
                expires_at: Instant::now() + lifetime,
                revoked: false,
            },
        );
        (token, lifetime)
    }

    fn issue_refresh(&mut self, family: u64) -> String {
        let token = self.mint("rt");
        self.refresh.insert(
            token.clone(),
            RefreshEntry {
                family,
                status: RefreshStatus::Active,
                successor: None,
            },
        );
        token
    }

    /// Tokens of a new grant family, as a user login would mint them.
    pub(super) fn login(&mut self) -> IssuedTokens {
        self.families += 1;
        let family = self.families;
        let (access_token, expires_in) = self.issue_access(Some(family));
        let refresh_token = self.issue_refresh(family);
        IssuedTokens {
            access_token,
            refresh_token,
            expires_in,
        }
    }

    /// A `refresh_token` grant at `now`: a new access token of the same
    /// family and, with rotation on, a new refresh token that replaces
    /// `presented`.
    pub(super) fn refresh_grant(
        &mut self,
        presented: &str,
        now: Instant,
    ) -> Result<Grant, Refusal> {
        let (family, status) = match self.refresh.get(presented) {
            Some(entry) => (entry.family, entry.status),
            None => return Err(Refusal::Unknown),
        };
        let by_grace = match status {
            RefreshStatus::Active => false,
            RefreshStatus::Revoked => return Err(Refusal::Revoked),
            RefreshStatus::Rotated { at, grace_used } => {
                if grace_used || !self.within_grace(at, now) || !self.successor_unused(presented) {
                    self.revoke_family(family);
                    return Err(Refusal::Reused);
                }
                true
            }
        };
        let refresh_token = if self.rotation {
            let successor = self.issue_refresh(family);
            // A grace reuse keeps the time of the first rotation: the grace
            // does not start over.
            let at = match status {
                RefreshStatus::Rotated { at, .. } => at,
                _ => now,
            };
            if let Some(entry) = self.refresh.get_mut(presented) {
                entry.status = RefreshStatus::Rotated {
                    at,
                    grace_used: by_grace,
                };
                let replaced = entry.successor.replace(successor.clone());
                if let Some(replaced) = replaced.and_then(|r| self.refresh.get_mut(&r)) {
                    replaced.status = RefreshStatus::Revoked;
                }
            }
            Some(successor)
        } else {
            None
        };
        let (access_token, lifetime) = self.issue_access(Some(family));
        Ok(Grant {
            access_token,
            lifetime,
            refresh_token,
            by_grace,
        })
    }

    /// Whether a refresh token rotated at `at` is still within the reuse
    /// grace at `now`.
    fn within_grace(&self, at: Instant, now: Instant) -> bool {
        self.reuse_grace
            .is_some_and(|grace| now.saturating_duration_since(at) < grace)
    }

    /// Whether the refresh token that replaced `token` has not been used.
    fn successor_unused(&self, token: &str) -> bool {
        self.refresh
            .get(token)
            .and_then(|entry| entry.successor.as_deref())
            .is_some_and(|successor| self.is_refresh_active(successor))
    }

    /// A `client_credentials` grant: an access token of no family.
    pub(super) fn client_credentials_grant(&mut self) -> Grant {
        let (access_token, lifetime) = self.issue_access(None);
        Grant {
            access_token,
            lifetime,
            refresh_token: None,
            by_grace: false,
        }
    }

    /// RFC 7009 §2.1: revoking a refresh token revokes its grant (access
    /// tokens included); revoking an access token revokes only it. Returns
    /// whether a valid token was revoked.
    pub(super) fn revoke(&mut self, token: &str) -> bool {
        if let Some(entry) = self.refresh.get(token) {
            let (family, active) = (entry.family, entry.status == RefreshStatus::Active);
            self.revoke_family(family);
            return active;
        }
        if let Some(entry) = self.access.get_mut(token) {
            let was_valid = !entry.revoked && Instant::now() < entry.expires_at;
            entry.revoked = true;
            return was_valid;
        }
        false
    }

    fn revoke_family(&mut self, family: u64) {
        for entry in self.refresh.values_mut() {
            if entry.family == family {
                entry.status = RefreshStatus::Revoked;
            }
        }
        for entry in self.access.values_mut() {
            if entry.family == Some(family) {
                entry.revoked = true;
            }
        }
    }

    /// Makes every access token issued so far expire at `now` at the latest.
    pub(super) fn expire_access_tokens(&mut self, now: Instant) {
        for entry in self.access.values_mut() {
            entry.expires_at = entry.expires_at.min(now);
        }
    }

    /// When `token` expires, if it is an access token valid at `now`.
    pub(super) fn access_expiry(&self, token: &str, now: Instant) -> Option<Instant> {
        self.access
            .get(token)
            .filter(|entry| !entry.revoked && now < entry.expires_at)
            .map(|entry| entry.expires_at)
    }

    /// Whether a refresh grant would accept `token`.
    pub(super) fn is_refresh_active(&self, token: &str) -> bool {
        self.refresh
            .get(token)
            .is_some_and(|entry| entry.status == RefreshStatus::Active)
    }
}

/// splitmix64's output function: a cheap, well-mixed 64-bit permutation.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn minted_tokens_are_unique_and_header_safe() {
        let mut tokens = Tokens::new(Duration::from_secs(2), true);
        let a = tokens.mint("at");
        let b = tokens.mint("at");
        assert_ne!(a, b);
        assert!(
            a.starts_with("at_1_") && a.len() == "at_1_".len() + 16,
            "{a}"
        );
        assert!(HeaderValue::from_str(&format!("Bearer {a}")).is_ok());
    }
}
