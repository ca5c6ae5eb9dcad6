//! Token sets and the parsing of OAuth2 token responses (RFC 6749 §5.1).

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

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
    /// The DPoP key the tokens are bound to (RFC 9449): saved with them,
    /// since a bound refresh token is useless without it.
    #[cfg(feature = "jose")]
    dpop_key: Option<BoundKey>,
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

/// A DPoP key as a token set holds it: compared by its key bytes.
#[cfg(feature = "jose")]
#[derive(Clone)]
struct BoundKey(crate::jose::SigningKey);

#[cfg(feature = "jose")]
impl PartialEq for BoundKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.es256_pkcs8() == other.0.es256_pkcs8()
    }
}

#[cfg(feature = "jose")]
impl Eq for BoundKey {}

impl TokenSet {
    /// A bearer access token with no known expiry and no refresh token.
    pub fn bearer(access_token: impl Into<AccessToken>) -> Self {
        TokenSet {
            access_token: access_token.into(),
            token_type: "Bearer".into(),
            expires_at: None,
            refresh_token: None,
            scope: None,
            #[cfg(feature = "jose")]
            dpop_key: None,
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

    /// Binds the set to a DPoP key (RFC 9449). Only an ES256 key (what
    /// [`DpopKey`](crate::dpop::DpopKey) uses) is kept: it is saved with the
    /// set by [`to_stored_json`](Self::to_stored_json); any other key is
    /// ignored.
    #[cfg(feature = "jose")]
    pub fn with_dpop_key(mut self, key: crate::jose::SigningKey) -> Self {
        self.dpop_key = key.es256_pkcs8().is_some().then_some(BoundKey(key));
        self
    }

    /// The DPoP key the tokens are bound to, if any.
    #[cfg(feature = "jose")]
    pub fn dpop_key(&self) -> Option<&crate::jose::SigningKey> {
        self.dpop_key.as_ref().map(|k| &k.0)
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

    /// Parses a successful token response body (RFC 6749 §5.1).
    ///
    /// `access_token` and `token_type` are required (`token_type` in any
    /// case); `expires_in` may be a number or a numeric string, negative
    /// values count as zero and huge ones are clamped to ten years; unknown
    /// fields are ignored.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidResponse`](crate::ErrorKind::InvalidResponse) when
    /// the body is not JSON, a required field is missing or empty, or
    /// `expires_in` is not a number. The message never contains the body.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_token_refresh_core::TokenSet;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let body = br#"{"access_token":"a1","token_type":"bearer","expires_in":"60","refresh_token":"r1"}"#;
    /// let tokens = TokenSet::from_response_json(body).unwrap();
    /// assert_eq!(tokens.access_token().secret(), "a1");
    /// assert_eq!(tokens.token_type(), "Bearer");
    /// assert!(TokenSet::from_response_json(b"<html>bad gateway</html>").is_err());
    /// # }
    /// ```
    pub fn from_response_json(body: &[u8]) -> Result<TokenSet, Error> {
        let raw: RawTokenResponse = serde_json::from_slice(body).map_err(|e| {
            Error::invalid_response(format!(
                "token response is not the expected JSON (line {}, column {}: {})",
                e.line(),
                e.column(),
                describe_json_error(&e)
            ))
        })?;
        if raw.access_token.is_empty() {
            return Err(Error::invalid_response(
                "token response has an empty access_token",
            ));
        }
        if raw.token_type.is_empty() {
            return Err(Error::invalid_response(
                "token response has an empty token_type",
            ));
        }
        let expires_at = match raw.expires_in {
            Some(value) => Some(Instant::now() + value.into_duration()?),
            // RFC 6749 §5.1 only recommends `expires_in`; a JWT access
            // token still says when it expires.
            None => jwt_expiry(&raw.access_token).map(system_time_to_instant),
        };
        Ok(TokenSet {
            access_token: AccessToken::new(raw.access_token),
            token_type: normalize_token_type(&raw.token_type),
            expires_at,
            refresh_token: raw
                .refresh_token
                .filter(|r| !r.is_empty())
                .map(RefreshToken::new),
            scope: raw.scope.map(String::into_boxed_str),
            #[cfg(feature = "jose")]
            dpop_key: None,
            mark: RefreshMark::Live,
            extra: None,
        })
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
        #[cfg(feature = "jose")]
        let dpop_key = self.dpop_key.as_ref().and_then(|k| {
            use base64::Engine as _;
            k.0.es256_pkcs8().map(|der| {
                zeroize::Zeroizing::new(
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(der),
                )
            })
        });
        #[cfg(not(feature = "jose"))]
        let dpop_key: Option<zeroize::Zeroizing<String>> = None;
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
        #[cfg(feature = "jose")]
        let dpop_key = match stored.dpop_key.map(zeroize::Zeroizing::new) {
            None => None,
            Some(text) => Some(BoundKey(stored_dpop_key(&text)?)),
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
            #[cfg(feature = "jose")]
            dpop_key,
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

/// The DPoP key of a stored set: base64url PKCS#8.
#[cfg(feature = "jose")]
fn stored_dpop_key(text: &str) -> Result<crate::jose::SigningKey, Error> {
    use base64::Engine as _;
    let unreadable = || {
        Error::new(
            ErrorKind::Store,
            "stored token set has an unreadable DPoP key",
        )
    };
    let der = zeroize::Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| unreadable())?,
    );
    crate::jose::SigningKey::es256_from_pkcs8(&der).map_err(|_| unreadable())
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
    /// base64url PKCS#8 of the DPoP key the tokens are bound to.
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
    // Read by the `jose` feature; without it a stored key is one of the
    // `extra` fields, kept as it is.
    #[cfg(feature = "jose")]
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
pub(crate) fn system_time_to_instant(at: SystemTime) -> Instant {
    let now = Instant::now();
    match at.duration_since(SystemTime::now()) {
        Ok(ahead) => now + ahead.min(MAX_LIFETIME),
        Err(_) => now,
    }
}

/// The `exp` claim of a JWT (RFC 7519 §4.1.4) as a wall-clock time, read
/// without verifying anything: the client is not the token's audience, it
/// only wants to know when to refresh.
///
/// Returns `None` for anything that is not a JWS in compact form (three
/// base64url segments) whose payload is a JSON object with a numeric `exp`
/// (an integer or a fraction of seconds since the Unix epoch, at most ten
/// years ahead of the epoch's far end; negative values are refused).
/// Encrypted tokens (JWE, five segments) and opaque tokens give `None`.
/// It never panics, whatever the input.
///
/// # Example
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use base64::Engine as _;
/// use tower_token_refresh_core::jwt_expiry;
///
/// let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
/// let jwt = format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(r#"{"sub":"u","exp":1700000000}"#));
/// assert_eq!(jwt_expiry(&jwt), Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
/// assert_eq!(jwt_expiry("an-opaque-token"), None);
/// ```
pub fn jwt_expiry(token: &str) -> Option<SystemTime> {
    use base64::Engine as _;

    // A JWT in a response is small; refuse to decode megabytes.
    const MAX_JWT: usize = 16 * 1024;
    if token.len() > MAX_JWT {
        return None;
    }
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    // base64url without padding (RFC 7515 §2); tolerate padding anyway.
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let payload = engine.decode(payload).ok()?;
    #[derive(Deserialize)]
    struct Claims {
        exp: Option<serde_json::Number>,
    }
    let claims: Claims = serde_json::from_slice(&payload).ok()?;
    let exp = claims.exp?.as_f64()?;
    if !(0.0..=MAX_JWT_EXP_SECS).contains(&exp) {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::from_secs_f64(exp))
}

/// Year 9999: later `exp` values are junk, not lifetimes.
const MAX_JWT_EXP_SECS: f64 = 253_402_300_799.0;

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TokenSet");
        d.field("access_token", &self.access_token)
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field("refresh_token", &self.refresh_token)
            .field("scope", &self.scope);
        #[cfg(feature = "jose")]
        d.field("dpop_key", &self.dpop_key.as_ref().map(|k| &k.0));
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

// No Debug derive: the raw response holds secrets.
#[derive(Deserialize)]
struct RawTokenResponse {
    access_token: String,
    token_type: String,
    #[serde(default)]
    expires_in: Option<ExpiresIn>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ExpiresIn {
    Int(i64),
    Float(f64),
    Text(String),
}

impl ExpiresIn {
    fn into_duration(self) -> Result<Duration, Error> {
        let secs = match self {
            ExpiresIn::Int(n) => n as f64,
            ExpiresIn::Float(f) => f,
            ExpiresIn::Text(s) => s.trim().parse::<f64>().map_err(|_| {
                Error::invalid_response("token response has a non-numeric expires_in")
            })?,
        };
        if secs.is_nan() {
            return Err(Error::invalid_response(
                "token response has a non-numeric expires_in",
            ));
        }
        let clamped = secs.clamp(0.0, MAX_LIFETIME.as_secs_f64());
        Ok(Duration::from_secs_f64(clamped))
    }
}

/// An OAuth2 error response body (RFC 6749 §5.2).
#[derive(Debug, Deserialize)]
pub(crate) struct OAuthErrorBody {
    pub(crate) error: String,
    #[serde(default)]
    pub(crate) error_description: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[tokio::test(start_paused = true)]
    async fn parses_required_and_optional_fields() {
        let t = TokenSet::from_response_json(
            br#"{"access_token":"a","token_type":"BEARER","expires_in":120,"refresh_token":"r","scope":"read write","extra":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(t.access_token().secret(), "a");
        assert_eq!(t.token_type(), "Bearer");
        assert_eq!(
            t.expires_at(),
            Some(Instant::now() + Duration::from_secs(120))
        );
        assert_eq!(t.refresh_token().map(|r| r.secret()), Some("r"));
        assert_eq!(t.scope(), Some("read write"));
    }

    #[tokio::test(start_paused = true)]
    async fn expires_in_as_string_negative_and_huge() {
        let t = TokenSet::from_response_json(
            br#"{"access_token":"a","token_type":"Bearer","expires_in":" 30 "}"#,
        )
        .unwrap();
        assert_eq!(
            t.expires_at(),
            Some(Instant::now() + Duration::from_secs(30))
        );
        let t = TokenSet::from_response_json(
            br#"{"access_token":"a","token_type":"Bearer","expires_in":-5}"#,
        )
        .unwrap();
        assert_eq!(t.expires_at(), Some(Instant::now()));
        let t = TokenSet::from_response_json(
            br#"{"access_token":"a","token_type":"Bearer","expires_in":1e300}"#,
        )
        .unwrap();
        assert_eq!(t.expires_at(), Some(Instant::now() + MAX_LIFETIME));
        let t =
            TokenSet::from_response_json(br#"{"access_token":"a","token_type":"Bearer"}"#).unwrap();
        assert_eq!(t.expires_at(), None);
    }

    fn jwt(payload: &str) -> String {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256","typ":"at+jwt"}"#),
            b64(payload)
        )
    }

    #[tokio::test(start_paused = true)]
    async fn missing_expires_in_falls_back_to_the_jwt_exp() {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let token = jwt(&format!(r#"{{"sub":"u","exp":{exp}}}"#));
        let body = format!(r#"{{"access_token":"{token}","token_type":"Bearer"}}"#);
        let t = TokenSet::from_response_json(body.as_bytes()).unwrap();
        let left = t.expires_at().unwrap() - Instant::now();
        assert!(
            left <= Duration::from_secs(600) && left > Duration::from_secs(595),
            "{left:?}"
        );
        // `expires_in` wins over `exp` when both are there.
        let body = format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":30}}"#);
        let t = TokenSet::from_response_json(body.as_bytes()).unwrap();
        assert_eq!(
            t.expires_at(),
            Some(Instant::now() + Duration::from_secs(30))
        );
        // An `exp` in the past: expired now (the coordinator refuses it).
        let past = jwt(r#"{"exp":1000}"#);
        let body = format!(r#"{{"access_token":"{past}","token_type":"Bearer"}}"#);
        let t = TokenSet::from_response_json(body.as_bytes()).unwrap();
        assert_eq!(t.expires_at(), Some(Instant::now()));
    }

    #[test]
    fn jwt_expiry_refuses_what_is_not_a_readable_jws() {
        for token in [
            "opaque".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d.e".to_owned(),
            jwt(r#"{"exp":"1700000000"}"#),
            jwt(r#"{"exp":-1}"#),
            jwt(r#"{"exp":1e300}"#),
            jwt(r#"{"sub":"no exp"}"#),
            jwt(r#"[1,2]"#),
            "e30.!!!.x".to_owned(),
        ] {
            assert_eq!(jwt_expiry(&token), None, "{token}");
        }
        assert_eq!(
            jwt_expiry(&jwt(r#"{"exp":1700000000.5}"#)),
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_500))
        );
    }

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

    #[cfg(feature = "jose")]
    #[tokio::test]
    async fn the_stored_form_keeps_the_dpop_key_and_debug_does_not_show_it() {
        use base64::Engine as _;
        let key = crate::jose::SigningKey::generate_es256().unwrap();
        let tokens = TokenSet::bearer("acc")
            .with_token_type("DPoP")
            .with_dpop_key(key.clone());
        let stored = tokens.to_stored_json();
        let back = TokenSet::from_stored_json(&stored).unwrap();
        assert_eq!(back, tokens);
        assert_eq!(back.dpop_key().unwrap().thumbprint(), key.thumbprint());
        let pkcs8 =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.es256_pkcs8().unwrap());
        assert!(!format!("{back:?}").contains(&pkcs8[..24]));
        let junk = br#"{"version":1,"access_token":"a","token_type":"DPoP","dpop_key":"AAAA"}"#;
        let err = TokenSet::from_stored_json(junk).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Store);
        assert!(!err.to_string().contains("AAAA"));
        // Only an ES256 key is kept (DpopKey uses nothing else).
        let hs = TokenSet::bearer("a").with_dpop_key(crate::jose::SigningKey::hs256(b"k"));
        assert!(hs.dpop_key().is_none());
    }

    #[tokio::test]
    async fn malformed_bodies_are_invalid_response_without_echoing_input() {
        for body in [
            &b"<html>502 Bad Gateway secret-ish</html>"[..],
            br#"{"token_type":"Bearer"}"#,
            br#"{"access_token":"","token_type":"Bearer"}"#,
            br#"{"access_token":"tok-123","token_type":"Bearer","expires_in":"soon"}"#,
            br#"{"access_token":"tok-123","token_type":"Bearer","expires_in":[1]}"#,
            b"",
        ] {
            let err = TokenSet::from_response_json(body).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{err}");
            let shown = format!("{err} {err:?}");
            assert!(
                !shown.contains("tok-123") && !shown.contains("secret-ish"),
                "{shown}"
            );
        }
    }
}
