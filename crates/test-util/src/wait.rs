//! Bounded waits on tokio's clock.

use std::time::Duration;

/// Waits until `cond` holds, checking it every millisecond of tokio's clock,
/// at most 10,000 times.
///
/// Under paused time (`#[tokio::test(start_paused = true)]`) each step lets
/// the runtime run every task that is ready and advances the clock by 1 ms,
/// so the wait costs no real time and ends as soon as spawned work (a
/// refresh, a background task) has made `cond` true.
///
/// # Panics
///
/// When `cond` still does not hold after 10 s of tokio's clock, with a
/// message naming `what` was awaited.
///
/// # Example
///
/// ```
/// use std::sync::{
///     Arc,
///     atomic::{AtomicBool, Ordering},
/// };
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let done = Arc::new(AtomicBool::new(false));
/// let flag = done.clone();
/// tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
/// tower_token_refresh_test_util::until("the task ran", || done.load(Ordering::SeqCst)).await;
/// # }
/// ```
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting until {what}");
}
