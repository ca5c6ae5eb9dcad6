//! Bad token values never panic: property tests (fixed seed, bounded case
//! count) of token values that cannot be HTTP header values, through
//! `TokenManager::set` and through a token source. (The token response
//! parser's share of these tests went with it to the oauth2 crate.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use proptest::{
    prelude::*,
    test_runner::{Config, RngSeed},
};
use tower_token_refresh_core::{Error, ErrorKind, TokenManager, TokenSet, source};

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0xBAD_1A9F7),
        failure_persistence: None,
        ..Config::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn manager() -> TokenManager {
    TokenManager::builder(source::from_fn(|_| async {
        Ok(TokenSet::bearer("fresh").with_expires_in(Duration::from_secs(3600)))
    }))
    .build()
}

/// A character no header value may hold: controls other than tab, and DEL.
fn forbidden() -> impl Strategy<Value = char> {
    prop_oneof![
        (0u8..9).prop_map(char::from),
        (10u8..32).prop_map(char::from),
        Just('\u{7f}'),
    ]
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn a_token_with_a_forbidden_byte_is_refused_by_set(
        before in "[ -~]{0,10}",
        bad in forbidden(),
        after in "[ -~]{0,10}",
    ) {
        let rt = runtime();
        let tokens = manager();
        let value = format!("{before}{bad}{after}");
        let err = rt
            .block_on(tokens.set(TokenSet::bearer(value).with_expires_in(Duration::from_secs(60))))
            .unwrap_err();
        prop_assert_eq!(err.kind(), ErrorKind::InvalidResponse);
        prop_assert!(tokens.current().is_none(), "nothing half-set");
    }

    #[test]
    fn any_token_is_set_or_refused_never_a_panic(value in "\\PC{0,24}|.{0,24}") {
        let rt = runtime();
        let tokens = manager();
        let set = rt.block_on(tokens.set(
            TokenSet::bearer(value.clone()).with_expires_in(Duration::from_secs(60)),
        ));
        match set {
            Ok(()) => {
                let auth = rt.block_on(tokens.authorization()).unwrap();
                let want = format!("Bearer {value}");
                prop_assert_eq!(auth.header().as_bytes(), want.as_bytes());
            }
            Err(e) => prop_assert_eq!(e.kind(), ErrorKind::InvalidResponse),
        }
    }

    #[test]
    fn a_source_returning_a_forbidden_byte_fails_the_refresh_and_keeps_the_good_token(
        bad in forbidden(),
        position in 0usize..8,
    ) {
        let rt = runtime();
        let mut value = "new-token".to_owned();
        value.insert(position.min(value.len()), bad);
        let tokens = TokenManager::builder(source::from_fn(move |_| {
            let value = value.clone();
            async move { Ok(TokenSet::bearer(value).with_expires_in(Duration::from_secs(3600))) }
        }))
        .initial(TokenSet::bearer("good").with_expires_in(Duration::from_secs(3600)))
        .max_attempts(2)
        .backoff(Duration::ZERO, Duration::ZERO)
        .build();
        let err = rt.block_on(async { tokens.refresh().await }).unwrap_err();
        // The refresh's error, whose last cause is the bad response.
        prop_assert!(err.kind().is_retryable(), "{err}");
        let cause = std::error::Error::source(&err)
            .and_then(|e| e.downcast_ref::<Error>())
            .map_or(err.kind(), Error::kind);
        prop_assert_eq!(cause, ErrorKind::InvalidResponse, "{}", err);
        prop_assert_eq!(tokens.stats().attempts, 2);
        // The good token is still served.
        let auth = rt.block_on(tokens.authorization()).unwrap();
        prop_assert_eq!(auth.header().to_str().unwrap(), "Bearer good");
    }
}
