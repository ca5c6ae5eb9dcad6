//! `ttr-session`: resumes a login from a `FileStore` file and calls an API
//! through the layered client until its time is up, then prints one JSON
//! line of what happened. The child of the multi-process tests; see
//! `tower_token_refresh_test_util::process`.
//!
//! ```text
//! TTR_CLIENT_SECRET=test-secret ttr-session --file session.json \
//!     --token-url http://127.0.0.1:PORT/token --client-id test-client \
//!     --resource http://127.0.0.1:PORT/api/data --run-for 20s --concurrency 2 \
//!     [--interval 50ms] [--attempt-timeout 1s] [--rotation detect|never|always|grace:5s] \
//!     [--refresh-ahead 1s] [--refresh-jitter 0.2] [--expiry-leeway 200ms] \
//!     [--max-attempts 4] [--request-timeout 60s] [--watch-interval 5ms] \
//!     [--requests N] [--no-lock]
//! ```
//!
//! `--no-lock` opens the file with `FileStore::without_lock()`: the
//! processes no longer coordinate their refreshes (tests show with it that
//! they would catch the bug).
//!
//! Exit code 0 if every request was answered 200, 1 if not, 2 if it could
//! not run.

fn main() {
    let args = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    std::process::exit(tower_token_refresh_test_util::process::main_with_args(args));
}
