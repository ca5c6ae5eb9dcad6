//! Redirects that keep the credential to its origin (feature
//! `follow-redirect`).
//!
//! With the layer outside tower-http's `FollowRedirect`, the token goes on
//! the first request and `FollowRedirect` copies that request's headers to
//! every hop. Its [`Standard`] policy strips `Authorization`, `Cookie` and
//! `Proxy-Authorization` on a hop to another origin, and nothing else: a
//! credential in any other header ([`header_name`]) would follow the
//! redirect to any host, `http://` ones included. [`StripCredential`]
//! strips it as well.
//!
//! With the layer inside `FollowRedirect`, each hop passes the layer again
//! and its [origin policy](crate::origin) decides afresh: a hop to an origin
//! that is not allowed never gets the token.
//!
//! [`header_name`]: crate::TokenRefreshLayer::header_name

use http::{HeaderName, Request};
use tower_http::follow_redirect::policy::{Action, Attempt, Policy, Standard};

use crate::origin::same_origin;

/// A `FollowRedirect` policy that removes one credential header from
/// requests after a cross-origin hop, on top of policy `P` (by default
/// tower-http's [`Standard`], whose stripping and hop limit it keeps).
///
/// Origins are compared as the layer compares them: scheme, host
/// (ASCII case-insensitively) and port, default ports filled in. Like
/// tower-http's own filter, the removal sticks: a chain that comes back to
/// the first origin does not get the header back.
///
/// Build it with
/// [`TokenRefreshLayer::redirect_policy`](crate::TokenRefreshLayer::redirect_policy),
/// which knows the layer's header, or with [`new`](Self::new).
///
/// # Example
///
/// ```
/// use http::HeaderName;
/// use tower_http::follow_redirect::{FollowRedirectLayer, policy::Limited};
/// use tower_token_refresh::redirect::StripCredential;
///
/// let api_key = HeaderName::from_static("x-api-key");
/// let standard = FollowRedirectLayer::with_policy(StripCredential::new(api_key.clone()));
/// let five_hops = FollowRedirectLayer::with_policy(
///     StripCredential::with_policy(api_key, Limited::new(5)),
/// );
/// ```
#[derive(Clone, Debug)]
pub struct StripCredential<P = Standard> {
    policy: P,
    header: HeaderName,
    blocked: bool,
}

impl StripCredential {
    /// Strips `header` on cross-origin hops, on top of tower-http's
    /// [`Standard`] policy.
    pub fn new(header: HeaderName) -> Self {
        StripCredential::with_policy(header, Standard::default())
    }
}

impl<P> StripCredential<P> {
    /// Strips `header` on cross-origin hops, on top of `policy`.
    pub fn with_policy(header: HeaderName, policy: P) -> Self {
        StripCredential {
            policy,
            header,
            blocked: false,
        }
    }

    /// The header this policy strips.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The policy this one wraps.
    pub fn get_ref(&self) -> &P {
        &self.policy
    }
}

impl<B, E, P: Policy<B, E>> Policy<B, E> for StripCredential<P> {
    fn redirect(&mut self, attempt: &Attempt<'_>) -> Result<Action, E> {
        self.blocked = !same_origin(attempt.previous(), attempt.location());
        self.policy.redirect(attempt)
    }

    fn on_request(&mut self, request: &mut Request<B>) {
        self.policy.on_request(request);
        // `FollowRedirect` carries what this leaves into the next hop, so
        // a header removed once stays removed.
        if self.blocked {
            request.headers_mut().remove(&self.header);
        }
    }

    fn clone_body(&self, body: &B) -> Option<B> {
        self.policy.clone_body(body)
    }
}
