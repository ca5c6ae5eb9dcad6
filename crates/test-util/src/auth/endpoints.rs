//! The axum router and its handlers: the token endpoint (RFC 6749), token
//! introspection (RFC 7662), revocation (RFC 7009), and the metadata documents
//! (RFC 8414, OpenID Connect discovery). Each handler counts its request, serves the faults queued for
//! it, then answers from the shared state.

use std::sync::Arc;

use axum::{
    Extension, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;
use tokio::{sync::oneshot, time::Instant};

use super::{
    MetadataDocuments,
    faults::{Endpoint, Fault, OVERSIZED_PADDING, Served, hang_up, serve_faults, take_faults},
    oauth::{OAuthError, authenticate_client, invalid_request, json_response, read_form},
    state::AuthShared,
};
use crate::serve::ConnControl;

/// The server's routes, on `shared`.
pub(super) fn router(shared: Arc<AuthShared>) -> Router {
    let path = &shared.issuer_path;
    let mut router = Router::new()
        .route("/token", post(token_endpoint))
        .route("/introspect", post(introspection_endpoint))
        .route("/revoke", post(revocation_endpoint));
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
    router.with_state(shared)
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

fn token_request(
    shared: &AuthShared,
    headers: &HeaderMap,
    body: &[u8],
    modifier: Option<Fault>,
) -> Result<Response, OAuthError> {
    let params = read_form(headers, body)?;

    authenticate_client(shared, headers, &params)?;

    let grant = match params.get("grant_type").map(String::as_str) {
        None => return Err(invalid_request("grant_type is missing")),
        Some("refresh_token") => {
            let presented = params
                .get("refresh_token")
                .ok_or_else(|| invalid_request("refresh_token is missing"))?;
            shared.lock().refresh_grant(presented).map_err(|refusal| {
                OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    refusal.description(),
                )
            })?
        }
        Some("client_credentials") => shared.lock().client_credentials_grant(),
        Some(_) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only refresh_token and client_credentials are supported",
            ));
        }
    };

    let mut body = json!({
        "access_token": grant.access_token,
        "token_type": "Bearer",
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
    Ok(json_response(status, &body))
}

async fn introspection_endpoint(
    State(shared): State<Arc<AuthShared>>,
    conn: Option<Extension<ConnControl>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.lock().stats.introspections += 1;
    if let Err(response) =
        serve_faults(&shared, Endpoint::Introspection, conn, (&headers, &body)).await
    {
        return response;
    }
    let result = (|| -> Result<serde_json::Value, OAuthError> {
        let params = read_form(&headers, &body)?;
        authenticate_client(&shared, &headers, &params)?;
        let token = params
            .get("token")
            .ok_or_else(|| invalid_request("token is missing"))?;
        Ok(introspect(&shared, token))
    })();
    match result {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(refusal) => refusal.into_response(),
    }
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
        return json!({
            "active": true,
            "client_id": shared.client_id,
            "token_type": "Bearer",
            "exp": exp,
        });
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
    if let Err(response) =
        serve_faults(&shared, Endpoint::Revocation, conn, (&headers, &body)).await
    {
        return response;
    }
    let result = (|| -> Result<(), OAuthError> {
        let params = read_form(&headers, &body)?;
        authenticate_client(&shared, &headers, &params)?;
        let token = params
            .get("token")
            .ok_or_else(|| invalid_request("token is missing"))?;
        let mut state = shared.lock();
        if state.tokens.revoke(token) {
            state.stats.tokens_revoked += 1;
        }
        Ok(())
    })();
    match result {
        // RFC 7009 §2.2: 200 whether or not the token was known.
        Ok(()) => StatusCode::OK.into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// The server's origin and its issuer, from the Host header (the server
/// does not know its own port). The endpoints are at the origin whatever
/// the issuer's path.
fn origin_and_issuer(shared: &AuthShared, headers: &HeaderMap) -> Option<(String, String)> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let origin = format!("http://{host}");
    let issuer = format!("{origin}{}", shared.issuer_path);
    Some((origin, issuer))
}

async fn oauth_metadata_endpoint(
    State(shared): State<Arc<AuthShared>>,
    headers: HeaderMap,
) -> Response {
    let Some((origin, issuer)) = origin_and_issuer(&shared, &headers) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    json_response(
        StatusCode::OK,
        &json!({
            "issuer": issuer,
            "token_endpoint": format!("{origin}/token"),
            "introspection_endpoint": format!("{origin}/introspect"),
            "revocation_endpoint": format!("{origin}/revoke"),
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": ["code"],
        }),
    )
}

async fn openid_configuration_endpoint(
    State(shared): State<Arc<AuthShared>>,
    headers: HeaderMap,
) -> Response {
    let Some((origin, issuer)) = origin_and_issuer(&shared, &headers) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut document = json!({
        "issuer": issuer,
        "token_endpoint": format!("{origin}/token"),
        "grant_types_supported": ["refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
    });
    // With both documents served, these are only in RFC 8414's.
    if shared.metadata == MetadataDocuments::OpenIdOnly {
        document["introspection_endpoint"] = json!(format!("{origin}/introspect"));
        document["revocation_endpoint"] = json!(format!("{origin}/revoke"));
    }
    json_response(StatusCode::OK, &document)
}
