//! SHA-256 of model and LoRA files (and of folders, file by file), cached by (path, size, mtime) in the
//! run folder so that multi-gigabyte checkpoints are hashed once.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{HarnessError, HarnessResult};
use super::hash::{hex, json_sha256};
use crate::latent_io::write_atomic;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    size: u64,
    mtime_ns: u128,
    sha256: String,
}

/// A cache of file hashes, stored as JSON.
#[derive(Debug)]
pub struct FileHasher {
    path: Option<PathBuf>,
    entries: BTreeMap<String, Entry>,
    dirty: bool,
}

impl FileHasher {
    /// A cache kept in `path` (read if it exists; an unreadable cache is ignored and rewritten).
    pub fn with_cache(path: &Path) -> Self {
        let entries = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            path: Some(path.to_path_buf()),
            entries,
            dirty: false,
        }
    }

    /// A cache in memory only.
    pub fn in_memory() -> Self {
        Self {
            path: None,
            entries: BTreeMap::new(),
            dirty: false,
        }
    }

    /// SHA-256 of a file, or of a folder: the hash of the sorted list of (relative path, file hash) of every
    /// file below it (hidden files skipped).
    pub fn hash(&mut self, path: &Path) -> HarnessResult<String> {
        if path.is_dir() {
            let files = crate::files::files_below(path)?;
            let mut list = Vec::new();
            for rel in files {
                let h = self.hash_file(&path.join(&rel))?;
                list.push((rel.to_string_lossy().replace('\\', "/"), h));
            }
            Ok(json_sha256(&list))
        } else {
            self.hash_file(path)
        }
    }

    fn hash_file(&mut self, path: &Path) -> HarnessResult<String> {
        let meta = std::fs::metadata(path).map_err(|e| HarnessError::io(path, e))?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let key = std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .to_string_lossy()
            .into_owned();
        if let Some(e) = self.entries.get(&key) {
            if e.size == meta.len() && e.mtime_ns == mtime_ns {
                return Ok(e.sha256.clone());
            }
        }
        let mut f = std::fs::File::open(path).map_err(|e| HarnessError::io(path, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| HarnessError::io(path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let sha256 = hex(&hasher.finalize());
        self.entries.insert(
            key,
            Entry {
                size: meta.len(),
                mtime_ns,
                sha256: sha256.clone(),
            },
        );
        self.dirty = true;
        Ok(sha256)
    }

    /// Writes the cache back (if it changed).
    pub fn save(&mut self) -> HarnessResult<()> {
        if let (Some(p), true) = (&self.path, self.dirty) {
            let bytes = serde_json::to_vec_pretty(&self.entries).expect("plain data");
            write_atomic(p, &bytes)?;
            self.dirty = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_folder_hashes_follow_content() {
        let dir = std::env::temp_dir().join(format!("clora-filehash-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.bin"), b"abc").unwrap();
        std::fs::write(dir.join("sub/b.bin"), b"xyz").unwrap();
        let mut h = FileHasher::with_cache(&dir.join(".cache.json"));
        assert_eq!(
            h.hash(&dir.join("a.bin")).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let d1 = h.hash(&dir).unwrap();
        h.save().unwrap();
        let mut h2 = FileHasher::with_cache(&dir.join(".cache.json"));
        assert_eq!(h2.hash(&dir).unwrap(), d1);
        std::fs::write(dir.join("sub/b.bin"), b"xyzw").unwrap();
        assert_ne!(h2.hash(&dir).unwrap(), d1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
