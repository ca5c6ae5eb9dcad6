//! Which requests get the token: the layer's origin policy.
//!
//! A request gets the credential only if all of these hold:
//!
//! 1. it does not carry [`SkipAuth`];
//! 2. its *target origin* is known: an absolute `http`/`https` URI names
//!    it; a URI without a scheme (origin-form `/path`, as tonic and hyper's
//!    `SendRequest` send them, asterisk-form `*`, authority-form
//!    `host:port`) goes wherever the inner service is connected, which the
//!    layer knows only from [`connection_origin`]; an authority-form URI must
//!    then name that origin's host and port;
//! 3. with a connection origin set, an absolute URI names that same origin
//!    (the bytes go down that connection whatever the URI says);
//! 4. the target origin is allowed ([`allow_origin`], [`connection_origin`]
//!    or [`any_origin`]);
//! 5. a `Host` header, if there is one, names the target's host and port (a
//!    front end shared by several sites routes by `Host`, so a token for one
//!    site sent with another's `Host` reaches the other). The `Host` header
//!    never makes a request eligible: it only makes one ineligible;
//! 6. over cleartext `http`, the host is loopback ([`is_loopback_host`]:
//!    `localhost`, `127.0.0.0/8` in plain dotted decimal, `[::1]`), unless
//!    [`allow_cleartext`] is on.
//!
//! Hosts are compared as strings, ASCII case-insensitively, with the
//! scheme's default port filled in: `https://API.example.com:443` is
//! `https://api.example.com`, but `api.example.com.` (trailing dot),
//! `[0::1]` and `2130706433` are origins of their own, and never allowed
//! unless given as such. A request failing 2, 5 or 6 is refused with an
//! [`ErrorKind::Policy`](crate::ErrorKind::Policy) error; one failing 3 or
//! 4 too, unless [`pass_through_other_origins`] is on, which sends it on
//! without the credential.
//!
//! [`allow_origin`]: crate::TokenRefreshLayer::allow_origin
//! [`any_origin`]: crate::TokenRefreshLayer::any_origin
//! [`connection_origin`]: crate::TokenRefreshLayer::connection_origin
//! [`allow_cleartext`]: crate::TokenRefreshLayer::allow_cleartext
//! [`pass_through_other_origins`]: crate::TokenRefreshLayer::pass_through_other_origins

use std::{borrow::Cow, fmt, str::FromStr};

use http::{Extensions, HeaderMap, HeaderValue, Request, Uri, header::HOST};
use tower_token_refresh_core::is_loopback_host;

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
/// The host is kept lowercased and the port filled in; no userinfo, path
/// or query.
///
/// # Example
///
/// ```
/// use tower_token_refresh::Origin;
///
/// let origin: Origin = "https://API.example.com".parse().unwrap();
/// assert_eq!(origin.to_string(), "https://api.example.com:443");
/// assert!("ftp://example.com".parse::<Origin>().is_err());
/// assert!("https://user@example.com".parse::<Origin>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    https: bool,
    host: Box<str>,
    port: u16,
    /// The authority as a URI of this origin usually writes it: the host,
    /// and `:port` unless it is the scheme's default. Compared byte for
    /// byte on the hot path.
    authority: Box<str>,
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
        let authority = uri.authority().ok_or(InvalidOrigin("no host"))?;
        if authority.as_str().contains('@') {
            return Err(InvalidOrigin("an origin has no userinfo"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(InvalidOrigin("an origin has no path or query"));
        }
        let (host, port) =
            split_host_port(authority.as_str()).ok_or(InvalidOrigin("invalid host or port"))?;
        let port = port.unwrap_or(default_port(https));
        Ok(Origin::new(https, &host.to_ascii_lowercase(), port))
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

const fn default_port(https: bool) -> u16 {
    if https { 443 } else { 80 }
}

impl Origin {
    fn new(https: bool, host: &str, port: u16) -> Self {
        let authority = if port == default_port(https) {
            host.into()
        } else {
            format!("{host}:{port}").into()
        };
        Origin {
            https,
            host: host.into(),
            port,
            authority,
        }
    }

    fn target(&self) -> Target<'_> {
        Target {
            https: self.https,
            host: &self.host,
            port: self.port,
        }
    }

    fn is(&self, target: &Target<'_>) -> bool {
        self.https == target.https
            && self.port == target.port
            && self.host.eq_ignore_ascii_case(target.host)
    }

    /// Whether `uri` is absolute and of this origin.
    #[cfg_attr(not(feature = "follow-redirect"), allow(dead_code))]
    pub(crate) fn matches(&self, uri: &Uri) -> bool {
        Target::of(uri).is_some_and(|t| self.is(&t))
    }
}

/// Where a request goes: scheme, host as written, port filled in.
#[derive(Clone, Copy)]
struct Target<'a> {
    https: bool,
    host: &'a str,
    port: u16,
}

impl<'a> Target<'a> {
    /// The origin of an absolute `http`/`https` URI.
    /// The origin of an absolute `http`/`https` URI whose authority is
    /// well formed (`[userinfo@]host[:port]`, nothing else: `http` accepts
    /// `[::1].` or `host:99999`, and would read them as `[::1]` and the
    /// default port).
    fn of(uri: &'a Uri) -> Option<Self> {
        let https = match uri.scheme_str()? {
            s if s.eq_ignore_ascii_case("https") => true,
            s if s.eq_ignore_ascii_case("http") => false,
            _ => return None,
        };
        let authority = uri.authority()?.as_str();
        let host_port = authority
            .rfind('@')
            .map_or(authority, |i| &authority[i + 1..]);
        let (host, port) = split_host_port(host_port)?;
        Some(Target {
            https,
            host,
            port: port.unwrap_or(default_port(https)),
        })
    }

    fn same(&self, other: &Target<'_>) -> bool {
        self.https == other.https
            && self.port == other.port
            && self.host.eq_ignore_ascii_case(other.host)
    }

    /// Whether `authority` (`host[:port]`, no userinfo: a `Host` header or
    /// an authority-form URI) names this target's host and port.
    fn is_named_by(&self, authority: &str) -> bool {
        match split_host_port(authority) {
            Some((host, port)) => {
                port.unwrap_or(default_port(self.https)) == self.port
                    && host.eq_ignore_ascii_case(self.host)
            }
            None => false,
        }
    }

    fn describe(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

/// What an [`OriginPolicy`] decided for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send it with the credential.
    Authorize,
    /// Send it as it is, without the credential (a [`SkipAuth`] request, or
    /// another origin with pass-through on).
    PassThrough,
    /// Do not send it; the reason, for an
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) error. It names
    /// origins, never a credential.
    Refuse(Cow<'static, str>),
}

/// Which origins get the credential: the rules of this module's docs.
///
/// The layer builds one from its methods
/// ([`allow_origin`](crate::TokenRefreshLayer::allow_origin) and the rest)
/// and asks it about every request. It is public for middleware of clients
/// that are not tower services (`tower-token-refresh-reqwest`), so that they
/// apply the same rules rather than their own.
///
/// # Example
///
/// ```
/// use http::{Extensions, HeaderMap};
/// use tower_token_refresh::origin::{Decision, OriginPolicy};
///
/// let mut policy = OriginPolicy::default();
/// policy.allow("https://api.example.com".parse()?);
/// let decide = |uri: &str| {
///     policy.decide_parts(&uri.parse().unwrap(), &HeaderMap::new(), &Extensions::new())
/// };
/// assert_eq!(decide("https://api.example.com/v1"), Decision::Authorize);
/// assert!(matches!(decide("https://evil.example.com/"), Decision::Refuse(_)));
/// # Ok::<(), tower_token_refresh::InvalidOrigin>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct OriginPolicy {
    allowed: Vec<Origin>,
    any: bool,
    connection: Option<Origin>,
    pass_through: bool,
    allow_cleartext: bool,
    /// The authority of the first allowed origin, when it is `https` and
    /// agrees with the connection origin: an `https` URI with exactly this
    /// authority, no extensions and no `Host` header is allowed at once.
    fast: Option<Box<str>>,
}

impl OriginPolicy {
    /// Allows `origin`; see [`TokenRefreshLayer::allow_origin`](crate::TokenRefreshLayer::allow_origin).
    pub fn allow(&mut self, origin: Origin) {
        if !self.allowed.contains(&origin) {
            self.allowed.push(origin);
        }
        self.update_fast();
    }

    /// Allows every origin; see [`TokenRefreshLayer::any_origin`](crate::TokenRefreshLayer::any_origin).
    pub fn allow_any(&mut self) {
        self.any = true;
    }

    /// Sets the connection origin; see [`TokenRefreshLayer::connection_origin`](crate::TokenRefreshLayer::connection_origin).
    pub fn set_connection(&mut self, origin: Origin) {
        self.allow(origin.clone());
        self.connection = Some(origin);
        self.update_fast();
    }

    /// Passes requests to other origins through; see [`TokenRefreshLayer::pass_through_other_origins`](crate::TokenRefreshLayer::pass_through_other_origins).
    pub fn set_pass_through(&mut self, enable: bool) {
        self.pass_through = enable;
    }

    /// Allows cleartext to hosts that are not loopback; see [`TokenRefreshLayer::allow_cleartext`](crate::TokenRefreshLayer::allow_cleartext).
    pub fn set_allow_cleartext(&mut self, allow: bool) {
        self.allow_cleartext = allow;
    }

    fn update_fast(&mut self) {
        self.fast = match (self.allowed.first(), &self.connection) {
            (Some(first), None) if first.https => Some(first.authority.clone()),
            (Some(first), Some(c)) if first.https && first == c => Some(first.authority.clone()),
            _ => None,
        };
    }

    /// Whether a response from `uri` can be one of an allowed origin.
    #[cfg_attr(not(feature = "follow-redirect"), allow(dead_code))]
    pub(crate) fn may_answer(&self, uri: &Uri) -> bool {
        self.any || self.allowed.iter().any(|o| o.matches(uri))
    }

    #[inline(always)]
    pub(crate) fn decide<B>(&self, request: &Request<B>) -> Decision {
        // The common case, a few comparisons: TLS to the first allowed
        // origin, written the usual way, nothing that could be `SkipAuth`
        // and no `Host` header to check.
        if let Some(fast) = &self.fast {
            let uri = request.uri();
            let headers = request.headers();
            if uri.scheme_str() == Some("https")
                && uri
                    .authority()
                    .is_some_and(|a| same_bytes(a.as_str().as_bytes(), fast.as_bytes()))
                && request.extensions().is_empty()
                && (headers.is_empty() || !headers.contains_key(HOST))
            {
                return Decision::Authorize;
            }
        }
        self.decide_in_full(request.uri(), request.headers(), request.extensions())
    }

    /// The decision for a request with this URI, headers and extensions
    /// (where [`SkipAuth`] is looked for), for a client whose requests are
    /// not `http::Request`s.
    pub fn decide_parts(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Decision {
        self.decide_in_full(uri, headers, extensions)
    }

    // Kept out of line, so that the fast path above inlines into `call`
    // without this function's frame.
    #[inline(never)]
    fn decide_in_full(&self, uri: &Uri, headers: &HeaderMap, extensions: &Extensions) -> Decision {
        if extensions.get::<SkipAuth>().is_some() {
            return Decision::PassThrough;
        }
        let target = match (uri.scheme(), &self.connection) {
            (Some(_), connection) => {
                let Some(target) = Target::of(uri) else {
                    let scheme = uri.scheme_str().unwrap_or_default();
                    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
                        return Decision::Refuse("a URI whose authority is malformed".into());
                    }
                    return self.not_allowed(|| format!("a URI of scheme {scheme:?}"));
                };
                if let Some(c) = connection
                    && !c.is(&target)
                {
                    return self.not_allowed(|| {
                        format!("{} (the connection goes to {c})", target.describe())
                    });
                }
                target
            }
            (None, Some(c)) => {
                let target = c.target();
                if let Some(authority) = uri.authority()
                    && !target.is_named_by(authority.as_str())
                {
                    return Decision::Refuse(
                        "an authority-form URI that does not name the connection origin".into(),
                    );
                }
                target
            }
            (None, None) => {
                return Decision::Refuse(
                    "a URI without a scheme goes wherever the inner service is connected: \
                     tell the layer with connection_origin"
                        .into(),
                );
            }
        };
        if !self.any && !self.allowed.iter().any(|o| o.is(&target)) {
            return self.not_allowed(|| target.describe());
        }
        let mut hosts = headers.get_all(HOST).iter();
        if let Some(host) = hosts.next()
            && (hosts.next().is_some() || !names(host, &target))
        {
            return Decision::Refuse(
                "the Host header names another origin than the request's target".into(),
            );
        }
        if !target.https && !self.allow_cleartext && !is_loopback_host(target.host) {
            return Decision::Refuse(
                "refusing to send a token over cleartext HTTP to a non-loopback host".into(),
            );
        }
        Decision::Authorize
    }

    #[cold]
    fn not_allowed(&self, target: impl FnOnce() -> String) -> Decision {
        if self.pass_through {
            return Decision::PassThrough;
        }
        if self.allowed.is_empty() && !self.any {
            return Decision::Refuse(
                "no origin is allowed: call allow_origin (or any_origin) on the layer".into(),
            );
        }
        Decision::Refuse(format!("{} is not an allowed origin", target()).into())
    }
}

/// `a == b`, in a few word compares for the lengths hosts have: the call
/// to `memcmp` that `==` makes costs more than the comparison
/// (`benches/instructions.sh`).
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (Some(a_last), Some(b_last)) = (a.last_chunk::<8>(), b.last_chunk::<8>()) else {
        return a == b;
    };
    // 8-byte words from the start, then the last word (overlapping the
    // one before it unless the length is a multiple of 8).
    let mut i = 0;
    while i + 8 < a.len() {
        if a[i..i + 8] != b[i..i + 8] {
            return false;
        }
        i += 8;
    }
    a_last == b_last
}

fn names(host: &HeaderValue, target: &Target<'_>) -> bool {
    host.to_str().is_ok_and(|h| target.is_named_by(h))
}

/// Whether two URIs share an origin: scheme, host (case-insensitive) and
/// port, the default port filled in. Relative URIs share none.
#[cfg_attr(not(feature = "follow-redirect"), allow(dead_code))]
pub(crate) fn same_origin(a: &Uri, b: &Uri) -> bool {
    match (Target::of(a), Target::of(b)) {
        (Some(a), Some(b)) => a.same(&b),
        _ => false,
    }
}

/// `host[:port]` split, or `None` if that is not all there is: no
/// userinfo, a bracketed host closed by its bracket, a port of decimal
/// digits that fits in 16 bits (empty: none).
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let host = host_of(s);
    let valid_host =
        !host.is_empty() && !host.contains('@') && (!host.starts_with('[') || host.ends_with(']'));
    if !valid_host {
        return None;
    }
    match s.strip_prefix(host)? {
        "" | ":" => Some((host, None)),
        rest => {
            let digits = rest.strip_prefix(':')?;
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((host, Some(digits.parse().ok()?)))
        }
    }
}

/// The host of an authority (`user@host:port`), IPv6 literals keeping
/// their brackets. `http::uri::Authority::host` does the same with string
/// searches; this is a byte scan.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    fn policy(origins: &[&str]) -> OriginPolicy {
        let mut p = OriginPolicy::default();
        for o in origins {
            p.allow(o.parse().unwrap());
        }
        p
    }

    fn authorized(p: &OriginPolicy, r: &Request<()>) -> bool {
        matches!(p.decide(r), Decision::Authorize)
    }

    fn refused(p: &OriginPolicy, r: &Request<()>) -> bool {
        matches!(p.decide(r), Decision::Refuse(_))
    }

    #[test]
    fn origins_match_scheme_host_and_port() {
        let o: Origin = "https://api.example.com".parse().unwrap();
        assert!(o.matches(&"https://API.example.com/v1?x=1".parse().unwrap()));
        assert!(o.matches(&"https://api.example.com:443/".parse().unwrap()));
        assert!(o.matches(&"https://u:p@api.example.com/".parse().unwrap()));
        assert!(!o.matches(&"http://api.example.com/".parse().unwrap()));
        assert!(!o.matches(&"https://api.example.com:8443/".parse().unwrap()));
        assert!(!o.matches(&"https://evil.example.com/".parse().unwrap()));
        assert!(!o.matches(&"https://api.example.com.evil.com/".parse().unwrap()));
        assert!(!o.matches(&"https://api.example.com./".parse().unwrap()));
        assert!(!o.matches(&"/relative".parse().unwrap()));
    }

    #[test]
    fn origins_parse_strictly() {
        for bad in [
            "https://a.example/path",
            "https://a.example/?q",
            "https://user@a.example",
            "ftp://a.example",
            "a.example",
            "/",
            "https://a.example:99999",
            "http://[::1].",
            "http://a.example:8x",
        ] {
            assert!(bad.parse::<Origin>().is_err(), "{bad}");
        }
        let o: Origin = "http://[::1]:8080/".parse().unwrap();
        assert_eq!(o.to_string(), "http://[::1]:8080");
        let o: Origin = "https://a.example:".parse().unwrap();
        assert_eq!(o.to_string(), "https://a.example:443");
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let p = OriginPolicy::default();
        assert!(refused(&p, &req("https://api.example.com/")));
        assert!(refused(&p, &req("http://127.0.0.1/")));
        assert!(refused(&p, &req("/relative")));
    }

    #[test]
    fn allowed_origins_get_the_token_others_are_refused_or_passed() {
        let mut p = policy(&["http://127.0.0.1:8080", "https://api.example.com"]);
        assert!(authorized(&p, &req("http://127.0.0.1:8080/a")));
        assert!(authorized(&p, &req("https://api.example.com/a")));
        assert!(authorized(&p, &req("https://API.EXAMPLE.com:443/a")));
        assert!(refused(&p, &req("http://127.0.0.1:9090/a")));
        assert!(refused(&p, &req("https://evil.example.com/a")));
        p.set_pass_through(true);
        assert!(matches!(
            p.decide(&req("https://evil.example.com/a")),
            Decision::PassThrough
        ));
        // Pass-through never covers an unknown target.
        assert!(refused(&p, &req("/relative")));

        let mut skip = req("http://127.0.0.1:8080/a");
        skip.extensions_mut().insert(SkipAuth);
        assert!(matches!(p.decide(&skip), Decision::PassThrough));
    }

    #[test]
    fn cleartext_only_to_loopback_unless_allowed() {
        let mut p = OriginPolicy::default();
        p.allow_any();
        assert!(refused(&p, &req("http://api.example.com/")));
        assert!(authorized(&p, &req("http://localhost:1/")));
        assert!(authorized(&p, &req("http://[::1]:1/")));
        assert!(authorized(&p, &req("https://api.example.com/")));
        assert!(refused(&p, &req("http://127.0.0.01/")));
        p.set_allow_cleartext(true);
        assert!(authorized(&p, &req("http://api.example.com/")));
    }

    #[test]
    fn relative_uris_need_a_connection_origin() {
        let mut p = OriginPolicy::default();
        p.allow_any();
        assert!(refused(&p, &req("/relative")));
        assert!(refused(&p, &req("*")));

        let mut p = OriginPolicy::default();
        p.set_connection("https://api.example.com".parse().unwrap());
        assert!(authorized(&p, &req("/relative")));
        assert!(authorized(&p, &req("https://api.example.com/x")));
        assert!(refused(&p, &req("https://other.example.com/x")));
        let authority_form = Request::connect("api.example.com:443").body(()).unwrap();
        assert!(authorized(&p, &authority_form));
        let elsewhere = Request::connect("other.example.com:443").body(()).unwrap();
        assert!(refused(&p, &elsewhere));

        let mut p = OriginPolicy::default();
        p.set_connection("http://api.example.com".parse().unwrap());
        assert!(refused(&p, &req("/relative")), "cleartext rule holds");
    }

    #[test]
    fn the_host_header_can_only_refuse() {
        let p = policy(&["https://api.example.com"]);
        let with_host =
            |uri: &str, host: &'static str| Request::get(uri).header(HOST, host).body(()).unwrap();
        assert!(authorized(
            &p,
            &with_host("https://api.example.com/", "api.example.com")
        ));
        assert!(authorized(
            &p,
            &with_host("https://api.example.com/", "API.example.com:443")
        ));
        assert!(refused(
            &p,
            &with_host("https://api.example.com/", "evil.example.com")
        ));
        assert!(refused(
            &p,
            &with_host("https://api.example.com/", "api.example.com:8443")
        ));
        assert!(refused(
            &p,
            &with_host("https://evil.example.com/", "api.example.com")
        ));
        assert!(refused(&p, &with_host("/x", "api.example.com")));
        let mut two = with_host("https://api.example.com/", "api.example.com");
        two.headers_mut()
            .append(HOST, HeaderValue::from_static("api.example.com"));
        assert!(refused(&p, &two));
    }

    #[test]
    fn same_bytes_is_equality() {
        let words = [
            "",
            "a",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "api.example.com",
            "a.b.c.d.e.f.g.h.i.j.k",
        ];
        for a in words {
            for b in words {
                assert_eq!(same_bytes(a.as_bytes(), b.as_bytes()), a == b, "{a} {b}");
            }
            let mut changed = a.as_bytes().to_vec();
            for i in 0..changed.len() {
                changed[i] ^= 1;
                assert!(!same_bytes(a.as_bytes(), &changed), "{a} at {i}");
                changed[i] ^= 1;
            }
        }
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
}
