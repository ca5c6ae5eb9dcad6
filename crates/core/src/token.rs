//! Token sets and their stored form.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::{AccessToken, Error, ErrorKind, RefreshToken};

/// The longest lifetime we believe from `expires_in`: ten years. Larger
/// values are clamped so that arithmetic on instants cannot overflow.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What an authorization server issued: the access token and what goes with it.
///
/// Expiry is kept on tokio's clock, so tests can pause and advance time.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_token_refresh_core::TokenSet;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let tokens = TokenSet::bearer("access-abc")
///     .with_expires_in(Duration::from_secs(3600))
///     .with_refresh_token("refresh-xyz");
/// assert_eq!(tokens.token_type(), "Bearer");
/// assert!(tokens.expires_at().is_some());
/// // Debug never shows a secret.
/// assert!(!format!("{tokens:?}").contains("access-abc"));
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSet {
    access_token: AccessToken,
    token_type: Box<str>,
    expires_at: Option<Instant>,
    refresh_token: Option<RefreshToken>,
    scope: Option<Box<str>>,
    /// The proof-of-possession key the tokens are bound to (a DPoP key,
    /// RFC 9449), as opaque PKCS#8 bytes: saved with them, since a bound
    /// refresh token is useless without it.
    bound_key: Option<BoundKey>,
    /// What the processes sharing a store know of the refresh token
    /// (see [`RefreshMark`]); travels with the set through every store.
    mark: RefreshMark,
    /// Stored fields this build does not know (written by a newer build, or
    /// one with other features): kept, and written back on every save.
    extra: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
}

/// What the processes sharing a store know of a set's refresh token. The
/// coordinator writes it under the store's refresh lock; see
/// [`TokenStore`](crate::TokenStore) for the protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum RefreshMark {
    /// Nothing is known against it.
    #[default]
    Live,
    /// A process presented it at `at_unix_ms` and no answer was recorded
    /// yet: whoever finds this under the lock knows that request may have
    /// spent it. `retried`: it was already presented once more under a
    /// reuse grace.
    Presented { at_unix_ms: u64, retried: bool },
    /// Tombstone: the session ended. The refresh token is gone from the set;
    /// only its fingerprint stays, so that a process still holding it
    /// recognises it and never presents it.
    Ended {
        fingerprint: Box<str>,
        reason: EndReason,
    },
}

/// Why a session ended, as its tombstone in the store says
/// ([`TokenSet::ended`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// The server refused the refresh token (`invalid_grant`: expired,
    /// revoked, or reused).
    InvalidGrant,
    /// A request that presented the refresh token got no answer, and the
    /// server may rotate: it may have spent the token, so nobody presents
    /// it again.
    Unanswered,
    /// The application ended the session
    /// ([`TokenManager::end_session`](crate::TokenManager::end_session)).
    Logout,
}

impl EndReason {
    fn as_str(self) -> &'static str {
        match self {
            EndReason::InvalidGrant => "invalid_grant",
            EndReason::Unanswered => "unanswered",
            EndReason::Logout => "logout",
        }
    }

    fn parse(text: &str) -> EndReason {
        match text {
            "invalid_grant" => EndReason::InvalidGrant,
            "logout" => EndReason::Logout,
            // An unknown reason from a newer build is still an end.
            _ => EndReason::Unanswered,
        }
    }
}

/// The fingerprint a tombstone keeps of a refresh token: base64url of the
/// first 16 bytes of its SHA-256. Enough to recognise it, useless to present.
pub(crate) fn fingerprint(token: &RefreshToken) -> Box<str> {
    let full = crate::crypto::sha256_b64url(token.secret().as_bytes());
    full.get(..22).unwrap_or(&full).into()
}

/// A bound key as a token set holds it: private key bytes, wiped on drop,
/// compared by value, never shown.
#[derive(Clone, PartialEq, Eq)]
struct BoundKey(Arc<Zeroizing<Vec<u8>>>);

impl fmt::Debug for BoundKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl TokenSet {
    /// A bearer access token with no known expiry and no refresh token.
    pub fn bearer(access_token: impl Into<AccessToken>) -> Self {
        TokenSet {
            access_token: access_token.into(),
            token_type: "Bearer".into(),
            expires_at: None,
            refresh_token: None,
            scope: None,
            bound_key: None,
            mark: RefreshMark::Live,
            extra: None,
        }
    }

    /// Sets the token type (`token_type`). `bearer` in any case becomes
    /// `Bearer`, `dpop` in any case `DPoP`.
    pub fn with_token_type(mut self, token_type: impl AsRef<str>) -> Self {
        self.token_type = normalize_token_type(token_type.as_ref());
        self
    }

    /// Sets the expiry to `lifetime` from now (tokio's clock), clamped to ten years.
    pub fn with_expires_in(mut self, lifetime: Duration) -> Self {
        self.expires_at = Some(Instant::now() + lifetime.min(MAX_LIFETIME));
        self
    }

    /// Sets the expiry to an instant on tokio's clock; `None` means unknown.
    pub fn with_expires_at(mut self, at: Option<Instant>) -> Self {
        self.expires_at = at;
        self
    }

    /// Sets the refresh token.
    pub fn with_refresh_token(mut self, refresh_token: impl Into<RefreshToken>) -> Self {
        self.refresh_token = Some(refresh_token.into());
        self
    }

    /// Sets or removes the refresh token.
    pub fn with_refresh_token_opt(mut self, refresh_token: Option<RefreshToken>) -> Self {
        self.refresh_token = refresh_token;
        self
    }

    /// Sets the granted scope.
    pub fn with_scope(mut self, scope: impl Into<Box<str>>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Binds the set to a proof-of-possession key: the private key's bytes
    /// (PKCS#8 for a DPoP key, RFC 9449), opaque to this crate. They are
    /// saved with the set by [`to_stored_json`](Self::to_stored_json) (field
    /// `dpop_key`, base64url), never shown in `Debug`, and wiped when the
    /// last copy of the set is dropped. The protocol crate
    /// (`tower-token-refresh-oauth2`, its `DpopKey`) writes and reads them.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_token_refresh_core::TokenSet;
    /// use zeroize::Zeroizing;
    ///
    /// let tokens = TokenSet::bearer("t").with_bound_key(Zeroizing::new(vec![1, 2, 3]));
    /// let back = TokenSet::from_stored_json(&tokens.to_stored_json()).unwrap();
    /// assert_eq!(back.bound_key(), Some(&[1u8, 2, 3][..]));
    /// ```
    pub fn with_bound_key(mut self, key: Zeroizing<Vec<u8>>) -> Self {
        self.bound_key = (!key.is_empty()).then(|| BoundKey(Arc::new(key)));
        self
    }

    /// The bytes of the key the tokens are bound to, if any
    /// ([`with_bound_key`](Self::with_bound_key)).
    pub fn bound_key(&self) -> Option<&[u8]> {
        self.bound_key.as_ref().map(|k| k.0.as_slice())
    }

    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.access_token
    }

    /// The token type: `Bearer` for bearer tokens and `DPoP` for DPoP-bound
    /// ones (RFC 9449), whatever case the server used.
    pub fn token_type(&self) -> &str {
        &self.token_type
    }

    /// When the access token expires, on tokio's clock, if known.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// The refresh token, if any.
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }

    /// The granted scope, if the server said.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// Why the session ended, when this set is a tombstone: what a store
    /// holds after a session ended anywhere (a refresh refused with
    /// `invalid_grant`, a refresh that got no answer from a rotating server,
    /// a logout). A tombstone holds no refresh token, only a fingerprint of
    /// it; its access token, if any is left, may still serve until it
    /// expires. `None` for every set a server issued.
    pub fn ended(&self) -> Option<EndReason> {
        match &self.mark {
            RefreshMark::Ended { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    pub(crate) fn mark(&self) -> &RefreshMark {
        &self.mark
    }

    pub(crate) fn with_mark(mut self, mark: RefreshMark) -> Self {
        self.mark = mark;
        self
    }

    /// This set's tombstone: the refresh token replaced by its fingerprint.
    /// A set without a refresh token keeps no fingerprint.
    pub(crate) fn tombstone(&self, reason: EndReason) -> TokenSet {
        let fingerprint = self.refresh_token.as_ref().map(fingerprint);
        let mut dead = self.clone().with_refresh_token_opt(None);
        if reason == EndReason::Logout {
            // After a logout nothing of the session is to be sent.
            dead.access_token = AccessToken::new(String::new());
            dead.expires_at = None;
        }
        dead.mark = RefreshMark::Ended {
            fingerprint: fingerprint.unwrap_or_default(),
            reason,
        };
        dead
    }

    /// Whether this set is `other`'s tombstone: it ended, and its
    /// fingerprint is that of `other`'s refresh token.
    pub(crate) fn buries(&self, other: &TokenSet) -> bool {
        match (&self.mark, other.refresh_token()) {
            (
                RefreshMark::Ended {
                    fingerprint: fp, ..
                },
                Some(token),
            ) => !fp.is_empty() && **fp == *fingerprint(token),
            _ => false,
        }
    }

    /// Keeps `from`'s unknown stored fields, if this set has none of its
    /// own: a refresh answer replaces the tokens, not what a newer build
    /// stored beside them.
    pub(crate) fn inherit_extra(mut self, from: Option<&TokenSet>) -> Self {
        if self.extra.is_none() {
            self.extra = from.and_then(|f| f.extra.clone());
        }
        self
    }
}

impl TokenSet {
    /// The set as JSON for a [`TokenStore`](crate::TokenStore) to keep: the
    /// stored form of file and distributed stores. Expiry becomes wall-clock
    /// milliseconds since the Unix epoch, so it survives a restart and can be
    /// shared between processes.
    ///
    /// The result holds the secrets in clear: write it only where they may be.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_token_refresh_core::TokenSet;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let tokens = TokenSet::bearer("a").with_refresh_token("r").with_expires_in(Duration::from_secs(60));
    /// let stored = tokens.to_stored_json();
    /// let back = TokenSet::from_stored_json(&stored).unwrap();
    /// assert_eq!(back.access_token(), tokens.access_token());
    /// assert_eq!(back.refresh_token(), tokens.refresh_token());
    /// # }
    /// ```
    pub fn to_stored_json(&self) -> Vec<u8> {
        let dpop_key = self.bound_key.as_ref().map(|k| {
            use base64::Engine as _;
            Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.0.as_slice()))
        });
        let (presented, ended) = match &self.mark {
            RefreshMark::Live => (None, None),
            RefreshMark::Presented {
                at_unix_ms,
                retried,
            } => (
                Some(StoredPresented {
                    at_unix_ms: *at_unix_ms,
                    retried: *retried,
                }),
                None,
            ),
            RefreshMark::Ended {
                fingerprint,
                reason,
            } => (
                None,
                Some(StoredEnded {
                    refresh_token_sha256: fingerprint.to_string(),
                    reason: reason.as_str().to_owned(),
                }),
            ),
        };
        let stored = Stored {
            version: STORED_VERSION,
            access_token: self.access_token.secret(),
            token_type: &self.token_type,
            expires_at_unix_ms: self.expires_at.map(instant_to_unix_ms),
            refresh_token: self.refresh_token.as_ref().map(|r| r.secret()),
            scope: self.scope.as_deref(),
            dpop_key: dpop_key.as_deref().map(String::as_str),
            presented,
            ended,
            extra: self.extra.as_deref(),
        };
        // Serializing strings and integers into a Vec cannot fail.
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// Reads what [`to_stored_json`](Self::to_stored_json) wrote.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Store`] when the bytes are not a stored token set (a
    /// corrupt or foreign file, say); the message never quotes them.
    pub fn from_stored_json(bytes: &[u8]) -> Result<TokenSet, Error> {
        if bytes.starts_with(crate::seal::SEALED_MAGIC) {
            return Err(Error::new(
                ErrorKind::Store,
                "the stored token set is sealed: give the store the Sealer that sealed it",
            ));
        }
        let stored: StoredOwned = serde_json::from_slice(bytes).map_err(|e| {
            Error::new(
                ErrorKind::Store,
                format!(
                    "stored token set is unreadable ({})",
                    describe_json_error(&e)
                ),
            )
        })?;
        if stored.version != STORED_VERSION {
            return Err(Error::new(
                ErrorKind::Store,
                format!("stored token set has unknown version {}", stored.version),
            ));
        }
        // A logout's tombstone has no access token left; any other set must.
        if stored.access_token.is_empty() && stored.ended.is_none() {
            return Err(Error::new(
                ErrorKind::Store,
                "stored token set has no access token",
            ));
        }
        let bound_key = match stored.dpop_key.map(Zeroizing::new) {
            None => None,
            Some(text) => Some(BoundKey(Arc::new(stored_bound_key(&text)?))),
        };
        Ok(TokenSet {
            access_token: AccessToken::new(stored.access_token),
            token_type: normalize_token_type(&stored.token_type),
            expires_at: stored.expires_at_unix_ms.map(unix_ms_to_instant),
            refresh_token: stored
                .refresh_token
                .filter(|r| !r.is_empty())
                .map(RefreshToken::new),
            scope: stored.scope.map(String::into_boxed_str),
            bound_key,
            mark: match (stored.ended, stored.presented) {
                (Some(ended), _) => RefreshMark::Ended {
                    fingerprint: ended.refresh_token_sha256.into_boxed_str(),
                    reason: EndReason::parse(&ended.reason),
                },
                (None, Some(p)) => RefreshMark::Presented {
                    at_unix_ms: p.at_unix_ms,
                    retried: p.retried,
                },
                (None, None) => RefreshMark::Live,
            },
            extra: (!stored.extra.is_empty()).then(|| Arc::new(stored.extra)),
        })
    }
}

/// The bound key of a stored set: base64url of its bytes.
fn stored_bound_key(text: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .filter(|bytes| !bytes.is_empty())
        .map(Zeroizing::new)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Store,
                "stored token set has an unreadable DPoP key",
            )
        })
}

const STORED_VERSION: u32 = 1;

#[derive(Serialize)]
struct Stored<'a> {
    version: u32,
    access_token: &'a str,
    token_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at_unix_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    /// base64url of the key the tokens are bound to (PKCS#8 of a DPoP key).
    #[serde(skip_serializing_if = "Option::is_none")]
    dpop_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presented: Option<StoredPresented>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended: Option<StoredEnded>,
    /// Fields this build does not know, written back as they were read.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extra: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

/// `"presented"`: a request presented the refresh token and no answer was
/// recorded yet.
#[derive(Serialize, Deserialize)]
struct StoredPresented {
    at_unix_ms: u64,
    #[serde(default)]
    retried: bool,
}

/// `"ended"`: the tombstone of a session.
#[derive(Serialize, Deserialize)]
struct StoredEnded {
    refresh_token_sha256: String,
    reason: String,
}

// No Debug derive: it holds secrets.
#[derive(Deserialize)]
struct StoredOwned {
    version: u32,
    access_token: String,
    token_type: String,
    #[serde(default)]
    expires_at_unix_ms: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    dpop_key: Option<String>,
    #[serde(default)]
    presented: Option<StoredPresented>,
    #[serde(default)]
    ended: Option<StoredEnded>,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

/// An instant on tokio's clock as wall-clock Unix milliseconds.
fn instant_to_unix_ms(at: Instant) -> u64 {
    let now_wall = SystemTime::now();
    let now = Instant::now();
    let wall = if at >= now {
        now_wall.checked_add(at - now)
    } else {
        now_wall.checked_sub(now - at)
    };
    wall.and_then(|w| w.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Wall-clock Unix milliseconds as an instant on tokio's clock; times in
/// the past become now (expired), far futures are clamped.
fn unix_ms_to_instant(ms: u64) -> Instant {
    system_time_to_instant(UNIX_EPOCH + Duration::from_millis(ms))
}

/// A wall-clock time as an instant on tokio's clock; times in the past
/// become now (expired), far futures are clamped.
fn system_time_to_instant(at: SystemTime) -> Instant {
    let now = Instant::now();
    match at.duration_since(SystemTime::now()) {
        Ok(ahead) => now + ahead.min(MAX_LIFETIME),
        Err(_) => now,
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TokenSet");
        d.field("access_token", &self.access_token)
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field("refresh_token", &self.refresh_token)
            .field("scope", &self.scope);
        if let Some(key) = &self.bound_key {
            d.field("bound_key", key);
        }
        if self.mark != RefreshMark::Live {
            d.field("mark", &self.mark);
        }
        if let Some(extra) = &self.extra {
            // Names only: a newer build's fields may be secrets.
            d.field("extra", &extra.keys().collect::<Vec<_>>());
        }
        d.finish()
    }
}

fn normalize_token_type(token_type: &str) -> Box<str> {
    if token_type.eq_ignore_ascii_case("bearer") {
        "Bearer".into()
    } else if token_type.eq_ignore_ascii_case("dpop") {
        "DPoP".into()
    } else {
        token_type.into()
    }
}

/// serde's messages can quote the input; keep only the category.
fn describe_json_error(e: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match e.classify() {
        Category::Io => "read error",
        Category::Syntax => "syntax error",
        Category::Data => "missing or mistyped field",
        Category::Eof => "unexpected end",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[tokio::test]
    async fn the_stored_form_round_trips_and_rejects_junk() {
        let tokens = TokenSet::bearer("acc")
            .with_token_type("DPoP")
            .with_refresh_token("ref")
            .with_scope("a b")
            .with_expires_in(Duration::from_secs(120));
        let back = TokenSet::from_stored_json(&tokens.to_stored_json()).unwrap();
        assert_eq!(back.access_token().secret(), "acc");
        assert_eq!(back.token_type(), "DPoP");
        assert_eq!(back.refresh_token().unwrap().secret(), "ref");
        assert_eq!(back.scope(), Some("a b"));
        let drift = back
            .expires_at()
            .unwrap()
            .saturating_duration_since(tokens.expires_at().unwrap())
            .max(
                tokens
                    .expires_at()
                    .unwrap()
                    .saturating_duration_since(back.expires_at().unwrap()),
            );
        assert!(drift < Duration::from_millis(50), "{drift:?}");
        let no_expiry = TokenSet::bearer("x");
        assert_eq!(
            TokenSet::from_stored_json(&no_expiry.to_stored_json())
                .unwrap()
                .expires_at(),
            None
        );
        for junk in [
            &b"{}"[..],
            b"not json",
            br#"{"version":2,"access_token":"a","token_type":"Bearer"}"#,
            b"",
        ] {
            let err = TokenSet::from_stored_json(junk).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Store);
        }
    }

    #[tokio::test]
    async fn the_stored_form_keeps_the_bound_key_and_debug_does_not_show_it() {
        let key = Zeroizing::new(b"pkcs8 bytes of a key".to_vec());
        let tokens = TokenSet::bearer("acc")
            .with_token_type("DPoP")
            .with_bound_key(key.clone());
        let stored = tokens.to_stored_json();
        let text = String::from_utf8(stored.clone()).unwrap();
        assert!(
            text.contains(r#""dpop_key":"cGtjczggYnl0ZXMgb2YgYSBrZXk""#),
            "{text}"
        );
        let back = TokenSet::from_stored_json(&stored).unwrap();
        assert_eq!(back, tokens);
        assert_eq!(back.bound_key(), Some(&key[..]));
        assert!(!format!("{back:?}").contains("cGtjczg"));
        assert!(!format!("{back:?}").contains("112, 107"));
        let junk = br#"{"version":1,"access_token":"a","token_type":"DPoP","dpop_key":"!!!!"}"#;
        let err = TokenSet::from_stored_json(junk).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Store);
        assert!(!err.to_string().contains("!!!!"));
    }
}
