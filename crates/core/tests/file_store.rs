//! `FileStore`: atomic, private, and loud about corruption; its lock and the
//! manager's own writes (`set`, `clear`, `end_session`) during a refresh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::sync::Notify;
use tower_token_refresh_core::{
    ErrorKind, FileStore, LockedStore, MemoryStore, RefreshLease, RefreshTurn, TokenManager,
    TokenSet, TokenStore, source,
};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        // Under target/: a real disk, where fsync takes real time.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "ttr-file-store-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    /// The temporary files of `tokens.json`.
    fn temp_files(&self) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter(|name| name.starts_with(".tokens.json.tmp."))
            .collect()
    }

    /// The directory's files, but for the refresh lock files (`.{name}.lock`),
    /// which stay by design.
    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| !(name.starts_with('.') && name.ends_with(".lock")))
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sample() -> TokenSet {
    TokenSet::bearer("acc-1")
        .with_refresh_token("ref-1")
        .with_scope("read")
        .with_expires_in(Duration::from_secs(300))
}

#[tokio::test]
async fn a_missing_file_is_an_empty_store() {
    let dir = TempDir::new("missing");
    let store = FileStore::new(dir.path("tokens.json"));
    assert!(store.load().await.unwrap().is_none());
    // Clearing what is not there is fine too.
    store.clear().await.unwrap();
}

#[tokio::test]
async fn saved_tokens_load_back_and_no_temp_file_is_left() {
    let dir = TempDir::new("roundtrip");
    let store = FileStore::new(dir.path("tokens.json"));
    store.save(&sample()).await.unwrap();
    store
        .save(&sample().with_refresh_token("ref-2"))
        .await
        .unwrap();
    let loaded = store.load().await.unwrap().unwrap();
    assert_eq!(loaded.access_token().secret(), "acc-1");
    assert_eq!(loaded.refresh_token().unwrap().secret(), "ref-2");
    assert_eq!(loaded.scope(), Some("read"));
    assert!(loaded.expires_at().is_some());
    assert_eq!(dir.entries(), ["tokens.json"]);
    // A new store on the same file (a restart) sees the same set.
    let again = FileStore::new(dir.path("tokens.json"))
        .load()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.refresh_token(), loaded.refresh_token());
    assert_eq!(again.access_token(), loaded.access_token());
}

#[cfg(unix)]
#[tokio::test]
async fn the_file_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("mode");
    let path = dir.path("tokens.json");
    FileStore::new(&path).save(&sample()).await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
}

#[tokio::test]
async fn a_corrupt_file_is_a_store_error_and_stays_as_it_was() {
    let dir = TempDir::new("corrupt");
    let path = dir.path("tokens.json");
    for junk in [
        &b"{\"version\":1,\"access_tok"[..],
        b"\x00\xff garbage",
        b"",
    ] {
        std::fs::write(&path, junk).unwrap();
        let err = FileStore::new(&path).load().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Store, "{err}");
        assert!(err.to_string().contains("tokens.json"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), junk);
    }
}

#[tokio::test]
async fn an_unreadable_path_is_a_store_error() {
    let dir = TempDir::new("unreadable");
    // A directory where the file should be: reading it fails, not "missing".
    std::fs::create_dir(dir.path("tokens.json")).unwrap();
    let store = FileStore::new(dir.path("tokens.json"));
    assert_eq!(store.load().await.unwrap_err().kind(), ErrorKind::Store);
    assert_eq!(
        store.save(&sample()).await.unwrap_err().kind(),
        ErrorKind::Store
    );
    // The failed save left no temp file behind.
    assert_eq!(dir.entries(), ["tokens.json"]);
    // Saving into a directory that does not exist fails the same way.
    let nowhere = FileStore::new(dir.path("no/such/dir/tokens.json"));
    assert_eq!(
        nowhere.save(&sample()).await.unwrap_err().kind(),
        ErrorKind::Store
    );
}

#[tokio::test]
async fn clear_removes_the_file() {
    let dir = TempDir::new("clear");
    let store = FileStore::new(dir.path("tokens.json"));
    store.save(&sample()).await.unwrap();
    store.clear().await.unwrap();
    assert!(dir.entries().is_empty());
    assert!(store.load().await.unwrap().is_none());
}

fn never() -> impl tower_token_refresh_core::TokenSource {
    source::from_fn(|_| async {
        Err(tower_token_refresh_core::Error::transient(
            "this test does not refresh",
        ))
    })
}

#[tokio::test]
async fn a_manager_saves_to_the_file_and_a_new_one_loads_it() {
    let dir = TempDir::new("manager");
    let path = dir.path("tokens.json");
    let first = TokenManager::builder(never())
        .store(FileStore::new(&path))
        .build();
    first.set(sample()).await.unwrap();

    // "Restart": a new manager on the same file, nothing in memory.
    let second = TokenManager::builder(never())
        .store(FileStore::new(&path))
        .build();
    assert!(second.current().is_none());
    assert!(second.load().await.unwrap());
    let auth = second.authorization().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer acc-1");

    // A logout leaves a tombstone holding neither token.
    second.end_session().await.unwrap();
    let on_disk = std::fs::read_to_string(&path).unwrap();
    assert!(!on_disk.contains("acc-1") && !on_disk.contains("ref-1"));
    assert!(on_disk.contains("\"ended\""));
}

#[tokio::test]
async fn a_manager_reports_a_corrupt_file_instead_of_starting_empty() {
    let dir = TempDir::new("manager-corrupt");
    let path = dir.path("tokens.json");
    std::fs::write(&path, b"not json").unwrap();
    let tokens = TokenManager::builder(never())
        .store(FileStore::new(&path))
        .build();
    let err = tokens.load().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store);
    assert_eq!(std::fs::read(&path).unwrap(), b"not json");
}

#[tokio::test]
async fn the_refresh_lock_file_sits_beside_the_session_file_owner_only() {
    let dir = TempDir::new("lockfile");
    let store = FileStore::new(dir.path("tokens.json"));
    assert_eq!(
        store.lock_path(),
        Some(dir.path(".tokens.json.lock").as_path())
    );
    store.save(&sample()).await.unwrap();
    let meta = std::fs::metadata(dir.path(".tokens.json.lock")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let _ = meta;
    assert_eq!(
        FileStore::new(dir.path("t.json"))
            .without_lock()
            .lock_path(),
        None
    );
}

// --- Writers killed mid-save -------------------------------------------

/// Set for the writer child process: the path of its file.
const WRITER_ENV: &str = "TTR_FILE_STORE_TEST_WRITER";
/// The line the writer prints once its first save is done.
const WRITER_SAVING: &str = "ttr-writer: saving";

/// Set `n`: access and refresh token carry the same number, so a set made
/// of two saves' halves would show.
fn numbered(n: u64) -> TokenSet {
    TokenSet::bearer(format!("acc-{n}"))
        .with_refresh_token(format!("ref-{n}"))
        .with_scope(format!("scope-{n}"))
        .with_expires_in(Duration::from_secs(300))
}

/// The number of a [`numbered`] set, checking that all of it has it.
fn number_of(tokens: &TokenSet) -> u64 {
    let n: u64 = tokens
        .access_token()
        .secret()
        .strip_prefix("acc-")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(tokens.refresh_token().unwrap().secret(), format!("ref-{n}"));
    assert_eq!(tokens.scope(), Some(format!("scope-{n}").as_str()));
    n
}

/// Not a test of its own: the writer that the kill and stop tests start as
/// a child process (this test binary run again). It saves numbered sets in
/// a loop, each one more than the file held, until it is killed. Run
/// without the environment it needs, it does nothing.
#[tokio::test]
#[ignore = "a child process of the killed- and stopped-writer tests"]
async fn writer_child_process() {
    let Ok(path) = std::env::var(WRITER_ENV) else {
        return;
    };
    let store = FileStore::new(&path);
    let mut n = store.load().await.unwrap().map_or(0, |t| number_of(&t) + 1);
    // The parent kills it long before; a bound in case it died.
    for i in 0..20_000 {
        if let Err(e) = store.save(&numbered(n)).await {
            // The stopped-writer test watches for this exit.
            eprintln!("save failed: {e}");
            std::process::exit(3);
        }
        if i == 0 {
            println!("{WRITER_SAVING}");
        }
        n += 1;
    }
}

/// A writer child process, killed when dropped.
struct Writer(std::process::Child);

impl Writer {
    /// Starts a writer on `path` and waits until it has saved once.
    fn start(path: &Path) -> Writer {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["writer_child_process", "--exact", "--ignored"])
            .args(["--nocapture", "--test-threads=1"])
            .env(WRITER_ENV, path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let saving = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            // libtest's "test writer_child_process ... " comes first.
            .any(|line| line.ends_with(WRITER_SAVING));
        assert!(saving, "the writer ended before it saved");
        Writer(child)
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }

    /// SIGKILL, and reaped.
    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A moment in the writer's loop that differs from round to round.
fn pause(round: u32) {
    std::thread::sleep(Duration::from_micros(u64::from(round % 7) * 700));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// A writer is killed with SIGKILL mid-save, 50 times. Each time the next
/// load finds a whole set, the last one saved or a later one, and no
/// temporary file is left afterwards (on a store without the clean-up,
/// almost every kill leaves one: the writer spends most of a save in
/// `fsync` of its temporary file).
#[cfg(unix)]
#[test]
fn a_writer_killed_mid_save_leaves_a_whole_set_and_no_temp_file() {
    let dir = TempDir::new("killed");
    let path = dir.path("tokens.json");
    let rt = runtime();
    let store = FileStore::new(&path);
    let mut last = 0;
    let mut left_behind = 0;
    for round in 0..50 {
        let writer = Writer::start(&path);
        pause(round);
        writer.kill();
        if !dir.temp_files().is_empty() {
            left_behind += 1;
        }
        let loaded = rt.block_on(store.load()).unwrap().expect("a set was saved");
        let n = number_of(&loaded);
        assert!(n >= last, "round {round}: set {n} after set {last}");
        last = n;
        assert_eq!(dir.entries(), ["tokens.json"], "round {round}");
    }
    // Otherwise no kill landed mid-save and the test proved nothing.
    assert!(left_behind > 0, "no kill left a temporary file");
    // A save cleans up as well as a load.
    let mut saved_over = 0;
    for round in 0..20 {
        let writer = Writer::start(&path);
        pause(round);
        writer.kill();
        if dir.temp_files().is_empty() {
            continue;
        }
        rt.block_on(store.save(&numbered(last + 1000))).unwrap();
        assert_eq!(dir.entries(), ["tokens.json"], "save round {round}");
        last = number_of(&rt.block_on(store.load()).unwrap().unwrap());
        saved_over += 1;
    }
    assert!(saved_over > 0, "no kill left a temporary file for a save");
    eprintln!(
        "kills that left a temporary file: {left_behind}/50 before a load, {saved_over}/20 before a save"
    );
}

/// A writer stopped (SIGSTOP) mid-save is alive: a load by another process
/// must leave its temporary file alone, and when it goes on (SIGCONT) its
/// save completes. Checked 20 times; at least one stop must land mid-save.
#[cfg(target_os = "linux")]
#[test]
fn a_live_writer_keeps_its_temp_file() {
    let dir = TempDir::new("stopped");
    let path = dir.path("tokens.json");
    let rt = runtime();
    let store = FileStore::new(&path);
    let signal = |sig: &str, writer: &Writer| {
        let status = std::process::Command::new("kill")
            .args([sig, &writer.pid()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let mut caught = 0;
    for round in 0..20 {
        let mut writer = Writer::start(&path);
        pause(round);
        signal("-STOP", &writer);
        // A signal is delivered a moment later: wait until it is stopped.
        let stopped = (0..2000).any(|_| {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", writer.pid())).unwrap();
            let state = stat.rsplit_once(')').unwrap().1.trim_start().chars().next();
            state == Some('T') || {
                std::thread::sleep(Duration::from_millis(1));
                false
            }
        });
        assert!(stopped, "round {round}: the writer did not stop");
        let before = dir.temp_files();
        let loaded = rt.block_on(store.load()).unwrap().expect("a set was saved");
        number_of(&loaded);
        assert_eq!(
            dir.temp_files(),
            before,
            "round {round}: a live writer's file went"
        );
        if !before.is_empty() {
            caught += 1;
        }
        signal("-CONT", &writer);
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            writer.0.try_wait().unwrap().is_none(),
            "round {round}: the writer's save failed after the load"
        );
        writer.kill();
    }
    assert!(caught > 0, "no stop landed mid-save");
}

/// Temporary files of writers this process cannot judge (another host or
/// PID namespace: another `space` in the name) go only once they are an
/// hour old; files that are not a store's temporary files never go.
#[tokio::test]
async fn foreign_temp_files_go_when_an_hour_old_and_other_files_never() {
    let dir = TempDir::new("foreign");
    let make = |name: &str, age: Duration| {
        let file = std::fs::File::create(dir.path(name)).unwrap();
        file.set_modified(std::time::SystemTime::now() - age)
            .unwrap();
    };
    let hour = Duration::from_secs(3600);
    make(
        ".tokens.json.tmp.00000000000000aa.1.0",
        hour + Duration::from_secs(5),
    );
    make(
        ".tokens.json.tmp.00000000000000bb.1.0",
        hour - Duration::from_secs(60),
    );
    make(".tokens.json.tmp.not-ours", hour * 2);
    make(".other.json.tmp.00000000000000aa.1.0", hour * 2);
    make("notes.txt", hour * 2);
    let store = FileStore::new(dir.path("tokens.json"));
    assert!(store.load().await.unwrap().is_none());
    assert_eq!(
        dir.entries(),
        [
            ".other.json.tmp.00000000000000aa.1.0",
            ".tokens.json.tmp.00000000000000bb.1.0",
            ".tokens.json.tmp.not-ours",
            "notes.txt"
        ]
    );
}

// --- Writes while this manager's own refresh holds the lock -------------
//
// The refresh holds the store's lock from before its token request until
// its answer is saved; `set`, `clear` and `end_session` called meanwhile
// must neither wait for that lock while holding what the refresh needs to
// save its answer, nor wait out the token request itself.

/// A source whose token request waits for `gate` (with the refresh lock
/// held, its "presented" mark saved), and says when it started.
fn gated() -> (
    impl tower_token_refresh_core::TokenSource,
    Arc<Notify>,
    Arc<Notify>,
) {
    let (entered, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (e, g) = (Arc::clone(&entered), Arc::clone(&gate));
    let source = source::from_fn(move |_| {
        let (e, g) = (Arc::clone(&e), Arc::clone(&g));
        async move {
            e.notify_one();
            g.notified().await;
            Ok(TokenSet::bearer("acc-refreshed")
                .with_refresh_token("ref-refreshed")
                .with_expires_in(Duration::from_secs(300)))
        }
    });
    (source, entered, gate)
}

/// A manager over `store` whose refresh is in flight, waiting for the gate.
async fn refreshing(
    store: impl TokenStore,
) -> (
    TokenManager,
    tokio::task::JoinHandle<
        Result<tower_token_refresh_core::Authorization, tower_token_refresh_core::Error>,
    >,
    Arc<Notify>,
) {
    let (source, entered, gate) = gated();
    let tokens = TokenManager::builder(source)
        .store(store)
        // Short, so that a write stuck behind the lock fails fast on a
        // regression instead of hanging the suite.
        .attempt_timeout(Duration::from_secs(2))
        .build();
    tokens.set(sample()).await.unwrap();
    let refresh = tokio::spawn(tokens.refresh());
    entered.notified().await;
    (tokens, refresh, gate)
}

fn login() -> TokenSet {
    TokenSet::bearer("acc-login")
        .with_refresh_token("ref-login")
        .with_expires_in(Duration::from_secs(600))
}

#[tokio::test]
async fn set_during_this_managers_refresh_is_saved_without_waiting_for_it() {
    let dir = TempDir::new("set-during-refresh");
    let path = dir.path("tokens.json");
    let (tokens, refresh, gate) = refreshing(FileStore::new(&path)).await;

    // The token request is still pending: the set must not wait for it.
    tokens.set(login()).await.unwrap();
    gate.notify_one();
    let _ = refresh.await.unwrap();

    let auth = tokens.authorization().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer acc-login");
    let stored = FileStore::new(&path).load().await.unwrap().unwrap();
    assert_eq!(stored.access_token().secret(), "acc-login");
    assert_eq!(stored.refresh_token().unwrap().secret(), "ref-login");
}

#[tokio::test]
async fn clear_during_this_managers_refresh_empties_the_file() {
    let dir = TempDir::new("clear-during-refresh");
    let path = dir.path("tokens.json");
    let (tokens, refresh, gate) = refreshing(FileStore::new(&path)).await;

    tokens.clear().await.unwrap();
    gate.notify_one();
    let _ = refresh.await.unwrap();

    assert!(tokens.current().is_none());
    assert!(FileStore::new(&path).load().await.unwrap().is_none());
}

#[tokio::test]
async fn end_session_during_this_managers_refresh_leaves_its_tombstone() {
    let dir = TempDir::new("end-during-refresh");
    let path = dir.path("tokens.json");
    let (tokens, refresh, gate) = refreshing(FileStore::new(&path)).await;

    tokens.end_session().await.unwrap();
    gate.notify_one();
    let _ = refresh.await.unwrap();

    assert!(tokens.is_session_expired());
    let stored = FileStore::new(&path).load().await.unwrap().unwrap();
    assert!(stored.ended().is_some());
    // The refresh's answer came after the logout: neither it nor the
    // logged-out tokens are kept.
    let on_disk = std::fs::read_to_string(&path).unwrap();
    assert!(!on_disk.contains("refreshed") && !on_disk.contains("ref-1"));
}

#[tokio::test]
async fn set_during_this_managers_refresh_through_a_locked_store() {
    let dir = TempDir::new("locked-set-during-refresh");
    let inner = Arc::new(MemoryStore::new());
    let (tokens, refresh, gate) = refreshing(LockedStore::new(
        Arc::clone(&inner),
        dir.path("tokens.lock"),
    ))
    .await;

    tokens.set(login()).await.unwrap();
    gate.notify_one();
    let _ = refresh.await.unwrap();

    let auth = tokens.authorization().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer acc-login");
    let stored = inner.load().await.unwrap().unwrap();
    assert_eq!(stored.access_token().secret(), "acc-login");
}

#[tokio::test]
async fn set_pending_when_the_refresh_answer_arrives_is_saved() {
    let dir = TempDir::new("set-while-answer-arrives");
    let path = dir.path("tokens.json");
    let (tokens, refresh, gate) = refreshing(FileStore::new(&path)).await;

    // The answer arrives while the set is under way: the refresh needs to
    // save it under its lock while the set wants to save too.
    let set = tokio::spawn({
        let tokens = tokens.clone();
        async move { tokens.set(login()).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.notify_one();
    set.await.unwrap().unwrap();
    let _ = refresh.await.unwrap();

    let auth = tokens.authorization().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer acc-login");
    let stored = FileStore::new(&path).load().await.unwrap().unwrap();
    assert_eq!(stored.access_token().secret(), "acc-login");
}

// --- Writes while another process's refresh holds the lock --------------

/// Another process's refresh: a second handle on the file takes its lock.
async fn other_processs_lock(path: &Path) -> Box<dyn RefreshLease> {
    loop {
        match FileStore::new(path).begin_refresh().await.unwrap() {
            RefreshTurn::Leader(lease) => return lease,
            // A process another test spawns holds a copy of a lock file's
            // descriptor until it runs its program: wait for it.
            RefreshTurn::Follower(free) => free.await.unwrap(),
            RefreshTurn::Uncoordinated => panic!("a FileStore has a lock"),
        }
    }
}

fn manager_over(path: &Path, attempt_timeout: Duration) -> TokenManager {
    TokenManager::builder(never())
        .store(FileStore::new(path))
        .attempt_timeout(attempt_timeout)
        .build()
}

#[tokio::test]
async fn set_waits_for_another_processs_refresh_then_saves() {
    let dir = TempDir::new("set-after-other-refresh");
    let path = dir.path("tokens.json");
    let other = other_processs_lock(&path).await;
    let tokens = manager_over(&path, Duration::from_secs(5));

    let set = tokio::spawn({
        let tokens = tokens.clone();
        async move { tokens.set(login()).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !set.is_finished(),
        "the set went ahead of the other refresh"
    );
    other.commit(&sample()).await.unwrap();
    other.release().await.unwrap();
    set.await.unwrap().unwrap();

    // The set came after the other process's answer, and stands.
    let stored = FileStore::new(&path).load().await.unwrap().unwrap();
    assert_eq!(stored.access_token().secret(), "acc-login");
}

#[tokio::test]
async fn set_behind_a_lock_held_too_long_is_in_use_and_reported() {
    let dir = TempDir::new("set-lock-held-too-long");
    let path = dir.path("tokens.json");
    FileStore::new(&path).save(&sample()).await.unwrap();
    let other = other_processs_lock(&path).await;
    let tokens = manager_over(&path, Duration::from_millis(300));

    let err = tokens.set(login()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store, "{err}");
    let auth = tokens.authorization().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), "Bearer acc-login");
    // Nothing was written without the lock.
    let stored = FileStore::new(&path).load().await.unwrap().unwrap();
    assert_eq!(stored.access_token().secret(), "acc-1");
    other.release().await.unwrap();
}
