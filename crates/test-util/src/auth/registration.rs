//! Dynamic client registration (RFC 7591): the [`Registration`] switch and
//! `POST /register`, which puts the client it creates into the registry
//! the token endpoint authenticates against.

use std::sync::Arc;

use axum::{
    Extension,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde_json::{Value, json};

use super::{
    Client,
    faults::{Endpoint, serve_faults},
    oauth::json_response,
    state::AuthShared,
};
use crate::serve::ConnControl;

/// How an [`AuthServer`](super::AuthServer) answers dynamic client
/// registration (RFC 7591), switched on with
/// [`AuthConfig::registration`](super::AuthConfig::registration).
///
/// By default the server grants the `token_endpoint_auth_method` asked
/// for (`client_secret_basic` when none is, as RFC 7591 §2 says);
/// [`answer_method`](Self::answer_method) makes it choose another, as a
/// server that supports only one does.
///
/// # Example
///
/// ```
/// use tower_token_refresh_test_util::{AuthConfig, AuthServer, Registration};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// let config = AuthConfig::default()
///     .registration(Registration::new().answer_method("client_secret_post"));
/// let auth = AuthServer::start(config).await?;
/// assert!(auth.registration_url().ends_with("/register"));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Registration {
    answer_method: Option<String>,
}

impl Registration {
    /// Registration that grants the method asked for.
    pub fn new() -> Registration {
        Registration::default()
    }

    /// Grants `method` whatever the request asked: `client_secret_basic`
    /// or `client_secret_post` (a client with a secret, which may use
    /// either), or `none` (a public client, no secret).
    pub fn answer_method(mut self, method: impl Into<String>) -> Registration {
        self.answer_method = Some(method.into());
        self
    }
}

/// The methods a registration may be granted.
const METHODS: [&str; 3] = ["client_secret_basic", "client_secret_post", "none"];

/// `POST /register` (RFC 7591 §3): JSON client metadata in, 201 with the
/// client's id, its secret (unless it is public), the method granted and
/// the metadata asked for.
pub(super) async fn registration_endpoint(
    State(shared): State<Arc<AuthShared>>,
    conn: Option<Extension<ConnControl>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.lock().stats.registrations += 1;
    if let Err(response) =
        serve_faults(&shared, Endpoint::Registration, conn, (&headers, &body)).await
    {
        return response;
    }
    let Some(config) = &shared.registration else {
        return json_response(StatusCode::NOT_FOUND, &json!({}));
    };
    let Ok(Value::Object(mut metadata)) = serde_json::from_slice::<Value>(&body) else {
        return metadata_error("the body is not a JSON object");
    };
    let asked = metadata
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str)
        .unwrap_or("client_secret_basic")
        .to_owned();
    let method = config.answer_method.clone().unwrap_or(asked);
    if !METHODS.contains(&method.as_str()) {
        return metadata_error("unsupported token_endpoint_auth_method");
    }
    let mut state = shared.lock();
    state
        .log
        .registrations
        .push(Value::Object(metadata.clone()));
    let (client_id, secret) = state.tokens.mint_client();
    let client = if method == "none" {
        Client::public(&client_id)
    } else {
        metadata.insert("client_secret".to_owned(), secret.clone().into());
        metadata.insert("client_secret_expires_at".to_owned(), 0.into());
        Client::secret(&client_id, secret)
    };
    state.registry.register(client);
    drop(state);
    metadata.insert("client_id".to_owned(), client_id.into());
    metadata.insert("token_endpoint_auth_method".to_owned(), method.into());
    json_response(StatusCode::CREATED, &Value::Object(metadata))
}

/// 400 `invalid_client_metadata` (RFC 7591 §3.2.2).
fn metadata_error(description: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": "invalid_client_metadata", "error_description": description}),
    )
}
