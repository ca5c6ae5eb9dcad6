//! The refresh lock of the processes of one machine: an OS advisory lock
//! (`flock` on Unix, `LockFileEx` on Windows) on a file beside the store.
//!
//! Invariants:
//! - The lock is taken without blocking (`try_lock`), polled while another
//!   process holds it: no thread is ever parked in the kernel waiting for a
//!   holder that may hang, and every wait is bounded by its caller.
//! - The lock belongs to an open file: it is freed when the lease is
//!   released or dropped, and by the OS when the holder's process dies,
//!   however it dies (`kill -9` included).
//! - The lock file is never removed: removing it would let two processes
//!   lock two different files of the same name.

use std::{
    fmt,
    fs::File,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{BoxFuture, Error, ErrorKind, RefreshLease, RefreshTurn, TokenSet, TokenStore};

/// How often a process waiting for the lock tries it again.
const POLL: Duration = Duration::from_millis(5);

/// A lock file that processes sharing a store take before they present its
/// refresh token; see [`LockedStore`].
#[derive(Clone)]
pub(crate) struct LockFile {
    path: Arc<Path>,
}

impl fmt::Debug for LockFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LockFile").field(&self.path).finish()
    }
}

impl LockFile {
    pub(crate) fn new(path: impl Into<PathBuf>) -> Self {
        LockFile {
            path: Arc::from(path.into()),
        }
    }

    /// `.{name}.lock` beside the store's file `path`.
    pub(crate) fn beside(path: &Path) -> Self {
        let name = path.file_name().unwrap_or_default();
        let mut lock = std::ffi::OsString::from(".");
        lock.push(name);
        lock.push(".lock");
        LockFile::new(path.with_file_name(lock))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (creating) the lock file, owner-only on Unix.
    async fn open(&self) -> Result<File, Error> {
        let path = Arc::clone(&self.path);
        crate::file_store::blocking(move || {
            let mut options = std::fs::OpenOptions::new();
            options.read(true).write(true).create(true).truncate(false);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                options.mode(0o600);
            }
            options
                .open(&path)
                .map_err(|e| lock_error("open", &path, e))
        })
        .await
    }

    /// Takes the lock if it is free.
    async fn try_take(&self) -> Result<Option<File>, Error> {
        let file = self.open().await?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(lock_error("lock", &self.path, e)),
        }
    }

    /// Takes the lock, waiting for it as long as the caller lets this run.
    async fn take(&self) -> Result<File, Error> {
        let file = self.open().await?;
        // Bounded by the caller (the coordinator times every store call).
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) => tokio::time::sleep(POLL).await,
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(lock_error("lock", &self.path, e));
                }
            }
        }
    }

    /// Ends when the lock is free (taken and let go at once), so that the
    /// waiter looks at the store again. Bounded by the caller.
    async fn until_free(self) -> Result<(), Error> {
        drop(self.take().await?);
        Ok(())
    }

    /// Runs `op` (a save or a clear) under the lock.
    pub(crate) async fn hold<T, F: Future<Output = Result<T, Error>>>(
        &self,
        op: impl FnOnce() -> F,
    ) -> Result<T, Error> {
        let file = self.take().await?;
        let result = op().await;
        drop(file);
        result
    }

    /// The refresh turn for a store whose unlocked writes go to `store`.
    pub(crate) async fn turn(&self, store: Arc<dyn TokenStore>) -> Result<RefreshTurn, Error> {
        match self.try_take().await? {
            Some(file) => {
                tracing::debug!(lock = %self.path.display(), "took the refresh lock");
                Ok(RefreshTurn::Leader(Box::new(FileLease {
                    file: Mutex::new(Some(file)),
                    store,
                })))
            }
            None => {
                tracing::debug!(lock = %self.path.display(), "another process holds the refresh lock");
                Ok(RefreshTurn::Follower(Box::pin(self.clone().until_free())))
            }
        }
    }
}

fn lock_error(action: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Store,
        format!("could not {action} the lock file {}", path.display()),
    )
    .with_source(e)
}

/// A held lock file; saves go straight to the store while it is held.
struct FileLease {
    file: Mutex<Option<File>>,
    store: Arc<dyn TokenStore>,
}

impl FileLease {
    fn take_file(&self) -> Option<File> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Writes go through only while the lock is held.
    fn still_held(&self, what: &str) -> Result<(), Error> {
        if self.is_held() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Store,
                format!("the refresh lock was released before the {what}"),
            ))
        }
    }
}

impl RefreshLease for FileLease {
    fn commit<'a>(&'a self, tokens: &'a TokenSet) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.still_held("save")?;
            self.store.save(tokens).await
        })
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.still_held("clear")?;
            self.store.clear().await
        })
    }

    fn release(&self) -> BoxFuture<'_, Result<(), Error>> {
        // Closing the file frees the lock.
        drop(self.take_file());
        Box::pin(async { Ok(()) })
    }

    fn is_held(&self) -> bool {
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

/// Gives any [`TokenStore`] the refresh lock of [`FileStore`](crate::FileStore):
/// processes of one machine that share the store (through an OS keychain,
/// say, which has no lock of its own) refresh once between them.
///
/// The lock is an OS advisory lock on `lock_path` (created owner-only if
/// missing, never removed): taken from the coordinator's look at the store
/// through the save of what the refresh brought, and by every
/// [`save`](TokenStore::save) and [`clear`](TokenStore::clear). A process
/// that finds it taken waits (bounded by its refresh deadline), then adopts
/// what the holder saved. The OS frees it when its holder's process dies,
/// `kill -9` included. Advisory locks are not reliable on network file
/// systems: keep `lock_path` on a local disk.
///
/// # Example
///
/// ```
/// use tower_token_refresh_core::{LockedStore, MemoryStore, TokenSet, TokenStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir();
/// // Your keychain store here; the lock file goes where every process of
/// // the program finds it.
/// let store = LockedStore::new(MemoryStore::new(), dir.join(format!("ttr-doc-{}.lock", std::process::id())));
/// store.save(&TokenSet::bearer("a").with_refresh_token("r")).await?;
/// assert!(store.load().await?.is_some());
/// # Ok(()) }
/// ```
pub struct LockedStore<S> {
    inner: Arc<S>,
    lock: LockFile,
}

impl<S: TokenStore> LockedStore<S> {
    /// `store`, coordinated across processes by the lock file at `lock_path`.
    pub fn new(store: S, lock_path: impl Into<PathBuf>) -> Self {
        LockedStore {
            inner: Arc::new(store),
            lock: LockFile::new(lock_path),
        }
    }

    /// The store inside.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The lock file's path.
    pub fn lock_path(&self) -> &Path {
        self.lock.path()
    }
}

impl<S> fmt::Debug for LockedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockedStore")
            .field("lock", &self.lock.path())
            .finish_non_exhaustive()
    }
}

impl<S: TokenStore> TokenStore for LockedStore<S> {
    fn load(&self) -> BoxFuture<'_, Result<Option<TokenSet>, Error>> {
        self.inner.load()
    }

    fn save<'a>(&'a self, tokens: &'a TokenSet) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.lock.hold(|| self.inner.save(tokens)))
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.lock.hold(|| self.inner.clear()))
    }

    fn begin_refresh(&self) -> BoxFuture<'_, Result<RefreshTurn, Error>> {
        let store: Arc<dyn TokenStore> = self.inner.clone();
        Box::pin(async move { self.lock.turn(store).await })
    }
}
