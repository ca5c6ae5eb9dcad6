//! The published state: the token set in use, its prebuilt header, and the
//! phase flag that the hot path reads instead of the clock.
//!
//! Invariants:
//! - A [`State`] never changes once published, except its credential's
//!   phase flag; every other change publishes a new `State`.
//! - The phase only moves forward (`fetch_max`), with two exceptions, both
//!   from a lower value: the driver's take-over (`Untimed` → the phase by
//!   the clock) and a snooze (`Ahead` → `Fresh`, see `driver.rs`).
//!   `Retired` is final.
//! - `Fresh` or `Ahead` is written only while the driver watches the
//!   credential; when the driver goes away it puts them back to `Untimed`,
//!   so lookups read the clock. The flag can therefore never say `Fresh`
//!   for a credential that is past its deadline by more than a wake-up.
//! - An unusable credential (an access token already expired or not a
//!   header value, kept for its refresh token) is `Stale` from birth: its
//!   header is never sent.

use std::{
    fmt,
    sync::atomic::{AtomicU8, Ordering},
};

use http::HeaderValue;
use tokio::time::Instant;

use super::config::{Config, Scheme};
use crate::{Error, TokenSet};

/// One published state of a manager.
pub(crate) struct State {
    /// Grows by one with every new access token (a changed refresh token
    /// alone keeps the generation: the header a server rejected is the same).
    pub(super) generation: u64,
    pub(super) status: Status,
}

// Ready is the large one and the common one; a State lives in an Arc and is
// built once per change, and a Box would add a pointer chase to the hot path.
#[allow(clippy::large_enum_variant)]
pub(super) enum Status {
    Empty,
    Ready(Credential),
    SessionExpired(Error),
}

pub(super) struct Credential {
    pub(super) header: HeaderValue,
    pub(super) tokens: TokenSet,
    pub(super) refresh_at: Option<Instant>,
    pub(super) stale_at: Option<Instant>,
    /// Where the credential is in its life; see [`Phase`].
    pub(super) phase: AtomicU8,
    /// The refresh token is dead (a refresh got no answer from a server
    /// that may rotate): the access token serves until it is stale or
    /// rejected, then the session ends with this error. No refresh ahead.
    /// Boxed: rare, and a session registry holds many credentials.
    pub(super) doomed: Option<Box<Error>>,
}

/// The life of a credential, in the order it goes through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(super) enum Phase {
    /// No driver watches the phase: the clock decides, and the lookup that
    /// reads it makes sure a driver runs.
    Untimed = 0,
    Fresh = 1,
    /// Inside the refresh-ahead window: still sent, refreshed in background.
    Ahead = 2,
    /// Past expiry minus the leeway: callers wait for a refresh.
    Stale = 3,
    /// Replaced by a newer state: whoever still holds this one (a
    /// [`LookupCache`]) must look again.
    Retired = 4,
}

impl Phase {
    pub(super) fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Fresh,
            2 => Phase::Ahead,
            3 => Phase::Stale,
            4 => Phase::Retired,
            _ => Phase::Untimed,
        }
    }
}

impl Credential {
    pub(super) fn build(
        tokens: TokenSet,
        config: &Config,
        now: Instant,
        jitter: f64,
    ) -> Result<Self, Error> {
        let tokens = match &config.bind {
            Some(binder) => binder.bind(tokens),
            None => tokens,
        };
        let header = header_value(&tokens, &config.scheme)?;
        let (refresh_at, stale_at) = match tokens.expires_at() {
            None => (None, None),
            Some(expires_at) => {
                let lifetime = expires_at.saturating_duration_since(now);
                let leeway = config.expiry_leeway.min(lifetime / 10);
                let ahead = config.refresh_ahead.min(lifetime / 2);
                let early = ahead.mul_f64(config.refresh_jitter * jitter);
                (Some(expires_at - ahead - early), Some(expires_at - leeway))
            }
        };
        // A token of unknown lifetime is fresh until a server rejects it;
        // no driver needs to watch it.
        let phase = if stale_at.is_none() {
            Phase::Fresh
        } else if stale_at.is_some_and(|t| now >= t) {
            Phase::Stale
        } else {
            Phase::Untimed
        };
        Ok(Credential {
            header,
            tokens,
            refresh_at,
            stale_at,
            phase: AtomicU8::new(phase as u8),
            doomed: None,
        })
    }

    /// This credential with a dead refresh token: it is sent until it is
    /// stale (never refreshed ahead), then the session ends with `err`.
    pub(super) fn doom(mut self, err: Error) -> Self {
        self.refresh_at = self.stale_at;
        self.doomed = Some(Box::new(err));
        self
    }

    /// A set kept for its refresh token only: its access token is never sent.
    pub(super) fn unusable(tokens: TokenSet, now: Instant) -> Self {
        let mut header = HeaderValue::from_static("");
        header.set_sensitive(true);
        Credential {
            header,
            tokens,
            refresh_at: Some(now),
            stale_at: Some(now),
            phase: AtomicU8::new(Phase::Stale as u8),
            doomed: None,
        }
    }

    pub(super) fn is_stale(&self, now: Instant) -> bool {
        self.stale_at.is_some_and(|t| now >= t)
    }

    pub(super) fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// The phase by the clock.
    pub(super) fn phase_at(&self, now: Instant) -> Phase {
        if self.is_stale(now) {
            Phase::Stale
        } else if self.refresh_at.is_some_and(|t| now >= t) {
            Phase::Ahead
        } else {
            Phase::Fresh
        }
    }

    /// Whether it may be sent now (the flag, or the clock when untimed).
    pub(super) fn is_usable(&self) -> bool {
        match self.phase() {
            Phase::Fresh | Phase::Ahead => true,
            Phase::Untimed => !self.is_stale(Instant::now()),
            Phase::Stale | Phase::Retired => false,
        }
    }

    /// The next instant at which the phase by the clock changes, if any.
    pub(super) fn next_change(&self, phase: Phase) -> Option<Instant> {
        match phase {
            // The window may open after the leeway starts (a refresh-ahead
            // shorter than the leeway): then the next change is to stale.
            Phase::Untimed | Phase::Fresh => match (self.refresh_at, self.stale_at) {
                (Some(ahead), Some(stale)) => Some(ahead.min(stale)),
                (ahead, stale) => ahead.or(stale),
            },
            Phase::Ahead => self.stale_at,
            Phase::Stale | Phase::Retired => None,
        }
    }
}

impl State {
    /// What a waiter gets when this state ends its wait.
    pub(super) fn outcome(&self) -> Result<Authorization, Error> {
        match &self.status {
            Status::Ready(cred) if cred.is_usable() => Ok(Authorization {
                header: cred.header.clone(),
                generation: self.generation,
            }),
            Status::Ready(_) => Err(Error::transient("no usable access token")),
            Status::SessionExpired(e) => Err(e.clone()),
            Status::Empty => Err(Error::transient("token set was cleared")),
        }
    }

    pub(super) fn tokens(&self) -> Option<&TokenSet> {
        match &self.status {
            Status::Ready(cred) => Some(&cred.tokens),
            _ => None,
        }
    }

    /// Marks the credential of a state that was just replaced, so that
    /// caches holding it look again.
    pub(super) fn retire(&self) {
        if let Status::Ready(cred) = &self.status {
            cred.phase.fetch_max(Phase::Retired as u8, Ordering::AcqRel);
        }
    }
}

fn header_value(tokens: &TokenSet, scheme: &Scheme) -> Result<HeaderValue, Error> {
    let token = tokens.access_token().secret();
    let text = match scheme {
        // A DPoP-bound token sent as `Bearer` (or bare) would be refused,
        // or worse, accepted by a server that ignores the binding: it goes
        // out under its own scheme whatever the setting (RFC 9449 §7.1).
        _ if tokens.token_type() == "DPoP" => format!("DPoP {token}"),
        Scheme::FromTokenType => format!("{} {token}", tokens.token_type()),
        Scheme::Fixed(s) => format!("{s} {token}"),
        Scheme::None => token.to_owned(),
    };
    let mut value = HeaderValue::try_from(text).map_err(|_| {
        Error::invalid_response(
            "access token or token type has bytes not allowed in an HTTP header",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The credential to send: a ready header value and the generation it
/// belongs to (pass that generation to
/// [`TokenManager::refresh_if`](crate::TokenManager::refresh_if) when the
/// server rejects it).
#[derive(Clone)]
pub struct Authorization {
    pub(super) header: HeaderValue,
    pub(super) generation: u64,
}

impl Authorization {
    /// The header value, marked sensitive. Cloning it does not allocate.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// Takes the header value.
    pub fn into_header(self) -> HeaderValue {
        self.header
    }

    /// The generation of the token set this header came from.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorization")
            .field("header", &"<redacted>")
            .field("generation", &self.generation)
            .finish()
    }
}
