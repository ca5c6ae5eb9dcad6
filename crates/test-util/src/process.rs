//! One login, many processes: a program that resumes a login from a
//! [`FileStore`] file and calls an API through the layered client, and the
//! helpers that spawn it and read what it reports.
//!
//! The program is test-util's `ttr-session` binary (or any binary that
//! calls [`main_with_args`]); its logic lives here so that benches can spawn
//! themselves as children. Each child:
//!
//! 1. builds a hyper-util client, a [`RefreshTokenGrant`], a
//!    [`TokenManager`] with `.store(FileStore::new(path))` and the
//!    [`TokenRefreshLayer`]ed client, as a user program would (with
//!    [`SessionConfig::without_lock`], `FileStore::new(path).without_lock()`:
//!    the bug the lock prevents, for tests that show they would catch it);
//! 2. [`load`](TokenManager::load)s the session from the file (it never
//!    logs in itself: no session in the file is an error);
//! 3. sends `GET`s to the resource from `concurrency` tasks until its time
//!    is up (or its request budget is spent, or the session ended);
//! 4. prints one JSON line, a [`SessionReport`], and exits 0 only if every
//!    request was answered 200.
//!
//! # Example
//!
//! ```no_run
//! use std::{path::Path, time::Duration};
//! use tower_token_refresh_test_util::{
//!     AuthConfig, AuthServer, ResourceServer,
//!     process::{self, SessionConfig, SessionProcess},
//! };
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let auth = AuthServer::start(AuthConfig::default()).await?;
//! let api = ResourceServer::start(&auth).await?;
//! let file = std::env::temp_dir().join("session.json");
//! process::write_login(&file, &auth).await?;
//! let config = SessionConfig::new(&file, &auth, api.url("/api/data"))
//!     .run_for(Duration::from_secs(5));
//! let program = Path::new("target/debug/ttr-session");
//! let child = SessionProcess::spawn(program, &config)?;
//! let finished = child.finish(Duration::from_secs(30)).await;
//! assert!(finished.succeeded(), "{finished:?}");
//! # Ok(()) }
//! ```

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fmt,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use tokio::{
    io::AsyncReadExt,
    process::{Child, Command},
    task::JoinHandle,
    time::Instant,
};
use tower::{Layer, ServiceExt};
use tower_token_refresh::{
    BoxError, ErrorKind, FileStore, Rotation, ServiceClient, TokenManager, TokenRefreshLayer,
    oauth2::{ClientAuth, RefreshTokenGrant},
};

use crate::{AuthServer, hyper_client};

/// The environment variable a child reads its client secret from, so that
/// the secret is not on its command line (`/proc/PID/cmdline`).
pub const CLIENT_SECRET_ENV: &str = "TTR_CLIENT_SECRET";

/// How long a child runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// Until this much time has passed since it loaded the session.
    For(Duration),
    /// Until it has sent this many requests (all tasks together).
    Requests(u64),
}

/// What the child tells its [`TokenManager`] about refresh token rotation
/// ([`Rotation`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RotationSetting {
    /// [`Rotation::Detect`], the default.
    #[default]
    Detect,
    /// [`Rotation::Never`].
    Never,
    /// [`Rotation::Always`].
    Always,
    /// `Rotation::Grace(duration)`: the server accepts a rotated-away
    /// refresh token once more within this grace.
    Grace(Duration),
}

impl RotationSetting {
    fn arg(self) -> String {
        match self {
            RotationSetting::Detect => "detect".to_owned(),
            RotationSetting::Never => "never".to_owned(),
            RotationSetting::Always => "always".to_owned(),
            RotationSetting::Grace(grace) => format!("grace:{}ms", grace.as_millis()),
        }
    }

    fn parse(arg: &str) -> Result<Self, String> {
        match arg {
            "detect" => Ok(RotationSetting::Detect),
            "never" => Ok(RotationSetting::Never),
            "always" => Ok(RotationSetting::Always),
            _ => match arg.strip_prefix("grace:") {
                Some(grace) => Ok(RotationSetting::Grace(parse_duration(grace)?)),
                None => Err(format!(
                    "--rotation {arg}: expected detect, never, always or grace:DURATION"
                )),
            },
        }
    }

    /// The core setting, if this build of core has it.
    fn rotation(self) -> Result<Rotation, String> {
        match self {
            RotationSetting::Detect => Ok(Rotation::Detect),
            RotationSetting::Never => Ok(Rotation::Never),
            RotationSetting::Always => Ok(Rotation::Always),
            RotationSetting::Grace(grace) => Ok(Rotation::Grace(grace)),
        }
    }
}

/// Everything a child needs: where the session is, whom to ask, what to
/// call, for how long, and how its [`TokenManager`] is set up. Turned into
/// command-line arguments by [`SessionProcess::spawn`] and back by
/// [`SessionConfig::from_args`].
#[derive(Clone)]
pub struct SessionConfig {
    /// The session file ([`FileStore::new`]).
    pub file: PathBuf,
    /// The token endpoint.
    pub token_url: String,
    /// The OAuth2 client id.
    pub client_id: String,
    /// The OAuth2 client secret (passed in [`CLIENT_SECRET_ENV`]).
    pub client_secret: String,
    /// The URL every request `GET`s; its origin is the one the layer sends
    /// the token to.
    pub resource_url: String,
    /// How long the child runs.
    pub run: Run,
    /// Tasks sending requests at once.
    pub concurrency: usize,
    /// Each task's pause between two requests.
    pub interval: Duration,
    /// [`TokenManagerBuilder::attempt_timeout`](tower_token_refresh::TokenManagerBuilder::attempt_timeout);
    /// `None`: the default.
    pub attempt_timeout: Option<Duration>,
    /// [`TokenManagerBuilder::refresh_ahead`](tower_token_refresh::TokenManagerBuilder::refresh_ahead);
    /// `None`: the default.
    pub refresh_ahead: Option<Duration>,
    /// [`TokenManagerBuilder::refresh_jitter`](tower_token_refresh::TokenManagerBuilder::refresh_jitter);
    /// `None`: the default.
    pub refresh_jitter: Option<f64>,
    /// [`TokenManagerBuilder::expiry_leeway`](tower_token_refresh::TokenManagerBuilder::expiry_leeway);
    /// `None`: the default.
    pub expiry_leeway: Option<Duration>,
    /// [`TokenManagerBuilder::max_attempts`](tower_token_refresh::TokenManagerBuilder::max_attempts);
    /// `None`: the default.
    pub max_attempts: Option<u32>,
    /// What the manager assumes about rotation.
    pub rotation: RotationSetting,
    /// How long one request through the layered client may take before the
    /// child counts it as an error (`timeout`), so that a child never hangs.
    pub request_timeout: Duration,
    /// How often the child looks at its manager's generation to note when
    /// it first held each new access token ([`SessionReport::held`]).
    pub watch_interval: Duration,
    /// Whether the [`FileStore`] keeps its cross-process refresh lock
    /// (`--no-lock` turns it off: [`FileStore::without_lock`]).
    pub file_lock: bool,
}

impl SessionConfig {
    /// A child of `file` that asks `auth`'s token endpoint and calls
    /// `resource_url`: for 10 s, 2 tasks, 50 ms between requests, the
    /// manager's defaults, requests bounded at 60 s.
    pub fn new(file: impl Into<PathBuf>, auth: &AuthServer, resource_url: String) -> Self {
        Self::for_token_endpoint(
            file,
            auth.token_url(),
            auth.client_id(),
            auth.client_secret(),
            resource_url,
        )
    }

    /// As [`new`](Self::new), for any authorization server: its token
    /// endpoint and the client's id and secret (Basic authentication).
    pub fn for_token_endpoint(
        file: impl Into<PathBuf>,
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        resource_url: impl Into<String>,
    ) -> Self {
        SessionConfig {
            file: file.into(),
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            resource_url: resource_url.into(),
            run: Run::For(Duration::from_secs(10)),
            concurrency: 2,
            interval: Duration::from_millis(50),
            attempt_timeout: None,
            refresh_ahead: None,
            refresh_jitter: None,
            expiry_leeway: None,
            max_attempts: None,
            rotation: RotationSetting::Detect,
            request_timeout: Duration::from_secs(60),
            watch_interval: Duration::from_millis(5),
            file_lock: true,
        }
    }

    /// Runs for `duration`.
    pub fn run_for(mut self, duration: Duration) -> Self {
        self.run = Run::For(duration);
        self
    }

    /// Runs until `requests` requests were sent.
    pub fn requests(mut self, requests: u64) -> Self {
        self.run = Run::Requests(requests);
        self
    }

    /// Sends from `tasks` tasks at once (at least 1).
    pub fn concurrency(mut self, tasks: usize) -> Self {
        self.concurrency = tasks.max(1);
        self
    }

    /// Each task pauses this long between two requests.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Asks another token endpoint (a listener that never answers, say).
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.token_url = url.into();
        self
    }

    /// The manager's attempt timeout.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// The manager's refresh-ahead window.
    pub fn refresh_ahead(mut self, window: Duration) -> Self {
        self.refresh_ahead = Some(window);
        self
    }

    /// The manager's refresh jitter (0: every process that holds the same
    /// token starts its refresh at the same moment).
    pub fn refresh_jitter(mut self, fraction: f64) -> Self {
        self.refresh_jitter = Some(fraction);
        self
    }

    /// The manager's expiry leeway.
    pub fn expiry_leeway(mut self, leeway: Duration) -> Self {
        self.expiry_leeway = Some(leeway);
        self
    }

    /// The manager's attempts per refresh.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// What the manager assumes about rotation.
    pub fn rotation(mut self, rotation: RotationSetting) -> Self {
        self.rotation = rotation;
        self
    }

    /// How often the child notes its manager's generation.
    pub fn watch_interval(mut self, interval: Duration) -> Self {
        self.watch_interval = interval;
        self
    }

    /// The child's [`FileStore`] has no refresh lock
    /// ([`FileStore::without_lock`]): processes sharing the file then
    /// refresh at once and present the same refresh token (which a rotating
    /// server punishes), or end their session on another's "presented"
    /// mark. For tests that show a scenario catches that.
    pub fn without_lock(mut self) -> Self {
        self.file_lock = false;
        self
    }

    /// The command-line arguments that [`from_args`](Self::from_args) reads
    /// back, the client secret excepted (it goes in [`CLIENT_SECRET_ENV`]).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |flag: &str, value: OsString| {
            args.push(flag.into());
            args.push(value);
        };
        push("--file", self.file.clone().into_os_string());
        push("--token-url", self.token_url.clone().into());
        push("--client-id", self.client_id.clone().into());
        push("--resource", self.resource_url.clone().into());
        match self.run {
            Run::For(duration) => push("--run-for", millis(duration).into()),
            Run::Requests(n) => push("--requests", n.to_string().into()),
        }
        push("--concurrency", self.concurrency.to_string().into());
        push("--interval", millis(self.interval).into());
        if let Some(timeout) = self.attempt_timeout {
            push("--attempt-timeout", millis(timeout).into());
        }
        if let Some(window) = self.refresh_ahead {
            push("--refresh-ahead", millis(window).into());
        }
        if let Some(fraction) = self.refresh_jitter {
            push("--refresh-jitter", fraction.to_string().into());
        }
        if let Some(leeway) = self.expiry_leeway {
            push("--expiry-leeway", millis(leeway).into());
        }
        if let Some(attempts) = self.max_attempts {
            push("--max-attempts", attempts.to_string().into());
        }
        push("--rotation", self.rotation.arg().into());
        push("--request-timeout", millis(self.request_timeout).into());
        push("--watch-interval", millis(self.watch_interval).into());
        if !self.file_lock {
            args.push("--no-lock".into());
        }
        args
    }

    /// Reads the arguments [`to_args`](Self::to_args) wrote (without the
    /// program name); the client secret comes from `--client-secret` or, if
    /// absent, [`CLIENT_SECRET_ENV`].
    ///
    /// # Errors
    ///
    /// A message naming the missing or malformed argument.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut args = args.into_iter();
        let mut flags = BTreeMap::new();
        while let Some(flag) = args.next() {
            let Some(name) = flag.strip_prefix("--") else {
                return Err(format!("unexpected argument {flag:?}"));
            };
            // The one switch without a value.
            if name == "no-lock" {
                flags.insert(name.to_owned(), String::new());
                continue;
            }
            let value = args
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            flags.insert(name.to_owned(), value);
        }
        let mut take = |name: &str| flags.remove(name);
        let required = |value: Option<String>, name: &str| {
            value.ok_or_else(|| format!("--{name} is required"))
        };
        let duration = |value: Option<String>| value.as_deref().map(parse_duration).transpose();
        let number = |value: Option<String>, name: &str| {
            value
                .map(|v| v.parse::<u64>().map_err(|e| format!("--{name} {v}: {e}")))
                .transpose()
        };
        let file = PathBuf::from(required(take("file"), "file")?);
        let token_url = required(take("token-url"), "token-url")?;
        let client_id = required(take("client-id"), "client-id")?;
        let client_secret = match take("client-secret") {
            Some(secret) => secret,
            None => std::env::var(CLIENT_SECRET_ENV)
                .map_err(|_| format!("--client-secret or {CLIENT_SECRET_ENV} is required"))?,
        };
        let resource_url = required(take("resource"), "resource")?;
        let run = match (
            duration(take("run-for"))?,
            number(take("requests"), "requests")?,
        ) {
            (Some(duration), None) => Run::For(duration),
            (None, Some(n)) => Run::Requests(n),
            (None, None) => Run::For(Duration::from_secs(10)),
            (Some(_), Some(_)) => return Err("give --run-for or --requests, not both".to_owned()),
        };
        let config = SessionConfig {
            file,
            token_url,
            client_id,
            client_secret,
            resource_url,
            run,
            concurrency: number(take("concurrency"), "concurrency")?
                .map_or(2, |n| usize::try_from(n).unwrap_or(usize::MAX))
                .max(1),
            interval: duration(take("interval"))?.unwrap_or(Duration::from_millis(50)),
            attempt_timeout: duration(take("attempt-timeout"))?,
            refresh_ahead: duration(take("refresh-ahead"))?,
            refresh_jitter: take("refresh-jitter")
                .map(|v| {
                    v.parse::<f64>()
                        .map_err(|e| format!("--refresh-jitter {v}: {e}"))
                })
                .transpose()?,
            expiry_leeway: duration(take("expiry-leeway"))?,
            max_attempts: number(take("max-attempts"), "max-attempts")?
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            rotation: take("rotation")
                .as_deref()
                .map(RotationSetting::parse)
                .transpose()?
                .unwrap_or_default(),
            request_timeout: duration(take("request-timeout"))?.unwrap_or(Duration::from_secs(60)),
            watch_interval: duration(take("watch-interval"))?.unwrap_or(Duration::from_millis(5)),
            file_lock: take("no-lock").is_none(),
        };
        match flags.keys().next() {
            Some(unknown) => Err(format!("unknown argument --{unknown}")),
            None => Ok(config),
        }
    }
}

impl fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionConfig")
            .field("file", &self.file)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("resource_url", &self.resource_url)
            .field("run", &self.run)
            .field("concurrency", &self.concurrency)
            .field("interval", &self.interval)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("refresh_ahead", &self.refresh_ahead)
            .field("refresh_jitter", &self.refresh_jitter)
            .field("expiry_leeway", &self.expiry_leeway)
            .field("max_attempts", &self.max_attempts)
            .field("rotation", &self.rotation)
            .field("request_timeout", &self.request_timeout)
            .field("watch_interval", &self.watch_interval)
            .field("file_lock", &self.file_lock)
            .finish()
    }
}

fn millis(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// `250ms`, `2s`, or a bare number of milliseconds.
fn parse_duration(value: &str) -> Result<Duration, String> {
    let bad = |e: std::num::ParseIntError| format!("duration {value:?}: {e}");
    if let Some(ms) = value.strip_suffix("ms") {
        ms.parse().map(Duration::from_millis).map_err(bad)
    } else if let Some(s) = value.strip_suffix('s') {
        s.parse().map(Duration::from_secs).map_err(bad)
    } else {
        value.parse().map(Duration::from_millis).map_err(bad)
    }
}

/// When a child first held an access token (one per generation it saw,
/// the loaded one first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The first 8 bytes of the access token's SHA-256, in hex: the same
    /// token has the same fingerprint in every process, and the token
    /// itself is not shown.
    pub token: String,
    /// Wall-clock time, in milliseconds since the Unix epoch, at which the
    /// child's watcher first saw this token as its manager's current one.
    pub at_unix_ms: u64,
    /// When the token expires, in the same units, if it says.
    pub expires_at_unix_ms: Option<u64>,
}

/// What one child did: the JSON line it prints last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReport {
    /// The child's process id.
    pub pid: u32,
    /// Requests sent through the layered client.
    pub requests: u64,
    /// Requests answered 200.
    pub ok: u64,
    /// Requests answered with another status, by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that ended in an error, by kind: a
    /// [`ErrorKind`] in `Debug` form (`SessionExpired`,
    /// `Transient`, …), `connect` or `http` for the client's own errors,
    /// `timeout` for a request past the request timeout, `other`.
    pub errors: BTreeMap<String, u64>,
    /// [`Stats::refreshes_succeeded`](tower_token_refresh::Stats::refreshes_succeeded).
    pub refreshes_succeeded: u64,
    /// [`Stats::refreshes_failed`](tower_token_refresh::Stats::refreshes_failed).
    pub refreshes_failed: u64,
    /// [`Stats::adopted_from_store`](tower_token_refresh::Stats::adopted_from_store).
    pub adopted_from_store: u64,
    /// [`Stats::sessions_expired`](tower_token_refresh::Stats::sessions_expired).
    pub sessions_expired: u64,
    /// [`Stats::unanswered_requests`](tower_token_refresh::Stats::unanswered_requests).
    pub unanswered_requests: u64,
    /// Whether the session had ended when the child stopped.
    pub session_expired: bool,
    /// Each access token the child held, in order, and when it first held it.
    pub held: Vec<Held>,
    /// How long the child ran, in milliseconds.
    pub ran_ms: u64,
}

impl SessionReport {
    /// Whether every request was answered 200 (and there was at least one).
    pub fn all_ok(&self) -> bool {
        self.requests > 0 && self.ok == self.requests
    }

    /// Requests that ended in an error of this kind (see
    /// [`errors`](Self::errors)).
    pub fn errors_of(&self, kind: &str) -> u64 {
        self.errors.get(kind).copied().unwrap_or(0)
    }

    /// The report as one JSON line.
    pub fn to_json(&self) -> String {
        // Numbers, strings and maps with string-like keys always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The last line of `stdout` that is a report.
    pub fn from_output(stdout: &str) -> Option<SessionReport> {
        stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str(line.trim()).ok())
    }
}

/// Why a child could not run at all (exit code 2).
#[derive(Debug)]
pub struct SetupError(String);

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

impl From<String> for SetupError {
    fn from(message: String) -> Self {
        SetupError(message)
    }
}

/// The whole child program: reads [`SessionConfig::from_args`] from
/// `args` (without the program name), runs, prints the
/// [`SessionReport`] line to stdout, and returns the exit code: 0 if every
/// request was answered 200, 1 if not, 2 if it could not run (bad
/// arguments, no session in the file), with the reason on stderr.
pub fn main_with_args(args: impl IntoIterator<Item = String>) -> i32 {
    let config = match SessionConfig::from_args(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ttr-session: {e}");
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ttr-session: no runtime: {e}");
            return 2;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(report) => {
            println!("{}", report.to_json());
            if report.all_ok() { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("ttr-session: {e}");
            2
        }
    }
}

/// Resumes the login in `config.file` and calls the resource until the
/// child's time is up; see the [module docs](self).
///
/// # Errors
///
/// When the child cannot start: a malformed URL, an unusable rotation
/// setting, no session in the file, or a file that cannot be read.
pub async fn run(config: SessionConfig) -> Result<SessionReport, SetupError> {
    let resource: Uri = config
        .resource_url
        .parse()
        .map_err(|e| format!("--resource {}: {e}", config.resource_url))?;
    let origin = match (resource.scheme_str(), resource.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => return Err(format!("--resource {resource} is not an absolute URL").into()),
    };
    let token_url: Uri = config
        .token_url
        .parse()
        .map_err(|e| format!("--token-url {}: {e}", config.token_url))?;

    let http = hyper_client();
    let grant = RefreshTokenGrant::new(
        token_url,
        ClientAuth::basic(config.client_id.clone(), config.client_secret.clone()),
        ServiceClient::new(http.clone()),
    );
    let store = if config.file_lock {
        FileStore::new(&config.file)
    } else {
        FileStore::new(&config.file).without_lock()
    };
    let mut builder = TokenManager::builder(grant)
        .store(store)
        .rotation(config.rotation.rotation()?);
    if let Some(timeout) = config.attempt_timeout {
        builder = builder.attempt_timeout(timeout);
    }
    if let Some(window) = config.refresh_ahead {
        builder = builder.refresh_ahead(window);
    }
    if let Some(fraction) = config.refresh_jitter {
        builder = builder.refresh_jitter(fraction);
    }
    if let Some(leeway) = config.expiry_leeway {
        builder = builder.expiry_leeway(leeway);
    }
    if let Some(attempts) = config.max_attempts {
        builder = builder.max_attempts(attempts);
    }
    let tokens = builder.build();
    match tokens.load().await {
        Ok(true) => {}
        Ok(false) if tokens.is_session_expired() => {
            // A tombstone: another process (or an earlier run) ended it.
            let why = match tokens.authorization().await {
                Err(e) => e.to_string(),
                Ok(_) => "it ended".to_owned(),
            };
            return Err(format!(
                "the session in {} is over: {why}; log in again",
                config.file.display()
            )
            .into());
        }
        Ok(false) => {
            return Err(format!("no session in {}: log in first", config.file.display()).into());
        }
        Err(e) => return Err(format!("{}: {e}", config.file.display()).into()),
    }
    let layer = TokenRefreshLayer::new(tokens.clone()).allow_origin(
        origin
            .parse()
            .map_err(|e| format!("--resource origin {origin}: {e}"))?,
    );
    let client = layer.layer(http);

    let started = Instant::now();
    let tally = Arc::new(Tally::default());
    let held = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch(
        tokens.clone(),
        held.clone(),
        stop.clone(),
        config.watch_interval,
    ));
    let deadline = match config.run {
        Run::For(duration) => Some(started + duration),
        Run::Requests(_) => None,
    };
    let budget = match config.run {
        Run::For(_) => None,
        Run::Requests(n) => Some(Arc::new(AtomicU64::new(n))),
    };
    let workers: Vec<JoinHandle<()>> = (0..config.concurrency)
        .map(|_| {
            let client = client.clone();
            let tally = tally.clone();
            let budget = budget.clone();
            let url = config.resource_url.clone();
            let (interval, timeout) = (config.interval, config.request_timeout);
            tokio::spawn(async move {
                loop {
                    if tally.session_over.load(Ordering::Relaxed)
                        || deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        return;
                    }
                    if let Some(budget) = &budget
                        && budget
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                n.checked_sub(1)
                            })
                            .is_err()
                    {
                        return;
                    }
                    let request = match Request::get(&url).body(Full::<Bytes>::default()) {
                        Ok(request) => request,
                        Err(_) => return,
                    };
                    let call = async {
                        let response = client.clone().oneshot(request).await?;
                        let status = response.status();
                        // Read the body, so the connection goes back to the pool.
                        response.into_body().collect().await?;
                        Ok::<_, BoxError>(status)
                    };
                    let outcome = tokio::time::timeout(timeout, call).await;
                    tally.count(outcome);
                    tokio::time::sleep(interval).await;
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.await;

    let stats = tokens.stats();
    let counts = tally.counts();
    let held = held.lock().map(|h| h.clone()).unwrap_or_default();
    Ok(SessionReport {
        pid: std::process::id(),
        requests: counts.requests,
        ok: counts.ok,
        statuses: counts.statuses,
        errors: counts.errors,
        refreshes_succeeded: stats.refreshes_succeeded,
        refreshes_failed: stats.refreshes_failed,
        adopted_from_store: stats.adopted_from_store,
        sessions_expired: stats.sessions_expired,
        unanswered_requests: stats.unanswered_requests,
        session_expired: tokens.is_session_expired(),
        held,
        ran_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Notes each access token the manager holds, and when it first did.
async fn watch(
    tokens: TokenManager,
    held: Arc<Mutex<Vec<Held>>>,
    stop: Arc<AtomicBool>,
    every: Duration,
) {
    let mut seen = None;
    loop {
        let generation = tokens.generation();
        if seen != Some(generation) {
            seen = Some(generation);
            if let Some(current) = tokens.current() {
                let token = fingerprint(current.access_token().secret());
                let expires_at_unix_ms = current.expires_at().map(|at| {
                    let now = Instant::now();
                    let wall = if at >= now {
                        SystemTime::now() + (at - now)
                    } else {
                        SystemTime::now() - (now - at)
                    };
                    unix_ms(wall)
                });
                let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
                if held.last().is_none_or(|last| last.token != token) {
                    held.push(Held {
                        token,
                        at_unix_ms: unix_ms(SystemTime::now()),
                        expires_at_unix_ms,
                    });
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

/// The first 8 bytes of `token`'s SHA-256, in hex.
pub fn fingerprint(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Default)]
struct Tally {
    session_over: AtomicBool,
    counts: Mutex<Counts>,
}

#[derive(Default, Clone)]
struct Counts {
    requests: u64,
    ok: u64,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn count(&self, outcome: Result<Result<StatusCode, BoxError>, tokio::time::error::Elapsed>) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.requests += 1;
        let kind = match outcome {
            Ok(Ok(StatusCode::OK)) => {
                counts.ok += 1;
                return;
            }
            Ok(Ok(status)) => {
                *counts.statuses.entry(status.as_u16()).or_default() += 1;
                return;
            }
            Ok(Err(e)) => error_kind(&*e),
            Err(_) => "timeout".to_owned(),
        };
        if kind == format!("{:?}", ErrorKind::SessionExpired) {
            // Nothing succeeds until someone logs in again: stop.
            self.session_over.store(true, Ordering::Relaxed);
        }
        *counts.errors.entry(kind).or_default() += 1;
    }

    fn counts(&self) -> Counts {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn error_kind(e: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    if let Some(e) = e.downcast_ref::<tower_token_refresh::Error>() {
        return format!("{:?}", e.kind());
    }
    if let Some(e) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
        return if e.is_connect() { "connect" } else { "http" }.to_owned();
    }
    "other".to_owned()
}

/// Writes a new login of `auth` to the session file at `path`, as the
/// application's login step would: through a [`TokenManager`] with a
/// [`FileStore`], [`set`](TokenManager::set).
///
/// # Errors
///
/// When the file cannot be written.
pub async fn write_login(path: &Path, auth: &AuthServer) -> Result<(), BoxError> {
    let http = hyper_client();
    let grant = RefreshTokenGrant::new(
        auth.token_url().parse()?,
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(http),
    );
    let tokens = TokenManager::builder(grant)
        .store(FileStore::new(path))
        .build();
    tokens.set(auth.login().token_set()).await?;
    Ok(())
}

/// Where [`FileStore`] keeps the cross-process refresh lock of the session
/// file at `session`: `.{name}.lock` beside it.
pub fn lock_path(session: &Path) -> PathBuf {
    let name = session.file_name().unwrap_or_default().to_string_lossy();
    session.with_file_name(format!(".{name}.lock"))
}

/// The processes that hold a lock on the file at `path` now, from
/// `/proc/locks` (Linux): `flock` and POSIX locks, by PID. Processes waiting
/// for the lock are not listed.
///
/// # Errors
///
/// When `path` or `/proc/locks` cannot be read.
#[cfg(target_os = "linux")]
pub fn lock_holders(path: &Path) -> std::io::Result<Vec<u32>> {
    use std::os::unix::fs::MetadataExt as _;

    let meta = std::fs::metadata(path)?;
    let dev = meta.dev();
    // glibc's major/minor encoding of a dev_t.
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff);
    let id = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks")?;
    // `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`; a waiter's line
    // has `->` after the number.
    let holders = locks
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(1) == Some(&"->") {
                return None;
            }
            let (pid, file) = (fields.get(4)?, fields.get(5)?);
            (*file == id).then(|| pid.parse().ok()).flatten()
        })
        .collect();
    Ok(holders)
}

/// A running child: `ttr-session` (or a program that runs
/// [`main_with_args`]) with a [`SessionConfig`]. Dropping it kills the
/// child.
#[derive(Debug)]
pub struct SessionProcess {
    pid: u32,
    child: Child,
    output: JoinHandle<(String, String)>,
}

/// How a child ended.
#[derive(Debug)]
pub struct Finished {
    /// The child's process id.
    pub pid: u32,
    /// Its exit status; `None` if it had to be killed at the time limit.
    pub status: Option<ExitStatus>,
    /// Its report, if it printed one.
    pub report: Option<SessionReport>,
    /// What it wrote to stderr.
    pub stderr: String,
}

impl Finished {
    /// Exited 0 with a report.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success()) && self.report.is_some()
    }
}

impl SessionProcess {
    /// Starts `program` with `config`'s arguments, the client secret in
    /// [`CLIENT_SECRET_ENV`], stdout and stderr captured.
    ///
    /// # Errors
    ///
    /// When the program cannot be started.
    pub fn spawn(program: &Path, config: &SessionConfig) -> std::io::Result<SessionProcess> {
        Self::spawn_with(program, &[], config)
    }

    /// As [`spawn`](Self::spawn), with `first` before the config's
    /// arguments (a subcommand, say).
    ///
    /// # Errors
    ///
    /// When the program cannot be started.
    pub fn spawn_with(
        program: &Path,
        first: &[&str],
        config: &SessionConfig,
    ) -> std::io::Result<SessionProcess> {
        let mut child = Command::new(program)
            .args(first)
            .args(config.to_args())
            .env(CLIENT_SECRET_ENV, &config.client_secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().unwrap_or_default();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        // Read both pipes to the end from the start, so a chatty child
        // never blocks on a full pipe.
        let output = tokio::spawn(async move {
            let mut out = String::new();
            let mut err = String::new();
            let read_out = async {
                if let Some(mut s) = stdout {
                    let _ = s.read_to_string(&mut out).await;
                }
            };
            let read_err = async {
                if let Some(mut s) = stderr {
                    let _ = s.read_to_string(&mut err).await;
                }
            };
            tokio::join!(read_out, read_err);
            (out, err)
        });
        Ok(SessionProcess { pid, child, output })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills the child with SIGKILL (on Unix) and waits for it to be gone.
    ///
    /// # Errors
    ///
    /// When the signal cannot be sent.
    pub async fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill().await
    }

    /// Waits, at most `limit`, for the child to exit, then reads its
    /// report; a child still running at the limit is killed.
    pub async fn finish(mut self, limit: Duration) -> Finished {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = self.child.kill().await;
                None
            }
        };
        let (stdout, stderr) =
            match tokio::time::timeout(Duration::from_secs(5), &mut self.output).await {
                Ok(Ok(output)) => output,
                _ => (String::new(), String::new()),
            };
        Finished {
            pid: self.pid,
            status,
            report: SessionReport::from_output(&stdout),
            stderr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_read_back_what_they_wrote() {
        let config = SessionConfig {
            file: "/tmp/s.json".into(),
            token_url: "http://127.0.0.1:1/token".into(),
            client_id: "c".into(),
            client_secret: "s".into(),
            resource_url: "http://127.0.0.1:2/api/data".into(),
            run: Run::Requests(7),
            concurrency: 3,
            interval: Duration::from_millis(20),
            attempt_timeout: Some(Duration::from_secs(1)),
            refresh_ahead: Some(Duration::ZERO),
            refresh_jitter: Some(0.25),
            expiry_leeway: None,
            max_attempts: Some(2),
            rotation: RotationSetting::Grace(Duration::from_secs(5)),
            request_timeout: Duration::from_secs(9),
            watch_interval: Duration::from_millis(1),
            file_lock: false,
        };
        let args = config
            .to_args()
            .into_iter()
            .map(|a| a.into_string().unwrap_or_default());
        let read = SessionConfig::from_args(args.chain(["--client-secret".into(), "s".into()]));
        assert_eq!(
            format!("{:?}", read),
            format!("{:?}", Ok::<_, String>(config))
        );
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_millis(15)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn the_report_is_the_last_json_line() {
        let report = SessionReport {
            pid: 7,
            requests: 3,
            ok: 2,
            statuses: [(401, 1)].into(),
            ..SessionReport::default()
        };
        let out = format!("starting\n{}\n", report.to_json());
        assert_eq!(SessionReport::from_output(&out), Some(report));
        assert_eq!(SessionReport::from_output("nothing"), None);
    }
}

/// A directory of its own under the system temp directory, for one
/// scenario's session file; removed on drop.
#[derive(Debug)]
pub struct SessionDir(PathBuf);

impl SessionDir {
    /// `ttr-{prefix}-{pid}-{name}-{now}` under the temp directory, created.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created.
    pub fn new(prefix: &str, name: &str) -> std::io::Result<SessionDir> {
        let path = std::env::temp_dir().join(format!(
            "ttr-{prefix}-{}-{name}-{}",
            std::process::id(),
            unix_ms(SystemTime::now())
        ));
        std::fs::create_dir_all(&path)?;
        Ok(SessionDir(path))
    }

    /// The session file in it, `session.json`.
    pub fn file(&self) -> PathBuf {
        self.0.join("session.json")
    }
}

impl Drop for SessionDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
