//! DPoP (RFC 9449) on the server side, for tests: [`verify_proof`] checks a
//! proof the way a server does (the signature against the JWK in the
//! proof's own header, `typ`, `alg`) and returns its claims;
//! [`DpopServer`] is a token endpoint and a protected resource on
//! 127.0.0.1 that take only DPoP-bound tokens, check every proof and count
//! what they saw.
//!
//! # Example
//!
//! ```
//! use tower_token_refresh_test_util::{dpop::DpopServer, hyper_client};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = DpopServer::start().await?;
//! // A bearer request is refused with a DPoP challenge.
//! let request = http::Request::get(server.api_url("/api/data"))
//!     .header("authorization", "Bearer at-0")
//!     .body(http_body_util::Full::default())?;
//! let response = hyper_client().request(request).await?;
//! assert_eq!(response.status(), 401);
//! assert!(response.headers()["www-authenticate"].to_str()?.starts_with("DPoP"));
//! assert_eq!(server.log().api_requests, 1);
//! # Ok(()) }
//! ```

use std::{
    collections::{HashMap, HashSet},
    io,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    Form, Router,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{any, post},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::serve::ServerTask;
use ring::{
    digest,
    signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey},
};
use serde::Deserialize;
use tower_token_refresh_core::{
    ErrorCode,
    header::{DPOP, DPOP_NONCE},
};

/// What a verified proof says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    /// The proof's unique id.
    pub jti: String,
    /// The HTTP method it was made for.
    pub htm: String,
    /// The target URI it was made for.
    pub htu: String,
    /// When it was made (Unix seconds).
    pub iat: u64,
    /// base64url SHA-256 of the access token it goes with, if any.
    pub ath: Option<String>,
    /// The server nonce it carries, if any.
    pub nonce: Option<String>,
    /// The RFC 7638 thumbprint of the key that signed it (`cnf.jkt`).
    pub jkt: String,
}

#[derive(Deserialize)]
struct Header {
    typ: String,
    alg: String,
    jwk: Jwk,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: String,
    x: String,
    y: String,
    #[serde(default)]
    d: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    jti: String,
    htm: String,
    htu: String,
    iat: u64,
    #[serde(default)]
    ath: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

/// Verifies an ES256 DPoP proof: `typ` is `dpop+jwt`, the header's JWK is
/// a public P-256 key, the signature is that key's over the first two
/// parts. Returns the claims and the key's thumbprint; the caller checks
/// them against the request.
///
/// # Errors
///
/// A description of what is wrong with the proof.
pub fn verify_proof(proof: &str) -> Result<Proof, String> {
    let mut parts = proof.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS".into());
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| format!("bad base64url: {e}"))
    };
    let h: Header = serde_json::from_slice(&decode(header)?).map_err(|e| e.to_string())?;
    if h.typ != "dpop+jwt" || h.alg != "ES256" {
        return Err(format!("typ {} alg {}", h.typ, h.alg));
    }
    if h.jwk.kty != "EC" || h.jwk.crv != "P-256" || h.jwk.d.is_some() {
        return Err("the jwk is not a public P-256 key".into());
    }
    let point = [&[4u8][..], &decode(&h.jwk.x)?, &decode(&h.jwk.y)?].concat();
    let signed = &proof[..header.len() + 1 + claims.len()];
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        .verify(signed.as_bytes(), &decode(signature)?)
        .map_err(|_| "bad signature".to_owned())?;
    let c: Claims = serde_json::from_slice(&decode(claims)?).map_err(|e| e.to_string())?;
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        h.jwk.x, h.jwk.y
    );
    Ok(Proof {
        jti: c.jti,
        htm: c.htm,
        htu: c.htu,
        iat: c.iat,
        ath: c.ath,
        nonce: c.nonce,
        jkt: URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes())),
    })
}

/// base64url SHA-256 of an access token: what a proof's `ath` must be.
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, access_token.as_bytes()))
}

/// What both servers of a [`DpopServer`] know and count, and the
/// switches a test sets.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct DpopLog {
    /// `http://127.0.0.1:port` of the token endpoint's server.
    pub auth_base: String,
    /// `http://127.0.0.1:port` of the resource's server.
    pub api_base: String,
    /// Numbers issued tokens and nonces.
    pub n: usize,
    /// Token requests received.
    pub token_requests: usize,
    /// Token requests answered `use_dpop_nonce`.
    pub token_challenges: usize,
    /// Grants carried out.
    pub grants: usize,
    /// The refresh token of every token request, challenged ones included.
    pub presented: Vec<String>,
    /// Spent refresh tokens presented again.
    pub reuse: usize,
    /// Refresh tokens that may be used, with the key thumbprint each is bound to.
    pub live_refresh: HashMap<String, String>,
    /// Refresh tokens used up by rotation.
    pub spent: HashSet<String>,
    /// The nonce the token endpoint wants; `None`: it wants none.
    pub token_nonce: Option<String>,
    /// Challenge every token request with a new nonce.
    pub token_always_challenges: bool,
    /// Hand out a new nonce with every successful token answer.
    pub token_rotates_nonce: bool,
    /// Every token-endpoint proof that passed, in order.
    pub token_proofs: Vec<Proof>,
    /// Access tokens issued, with the key thumbprint each is bound to.
    pub access: HashMap<String, String>,
    /// Access tokens the resource refuses as `invalid_token`.
    pub revoked: HashSet<String>,
    /// Resource requests received.
    pub api_requests: usize,
    /// Resource requests answered `use_dpop_nonce`.
    pub api_challenges: usize,
    /// The nonce the resource wants; `None`: it wants none.
    pub api_nonce: Option<String>,
    /// Challenge every resource request with a new nonce.
    pub api_always_challenges: bool,
    /// Every proof the resource accepted, in order.
    pub api_proofs: Vec<Proof>,
    /// Every access token the resource accepted, in order.
    pub api_tokens: Vec<String>,
    /// The `jti` of every valid proof the resource saw: one seen twice is a
    /// replayed proof, refused as a real server would.
    pub api_jtis: Vec<String>,
}

impl DpopLog {
    fn next(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}-{}", self.n)
    }
}

#[derive(Clone)]
struct Server {
    log: Arc<Mutex<DpopLog>>,
}

fn lock(log: &Mutex<DpopLog>) -> MutexGuard<'_, DpopLog> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

fn oauth_error(status: StatusCode, code: ErrorCode) -> Response {
    (
        status,
        [("content-type", "application/json")],
        format!(r#"{{"error":"{code}"}}"#),
    )
        .into_response()
}

async fn token(
    State(s): State<Server>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut log = lock(&s.log);
    log.token_requests += 1;
    if let Some(rt) = form.get("refresh_token") {
        log.presented.push(rt.clone());
    }
    let proof = match headers
        .get(DPOP)
        .map(|v| verify_proof(v.to_str().unwrap_or_default()))
    {
        Some(Ok(p)) => p,
        _ => return oauth_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidDpopProof),
    };
    if proof.htm != "POST" || proof.htu != format!("{}/token", log.auth_base) || proof.ath.is_some()
    {
        return oauth_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidDpopProof);
    }
    if log.token_always_challenges || (log.token_nonce.is_some() && proof.nonce != log.token_nonce)
    {
        log.token_challenges += 1;
        if log.token_always_challenges {
            let nonce = log.next("as-nonce");
            log.token_nonce = Some(nonce);
        }
        let nonce = log.token_nonce.clone().unwrap_or_default();
        return with_nonce(
            oauth_error(StatusCode::BAD_REQUEST, ErrorCode::UseDpopNonce),
            &nonce,
        );
    }
    log.token_proofs.push(proof.clone());
    match form.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {
            let Some(rt) = form.get("refresh_token") else {
                return oauth_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest);
            };
            if log.spent.contains(rt) {
                log.reuse += 1;
                return oauth_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidGrant);
            }
            // A refresh token bound to another key is refused (RFC 9449 §5).
            if log.live_refresh.get(rt) != Some(&proof.jkt) {
                return oauth_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidGrant);
            }
            log.live_refresh.remove(rt);
            log.spent.insert(rt.clone());
        }
        Some("client_credentials") => {}
        _ => return oauth_error(StatusCode::BAD_REQUEST, ErrorCode::UnsupportedGrantType),
    }
    log.grants += 1;
    let at = log.next("at");
    let rt = log.next("rt");
    log.access.insert(at.clone(), proof.jkt.clone());
    log.live_refresh.insert(rt.clone(), proof.jkt);
    let r = (
        [("content-type", "application/json")],
        format!(
            r#"{{"access_token":"{at}","token_type":"DPoP","expires_in":3600,"refresh_token":"{rt}"}}"#
        ),
    )
        .into_response();
    if log.token_rotates_nonce {
        let nonce = log.next("as-nonce");
        log.token_nonce = Some(nonce.clone());
        return with_nonce(r, &nonce);
    }
    r
}

fn with_nonce(mut response: Response, nonce: &str) -> Response {
    if let Ok(value) = http::HeaderValue::from_str(nonce) {
        response.headers_mut().insert(DPOP_NONCE, value);
    }
    response
}

/// A 401 with a `DPoP` challenge; no error code for a request without
/// credentials (RFC 6750 §3.1).
fn dpop_challenge(error: Option<ErrorCode>) -> Response {
    let challenge = match error {
        Some(code) => format!(r#"DPoP algs="ES256", error="{code}""#),
        None => r#"DPoP algs="ES256""#.to_owned(),
    };
    (StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)]).into_response()
}

async fn api(State(s): State<Server>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let mut log = lock(&s.log);
    log.api_requests += 1;
    let Some(at) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("DPoP "))
        .map(str::to_owned)
    else {
        return dpop_challenge(None);
    };
    let proof = match headers
        .get(DPOP)
        .map(|v| verify_proof(v.to_str().unwrap_or_default()))
    {
        Some(Ok(p)) => p,
        _ => return dpop_challenge(Some(ErrorCode::InvalidDpopProof)),
    };
    let bound = log.access.get(&at).cloned();
    if proof.htm != method.as_str()
        || proof.htu != format!("{}{}", log.api_base, uri.path())
        || proof.ath.as_deref() != Some(ath(&at).as_str())
        || bound.as_ref().is_some_and(|jkt| *jkt != proof.jkt)
    {
        return dpop_challenge(Some(ErrorCode::InvalidDpopProof));
    }
    if log.api_jtis.contains(&proof.jti) {
        return dpop_challenge(Some(ErrorCode::InvalidDpopProof));
    }
    log.api_jtis.push(proof.jti.clone());
    if log.api_always_challenges || (log.api_nonce.is_some() && proof.nonce != log.api_nonce) {
        log.api_challenges += 1;
        if log.api_always_challenges {
            let nonce = log.next("rs-nonce");
            log.api_nonce = Some(nonce);
        }
        let nonce = log.api_nonce.clone().unwrap_or_default();
        return with_nonce(dpop_challenge(Some(ErrorCode::UseDpopNonce)), &nonce);
    }
    if bound.is_none() || log.revoked.contains(&at) {
        return dpop_challenge(Some(ErrorCode::InvalidToken));
    }
    log.api_proofs.push(proof);
    log.api_tokens.push(at);
    "ok".into_response()
}

/// A DPoP token endpoint (`POST /token`: `refresh_token` with rotation
/// and reuse detection, and `client_credentials`; every token `DPoP`,
/// bound to the proof's key, for an hour) and a resource (any path) on two
/// ports of 127.0.0.1, sharing one [`DpopLog`]. Every proof is checked:
/// signature, `typ`, `htm`, `htu` (no query), `ath`, the key the token is
/// bound to, a `jti` never seen before at the resource, and the nonce if
/// the log asks for one. Dropping it stops both servers.
#[derive(Debug)]
pub struct DpopServer {
    log: Arc<Mutex<DpopLog>>,
    auth: ServerTask,
    api: ServerTask,
}

impl DpopServer {
    /// Starts both servers on the current runtime.
    ///
    /// # Errors
    ///
    /// When a port of 127.0.0.1 cannot be bound.
    pub async fn start() -> io::Result<DpopServer> {
        let log = Arc::new(Mutex::new(DpopLog::default()));
        let state = Server { log: log.clone() };
        let auth = ServerTask::spawn(
            Router::new()
                .route("/token", post(token))
                .with_state(state.clone()),
        )
        .await?;
        let api =
            ServerTask::spawn(Router::new().route("/{*path}", any(api)).with_state(state)).await?;
        {
            let mut log = lock(&log);
            log.auth_base = format!("http://{}", auth.addr());
            log.api_base = format!("http://{}", api.addr());
        }
        Ok(DpopServer { log, auth, api })
    }

    /// What the servers saw, and the switches of their behaviour.
    pub fn log(&self) -> MutexGuard<'_, DpopLog> {
        lock(&self.log)
    }

    /// The token endpoint's URL.
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.auth.addr())
    }

    /// The resource's origin, `http://127.0.0.1:port`.
    pub fn api_origin(&self) -> String {
        format!("http://{}", self.api.addr())
    }

    /// The resource's URL for `path_and_query` (starting with `/`).
    pub fn api_url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.api.addr())
    }

    /// A session as a DPoP login would leave it: `at-0` and `rt-0`, both
    /// bound to the key of thumbprint `jkt`, the access token good for an
    /// hour.
    pub fn login(&self, jkt: &str) -> tower_token_refresh_core::TokenSet {
        let mut log = self.log();
        log.access.insert("at-0".into(), jkt.to_owned());
        log.live_refresh.insert("rt-0".into(), jkt.to_owned());
        tower_token_refresh_core::TokenSet::bearer("at-0")
            .with_token_type("DPoP")
            .with_refresh_token("rt-0")
            .with_expires_in(Duration::from_secs(3600))
    }
}
