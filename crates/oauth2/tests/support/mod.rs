//! Helpers shared by this crate's integration tests.
#![allow(dead_code, unreachable_pub)]

pub mod interop;
