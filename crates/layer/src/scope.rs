//! Which requests get the token.

use std::{fmt, str::FromStr};

use http::{Request, Uri};

/// Put this in a request's extensions to send it without a token and without
/// replay: for the token endpoint called through the same client, say.
///
/// # Example
///
/// ```
/// use tower_token_refresh::SkipAuth;
///
/// let mut request = http::Request::get("http://127.0.0.1/health").body(()).unwrap();
/// request.extensions_mut().insert(SkipAuth);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkipAuth;

/// An origin (scheme, host, port) that tokens may be sent to.
///
/// # Example
///
/// ```
/// use tower_token_refresh::Origin;
///
/// let origin: Origin = "https://API.example.com".parse().unwrap();
/// assert_eq!(origin.to_string(), "https://api.example.com:443");
/// assert!("ftp://example.com".parse::<Origin>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    https: bool,
    host: Box<str>,
    port: u16,
}

/// The error of parsing an [`Origin`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidOrigin(&'static str);

impl fmt::Display for InvalidOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid origin: {}", self.0)
    }
}

impl std::error::Error for InvalidOrigin {}

impl FromStr for Origin {
    type Err = InvalidOrigin;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let uri: Uri = s.parse().map_err(|_| InvalidOrigin("not a URI"))?;
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            _ => return Err(InvalidOrigin("scheme must be http or https")),
        };
        let host = uri.host().ok_or(InvalidOrigin("no host"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(InvalidOrigin("an origin has no path or query"));
        }
        Ok(Origin {
            https,
            host: host.to_ascii_lowercase().into(),
            port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
        })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({self})")
    }
}

impl Origin {
    pub(crate) fn matches(&self, uri: &Uri) -> bool {
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            _ => return false,
        };
        let default_port = if https { 443 } else { 80 };
        https == self.https
            && uri
                .host()
                .is_some_and(|h| h.eq_ignore_ascii_case(&self.host))
            && uri.port_u16().unwrap_or(default_port) == self.port
    }
}

/// Whether two URIs share an origin: scheme, host (case-insensitive) and
/// port, the default port filled in. Relative URIs share none.
#[cfg_attr(not(feature = "follow-redirect"), allow(dead_code))]
pub(crate) fn same_origin(a: &Uri, b: &Uri) -> bool {
    fn parts(uri: &Uri) -> Option<(bool, &str, u16)> {
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            _ => return None,
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Some((https, uri.host()?, port))
    }
    match (parts(a), parts(b)) {
        (Some((a_https, a_host, a_port)), Some((b_https, b_host, b_port))) => {
            a_https == b_https && a_port == b_port && a_host.eq_ignore_ascii_case(b_host)
        }
        _ => false,
    }
}

/// The scope decision for one request.
pub(crate) enum Decision {
    Authorize,
    PassThrough,
    Refuse(&'static str),
}

#[inline]
pub(crate) fn decide<B>(
    request: &Request<B>,
    origins: &[Origin],
    allow_cleartext: bool,
) -> Decision {
    // The common case, decided without a scan: no scope set, no extension
    // that could be `SkipAuth`, and TLS.
    if origins.is_empty()
        && request.extensions().is_empty()
        && request.uri().scheme_str() == Some("https")
    {
        return Decision::Authorize;
    }
    decide_by_scan(request, origins, allow_cleartext)
}

fn decide_by_scan<B>(request: &Request<B>, origins: &[Origin], allow_cleartext: bool) -> Decision {
    if request.extensions().get::<SkipAuth>().is_some() {
        return Decision::PassThrough;
    }
    let uri = request.uri();
    if !origins.is_empty() && !origins.iter().any(|o| o.matches(uri)) {
        return Decision::PassThrough;
    }
    let cleartext = uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http"));
    if cleartext
        && !allow_cleartext
        && !uri
            .authority()
            .is_some_and(|a| is_loopback(host_of(a.as_str())))
    {
        return Decision::Refuse(
            "refusing to send a token over cleartext HTTP to a non-loopback host",
        );
    }
    Decision::Authorize
}

/// The host of an authority (`user@host:port`), IPv6 literals keeping
/// their brackets. `http::uri::Authority::host` does the same with string
/// searches; this is a byte scan, as it runs per request.
fn host_of(authority: &str) -> &str {
    let bytes = authority.as_bytes();
    let start = bytes.iter().rposition(|&b| b == b'@').map_or(0, |i| i + 1);
    let rest = &bytes[start..];
    let end = if rest.first() == Some(&b'[') {
        rest.iter()
            .position(|&b| b == b']')
            .map_or(rest.len(), |i| i + 1)
    } else {
        rest.iter().position(|&b| b == b':').unwrap_or(rest.len())
    };
    // Both ends sit next to ASCII bytes, so they are char boundaries.
    authority.get(start..start + end).unwrap_or("")
}

/// Whether `host` (as in a URI: IPv6 in brackets) is a loopback host:
/// `localhost`, `127.0.0.0/8` or `[::1]`. Called per request for `http://`
/// URIs, so the common forms are checked without a full address parse.
fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") || host == "[::1]" {
        return true;
    }
    if let Some(rest) = host.strip_prefix("127.") {
        return is_three_octets(rest.as_bytes());
    }
    // Other spellings of ::1 (e.g. [0:0::1]).
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<std::net::Ipv6Addr>().ok())
        .is_some_and(|ip| ip.is_loopback())
}

/// `a.b.c` with each part a decimal number from 0 to 255.
fn is_three_octets(bytes: &[u8]) -> bool {
    let (mut parts, mut value, mut digits) = (0, 0u16, 0);
    for &b in bytes {
        match b {
            b'0'..=b'9' if digits < 3 => {
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

    fn req(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    #[test]
    fn origins_match_scheme_host_and_port() {
        let o: Origin = "https://api.example.com".parse().unwrap();
        assert!(o.matches(&"https://API.example.com/v1?x=1".parse().unwrap()));
        assert!(o.matches(&"https://api.example.com:443/".parse().unwrap()));
        assert!(!o.matches(&"http://api.example.com/".parse().unwrap()));
        assert!(!o.matches(&"https://api.example.com:8443/".parse().unwrap()));
        assert!(!o.matches(&"https://evil.example.com/".parse().unwrap()));
        assert!(!o.matches(&"https://api.example.com.evil.com/".parse().unwrap()));
        assert!(!o.matches(&"/relative".parse().unwrap()));
        assert!("https://a.example/path".parse::<Origin>().is_err());
    }

    #[test]
    fn decisions() {
        let origins: Vec<Origin> = vec!["http://127.0.0.1:8080".parse().unwrap()];
        assert!(matches!(
            decide(&req("http://127.0.0.1:8080/a"), &origins, false),
            Decision::Authorize
        ));
        assert!(matches!(
            decide(&req("http://127.0.0.1:9090/a"), &origins, false),
            Decision::PassThrough
        ));
        let mut skip = req("http://127.0.0.1:8080/a");
        skip.extensions_mut().insert(SkipAuth);
        assert!(matches!(
            decide(&skip, &origins, false),
            Decision::PassThrough
        ));

        assert!(matches!(
            decide(&req("http://api.example.com/"), &[], false),
            Decision::Refuse(_)
        ));
        assert!(matches!(
            decide(&req("http://api.example.com/"), &[], true),
            Decision::Authorize
        ));
        assert!(matches!(
            decide(&req("http://localhost:1/"), &[], false),
            Decision::Authorize
        ));
        assert!(matches!(
            decide(&req("http://[::1]:1/"), &[], false),
            Decision::Authorize
        ));
        assert!(matches!(
            decide(&req("https://api.example.com/"), &[], false),
            Decision::Authorize
        ));
        assert!(matches!(
            decide(&req("/relative"), &[], false),
            Decision::Authorize
        ));
    }

    #[test]
    fn same_origins() {
        let same = |a: &str, b: &str| same_origin(&a.parse().unwrap(), &b.parse().unwrap());
        assert!(same("http://a.example/x", "HTTP://A.example:80/y?z"));
        assert!(same("https://a.example:443/", "https://a.example"));
        assert!(!same("https://a.example/", "http://a.example/"));
        assert!(!same("http://a.example:8080/", "http://a.example/"));
        assert!(!same("http://a.example/", "http://b.example/"));
        assert!(!same("/relative", "/relative"));
    }

    #[test]
    fn hosts_of_authorities() {
        assert_eq!(host_of("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_of("user:pw@localhost:1"), "localhost");
        assert_eq!(host_of("[::1]:443"), "[::1]");
        assert_eq!(host_of("a@b@[::1]"), "[::1]");
        assert_eq!(host_of("example.com"), "example.com");
        assert_eq!(host_of(""), "");
        assert_eq!(host_of("[::1"), "[::1");
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.255.0.9",
            "[::1]",
            "[0:0::1]",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "127.0.0.1.evil.com",
            "127.0.0",
            "127.0.0.256",
            "127.a.0.1",
            "128.0.0.1",
            "[::2]",
            "",
            "127...",
            "127.0.0.1000",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
