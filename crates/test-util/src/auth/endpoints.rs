//! The axum router and its handlers: the token endpoint (RFC 6749), the
//! authorization endpoint (approving at once), device authorization (RFC
//! 8628), token introspection (RFC 7662), revocation (RFC 7009), and the
//! metadata documents (RFC 8414, OpenID Connect discovery). Each handler counts its request, serves the faults queued for
//! it, then answers from the shared state.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Extension, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;
use tokio::{sync::oneshot, time::Instant};

use super::exchange::TOKEN_EXCHANGE;
use super::{
    MetadataDocuments,
    clients::Method,
    dpop::{check_token_proof, set_nonce},
    faults::{Endpoint, Fault, OVERSIZED_PADDING, Served, hang_up, serve_faults, take_faults},
    oauth::{
        OAuthError, authenticate_client, check_grant_assertion, invalid_request, json_response,
        origin, read_form, require_client,
    },
    state::{AuthShared, AuthorizationRequest, TokenRequest},
};
use crate::{form, serve::ConnControl};

/// The server's routes, on `shared`.
pub(super) fn router(shared: Arc<AuthShared>) -> Router {
    let path = &shared.issuer_path;
    let mut router = Router::new()
        .route(Endpoint::Token.path(), post(token_endpoint))
        .route(Endpoint::Introspection.path(), post(introspection_endpoint))
        .route(Endpoint::Revocation.path(), post(revocation_endpoint))
        .route(
            Endpoint::DeviceAuthorization.path(),
            post(device_authorization_endpoint),
        )
        .route("/authorize", get(authorization_endpoint));
    if shared.registration.is_some() {
        router = router.route(
            Endpoint::Registration.path(),
            post(super::registration::registration_endpoint),
        );
    }
    if shared.metadata != MetadataDocuments::OpenIdOnly {
        // RFC 8414 §3.1: between the host and the issuer's path.
        router = router.route(
            &format!("/.well-known/oauth-authorization-server{path}"),
            get(oauth_metadata_endpoint),
        );
    }
    if shared.metadata != MetadataDocuments::OAuthOnly {
        // OIDC Discovery §4: after the issuer's path.
        router = router.route(
            &format!("{path}/.well-known/openid-configuration"),
            get(openid_configuration_endpoint),
        );
    }
    router
        .layer(middleware::from_fn_with_state(shared.clone(), log_request))
        .with_state(shared)
}

/// Logs every request, whatever answers it.
async fn log_request(
    State(shared): State<Arc<AuthShared>>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let line = format!("{} {}", request.method(), request.uri().path());
    shared.lock().log.requests.push(line);
    next.run(request).await
}

async fn token_endpoint(
    State(shared): State<Arc<AuthShared>>,
    conn: Option<Extension<ConnControl>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.lock().stats.token_requests += 1;
    let answer = match &conn {
        // hyper drops a handler whose client hangs up; detached, the
        // request is carried out all the same.
        Some(Extension(control)) if shared.finish_abandoned => {
            let (tx, rx) = oneshot::channel();
            let shared = shared.clone();
            control.detach(async move {
                let (answer, carried_out) = token_answer(&shared, &headers, &body).await;
                // The receiver is gone only if its client hung up.
                if tx.send(answer).is_err() && carried_out {
                    shared.lock().stats.abandoned_completed += 1;
                }
            });
            // The work ends unfinished only when the server stops.
            rx.await.unwrap_or(None)
        }
        _ => token_answer(&shared, &headers, &body).await.0,
    };
    match answer {
        Some(response) => response,
        None => hang_up(conn).await,
    }
}

/// The token endpoint's answer to the request with `headers` and `body`
/// (`None`: close the connection without one), and whether the server
/// carried the request out rather than answer with a fault.
async fn token_answer(
    shared: &AuthShared,
    headers: &HeaderMap,
    body: &[u8],
) -> (Option<Response>, bool) {
    match take_faults(shared, Endpoint::Token, (headers, body)).await {
        Served::Normal(modifier) => {
            let response = match token_request(shared, headers, body, modifier) {
                Ok(response) => response,
                Err(refusal) => refusal.into_response(),
            };
            (Some(response), true)
        }
        Served::Instead(response) => (Some(response), false),
        Served::HangUp => (None, false),
    }
}

/// The device authorization grant's `grant_type` (RFC 8628 §3.4).
const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The JWT bearer grant's `grant_type` (RFC 7523 §2.1).
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The grants the token endpoint serves, as `grant_types_supported` names
/// them. A new grant is a name here and an arm in [`token_request`].
/// Token exchange joins them when switched on.
const GRANT_TYPES: [&str; 5] = [
    "refresh_token",
    "client_credentials",
    "authorization_code",
    DEVICE_CODE,
    JWT_BEARER,
];

/// The client authentication methods the server takes.
const AUTH_METHODS: [&str; 5] = [
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "client_secret_jwt",
    "none",
];

/// A required form parameter.
fn param<'a>(
    params: &'a HashMap<String, String>,
    name: &'static str,
    missing: &'static str,
) -> Result<&'a str, OAuthError> {
    params
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| invalid_request(missing))
}

fn token_request(
    shared: &AuthShared,
    headers: &HeaderMap,
    body: &[u8],
    modifier: Option<Fault>,
) -> Result<Response, OAuthError> {
    let params = read_form(headers, body)?;
    {
        let mut state = shared.lock();
        if let Some(presented) = params.get("refresh_token") {
            state.log.refresh_tokens_presented.push(presented.clone());
        }
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        state.log.token_requests.push(TokenRequest {
            params: params.clone(),
            authorization,
        });
    }

    let client = authenticate_client(shared, Endpoint::Token, headers, &params)?;
    let grant_type = params.get("grant_type").map(String::as_str);
    // Only the JWT bearer grant may come without a client (RFC 7523 §2.1).
    let client = match grant_type {
        Some(JWT_BEARER) => client.unwrap_or_default(),
        _ => require_client(shared, client)?,
    };
    let grant_type = grant_type.ok_or_else(|| invalid_request("grant_type is missing"))?;
    if grant_type == JWT_BEARER {
        let assertion = param(&params, "assertion", "assertion is missing")?;
        // Checked (and its jti spent) before the DPoP proof, as a server
        // that remembers every assertion it is shown does.
        // An ID-JAG of our own token exchange, or a signed assertion.
        let jag = shared.lock().tokens.spend_jag(assertion);
        if !jag {
            check_grant_assertion(shared, headers, assertion).inspect_err(|_| {
                shared.lock().stats.invalid_grant += 1;
            })?;
        }
    }
    let origin = origin(headers).unwrap_or_default();
    let proof = {
        let mut state = shared.lock();
        let token_url = format!("{origin}{}", Endpoint::Token.path());
        check_token_proof(&mut state, shared.dpop_required, &token_url, headers).inspect_err(
            |refusal| {
                if let Some(nonce) = refusal.nonce() {
                    state.log.token_nonces.push(nonce.to_owned());
                }
            },
        )?
    };
    let jkt = proof.as_ref().map(|proof| proof.jkt.as_str());
    if grant_type == TOKEN_EXCHANGE {
        return super::exchange::exchange(shared, &params, jkt);
    }

    let outcome = {
        let mut state = shared.lock();
        match grant_type {
            "refresh_token" => {
                let presented = param(&params, "refresh_token", "refresh_token is missing")?;
                state.refresh_grant(presented, jkt)
            }
            "client_credentials" => {
                if matches!(state.registry.clients.get(&client), Some(Method::Public)) {
                    return Err(OAuthError::new(
                        StatusCode::BAD_REQUEST,
                        "unauthorized_client",
                        "a public client cannot use client_credentials",
                    ));
                }
                state.stats.client_credentials_grants += 1;
                Ok(state.tokens.access_only(jkt))
            }
            "authorization_code" => {
                let code = param(&params, "code", "code is missing")?;
                let redirect_uri = params.get("redirect_uri").map(String::as_str);
                let verifier = params.get("code_verifier").map(String::as_str);
                let outcome = state
                    .tokens
                    .code_grant(code, &client, redirect_uri, verifier, jkt);
                if outcome.is_ok() {
                    state.stats.authorization_code_grants += 1;
                }
                outcome
            }
            DEVICE_CODE => {
                let code = param(&params, "device_code", "device_code is missing")?;
                let outcome = state.tokens.device_grant(code, &client, jkt);
                if outcome.is_ok() {
                    state.stats.device_code_grants += 1;
                }
                outcome
            }
            JWT_BEARER => {
                state.stats.jwt_bearer_grants += 1;
                Ok(state.tokens.access_only(jkt))
            }
            _ => {
                return Err(OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    "this grant type is not supported",
                ));
            }
        }
        .inspect_err(|refusal| {
            // The refresh grant counts its own.
            if grant_type != "refresh_token" {
                state.count_refusal(*refusal);
            }
        })
    };
    let grant = outcome.map_err(|refusal| {
        OAuthError::new(
            StatusCode::BAD_REQUEST,
            refusal.code(),
            refusal.description(),
        )
    })?;

    let mut body = json!({
        "access_token": grant.access_token,
        "token_type": if grant.jkt.is_some() { "DPoP" } else { "Bearer" },
        "expires_in": grant.lifetime.as_secs().max(1),
    });
    if let Some(refresh_token) = grant.refresh_token {
        body["refresh_token"] = refresh_token.into();
    }
    let mut status = StatusCode::OK;
    match modifier {
        Some(Fault::ExpiresInString) => {
            body["expires_in"] = grant.lifetime.as_secs().max(1).to_string().into();
        }
        Some(Fault::OmitField(field)) => {
            if let Some(map) = body.as_object_mut() {
                map.remove(field);
            }
        }
        Some(fault) => {
            if let Some(oversized) = fault.oversized_success() {
                status = oversized;
                body["padding"] = "x".repeat(OVERSIZED_PADDING).into();
            }
        }
        None => {}
    }
    let mut response = json_response(status, &body);
    if proof.is_some() {
        let mut state = shared.lock();
        if let Some(nonce) = state.token_nonce.after_success() {
            set_nonce(response.headers_mut(), &nonce);
            state.log.token_nonces.push(nonce);
        }
    }
    Ok(response)
}

/// What the endpoints beside the token endpoint share: serve the faults
/// queued for `endpoint`, read the form, authenticate the client (one is
/// required), then `answer` with the client's id and the form.
async fn client_endpoint(
    shared: &AuthShared,
    endpoint: Endpoint,
    conn: Option<Extension<ConnControl>>,
    (headers, body): (&HeaderMap, &[u8]),
    answer: impl FnOnce(String, &HashMap<String, String>) -> Result<Response, OAuthError>,
) -> Response {
    if let Err(response) = serve_faults(shared, endpoint, conn, (headers, body)).await {
        return response;
    }
    read_form(headers, body)
        .and_then(|params| {
            let client = authenticate_client(shared, endpoint, headers, &params)?;
            answer(require_client(shared, client)?, &params)
        })
        .unwrap_or_else(IntoResponse::into_response)
}

async fn introspection_endpoint(
    State(shared): State<Arc<AuthShared>>,
    conn: Option<Extension<ConnControl>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.lock().stats.introspections += 1;
    let request = (&headers, &body[..]);
    client_endpoint(
        &shared,
        Endpoint::Introspection,
        conn,
        request,
        |_, params| {
            let token = param(params, "token", "token is missing")?;
            Ok(json_response(StatusCode::OK, &introspect(&shared, token)))
        },
    )
    .await
}

/// The RFC 7662 answer for `token`: only `{"active":false}` for an
/// unknown, expired, revoked or rotated token.
fn introspect(shared: &AuthShared, token: &str) -> serde_json::Value {
    let now = Instant::now();
    let state = shared.lock();
    if let Some(expires_at) = state.tokens.access_expiry(token, now) {
        let left = expires_at - now;
        let exp = (std::time::SystemTime::now() + left)
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut answer = json!({
            "active": true,
            "client_id": shared.client_id,
            "token_type": "Bearer",
            "exp": exp,
        });
        // RFC 9449 §6.2: a bound token's key.
        if let Some(jkt) = state.tokens.access_jkt(token) {
            answer["token_type"] = "DPoP".into();
            answer["cnf"] = json!({ "jkt": jkt });
        }
        return answer;
    }
    if state.tokens.is_refresh_active(token) {
        return json!({
            "active": true,
            "client_id": shared.client_id,
            "token_type": "refresh_token",
        });
    }
    json!({ "active": false })
}

async fn revocation_endpoint(
    State(shared): State<Arc<AuthShared>>,
    conn: Option<Extension<ConnControl>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.lock().stats.revocation_requests += 1;
    let request = (&headers, &body[..]);
    client_endpoint(&shared, Endpoint::Revocation, conn, request, |_, params| {
        let token = param(params, "token", "token is missing")?;
        let mut state = shared.lock();
        if state.tokens.revoke(token) {
            state.stats.tokens_revoked += 1;
        }
        // RFC 7009 §2.2: 200 whether or not the token was known.
        Ok(StatusCode::OK.into_response())
    })
    .await
}

/// The server's origin and its issuer, from the Host header (the server
/// does not know its own port). The endpoints are at the origin whatever
/// the issuer's path.
fn origin_and_issuer(shared: &AuthShared, headers: &HeaderMap) -> Option<(String, String)> {
    let origin = origin(headers)?;
    let issuer = format!("{origin}{}", shared.issuer_path);
    Some((origin, issuer))
}

/// What both metadata documents say.
fn common_metadata(shared: &AuthShared, origin: &str, issuer: &str) -> serde_json::Value {
    let mut document = json!({
        "issuer": issuer,
        "token_endpoint": format!("{origin}{}", Endpoint::Token.path()),
        "authorization_endpoint": format!("{origin}/authorize"),
        "device_authorization_endpoint": format!("{origin}{}", Endpoint::DeviceAuthorization.path()),
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256", "HS256"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": ["ES256"],
    });
    if let Some(scopes) = &shared.scopes_supported {
        document["scopes_supported"] = json!(scopes);
    }
    if shared.registration.is_some() {
        document["registration_endpoint"] =
            json!(format!("{origin}{}", Endpoint::Registration.path()));
    }
    document
}

async fn oauth_metadata_endpoint(
    State(shared): State<Arc<AuthShared>>,
    headers: HeaderMap,
) -> Response {
    let Some((origin, issuer)) = origin_and_issuer(&shared, &headers) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut document = common_metadata(&shared, &origin, &issuer);
    document["introspection_endpoint"] = json!(format!("{origin}/introspect"));
    document["revocation_endpoint"] = json!(format!("{origin}/revoke"));
    json_response(StatusCode::OK, &document)
}

async fn openid_configuration_endpoint(
    State(shared): State<Arc<AuthShared>>,
    headers: HeaderMap,
) -> Response {
    let Some((origin, issuer)) = origin_and_issuer(&shared, &headers) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut document = common_metadata(&shared, &origin, &issuer);
    let mut grant_types = GRANT_TYPES.to_vec();
    if shared.token_exchange.is_some() {
        grant_types.push(TOKEN_EXCHANGE);
    }
    document["grant_types_supported"] = json!(grant_types);
    document["subject_types_supported"] = json!(["public"]);
    // With both documents served, these are only in RFC 8414's.
    if shared.metadata == MetadataDocuments::OpenIdOnly {
        document["introspection_endpoint"] = json!(format!("{origin}/introspect"));
        document["revocation_endpoint"] = json!(format!("{origin}/revoke"));
    }
    json_response(StatusCode::OK, &document)
}

/// `GET /authorize` (RFC 6749 §4.1.1): the user approves at once; the
/// answer is the redirect back to the client with a code.
async fn authorization_endpoint(
    State(shared): State<Arc<AuthShared>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let Some((_, issuer)) = origin_and_issuer(&shared, &headers) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match authorize(&shared, &issuer, uri.query().unwrap_or_default()) {
        Ok(request) => (StatusCode::FOUND, [(header::LOCATION, request.redirect)]).into_response(),
        Err(why) => (StatusCode::BAD_REQUEST, why).into_response(),
    }
}

/// An authorization request with this `query`, approved at once: checks
/// it as RFC 6749 §4.1.1 and RFC 7636 §4.3 ask (a known client, a
/// redirect URI, an S256 challenge), issues a code and logs the request.
pub(super) fn authorize(
    shared: &AuthShared,
    issuer: &str,
    query: &str,
) -> Result<AuthorizationRequest, &'static str> {
    let params: HashMap<String, String> = form::parse(query.as_bytes()).into_iter().collect();
    let get = |name: &str| params.get(name).map(String::as_str);
    if get("response_type") != Some("code") {
        return Err("response_type must be code");
    }
    let client_id = get("client_id").ok_or("client_id is missing")?;
    let redirect_uri = get("redirect_uri").ok_or("redirect_uri is missing")?;
    let challenge = get("code_challenge").ok_or("PKCE is required")?;
    if get("code_challenge_method") != Some("S256") {
        return Err("code_challenge_method must be S256");
    }
    let mut state = shared.lock();
    if !state.registry.clients.contains_key(client_id) {
        return Err("unknown client");
    }
    let code = state
        .tokens
        .issue_code(client_id, redirect_uri, Some(challenge), get("scope"));
    let mut back = form_urlencoded::Serializer::new(String::new());
    back.append_pair("code", &code);
    if let Some(state) = get("state") {
        back.append_pair("state", state);
    }
    back.append_pair("iss", issuer);
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let request = AuthorizationRequest {
        redirect: format!("{redirect_uri}{separator}{}", back.finish()),
        code,
        params,
    };
    state.log.authorization_requests.push(request.clone());
    Ok(request)
}

/// `POST /device_authorization` (RFC 8628 §3.1, §3.2).
async fn device_authorization_endpoint(
    State(shared): State<Arc<AuthShared>>,
    conn: Option<Extension<ConnControl>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.lock().stats.device_authorizations += 1;
    let request = (&headers, &body[..]);
    let endpoint = Endpoint::DeviceAuthorization;
    client_endpoint(&shared, endpoint, conn, request, |client, _| {
        let origin = origin(&headers).unwrap_or_default();
        let (device_code, user_code) = shared
            .lock()
            .tokens
            .issue_device(&client, shared.device_pending);
        let answer = json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": format!("{origin}/device"),
            "expires_in": 600,
            "interval": shared.device_interval.as_secs(),
        });
        Ok(json_response(StatusCode::OK, &answer))
    })
    .await
}
