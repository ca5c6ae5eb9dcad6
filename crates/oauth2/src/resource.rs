//! RFC 8707 resource indicators: the `resource` parameter that names the
//! API a token is for, on the authorization request and every token
//! request.

use std::{fmt, str::FromStr};

use crate::{Error, ErrorKind};

/// The URI of the resource a token is for (RFC 8707 `resource`), checked
/// when made: an absolute URI (RFC 3986 §4.3) without a fragment.
///
/// Grants and logins send it with `.resource(..)`:
/// [`AuthorizationCodeLogin::resource`](crate::AuthorizationCodeLogin::resource)
/// on the authorization request and the code exchange,
/// [`RefreshTokenGrant::resource`](crate::RefreshTokenGrant::resource) on
/// every refresh,
/// [`ClientCredentialsGrant::resource`](crate::ClientCredentialsGrant::resource),
/// [`DeviceLogin::resource`](crate::DeviceLogin::resource). Some servers
/// refuse a refresh without the `resource` the session began with, so give
/// the same one to each. For an MCP server, it is its protected resource
/// metadata's [`resource`](crate::ProtectedResourceMetadata::resource).
///
/// # Example
///
/// ```
/// use tower_token_refresh_oauth2::ResourceIndicator;
///
/// let mcp = ResourceIndicator::new("https://mcp.example.com/mcp")?;
/// assert_eq!(mcp.as_str(), "https://mcp.example.com/mcp");
/// assert!(ResourceIndicator::new("https://mcp.example.com/mcp#tools").is_err());
/// assert!(ResourceIndicator::new("/mcp").is_err());
/// # Ok::<(), tower_token_refresh_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResourceIndicator(Box<str>);

impl ResourceIndicator {
    /// `uri` as a resource indicator.
    ///
    /// # Errors
    ///
    /// [`Policy`](ErrorKind::Policy) if `uri` is not an absolute URI (a
    /// scheme, `:`, and more), has a fragment, or has whitespace or
    /// control characters.
    pub fn new(uri: impl Into<String>) -> Result<Self, Error> {
        let uri = uri.into();
        check(&uri)?;
        Ok(ResourceIndicator(uri.into_boxed_str()))
    }

    /// The URI.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// RFC 8707 §2: an absolute URI, no fragment.
fn check(uri: &str) -> Result<(), Error> {
    let refuse = |why: &str| {
        Err(Error::new(
            ErrorKind::Policy,
            format!("a resource indicator {why}"),
        ))
    };
    if uri.contains('#') {
        return refuse("must not have a fragment");
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return refuse("must not have whitespace or control characters");
    }
    // RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
    let Some((scheme, rest)) = uri.split_once(':') else {
        return refuse("must be an absolute URI");
    };
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || rest.is_empty() || rest == "//" {
        return refuse("must be an absolute URI");
    }
    Ok(())
}

impl FromStr for ResourceIndicator {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        ResourceIndicator::new(s)
    }
}

impl TryFrom<&str> for ResourceIndicator {
    type Error = Error;

    fn try_from(s: &str) -> Result<Self, Error> {
        ResourceIndicator::new(s)
    }
}

impl AsRef<str> for ResourceIndicator {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceIndicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ResourceIndicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ResourceIndicator").field(&&*self.0).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_uris_without_fragments_are_resource_indicators() {
        for ok in [
            "https://mcp.example.com/mcp",
            "http://localhost:3000/mcp",
            "https://api.example.com",
            "https://api.example.com/v1?tenant=a",
            "urn:example:api",
            "HTTPS://API.EXAMPLE.COM/",
        ] {
            assert_eq!(ResourceIndicator::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "/mcp",
            "mcp.example.com/mcp",
            "https://mcp.example.com/mcp#x",
            "https://mcp.example.com/#",
            "https:",
            "https://",
            "1http://x",
            "ht tp://x",
            "https://x/a b",
            "https://x/\n",
        ] {
            let err = ResourceIndicator::new(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Policy, "{bad:?}");
        }
    }
}
