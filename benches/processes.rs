//! Processes sharing one file (P10): N processes resume one login from one
//! `FileStore` file and call an API through the layered client while the
//! access token expires again and again. Per expiry: how many refresh
//! grants reach the authorization server, and how long from the expiry
//! until every process holds the new access token. One process alone is
//! the baseline.
//!
//! ```text
//! cargo bench --bench processes             # 1, 4 and 16 processes, 5 expiries each
//! cargo bench --bench processes -- --test   # 1 and 2 processes, one expiry (CI)
//! ```
//!
//! The children are this program itself (`processes child ARGS…`), each
//! running test-util's `process` session: hyper-util's client,
//! `RefreshTokenGrant`, `TokenManager` with `FileStore`, `TokenRefreshLayer`,
//! one request every 10 ms. Refresh-ahead is off and the expiry leeway is
//! 200 ms, so every process needs the new token at the same moment, its
//! "expiry": 200 ms before the old token's `expires_at`. Each child notes
//! (polling its manager every 1 ms) the wall-clock time at which it first
//! held each access token; the bench groups the tokens by refresh window.
//! The authorization server (test-util's, in this process) issues 3-second
//! tokens and rotates refresh tokens with reuse detection.

use std::{collections::BTreeMap, time::Duration};

use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, AuthStats, ResourceServer,
    process::{self, Finished, SessionConfig, SessionProcess, SessionReport},
};

const LIFETIME: Duration = Duration::from_secs(3);
const LEEWAY: Duration = Duration::from_millis(200);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        std::process::exit(process::main_with_args(args.into_iter().skip(2)));
    }
    let quick = args.iter().any(|a| a == "--test");
    let (sizes, expiries): (&[usize], u32) = if quick {
        (&[1, 2], 1)
    } else {
        (&[1, 4, 16], 5)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for &n in sizes {
        let row = runtime.block_on(case(n, expiries))?;
        eprintln!("{n} processes: {row:?}");
        rows.push(row);
    }
    print_table(&rows);
    Ok(())
}

#[derive(Debug)]
struct Row {
    processes: usize,
    /// Refresh windows that ended during the run.
    expiries: usize,
    stats: AuthStats,
    /// Windows in which every process came to hold one same new token.
    complete: usize,
    /// Windows with more than one new token (processes refreshed apart).
    split: usize,
    /// Per complete window: from the expiry to the last process holding
    /// the new token, and from the first to the last, in ms.
    until_all: Vec<i64>,
    spread: Vec<i64>,
    requests: u64,
    failed: u64,
}

async fn case(n: usize, expiries: u32) -> Result<Row, BoxError> {
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(LIFETIME)).await?;
    let api = ResourceServer::start(&auth).await?;
    let dir = std::env::temp_dir().join(format!("ttr-bench-processes-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("session.json");
    process::write_login(&file, &auth).await?;

    // The run ends a little past the last expiry's refresh; each window
    // lasts the lifetime minus the leeway, plus the refresh itself.
    let run = (LIFETIME - LEEWAY) * expiries + LIFETIME / 2;
    let config = SessionConfig::new(&file, &auth, api.url("/api/data"))
        .run_for(run)
        .concurrency(1)
        .interval(Duration::from_millis(10))
        .refresh_ahead(Duration::ZERO)
        .expiry_leeway(LEEWAY)
        .watch_interval(Duration::from_millis(1));
    let me = std::env::current_exe()?;
    let children = (0..n)
        .map(|_| SessionProcess::spawn_with(&me, &["child"], &config))
        .collect::<Result<Vec<_>, _>>()?;
    let mut finished = Vec::new();
    for child in children {
        finished.push(child.finish(run + Duration::from_secs(30)).await);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let reports = reports(&finished)?;
    Ok(analyse(n, &auth.stats(), &reports))
}

fn reports(finished: &[Finished]) -> Result<Vec<SessionReport>, BoxError> {
    finished
        .iter()
        .map(|f| {
            f.report.clone().ok_or_else(|| {
                format!(
                    "child {} exited {:?} without a report: {}",
                    f.pid,
                    f.status,
                    f.stderr.trim()
                )
                .into()
            })
        })
        .collect()
}

/// A refresh window: the tokens whose expiries lie within half a lifetime
/// of the first one's (one token if the processes refreshed once between
/// them).
struct Window {
    expires_at: u64,
    tokens: Vec<String>,
}

fn analyse(n: usize, stats: &AuthStats, reports: &[SessionReport]) -> Row {
    let mut expiry_of = BTreeMap::new();
    for held in reports.iter().flat_map(|r| &r.held) {
        if let Some(at) = held.expires_at_unix_ms {
            let e = expiry_of.entry(held.token.clone()).or_insert(at);
            *e = (*e).min(at);
        }
    }
    let mut by_expiry: Vec<(u64, String)> = expiry_of.into_iter().map(|(t, e)| (e, t)).collect();
    by_expiry.sort();
    let half = u64::try_from(LIFETIME.as_millis() / 2).unwrap_or(u64::MAX);
    let mut windows: Vec<Window> = Vec::new();
    for (expires_at, token) in by_expiry {
        match windows.last_mut() {
            Some(w) if expires_at < w.expires_at + half => w.tokens.push(token),
            _ => windows.push(Window {
                expires_at,
                tokens: vec![token],
            }),
        }
    }
    let leeway = u64::try_from(LEEWAY.as_millis()).unwrap_or(0);
    let (mut complete, mut split) = (0, 0);
    let (mut until_all, mut spread) = (Vec::new(), Vec::new());
    for pair in windows.windows(2) {
        let (old, new) = (&pair[0], &pair[1]);
        if new.tokens.len() > 1 {
            split += 1;
            continue;
        }
        let due = old.expires_at.saturating_sub(leeway);
        let held: Option<Vec<u64>> = reports
            .iter()
            .map(|r| {
                r.held
                    .iter()
                    .find(|h| h.token == new.tokens[0])
                    .map(|h| h.at_unix_ms)
            })
            .collect();
        if let Some(held) = held {
            let (first, last) = (
                held.iter().copied().min().unwrap_or(due),
                held.iter().copied().max().unwrap_or(due),
            );
            complete += 1;
            until_all.push(last as i64 - due as i64);
            spread.push(last as i64 - first as i64);
        }
    }
    Row {
        processes: n,
        expiries: windows.len().saturating_sub(1),
        stats: *stats,
        complete,
        split,
        until_all,
        spread,
        requests: reports.iter().map(|r| r.requests).sum(),
        failed: reports.iter().map(|r| r.requests - r.ok).sum(),
    }
}

fn p50(values: &[i64]) -> Option<i64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

fn show(value: Option<i64>) -> String {
    value.map_or("-".to_owned(), |v| format!("{v} ms"))
}

fn print_table(rows: &[Row]) {
    println!(
        "\nprocesses sharing one file: {}-second tokens, {} ms leeway, refresh on need",
        LIFETIME.as_secs(),
        LEEWAY.as_millis()
    );
    println!(
        "| processes | expiries | token requests | refresh grants / expiry | reuse detected | failed requests | every process got the one new token | expiry → all hold it, p50 / max | first → last holder, p50 / max |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let baseline = rows.first().and_then(|r| p50(&r.until_all));
    for r in rows {
        let per = if r.expiries == 0 {
            "-".to_owned()
        } else {
            format!("{:.2}", r.stats.refresh_grants as f64 / r.expiries as f64)
        };
        let ratio = match (p50(&r.until_all), baseline) {
            (Some(p), Some(b)) if b > 0 && r.processes > 1 => {
                format!(" ({:.2} × one process)", p as f64 / b as f64)
            }
            _ => String::new(),
        };
        let split = if r.split > 0 {
            format!(" ({} split)", r.split)
        } else {
            String::new()
        };
        println!(
            "| {} | {} | {} | {per} | {} | {} of {} | {} of {}{split} | {}{ratio} / {} | {} / {} |",
            r.processes,
            r.expiries,
            r.stats.token_requests,
            r.stats.reuse_detected,
            r.failed,
            r.requests,
            r.complete,
            r.expiries,
            show(p50(&r.until_all)),
            show(r.until_all.iter().copied().max()),
            show(p50(&r.spread)),
            show(r.spread.iter().copied().max()),
        );
    }
}
