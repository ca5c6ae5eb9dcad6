//! Which hosts are loopback: the one rule behind every "cleartext only to
//! loopback" check (token requests, discovered endpoints, the layer's
//! origin policy, a resource's metadata URL).

/// Whether `host`, as [`http::Uri::host`] gives it (IPv6 literals in
/// brackets), is a loopback host: `localhost` (any ASCII case), an address
/// in `127.0.0.0/8`, or `[::1]`.
///
/// Only the canonical spellings count, the safe direction: IPv4 in plain
/// dotted decimal with four parts and no leading zeros (`127.1`,
/// `127.0.0.01` and `0x7f.0.0.1` are refused: `inet_aton` reads some of
/// them as octal, and a resolver may look up what it cannot read), no
/// trailing dot (`localhost.` is a name a resolver may send elsewhere), no
/// zone, no IPv4-mapped address (`[::ffff:127.0.0.1]`), no bare `::1`.
///
/// Cheap enough for every `http://` request: the common forms are checked
/// without an address parse.
///
/// # Example
///
/// ```
/// use tower_token_refresh_core::is_loopback_host;
///
/// let uri: http::Uri = "http://[::1]:8080/token".parse()?;
/// assert!(uri.host().is_some_and(is_loopback_host));
/// assert!(is_loopback_host("LocalHost"));
/// assert!(is_loopback_host("127.9.8.7"));
/// assert!(!is_loopback_host("localhost."));
/// assert!(!is_loopback_host("127.0.0.1.nip.io"));
/// # Ok::<(), http::uri::InvalidUri>(())
/// ```
pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") || host == "[::1]" {
        return true;
    }
    if let Some(rest) = host.strip_prefix("127.") {
        return is_three_octets(rest.as_bytes());
    }
    // Other spellings of ::1 (`[0:0::1]`).
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<std::net::Ipv6Addr>().ok())
        .is_some_and(|ip| ip.is_loopback())
}

/// `a.b.c` with each part a decimal number from 0 to 255 without leading
/// zeros: the only spelling Rust's `Ipv4Addr` parser accepts, read without
/// it.
fn is_three_octets(bytes: &[u8]) -> bool {
    let (mut parts, mut value, mut digits) = (0, 0u16, 0);
    for &b in bytes {
        match b {
            b'0'..=b'9' if digits < 3 && !(digits == 1 && value == 0) => {
                value = value * 10 + u16::from(b - b'0');
                digits += 1;
            }
            b'.' if digits > 0 && value <= 255 => {
                parts += 1;
                (value, digits) = (0, 0);
            }
            _ => return false,
        }
    }
    digits > 0 && value <= 255 && parts == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_localhost_127_0_0_0_8_and_ipv6_one() {
        for host in [
            "localhost",
            "LocalHost",
            "LOCALHOST",
            "127.0.0.1",
            "127.9.8.7",
            "127.0.0.0",
            "127.255.0.9",
            "127.100.200.250",
            "[::1]",
            "[0::1]",
            "[0:0::1]",
            "[0:0:0:0:0:0:0:1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn other_spellings_of_loopback_are_refused() {
        for host in [
            // Not canonical dotted decimal.
            "127.1",
            "127.0.0",
            "127...",
            "127.0.0.01",
            "127.00.0.1",
            "127.0.0.256",
            "127.0.0.1000",
            "127.a.0.1",
            "0x7f.0.0.1",
            "2130706433",
            // Names that only start or end like loopback.
            "127.0.0.1.example.com",
            "localhost.example.com",
            "localhost.",
            "127.0.0.1.",
            "[::1].",
            // IPv6: unbracketed, mapped, zoned, or IPv4 in brackets.
            "::1",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[::1%25lo]",
            "[127.0.0.1]",
            "[[::1]]",
            "[::1",
            // Not loopback at all.
            "128.0.0.1",
            "10.0.0.1",
            "[::2]",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn three_octets_agree_with_the_standard_parser() {
        for rest in [
            "0.0.1",
            "255.255.255",
            "1.2.3",
            "0.0.01",
            "00.0.1",
            "256.0.0",
            "1.2",
            "1.2.3.4",
            "1..2",
            ".1.2",
            "1.2.",
            "",
            "01.2.3",
            "1.2.3a",
        ] {
            let ours = is_three_octets(rest.as_bytes());
            let std = format!("127.{rest}").parse::<std::net::Ipv4Addr>().is_ok();
            assert_eq!(ours, std, "127.{rest}");
        }
    }
}
