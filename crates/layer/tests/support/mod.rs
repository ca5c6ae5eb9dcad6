//! A world of real servers and a layered hyper client, shared by the tests.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod capture;

use std::ops::Deref;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use tower::{Layer, ServiceExt};
use tower_token_refresh::{
    BoxError, ServiceClient, TokenManagerBuilder, TokenRefresh, TokenRefreshLayer,
    oauth2::RefreshTokenGrant,
};
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer,
    fixture::{Servers, refresh_grant},
    hyper_client,
};
pub use tower_token_refresh_test_util::{
    fixture::{HOUR, origin_of},
    until,
};

pub type Http = Client<HttpConnector, Full<Bytes>>;
pub type Authed = TokenRefresh<Http>;

/// test-util's servers, login and manager, and the layered hyper client.
pub struct World {
    pub servers: Servers,
    pub client: Authed,
}

impl Deref for World {
    type Target = Servers;

    fn deref(&self) -> &Servers {
        &self.servers
    }
}

pub fn grant(auth: &AuthServer, http: Http) -> RefreshTokenGrant<ServiceClient<Http>> {
    refresh_grant(auth, ServiceClient::new(http))
}

/// Servers with one-hour tokens (so nothing expires unless a test says so),
/// a manager seeded with a login, and the layered client.
pub async fn world(tweak: impl FnOnce(TokenManagerBuilder) -> TokenManagerBuilder) -> World {
    world_with(AuthConfig::default().access_lifetime(HOUR), tweak).await
}

pub async fn world_with(
    config: AuthConfig,
    tweak: impl FnOnce(TokenManagerBuilder) -> TokenManagerBuilder,
) -> World {
    let http = hyper_client();
    let servers = Servers::start(config, ServiceClient::new(http.clone()), tweak)
        .await
        .unwrap();
    let layer =
        TokenRefreshLayer::new(servers.tokens.clone()).allow_origin(origin_of(servers.api.addr()));
    let client = layer.layer(http);
    World { servers, client }
}

impl World {
    pub async fn get(&self, path: &str) -> Result<Response<Bytes>, BoxError> {
        send(
            &self.client,
            Request::get(self.api.url(path))
                .body(Full::default())
                .unwrap(),
        )
        .await
    }
}

pub async fn send<S>(client: &S, request: Request<Full<Bytes>>) -> Result<Response<Bytes>, BoxError>
where
    S: tower::Service<
            Request<Full<Bytes>>,
            Response = Response<hyper::body::Incoming>,
            Error = BoxError,
        > + Clone,
{
    let response = client.clone().oneshot(request).await?;
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(
        parts,
        body.collect().await?.to_bytes(),
    ))
}

pub fn session_error(err: &BoxError) -> Option<&tower_token_refresh::Error> {
    err.downcast_ref::<tower_token_refresh::Error>()
}

impl World {
    /// Sends a GET through the layered client from a task of its own.
    pub fn spawn_get(
        &self,
        path: &str,
    ) -> tokio::task::JoinHandle<Result<Response<Bytes>, BoxError>> {
        let client = self.client.clone();
        let url = self.api.url(path);
        tokio::spawn(async move {
            send(&client, Request::get(url).body(Full::default()).unwrap()).await
        })
    }
}
