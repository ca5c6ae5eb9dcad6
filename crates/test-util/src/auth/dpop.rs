//! DPoP (RFC 9449) on the server side: the nonces the token endpoint and
//! the resource servers want ([`Nonce`]), and the token endpoint's check of
//! a proof. The proof itself is verified by [`crate::dpop::verify_proof`].

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use tower_token_refresh_core::header::{DPOP, DPOP_NONCE};

use super::{oauth::OAuthError, state::AuthState};
use crate::dpop::{Proof, verify_proof};

/// Which DPoP nonce (RFC 9449 §8, §9) a server wants in proofs, set with
/// [`AuthConfig::token_dpop_nonce`](super::AuthConfig::token_dpop_nonce)
/// and [`AuthConfig::resource_dpop_nonce`](super::AuthConfig::resource_dpop_nonce).
///
/// A proof without the nonce wanted is refused with `use_dpop_nonce` and a
/// `DPoP-Nonce` header naming it. Nonces the server makes are
/// `nonce-1`, `nonce-2`, … in the order it makes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Nonce {
    /// No nonce is wanted (the default).
    #[default]
    Off,
    /// This nonce, always.
    Fixed(String),
    /// This nonce first; every successful answer hands out a new one in
    /// `DPoP-Nonce`, which the next proof must carry.
    Rotating(String),
    /// Every request is challenged with a new nonce: nothing passes.
    AlwaysChallenge,
}

/// A server's nonce as it goes: the policy and the nonce now wanted.
#[derive(Debug, Default)]
pub(crate) struct NonceState {
    policy: Nonce,
    current: Option<String>,
    made: u64,
    /// Every nonce handed out, in order.
    pub(crate) issued: Vec<String>,
}

impl NonceState {
    pub(crate) fn new(policy: Nonce) -> Self {
        let current = match &policy {
            Nonce::Fixed(nonce) | Nonce::Rotating(nonce) => Some(nonce.clone()),
            Nonce::Off | Nonce::AlwaysChallenge => None,
        };
        NonceState {
            policy,
            current,
            made: 0,
            issued: Vec::new(),
        }
    }

    fn make(&mut self) -> String {
        self.made += 1;
        let nonce = format!("nonce-{}", self.made);
        self.current = Some(nonce.clone());
        nonce
    }

    /// Whether a proof carrying `nonce` passes; `Err` holds the nonce to
    /// challenge it with.
    pub(crate) fn check(&mut self, nonce: Option<&str>) -> Result<(), String> {
        let wanted = match self.policy {
            Nonce::Off => return Ok(()),
            Nonce::AlwaysChallenge => self.make(),
            Nonce::Fixed(_) | Nonce::Rotating(_) => match &self.current {
                Some(current) if nonce == Some(current.as_str()) => return Ok(()),
                Some(current) => current.clone(),
                None => return Ok(()),
            },
        };
        self.issued.push(wanted.clone());
        Err(wanted)
    }

    /// The nonce a successful answer hands out, if any.
    pub(crate) fn after_success(&mut self) -> Option<String> {
        match self.policy {
            Nonce::Rotating(_) => {
                let nonce = self.make();
                self.issued.push(nonce.clone());
                Some(nonce)
            }
            _ => None,
        }
    }
}

/// Sets `DPoP-Nonce` on a response's headers.
pub(crate) fn set_nonce(headers: &mut HeaderMap, nonce: &str) {
    if let Ok(value) = HeaderValue::from_str(nonce) {
        headers.insert(DPOP_NONCE, value);
    }
}

/// The token endpoint's check of the request's DPoP proof (RFC 9449 §4.3):
/// `None` without one (refused if the server requires DPoP); else the
/// proof, once its signature, `htm`, `htu` (`token_url`), absent `ath`, new
/// `jti` and nonce pass.
pub(super) fn check_token_proof(
    state: &mut AuthState,
    required: bool,
    token_url: &str,
    headers: &HeaderMap,
) -> Result<Option<Proof>, OAuthError> {
    let invalid = |state: &mut AuthState, why: &'static str| {
        state.stats.invalid_dpop_proof += 1;
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_dpop_proof", why)
    };
    let Some(value) = headers.get(DPOP) else {
        return if required {
            Err(invalid(state, "a DPoP proof is required"))
        } else {
            Ok(None)
        };
    };
    let Ok(proof) = verify_proof(value.to_str().unwrap_or_default()) else {
        return Err(invalid(state, "the DPoP proof does not verify"));
    };
    if proof.htm != "POST" || proof.htu != token_url || proof.ath.is_some() {
        return Err(invalid(state, "the DPoP proof is not for this request"));
    }
    if !state.tokens.spend_jti(&proof.jti) {
        return Err(invalid(state, "the DPoP proof was replayed"));
    }
    if let Err(nonce) = state.token_nonce.check(proof.nonce.as_deref()) {
        state.stats.dpop_nonce_challenges += 1;
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "use_dpop_nonce",
            "a DPoP nonce is required",
        )
        .with_nonce(nonce));
    }
    state.log.token_proofs.push(proof.clone());
    Ok(Some(proof))
}
