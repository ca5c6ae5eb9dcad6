//! One login, many processes (issue 18): real `ttr-session` processes share
//! one `FileStore` file across many token expiries, against a rotating
//! authorization server that revokes the whole grant when a rotated-away
//! refresh token comes back.
//!
//! The user's code in each child is what the README shows:
//! `FileStore::new(path)`, `TokenManager::builder(RefreshTokenGrant…)`,
//! `tokens.load()`, `TokenRefreshLayer`. The test process runs the servers,
//! logs in once, writes the file, and spawns the children. What holds in
//! every scenario: the server never sees a spent refresh token
//! (`reuse_detected == 0`), and the processes refresh once per refresh
//! window between them.
//!
//! The scenarios that kill the process holding the refresh lock find it in
//! `/proc/locks`, so the file is Linux-only. The scenarios run one at a time
//! (each spawns 8 processes on a 2-core machine); each takes about 30 s.
#![cfg(target_os = "linux")]
// A failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::time::Instant;
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, AuthStats, ResourceServer,
    process::{self, Finished, SessionConfig, SessionProcess},
};

/// Processes sharing the file.
const CHILDREN: usize = 8;
/// Access token lifetime (`expires_in` is whole seconds).
const LIFETIME: Duration = Duration::from_secs(3);
/// The children's refresh-ahead window; with the default jitter (up to a
/// fifth of it earlier) each token serves at least `LIFETIME - 1.2 *
/// AHEAD` before it is refreshed.
const AHEAD: Duration = Duration::from_millis(500);
/// How long the children run: more than 10 refresh windows.
const RUN: Duration = Duration::from_secs(26);
/// The longest a child may take beyond `RUN` before the test kills it.
const GRACE_TO_EXIT: Duration = Duration::from_secs(30);

/// The scenarios share 2 cores; running them side by side would make every
/// timing in them meaningless.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The servers, a fresh directory with the session file in it, and the
/// program the children run.
struct Scene {
    auth: AuthServer,
    api: ResourceServer,
    dir: TempDir,
    started: Instant,
}

impl Scene {
    /// Starts the servers and logs in once: the file holds the session
    /// every child resumes.
    async fn start(config: AuthConfig, name: &str) -> Scene {
        let auth = AuthServer::start(config.access_lifetime(LIFETIME))
            .await
            .unwrap();
        let api = ResourceServer::start(&auth).await.unwrap();
        let dir = TempDir::new(name);
        process::write_login(&dir.file(), &auth).await.unwrap();
        Scene {
            auth,
            api,
            dir,
            started: Instant::now(),
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.file()
    }

    /// A child's settings: the shared file, 2 tasks, `RUN`, `AHEAD`.
    fn child(&self) -> SessionConfig {
        SessionConfig::new(self.file(), &self.auth, self.api.url("/api/data"))
            .run_for(RUN)
            .concurrency(2)
            .interval(Duration::from_millis(50))
            .refresh_ahead(AHEAD)
    }

    fn spawn(&self, config: &SessionConfig) -> SessionProcess {
        SessionProcess::spawn(Path::new(env!("CARGO_BIN_EXE_ttr-session")), config).unwrap()
    }

    fn spawn_all(&self, n: usize, config: &SessionConfig) -> Vec<SessionProcess> {
        (0..n).map(|_| self.spawn(config)).collect()
    }

    /// The refresh windows since the login, counted generously: the
    /// elapsed time over the shortest a token serves, plus one.
    fn windows(&self) -> u64 {
        let shortest = LIFETIME - AHEAD.mul_f64(1.2);
        (self.started.elapsed().as_millis() / shortest.as_millis()) as u64 + 1
    }
}

async fn finish_all(children: Vec<SessionProcess>) -> Vec<Finished> {
    let mut finished = Vec::new();
    for child in children {
        finished.push(child.finish(RUN + GRACE_TO_EXIT).await);
    }
    finished
}

/// One line per child and the server's counts, for the failure message
/// and `--nocapture`.
fn summary(stats: &AuthStats, finished: &[Finished]) -> String {
    let mut out = format!("server: {stats:?}\n");
    for f in finished {
        match &f.report {
            Some(r) => {
                out += &format!(
                    "pid {} exit {:?}: requests {} ok {} statuses {:?} errors {:?} refreshes {} adopted {} expired {} unanswered {}\n",
                    f.pid,
                    f.status.and_then(|s| s.code()),
                    r.requests,
                    r.ok,
                    r.statuses,
                    r.errors,
                    r.refreshes_succeeded,
                    r.adopted_from_store,
                    r.sessions_expired,
                    r.unanswered_requests,
                )
            }
            None => {
                out += &format!(
                    "pid {} exit {:?}: no report; stderr: {}\n",
                    f.pid,
                    f.status,
                    f.stderr.trim()
                )
            }
        }
    }
    out
}

/// Every child exited 0, and every request it sent was answered 200.
fn assert_all_ok(finished: &[Finished], summary: &str) {
    for f in finished {
        assert!(f.succeeded(), "pid {} did not exit 0\n{summary}", f.pid);
        let report = f.report.as_ref().unwrap();
        assert!(
            report.all_ok(),
            "pid {}: not every request got 200\n{summary}",
            f.pid
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_a_file_refresh_once_per_window_and_never_reuse() {
    let _one = ONE_AT_A_TIME.lock().await;
    let scene = Scene::start(AuthConfig::default(), "plain").await;
    let children = scene.spawn_all(CHILDREN, &scene.child());
    let finished = finish_all(children).await;
    let stats = scene.auth.stats();
    let windows = scene.windows();
    let summary = summary(&stats, &finished);
    eprintln!("{summary}refresh windows: at most {windows}");

    assert_eq!(
        stats.reuse_detected, 0,
        "a spent refresh token came back\n{summary}"
    );
    assert_eq!(stats.invalid_grant, 0, "{summary}");
    assert_all_ok(&finished, &summary);
    assert!(
        stats.refresh_grants >= 10,
        "the run covers at least 10 refreshes\n{summary}"
    );
    assert!(
        stats.refresh_grants <= windows + 1,
        "one refresh per window: {} grants in at most {windows} windows\n{summary}",
        stats.refresh_grants
    );
}

/// A directory of its own under the system temp directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "ttr-processes-{}-{name}-{}",
            std::process::id(),
            process::unix_ms(std::time::SystemTime::now())
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn file(&self) -> PathBuf {
        self.0.join("session.json")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
