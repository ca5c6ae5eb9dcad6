//! A command-line tool whose every run resumes one login from a file, as
//! `gh`, `gcloud` or `az` do: many copies may run at once, and they share
//! the session (one rotating refresh token) through that file.
//!
//! ```text
//! cargo run --example cli -- demo [--processes 6] [--expiries 5]
//! CLIENT_SECRET=… cargo run --example cli -- call --file session.json \
//!     --token-url URL --client-id ID --api http://HOST:PORT [--seconds 10]
//! ```
//!
//! `call` is the tool itself, the part to copy: it loads the session from
//! the file (it never logs in), calls the API through the layered client
//! for a while, and prints one `result` line.
//!
//! `demo` shows it working: it starts test-util's authorization server
//! (2-second access tokens, rotating refresh tokens, reuse detection) and
//! API in this process on 127.0.0.1, logs in once (writes the file), runs
//! `--processes` copies of this program's `call` at once for `--expiries`
//! token lifetimes, then prints what each did and what the server saw. It
//! exits non-zero unless every request got 200 and the server never saw a
//! spent refresh token come back: the processes must refresh once between
//! them each time, never each on its own.

use std::{
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_token_refresh::{
    FileStore, ServiceClient, TokenManager, TokenRefreshLayer,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_test_util::{AuthConfig, AuthServer, ResourceServer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<ExitCode, BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("call") => call(&Flags(&args[1..])).await,
        Some("demo") => demo(&Flags(&args[1..])).await,
        _ => {
            eprintln!("usage: cli demo [--processes N] [--expiries N]");
            eprintln!(
                "       cli call --file PATH --token-url URL --client-id ID --api ORIGIN [--seconds N]"
            );
            Ok(ExitCode::from(2))
        }
    }
}

/// One run of the tool: resume the login from the file, call the API.
async fn call(flags: &Flags<'_>) -> Result<ExitCode, BoxError> {
    let file = PathBuf::from(flags.required("--file")?);
    let api = flags.required("--api")?;
    let seconds: u64 = flags.get("--seconds").unwrap_or("10").parse()?;

    // One HTTP client, for the API and for the token endpoint.
    let http = Client::builder(TokioExecutor::new()).build_http();
    // How new tokens are fetched: the refresh_token grant (RFC 6749 §6).
    let grant = RefreshTokenGrant::new(
        flags.required("--token-url")?.parse()?,
        ClientAuth::basic(
            flags.required("--client-id")?,
            std::env::var("CLIENT_SECRET")?,
        ),
        ServiceClient::new(http.clone()),
    );
    // The session lives in the file. Every process of this tool that runs
    // at the same time shares it: the refresh token rotates, so they must
    // take turns refreshing it, and the FileStore sees to that.
    let tokens = TokenManager::builder(grant)
        .store(FileStore::new(&file))
        .on_session_expired(|| eprintln!("session expired: log in again"))
        .build();
    // Resume the login. Logging in is another command's job.
    if !tokens.load().await? {
        eprintln!("not logged in: no session in {}", file.display());
        return Ok(ExitCode::from(2));
    }
    // Every request through `client` carries the current access token; the
    // layer sends it to the API's origin only.
    let client = ServiceBuilder::new()
        .layer(TokenRefreshLayer::new(tokens.clone()).allow_origin(api.parse()?))
        .service(http);

    let until = Instant::now() + Duration::from_secs(seconds);
    let (mut requests, mut ok) = (0u64, 0u64);
    while Instant::now() < until {
        requests += 1;
        let request = Request::get(format!("{api}/api/data")).body(Full::<Bytes>::default())?;
        match client.clone().oneshot(request).await {
            Ok(response) if response.status() == StatusCode::OK => {
                response.into_body().collect().await?;
                ok += 1;
            }
            Ok(response) => eprintln!("HTTP {}", response.status()),
            Err(e) => {
                eprintln!("{e}");
                if tokens.is_session_expired() {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // New token sets: fetched here, or taken from the file after another
    // process fetched them.
    let stats = tokens.stats();
    let adopted = stats.adopted_from_store;
    let refreshed = stats.refreshes_succeeded - adopted;
    println!("result requests={requests} ok={ok} refreshes={refreshed} adopted={adopted}");
    Ok(if ok == requests {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Logs in once, runs copies of `call` at once, and checks what they did.
async fn demo(flags: &Flags<'_>) -> Result<ExitCode, BoxError> {
    let processes: usize = flags.get("--processes").unwrap_or("6").parse()?;
    let expiries: u64 = flags.get("--expiries").unwrap_or("5").parse()?;
    let lifetime = Duration::from_secs(2);
    let seconds = expiries * lifetime.as_secs();

    let auth = AuthServer::start(AuthConfig::default().access_lifetime(lifetime)).await?;
    let api = ResourceServer::start(&auth).await?;
    let dir = std::env::temp_dir().join(format!("ttr-cli-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("session.json");
    login(&file, &auth).await?;
    println!(
        "logged in once: {} ({}-second access tokens, rotating refresh token)",
        file.display(),
        lifetime.as_secs()
    );
    println!("running {processes} copies of `cli call` at once for {seconds} s");

    let me = std::env::current_exe()?;
    let mut children = Vec::new();
    for _ in 0..processes {
        let child = tokio::process::Command::new(&me)
            .arg("call")
            .args(["--file", &file.to_string_lossy()])
            .args(["--token-url", &auth.token_url()])
            .args(["--client-id", auth.client_id()])
            .args(["--api", &format!("http://{}", api.addr())])
            .args(["--seconds", &seconds.to_string()])
            .env("CLIENT_SECRET", auth.client_secret())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        children.push(child);
    }

    let mut all_ok = true;
    println!("\n  process  requests      ok  refreshes  taken from the file");
    for child in children {
        let pid = child.id().unwrap_or_default();
        let limit = Duration::from_secs(seconds + 30);
        let output = tokio::time::timeout(limit, child.wait_with_output()).await;
        let (status, stdout) = match output {
            Ok(Ok(output)) => (output.status.success(), output.stdout),
            _ => (false, Vec::new()),
        };
        let stdout = String::from_utf8_lossy(&stdout);
        let result = stdout.lines().find_map(|l| l.strip_prefix("result "));
        let field = |name: &str| {
            result
                .and_then(|r| r.split(' ').find_map(|f| f.strip_prefix(name)))
                .unwrap_or("-")
                .to_owned()
        };
        println!(
            "  {pid:>7}  {:>8}  {:>6}  {:>9}  {:>19}{}",
            field("requests="),
            field("ok="),
            field("refreshes="),
            field("adopted="),
            if status { "" } else { "  FAILED" }
        );
        all_ok &= status && result.is_some();
    }
    let stats = auth.stats();
    println!(
        "\nserver: {} refresh grants (the refreshes above), {} invalid_grant, {} spent refresh tokens presented again",
        stats.refresh_grants, stats.invalid_grant, stats.reuse_detected
    );
    let _ = std::fs::remove_dir_all(&dir);
    if all_ok && stats.reuse_detected == 0 {
        println!("ok: every request got 200, and the processes shared each refresh");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("FAILED: every request must get 200 and no refresh token may be reused");
        Ok(ExitCode::FAILURE)
    }
}

/// What a `login` command would do after the user signed in: save the
/// tokens to the file.
async fn login(file: &Path, auth: &AuthServer) -> Result<(), BoxError> {
    let http = Client::builder(TokioExecutor::new()).build_http();
    let grant = RefreshTokenGrant::new(
        auth.token_url().parse()?,
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(http),
    );
    let tokens = TokenManager::builder(grant)
        .store(FileStore::new(file))
        .build();
    tokens.set(auth.login().token_set()).await?;
    Ok(())
}

/// `--name value` pairs.
struct Flags<'a>(&'a [String]);

impl Flags<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        let at = self.0.iter().position(|a| a == name)?;
        self.0.get(at + 1).map(String::as_str)
    }

    fn required(&self, name: &str) -> Result<&str, BoxError> {
        self.get(name)
            .ok_or_else(|| format!("{name} is required").into())
    }
}
