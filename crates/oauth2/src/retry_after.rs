//! `Retry-After` (RFC 9110 §10.2.3): delay seconds or an HTTP-date, read
//! strictly, with the IMF-fixdate parser it needs (no date crate).
//!
//! Invariants:
//!
//! - A value that is not exactly one of the two forms is no value (`None`):
//!   a server's junk never becomes a wait.
//! - A wait is never longer than [`MAX_RETRY_AFTER`], and a date in the past
//!   is no wait, not an error.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest `Retry-After` believed: an hour.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A `Retry-After` value (RFC 9110 §10.2.3): delay seconds, or an HTTP-date
/// in IMF-fixdate form, turned into a wait from `now` (a date in the past is
/// no wait). At most an hour.
pub(super) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = parse_imf_fixdate(value)?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 §5.6.7), strictly.
fn parse_imf_fixdate(s: &str) -> Option<SystemTime> {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = s.as_bytes();
    if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    if b[7] != b' ' || b[11] != b' ' || b[16] != b' ' || b[19] != b':' || b[22] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0u64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
        })
    };
    let weekday = DAYS.iter().position(|d| d.as_bytes() == &b[..3])?;
    let day = num(5..7)?;
    let month = MONTHS.iter().position(|m| m.as_bytes() == &b[8..11])? as u64 + 1;
    let year = num(12..16)?;
    let (hour, minute, second) = (num(17..19)?, num(20..22)?, num(23..25)?);
    if year < 1970 || hour > 23 || minute > 59 || second > 60 || day == 0 {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    // 1970-01-01 was a Thursday (index 3 with Monday as 0).
    if (days + 3) % 7 != weekday as u64 {
        return None;
    }
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59);
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`), for years from 1970; `None` for a day the month lacks.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let month_len = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day > month_len {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, header};

    use super::*;
    use crate::{ErrorKind, parse_token_response, tests::response};

    #[test]
    fn retry_after_http_date_is_a_wait_from_now() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        // In the past: no wait. Far ahead: an hour at most.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        for junk in [
            "Mon, 06 Nov 1994 08:49:37 GMT", // wrong weekday
            "Sun, 31 Nov 1994 08:49:37 GMT", // no such day
            "Sun, 06 Nov 1994 24:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "-5",
            "soon",
            "",
        ] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk}");
        }
    }

    #[test]
    fn imf_fixdate_matches_known_dates() {
        let at = |s| {
            parse_imf_fixdate(s)
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        assert_eq!(at("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
        assert_eq!(at("Tue, 29 Feb 2000 12:00:00 GMT"), 951_825_600);
        assert_eq!(at("Tue, 14 Nov 2023 22:13:20 GMT"), 1_700_000_000);
        assert!(parse_imf_fixdate("Thu, 29 Feb 2100 00:00:00 GMT").is_none());
    }

    #[test]
    fn retry_after_date_on_a_429_reaches_the_error() {
        let mut r = response(429, r#"{"error":"slow_down"}"#);
        let soon = httpdate_in(Duration::from_secs(90));
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_str(&soon).unwrap());
        let err = parse_token_response(&http::Request::new(bytes::Bytes::new()), r).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient);
        let wait = err.retry_after().unwrap();
        assert!(
            wait <= Duration::from_secs(90) && wait >= Duration::from_secs(85),
            "{wait:?}"
        );
    }

    /// An IMF-fixdate `ahead` from now, written by hand like the parser.
    fn httpdate_in(ahead: Duration) -> String {
        const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let secs = (SystemTime::now() + ahead)
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let days = secs / 86_400;
        let (mut year, mut rest) = (1970, days);
        loop {
            let len = if days_from_civil(year + 1, 1, 1).unwrap()
                - days_from_civil(year, 1, 1).unwrap()
                > rest
            {
                break;
            } else {
                days_from_civil(year + 1, 1, 1).unwrap() - days_from_civil(year, 1, 1).unwrap()
            };
            rest -= len;
            year += 1;
        }
        let mut month = 1;
        while month < 12 && days_from_civil(year, month + 1, 1).unwrap() <= days {
            month += 1;
        }
        let day = days - days_from_civil(year, month, 1).unwrap() + 1;
        format!(
            "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
            DAYS[(days % 7) as usize],
            MONTHS[(month - 1) as usize],
            secs % 86_400 / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    }
}
