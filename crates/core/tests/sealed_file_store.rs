//! `FileStore::with_sealer`: nothing in clear on disk, a wrong key or an
//! altered file is a store error, and a session survives a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::PathBuf, time::Duration};

use tower_token_refresh_core::{
    Error, ErrorKind, FileStore, TokenManager, TokenSet, TokenSource, TokenStore,
    XChaCha20Poly1305Sealer, source,
};

const ACCESS: &str = "access-7f3a9c-SECRET";
const REFRESH: &str = "refresh-91bc04-SECRET";
const KEY: [u8; 32] = [0x42; 32];
const OTHER_KEY: [u8; 32] = [0x43; 32];

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("ttr-sealed-file-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sample() -> TokenSet {
    TokenSet::bearer(ACCESS)
        .with_refresh_token(REFRESH)
        .with_scope("read")
        .with_expires_in(Duration::from_secs(300))
}

fn sealed(path: &PathBuf, key: &[u8; 32]) -> FileStore {
    FileStore::new(path).with_sealer(XChaCha20Poly1305Sealer::new(1, key))
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_sealed_file_holds_no_token_bytes_and_loads_back() {
    let dir = TempDir::new("clear");
    let path = dir.path("tokens.json");
    let store = sealed(&path, &KEY);
    store.save(&sample()).await.unwrap();

    let on_disk = std::fs::read(&path).unwrap();
    for secret in [ACCESS, REFRESH, "7f3a9c", "91bc04", "refresh_token", "read"] {
        assert!(!contains(&on_disk, secret), "{secret} is on disk");
    }
    assert!(on_disk.starts_with(b"ttr-sealed/1\n"));

    let loaded = store.load().await.unwrap().unwrap();
    assert_eq!(loaded.access_token().secret(), ACCESS);
    assert_eq!(loaded.refresh_token().unwrap().secret(), REFRESH);
    assert_eq!(loaded.scope(), Some("read"));
}

#[tokio::test]
async fn a_wrong_key_is_a_store_error_not_an_empty_store() {
    let dir = TempDir::new("wrong-key");
    let path = dir.path("tokens.json");
    sealed(&path, &KEY).save(&sample()).await.unwrap();
    let before = std::fs::read(&path).unwrap();

    let err = sealed(&path, &OTHER_KEY).load().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store, "{err}");
    assert!(err.to_string().contains("tokens.json"), "{err}");
    assert!(err.to_string().contains("failed authentication"), "{err}");
    // A key id the sealer does not have says so.
    let rotated_away = FileStore::new(&path).with_sealer(XChaCha20Poly1305Sealer::new(2, &KEY));
    let err = rotated_away.load().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store);
    assert!(err.to_string().contains("key 1"), "{err}");

    // A manager reports it instead of starting without a session.
    let tokens = TokenManager::builder(never())
        .store(sealed(&path, &OTHER_KEY))
        .build();
    assert_eq!(tokens.load().await.unwrap_err().kind(), ErrorKind::Store);
    assert!(tokens.current().is_none());
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[tokio::test]
async fn an_altered_sealed_file_is_a_store_error() {
    let dir = TempDir::new("tamper");
    let path = dir.path("tokens.json");
    let store = sealed(&path, &KEY);
    store.save(&sample()).await.unwrap();
    let good = std::fs::read(&path).unwrap();

    // Every byte of the magic, the envelope header, the nonce, the
    // ciphertext and the tag is covered.
    for i in 0..good.len() {
        let mut altered = good.clone();
        altered[i] ^= 0x01;
        std::fs::write(&path, &altered).unwrap();
        let err = store.load().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Store, "byte {i}: {err}");
    }
    for cut in [0, 5, good.len() / 2, good.len() - 1] {
        std::fs::write(&path, &good[..cut]).unwrap();
        assert_eq!(store.load().await.unwrap_err().kind(), ErrorKind::Store);
    }
    let mut longer = good.clone();
    longer.push(0);
    std::fs::write(&path, &longer).unwrap();
    assert_eq!(store.load().await.unwrap_err().kind(), ErrorKind::Store);

    std::fs::write(&path, &good).unwrap();
    assert!(store.load().await.unwrap().is_some());
}

#[tokio::test]
async fn a_sealed_file_moved_to_another_store_does_not_open() {
    let dir = TempDir::new("moved");
    let (a, b) = (dir.path("orders.json"), dir.path("billing.json"));
    sealed(&a, &KEY).save(&sample()).await.unwrap();
    sealed(&b, &KEY)
        .save(&TokenSet::bearer("billing"))
        .await
        .unwrap();
    // Someone swaps the files: same key, other store.
    std::fs::copy(&a, &b).unwrap();
    let err = sealed(&b, &KEY).load().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store, "{err}");

    // The name binds, not the directory: the directory may move.
    let elsewhere = TempDir::new("moved-dir");
    std::fs::copy(&a, elsewhere.path("orders.json")).unwrap();
    let loaded = sealed(&elsewhere.path("orders.json"), &KEY)
        .load()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.refresh_token().unwrap().secret(), REFRESH);
}

#[tokio::test]
async fn plain_and_sealed_files_do_not_pass_for_each_other_and_a_plain_one_migrates() {
    let dir = TempDir::new("migrate");
    let path = dir.path("tokens.json");
    let plain = FileStore::new(&path);
    let sealed = sealed(&path, &KEY);

    plain.save(&sample()).await.unwrap();
    let err = sealed.load().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store);
    assert!(err.to_string().contains("not sealed"), "{err}");

    // Migration: read plain, write sealed.
    let tokens = plain.load().await.unwrap().unwrap();
    sealed.save(&tokens).await.unwrap();
    assert!(!contains(&std::fs::read(&path).unwrap(), REFRESH));

    let err = plain.load().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store);
    assert!(err.to_string().contains("is sealed"), "{err}");
    assert_eq!(
        sealed
            .load()
            .await
            .unwrap()
            .unwrap()
            .refresh_token()
            .unwrap()
            .secret(),
        REFRESH
    );
}

#[tokio::test]
async fn a_rotated_key_opens_the_old_file_and_the_next_save_reseals() {
    let dir = TempDir::new("rotate");
    let path = dir.path("tokens.json");
    sealed(&path, &KEY).save(&sample()).await.unwrap();

    let rotated = FileStore::new(&path)
        .with_sealer(XChaCha20Poly1305Sealer::new(2, &OTHER_KEY).with_previous_key(1, &KEY));
    let tokens = rotated.load().await.unwrap().unwrap();
    rotated.save(&tokens).await.unwrap();
    // Key 1 is retired: only key 2 opens the file now.
    assert_eq!(
        sealed(&path, &KEY).load().await.unwrap_err().kind(),
        ErrorKind::Store
    );
    let only_new = FileStore::new(&path).with_sealer(XChaCha20Poly1305Sealer::new(2, &OTHER_KEY));
    assert!(only_new.load().await.unwrap().is_some());
}

fn never() -> impl TokenSource {
    source::from_fn(|_| async { Err(Error::transient("this test does not refresh")) })
}

#[tokio::test]
async fn a_manager_on_a_sealed_file_survives_a_restart() {
    let dir = TempDir::new("restart");
    let path = dir.path("tokens.json");
    let first = TokenManager::builder(never())
        .store(sealed(&path, &KEY))
        .build();
    first.set(sample()).await.unwrap();
    drop(first);
    assert!(!contains(&std::fs::read(&path).unwrap(), ACCESS));

    // "Restart": a new manager, a new sealer from the same key.
    let second = TokenManager::builder(never())
        .store(sealed(&path, &KEY))
        .build();
    assert!(second.current().is_none());
    assert!(second.load().await.unwrap());
    let auth = second.authorization().await.unwrap();
    assert_eq!(auth.header().to_str().unwrap(), format!("Bearer {ACCESS}"));
    let current = second.current().unwrap();
    assert_eq!(current.refresh_token().unwrap().secret(), REFRESH);
}

#[tokio::test]
async fn a_refresh_saves_the_new_set_sealed() {
    let dir = TempDir::new("refresh");
    let path = dir.path("tokens.json");
    let tokens = TokenManager::builder(source::from_fn(|_| async {
        Ok(TokenSet::bearer("access-after-refresh")
            .with_refresh_token("refresh-after-refresh")
            .with_expires_in(Duration::from_secs(300)))
    }))
    .store(sealed(&path, &KEY))
    .build();
    tokens
        .set(TokenSet::bearer("old").with_refresh_token("old-refresh"))
        .await
        .unwrap();
    tokens.refresh().await.unwrap();

    let on_disk = std::fs::read(&path).unwrap();
    assert!(!contains(&on_disk, "after-refresh"));
    let stored = sealed(&path, &KEY).load().await.unwrap().unwrap();
    assert_eq!(
        stored.refresh_token().unwrap().secret(),
        "refresh-after-refresh"
    );
}
