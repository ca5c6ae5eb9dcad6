//! The interop server, interop/server.mjs (node's `oidc-provider`), run as a
//! child process of the test on 127.0.0.1, with the `EVENT` lines it prints
//! and its test-only JSON routes.
//!
//! Needs node (>= 20) and `npm ci` in `interop/`; [`Provider::start`] runs
//! `npm ci` itself when `interop/node_modules` is missing, and without node
//! prints why and gives `None`, so that the test passes without checking
//! anything.

use std::{
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tower::{Service, ServiceExt};
use tower_token_refresh_test_util::hyper_client;

/// The provider's process (killed when dropped) and the `EVENT` lines it
/// printed.
pub struct Provider {
    pub issuer: String,
    events: Arc<Mutex<Vec<String>>>,
    _child: Child,
}

impl Provider {
    /// Starts interop/server.mjs on a free port with `env` set on top of
    /// `PORT=0` (e.g. `ACCESS_TTL`, `ASSERTION_JWKS`), and waits (at most
    /// 30 s) for its `LISTENING <issuer>` line.
    pub async fn start(env: &[(&str, &str)]) -> Option<Provider> {
        let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_owned());
        if Command::new(&node).arg("--version").output().await.is_err() {
            println!(
                "SKIPPED {}: `{node}` not found; install node >= 20 to run this test",
                env!("CARGO_CRATE_NAME")
            );
            return None;
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop");
        if !dir.join("node_modules/oidc-provider").exists() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .await
                .expect("npm is needed to install interop/'s server");
            assert!(status.success(), "npm ci in interop/ failed");
        }
        let mut command = Command::new(&node);
        command
            .arg("server.mjs")
            .current_dir(&dir)
            .env("PORT", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start interop/server.mjs");
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
        // Keep reading to the end, so that the server never blocks on a full
        // pipe.
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(event) = line.strip_prefix("EVENT ") {
                    sink.lock().unwrap().push(event.to_owned());
                }
            }
        });
        Some(Provider {
            issuer,
            events,
            _child: child,
        })
    }

    /// How many times the server logged `event`.
    pub fn count(&self, event: &str) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| *e == event)
            .count()
    }

    /// The count of `event` once it reaches `expected`, or what it is after
    /// 5 s: the server logs an event on its stdout, read by a task of ours,
    /// so the log line may come a moment after the HTTP answer.
    pub async fn count_reaching(&self, event: &str, expected: usize) -> usize {
        for _ in 0..500 {
            if self.count(event) >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.count(event)
    }

    /// The count of `event` once no new one came for 100 ms (at most 5 s).
    pub async fn settled_count(&self, event: &str) -> usize {
        let mut last = self.count(event);
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.count(event);
            if now == last {
                break;
            }
            last = now;
        }
        last
    }

    /// One of the server's test-only JSON routes (`/test/...`), with no
    /// body: its status and its JSON answer.
    pub async fn call_with_status(
        &self,
        method: Method,
        path: &str,
    ) -> (StatusCode, serde_json::Value) {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.issuer))
            .body(Full::default())
            .unwrap();
        let response = hyper_client().request(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// [`call_with_status`](Self::call_with_status)'s JSON answer alone.
    pub async fn call(&self, method: Method, path: &str) -> serde_json::Value {
        self.call_with_status(method, path).await.1
    }
}

/// Sends `n` GETs to `url` through `client` at once, each from a task of its
/// own, and asserts that every one was answered 200 (`round` names the
/// round in the message).
pub async fn all_ok_at_once<S, B>(client: &S, url: &str, n: u64, round: u64)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug + Send,
    B: Send + 'static,
{
    let mut tasks = Vec::new();
    for _ in 0..n {
        let client = client.clone();
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let request = Request::get(url).body(Full::<Bytes>::default()).unwrap();
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
}
