//! DPoP (RFC 9449) against a real authorization server none of us wrote:
//! node's `oidc-provider` (interop/server.mjs), on 127.0.0.1, real time.
//! The server checks every token-endpoint proof itself and wants a nonce
//! there; its `/dpop/api/data` resource checks each proof (signature, `htm`,
//! `htu`, `ath`, `jti` replay, the token's `jkt`) and asks for a nonce of its
//! own that changes every few seconds.
//!
//! Needs node (>= 20) and `npm ci` in `interop/`; the test runs `npm ci`
//! itself when `interop/node_modules` is missing. Without node it prints
//! why and passes without checking anything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tower::{ServiceBuilder, ServiceExt};
use tower_token_refresh::{
    ServiceClient, TokenManager, TokenRefreshLayer, TokenSet, TokenSource,
    dpop::{DpopKey, DpopLayer},
    oauth2::{ClientAuth, ProviderMetadata},
};
use tower_token_refresh_test_util::hyper_client;

/// Access tokens live this long on the server (whole seconds); the
/// resource's nonce changes as often.
const ACCESS_TTL: u64 = 3;
const ROUNDS: u64 = 3;
const CONCURRENT: u64 = 5;

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop")
}

/// The provider's process.
struct Provider {
    issuer: String,
    _child: Child,
}

impl Provider {
    async fn start() -> Option<Provider> {
        let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_owned());
        if Command::new(&node).arg("--version").output().await.is_err() {
            println!(
                "SKIPPED interop_dpop: `{node}` not found; install node >= 20 to run this test"
            );
            return None;
        }
        let dir = interop_dir();
        if !dir.join("node_modules/oidc-provider").exists() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .await
                .expect("npm is needed to install interop/'s server");
            assert!(status.success(), "npm ci in interop/ failed");
        }
        let mut child = Command::new(&node)
            .arg("server.mjs")
            .current_dir(&dir)
            .env("PORT", "0")
            .env("ACCESS_TTL", ACCESS_TTL.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start interop/server.mjs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let issuer = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let line = lines.next_line().await.unwrap().expect("server exited");
                if let Some(issuer) = line.strip_prefix("LISTENING ") {
                    return issuer.to_owned();
                }
            }
        })
        .await
        .expect("server did not start within 30 s");
        // Keep reading, so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Some(Provider {
            issuer,
            _child: child,
        })
    }

    async fn call(&self, method: &str, path: &str) -> serde_json::Value {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.issuer))
            .body(Full::default())
            .unwrap();
        let response = hyper_client().request(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }

    /// A refresh token bound to `jkt`, as the end of a DPoP login gives it.
    async fn login(&self, jkt: &str) -> String {
        let value = self
            .call("POST", &format!("/test/dpop/login?jkt={jkt}"))
            .await;
        value["refresh_token"].as_str().unwrap().to_owned()
    }

    fn number(value: &serde_json::Value, name: &str) -> u64 {
        value[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} in {value}"))
    }

    async fn refresh_grants(&self) -> u64 {
        Self::number(
            &self.call("GET", "/test/stats").await,
            "refresh_token_grants",
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_bound_session_through_several_expiries() {
    let Some(provider) = Provider::start().await else {
        return;
    };
    let http = ServiceClient::new(hyper_client());
    let dpop = DpopKey::generate().unwrap();
    let metadata = ProviderMetadata::discover(&provider.issuer, &http)
        .await
        .unwrap();
    let grant = metadata
        .refresh_token_grant(ClientAuth::none("interop-dpop-client"), http.clone())
        .dpop(dpop.clone());

    // The login's refresh token is bound to our key; the first refresh by
    // hand gives a full, DPoP-bound token set.
    let seed =
        TokenSet::bearer("not-yet").with_refresh_token(provider.login(&dpop.thumbprint()).await);
    let first = grant.fetch(Some(&seed)).await.unwrap();
    assert_eq!(first.token_type(), "DPoP");
    let tokens = TokenManager::builder(grant)
        .dpop(dpop.clone())
        .initial(first)
        .build();
    let client = ServiceBuilder::new()
        .layer(
            TokenRefreshLayer::new(tokens.clone()).allow_origin(provider.issuer.parse().unwrap()),
        )
        .layer(DpopLayer::new(dpop.clone()))
        .service(hyper_client());
    let api = format!("{}/dpop/api/data", provider.issuer);

    let mut refresh_tokens = vec![tokens.current().unwrap().refresh_token().unwrap().clone()];
    for round in 1..=ROUNDS {
        // Past the real expiry (and the resource's nonce): every request of
        // the round needs a new token and a new nonce.
        tokio::time::sleep(Duration::from_millis(ACCESS_TTL * 1000 + 300)).await;
        let before = provider.refresh_grants().await;
        let mut tasks = Vec::new();
        for _ in 0..CONCURRENT {
            let client = client.clone();
            let api = api.clone();
            tasks.push(tokio::spawn(async move {
                let request = Request::get(api).body(Full::<Bytes>::default()).unwrap();
                client.oneshot(request).await.map(|r| r.status())
            }));
        }
        for task in tasks {
            assert_eq!(
                task.await.unwrap().unwrap(),
                StatusCode::OK,
                "round {round}"
            );
        }
        let after = provider.refresh_grants().await;
        assert_eq!(
            after - before,
            1,
            "round {round}: one refresh for {CONCURRENT} requests"
        );
        let current = tokens.current().unwrap();
        assert_eq!(current.token_type(), "DPoP");
        let rotated = current.refresh_token().unwrap().clone();
        assert!(!refresh_tokens.contains(&rotated), "round {round}: rotated");
        refresh_tokens.push(rotated);
    }

    // The server's own counters: the first refresh plus one per round, the
    // token endpoint's nonce challenge answered (else no grant), and each
    // resource challenge answered by exactly one resend that passed.
    assert_eq!(provider.refresh_grants().await, 1 + ROUNDS);
    let stats = provider.call("GET", "/test/dpop/stats").await;
    let count = |name| Provider::number(&stats, name);
    // One challenge: the nonce it gave (and any new one a success answer
    // brings) serves every later refresh, though the resource on the same
    // origin hands out nonces of its own.
    assert_eq!(count("token_nonce_challenges"), 1, "{stats}");
    assert!(count("api_nonce_challenges") >= ROUNDS, "{stats}");
    assert_eq!(count("api_ok"), ROUNDS * CONCURRENT, "{stats}");
    assert_eq!(count("api_rejected"), 0, "{stats}");
    assert_eq!(
        count("api_requests"),
        count("api_ok") + count("api_nonce_challenges"),
        "{stats}"
    );
}
