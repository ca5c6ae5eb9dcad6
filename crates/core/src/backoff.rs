//! Waiting before trying again, the same way everywhere: exponential
//! backoff with full jitter ([`Backoff`]), the random numbers behind it
//! ([`Jitter`]), and the wait a server asks for ([`retry_after`]).
//!
//! The coordinator's refresh attempts, the grants and the layer's
//! `ServerErrorRetry` all wait by these rules.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use tower_token_refresh_core::backoff::{Backoff, Jitter, retry_after};
//!
//! let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
//! let jitter = Jitter::new();
//! // After the third failed attempt: a wait drawn from 0 to 400 ms.
//! assert!(backoff.delay(3, jitter.next()) <= Duration::from_millis(400));
//!
//! let mut headers = http::HeaderMap::new();
//! headers.insert(http::header::RETRY_AFTER, "120".parse()?);
//! assert_eq!(retry_after(&headers, SystemTime::now()), Some(Duration::from_secs(120)));
//! # Ok::<(), http::header::InvalidHeaderValue>(())
//! ```

use std::{
    hash::{BuildHasher, RandomState},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use http::{HeaderMap, header::RETRY_AFTER};

use crate::MAX_SETTING;

/// Exponential backoff with full jitter: the wait after failed attempt `n`
/// is drawn uniformly from zero to `min(max, base * 2^(n-1))` ("Exponential
/// Backoff And Jitter", AWS Architecture Blog, 2015), so that clients that
/// failed together do not retry together.
///
/// Both durations are at most [`MAX_SETTING`], and `max` at least `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Default for Backoff {
    /// 100 ms after the first failure, doubling up to 5 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

impl Backoff {
    /// Backoff from `base` after the first failure, doubling up to `max`;
    /// both clamped to [`MAX_SETTING`], `max` raised to `base`.
    pub fn new(base: Duration, max: Duration) -> Self {
        let base = base.min(MAX_SETTING);
        Backoff {
            base,
            max: max.max(base).min(MAX_SETTING),
        }
    }

    /// The longest wait after the first failure.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest wait after any failure.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The wait after failed attempt `attempt` (the first is 1), for a
    /// uniform `unit` in 0..1 (from [`Jitter::next`]; clamped).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(31);
        let ceiling = self.base.saturating_mul(1u32 << exp).min(self.max);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// A lock-free source of uniform numbers in 0..1 for jitter: splitmix64
/// over a counter, seeded from the standard library's per-process random
/// state. Good enough to spread retries; not for anything secret.
///
/// Shared by reference (`&self`), so one source can serve every clone of a
/// policy.
#[derive(Debug)]
pub struct Jitter {
    state: AtomicU64,
}

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}

impl Jitter {
    /// A source seeded at random: two made at the same instant still draw
    /// apart.
    pub fn new() -> Self {
        Self::from_seed(RandomState::new().hash_one(0x5eed_u64))
    }

    /// A source that draws the same numbers for the same seed, for
    /// reproducible tests.
    pub fn from_seed(seed: u64) -> Self {
        Jitter {
            state: AtomicU64::new(seed),
        }
    }

    /// The next number, uniform in 0..1.
    pub fn next(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // 53 random bits into [0, 1).
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The wait the first `Retry-After` of `headers` asks for (RFC 9110
/// §10.2.3), counted from `now`: delay-seconds, or an HTTP-date in any of
/// the three forms RFC 9110 §5.6.7 has recipients accept (read by the
/// `httpdate` crate).
///
/// A date in the past is no wait (`Some(ZERO)`); a number of seconds too
/// large to count is the longest wait there is. No cap: each caller
/// decides what it is willing to wait. Anything else (a sign, a fraction,
/// an invalid date, junk) is no value: a server's junk never becomes a
/// wait.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: `parse` fails only when the number overflows.
        let seconds = value.parse().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use http::HeaderValue;

    use super::*;

    #[test]
    fn delay_grows_exponentially_and_is_capped() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(2, 1.0), Duration::from_millis(200));
        assert_eq!(b.delay(4, 1.0), Duration::from_millis(800));
        assert_eq!(b.delay(5, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(200));
    }

    #[test]
    fn settings_are_clamped_and_max_is_at_least_base() {
        let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(
            (b.base(), b.max()),
            (Duration::from_secs(2), Duration::from_secs(2))
        );
        let b = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!((b.base(), b.max()), (MAX_SETTING, MAX_SETTING));
        assert_eq!(b.delay(u32::MAX, 1.0), MAX_SETTING);
    }

    #[test]
    fn jitter_is_uniform_enough() {
        let j = Jitter::new();
        let draws: Vec<f64> = (0..10_000).map(|_| j.next()).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        let low = draws.iter().filter(|x| **x < 0.1).count();
        assert!((800..1200).contains(&low), "{low} of 10000 below 0.1");
    }

    #[test]
    fn a_seed_repeats_its_draws() {
        let (a, b) = (Jitter::from_seed(42), Jitter::from_seed(42));
        let draws = |j: &Jitter| (0..8).map(|_| j.next()).collect::<Vec<_>>();
        assert_eq!(draws(&a), draws(&b));
        assert_ne!(draws(&Jitter::from_seed(43)), draws(&Jitter::from_seed(42)));
    }

    fn after(value: &'static str, now: SystemTime) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static(value));
        retry_after(&headers, now)
    }

    #[test]
    fn retry_after_seconds_are_digits_only_and_saturate() {
        let now = SystemTime::now();
        assert_eq!(after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(after(" 2 ", now), Some(Duration::from_secs(2)));
        assert_eq!(after("0", now), Some(Duration::ZERO));
        assert_eq!(
            after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for junk in ["-5", "+5", "1.5", "5s", "soon", ""] {
            assert_eq!(after(junk, now), None, "{junk:?}");
        }
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn retry_after_http_date_is_a_wait_from_now() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        // The obsolete forms too (RFC 9110 §5.6.7).
        assert_eq!(
            after("Sunday, 06-Nov-94 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            after("Sun Nov  6 08:50:07 1994", now),
            Some(Duration::from_secs(30))
        );
        // In the past: no wait. Far ahead: as far as it says.
        assert_eq!(
            after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(Duration::from_secs(253_402_300_799 - 784_111_777))
        );
        for junk in [
            "Mon, 06 Nov 1994 08:49:37 GMT", // wrong weekday
            "Sun, 31 Nov 1994 08:49:37 GMT", // no such day
            "Sun, 06 Nov 1994 24:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994",
        ] {
            assert_eq!(after(junk, now), None, "{junk}");
        }
    }

    #[test]
    fn known_dates_read_as_the_instants_they_name() {
        let at = |s: &'static str| after(s, UNIX_EPOCH).map(|d| d.as_secs());
        assert_eq!(at("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(at("Tue, 29 Feb 2000 12:00:00 GMT"), Some(951_825_600));
        assert_eq!(at("Tue, 14 Nov 2023 22:13:20 GMT"), Some(1_700_000_000));
        assert_eq!(at("Thu, 29 Feb 2100 00:00:00 GMT"), None);
    }
}
