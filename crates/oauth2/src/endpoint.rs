//! Where a secret may be sent: the one cleartext rule that every request
//! carrying a secret (a grant, introspection, revocation) and every
//! discovered endpoint is checked against, before anything is sent.
//!
//! Invariants:
//!
//! - A secret goes over `https://`, or over `http://` only to a loopback
//!   host ([`is_loopback_host`]), unless the caller opted in with
//!   `allow_cleartext(true)`. Anything else (another scheme, a relative URI)
//!   is refused: it cannot be shown to be safe.
//! - An `https://` issuer's discovery document names only `https://`
//!   endpoints; a loopback issuer may name `http://` loopback ones (a local
//!   development server). The opt-in does not change this: it allows a
//!   cleartext issuer, never a downgrade of an https one.
//! - A refusal is a [`Policy`](ErrorKind::Policy) error, made before the
//!   request is built.

use http::Uri;

use tower_token_refresh_core::is_loopback_host;

use crate::{Error, ErrorKind};

/// An endpoint that secrets are sent to, with the cleartext opt-in of the
/// grant or client that owns it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    uri: Uri,
    allow_cleartext: bool,
    name: &'static str,
}

impl Endpoint {
    /// `name` ("token endpoint", …) is what a refusal names.
    pub(crate) fn new(uri: Uri, name: &'static str) -> Self {
        Endpoint {
            uri,
            allow_cleartext: false,
            name,
        }
    }

    pub(crate) fn uri(&self) -> &Uri {
        &self.uri
    }

    pub(crate) fn set_allow_cleartext(&mut self, allow: bool) {
        self.allow_cleartext = allow;
    }

    /// Shows the URI as `label`, and the cleartext opt-in.
    pub(crate) fn debug_fields(&self, f: &mut std::fmt::DebugStruct<'_, '_>, label: &str) {
        f.field(label, &self.uri)
            .field("allow_cleartext", &self.allow_cleartext);
    }

    /// Whether a secret may be sent here.
    pub(crate) fn check(&self) -> Result<(), Error> {
        check_transport(&self.uri, self.allow_cleartext, self.name)
    }
}

/// The cleartext rule for a URI a secret (or a discovery document naming
/// where secrets go) is about to be sent to.
pub(crate) fn check_transport(
    uri: &Uri,
    allow_cleartext: bool,
    name: &'static str,
) -> Result<(), Error> {
    match Transport::of(uri) {
        Transport::Tls => Ok(()),
        Transport::Cleartext { loopback: true } => Ok(()),
        Transport::Cleartext { loopback: false } if allow_cleartext => Ok(()),
        Transport::Cleartext { loopback: false } => Err(Error::new(
            ErrorKind::Policy,
            format!(
                "refusing to send credentials to the {name} over cleartext HTTP to a \
                 non-loopback host; use https, or allow_cleartext(true) for development"
            ),
        )),
        Transport::Unknown => Err(Error::new(
            ErrorKind::Policy,
            format!("the {name} is not an absolute http or https URL"),
        )),
    }
}

/// The rule for an endpoint named by the discovery document of `issuer`
/// (the issuer asked for, already checked with [`check_transport`]).
pub(crate) fn check_discovered(
    issuer: &Uri,
    endpoint: &Uri,
    allow_cleartext: bool,
    name: &'static str,
) -> Result<(), Error> {
    if Transport::of(issuer) != Transport::Tls {
        return check_transport(endpoint, allow_cleartext, name);
    }
    match Transport::of(endpoint) {
        Transport::Tls => Ok(()),
        Transport::Cleartext { loopback: true } if issuer.host().is_some_and(is_loopback_host) => {
            Ok(())
        }
        Transport::Cleartext { .. } => Err(Error::new(
            ErrorKind::Policy,
            format!("the discovery document of an https issuer names a cleartext {name}"),
        )),
        Transport::Unknown => Err(Error::new(
            ErrorKind::Policy,
            format!("the discovery document's {name} is not an absolute http or https URL"),
        )),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Tls,
    Cleartext { loopback: bool },
    Unknown,
}

impl Transport {
    fn of(uri: &Uri) -> Self {
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return Transport::Unknown;
        };
        if host.is_empty() {
            Transport::Unknown
        } else if scheme.eq_ignore_ascii_case("https") {
            Transport::Tls
        } else if scheme.eq_ignore_ascii_case("http") {
            Transport::Cleartext {
                loopback: is_loopback_host(host),
            }
        } else {
            Transport::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn secrets_go_over_tls_or_to_loopback_unless_opted_in() {
        for ok in [
            "https://auth.example.com/token",
            "HTTPS://auth.example.com/token",
            "http://127.0.0.1:8080/token",
            "http://localhost/token",
            "http://[::1]:1/token",
            "http://user@127.0.0.1/token",
        ] {
            assert!(
                check_transport(&uri(ok), false, "token endpoint").is_ok(),
                "{ok}"
            );
        }
        for refused in [
            "http://auth.example.test/token",
            "http://127.0.0.1.nip.io/token",
            "http://10.0.0.1/token",
            "ftp://127.0.0.1/token",
            "/token",
            "127.0.0.1:80",
        ] {
            let err = check_transport(&uri(refused), false, "token endpoint").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Policy, "{refused}");
        }
        assert!(
            check_transport(&uri("http://auth.example.test/t"), true, "token endpoint").is_ok()
        );
        // The opt-in is for cleartext only, not for URLs that name no host.
        assert!(check_transport(&uri("/token"), true, "token endpoint").is_err());
    }

    #[test]
    fn an_https_issuer_names_only_https_endpoints() {
        let https = uri("https://auth.example.com");
        let check = |issuer: &Uri, endpoint: &str, allow| {
            check_discovered(issuer, &uri(endpoint), allow, "token endpoint").map_err(|e| e.kind())
        };
        assert_eq!(check(&https, "https://other.example.com/t", false), Ok(()));
        for allow in [false, true] {
            assert_eq!(
                check(&https, "http://auth.example.com/t", allow),
                Err(ErrorKind::Policy)
            );
            assert_eq!(
                check(&https, "http://127.0.0.1/t", allow),
                Err(ErrorKind::Policy)
            );
        }
        let local_tls = uri("https://localhost:8443");
        assert_eq!(check(&local_tls, "http://127.0.0.1:8080/t", false), Ok(()));
        assert_eq!(
            check(&local_tls, "http://auth.example.com/t", false),
            Err(ErrorKind::Policy)
        );
        // A cleartext issuer's endpoints follow the plain rule.
        let local = uri("http://127.0.0.1:8080");
        assert_eq!(check(&local, "http://127.0.0.1:8080/t", false), Ok(()));
        assert_eq!(
            check(&local, "http://auth.example.com/t", false),
            Err(ErrorKind::Policy)
        );
        assert_eq!(check(&local, "http://auth.example.com/t", true), Ok(()));
    }
}
