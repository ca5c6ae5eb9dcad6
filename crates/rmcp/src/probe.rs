//! The first step of the MCP authorization chain: ask the server without a
//! token, and read what its `401` says.

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::Full;
use tower::{Service, ServiceExt as _};
use tower_token_refresh::{BoxError, step_up::StepUp};

use crate::Error;

/// What an MCP server answered a request that carried no token
/// ([`probe`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unauthenticated {
    /// Anything but a `401`: the server wants no token.
    Open,
    /// A `401`: a token is needed. Its `Bearer` challenge may name the
    /// protected resource metadata and the scope; give them to
    /// [`McpAuthorization::discover`](tower_token_refresh::oauth2::McpAuthorization::discover).
    Challenged {
        /// The challenge's `resource_metadata` (RFC 9728 §5.1), if it has
        /// an `https` one (or `http` to a loopback host).
        resource_metadata: Option<Uri>,
        /// The challenge's `scope`, if any.
        scope: Option<String>,
    },
}

/// Sends `tools/list` to the MCP server at `server_url` through `service`
/// (the bare HTTP client, not the token layer) and reads the answer's
/// challenge. `tools/list` rather than `initialize`: some servers let
/// `initialize` through without a token and ask for one only later.
///
/// # Errors
///
/// [`Error`] for a `server_url` that is no URI, or the service's error.
pub async fn probe<S, B>(service: S, server_url: &str) -> Result<Unauthenticated, Error>
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
{
    let request = Request::post(server_url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .body(Full::new(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":0,"method":"tools/list","params":{}}"#,
        )))
        .map_err(Error::new)?;
    let response = service
        .oneshot(request)
        .await
        .map_err(|e| Error::new(e.into()))?;
    if response.status() != StatusCode::UNAUTHORIZED {
        return Ok(Unauthenticated::Open);
    }
    // The layer's challenge reader; `None` for a 401 that names neither
    // metadata nor a scope, which still asks for a token.
    let challenge = StepUp::from_response(&response);
    Ok(Unauthenticated::Challenged {
        resource_metadata: challenge
            .as_ref()
            .and_then(|c| c.resource_metadata().cloned()),
        scope: challenge
            .as_ref()
            .and_then(|c| c.scope().map(str::to_owned)),
    })
}
