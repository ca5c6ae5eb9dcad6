//! A world of real servers and a layered hyper client, shared by the tests.
#![allow(dead_code, unreachable_pub)]

pub mod capture;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use tower::{Layer, ServiceExt};
use tower_token_refresh::{
    BoxError, Origin, ServiceClient, TokenManager, TokenManagerBuilder, TokenRefresh,
    TokenRefreshLayer,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
pub use tower_token_refresh_test_util::until;
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, IssuedTokens, ResourceServer, hyper_client,
};

pub type Http = Client<HttpConnector, Full<Bytes>>;
pub type Authed = TokenRefresh<Http>;

pub const HOUR: Duration = Duration::from_secs(3600);

pub struct World {
    pub auth: AuthServer,
    pub api: ResourceServer,
    pub tokens: TokenManager,
    pub client: Authed,
    pub login: IssuedTokens,
}

/// The origin of a server listening on `addr`.
pub fn origin_of(addr: std::net::SocketAddr) -> Origin {
    format!("http://{addr}").parse().unwrap()
}

pub fn grant(auth: &AuthServer, http: Http) -> RefreshTokenGrant<ServiceClient<Http>> {
    RefreshTokenGrant::new(
        auth.token_url().parse().unwrap(),
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(http),
    )
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
    let auth = AuthServer::start(config).await.unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    let http = hyper_client();
    let login = auth.login();
    let tokens =
        tweak(TokenManager::builder(grant(&auth, http.clone())).initial(login.token_set())).build();
    let layer = TokenRefreshLayer::new(tokens.clone()).allow_origin(origin_of(api.addr()));
    let client = layer.layer(http);
    World {
        auth,
        api,
        tokens,
        client,
        login,
    }
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

impl World {
    /// Waits until `n` requests have reached the token endpoint.
    pub async fn until_token_requests(&self, n: u64) {
        until("the refresh is at the token endpoint", || {
            self.auth.stats().token_requests == n
        })
        .await;
    }
}
