//! Property tests of the layer's parsers: the `WWW-Authenticate` challenge
//! parser and `Origin`. Fixed seed and case count, so they run the same way
//! in every `cargo test`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::Uri;
use proptest::{
    prelude::*,
    test_runner::{Config, RngSeed},
};
use tower_token_refresh::{Origin, classify::parse_challenges};

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x7070_5EED),
        failure_persistence: None,
        ..Config::default()
    }
}

const TCHAR_TAIL: &str = "[A-Za-z0-9!#$%&'*+.^_`|~-]{0,8}";

fn token() -> impl Strategy<Value = String> {
    // Starts with a letter, so a token is never mistaken for a token68
    // continuation or padding.
    ("[A-Za-z]", TCHAR_TAIL).prop_map(|(a, b)| format!("{a}{b}"))
}

/// A parameter value and how it is written: quoted (any printable ASCII,
/// quotes and backslashes escaped) or as a bare token.
fn value() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        "[ -~]{0,16}".prop_map(|v| {
            let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
            (v, format!("\"{escaped}\""))
        }),
        "[A-Za-z0-9._~+-]{1,12}".prop_map(|v| (v.clone(), v)),
    ]
}

type Challenge = (String, Vec<(String, (String, String))>);

fn challenge() -> impl Strategy<Value = Challenge> {
    (token(), prop::collection::vec((token(), value()), 0..4))
}

fn write(challenges: &[Challenge], sep: &str) -> String {
    challenges
        .iter()
        .map(|(scheme, params)| {
            let params: Vec<String> = params
                .iter()
                .map(|(name, (_, written))| format!("{name}={written}"))
                .collect();
            if params.is_empty() {
                scheme.clone()
            } else {
                format!("{scheme} {}", params.join(sep))
            }
        })
        .collect::<Vec<_>>()
        .join(sep)
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn any_text_parses_without_panicking(s in "\\PC{0,64}") {
        let _ = parse_challenges(&s);
    }

    #[test]
    fn text_made_of_the_grammars_own_characters_parses_without_panicking(
        s in "[ ,=\"\\\\\ta-zA-Z0-9!#/+é]{0,64}"
    ) {
        for c in parse_challenges(&s) {
            prop_assert!(!c.scheme.is_empty());
            let _ = c.param("error");
        }
    }

    #[test]
    fn arbitrary_bytes_read_lossily_parse_without_panicking(
        bytes in prop::collection::vec(any::<u8>(), 0..64)
    ) {
        let _ = parse_challenges(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn valid_challenges_round_trip(
        challenges in prop::collection::vec(challenge(), 1..4),
        loose in any::<bool>(),
    ) {
        // RFC 9110 allows optional whitespace around commas.
        let sep = if loose { " ,  " } else { ", " };
        let text = write(&challenges, sep);
        let parsed = parse_challenges(&text);
        prop_assert_eq!(parsed.len(), challenges.len(), "{}", text);
        for (got, (scheme, params)) in parsed.iter().zip(&challenges) {
            prop_assert_eq!(got.scheme, scheme.as_str(), "{}", text);
            prop_assert_eq!(got.token68, None, "{}", text);
            let got_params: Vec<(&str, &str)> =
                got.params.iter().map(|(n, v)| (*n, v.as_ref())).collect();
            let want: Vec<(&str, &str)> =
                params.iter().map(|(n, (v, _))| (n.as_str(), v.as_str())).collect();
            prop_assert_eq!(got_params, want, "{}", text);
        }
    }

    #[test]
    fn any_text_parses_as_an_origin_or_an_error_without_panicking(s in "\\PC{0,48}") {
        let _ = s.parse::<Origin>();
    }

    #[test]
    fn valid_origins_parse_exactly_and_match_their_uris(
        https in any::<bool>(),
        upper_scheme in any::<bool>(),
        host in "[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?(\\.[a-zA-Z0-9]{1,8}){0,3}",
        port in prop::option::of(1u16..),
        slash in any::<bool>(),
        path in "(/[a-z0-9]{0,8}){0,3}",
    ) {
        let scheme = match (https, upper_scheme) {
            (true, false) => "https",
            (true, true) => "HTTPS",
            (false, false) => "http",
            (false, true) => "HTTP",
        };
        let port_part = port.map(|p| format!(":{p}")).unwrap_or_default();
        let text = format!("{scheme}://{host}{port_part}{}", if slash { "/" } else { "" });
        let origin: Origin = text.parse().unwrap();
        let effective = port.unwrap_or(if https { 443 } else { 80 });
        let lower = if https { "https" } else { "http" };
        let display = format!("{lower}://{}:{effective}", host.to_ascii_lowercase());
        prop_assert_eq!(origin.to_string(), display.clone());
        prop_assert_eq!(display.parse::<Origin>().unwrap(), origin.clone());
        // A URI of that origin, any path, in scope; another port not.
        let uri: Uri = format!("{scheme}://{host}{port_part}{path}").parse().unwrap();
        let scoped = TokenRefreshProbe::new(origin);
        prop_assert!(scoped.is_in_scope(&uri));
        let other: Uri = format!("{lower}://{host}:{}/", effective.wrapping_add(1).max(1))
            .parse()
            .unwrap();
        prop_assert!(!scoped.is_in_scope(&other));
    }
}

/// Origin checks through the public API: a layer allowing one origin (and
/// passing others through), wrapped around a service that reports whether
/// the token arrived.
struct TokenRefreshProbe {
    origin: Origin,
}

impl TokenRefreshProbe {
    fn new(origin: Origin) -> Self {
        TokenRefreshProbe { origin }
    }

    fn is_in_scope(&self, uri: &Uri) -> bool {
        use std::time::Duration;
        use tower::{Layer, Service, service_fn};
        use tower_token_refresh::{TokenManager, TokenRefreshLayer, TokenSet, source};

        let tokens =
            TokenManager::builder(source::from_fn(|_| async { Ok(TokenSet::bearer("probe")) }))
                .initial(TokenSet::bearer("probe").with_expires_in(Duration::from_secs(3600)))
                .build();
        let mut service = TokenRefreshLayer::new(tokens)
            .allow_origin(self.origin.clone())
            .allow_cleartext(true)
            .pass_through_other_origins(true)
            .layer(service_fn(|req: http::Request<()>| async move {
                let has = req.headers().contains_key(http::header::AUTHORIZATION);
                Ok::<_, std::convert::Infallible>(http::Response::new(has))
            }));
        let request = http::Request::get(uri.clone()).body(()).unwrap();
        let response = block_on(service.call(request));
        *response.body()
    }
}

/// Drives a future that never waits on I/O (a fresh token, a service that
/// answers at once) to completion.
fn block_on<T>(
    future: impl std::future::Future<Output = Result<T, tower_token_refresh::BoxError>>,
) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(future).unwrap()
}
