//! One login, many processes, against a real authorization server none of
//! us wrote: real `ttr-session` processes share one `FileStore` file across
//! about ten access-token lifetimes of node's `oidc-provider`
//! (interop/server.mjs), which rotates refresh tokens and revokes the whole
//! grant when a consumed one comes back. `processes.rs` runs the same
//! scenario against test-util's `AuthServer`.
//!
//! The test process starts the provider, takes a refresh token from its
//! test-only login route and the first access token with it, writes the
//! session file as the end of a login would leave it, and spawns the
//! children; they resume from the file and never log in themselves. A
//! second test runs the same scene with the file's lock turned off, to show
//! that the first would catch processes that do not coordinate.
//!
//! Needs node (>= 20) and `npm ci` in `interop/` (run here when
//! `interop/node_modules` is missing); without node it prints why and
//! passes without checking anything, as `interop.rs` does. Linux only, as
//! `processes.rs`. The two tests run one at a time (6 processes and node on
//! 2 cores); the first takes about 35 s, the second usually a few
//! seconds.
#![cfg(target_os = "linux")]
// A failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{path::Path, time::Duration};

use http::Method;
use support::interop::Provider;
use tokio::time::Instant;
use tower_token_refresh::{
    FileStore, ServiceClient, TokenSet, TokenSource, TokenStore,
    oauth2::{ClientAuth, ProviderMetadata},
};
use tower_token_refresh_test_util::{
    hyper_client,
    process::{self, Finished, SessionConfig, SessionProcess},
};

/// Processes sharing the file.
const CHILDREN: usize = 6;
/// The provider's access token lifetime, in seconds (`ACCESS_TTL`).
const ACCESS_TTL: u64 = 3;
const LIFETIME: Duration = Duration::from_secs(ACCESS_TTL);
/// The children's refresh-ahead window, without jitter: every process
/// holding a token starts its refresh at the same moment, the hardest case
/// for the lock. oidc-provider counts in whole seconds: a token issued at
/// 10.9 s with a 3 s lifetime expires at 13 s, though it says
/// `expires_in: 3`. Refreshing 1.5 s before the announced expiry leaves
/// every process the new token before the old one can die on the server,
/// so no request is ever rejected. Each token then serves
/// `LIFETIME - AHEAD` = 1.5 s: that is the refresh window.
const AHEAD: Duration = Duration::from_millis(1500);
/// How long the children run: about ten access-token lifetimes.
const RUN: Duration = Duration::from_secs(32);
/// The longest a child may take beyond its run before the test kills it.
const GRACE_TO_EXIT: Duration = Duration::from_secs(30);
/// The client interop/server.mjs registers (`CLIENT_ID`, `CLIENT_SECRET`).
const CLIENT_ID: &str = "interop-client";
const CLIENT_SECRET: &str = "interop-secret";

/// Each test starts its own provider and processes; on 2 cores two of them
/// side by side would make every timing meaningless.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Provider {
    /// The server's own counters (GET /test/stats).
    async fn stats(&self) -> Stats {
        serde_json::from_value(self.call(Method::GET, "/test/stats").await).unwrap()
    }

    /// A test user's refresh token, as the end of a login would give it.
    async fn login(&self) -> String {
        let value = self.call(Method::POST, "/test/login").await;
        value["refresh_token"].as_str().unwrap().to_owned()
    }
}

/// interop/server.mjs's `/test/stats`, the fields this test reads.
#[derive(Debug, serde::Deserialize)]
struct Stats {
    refresh_token_grants: u64,
    grant_errors: u64,
    revocations: u64,
    api_ok: u64,
    api_rejected: u64,
}

/// The provider, a fresh directory with the session file in it, the
/// provider's token endpoint, and its counts once the login was written.
struct Scene {
    provider: Provider,
    token_url: String,
    dir: process::SessionDir,
    at_login: Stats,
    started: Instant,
}

impl Scene {
    /// Starts the provider (`None` without node) and writes the login every
    /// child resumes.
    async fn start(name: &str) -> Option<Scene> {
        let provider = Provider::start(&[("ACCESS_TTL", &ACCESS_TTL.to_string())]).await?;
        let http = ServiceClient::new(hyper_client());
        let metadata = ProviderMetadata::discover(&provider.issuer, &http)
            .await
            .unwrap();
        let token_url = metadata.token_endpoint().to_string();
        // What a login leaves: the refresh token and a first access token
        // (the server's test route mints the first, one refresh brings the
        // second, the flow itself needs a browser). Every child starts
        // with the same live set, and the same refresh window opens for all.
        let grant = metadata.refresh_token_grant(ClientAuth::basic(CLIENT_ID, CLIENT_SECRET), http);
        let seed = TokenSet::bearer("none-yet").with_refresh_token(provider.login().await);
        let started = Instant::now();
        let login = grant.fetch(Some(&seed)).await.unwrap();
        let dir = process::SessionDir::new("interop-processes", name).unwrap();
        FileStore::new(dir.file()).save(&login).await.unwrap();
        let at_login = provider.stats().await;
        Some(Scene {
            provider,
            token_url,
            dir,
            at_login,
            started,
        })
    }

    /// A child's settings: the shared file, 2 tasks 50 ms apart, `AHEAD`
    /// without jitter.
    fn child(&self, run: Duration) -> SessionConfig {
        SessionConfig::for_token_endpoint(
            self.dir.file(),
            self.token_url.clone(),
            CLIENT_ID,
            CLIENT_SECRET,
            format!("{}/api/data", self.provider.issuer),
        )
        .run_for(run)
        .concurrency(2)
        .interval(Duration::from_millis(50))
        .refresh_ahead(AHEAD)
        .refresh_jitter(0.0)
    }

    fn spawn_all(&self, config: &SessionConfig) -> Vec<SessionProcess> {
        let program = Path::new(env!("CARGO_BIN_EXE_ttr-session"));
        (0..CHILDREN)
            .map(|_| SessionProcess::spawn(program, config).unwrap())
            .collect()
    }

    /// The refresh windows since the login's token was issued, counted
    /// generously: the elapsed time over the time a token serves, plus one.
    fn windows(&self) -> u64 {
        let serves = LIFETIME - AHEAD;
        (self.started.elapsed().as_millis() / serves.as_millis()) as u64 + 1
    }

    /// The refresh_token grants since the login.
    fn grants(&self, stats: &Stats) -> u64 {
        stats.refresh_token_grants - self.at_login.refresh_token_grants
    }
}

async fn finish_all(children: Vec<SessionProcess>, limit: Duration) -> Vec<Finished> {
    let mut finished = Vec::new();
    for child in children {
        finished.push(child.finish(limit).await);
    }
    finished
}

/// Exited 0, every request answered 200, the session alive at the end.
fn all_ok(f: &Finished) -> bool {
    f.succeeded()
        && f.report
            .as_ref()
            .is_some_and(|r| r.all_ok() && !r.session_expired)
}

/// The provider's counts and one line per child, for failure messages and
/// `--nocapture`.
fn summary(stats: &Stats, finished: &[Finished]) -> String {
    let mut out = format!("provider: {stats:?}\n");
    for f in finished {
        let exit = f.status.and_then(|s| s.code());
        out += &match &f.report {
            Some(r) => format!(
                "pid {} exit {exit:?}: requests {} ok {} statuses {:?} errors {:?} refreshes {} (failed {}) adopted {} expired {}\n",
                f.pid,
                r.requests,
                r.ok,
                r.statuses,
                r.errors,
                r.refreshes_succeeded,
                r.refreshes_failed,
                r.adopted_from_store,
                r.session_expired,
            ),
            None => format!(
                "pid {} exit {exit:?}: no report; stderr: {}\n",
                f.pid,
                f.stderr.trim()
            ),
        };
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_a_file_refresh_once_per_window_on_oidc_provider() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(scene) = Scene::start("shared").await else {
        return;
    };
    let children = scene.spawn_all(&scene.child(RUN));
    let finished = finish_all(children, RUN + GRACE_TO_EXIT).await;
    let elapsed = scene.started.elapsed();
    let windows = scene.windows();
    let stats = scene.provider.stats().await;
    let grants = scene.grants(&stats);
    let summary = summary(&stats, &finished);
    let requests: u64 = finished
        .iter()
        .filter_map(|f| f.report.as_ref())
        .map(|r| r.requests)
        .sum();
    let ok: u64 = finished
        .iter()
        .filter_map(|f| f.report.as_ref())
        .map(|r| r.ok)
        .sum();
    eprintln!("{summary}");
    println!(
        "interop processes: {CHILDREN} processes, {:.1} s ({:.1} lifetimes of {ACCESS_TTL} s): \
         {grants} refresh_token grants in at most {windows} refresh windows, \
         {requests} requests ({ok} answered 200, provider api_ok {} api_rejected {}), \
         grant errors {}, revocations {}",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() / LIFETIME.as_secs_f64(),
        stats.api_ok,
        stats.api_rejected,
        stats.grant_errors,
        stats.revocations,
    );

    // A consumed refresh token presented again is a grant error
    // (invalid_grant) and revokes the grant: the session would be over.
    assert_eq!(
        stats.grant_errors, 0,
        "no refresh token reused, no grant revoked\n{summary}"
    );
    // The revocation endpoint: nobody logged out either.
    assert_eq!(stats.revocations, 0, "{summary}");
    for f in &finished {
        assert!(
            all_ok(f),
            "pid {}: did not exit 0 with every request answered 200\n{summary}",
            f.pid
        );
    }
    assert_eq!(
        stats.api_rejected, 0,
        "no process sent a token the provider had expired\n{summary}"
    );
    assert_eq!(
        stats.api_ok, ok,
        "the provider answered each request\n{summary}"
    );
    assert!(
        grants >= RUN.as_secs() / ACCESS_TTL,
        "the run covers at least one refresh per lifetime\n{summary}"
    );
    assert!(
        grants <= windows + 1,
        "one refresh per window: {grants} grants in at most {windows} windows\n{summary}",
    );
}

/// The scenario above would catch processes that refresh on their own.
/// Without the lock, the children re-read the file at the same moment when
/// a refresh window opens and find the same refresh token. Then either two
/// of them present it, and the provider answers all but the first with
/// invalid_grant and revokes the grant: every child stops within a second
/// (most runs, in the first window or the second). Or one finds the
/// "presented" mark another wrote an instant earlier (the core writes it
/// before the request leaves, lock or not), takes it for a refresh that got
/// no answer, and ends its session rather than present a token that may be
/// spent; the others find that mark or the tombstone it leaves and end
/// theirs too, and one process goes on alone to the end of the run (about
/// one run in four here). Both fail the first test; only the first reaches
/// the provider. Some runs see neither for a few windows, so the children
/// get as long as in the first test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_lock_processes_reuse_the_refresh_token_or_end_the_session() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(scene) = Scene::start("unlocked").await else {
        return;
    };
    let children = scene.spawn_all(&scene.child(RUN).without_lock());
    // A reuse revokes the grant and every child stops at once; a child
    // that ends its session stops alone.
    let finished = finish_all(children, RUN + GRACE_TO_EXIT).await;
    let stats = scene.provider.stats().await;
    let summary = summary(&stats, &finished);
    let failed: Vec<&Finished> = finished.iter().filter(|f| !all_ok(f)).collect();
    let first_failure = failed
        .iter()
        .filter_map(|f| f.report.as_ref().map(|r| r.ran_ms))
        .min();
    eprintln!("{summary}");
    println!(
        "interop processes without the lock: {} refresh_token grants, {} grant errors, \
         {} of {CHILDREN} processes failed (the first after {})",
        scene.grants(&stats),
        stats.grant_errors,
        failed.len(),
        first_failure.map_or("-".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
    );

    assert!(
        stats.grant_errors > 0 || !failed.is_empty(),
        "without the lock the scenario still passed\n{summary}"
    );
    if stats.grant_errors > 0 {
        assert!(
            scene
                .provider
                .count_reaching("grant.error invalid_grant", 1)
                .await
                >= 1,
            "the reuse is answered invalid_grant\n{summary}"
        );
    }
}
