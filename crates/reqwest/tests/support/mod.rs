//! Real servers (test-util's, on 127.0.0.1) and a real reqwest client that
//! resolves no name: every lookup is recorded and fails, so nothing a test
//! sends can leave the machine.
#![allow(dead_code, unreachable_pub)]

use std::{
    ops::Deref,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode};
use reqwest::dns::{Name, Resolve, Resolving};
use reqwest_middleware::ClientWithMiddleware;
use tokio::task::JoinHandle;
use tower::ServiceExt;
use tower_token_refresh::{
    BoxError, ErrorKind, ServiceClient, TokenManagerBuilder, TokenRefresh,
    oauth2::RefreshTokenGrant,
};
use tower_token_refresh_reqwest::ReqwestService;
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, Fault, Gate, ResourceServer,
    fixture::{self, refresh_grant},
};
pub use tower_token_refresh_test_util::{
    fixture::{HOUR, origin_of},
    until,
};

/// A resolver that resolves nothing and remembers every name it was asked.
#[derive(Clone, Default)]
pub struct NoDns(Arc<Mutex<Vec<String>>>);

impl NoDns {
    pub fn lookups(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl Resolve for NoDns {
    fn resolve(&self, name: Name) -> Resolving {
        self.0.lock().unwrap().push(name.as_str().to_owned());
        Box::pin(async { Err("this test resolves no names".into()) })
    }
}

/// A reqwest client for loopback: no proxy, no name resolution.
pub fn reqwest_client(dns: &NoDns) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .dns_resolver(Arc::new(dns.clone()))
        .build()
        .unwrap()
}

/// The refresh token grant, sent through reqwest too.
pub fn grant(
    auth: &AuthServer,
    http: reqwest::Client,
) -> RefreshTokenGrant<ServiceClient<ReqwestService, Bytes>> {
    refresh_grant(auth, ServiceClient::with_body(ReqwestService::new(http)))
}

/// test-util's servers, login and manager (refreshing through reqwest),
/// and the reqwest client; the client with the layer's behaviour is each
/// test file's own.
pub struct Servers {
    pub servers: fixture::Servers,
    pub http: reqwest::Client,
    pub dns: NoDns,
}

impl Deref for Servers {
    type Target = fixture::Servers;

    fn deref(&self) -> &fixture::Servers {
        &self.servers
    }
}

/// Servers with one-hour tokens, so that nothing expires unless a test
/// says so.
pub async fn servers(tweak: impl FnOnce(TokenManagerBuilder) -> TokenManagerBuilder) -> Servers {
    servers_with(AuthConfig::default().access_lifetime(HOUR), tweak).await
}

pub async fn servers_with(
    config: AuthConfig,
    tweak: impl FnOnce(TokenManagerBuilder) -> TokenManagerBuilder,
) -> Servers {
    let dns = NoDns::default();
    let http = reqwest_client(&dns);
    let via_reqwest: ServiceClient<_, Bytes> =
        ServiceClient::with_body(ReqwestService::new(http.clone()));
    let servers = fixture::Servers::start(config, via_reqwest, tweak)
        .await
        .unwrap();
    Servers { servers, http, dns }
}

/// The two ways this crate puts the layer's behaviour in front of reqwest,
/// as the shared scenarios below drive them: one GET, its status.
pub trait Get: Clone + Send + Sync + 'static {
    type Error: std::fmt::Debug + Send + 'static;

    /// Takes the client and the URL by value so that the future borrows
    /// nothing and can be spawned.
    fn get_status(
        self,
        url: String,
    ) -> impl Future<Output = Result<StatusCode, Self::Error>> + Send;

    /// The layer's own error inside one of this client's errors.
    fn token_error(error: &Self::Error) -> Option<&tower_token_refresh::Error>;
}

/// `TokenRefreshMiddleware` in a reqwest-middleware client.
impl Get for ClientWithMiddleware {
    type Error = reqwest_middleware::Error;

    async fn get_status(self, url: String) -> Result<StatusCode, Self::Error> {
        self.get(url).send().await.map(|r| r.status())
    }

    fn token_error(error: &Self::Error) -> Option<&tower_token_refresh::Error> {
        tower_token_refresh_reqwest::token_error(error)
    }
}

/// `ReqwestService` under `TokenRefreshLayer`.
impl Get for TokenRefresh<ReqwestService> {
    type Error = BoxError;

    async fn get_status(self, url: String) -> Result<StatusCode, Self::Error> {
        let response = self.oneshot(Request::get(url).body(Bytes::new())?).await?;
        Ok(response.status())
    }

    fn token_error(error: &Self::Error) -> Option<&tower_token_refresh::Error> {
        error.downcast_ref()
    }
}

pub async fn get<C: Get>(client: &C, url: &str) -> Result<StatusCode, C::Error> {
    client.clone().get_status(url.to_owned()).await
}

/// Sends a GET from a task of its own.
pub fn spawn_get<C: Get>(client: &C, url: String) -> JoinHandle<Result<StatusCode, C::Error>> {
    tokio::spawn(client.clone().get_status(url))
}

// The scenarios both test files run, each through its own client (`client`
// builds it from the servers). Each returns the servers so that a file can
// check what only its client shows.

pub async fn the_token_is_attached_and_nothing_is_refreshed<C: Get>(
    client: impl FnOnce(&Servers) -> C,
) -> Servers {
    let s = servers(|b| b).await;
    let client = client(&s);
    for _ in 0..3 {
        assert_eq!(get(&client, &s.api.url("/api/data")).await.unwrap(), 200);
    }
    assert_eq!(s.api.requests_with(&s.login.access_token), 3);
    assert_eq!(s.auth.stats().token_requests, 0);
    s
}

/// Run under paused time.
pub async fn past_expiry_a_request_waits_for_the_refresh<C: Get>(
    client: impl FnOnce(&Servers) -> C,
) -> Servers {
    let s = servers_with(
        AuthConfig::default().access_lifetime(Duration::from_secs(100)),
        |b| {
            b.refresh_ahead(Duration::ZERO)
                .expiry_leeway(Duration::from_secs(5))
        },
    )
    .await;
    let client = client(&s);
    let gate = Gate::new();
    s.auth.inject(Fault::Hold(gate.clone()), 1);
    tokio::time::advance(Duration::from_secs(96)).await;
    let waiting = spawn_get(&client, s.api.url("/api/data"));
    until("the refresh is at the token endpoint", || {
        s.auth.stats().token_requests == 1
    })
    .await;
    assert_eq!(
        s.api.stats().requests,
        0,
        "nothing sent with the expiring token"
    );
    gate.open();
    assert_eq!(waiting.await.unwrap().unwrap(), 200);
    assert_eq!(s.auth.stats().refresh_grants, 1);
    assert_eq!(s.api.requests_with(&s.login.access_token), 0);
    s
}

pub async fn concurrent_rejections_share_one_refresh_grant<C: Get>(
    n: usize,
    client: impl FnOnce(&Servers) -> C,
) -> Servers {
    let s = servers(|b| b).await;
    let client = client(&s);
    let gate = s.auth.expire_and_hold_refresh();
    let tasks: Vec<_> = (0..n)
        .map(|_| spawn_get(&client, s.api.url("/api/data")))
        .collect();
    // Every first attempt is rejected before the one refresh may finish.
    until("every first attempt was rejected", || {
        s.api.stats().rejected == n as u64
    })
    .await;
    gate.open();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 200);
    }
    assert_eq!(s.auth.stats().refresh_grants, 1);
    assert_eq!(s.auth.stats().token_requests, 1);
    assert_eq!(s.tokens.stats().replays, n as u64);
    s
}

/// Returns the servers, the other origin's server and the error.
pub async fn a_request_to_another_origin_is_refused_and_nothing_reaches_it<C: Get>(
    client: impl FnOnce(&Servers) -> C,
) -> (Servers, ResourceServer, C::Error) {
    let s = servers(|b| b).await;
    let other = ResourceServer::start(&s.auth).await.unwrap();
    let client = client(&s);
    let error = get(&client, &other.url("/api/data")).await.unwrap_err();
    let token_error = C::token_error(&error).expect("a token error");
    assert_eq!(token_error.kind(), ErrorKind::Policy);
    assert_eq!(other.stats().requests, 0);
    (s, other, error)
}
