//! Secret strings that never print themselves and are wiped when dropped.

use std::fmt;

use zeroize::Zeroize;

/// Moves `value` into a boxed string without leaving a copy behind: when
/// the `String` has spare capacity, `into_boxed_str` would reallocate and
/// free the old buffer unwiped, so the bytes are copied and the `String`
/// wiped instead.
fn into_box(value: String) -> Box<str> {
    if value.capacity() == value.len() {
        return value.into_boxed_str();
    }
    let mut value = value;
    let boxed: Box<str> = value.as_str().into();
    value.zeroize();
    boxed
}

macro_rules! secret_string {
    ($(#[$meta:meta])* $name:ident, $label:literal) => {
        $(#[$meta])*
        ///
        /// `Debug` and `Display` print a fixed placeholder, never the value;
        /// read it with [`secret`](Self::secret) where it is really needed.
        /// Its memory is overwritten with zeros when it is dropped.
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(Box<str>);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(into_box(value.into()))
            }

            /// The secret value itself. Do not log it.
            pub fn secret(&self) -> &str {
                &self.0
            }
        }

        impl $name {
            fn wipe(&mut self) {
                self.0.zeroize();
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                self.wipe();
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

    #[test]
    fn dropping_wipes_the_value() {
        // `wipe` is what `Drop` runs; reading freed memory is not possible
        // in safe Rust, so the wipe is checked on a live value.
        let mut token = AccessToken::new("s3cr3t-value");
        token.wipe();
        assert_eq!(token.secret().len(), "s3cr3t-value".len());
        assert!(token.secret().bytes().all(|b| b == 0));
        let mut refresh = RefreshToken::from("r3fresh");
        refresh.wipe();
        assert!(refresh.secret().bytes().all(|b| b == 0));
        let mut client = ClientSecret::from(String::from("cl1ent"));
        client.wipe();
        assert!(client.secret().bytes().all(|b| b == 0));
    }

    #[test]
    fn a_string_with_spare_capacity_is_copied_and_kept_intact() {
        let mut value = String::with_capacity(64);
        value.push_str("spare-capacity-secret");
        let token = AccessToken::new(value);
        assert_eq!(token.secret(), "spare-capacity-secret");
        assert_eq!(token.clone(), token);
        assert_ne!(token, AccessToken::new("other"));
    }
}
