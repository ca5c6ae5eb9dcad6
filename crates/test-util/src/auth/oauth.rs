//! RFC 6749 plumbing the endpoints share: reading form bodies, authenticating
//! the client, and the JSON and error responses they answer with.

use std::collections::HashMap;

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use serde_json::json;

use super::{
    clients::{Assertion, Method, Verifier, check_jws, unverified_claims},
    faults::Endpoint,
    state::AuthShared,
};
use crate::{auth::dpop::set_nonce, form};

/// RFC 7523 §2.2's `client_assertion_type`.
const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Reads a form body (RFC 6749 §3.1: empty parameters count as omitted;
/// repeated ones are refused).
pub(super) fn read_form(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<HashMap<String, String>, OAuthError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut params: HashMap<String, String> = HashMap::new();
    for (name, value) in form::parse(body) {
        if value.is_empty() {
            continue;
        }
        if params.contains_key(&name) {
            return Err(invalid_request("a parameter was repeated"));
        }
        params.insert(name, value);
    }
    Ok(params)
}

/// Authenticates the client of a request to `endpoint` the way it was
/// registered: HTTP Basic or a secret in the body, a signed
/// `client_assertion`, or (a public client) its `client_id` alone; one
/// way, not two. `Ok(None)`: the request carries no client at all, which
/// only the JWT bearer grant accepts ([`require_client`] refuses it).
pub(super) fn authenticate_client(
    shared: &AuthShared,
    endpoint: Endpoint,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Option<String>, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| credentials.trim());
    let secret = params.get("client_secret");
    let assertion = params.get("client_assertion");
    if [basic.is_some(), secret.is_some(), assertion.is_some()]
        .iter()
        .filter(|&&used| used)
        .count()
        > 1
    {
        return Err(invalid_request(
            "more than one client authentication method was used",
        ));
    }
    if let Some(assertion) = assertion {
        return authenticate_assertion(shared, endpoint, headers, params, assertion).map(Some);
    }
    let (id, secret) = match (basic, secret) {
        (Some(credentials), _) => match decode_basic(credentials) {
            Some((id, secret)) => (id, Some(secret)),
            None => return Err(invalid_client(shared, "malformed Basic credentials")),
        },
        (None, Some(secret)) => match params.get("client_id") {
            Some(id) => (id.clone(), Some(secret.clone())),
            None => return Err(invalid_client(shared, "client_id is missing")),
        },
        (None, None) => match params.get("client_id") {
            Some(id) => (id.clone(), None),
            None => return Ok(None),
        },
    };
    let known = {
        let state = shared.lock();
        match (state.registry.clients.get(&id), &secret) {
            (Some(Method::Secret(expected)), Some(secret)) => expected == secret,
            (Some(Method::Public), None) => true,
            _ => false,
        }
    };
    if known {
        Ok(Some(id))
    } else if secret.is_none() {
        Err(invalid_client(shared, "no client authentication"))
    } else {
        Err(invalid_client(shared, "unknown client or wrong secret"))
    }
}

/// Refuses a request that named no client (`invalid_client`).
pub(super) fn require_client(
    shared: &AuthShared,
    client: Option<String>,
) -> Result<String, OAuthError> {
    client.ok_or_else(|| invalid_client(shared, "no client authentication"))
}

/// RFC 7523 §3 client authentication: the assertion is signed with the
/// client's registered key or secret, names the client as `iss` and `sub`,
/// this server (its origin, the endpoint or the token endpoint) as `aud`,
/// and carries a `jti` never accepted before.
fn authenticate_assertion(
    shared: &AuthShared,
    endpoint: Endpoint,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    assertion: &str,
) -> Result<String, OAuthError> {
    if params.get("client_assertion_type").map(String::as_str) != Some(CLIENT_ASSERTION_TYPE) {
        return Err(invalid_request("client_assertion_type is missing or wrong"));
    }
    let id = match params.get("client_id") {
        Some(id) => id.clone(),
        None => unverified_claims(assertion)
            .and_then(|claims| claims["sub"].as_str().map(str::to_owned))
            .ok_or_else(|| invalid_client(shared, "no client_id"))?,
    };
    let mut state = shared.lock();
    let checked = match state.registry.clients.get(&id) {
        Some(Method::PrivateKeyJwt(key)) => check_jws(assertion, &Verifier::Key(key)),
        Some(Method::SecretJwt(secret)) => check_jws(assertion, &Verifier::Secret(secret)),
        _ => Err("unknown client"),
    };
    let (header, claims) = match checked {
        Ok(checked) => checked,
        Err(why) => {
            state.stats.invalid_client += 1;
            return Err(OAuthError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                why,
            ));
        }
    };
    let audiences = audiences(headers, endpoint);
    let aud = claims["aud"].as_str().unwrap_or_default();
    if claims["iss"] != *id || claims["sub"] != *id || !audiences.iter().any(|a| a == aud) {
        state.stats.invalid_client += 1;
        return Err(OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "iss, sub or aud is wrong",
        ));
    }
    if !state
        .tokens
        .spend_jti(claims["jti"].as_str().unwrap_or_default())
    {
        state.stats.invalid_client += 1;
        return Err(OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "jti replayed",
        ));
    }
    state.log.assertions.push(Assertion {
        endpoint,
        param: "client_assertion",
        header,
        claims,
    });
    Ok(id)
}

/// The JWT bearer grant's assertion (RFC 7523 §2.1, §3): signed by a
/// registered issuer, for this server (its origin or token endpoint), with
/// a `jti` never accepted before. Refused as `invalid_grant`.
pub(super) fn check_grant_assertion(
    shared: &AuthShared,
    headers: &HeaderMap,
    assertion: &str,
) -> Result<(), OAuthError> {
    let refuse = |why| OAuthError::new(StatusCode::BAD_REQUEST, "invalid_grant", why);
    let iss = unverified_claims(assertion)
        .and_then(|claims| claims["iss"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut state = shared.lock();
    let Some(key) = state.registry.issuers.get(&iss) else {
        return Err(refuse("unknown issuer"));
    };
    let (header, claims) = check_jws(assertion, &Verifier::Key(key)).map_err(refuse)?;
    let aud = claims["aud"].as_str().unwrap_or_default();
    // The token endpoint is also the endpoint posted to.
    if !audiences(headers, Endpoint::Token).iter().any(|a| a == aud) {
        return Err(refuse("aud is wrong"));
    }
    if !state
        .tokens
        .spend_jti(claims["jti"].as_str().unwrap_or_default())
    {
        return Err(refuse("jti replayed"));
    }
    state.log.assertions.push(Assertion {
        endpoint: Endpoint::Token,
        param: "assertion",
        header,
        claims,
    });
    Ok(())
}

/// What an assertion sent to `endpoint` may name as `aud`: the token
/// endpoint, the server's origin, and the endpoint itself.
fn audiences(headers: &HeaderMap, endpoint: Endpoint) -> Vec<String> {
    let origin = origin(headers).unwrap_or_default();
    vec![
        format!("{origin}{}", Endpoint::Token.path()),
        format!("{origin}{}", endpoint.path()),
        origin,
    ]
}

/// The server's origin, `http://HOST`, from the Host header (the server
/// does not know its own port).
pub(super) fn origin(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    Some(format!("http://{host}"))
}

/// Base64, then `id:secret`, each form-urldecoded (RFC 6749 §2.3.1).
fn decode_basic(credentials: &str) -> Option<(String, String)> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((
        form::decode(&decoded[..colon]),
        form::decode(&decoded[colon + 1..]),
    ))
}

/// An OAuth2 error response (RFC 6749 §5.2), before it becomes one.
pub(super) struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: &'static str,
    /// A DPoP nonce to send with it (`use_dpop_nonce`).
    nonce: Option<String>,
}

impl OAuthError {
    pub(super) fn new(status: StatusCode, code: &'static str, description: &'static str) -> Self {
        OAuthError {
            status,
            code,
            description,
            nonce: None,
        }
    }

    /// The DPoP nonce sent with it, if any.
    pub(super) fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }

    /// Sends `nonce` in `DPoP-Nonce` with the error.
    pub(super) fn with_nonce(mut self, nonce: String) -> Self {
        self.nonce = Some(nonce);
        self
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = json_response(
            self.status,
            &json!({"error": self.code, "error_description": self.description}),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6749 §5.2: a 401 `invalid_client` carries a challenge.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="test""#),
            );
        }
        if let Some(nonce) = &self.nonce {
            set_nonce(response.headers_mut(), nonce);
        }
        response
    }
}

/// 400 `invalid_request`.
pub(super) fn invalid_request(description: &'static str) -> OAuthError {
    OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// 401 `invalid_client`, counted in the stats.
fn invalid_client(shared: &AuthShared, description: &'static str) -> OAuthError {
    shared.lock().stats.invalid_client += 1;
    OAuthError::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
}

/// A JSON answer with the headers RFC 6749 asks of token responses.
pub(super) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // RFC 6749 §5.1: token responses must not be cached.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded_after_base64() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("id%3A1:s%26cr+t");
        assert_eq!(
            decode_basic(&encoded),
            Some(("id:1".to_owned(), "s&cr t".to_owned()))
        );
        assert_eq!(decode_basic("not base64!"), None);
        let no_colon = base64::engine::general_purpose::STANDARD.encode("idsecret");
        assert_eq!(decode_basic(&no_colon), None);
    }
}
