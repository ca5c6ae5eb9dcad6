//! Helpers shared by this crate's integration tests.
#![allow(dead_code, unreachable_pub)]

// The same provider helper as the oauth2 crate's interop tests: one file.
#[path = "../../../oauth2/tests/support/interop.rs"]
pub mod interop;
