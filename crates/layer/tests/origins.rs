//! Where the credential goes: the layer's origin policy, through the public
//! API. Real servers on 127.0.0.1 for the URI forms that connection-level
//! clients send (hyper's `client::conn`), and a property test of the policy
//! against an oracle written out below.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    convert::Infallible,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::State, http::HeaderMap};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use proptest::{
    prelude::*,
    test_runner::{Config, RngSeed},
};
use support::*;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_token_refresh::{
    BoxError, ErrorKind, Origin, SkipAuth, TokenManager, TokenRefreshLayer, TokenSet, source,
};
use tower_token_refresh_test_util::hyper_client;

/// The `Authorization` headers a server received (`None`: none).
type Seen = Arc<Mutex<Vec<Option<String>>>>;

/// A server that answers 200 to anything and records what it was sent.
async fn recorder() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let handler = |State(seen): State<Seen>, headers: HeaderMap| async move {
        let auth = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned());
        seen.lock().unwrap().push(auth);
        "ok"
    };
    let router = Router::new().fallback(handler).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (addr, seen)
}

fn tokens() -> TokenManager {
    let set = || TokenSet::bearer("t0ken").with_expires_in(HOUR);
    TokenManager::builder(source::from_fn(move |_| async move { Ok(set()) }))
        .initial(set())
        .build()
}

type Connection = SendRequest<Full<Bytes>>;

/// hyper's connection-level client to `addr`, as a `Service`: it sends the
/// URI as it is given, origin-form included.
async fn connection(
    addr: SocketAddr,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<hyper::body::Incoming>,
    Error = hyper::Error,
    Future = impl Send,
> + Clone {
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let send: Arc<tokio::sync::Mutex<Connection>> = Arc::new(tokio::sync::Mutex::new(send));
    service_fn(move |request| {
        let send = send.clone();
        async move { send.lock().await.send_request(request).await }
    })
}

fn relative(host: Option<&str>) -> Request<Full<Bytes>> {
    let mut request = Request::get("/api/data");
    if let Some(host) = host {
        request = request.header(header::HOST, host);
    }
    request.body(Full::default()).unwrap()
}

fn policy_error(result: Result<impl std::fmt::Debug, BoxError>) -> String {
    let err = result.expect_err("refused");
    let e = session_error(&err).expect("a tower_token_refresh::Error");
    assert_eq!(e.kind(), ErrorKind::Policy, "{err}");
    err.to_string()
}

/// An origin-form URI names no host. Neither a layer for any origin nor one
/// for the very origin the connection goes to can know where it goes, and
/// the `Host` header does not tell them: refused, not sent with the token
/// (as any origin did) nor silently without it (as a layer with origins
/// did).
#[tokio::test]
async fn a_relative_uri_without_a_connection_origin_is_refused_whatever_its_host_header() {
    let (addr, seen) = recorder().await;
    let host = addr.to_string();
    for layer in [
        TokenRefreshLayer::new(tokens()).any_origin(),
        TokenRefreshLayer::new(tokens()).allow_origin(origin_of(addr)),
    ] {
        let client = layer.layer(connection(addr).await);
        for host in [None, Some(host.as_str()), Some("api.example.com")] {
            let why = policy_error(client.clone().oneshot(relative(host)).await);
            assert!(why.contains("connection_origin"), "{why}");
        }
    }
    assert!(seen.lock().unwrap().is_empty(), "nothing was sent");
}

/// The way out of that: told the connection's origin, the layer judges
/// relative URIs as requests to it, `Host` header and cleartext rule
/// included.
#[tokio::test]
async fn a_relative_uri_through_a_connection_origin_gets_the_token() {
    let (addr, seen) = recorder().await;
    let client = TokenRefreshLayer::new(tokens())
        .connection_origin(origin_of(addr))
        .layer(connection(addr).await);

    let response = client.clone().oneshot(relative(None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let host = addr.to_string();
    let response = client.clone().oneshot(relative(Some(&host))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let token = Some("Bearer t0ken".to_owned());
    assert_eq!(*seen.lock().unwrap(), [token.clone(), token]);

    // A Host header naming another site: refused, not sent.
    policy_error(client.clone().oneshot(relative(Some("evil.example"))).await);
    // An absolute URI naming another origin: that is not where the
    // connection goes.
    let elsewhere = Request::get("http://127.0.0.2:1/api/data")
        .body(Full::default())
        .unwrap();
    policy_error(client.clone().oneshot(elsewhere).await);
    assert_eq!(seen.lock().unwrap().len(), 2);

    // The cleartext rule holds for relative URIs too.
    let remote = TokenRefreshLayer::new(tokens())
        .connection_origin("http://api.example.com".parse().unwrap())
        .layer(connection(addr).await);
    let why = policy_error(remote.oneshot(relative(None)).await);
    assert!(why.contains("cleartext"), "{why}");
    assert_eq!(seen.lock().unwrap().len(), 2);
}

/// A layer told of no origin sends the token nowhere. The request fails with
/// a typed error naming the fix; the server is not asked.
#[tokio::test]
async fn a_layer_with_no_origin_sends_the_token_nowhere() {
    let (addr, seen) = recorder().await;
    let client = TokenRefreshLayer::new(tokens()).layer(hyper_client());
    let request = Request::get(format!("http://{addr}/api/data"))
        .body(Full::default())
        .unwrap();
    let why = policy_error(client.oneshot(request).await);
    assert!(why.contains("allow_origin"), "{why}");
    assert!(seen.lock().unwrap().is_empty());
}

// The property: over generated URIs and Host headers, the credential goes
// exactly where the oracle says, and so never to an origin not allowed, nor
// over cleartext to a host that is not loopback.

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x0121_9175),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Hosts as a URI may write them: names that differ by a suffix, loopback
/// and its look-alikes in other IPv4 and IPv6 spellings, a percent-encoded
/// dot.
const HOSTS: &[&str] = &[
    "api.example.com",
    "evil.example.com",
    "api.example.com.evil.com",
    "localhost",
    "localhost.evil.com",
    "127.0.0.1",
    "127.9.8.7",
    "127.1",
    "2130706433",
    "127.0.0.01",
    "0x7f.0.0.1",
    "10.0.0.1",
    "[::1]",
    "[0:0::1]",
    "[::ffff:127.0.0.1]",
    "[::2]",
    "api%2eexample.com",
];

#[derive(Clone, Debug)]
struct Host {
    /// An index into `HOSTS`.
    name: usize,
    /// Which letters are written in upper case (bit i: letter i).
    case: u32,
    trailing_dot: bool,
}

impl Host {
    /// As written in the URI.
    fn written(&self) -> String {
        let mut s: String = HOSTS[self.name]
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if self.case >> (i % 32) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        if self.trailing_dot {
            s.push('.');
        }
        s
    }

    /// As compared: the oracle's idea of "the same host".
    fn canonical(&self) -> String {
        self.written().to_ascii_lowercase()
    }
}

fn host() -> impl Strategy<Value = Host> {
    (0..HOSTS.len(), any::<u32>(), prop::bool::weighted(0.15)).prop_map(
        |(name, case, trailing_dot)| Host {
            name,
            // Mostly lower case, so the same host comes up often.
            case: if case % 3 == 0 { case } else { 0 },
            trailing_dot,
        },
    )
}

/// A port as written: none, the scheme's default written out, or another.
#[derive(Clone, Copy, Debug)]
enum Port {
    None,
    Default,
    Other(u16),
}

fn port() -> impl Strategy<Value = Port> {
    prop_oneof![
        Just(Port::None),
        Just(Port::Default),
        prop::sample::select(vec![80u16, 443, 8080, 8443]).prop_map(Port::Other),
    ]
}

impl Port {
    fn written(self, https: bool) -> String {
        match self {
            Port::None => String::new(),
            Port::Default => format!(":{}", if https { 443 } else { 80 }),
            Port::Other(p) => format!(":{p}"),
        }
    }

    fn effective(self, https: bool) -> u16 {
        match self {
            Port::None | Port::Default => {
                if https {
                    443
                } else {
                    80
                }
            }
            Port::Other(p) => p,
        }
    }
}

/// (https, host, port) in the oracle's terms.
type Place = (bool, String, u16);

#[derive(Clone, Debug)]
struct OriginSpec {
    https: bool,
    host: Host,
    port: Port,
}

impl OriginSpec {
    fn text(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!(
            "{scheme}://{}{}",
            self.host.written(),
            self.port.written(self.https)
        )
    }

    fn place(&self) -> Place {
        (
            self.https,
            self.host.canonical(),
            self.port.effective(self.https),
        )
    }
}

fn origin_spec() -> impl Strategy<Value = OriginSpec> {
    (any::<bool>(), host(), port()).prop_map(|(https, host, port)| OriginSpec { https, host, port })
}

#[derive(Clone, Debug)]
enum Form {
    /// `scheme://[userinfo@]host[:port]/path`, scheme in any case.
    Absolute {
        https: bool,
        scheme_case: u8,
        userinfo: Option<&'static str>,
        host: Host,
        port: Port,
    },
    /// `/path`.
    Origin,
    /// `*`.
    Asterisk,
    /// `[userinfo@]host[:port]`.
    Authority {
        userinfo: Option<&'static str>,
        host: Host,
        port: Port,
    },
}

fn form() -> impl Strategy<Value = Form> {
    let userinfo = prop::option::weighted(0.2, prop::sample::select(vec!["u:p", "a%40b", "x"]));
    prop_oneof![
        6 => (any::<bool>(), any::<u8>(), userinfo.clone(), host(), port()).prop_map(
            |(https, scheme_case, userinfo, host, port)| Form::Absolute {
                https, scheme_case, userinfo, host, port,
            }
        ),
        2 => Just(Form::Origin),
        1 => Just(Form::Asterisk),
        1 => (userinfo, host(), port()).prop_map(|(userinfo, host, port)| Form::Authority {
            userinfo, host, port,
        }),
    ]
}

#[derive(Clone, Debug)]
enum HostHeader {
    None,
    /// The URI's host as written, with or without its port.
    Same {
        with_port: bool,
    },
    Other {
        host: Host,
        port: Port,
        https: bool,
    },
}

fn host_header() -> impl Strategy<Value = HostHeader> {
    prop_oneof![
        3 => Just(HostHeader::None),
        2 => any::<bool>().prop_map(|with_port| HostHeader::Same { with_port }),
        2 => (host(), port(), any::<bool>())
            .prop_map(|(host, port, https)| HostHeader::Other { host, port, https }),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    allowed: Vec<OriginSpec>,
    any: bool,
    connection: Option<OriginSpec>,
    pass_through: bool,
    allow_cleartext: bool,
    form: Form,
    path: &'static str,
    host_header: HostHeader,
    skip_auth: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(origin_spec(), 0..3),
        prop::bool::weighted(0.1),
        prop::option::weighted(0.3, origin_spec()),
        any::<bool>(),
        any::<bool>(),
        form(),
        prop::sample::select(vec!["/", "/a/b?q=1", "/%2e%2e/x%20y", "/@evil.example.com"]),
        host_header(),
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(
                allowed,
                any,
                connection,
                pass_through,
                allow_cleartext,
                form,
                path,
                host_header,
                skip_auth,
            )| Case {
                allowed,
                any,
                connection,
                pass_through,
                allow_cleartext,
                form,
                path,
                host_header,
                skip_auth,
            },
        )
}

/// What happened to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Sent with the credential.
    Token,
    /// Sent without it.
    NoToken,
    /// Not sent: a policy error.
    Refused,
}

impl Case {
    fn uri(&self) -> String {
        match &self.form {
            Form::Absolute {
                https,
                scheme_case,
                userinfo,
                host,
                port,
            } => {
                let scheme: String = (if *https { "https" } else { "http" })
                    .chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if scheme_case >> i & 1 == 1 {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    })
                    .collect();
                let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
                format!(
                    "{scheme}://{userinfo}{}{}{}",
                    host.written(),
                    port.written(*https),
                    self.path
                )
            }
            Form::Origin => self.path.to_owned(),
            Form::Asterisk => "*".to_owned(),
            Form::Authority {
                userinfo,
                host,
                port,
            } => {
                let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
                // Written as for the scheme of the connection, if any.
                let https = self.connection.as_ref().is_some_and(|c| c.https);
                format!("{userinfo}{}{}", host.written(), port.written(https))
            }
        }
    }

    fn host_header(&self) -> Option<String> {
        match &self.host_header {
            HostHeader::None => None,
            HostHeader::Same { with_port } => Some(match &self.form {
                Form::Absolute {
                    https, host, port, ..
                } => {
                    let port = if *with_port {
                        port.written(*https)
                    } else {
                        String::new()
                    };
                    format!("{}{port}", host.written())
                }
                // For the other forms: the connection's host, if any.
                _ => match &self.connection {
                    Some(c) if *with_port => {
                        format!("{}{}", c.host.written(), c.port.written(c.https))
                    }
                    Some(c) => c.host.written(),
                    None => "api.example.com".to_owned(),
                },
            }),
            HostHeader::Other { host, port, https } => {
                Some(format!("{}{}", host.written(), port.written(*https)))
            }
        }
    }

    /// The oracle: where the request should go, from the parts the case was
    /// made of, by the rules of the `origin` module docs.
    fn expected(&self) -> Outcome {
        let allowed: Vec<Place> = self
            .allowed
            .iter()
            .chain(&self.connection)
            .map(OriginSpec::place)
            .collect();
        let not_allowed = if self.pass_through {
            Outcome::NoToken
        } else {
            Outcome::Refused
        };
        if self.skip_auth {
            return Outcome::NoToken;
        }
        let target: Place = match (&self.form, &self.connection) {
            (
                Form::Absolute {
                    https, host, port, ..
                },
                connection,
            ) => {
                // `[::1].`: not a host; `http` parses it, the layer refuses it.
                if host.canonical().starts_with('[') && !host.canonical().ends_with(']') {
                    return Outcome::Refused;
                }
                let target = (*https, host.canonical(), port.effective(*https));
                if connection.as_ref().is_some_and(|c| c.place() != target) {
                    return not_allowed;
                }
                target
            }
            (Form::Origin | Form::Asterisk, Some(c)) => c.place(),
            (
                Form::Authority {
                    userinfo,
                    host,
                    port,
                },
                Some(c),
            ) => {
                let (https, chost, cport) = c.place();
                if userinfo.is_some() || host.canonical() != chost || port.effective(https) != cport
                {
                    return Outcome::Refused;
                }
                (https, chost, cport)
            }
            (_, None) => return Outcome::Refused,
        };
        if !self.any && !allowed.contains(&target) {
            return not_allowed;
        }
        if let Some(h) = self.host_header() {
            let (https, thost, tport) = &target;
            let (hhost, hport) = split_host_port(&h);
            let hport = hport.unwrap_or(if *https { 443 } else { 80 });
            if hhost.to_ascii_lowercase() != *thost || hport != *tport {
                return Outcome::Refused;
            }
        }
        let (https, host, _) = &target;
        if !https && !self.allow_cleartext && !oracle_is_loopback(host) {
            return Outcome::Refused;
        }
        Outcome::Token
    }
}

/// `host[:port]`, a bracketed IPv6 host kept whole.
fn split_host_port(s: &str) -> (&str, Option<u16>) {
    let colon = if s.starts_with('[') {
        s.find(']').and_then(|i| s[i..].find(':').map(|j| i + j))
    } else {
        s.find(':')
    };
    match colon {
        Some(i) => (&s[..i], s[i + 1..].parse().ok()),
        None => (s, None),
    }
}

/// Loopback as the standard library reads an address: `localhost`, or an
/// address in Rust's strict syntax that `is_loopback`.
fn oracle_is_loopback(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
    }
    host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// Runs the case through the layer around a service that reports whether
/// the credential arrived. `None`: the case does not make a request at all
/// (a URI or origin `http` does not accept).
fn observe(case: &Case) -> Option<Outcome> {
    let uri: http::Uri = case.uri().parse().ok()?;
    let mut layer = TokenRefreshLayer::new(tokens())
        .allow_cleartext(case.allow_cleartext)
        .pass_through_other_origins(case.pass_through);
    for spec in &case.allowed {
        layer = layer.allow_origin(spec.text().parse::<Origin>().ok()?);
    }
    if let Some(c) = &case.connection {
        layer = layer.connection_origin(c.text().parse().ok()?);
    }
    if case.any {
        layer = layer.any_origin();
    }
    let mut request = Request::get(uri).body(()).unwrap();
    if let Some(h) = case.host_header() {
        request
            .headers_mut()
            .insert(header::HOST, HeaderValue::from_str(&h).ok()?);
    }
    if case.skip_auth {
        request.extensions_mut().insert(SkipAuth);
    }
    let service = layer.layer(service_fn(|req: Request<()>| async move {
        let sent = req.headers().contains_key(header::AUTHORIZATION);
        Ok::<_, Infallible>(Response::new(sent))
    }));
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    });
    let result = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), service.oneshot(request)).await
    });
    Some(match result.expect("answers at once") {
        Ok(response) if *response.body() => Outcome::Token,
        Ok(_) => Outcome::NoToken,
        Err(err) => {
            let kind = err
                .downcast_ref::<tower_token_refresh::Error>()
                .map(|e| e.kind());
            assert_eq!(kind, Some(ErrorKind::Policy), "{err}");
            Outcome::Refused
        }
    })
}

proptest! {
    #![proptest_config(config(3_000))]

    #[test]
    fn the_credential_goes_only_where_the_oracle_allows(case in case()) {
        let Some(observed) = observe(&case) else {
            return Ok(());
        };
        let expected = case.expected();
        prop_assert_eq!(observed, expected, "uri {:?}, host {:?}", case.uri(), case.host_header());
    }
}

/// The generators reach every outcome, tokens through every URI form and
/// over cleartext both to loopback and (opted in) elsewhere: the property
/// above is not vacuous.
#[test]
fn the_generated_cases_cover_every_outcome() {
    use proptest::{strategy::ValueTree, test_runner::TestRunner};
    let mut runner = TestRunner::new(config(1));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..3_000 {
        let case = case().new_tree(&mut runner).unwrap().current();
        let Some(outcome) = observe(&case) else {
            continue;
        };
        seen.insert(format!("{outcome:?}"));
        if outcome == Outcome::Token {
            let form = match &case.form {
                Form::Absolute {
                    https: false, host, ..
                } => {
                    if oracle_is_loopback(&host.canonical()) {
                        "cleartext to loopback"
                    } else {
                        "cleartext elsewhere"
                    }
                }
                Form::Absolute { .. } => "https",
                Form::Origin => "origin-form",
                Form::Asterisk => "asterisk-form",
                Form::Authority { .. } => "authority-form",
            };
            seen.insert(format!("token: {form}"));
        }
    }
    let want = [
        "NoToken",
        "Refused",
        "Token",
        "token: asterisk-form",
        "token: authority-form",
        "token: cleartext elsewhere",
        "token: cleartext to loopback",
        "token: https",
        "token: origin-form",
    ];
    assert_eq!(seen.iter().map(String::as_str).collect::<Vec<_>>(), want);
}
