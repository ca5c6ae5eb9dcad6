//! DPoP (RFC 9449): access and refresh tokens bound to a key the client
//! holds, proven on every request with a fresh signed proof. Feature
//! `jose`.
//!
//! A [`DpopKey`] is the client's side of it: one ES256 key per session, the
//! proofs it signs (the `DPoP` header of each request) and the nonces
//! servers handed out, remembered per origin. Give the same `DpopKey` to
//! the grant ([`RefreshTokenGrant::dpop`](crate::RefreshTokenGrant::dpop),
//! [`ClientCredentialsGrant::dpop`](crate::ClientCredentialsGrant::dpop)),
//! to the manager ([`DpopManagerExt::dpop`],
//! which saves the key with the token set and takes the stored one back),
//! and to the resource side (the `DpopLayer` of `tower-token-refresh`, or
//! [`DpopKey::proof`] with any client).
//!
//! Invariants:
//!
//! - Every proof is new: a random `jti`, the current time, and a new
//!   signature, even for a replay of the same request.
//! - `htu` is the request's scheme, host, port and path: never its query or
//!   fragment (RFC 9449 §4.2), scheme and host lowercased, default ports
//!   left out.
//! - The JOSE header (`typ: dpop+jwt`, `alg`, `jwk`) is encoded once per
//!   key, not per proof.
//! - A nonce is sent only where it came from: a resource's to its origin,
//!   a token endpoint's to that endpoint (an authorization server and a
//!   resource may share an origin and still hand out different nonces).
//! - The key's private half never appears in `Debug` output; in a stored
//!   token set it is as protected as the refresh token beside it (the
//!   store's [`Sealer`](tower_token_refresh_core::Sealer)).
//!
//! # At the token endpoint
//!
//! A grant or login given a key with its `dpop` method proves possession
//! of it at the token endpoint: each token request carries a new proof, a
//! `use_dpop_nonce` answer is retried once with the server's nonce (a new
//! proof, and a new client assertion if the client signs one: nothing is
//! sent twice), and the tokens it brings are bound to the key (a `DPoP`
//! token type goes out as `DPoP <token>`). Give the manager the same key
//! ([`DpopManagerExt::dpop`]).

use std::{collections::HashMap, fmt, sync::Arc};

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue, Method, Uri};
use serde::Serialize;

use tower_token_refresh_core::TokenManagerBuilder;
use zeroize::Zeroizing;

use crate::{
    Error, ErrorKind, TokenSet,
    crypto::{random_urlsafe, sha256_b64url},
    jose::{SigningKey, unix_now},
};

pub use tower_token_refresh_core::header::{DPOP, DPOP_NONCE};

/// Origins whose nonces are kept at most; past that the oldest go first
/// (a nonce lost costs one more challenge, never a failure).
const MAX_ORIGINS: usize = 64;

/// A DPoP key and the nonces servers asked for: signs the `DPoP` proof of
/// each request (RFC 9449).
///
/// Cheap to clone (an `Arc` inside); clones share the key and the nonces.
/// When the manager loads a stored token set bound to another key, it
/// switches every clone to that key ([`DpopManagerExt::dpop`]).
///
/// # Example
///
/// ```
/// use tower_token_refresh_oauth2::dpop::DpopKey;
///
/// let dpop = DpopKey::generate()?;
/// let uri: http::Uri = "https://api.example.com/orders?page=2".parse()?;
/// let proof = dpop.proof(&http::Method::GET, &uri, Some("the-access-token"))?;
/// // A compact JWS: header.claims.signature
/// assert_eq!(proof.to_str()?.split('.').count(), 3);
///
/// // The resource asked for a nonce: the next proof for that origin has it.
/// let mut answer = http::HeaderMap::new();
/// answer.insert(tower_token_refresh_core::header::DPOP_NONCE, "n-1".parse()?);
/// assert!(dpop.remember_nonce(&uri, &answer));
/// assert_eq!(dpop.nonce(&uri).as_deref(), Some("n-1"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct DpopKey {
    shared: Arc<Shared>,
}

struct Shared {
    key: ArcSwap<Keyed>,
    /// Read on every proof, written only when a server hands out a new
    /// nonce: copied on write, so a proof takes no lock.
    nonces: ArcSwap<Nonces>,
}

/// A key with what every proof of it repeats.
struct Keyed {
    key: SigningKey,
    /// base64url of the constant JOSE header.
    header: String,
    thumbprint: String,
}

#[derive(Clone, Default)]
struct Nonces {
    by_origin: HashMap<String, Arc<str>>,
    /// Insertion order, for eviction past [`MAX_ORIGINS`].
    order: Vec<String>,
}

/// The claims of a proof (RFC 9449 §4.2).
#[derive(Serialize)]
struct Claims<'a> {
    jti: &'a str,
    htm: &'a str,
    htu: &'a str,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ath: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

impl Keyed {
    fn new(key: SigningKey) -> Result<Keyed, Error> {
        if key.es256_pkcs8().is_none() {
            return Err(Error::new(
                ErrorKind::Rejected,
                "a DPoP key must be an ES256 key (it is saved with the tokens bound to it)",
            ));
        }
        let thumbprint = key
            .thumbprint()
            .ok_or_else(|| Error::new(ErrorKind::Rejected, "the DPoP key has no public JWK"))?;
        // The JWK in the header identifies the key; a `kid` would only
        // repeat it, so it is left out.
        let header = key.encoded_header(Some("dpop+jwt"), true);
        Ok(Keyed {
            key,
            header,
            thumbprint,
        })
    }
}

impl DpopKey {
    /// A new ES256 key from the operating system's random numbers: one per
    /// session (a login).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Rejected`] if no random numbers could be had.
    pub fn generate() -> Result<DpopKey, Error> {
        Self::new(SigningKey::generate_es256()?)
    }

    /// Proofs signed with `key`, which must be ES256 (generated, or loaded
    /// from PKCS#8).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Rejected`] for another kind of key.
    pub fn new(key: SigningKey) -> Result<DpopKey, Error> {
        Ok(DpopKey {
            shared: Arc::new(Shared {
                key: ArcSwap::from_pointee(Keyed::new(key)?),
                nonces: ArcSwap::from_pointee(Nonces::default()),
            }),
        })
    }

    /// The signing key in use.
    pub fn signing_key(&self) -> SigningKey {
        self.shared.key.load().key.clone()
    }

    /// The JWK thumbprint of the key (RFC 7638), what a server binds tokens
    /// to (`cnf.jkt`, or the `dpop_jkt` authorization request parameter).
    pub fn thumbprint(&self) -> String {
        self.shared.key.load().thumbprint.clone()
    }

    /// A new proof for a request: `method` and `uri` as sent (the query and
    /// fragment are left out of `htu`), and the access token it carries
    /// (`None` at the token endpoint). Carries the nonce last remembered for
    /// the URI's origin, if any.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Policy`] if `uri` is not an absolute `http` or `https`
    /// URI; [`ErrorKind::Transient`] if no random numbers could be had.
    pub fn proof(
        &self,
        method: &Method,
        uri: &Uri,
        access_token: Option<&str>,
    ) -> Result<HeaderValue, Error> {
        self.sign(method, uri, access_token, Scope::Origin)
    }

    /// A proof for a token endpoint: its nonce is the endpoint's, kept
    /// apart from a resource's on the same origin.
    pub(crate) fn endpoint_proof(&self, method: &Method, uri: &Uri) -> Result<HeaderValue, Error> {
        self.sign(method, uri, None, Scope::Endpoint)
    }

    fn sign(
        &self,
        method: &Method,
        uri: &Uri,
        access_token: Option<&str>,
        scope: Scope,
    ) -> Result<HeaderValue, Error> {
        let target = Target::of(uri)?;
        let nonce = self.nonce_for(target.key(scope));
        let ath = access_token.map(|t| sha256_b64url(t.as_bytes()));
        let jti = random_urlsafe(16)?;
        let claims = Claims {
            jti: &jti,
            htm: method.as_str(),
            htu: &target.htu,
            iat: unix_now(),
            ath: ath.as_deref(),
            nonce: nonce.as_deref(),
        };
        let keyed = self.shared.key.load();
        let jwt = keyed.key.sign_jwt(&keyed.header, &claims)?;
        // base64url and dots only: always a header value.
        HeaderValue::try_from(jwt)
            .map_err(|_| Error::new(ErrorKind::Rejected, "the DPoP proof is not a header value"))
    }

    /// Remembers the `DPoP-Nonce` of a response from `uri`'s origin, for
    /// the proofs that follow. Returns whether the response had one.
    pub fn remember_nonce(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        self.remember(uri, headers, Scope::Origin)
    }

    /// [`remember_nonce`](Self::remember_nonce) for a token endpoint.
    pub(crate) fn remember_endpoint_nonce(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        self.remember(uri, headers, Scope::Endpoint)
    }

    fn remember(&self, uri: &Uri, headers: &HeaderMap, scope: Scope) -> bool {
        let Some(nonce) = headers.get(DPOP_NONCE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        // RFC 9449 §8.1: a nonce is at least one NQCHAR; anything else is
        // not a nonce to repeat.
        if nonce.is_empty() || nonce.len() > 1024 {
            return false;
        }
        let Ok(target) = Target::of(uri) else {
            return false;
        };
        let key = target.key(scope);
        // Servers may repeat the same nonce on every answer: only a new one
        // is worth a copy of the map.
        if self.nonce_for(key).as_deref() == Some(nonce) {
            return true;
        }
        let nonce: Arc<str> = Arc::from(nonce);
        self.shared.nonces.rcu(|current| {
            let mut nonces = Nonces::clone(current);
            if !nonces.by_origin.contains_key(key) {
                if nonces.order.len() >= MAX_ORIGINS {
                    let oldest = nonces.order.remove(0);
                    nonces.by_origin.remove(&oldest);
                }
                nonces.order.push(key.to_owned());
            }
            nonces.by_origin.insert(key.to_owned(), nonce.clone());
            nonces
        });
        true
    }

    /// The nonce last remembered for `uri`'s origin.
    pub fn nonce(&self, uri: &Uri) -> Option<Arc<str>> {
        let target = Target::of(uri).ok()?;
        self.nonce_for(&target.origin)
    }

    fn nonce_for(&self, origin: &str) -> Option<Arc<str>> {
        self.shared.nonces.load().by_origin.get(origin).cloned()
    }

    /// Makes `tokens` and this key agree: a set bound to another key (loaded
    /// from a store) makes every clone of this one switch to that key; a set
    /// with no key gets this one, so that it is saved with it. What the
    /// manager runs on every set it takes in ([`DpopManagerExt::dpop`]).
    pub fn bind(&self, tokens: TokenSet) -> TokenSet {
        match tokens.dpop_key() {
            None => tokens.with_dpop_key(self.signing_key()),
            Some(bound) => {
                self.adopt(&bound);
                tokens
            }
        }
    }

    /// Switches every clone to `key` (the key a token set is bound to), if
    /// it is not the one in use already.
    pub(crate) fn adopt(&self, key: &SigningKey) {
        let current = self.shared.key.load();
        if key.thumbprint().as_deref() == Some(current.thumbprint.as_str()) {
            return;
        }
        match Keyed::new(key.clone()) {
            Ok(keyed) => {
                tracing::debug!("taking the DPoP key the token set is bound to");
                self.shared.key.store(Arc::new(keyed));
            }
            // `TokenSet` holds only ES256 keys; nothing to switch to.
            Err(e) => tracing::warn!(error = %e, "the token set's DPoP key is unusable"),
        }
    }
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keyed = self.shared.key.load();
        f.debug_struct("DpopKey")
            .field("alg", &keyed.key.algorithm())
            .field("jkt", &keyed.thumbprint)
            .finish_non_exhaustive()
    }
}

/// A token set's DPoP key: core keeps it as opaque PKCS#8 bytes
/// ([`TokenSet::bound_key`]); this reads and writes it as a [`SigningKey`].
///
/// # Example
///
/// ```
/// use tower_token_refresh_core::TokenSet;
/// use tower_token_refresh_oauth2::dpop::{DpopKey, TokenSetExt as _};
///
/// let dpop = DpopKey::generate()?;
/// let tokens = TokenSet::bearer("t").with_dpop_key(dpop.signing_key());
/// assert_eq!(tokens.dpop_key().and_then(|k| k.thumbprint()), Some(dpop.thumbprint()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait TokenSetExt: Sized {
    /// Binds the set to `key`. Only an ES256 key (what [`DpopKey`] uses) is
    /// kept: it is saved with the set; any other key is ignored.
    fn with_dpop_key(self, key: SigningKey) -> Self;

    /// The DPoP key the tokens are bound to, if any (and readable as an
    /// ES256 PKCS#8 key).
    fn dpop_key(&self) -> Option<SigningKey>;
}

impl TokenSetExt for TokenSet {
    fn with_dpop_key(self, key: SigningKey) -> Self {
        match key.es256_pkcs8() {
            Some(der) => self.with_bound_key(Zeroizing::new(der.to_vec())),
            None => self,
        }
    }

    fn dpop_key(&self) -> Option<SigningKey> {
        SigningKey::es256_from_pkcs8(self.bound_key()?).ok()
    }
}

/// [`TokenManagerBuilder::dpop`](DpopManagerExt::dpop): binds a manager's
/// session to a [`DpopKey`].
pub trait DpopManagerExt: Sized {
    /// Binds the session to a DPoP key (RFC 9449): every token set the
    /// manager saves carries the key (a bound refresh token is useless
    /// without it), and a set loaded from the store, or given to
    /// `initial`, `set` or `load`, bound to another key switches `dpop`
    /// (and every clone of it: the grant's, the layer's) to that key. Give
    /// the same [`DpopKey`] to the grant that fetches the tokens. Built on
    /// [`TokenManagerBuilder::bind_tokens`] with [`DpopKey::bind`].
    ///
    /// # Example
    ///
    /// ```
    /// use tower_token_refresh_core::{source, TokenManager, TokenSet};
    /// use tower_token_refresh_oauth2::dpop::{DpopKey, DpopManagerExt as _, TokenSetExt as _};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dpop = DpopKey::generate()?;
    /// let tokens = TokenManager::builder(source::from_fn(|_| async {
    ///     Ok(TokenSet::bearer("t").with_token_type("DPoP"))
    /// }))
    /// .dpop(dpop.clone())
    /// .build();
    /// let auth = tokens.authorization().await?;
    /// assert_eq!(auth.header().to_str()?, "DPoP t");
    /// let key = tokens.current().and_then(|t| t.dpop_key()).unwrap();
    /// assert_eq!(key.thumbprint(), Some(dpop.thumbprint()));
    /// # Ok(()) }
    /// ```
    #[must_use]
    fn dpop(self, dpop: DpopKey) -> Self;
}

impl DpopManagerExt for TokenManagerBuilder {
    fn dpop(self, dpop: DpopKey) -> Self {
        self.bind_tokens(move |tokens| dpop.bind(tokens))
    }
}

/// Whose nonce a proof carries: the origin's (a resource) or the
/// endpoint's (a token endpoint).
#[derive(Clone, Copy)]
enum Scope {
    Origin,
    Endpoint,
}

/// Where a request goes, as DPoP names it.
struct Target {
    /// `scheme://host[:port]/path`
    htu: String,
    /// `scheme://host[:port]`: what nonces are kept by.
    origin: String,
}

impl Target {
    /// What the nonces of `scope` are kept by: the origin, or the whole
    /// `htu` of an endpoint (never equal to an origin: it has a path).
    fn key(&self, scope: Scope) -> &str {
        match scope {
            Scope::Origin => &self.origin,
            Scope::Endpoint => &self.htu,
        }
    }

    fn of(uri: &Uri) -> Result<Target, Error> {
        let not_absolute = || {
            Error::new(
                ErrorKind::Policy,
                "a DPoP proof needs an absolute http(s) URI",
            )
        };
        let scheme = uri.scheme_str().ok_or_else(not_absolute)?;
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(not_absolute)?;
        let default_port = if scheme.eq_ignore_ascii_case("https") {
            443
        } else if scheme.eq_ignore_ascii_case("http") {
            80
        } else {
            return Err(not_absolute());
        };
        let mut origin = String::with_capacity(scheme.len() + host.len() + 10);
        origin.push_str(&scheme.to_ascii_lowercase());
        origin.push_str("://");
        origin.push_str(&host.to_ascii_lowercase());
        if let Some(port) = uri.port_u16().filter(|p| *p != default_port) {
            origin.push(':');
            origin.push_str(&port.to_string());
        }
        let path = match uri.path() {
            "" => "/",
            p => p,
        };
        let mut htu = String::with_capacity(origin.len() + path.len());
        htu.push_str(&origin);
        htu.push_str(path);
        Ok(Target { htu, origin })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> Target {
        Target::of(&uri.parse().unwrap()).unwrap()
    }

    #[test]
    fn htu_is_scheme_host_port_and_path_only() {
        let t = target("HTTPS://API.Example.com:443/a/b?x=1#frag");
        assert_eq!(t.htu, "https://api.example.com/a/b");
        assert_eq!(t.origin, "https://api.example.com");
        assert_eq!(
            target("http://user:pw@127.0.0.1:8080?q").htu,
            "http://127.0.0.1:8080/"
        );
        assert_eq!(target("http://[::1]:80/x").htu, "http://[::1]/x");
        for bad in ["/relative", "ftp://example.com/x"] {
            let err = Target::of(&bad.parse().unwrap()).err().unwrap();
            assert_eq!(err.kind(), ErrorKind::Policy);
        }
    }

    #[test]
    fn nonces_are_kept_per_origin_and_bounded() {
        let dpop = DpopKey::generate().unwrap();
        let mut answer = HeaderMap::new();
        answer.insert(DPOP_NONCE, HeaderValue::from_static("n1"));
        let a: Uri = "https://a.example/x".parse().unwrap();
        let b: Uri = "https://b.example/x".parse().unwrap();
        assert!(dpop.remember_nonce(&a, &answer));
        assert_eq!(
            dpop.nonce(&"https://A.example:443/other".parse().unwrap())
                .as_deref(),
            Some("n1")
        );
        assert_eq!(dpop.nonce(&b), None);
        assert!(!dpop.remember_nonce(&b, &HeaderMap::new()));
        for i in 0..MAX_ORIGINS {
            let uri: Uri = format!("https://h{i}.example/").parse().unwrap();
            dpop.remember_nonce(&uri, &answer);
        }
        assert_eq!(dpop.shared.nonces.load().by_origin.len(), MAX_ORIGINS);
        assert_eq!(dpop.nonce(&a), None, "the oldest origin went first");
    }

    #[test]
    fn a_token_endpoints_nonce_is_kept_apart_from_its_origins() {
        let dpop = DpopKey::generate().unwrap();
        let token: Uri = "https://as.example/token".parse().unwrap();
        let mut answer = HeaderMap::new();
        answer.insert(DPOP_NONCE, HeaderValue::from_static("as-nonce"));
        dpop.remember_endpoint_nonce(&token, &answer);
        answer.insert(DPOP_NONCE, HeaderValue::from_static("rs-nonce"));
        dpop.remember_nonce(&"https://as.example/api".parse().unwrap(), &answer);
        assert_eq!(dpop.nonce(&token).as_deref(), Some("rs-nonce"));
        assert_eq!(
            dpop.nonce_for(Target::of(&token).unwrap().key(Scope::Endpoint))
                .as_deref(),
            Some("as-nonce")
        );
    }

    #[test]
    fn only_es256_keys_sign_proofs() {
        let hs = SigningKey::hs256(b"a shared secret of enough length!");
        assert_eq!(DpopKey::new(hs).unwrap_err().kind(), ErrorKind::Rejected);
    }

    #[tokio::test]
    async fn a_token_sets_stored_form_keeps_the_dpop_key_and_debug_does_not_show_it() {
        use base64::Engine as _;
        let key = crate::jose::SigningKey::generate_es256().unwrap();
        let tokens = TokenSet::bearer("acc")
            .with_token_type("DPoP")
            .with_dpop_key(key.clone());
        let stored = tokens.to_stored_json();
        let back = TokenSet::from_stored_json(&stored).unwrap();
        assert_eq!(back, tokens);
        assert_eq!(back.dpop_key().unwrap().thumbprint(), key.thumbprint());
        let pkcs8 =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.es256_pkcs8().unwrap());
        assert!(!format!("{back:?}").contains(&pkcs8[..24]));
        // Core keeps the bytes as they are; bytes that are no ES256 key are
        // no DPoP key (a manager's `DpopKey` binds its own in their place).
        let junk = br#"{"version":1,"access_token":"a","token_type":"DPoP","dpop_key":"AAAA"}"#;
        let read = TokenSet::from_stored_json(junk).unwrap();
        assert!(read.dpop_key().is_none());
        // Only an ES256 key is kept (DpopKey uses nothing else).
        let hs = TokenSet::bearer("a").with_dpop_key(crate::jose::SigningKey::hs256(b"k"));
        assert!(hs.dpop_key().is_none());
    }
}
