//! Encryption at rest for stored token sets: the [`Sealer`] hook that
//! [`FileStore`](crate::FileStore) and the Redis store accept.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::{BoxFuture, Error, ErrorKind, TokenSet};

/// Encrypts and authenticates a store's bytes: the token set a
/// [`TokenStore`](crate::TokenStore) keeps is sealed before it is written
/// and opened after it is read, so what sits on disk or in Redis holds no
/// token in clear.
///
/// Implement it with your key management: a local key
/// (`XChaCha20Poly1305Sealer`, feature `xchacha20poly1305`), or a KMS
/// (`Encrypt`/`Decrypt`, or a data key it unwraps once). Both methods
/// return a future, so a sealer may call a service; they run only when the
/// store loads or saves (on a refresh, a login, a restart), never on a
/// request's path.
///
/// # Contract
///
/// - `context` is associated data: it is not secret and not stored, but
///   [`open`](Self::open) must fail unless it gets the `context` that
///   [`seal`](Self::seal) got (an AEAD's associated data, a KMS's
///   encryption context). Stores pass their identity in it (a file's name,
///   a Redis key), so a sealed set cannot be moved from one store to
///   another unnoticed.
/// - `seal` output must be self-describing enough for `open` after a key
///   rotation: put the key id in it (as `XChaCha20Poly1305Sealer` does),
///   and keep opening with old keys until every store was saved again.
/// - `open` must fail, not return garbage, on a wrong key, a wrong context
///   or altered bytes. Errors should be [`ErrorKind::Store`]; stores wrap
///   whatever they get in one anyway.
/// - Never log or quote the plaintext or the key in an error.
///
/// # Example
///
/// A sealer that hands the work to an asynchronous key service:
///
/// ```
/// use tower_token_refresh_core::{BoxFuture, Error, ErrorKind, Sealer};
///
/// # struct Kms;
/// # impl Kms {
/// #     async fn encrypt(&self, p: &[u8], c: &[u8]) -> Result<Vec<u8>, String> {
/// #         Ok(p.iter().chain(c).map(|b| b ^ 0x5a).collect())
/// #     }
/// #     async fn decrypt(&self, s: &[u8], c: &[u8]) -> Result<Vec<u8>, String> {
/// #         let p: Vec<u8> = s.iter().map(|b| b ^ 0x5a).collect();
/// #         p.strip_suffix(c).map(<[u8]>::to_vec).ok_or_else(|| "bad context".into())
/// #     }
/// # }
/// struct KmsSealer {
///     kms: Kms,
/// }
///
/// impl Sealer for KmsSealer {
///     fn seal<'a>(&'a self, plaintext: &'a [u8], context: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, Error>> {
///         Box::pin(async move {
///             self.kms.encrypt(plaintext, context).await
///                 .map_err(|e| Error::new(ErrorKind::Store, "KMS encrypt failed").with_source(e))
///         })
///     }
///
///     fn open<'a>(&'a self, sealed: &'a [u8], context: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, Error>> {
///         Box::pin(async move {
///             self.kms.decrypt(sealed, context).await
///                 .map_err(|e| Error::new(ErrorKind::Store, "KMS decrypt failed").with_source(e))
///         })
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
/// # let sealer = KmsSealer { kms: Kms };
/// # let tokens = tower_token_refresh_core::TokenSet::bearer("a");
/// # let sealed = tokens.to_sealed(&sealer, b"ctx").await?;
/// # let back = tower_token_refresh_core::TokenSet::from_sealed(&sealed, &sealer, b"ctx").await?;
/// # assert_eq!(back.access_token(), tokens.access_token());
/// # Ok(()) }
/// ```
pub trait Sealer: Send + Sync + 'static {
    /// Encrypts and authenticates `plaintext`, bound to `context`.
    fn seal<'a>(
        &'a self,
        plaintext: &'a [u8],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, Error>>;

    /// Checks and decrypts what [`seal`](Self::seal) returned for the same
    /// `context`.
    ///
    /// # Errors
    ///
    /// When the key is wrong or unknown, the context differs, or the bytes
    /// were altered.
    fn open<'a>(
        &'a self,
        sealed: &'a [u8],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, Error>>;
}

impl<T: Sealer + ?Sized> Sealer for Arc<T> {
    fn seal<'a>(
        &'a self,
        plaintext: &'a [u8],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, Error>> {
        (**self).seal(plaintext, context)
    }

    fn open<'a>(
        &'a self,
        sealed: &'a [u8],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, Error>> {
        (**self).open(sealed, context)
    }
}

/// What every sealed stored set starts with: it tells a sealed set from a
/// plain JSON one (which starts with `{`), and its version. It is part of
/// the associated data too.
pub(crate) const SEALED_MAGIC: &[u8] = b"ttr-sealed/1\n";

/// The associated data a sealer gets: the magic, then the store's context.
fn associated_data(context: &[u8]) -> Vec<u8> {
    [SEALED_MAGIC, context].concat()
}

impl TokenSet {
    /// The set in its stored form ([`to_stored_json`](Self::to_stored_json)),
    /// sealed by `sealer` and bound to `context` (the identity of the
    /// place it is stored, as a store sees it). What stores with a
    /// [`Sealer`] write.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Store`] when the sealer fails.
    ///
    /// # Example
    ///
    /// See [`from_sealed`](Self::from_sealed).
    pub async fn to_sealed(
        &self,
        sealer: &(impl Sealer + ?Sized),
        context: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let plaintext = Zeroizing::new(self.to_stored_json());
        let sealed = sealer
            .seal(&plaintext, &associated_data(context))
            .await
            .map_err(|e| sealer_error("could not seal the token set", e))?;
        Ok([SEALED_MAGIC, &sealed].concat())
    }

    /// Reads what [`to_sealed`](Self::to_sealed) wrote with the same
    /// `context`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Store`] when the bytes are not a sealed set (a plain
    /// JSON one included: load it with an unsealed store and save it with
    /// the sealed one to migrate), when the sealer cannot open them (wrong
    /// or unknown key, another context, altered bytes), or when what it
    /// opened is not a stored set.
    ///
    /// # Example
    ///
    /// ```
    /// # #[cfg(feature = "xchacha20poly1305")] {
    /// use tower_token_refresh_core::{ErrorKind, TokenSet, XChaCha20Poly1305Sealer};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower_token_refresh_core::Error> {
    /// # let key = [7u8; 32]; // from your secret manager, never a constant
    /// let sealer = XChaCha20Poly1305Sealer::new(1, &key);
    /// let tokens = TokenSet::bearer("acc").with_refresh_token("ref");
    /// let sealed = tokens.to_sealed(&sealer, b"billing-api").await?;
    /// assert!(!sealed.windows(3).any(|w| w == b"ref"));
    ///
    /// let back = TokenSet::from_sealed(&sealed, &sealer, b"billing-api").await?;
    /// assert_eq!(back.refresh_token(), tokens.refresh_token());
    /// // Bound to its context: it cannot pass for another store's set.
    /// let err = TokenSet::from_sealed(&sealed, &sealer, b"orders-api").await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Store);
    /// # Ok(()) }
    /// # main().unwrap(); }
    /// ```
    pub async fn from_sealed(
        sealed: &[u8],
        sealer: &(impl Sealer + ?Sized),
        context: &[u8],
    ) -> Result<TokenSet, Error> {
        let Some(body) = sealed.strip_prefix(SEALED_MAGIC) else {
            return Err(Error::new(
                ErrorKind::Store,
                "the stored token set is not sealed, and this store only reads sealed sets \
                 (to migrate, load it with an unsealed store and save it with this one)",
            ));
        };
        let plaintext = Zeroizing::new(
            sealer
                .open(body, &associated_data(context))
                .await
                .map_err(|e| sealer_error("could not open the sealed token set", e))?,
        );
        TokenSet::from_stored_json(&plaintext)
    }
}

/// A sealer's error as a [`Store`](ErrorKind::Store) error, whatever kind it
/// had, with its message kept.
fn sealer_error(what: &str, e: Error) -> Error {
    if e.kind() == ErrorKind::Store {
        return e;
    }
    Error::new(ErrorKind::Store, format!("{what}: {}", e.message())).with_source(e)
}

#[cfg(feature = "xchacha20poly1305")]
pub use xchacha::XChaCha20Poly1305Sealer;

#[cfg(feature = "xchacha20poly1305")]
mod xchacha {
    use std::fmt;

    use chacha20poly1305::{
        KeyInit, XChaCha20Poly1305, XNonce,
        aead::{Aead, Payload},
    };

    use crate::{BoxFuture, Error, ErrorKind, Sealer};

    /// The envelope's version byte.
    const VERSION: u8 = 1;
    /// Version, then the key id (big-endian `u32`).
    const HEADER: usize = 1 + 4;
    const NONCE: usize = 24;
    const TAG: usize = 16;

    /// A [`Sealer`] with XChaCha20-Poly1305 (RustCrypto's
    /// `chacha20poly1305`) and keys you supply; feature `xchacha20poly1305`.
    ///
    /// Each seal draws a fresh random 192-bit nonce from the operating
    /// system (`getrandom`): random nonces that long never repeat in
    /// practice, whatever the number of saves. The envelope is
    /// `version (1) ‖ key id (4, big-endian) ‖ nonce (24) ‖ ciphertext ‖
    /// tag (16)`; the version and key id are authenticated with the
    /// store's context as associated data.
    ///
    /// Keys: 32 bytes from your secret manager or KMS, never generated here
    /// and never logged (`Debug` shows key ids only). The cipher's copy is
    /// zeroized when the sealer is dropped; the caller's buffer is the
    /// caller's to wipe.
    ///
    /// Rotation: seal with the new key, and keep the old one to open what
    /// it sealed ([`with_previous_key`](Self::with_previous_key)) until
    /// every store was saved again (each refresh saves).
    ///
    /// # Example
    ///
    /// ```
    /// use tower_token_refresh_core::{FileStore, TokenSet, TokenStore, XChaCha20Poly1305Sealer};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let path = std::env::temp_dir().join(format!("ttr-sealer-doc-{}.json", std::process::id()));
    /// # let (old_key, new_key) = ([1u8; 32], [2u8; 32]);
    /// // Keys come from your secret manager.
    /// let before = FileStore::new(&path).with_sealer(XChaCha20Poly1305Sealer::new(1, &old_key));
    /// before.save(&TokenSet::bearer("a").with_refresh_token("r")).await?;
    ///
    /// // Rotated: key 2 seals, key 1 still opens.
    /// let sealer = XChaCha20Poly1305Sealer::new(2, &new_key).with_previous_key(1, &old_key);
    /// let after = FileStore::new(&path).with_sealer(sealer);
    /// let tokens = after.load().await?.expect("saved above");
    /// assert_eq!(tokens.refresh_token().unwrap().secret(), "r");
    /// after.save(&tokens).await?; // now sealed with key 2
    /// # after.clear().await?;
    /// # Ok(()) }
    /// ```
    pub struct XChaCha20Poly1305Sealer {
        key_id: u32,
        cipher: XChaCha20Poly1305,
        previous: Vec<(u32, XChaCha20Poly1305)>,
    }

    impl XChaCha20Poly1305Sealer {
        /// Seals with `key`, named `key_id` in every envelope.
        pub fn new(key_id: u32, key: &[u8; 32]) -> Self {
            XChaCha20Poly1305Sealer {
                key_id,
                cipher: XChaCha20Poly1305::new(key.into()),
                previous: Vec::new(),
            }
        }

        /// Also opens envelopes sealed with an older `key`, named `key_id`.
        /// The sealing key wins over a previous key of the same id.
        pub fn with_previous_key(mut self, key_id: u32, key: &[u8; 32]) -> Self {
            self.previous
                .push((key_id, XChaCha20Poly1305::new(key.into())));
            self
        }

        /// The id of the key that seals.
        pub fn key_id(&self) -> u32 {
            self.key_id
        }

        fn cipher(&self, key_id: u32) -> Option<&XChaCha20Poly1305> {
            if key_id == self.key_id {
                return Some(&self.cipher);
            }
            self.previous
                .iter()
                .find(|(id, _)| *id == key_id)
                .map(|(_, cipher)| cipher)
        }

        fn seal_now(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, Error> {
            let mut header = [0u8; HEADER];
            header[0] = VERSION;
            header[1..].copy_from_slice(&self.key_id.to_be_bytes());
            let mut nonce = [0u8; NONCE];
            getrandom::getrandom(&mut nonce).map_err(|e| {
                Error::new(
                    ErrorKind::Store,
                    format!("no random nonce from the operating system ({e})"),
                )
            })?;
            let aad = [&header[..], context].concat();
            let ciphertext = self
                .cipher
                .encrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: plaintext,
                        aad: &aad,
                    },
                )
                .map_err(|_| Error::new(ErrorKind::Store, "the token set is too long to seal"))?;
            Ok([&header[..], &nonce, &ciphertext].concat())
        }

        fn open_now(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, Error> {
            if sealed.len() < HEADER + NONCE + TAG {
                return Err(Error::new(
                    ErrorKind::Store,
                    "the sealed token set is truncated",
                ));
            }
            let (header, rest) = sealed.split_at(HEADER);
            let (nonce, ciphertext) = rest.split_at(NONCE);
            if header[0] != VERSION {
                return Err(Error::new(
                    ErrorKind::Store,
                    format!("the sealed token set has unknown version {}", header[0]),
                ));
            }
            let key_id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
            let cipher = self.cipher(key_id).ok_or_else(|| {
                Error::new(
                    ErrorKind::Store,
                    format!("the token set was sealed with key {key_id}, which this sealer does not have"),
                )
            })?;
            let nonce: [u8; NONCE] = nonce
                .try_into()
                .map_err(|_| Error::new(ErrorKind::Store, "the sealed token set is truncated"))?;
            let aad = [header, context].concat();
            cipher
                .decrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| {
                    Error::new(
                        ErrorKind::Store,
                        format!(
                            "the token set sealed with key {key_id} failed authentication: \
                             a wrong key, or it was altered or moved from another store"
                        ),
                    )
                })
        }
    }

    impl fmt::Debug for XChaCha20Poly1305Sealer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("XChaCha20Poly1305Sealer")
                .field("key_id", &self.key_id)
                .field(
                    "previous_key_ids",
                    &self.previous.iter().map(|(id, _)| id).collect::<Vec<_>>(),
                )
                .finish_non_exhaustive()
        }
    }

    impl Sealer for XChaCha20Poly1305Sealer {
        fn seal<'a>(
            &'a self,
            plaintext: &'a [u8],
            context: &'a [u8],
        ) -> BoxFuture<'a, Result<Vec<u8>, Error>> {
            Box::pin(std::future::ready(self.seal_now(plaintext, context)))
        }

        fn open<'a>(
            &'a self,
            sealed: &'a [u8],
            context: &'a [u8],
        ) -> BoxFuture<'a, Result<Vec<u8>, Error>> {
            Box::pin(std::future::ready(self.open_now(sealed, context)))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn sealed_bytes_open_with_the_same_key_and_context_only() {
            let sealer = XChaCha20Poly1305Sealer::new(9, &[3; 32]);
            let sealed = sealer.seal_now(b"secret-bytes", b"ctx").unwrap();
            assert_eq!(sealed.len(), HEADER + NONCE + b"secret-bytes".len() + TAG);
            assert_eq!(&sealed[..HEADER], &[1, 0, 0, 0, 9]);
            assert_eq!(sealer.open_now(&sealed, b"ctx").unwrap(), b"secret-bytes");
            assert!(sealer.open_now(&sealed, b"other").is_err());
            let wrong = XChaCha20Poly1305Sealer::new(9, &[4; 32]);
            assert!(wrong.open_now(&sealed, b"ctx").is_err());
            // Every byte matters, the header's included.
            for i in 0..sealed.len() {
                let mut altered = sealed.clone();
                altered[i] ^= 1;
                assert!(sealer.open_now(&altered, b"ctx").is_err(), "byte {i}");
            }
            assert!(
                sealer
                    .open_now(&sealed[..sealed.len() - 1], b"ctx")
                    .is_err()
            );
            assert!(sealer.open_now(&sealed[..HEADER + NONCE], b"ctx").is_err());
        }

        #[test]
        fn every_seal_draws_a_new_nonce() {
            let sealer = XChaCha20Poly1305Sealer::new(1, &[3; 32]);
            let a = sealer.seal_now(b"same", b"").unwrap();
            let b = sealer.seal_now(b"same", b"").unwrap();
            assert_ne!(a[HEADER..HEADER + NONCE], b[HEADER..HEADER + NONCE]);
        }

        #[test]
        fn a_rotated_sealer_opens_the_old_key_and_seals_with_the_new() {
            let old = XChaCha20Poly1305Sealer::new(1, &[1; 32]);
            let sealed = old.seal_now(b"x", b"c").unwrap();
            let rotated = XChaCha20Poly1305Sealer::new(2, &[2; 32]).with_previous_key(1, &[1; 32]);
            assert_eq!(rotated.open_now(&sealed, b"c").unwrap(), b"x");
            assert_eq!(
                rotated.seal_now(b"x", b"c").unwrap()[1..HEADER],
                [0, 0, 0, 2]
            );
            let forgot = XChaCha20Poly1305Sealer::new(2, &[2; 32]);
            let err = forgot.open_now(&sealed, b"c").unwrap_err();
            assert!(err.message().contains("key 1"), "{err}");
        }

        #[test]
        fn debug_shows_key_ids_only() {
            let sealer =
                XChaCha20Poly1305Sealer::new(2, &[0xab; 32]).with_previous_key(1, &[0xcd; 32]);
            let debug = format!("{sealer:?}");
            assert!(
                debug.contains("key_id: 2") && debug.contains("[1]"),
                "{debug}"
            );
            assert!(
                !debug.to_lowercase().contains("ab, ") && !debug.contains("171"),
                "{debug}"
            );
        }
    }
}
