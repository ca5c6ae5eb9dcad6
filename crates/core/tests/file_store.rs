//! `FileStore`: atomic, private, and loud about corruption.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tower_token_refresh_core::{ErrorKind, FileStore, TokenManager, TokenSet, TokenStore, source};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
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

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
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

    second.end_session().await.unwrap();
    assert!(!path_exists(&path));
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

fn path_exists(path: &Path) -> bool {
    std::fs::metadata(path).is_ok()
}
