//! Stable storage for what must survive a crash (terms, votes, decisions).
//!
//! A [`Storage`] is a small key-value store of byte strings. A `put` that has
//! returned is durable: [`FileStorage`] writes a temporary file, syncs it and
//! renames it over the old one, so a crash leaves either the old or the new
//! value, never a torn one. [`MemoryStorage`] is for tests and simulations
//! (the simulated network keeps one per node name across crash and restart).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::error::NodeError;

/// Durable key-value storage of byte strings.
pub trait Storage: Send + Sync + 'static {
    /// The value stored under `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, NodeError>;
    /// Store `value` under `key`; durable once this returns `Ok`.
    fn put(&self, key: &str, value: &[u8]) -> Result<(), NodeError>;
    /// Remove `key`.
    fn delete(&self, key: &str) -> Result<(), NodeError>;
}

/// In-memory storage, shared by clones (survives a simulated crash when the
/// simulation keeps the clone).
#[derive(Clone, Default, Debug)]
pub struct MemoryStorage {
    map: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Storage for MemoryStorage {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, NodeError> {
        Ok(self.map().get(key).cloned())
    }
    fn put(&self, key: &str, value: &[u8]) -> Result<(), NodeError> {
        self.map().insert(key.to_string(), value.to_vec());
        Ok(())
    }
    fn delete(&self, key: &str) -> Result<(), NodeError> {
        self.map().remove(key);
        Ok(())
    }
}

/// Storage in a directory, one file per key (keys must be valid names:
/// `[A-Za-z0-9._-]`).
#[derive(Clone, Debug)]
pub struct FileStorage {
    dir: PathBuf,
}

impl FileStorage {
    /// Use (and create) `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, NodeError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        Ok(Self { dir })
    }
    fn path(&self, key: &str) -> Result<PathBuf, NodeError> {
        crate::ids::validate_name(key)?;
        Ok(self.dir.join(key))
    }
}

fn io_err(path: &std::path::Path, e: std::io::Error) -> NodeError {
    NodeError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

impl Storage for FileStorage {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, NodeError> {
        let path = self.path(key)?;
        match std::fs::read(&path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }
    fn put(&self, key: &str, value: &[u8]) -> Result<(), NodeError> {
        let path = self.path(key)?;
        let tmp = self.dir.join(format!(".{key}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(value).map_err(|e| io_err(&tmp, e))?;
        f.sync_all().map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
    fn delete(&self, key: &str) -> Result<(), NodeError> {
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(s: &dyn Storage) {
        assert_eq!(s.get("term").unwrap(), None);
        s.put("term", b"7").unwrap();
        assert_eq!(s.get("term").unwrap().as_deref(), Some(&b"7"[..]));
        s.put("term", b"8").unwrap();
        assert_eq!(s.get("term").unwrap().as_deref(), Some(&b"8"[..]));
        s.delete("term").unwrap();
        assert_eq!(s.get("term").unwrap(), None);
    }

    #[test]
    fn memory_storage_works_and_clones_share() {
        let s = MemoryStorage::new();
        exercise(&s);
        let t = s.clone();
        s.put("k", b"v").unwrap();
        assert_eq!(t.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn file_storage_survives_reopen_and_rejects_bad_keys() {
        let dir = std::env::temp_dir().join(format!("troupe-fs-{}", uuid::Uuid::new_v4()));
        let s = FileStorage::open(&dir).unwrap();
        exercise(&s);
        s.put("vote", b"yes").unwrap();
        let again = FileStorage::open(&dir).unwrap();
        assert_eq!(again.get("vote").unwrap().as_deref(), Some(&b"yes"[..]));
        assert!(again.put("../escape", b"x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
