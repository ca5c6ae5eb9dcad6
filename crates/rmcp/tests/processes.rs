//! Two rmcp client processes share one session file and never present a
//! spent refresh token: against a rotating authorization server that
//! revokes the whole grant when a rotated-away refresh token comes back,
//! they keep calling a tool across several access-token lifetimes, and
//! refresh once per lifetime between them, not once each.
//!
//! The test process runs the servers, logs in once into a `FileStore`
//! file, and starts this test binary twice more as the clients. Each
//! client is what an application writes: `FileStore::new(path)` (which
//! takes the file's refresh lock), `TokenManager::load`, and rmcp's
//! transport over `McpHttpClient` and `TokenRefreshLayer`. Processes
//! cannot share a paused clock, so this runs in real time (about 8 s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    fs::File,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use rmcp::{
    ServiceExt,
    model::ClientConfig,
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use support::*;
use tokio::time::Instant;
use tower::Layer;
use tower_token_refresh::{
    FileStore, ServiceClient, TokenManager, TokenRefreshLayer,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_rmcp::McpHttpClient;
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, hyper_client,
    process::{SessionDir, write_login},
};

/// Access tokens' lifetime (`expires_in` is whole seconds).
const LIFETIME: Duration = Duration::from_secs(2);
/// The clients' refresh-ahead window, without jitter: each token serves
/// 1.7 s, so the clients refresh a little more than once per lifetime.
const AHEAD: Duration = Duration::from_millis(300);
/// Each client calls `echo` this many times, one call per `PACE`: 8 s,
/// four lifetimes.
const CALLS: u32 = 80;
const PACE: Duration = Duration::from_millis(100);
/// The longest one call may take before the client counts it failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest the test waits for a client to exit before it kills it.
const CHILD_DEADLINE: Duration = Duration::from_secs(30);

/// What the clients read from their environment.
const FILE_ENV: &str = "TTR_RMCP_CHILD_FILE";
const TOKEN_URL_ENV: &str = "TTR_RMCP_CHILD_TOKEN_URL";
const CLIENT_ID_ENV: &str = "TTR_RMCP_CHILD_CLIENT_ID";
const CLIENT_SECRET_ENV: &str = "TTR_RMCP_CHILD_CLIENT_SECRET";
const MCP_URL_ENV: &str = "TTR_RMCP_CHILD_MCP_URL";
/// How a client's report line starts.
const REPORT: &str = "ttr-rmcp-child:";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_a_session_file_never_present_a_spent_refresh_token() {
    let config = AuthConfig::default()
        .access_lifetime(LIFETIME)
        .rotation(true);
    let auth = AuthServer::start(config).await.unwrap();
    let mcp = McpServer::start(&auth, Answers::SessionsAndSse).await;
    let dir = SessionDir::new("rmcp-processes", "two").unwrap();
    let started = Instant::now();
    write_login(&dir.file(), &auth).await.unwrap();

    let children: Vec<Client> = (0..2)
        .map(|i| Client::spawn(&dir, i, &auth, &mcp))
        .collect();
    let mut finished = Vec::new();
    for child in children {
        finished.push(child.finish().await);
    }
    let elapsed = started.elapsed();

    let (stats, served) = (auth.stats(), mcp.stats());
    let calls: u64 = finished.iter().map(|f| f.report.calls).sum();
    let clients: Vec<String> = finished
        .iter()
        .map(|f| format!("{}, {:?}", f.status, f.report))
        .collect();
    let story = format!(
        "clients: {clients:?}\nafter {elapsed:?}: {} refresh grants, {} invalid_grant, \
         {} reused; the MCP server answered {} echoes and refused {} requests",
        stats.refresh_grants,
        stats.invalid_grant,
        stats.reuse_detected,
        served.echoes,
        served.rejected,
    );
    println!("{story}");
    for f in &finished {
        assert!(
            f.status.success(),
            "a client failed:\n{}\n{story}",
            f.output
        );
        assert_eq!(f.report.failed, 0, "{story}");
        assert_eq!(f.report.calls, u64::from(CALLS), "{story}");
    }
    assert_eq!(stats.reuse_detected, 0, "{story}");
    assert_eq!(stats.invalid_grant, 0, "{story}");
    // One refresh per lifetime between the two, not one each.
    let most = elapsed.as_millis() / LIFETIME.as_millis() + 2;
    assert!(u128::from(stats.refresh_grants) <= most, "{story}");
    // Several lifetimes passed: the clients did refresh.
    assert!(stats.refresh_grants >= 3, "{story}");
    assert_eq!(served.echoes, calls, "{story}");
}

/// Not a test of its own: a client that
/// `two_processes_sharing_a_session_file_never_present_a_spent_refresh_token`
/// starts as a child process (this test binary run again). Run without the
/// environment it needs, it does nothing.
#[tokio::test]
#[ignore = "a child process of two_processes_sharing_a_session_file_never_present_a_spent_refresh_token"]
async fn mcp_client_child_process() {
    let Ok(file) = std::env::var(FILE_ENV) else {
        return;
    };
    let var = |name| std::env::var(name).unwrap();
    let mcp_url = var(MCP_URL_ENV);
    let http = hyper_client();
    let grant = RefreshTokenGrant::new(
        var(TOKEN_URL_ENV).parse().unwrap(),
        ClientAuth::basic(var(CLIENT_ID_ENV), var(CLIENT_SECRET_ENV)),
        ServiceClient::new(http.clone()),
    );
    let tokens = TokenManager::builder(grant)
        .store(FileStore::new(file))
        .refresh_ahead(AHEAD)
        .refresh_jitter(0.0)
        .build();
    assert!(tokens.load().await.unwrap(), "the file holds no session");

    let uri = mcp_url.parse::<http::Uri>().unwrap();
    let origin = format!("http://{}", uri.authority().unwrap());
    let layer = TokenRefreshLayer::new(tokens.clone()).allow_origin(origin.parse().unwrap());
    let config = StreamableHttpClientTransportConfig::with_uri(mcp_url);
    let transport =
        StreamableHttpClientTransport::with_client(McpHttpClient::new(layer.layer(http)), config);
    let client = ClientConfig::default().serve(transport).await.unwrap();

    let (mut pace, mut failed) = (tokio::time::interval(PACE), 0);
    for call in 0..CALLS {
        pace.tick().await;
        let text = format!("call {call}");
        match tokio::time::timeout(CALL_TIMEOUT, echo(&client, &text)).await {
            Ok(Ok(answer)) if answer == text => {}
            other => {
                eprintln!("echo({text:?}) failed: {other:?}");
                failed += 1;
            }
        }
    }
    let ours = tokens.stats();
    println!(
        "{REPORT} calls={CALLS} failed={failed} refreshes={} adopted={}",
        ours.refreshes_succeeded, ours.adopted_from_store
    );
    let _ = client.cancel().await;
    assert_eq!(failed, 0);
    assert!(!tokens.is_session_expired());
}

/// A client process, killed when dropped.
struct Client {
    child: Child,
    output: std::path::PathBuf,
}

/// How a client ended and what it said.
struct Finished {
    status: ExitStatus,
    report: Report,
    output: String,
}

/// A client's report line.
#[derive(Debug, Default)]
struct Report {
    calls: u64,
    failed: u64,
    /// Refreshes, and of those the ones that took the other's new tokens
    /// from the file.
    refreshes: u64,
    adopted: u64,
}

impl Client {
    fn spawn(dir: &SessionDir, i: usize, auth: &AuthServer, mcp: &McpServer) -> Client {
        let file = dir.file();
        let output = file.with_file_name(format!("client-{i}.out"));
        let out = File::create(&output).unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["mcp_client_child_process", "--exact", "--ignored"])
            .args(["--nocapture", "--test-threads=1"])
            .env(FILE_ENV, &file)
            .env(TOKEN_URL_ENV, auth.token_url())
            .env(CLIENT_ID_ENV, auth.client_id())
            .env(CLIENT_SECRET_ENV, auth.client_secret())
            .env(MCP_URL_ENV, mcp.url())
            .stdin(Stdio::null())
            .stderr(out.try_clone().unwrap())
            .stdout(out)
            .spawn()
            .unwrap();
        Client { child, output }
    }

    /// Waits for the client to exit, at most `CHILD_DEADLINE`.
    async fn finish(mut self) -> Finished {
        let deadline = Instant::now() + CHILD_DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "a client still ran after {CHILD_DEADLINE:?}: {}",
                read(&self.output)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let output = read(&self.output);
        let report = output
            .lines()
            .find_map(|line| line.split(REPORT).nth(1))
            .map(parse_report)
            .unwrap_or_default();
        Finished {
            status,
            report,
            output,
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn parse_report(line: &str) -> Report {
    let mut report = Report::default();
    for field in line.split_whitespace() {
        let Some((name, value)) = field.split_once('=') else {
            continue;
        };
        let value = value.parse().unwrap_or_default();
        match name {
            "calls" => report.calls = value,
            "failed" => report.failed = value,
            "refreshes" => report.refreshes = value,
            "adopted" => report.adopted = value,
            _ => {}
        }
    }
    report
}
