//! The token ledger: every access and refresh token the server has minted,
//! the grant family each belongs to, and what has become of it. Grants,
//! refresh token rotation, reuse detection and revocation are decided here;
//! counting them in [`AuthStats`](super::AuthStats) is left to the caller
//! (`state`), so that [`AuthServer::login`](super::AuthServer::login) and
//! administrative revocation count nothing.

use std::{
    collections::{HashMap, HashSet},
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
//  6. A token minted for a DPoP proof is bound to that proof's key (`jkt`)
//     for life: a refresh token bound to a key is served only to a proof
//     of that key, and what it issues is bound to the same key.
//  7. An authorization code and a device code issue tokens at most once;
//     an assertion `jti` is accepted at most once.

/// All tokens minted so far, and the settings new ones are minted with.
pub(crate) struct Tokens {
    access_lifetime: Duration,
    rotation: bool,
    reuse_grace: Option<Duration>,
    seed: u64,
    minted: u64,
    families: u64,
    access: HashMap<String, AccessEntry>,
    refresh: HashMap<String, RefreshEntry>,
    codes: HashMap<String, CodeEntry>,
    devices: HashMap<String, DeviceEntry>,
    jtis: HashSet<String>,
    /// The scope each grant family was authorized for, if the request
    /// named one.
    scopes: HashMap<u64, String>,
    /// ID-JAGs issued by token exchange and not yet presented.
    jags: HashSet<String>,
}

struct AccessEntry {
    family: Option<u64>,
    expires_at: Instant,
    revoked: bool,
    /// The thumbprint of the DPoP key it is bound to, if any.
    jkt: Option<String>,
}

struct RefreshEntry {
    family: u64,
    status: RefreshStatus,
    jkt: Option<String>,
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

/// An authorization code issued at the authorization endpoint, waiting to
/// be exchanged.
struct CodeEntry {
    client_id: String,
    redirect_uri: String,
    /// The S256 `code_challenge`, if the request had one.
    challenge: Option<String>,
    /// The `scope` the authorization request asked for.
    scope: Option<String>,
    used: bool,
}

/// A device authorization waiting for its user (RFC 8628).
struct DeviceEntry {
    client_id: String,
    /// `authorization_pending` answers still to give.
    pending: usize,
    used: bool,
}

/// What a successful grant issued.
pub(super) struct Grant {
    pub(super) access_token: String,
    pub(super) lifetime: Duration,
    pub(super) refresh_token: Option<String>,
    /// Served to a rotated refresh token within its reuse grace.
    pub(super) by_grace: bool,
    /// The DPoP key thumbprint the tokens are bound to: `token_type` DPoP.
    pub(super) jkt: Option<String>,
}

/// Why a grant was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The ledger never minted this refresh token.
    Unknown,
    /// Its family was revoked.
    Revoked,
    /// It was already rotated; its family is now revoked.
    Reused,
    /// It is bound to another DPoP key, or to one and presented without a
    /// proof (RFC 9449 §5).
    WrongKey,
    /// An authorization or device code never issued, or already used.
    BadCode,
    /// The code was issued to another client or redirect URI.
    CodeMismatch,
    /// The PKCE verifier does not match the code's challenge (RFC 7636 §4.6).
    BadVerifier,
    /// The device's user has not approved yet (RFC 8628 §3.5).
    Pending,
}

impl Refusal {
    /// The `error` code sent.
    pub(super) fn code(self) -> &'static str {
        match self {
            Refusal::Pending => "authorization_pending",
            _ => "invalid_grant",
        }
    }

    /// The `error_description` sent.
    pub(super) fn description(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown refresh token",
            Refusal::Revoked => "refresh token revoked",
            Refusal::Reused => "refresh token reused; grant revoked",
            Refusal::WrongKey => "the token is bound to another DPoP key",
            Refusal::BadCode => "unknown or used code",
            Refusal::CodeMismatch => "the code was issued to another client or redirect URI",
            Refusal::BadVerifier => "the code_verifier does not match the code_challenge",
            Refusal::Pending => "the user has not approved yet",
        }
    }
}

/// Tokens as a user login would hand them to the application.
///
/// `Debug` redacts both tokens.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IssuedTokens {
    /// The access token.
    pub access_token: String,
    /// The refresh token of a new grant family.
    pub refresh_token: String,
    /// The access token's lifetime.
    pub expires_in: Duration,
    /// The thumbprint of the DPoP key both are bound to
    /// ([`AuthServer::login_dpop`](super::AuthServer::login_dpop)); `None`:
    /// bearer tokens.
    pub dpop_jkt: Option<String>,
}

impl IssuedTokens {
    /// The same tokens as a core [`TokenSet`] (bearer, or `DPoP` when
    /// bound to a key; expiring `expires_in` from now on tokio's clock),
    /// ready to seed a token manager.
    pub fn token_set(&self) -> TokenSet {
        let set = TokenSet::bearer(self.access_token.clone())
            .with_expires_in(self.expires_in)
            .with_refresh_token(self.refresh_token.clone());
        match self.dpop_jkt {
            Some(_) => set.with_token_type("DPoP"),
            None => set,
        }
    }
}

impl fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("dpop_jkt", &self.dpop_jkt)
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
            codes: HashMap::new(),
            devices: HashMap::new(),
            jtis: HashSet::new(),
            scopes: HashMap::new(),
            jags: HashSet::new(),
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

    /// A new ID-JAG, good for one JWT bearer grant.
    pub(super) fn issue_jag(&mut self) -> String {
        let jag = self.mint("jag");
        self.jags.insert(jag.clone());
        jag
    }

    /// Spends an ID-JAG this ledger issued: `false` if it did not, or it
    /// was presented before.
    pub(super) fn spend_jag(&mut self, jag: &str) -> bool {
        self.jags.remove(jag)
    }

    /// Whether an ID-JAG was issued and not yet presented.
    pub(super) fn has_live_jags(&self) -> bool {
        !self.jags.is_empty()
    }

    /// A new client's id and secret, for dynamic registration.
    pub(super) fn mint_client(&mut self) -> (String, String) {
        (self.mint("client"), self.mint("secret"))
    }

    fn issue_access(&mut self, family: Option<u64>, jkt: Option<&str>) -> (String, Duration) {
        let token = self.mint("at");
        let lifetime = self.access_lifetime;
        self.access.insert(
            token.clone(),
            AccessEntry {
                family,
                expires_at: Instant::now() + lifetime,
                revoked: false,
                jkt: jkt.map(str::to_owned),
            },
        );
        (token, lifetime)
    }

    fn issue_refresh(&mut self, family: u64, jkt: Option<&str>) -> String {
        let token = self.mint("rt");
        self.refresh.insert(
            token.clone(),
            RefreshEntry {
                family,
                status: RefreshStatus::Active,
                jkt: jkt.map(str::to_owned),
                successor: None,
            },
        );
        token
    }

    /// Tokens of a new grant family, as a user login would mint them,
    /// bound to the DPoP key of thumbprint `jkt` if any.
    pub(super) fn login(&mut self, jkt: Option<&str>) -> IssuedTokens {
        let grant = self.new_family(jkt);
        IssuedTokens {
            access_token: grant.access_token,
            refresh_token: grant.refresh_token.unwrap_or_default(),
            expires_in: grant.lifetime,
            dpop_jkt: grant.jkt,
        }
    }

    /// An access token and a refresh token of a new grant family.
    fn new_family(&mut self, jkt: Option<&str>) -> Grant {
        self.families += 1;
        let family = self.families;
        let (access_token, lifetime) = self.issue_access(Some(family), jkt);
        let refresh_token = self.issue_refresh(family, jkt);
        Grant {
            access_token,
            lifetime,
            refresh_token: Some(refresh_token),
            by_grace: false,
            jkt: jkt.map(str::to_owned),
        }
    }

    /// A `refresh_token` grant at `now`, with a DPoP proof of key `jkt` if
    /// any: a new access token of the same family and, with rotation on, a
    /// new refresh token that replaces `presented`.
    pub(super) fn refresh_grant(
        &mut self,
        presented: &str,
        jkt: Option<&str>,
        now: Instant,
    ) -> Result<Grant, Refusal> {
        let (family, status, bound) = match self.refresh.get(presented) {
            Some(entry) => (entry.family, entry.status, entry.jkt.clone()),
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
        if bound.is_some() && bound.as_deref() != jkt {
            return Err(Refusal::WrongKey);
        }
        // What a bound refresh token issues stays bound to its key; an
        // unbound one's access tokens are bound to the proof's, if any.
        let jkt = bound.as_deref().or(jkt);
        let refresh_token = if self.rotation {
            let successor = self.issue_refresh(family, bound.as_deref());
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
        let (access_token, lifetime) = self.issue_access(Some(family), jkt);
        Ok(Grant {
            access_token,
            lifetime,
            refresh_token,
            by_grace,
            jkt: jkt.map(str::to_owned),
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

    /// An access token of no family, for a grant that issues no refresh
    /// token (`client_credentials`, the JWT bearer grant).
    pub(super) fn access_only(&mut self, jkt: Option<&str>) -> Grant {
        let (access_token, lifetime) = self.issue_access(None, jkt);
        Grant {
            access_token,
            lifetime,
            refresh_token: None,
            by_grace: false,
            jkt: jkt.map(str::to_owned),
        }
    }

    /// An authorization code for `client_id`, to be exchanged with the same
    /// `redirect_uri` (and the verifier of `challenge`, if any), granting
    /// `scope`.
    pub(super) fn issue_code(
        &mut self,
        client_id: &str,
        redirect_uri: &str,
        challenge: Option<&str>,
        scope: Option<&str>,
    ) -> String {
        let code = self.mint("code");
        self.codes.insert(
            code.clone(),
            CodeEntry {
                client_id: client_id.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                challenge: challenge.map(str::to_owned),
                scope: scope.map(str::to_owned),
                used: false,
            },
        );
        code
    }

    /// An `authorization_code` grant (RFC 6749 §4.1.3, PKCE as RFC 7636
    /// §4.6): tokens of a new family, once per code.
    pub(super) fn code_grant(
        &mut self,
        code: &str,
        client_id: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
        jkt: Option<&str>,
    ) -> Result<Grant, Refusal> {
        let entry = self
            .codes
            .get_mut(code)
            .filter(|entry| !entry.used)
            .ok_or(Refusal::BadCode)?;
        if entry.client_id != client_id || redirect_uri != Some(entry.redirect_uri.as_str()) {
            return Err(Refusal::CodeMismatch);
        }
        let verified = match (&entry.challenge, verifier) {
            (None, None) => true,
            (Some(challenge), Some(verifier)) => *challenge == pkce_challenge(verifier),
            _ => false,
        };
        if !verified {
            return Err(Refusal::BadVerifier);
        }
        entry.used = true;
        let scope = entry.scope.clone();
        let grant = self.new_family(jkt);
        if let Some(scope) = scope {
            // `new_family` numbered the family it made `self.families`.
            self.scopes.insert(self.families, scope);
        }
        Ok(grant)
    }

    /// A device authorization for `client_id` whose user approves after
    /// `pending` polls: its device code and user code.
    pub(super) fn issue_device(&mut self, client_id: &str, pending: usize) -> (String, String) {
        let device_code = self.mint("dc");
        let user_code = format!(
            "{:04X}-{:04X}",
            self.minted % 0x1_0000,
            self.seed % 0x1_0000
        );
        self.devices.insert(
            device_code.clone(),
            DeviceEntry {
                client_id: client_id.to_owned(),
                pending,
                used: false,
            },
        );
        (device_code, user_code)
    }

    /// A `device_code` grant poll (RFC 8628 §3.4): `Pending` until the user
    /// approves, then tokens of a new family, once.
    pub(super) fn device_grant(
        &mut self,
        device_code: &str,
        client_id: &str,
        jkt: Option<&str>,
    ) -> Result<Grant, Refusal> {
        let entry = self
            .devices
            .get_mut(device_code)
            .filter(|entry| !entry.used)
            .ok_or(Refusal::BadCode)?;
        if entry.client_id != client_id {
            return Err(Refusal::CodeMismatch);
        }
        if entry.pending > 0 {
            entry.pending -= 1;
            return Err(Refusal::Pending);
        }
        entry.used = true;
        Ok(self.new_family(jkt))
    }

    /// Records an assertion's or a proof's `jti`: `false` if it was seen
    /// before (a replay).
    pub(super) fn spend_jti(&mut self, jti: &str) -> bool {
        self.jtis.insert(jti.to_owned())
    }

    /// The scope `token` (an access token) was granted: its family's, as
    /// the authorization request asked.
    pub(crate) fn access_scope(&self, token: &str) -> Option<&str> {
        let family = self.access.get(token)?.family?;
        self.scopes.get(&family).map(String::as_str)
    }

    /// The grant family `token` (an access token) belongs to.
    pub(crate) fn access_family(&self, token: &str) -> Option<u64> {
        self.access.get(token)?.family
    }

    /// The DPoP key thumbprint `token` (an access token) is bound to.
    pub(crate) fn access_jkt(&self, token: &str) -> Option<&str> {
        self.access.get(token)?.jkt.as_deref()
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

/// The S256 `code_challenge` of a PKCE `verifier` (RFC 7636 §4.2).
pub(super) fn pkce_challenge(verifier: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
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

    #[test]
    fn a_code_issues_tokens_once_and_only_with_its_verifier() {
        let mut tokens = Tokens::new(Duration::from_secs(2), true);
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = pkce_challenge(verifier);
        assert_eq!(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        let code = tokens.issue_code("cli", "http://127.0.0.1/cb", Some(&challenge), None);
        let grant = |tokens: &mut Tokens, verifier| {
            tokens
                .code_grant(
                    &code,
                    "cli",
                    Some("http://127.0.0.1/cb"),
                    Some(verifier),
                    None,
                )
                .map(|grant| grant.access_token)
        };
        assert_eq!(
            grant(&mut tokens, "another").err(),
            Some(Refusal::BadVerifier)
        );
        assert!(grant(&mut tokens, verifier).is_ok());
        assert_eq!(grant(&mut tokens, verifier).err(), Some(Refusal::BadCode));
    }

    #[test]
    fn a_bound_refresh_token_is_served_only_to_its_key_and_binds_what_it_issues() {
        let mut tokens = Tokens::new(Duration::from_secs(2), true);
        let login = tokens.login(Some("jkt-a"));
        let now = Instant::now();
        let refused = tokens.refresh_grant(&login.refresh_token, Some("jkt-b"), now);
        assert_eq!(refused.err(), Some(Refusal::WrongKey));
        let refused = tokens.refresh_grant(&login.refresh_token, None, now);
        assert_eq!(refused.err(), Some(Refusal::WrongKey));
        // Refused for its key, it was not spent.
        let grant = tokens
            .refresh_grant(&login.refresh_token, Some("jkt-a"), now)
            .unwrap();
        assert_eq!(tokens.access_jkt(&grant.access_token), Some("jkt-a"));
    }
}
