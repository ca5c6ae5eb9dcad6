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

use super::state::AuthShared;
use crate::form;

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

/// Checks the client credentials: HTTP Basic or the body, not both.
pub(super) fn authenticate_client(
    shared: &AuthShared,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(), OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| credentials.trim());
    let (id, secret) = match (basic, params.get("client_secret")) {
        (Some(_), Some(_)) => {
            return Err(invalid_request(
                "more than one client authentication method was used",
            ));
        }
        (Some(credentials), None) => match decode_basic(credentials) {
            Some(pair) => pair,
            None => return Err(invalid_client(shared, "malformed Basic credentials")),
        },
        (None, Some(secret)) => match params.get("client_id") {
            Some(id) => (id.clone(), secret.clone()),
            None => return Err(invalid_client(shared, "client_id is missing")),
        },
        (None, None) => return Err(invalid_client(shared, "no client authentication")),
    };
    if id == shared.client_id && secret == shared.client_secret {
        Ok(())
    } else {
        Err(invalid_client(shared, "unknown client or wrong secret"))
    }
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
}

impl OAuthError {
    pub(super) fn new(status: StatusCode, code: &'static str, description: &'static str) -> Self {
        OAuthError {
            status,
            code,
            description,
        }
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
