//! Secret strings that never print themselves.

use std::fmt;

macro_rules! secret_string {
    ($(#[$meta:meta])* $name:ident, $label:literal) => {
        $(#[$meta])*
        ///
        /// `Debug` and `Display` print a fixed placeholder, never the value;
        /// read it with [`secret`](Self::secret) where it is really needed.
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(Box<str>);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into().into_boxed_str())
            }

            /// The secret value itself. Do not log it.
            pub fn secret(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!($label, "(<redacted>)"))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("<redacted>")
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self::new(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self::new(value)
            }
        }
    };
}

secret_string!(
    /// An OAuth2 access token (or any credential sent on each request).
    AccessToken,
    "AccessToken"
);
secret_string!(
    /// An OAuth2 refresh token.
    RefreshToken,
    "RefreshToken"
);
secret_string!(
    /// An OAuth2 client secret.
    ClientSecret,
    "ClientSecret"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let token = AccessToken::new("s3cr3t-value");
        assert_eq!(format!("{token:?}"), "AccessToken(<redacted>)");
        assert_eq!(format!("{token}"), "<redacted>");
        assert_eq!(token.secret(), "s3cr3t-value");
        let refresh = RefreshToken::new("r3fresh");
        assert!(!format!("{refresh:?} {refresh}").contains("r3fresh"));
        let client = ClientSecret::new("cl1ent");
        assert!(!format!("{client:?} {client}").contains("cl1ent"));
    }
}
