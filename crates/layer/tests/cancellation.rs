//! Randomised cancellation: callers dropped at random points while rotating
//! refreshes run against the real authorization server (rotation and reuse
//! detection on). Seeded and reproducible: a failure prints the seed and
//! round; rerun with `CANCEL_SEED=<seed>` to replay it.
//!
//! The property: no cancellation ever loses a rotated refresh token. Had
//! the manager kept a refresh token the server had already replaced, the
//! next refresh would present it, the server would detect the reuse and
//! revoke the family (RFC 9700 §4.14.2). So after every round the server
//! must have seen no reuse, and at the end the manager's refresh token must
//! still work for one more refresh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;
use tower_token_refresh_test_util::{AuthConfig, Fault};

const ROUNDS: usize = 1_000;

/// splitmix64: small, seedable, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// How many callers were aborted and how many got a response, over the run.
#[derive(Debug, Default)]
struct Tally {
    aborted: u64,
    completed: u64,
    aborted_mid_refresh: u64,
}

#[tokio::test(start_paused = true)]
async fn dropped_callers_never_lose_a_rotated_refresh_token() {
    let seed = std::env::var("CANCEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_CA11_u64);
    let mut rng = Rng(seed);
    let w = world_with(
        AuthConfig::default()
            .access_lifetime(Duration::from_secs(60))
            .rotation(true),
        |b| b.min_refresh_interval(Duration::ZERO),
    )
    .await;
    let mut tally = Tally::default();

    for round in 0..ROUNDS {
        // Make the current token unusable one way or the other: revoked at
        // the resource (401, refresh, replay) or expired on the clock
        // (callers wait for the refresh).
        if rng.chance(2) {
            w.auth.expire_access_tokens();
        } else {
            tokio::time::advance(Duration::from_secs(61)).await;
        }
        // Often the token endpoint takes a while, so that callers are
        // dropped while it holds the request.
        if rng.chance(2) {
            let delay = Duration::from_millis(rng.below(30));
            w.auth.inject(Fault::Delay(delay), 1);
        }
        let callers: Vec<_> = (0..1 + rng.below(5))
            .map(|_| w.spawn_get("/api/data"))
            .collect();
        let mut survivors = Vec::new();
        for caller in callers {
            // A random point: some scheduler turns, sometimes a few ms.
            for _ in 0..rng.below(12) {
                tokio::task::yield_now().await;
            }
            if rng.chance(4) {
                tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
            }
            if rng.chance(2) {
                let stats = w.tokens.stats();
                if stats.refreshes_started > stats.refreshes_succeeded + stats.refreshes_failed {
                    tally.aborted_mid_refresh += 1;
                }
                caller.abort();
                tally.aborted += 1;
                let _ = caller.await;
            } else {
                survivors.push(caller);
            }
        }
        for caller in survivors {
            let response = caller.await.unwrap().unwrap_or_else(|e| {
                panic!("seed {seed:#x} round {round}: {e}");
            });
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "seed {seed:#x} round {round}"
            );
            tally.completed += 1;
        }
        // Let a refresh whose every caller was dropped run to its end.
        until("the refresh finished", || {
            let s = w.tokens.stats();
            s.refreshes_started == s.refreshes_succeeded + s.refreshes_failed
        })
        .await;
        let stats = w.auth.stats();
        assert_eq!(stats.reuse_detected, 0, "seed {seed:#x} round {round}");
        assert_eq!(stats.invalid_grant, 0, "seed {seed:#x} round {round}");
        assert_eq!(
            w.tokens.stats().refreshes_failed,
            0,
            "seed {seed:#x} round {round}"
        );
    }

    // The refresh token the manager holds is the newest the server issued:
    // it works once more, and nothing was reused along the way.
    let grants_before = w.auth.stats().refresh_grants;
    w.tokens.refresh().await.unwrap();
    assert_eq!(w.get("/api/data").await.unwrap().status(), StatusCode::OK);
    let stats = w.auth.stats();
    assert_eq!(stats.refresh_grants, grants_before + 1);
    assert_eq!(stats.reuse_detected, 0);
    assert_eq!(stats.invalid_grant, 0);
    assert!(!w.tokens.is_session_expired());
    // The run did what it claims: many rotations, many drops, many of them
    // while a refresh was in flight.
    assert!(stats.refresh_grants >= ROUNDS as u64 / 2, "{stats:?}");
    assert!(tally.aborted >= ROUNDS as u64, "{tally:?}");
    assert!(tally.aborted_mid_refresh >= ROUNDS as u64 / 10, "{tally:?}");
    eprintln!(
        "seed {seed:#x}: {ROUNDS} rounds, {} rotations, {tally:?}",
        stats.refresh_grants
    );
}
