//! The world a client's tests start from: an [`AuthServer`], a
//! [`ResourceServer`] that takes its tokens, a login, and a
//! [`TokenManager`] seeded with it that refreshes through the refresh token
//! grant, sent by whatever HTTP client the test suite is about (hyper-util,
//! reqwest, …). The client that carries API requests is each suite's own.
//!
//! # Example
//!
//! ```
//! use tower_token_refresh::ServiceClient;
//! use tower_token_refresh_test_util::{AuthConfig, fixture::{HOUR, Servers}, hyper_client};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
//! let http = ServiceClient::new(hyper_client());
//! let s = Servers::start(AuthConfig::default().access_lifetime(HOUR), http, |b| b).await?;
//! assert_eq!(
//!     s.tokens.current().unwrap().access_token().secret(),
//!     s.login.access_token
//! );
//! # Ok(()) }
//! ```

use std::{net::SocketAddr, time::Duration};

use tower_token_refresh::{
    Origin, TokenManager, TokenManagerBuilder,
    oauth2::{ClientAuth, HttpClient, RefreshTokenGrant},
};

use crate::{AuthConfig, AuthServer, IssuedTokens, ResourceServer, until};

/// An hour: a token lifetime for tests in which nothing expires unless
/// the test says so.
pub const HOUR: Duration = Duration::from_secs(3600);

/// The origin of a server listening on `addr`, `http://ADDR`.
///
/// # Panics
///
/// Never for a socket address: `http://` and one always make an origin.
#[allow(clippy::expect_used)]
pub fn origin_of(addr: SocketAddr) -> Origin {
    format!("http://{addr}")
        .parse()
        .expect("an http URL of a socket address is an origin")
}

/// The refresh token grant at `auth`'s token endpoint, authenticated as
/// its client by HTTP Basic, sent through `http`.
///
/// # Panics
///
/// Never: the token URL of a server on 127.0.0.1 is a valid URI.
#[allow(clippy::expect_used)]
pub fn refresh_grant<C>(auth: &AuthServer, http: C) -> RefreshTokenGrant<C> {
    let token_url = auth.token_url().parse().expect("a valid URI");
    RefreshTokenGrant::new(
        token_url,
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        http,
    )
}

/// An authorization server, a resource server of it, a login, and the
/// manager seeded with it.
#[derive(Debug)]
pub struct Servers {
    /// The authorization server.
    pub auth: AuthServer,
    /// A resource server that takes its tokens.
    pub api: ResourceServer,
    /// The login the manager was seeded with.
    pub login: IssuedTokens,
    /// The manager: seeded with `login`, refreshing through
    /// [`refresh_grant`].
    pub tokens: TokenManager,
}

impl Servers {
    /// Starts both servers with `config`, logs in, and builds the manager
    /// (its refresh grant sent through `http`), which `tweak` configures.
    ///
    /// # Errors
    ///
    /// When a server cannot bind its port.
    pub async fn start<C: HttpClient>(
        config: AuthConfig,
        http: C,
        tweak: impl FnOnce(TokenManagerBuilder) -> TokenManagerBuilder,
    ) -> std::io::Result<Servers> {
        let auth = AuthServer::start(config).await?;
        let api = ResourceServer::start(&auth).await?;
        let login = auth.login();
        let tokens =
            tweak(TokenManager::builder(refresh_grant(&auth, http)).initial(login.token_set()))
                .build();
        Ok(Servers {
            auth,
            api,
            login,
            tokens,
        })
    }

    /// Waits until `n` requests have reached the token endpoint.
    pub async fn until_token_requests(&self, n: u64) {
        until("the refresh is at the token endpoint", || {
            self.auth.stats().token_requests == n
        })
        .await;
    }
}
