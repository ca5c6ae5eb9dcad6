//! A token store in a file, so a session survives a restart.

use std::{
    fmt, io,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use zeroize::Zeroizing;

use crate::{
    BoxFuture, Error, ErrorKind, RefreshTurn, Sealer, TokenSet, TokenStore, lock_file::LockFile,
};

/// Keeps the token set in a JSON file ([`TokenSet::to_stored_json`]), so
/// that tokens survive a process restart.
///
/// - Writes are atomic: the set goes to a temporary file in the same
///   directory (`.{name}.tmp.…`), which is flushed to disk (`fsync`),
///   renamed over the file, and the directory is flushed too. A crash
///   leaves the old file or the new one, never half of one.
/// - A writer killed mid-save leaves its temporary file behind; every load
///   and save removes those whose writer is gone (a dead process of this
///   host and PID namespace) or that are older than an hour, and never one
///   a live writer is still using.
/// - On Unix the file is created with mode `0600`: unless it is sealed, it
///   holds the refresh token in clear.
/// - [`with_sealer`](Self::with_sealer) encrypts it at rest.
/// - A missing file is an empty store. A file that cannot be read, parsed
///   or opened by the sealer is an [`ErrorKind::Store`] error, never taken
///   for an empty session and never overwritten by a load: the coordinator
///   refuses to refresh from it and
///   [`TokenManager::load`](crate::TokenManager::load) reports it.
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
    sealer: Option<Arc<dyn Sealer>>,
    /// The refresh lock beside the file; `None` after
    /// [`without_lock`](FileStore::without_lock).
    lock: Option<LockFile>,
}

impl FileStore {
    /// A store in the file at `path`. Nothing is read or written yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path: Arc<Path> = Arc::from(path.into());
        FileStore {
            lock: Some(LockFile::beside(&path)),
            path,
            sealer: None,
        }
    }

    /// The store of one session among many ([`Sessions`](crate::Sessions)):
    /// the file `{dir}/{name}.json`, where the name is a SHA-256 of `key`
    /// (32 hex digits). Whatever the key holds (a user ID, an email, a path
    /// with `../`), the file stays in `dir` and its name tells nothing of
    /// the key. With its lock file, as [`new`](Self::new). The directory
    /// must exist.
    ///
    /// ```
    /// use tower_token_refresh_core::FileStore;
    ///
    /// let alice = FileStore::keyed("/var/lib/app/sessions", "alice@example.com");
    /// let sneaky = FileStore::keyed("/var/lib/app/sessions", "../../etc/passwd");
    /// assert!(alice.path().starts_with("/var/lib/app/sessions"));
    /// assert_eq!(sneaky.path().parent(), alice.path().parent());
    /// assert_ne!(alice.path(), sneaky.path());
    /// ```
    pub fn keyed(dir: impl AsRef<Path>, key: impl AsRef<[u8]>) -> Self {
        let mut name = crate::sessions::key_digest(key.as_ref());
        name.push_str(".json");
        FileStore::new(dir.as_ref().join(name))
    }

    /// No lock file: for a file only one process ever uses, or on a network
    /// file system where advisory locks are not reliable (then give the
    /// processes one [`RedisStore`-like](crate::TokenStore) store instead,
    /// or one process each its own file). Several processes refreshing
    /// through an unlocked file present the same refresh token, which a
    /// rotating server punishes by ending the session.
    pub fn without_lock(mut self) -> Self {
        self.lock = None;
        self
    }

    /// The lock file beside the session file (`.{name}.lock`), if the store
    /// has one.
    pub fn lock_path(&self) -> Option<&Path> {
        self.lock.as_ref().map(LockFile::path)
    }

    /// The same file without the lock: what a held lock writes through.
    fn unlocked(&self) -> FileStore {
        FileStore {
            lock: None,
            ..self.clone()
        }
    }

    async fn write(&self, tokens: &TokenSet) -> Result<(), Error> {
        let path = Arc::clone(&self.path);
        let bytes = match &self.sealer {
            Some(sealer) => tokens
                .to_sealed(sealer, &self.context())
                .await
                .map_err(|e| self.at_path(&e))?,
            None => tokens.to_stored_json(),
        };
        let bytes = Zeroizing::new(bytes);
        blocking(move || {
            temp::remove_stale(&path);
            write_atomically(&path, &bytes)
        })
        .await
    }

    async fn remove(&self) -> Result<(), Error> {
        let path = Arc::clone(&self.path);
        blocking(move || {
            temp::remove_stale(&path);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(store_error("remove", &path, e)),
            }
            sync_dir(&path).map_err(|e| store_error("sync the directory of", &path, e))
        })
        .await
    }

    /// Seals the file with `sealer`: the store writes
    /// [`TokenSet::to_sealed`] and reads [`TokenSet::from_sealed`], with
    /// the file's name (not its directory, so the directory may move) as
    /// the context. A file that is not sealed, or that `sealer` cannot
    /// open, is an [`ErrorKind::Store`] error on load.
    ///
    /// To seal an existing plain file, load it with a plain store and save
    /// it with the sealed one.
    ///
    /// # Example
    ///
    /// ```
    /// # #[cfg(feature = "xchacha20poly1305")] {
    /// use tower_token_refresh_core::{FileStore, TokenSet, TokenStore, XChaCha20Poly1305Sealer};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let path = std::env::temp_dir().join(format!("ttr-sealed-doc-{}.json", std::process::id()));
    /// # let key = [9u8; 32]; // from your secret manager
    /// let store = FileStore::new(&path).with_sealer(XChaCha20Poly1305Sealer::new(1, &key));
    /// store.save(&TokenSet::bearer("acc").with_refresh_token("ref")).await?;
    /// let on_disk = std::fs::read(&path)?;
    /// assert!(!on_disk.windows(3).any(|w| w == b"ref"));
    /// assert_eq!(store.load().await?.unwrap().refresh_token().unwrap().secret(), "ref");
    /// # store.clear().await?;
    /// # Ok(()) }
    /// # main().unwrap(); }
    /// ```
    pub fn with_sealer(mut self, sealer: impl Sealer) -> Self {
        self.sealer = Some(Arc::new(sealer));
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The context a sealed file is bound to: `file:` and its name.
    fn context(&self) -> Vec<u8> {
        let name = self.path.file_name().unwrap_or_default();
        [b"file:", name.as_encoded_bytes()].concat()
    }

    fn at_path(&self, e: &Error) -> Error {
        Error::new(
            ErrorKind::Store,
            format!("{}: {}", self.path.display(), e.message()),
        )
        .with_source(e.clone())
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .field("sealed", &self.sealer.is_some())
            .finish()
    }
}

impl TokenStore for FileStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<TokenSet>, Error>> {
        let path = Arc::clone(&self.path);
        Box::pin(async move {
            let bytes = blocking(move || {
                temp::remove_stale(&path);
                match std::fs::read(&path) {
                    Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(store_error("read", &path, e)),
                }
            })
            .await?;
            let Some(bytes) = bytes else {
                return Ok(None);
            };
            let tokens = match &self.sealer {
                Some(sealer) => TokenSet::from_sealed(&bytes, sealer, &self.context()).await,
                None => TokenSet::from_stored_json(&bytes),
            };
            tokens.map(Some).map_err(|e| self.at_path(&e))
        })
    }

    fn save<'a>(&'a self, tokens: &'a TokenSet) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            match &self.lock {
                Some(lock) => lock.hold(|| self.write(tokens)).await,
                None => self.write(tokens).await,
            }
        })
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            match &self.lock {
                Some(lock) => lock.hold(|| self.remove()).await,
                None => self.remove().await,
            }
        })
    }

    fn begin_refresh(&self) -> BoxFuture<'_, Result<RefreshTurn, Error>> {
        Box::pin(async move {
            match &self.lock {
                Some(lock) => lock.turn(Arc::new(self.unlocked())).await,
                None => Ok(RefreshTurn::Uncoordinated),
            }
        })
    }
}

/// Runs file I/O on tokio's blocking pool, or inline without a runtime.
pub(crate) async fn blocking<T: Send + 'static>(
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

    let file_name = path.file_name().ok_or_else(|| {
        Error::new(
            ErrorKind::Store,
            format!("{} is not a file path", path.display()),
        )
    })?;
    let temp = path.with_file_name(temp::name(
        file_name,
        std::process::id(),
        NEXT_TEMP.fetch_add(1, Ordering::Relaxed),
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

/// Temporary files: their names, and the removal of those that a crashed
/// writer left behind.
///
/// A save writes `.{name}.tmp.{space}.{pid}.{n}` next to `{name}`, then
/// renames it over `{name}`: the temporary file lives only while one
/// writer's `write` + `fsync` + `rename` runs. A writer killed in between
/// leaves it behind, holding a token set. A load or save removes such a
/// file when it is sure no live writer still owns it:
///
/// - its writer process is gone: the file was made in this process's PID
///   namespace on this boot (`space`, a hash of the kernel's boot id and the
///   PID namespace, tells), by this user, by another process than this one,
///   and `/proc/{pid}` shows no such process (or a zombie). A PID is only
///   meaningful in its own namespace and boot, so files from another host
///   (a shared volume), container or boot are never judged by it; files of
///   another user are not either, since `/proc` may hide that user's
///   processes. A PID reused since the crash keeps the file, until:
/// - or it is older than [`STALE_AFTER`] (an hour): no live writer keeps a
///   temporary file for that long. This rule covers the other cases, and
///   every platform without `/proc`.
///
/// A removal that fails is left for the next operation; it never fails a
/// load or a save.
mod temp {
    use std::{
        ffi::{OsStr, OsString},
        fs::Metadata,
        io,
        path::Path,
        time::{Duration, SystemTime},
    };

    /// The age after which a temporary file is taken as abandoned, whoever
    /// wrote it.
    pub(super) const STALE_AFTER: Duration = Duration::from_secs(3600);

    /// The name of the temporary file for save `n` of process `pid`.
    pub(super) fn name(file_name: &OsStr, pid: u32, n: u64) -> OsString {
        let mut name = prefix(file_name);
        name.push(format!(
            "{:016x}.{pid}.{n}",
            this_process().map_or(0, |p| p.space)
        ));
        name
    }

    /// `.{name}.tmp.`: what every temporary file of `file_name` starts with.
    fn prefix(file_name: &OsStr) -> OsString {
        let mut prefix = OsString::from(".");
        prefix.push(file_name);
        prefix.push(".tmp.");
        prefix
    }

    /// What a temporary file's name says of its writer.
    #[derive(Debug, PartialEq, Eq)]
    struct Writer {
        space: u64,
        pid: u32,
    }

    /// Parses `{space}.{pid}.{n}` after the prefix; anything else is not a
    /// file of ours and is left alone.
    fn parse(entry: &OsStr, prefix: &OsStr) -> Option<Writer> {
        let rest = entry
            .as_encoded_bytes()
            .strip_prefix(prefix.as_encoded_bytes())?;
        let rest = std::str::from_utf8(rest).ok()?;
        let mut parts = rest.split('.');
        let (space, pid, n) = (parts.next()?, parts.next()?, parts.next()?);
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if parts.next().is_some()
            || space.len() != 16
            || !space.bytes().all(|b| b.is_ascii_hexdigit())
            || !digits(pid)
            || !digits(n)
        {
            return None;
        }
        Some(Writer {
            space: u64::from_str_radix(space, 16).ok()?,
            pid: pid.parse().ok()?,
        })
    }

    /// Removes the temporary files of `path` that no live writer owns (see
    /// the module docs). Returns how many it removed.
    pub(super) fn remove_stale(path: &Path) -> usize {
        let Some(file_name) = path.file_name() else {
            return 0;
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let prefix = prefix(file_name);
        let now = SystemTime::now();
        let mut removed = 0;
        // As long as the directory: each entry is looked at once.
        for entry in entries.flatten() {
            let Some(writer) = parse(&entry.file_name(), &prefix) else {
                continue;
            };
            // Not followed if it is a link: only our own regular files go.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if !meta.is_file() || !is_abandoned(&writer, &meta, now) {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::debug!(
                    path = %entry.path().display(),
                    error = %e,
                    "could not remove an abandoned temporary token file"
                ),
            }
        }
        if removed > 0 {
            tracing::debug!(
                path = %path.display(),
                removed,
                "removed temporary token files that a crashed writer left behind"
            );
        }
        removed
    }

    fn is_abandoned(writer: &Writer, meta: &Metadata, now: SystemTime) -> bool {
        let old = meta
            .modified()
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age >= STALE_AFTER);
        old || writer_is_gone(writer, meta)
    }

    /// This process, as its temporary files' names and owners show it.
    #[derive(Debug)]
    struct ThisProcess {
        /// A hash of the boot id and the PID namespace: PIDs in names with
        /// the same space mean the same processes as ours do.
        space: u64,
        /// The file system user id: the owner of the files it creates.
        uid: u32,
    }

    #[cfg(target_os = "linux")]
    fn this_process() -> Option<&'static ThisProcess> {
        static THIS: std::sync::OnceLock<Option<ThisProcess>> = std::sync::OnceLock::new();
        THIS.get_or_init(|| {
            let boot = std::fs::read("/proc/sys/kernel/random/boot_id").ok()?;
            let namespace = std::fs::read_link("/proc/self/ns/pid").ok()?;
            // `/proc` may be another PID namespace's mount; then its PIDs
            // are not ours to judge.
            let procfs_pid: u32 = std::fs::read_link("/proc/self")
                .ok()?
                .to_str()?
                .parse()
                .ok()?;
            if procfs_pid != std::process::id() {
                return None;
            }
            let status = std::fs::read_to_string("/proc/self/status").ok()?;
            // Uid: real, effective, saved, file system.
            let uid = status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))?
                .split_whitespace()
                .nth(3)?
                .parse()
                .ok()?;
            let space = fnv1a(&[
                boot.trim_ascii(),
                b"/",
                namespace.as_os_str().as_encoded_bytes(),
            ]);
            // 0 names "no space known" in file names.
            (space != 0).then_some(ThisProcess { space, uid })
        })
        .as_ref()
    }

    #[cfg(not(target_os = "linux"))]
    fn this_process() -> Option<&'static ThisProcess> {
        None
    }

    #[cfg(target_os = "linux")]
    fn writer_is_gone(writer: &Writer, meta: &Metadata) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        let Some(this) = this_process() else {
            return false;
        };
        writer.space == this.space
            && writer.pid != std::process::id()
            && meta.uid() == this.uid
            && !process_lives(writer.pid)
    }

    #[cfg(not(target_os = "linux"))]
    fn writer_is_gone(_: &Writer, _: &Metadata) -> bool {
        false
    }

    /// Whether `/proc` shows a process `pid` that is not a zombie. Anything
    /// unclear counts as alive.
    #[cfg(target_os = "linux")]
    fn process_lives(pid: u32) -> bool {
        match std::fs::read(format!("/proc/{pid}/stat")) {
            // `pid (comm) state …`; comm may itself hold ')'.
            Ok(stat) => {
                let state = stat
                    .iter()
                    .rposition(|&b| b == b')')
                    .and_then(|i| stat.get(i + 2));
                !matches!(state, Some(b'Z' | b'X'))
            }
            Err(e) => e.kind() != io::ErrorKind::NotFound,
        }
    }

    /// FNV-1a, 64 bits: stable across processes and builds, unlike std's
    /// hasher.
    #[cfg(target_os = "linux")]
    fn fnv1a(parts: &[&[u8]]) -> u64 {
        parts
            .iter()
            .flat_map(|part| part.iter())
            .fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
            })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn names_parse_back_and_foreign_names_do_not() {
            let prefix = prefix(OsStr::new("tokens.json"));
            let ours = name(OsStr::new("tokens.json"), 42, 7);
            assert_eq!(
                parse(&ours, &prefix),
                Some(Writer {
                    space: this_process().map_or(0, |p| p.space),
                    pid: 42
                })
            );
            for foreign in [
                ".tokens.json.tmp.",
                ".tokens.json.tmp.0123456789abcdef.42",
                ".tokens.json.tmp.0123456789abcdef.42.7.x",
                ".tokens.json.tmp.0123456789abcdeg.42.7",
                ".tokens.json.tmp.0123456789abcde.42.7",
                ".tokens.json.tmp.0123456789abcdef.-1.7",
                ".tokens.json.12.3.tmp",
                ".other.json.tmp.0123456789abcdef.42.7",
                "tokens.json",
            ] {
                assert_eq!(parse(OsStr::new(foreign), &prefix), None, "{foreign}");
            }
        }

        #[cfg(target_os = "linux")]
        #[test]
        fn this_process_lives_and_a_reaped_child_does_not() {
            assert!(process_lives(std::process::id()));
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            assert!(!process_lives(pid));
        }
    }
}
