//! Real servers (test-util's, on 127.0.0.1) and a real reqwest client that
//! resolves no name: every lookup is recorded and fails, so nothing a test
//! sends can leave the machine.
#![allow(dead_code, unreachable_pub)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use reqwest::dns::{Name, Resolve, Resolving};
use tower_token_refresh::{
    Origin, ServiceClient, TokenManager, TokenManagerBuilder,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_reqwest::ReqwestService;
use tower_token_refresh_test_util::{AuthConfig, AuthServer, Gate, IssuedTokens, ResourceServer};

pub const HOUR: Duration = Duration::from_secs(3600);

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

/// The origin of a server listening on `addr`.
pub fn origin_of(addr: std::net::SocketAddr) -> Origin {
    format!("http://{addr}").parse().unwrap()
}

/// The refresh token grant, sent through reqwest too.
pub fn grant(
    auth: &AuthServer,
    http: reqwest::Client,
) -> RefreshTokenGrant<ServiceClient<ReqwestService, Bytes>> {
    RefreshTokenGrant::new(
        auth.token_url().parse().unwrap(),
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::with_body(ReqwestService::new(http)),
    )
}

/// An authorization server, a resource server, a login and the manager
/// seeded with it; the client is each test file's own.
pub struct Servers {
    pub auth: AuthServer,
    pub api: ResourceServer,
    pub login: IssuedTokens,
    pub tokens: TokenManager,
    pub http: reqwest::Client,
    pub dns: NoDns,
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
    let auth = AuthServer::start(config).await.unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    let dns = NoDns::default();
    let http = reqwest_client(&dns);
    let login = auth.login();
    let tokens =
        tweak(TokenManager::builder(grant(&auth, http.clone())).initial(login.token_set())).build();
    Servers {
        auth,
        api,
        login,
        tokens,
        http,
        dns,
    }
}

impl Servers {
    /// Revokes every access token at the server and holds the next token
    /// request until the returned gate opens.
    pub fn revoke_and_hold_refresh(&self) -> Gate {
        self.auth.expire_access_tokens();
        let gate = Gate::new();
        self.auth
            .inject(tower_token_refresh_test_util::Fault::Hold(gate.clone()), 1);
        gate
    }
}

/// Waits, in bounded steps of 1 ms on tokio's clock, until `cond` holds.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting until {what}");
}
