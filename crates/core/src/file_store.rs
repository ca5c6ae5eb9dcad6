//! A token store in a file, so a session survives a restart.

use std::{
    fmt, io,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::{BoxFuture, Error, ErrorKind, TokenSet, TokenStore};

/// Keeps the token set in a JSON file ([`TokenSet::to_stored_json`]), so
/// that tokens survive a process restart.
///
/// - Writes are atomic: the set goes to a temporary file in the same
///   directory, which is flushed to disk (`fsync`), renamed over the file,
///   and the directory is flushed too. A crash leaves the old file or the
///   new one, never half of one.
/// - On Unix the file is created with mode `0600`: it holds the refresh
///   token in clear.
/// - A missing file is an empty store. A file that cannot be read or parsed
///   is an [`ErrorKind::Store`] error, never taken for an empty session and
///   never overwritten by a load: the coordinator refuses to refresh from it
///   and [`TokenManager::load`](crate::TokenManager::load) reports it.
///
/// File I/O runs on tokio's blocking pool. The directory must exist.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_token_refresh_core::{FileStore, TokenSet, TokenStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let path = std::env::temp_dir().join(format!("ttr-doc-{}.json", std::process::id()));
/// let store = FileStore::new(&path);
/// assert!(store.load().await?.is_none());
/// store.save(&TokenSet::bearer("a").with_refresh_token("r")).await?;
/// let loaded = store.load().await?.unwrap();
/// assert_eq!(loaded.refresh_token().unwrap().secret(), "r");
/// store.clear().await?;
/// assert!(!path.exists());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FileStore {
    path: Arc<Path>,
}

impl FileStore {
    /// A store in the file at `path`. Nothing is read or written yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore {
            path: Arc::from(path.into()),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .finish()
    }
}

impl TokenStore for FileStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<TokenSet>, Error>> {
        let path = Arc::clone(&self.path);
        Box::pin(async move {
            let bytes = blocking(move || match std::fs::read(&path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(store_error("read", &path, e)),
            })
            .await?;
            match bytes {
                None => Ok(None),
                Some(bytes) => TokenSet::from_stored_json(&bytes).map(Some).map_err(|e| {
                    Error::new(
                        ErrorKind::Store,
                        format!("{}: {}", self.path.display(), e.message()),
                    )
                }),
            }
        })
    }

    fn save<'a>(&'a self, tokens: &'a TokenSet) -> BoxFuture<'a, Result<(), Error>> {
        let path = Arc::clone(&self.path);
        let bytes = tokens.to_stored_json();
        Box::pin(blocking(move || write_atomically(&path, &bytes)))
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        let path = Arc::clone(&self.path);
        Box::pin(blocking(move || {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(store_error("remove", &path, e)),
            }
            sync_dir(&path).map_err(|e| store_error("sync the directory of", &path, e))
        }))
    }
}

/// Runs file I/O on tokio's blocking pool, or inline without a runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle
            .spawn_blocking(f)
            .await
            .map_err(|_| Error::new(ErrorKind::Store, "file store task ended without a result"))?,
        Err(_) => f(),
    }
}

fn store_error(action: &str, path: &Path, e: io::Error) -> Error {
    Error::new(
        ErrorKind::Store,
        format!("could not {action} {}", path.display()),
    )
    .with_source(e)
}

/// Temporary file names must not collide between saves of one process or
/// between processes.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write as _;

    let file_name = path
        .file_name()
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Store,
                format!("{} is not a file path", path.display()),
            )
        })?
        .to_string_lossy();
    let temp = path.with_file_name(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = open_private(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(store_error("write", path, e));
    }
    sync_dir(path).map_err(|e| store_error("sync the directory of", path, e))
}

/// A new file only the owner can read and write.
fn open_private(path: &Path) -> io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)
}

/// Flushes the directory entry of `path` (the rename) to disk. Only Unix
/// can open a directory for that; elsewhere the rename is left to the OS.
fn sync_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}
