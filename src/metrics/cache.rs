//! The embedding cache: an image's embedding under one model is computed once per run (memory) and, with a
//! cache directory, once ever (disk).
//!
//! Key: (model digest, sha256 of the image file's bytes), so a renamed or copied image hits, an edited one
//! misses, and two models never share entries. On disk: `<dir>/embeddings/<model digest[..16]>/<image sha256>.
//! safetensors` holding one f32 tensor `embedding` and the model id in the metadata; files are written to a
//! temporary name and renamed, so a killed run never leaves a partial entry. An unreadable entry counts as a miss
//! and is rewritten.
//!
//! The same directory memoises model digests (`model-digests.json`, keyed by the folder and each file's size
//! and modification time) so a multi-GB checkpoint is hashed once, not on every run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use safetensors::tensor::Dtype;

use super::image_io::hex;
use super::model_folder::ModelFolder;
use crate::error::{Error, Result};
use crate::latent_io::{write_atomic, write_f32_safetensors};

/// Where the embeddings came from, counted per lookup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub memory_hits: usize,
    pub disk_hits: usize,
    pub computed: usize,
    /// Disk entries that could not be read (then recomputed and rewritten).
    pub disk_errors: usize,
}

type Key = (String, [u8; 32]);

/// Memory + optional disk cache of embeddings.
#[derive(Debug)]
pub struct EmbeddingCache {
    dir: Option<PathBuf>,
    memory: Mutex<HashMap<Key, Arc<Vec<f32>>>>,
    stats: Mutex<CacheStats>,
}

impl EmbeddingCache {
    /// A cache in memory, and on disk under `dir` when given (created if missing).
    pub fn new(dir: Option<&Path>) -> Result<Self> {
        if let Some(d) = dir {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        Ok(Self {
            dir: dir.map(Path::to_path_buf),
            memory: Mutex::new(HashMap::new()),
            stats: Mutex::new(CacheStats::default()),
        })
    }

    pub fn stats(&self) -> CacheStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry_path(&self, digest: &str, image: &[u8; 32]) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| {
            d.join("embeddings")
                .join(&digest[..16.min(digest.len())])
                .join(format!("{}.safetensors", hex(image)))
        })
    }

    /// The cached embedding of an image under a model, if any (memory first, then disk).
    pub fn get(&self, digest: &str, image: &[u8; 32]) -> Option<Arc<Vec<f32>>> {
        let key = (digest.to_string(), *image);
        if let Some(v) = self
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            self.stats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .memory_hits += 1;
            return Some(v.clone());
        }
        let path = self.entry_path(digest, image)?;
        if !path.is_file() {
            return None;
        }
        match read_entry(&path) {
            Some(v) => {
                let v = Arc::new(v);
                self.memory
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, v.clone());
                self.stats
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .disk_hits += 1;
                Some(v)
            }
            None => {
                self.stats
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .disk_errors += 1;
                None
            }
        }
    }

    /// Stores a freshly computed embedding (memory, and disk when the cache has a directory).
    pub fn put(
        &self,
        digest: &str,
        model_id: &str,
        image: &[u8; 32],
        embedding: Vec<f32>,
    ) -> Result<Arc<Vec<f32>>> {
        let v = Arc::new(embedding);
        if let Some(path) = self.entry_path(digest, image) {
            write_entry(&path, model_id, &v)?;
        }
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((digest.to_string(), *image), v.clone());
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .computed += 1;
        Ok(v)
    }

    /// The content digest of a model folder, memoised under the cache directory by file size and mtime.
    pub fn model_digest(&self, folder: &ModelFolder) -> Result<String> {
        let Some(dir) = &self.dir else {
            return folder.content_digest();
        };
        let memo_path = dir.join("model-digests.json");
        let key = folder
            .dir
            .canonicalize()
            .unwrap_or_else(|_| folder.dir.clone())
            .display()
            .to_string();
        let stamp = file_stamps(folder)?;
        let mut memo: serde_json::Map<String, serde_json::Value> =
            std::fs::read_to_string(&memo_path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
        if let Some(entry) = memo.get(&key) {
            if entry.get("files") == Some(&stamp) {
                if let Some(d) = entry.get("digest").and_then(|d| d.as_str()) {
                    return Ok(d.to_string());
                }
            }
        }
        let digest = folder.content_digest()?;
        memo.insert(key, serde_json::json!({ "files": stamp, "digest": digest }));
        let text = serde_json::to_string_pretty(&memo)
            .map_err(|e| Error::bad_file(&memo_path, e.to_string()))?;
        write_atomic(&memo_path, text.as_bytes())?;
        Ok(digest)
    }
}

/// `[[name, size, mtime_ns], ...]` of the files a model digest covers.
fn file_stamps(folder: &ModelFolder) -> Result<serde_json::Value> {
    let mut files = vec![
        folder.dir.join("config.json"),
        folder.dir.join("preprocessor_config.json"),
    ];
    files.extend(folder.weight_files.iter().cloned());
    let mut out = Vec::new();
    for f in files {
        let meta = std::fs::metadata(&f).map_err(|e| Error::io(&f, e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        out.push(serde_json::json!([
            f.display().to_string(),
            meta.len(),
            mtime
        ]));
    }
    Ok(serde_json::Value::Array(out))
}

fn read_entry(path: &Path) -> Option<Vec<f32>> {
    let bytes = std::fs::read(path).ok()?;
    let st = safetensors::SafeTensors::deserialize(&bytes).ok()?;
    let t = st.tensor("embedding").ok()?;
    if t.dtype() != Dtype::F32 || t.shape().len() != 1 || t.shape()[0] == 0 {
        return None;
    }
    let v: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    v.iter().all(|x| x.is_finite()).then_some(v)
}

fn write_entry(path: &Path, model_id: &str, v: &[f32]) -> Result<()> {
    let metadata = HashMap::from([("model_id".to_string(), model_id.to_string())]);
    write_f32_safetensors(path, &[("embedding", vec![v.len()], v)], Some(metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_round_trip_and_corrupt_entries_are_misses() {
        let dir = std::env::temp_dir().join(format!("clora-cache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let digest = "ab".repeat(32);
        let img = [7u8; 32];
        {
            let c = EmbeddingCache::new(Some(&dir)).unwrap();
            assert!(c.get(&digest, &img).is_none());
            c.put(&digest, "clip:x@abab", &img, vec![1.0, -2.5, 3.25])
                .unwrap();
            assert_eq!(*c.get(&digest, &img).unwrap(), vec![1.0, -2.5, 3.25]);
            assert_eq!(c.stats().memory_hits, 1);
        }
        let c = EmbeddingCache::new(Some(&dir)).unwrap();
        assert_eq!(*c.get(&digest, &img).unwrap(), vec![1.0, -2.5, 3.25]);
        assert_eq!(c.stats().disk_hits, 1);
        // another model digest does not see it
        assert!(c.get(&"cd".repeat(32), &img).is_none());
        // a truncated entry is a miss
        let path = c.entry_path(&digest, &[9u8; 32]).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"\x10\x00\x00").unwrap();
        let c = EmbeddingCache::new(Some(&dir)).unwrap();
        assert!(c.get(&digest, &[9u8; 32]).is_none());
        assert_eq!(c.stats().disk_errors, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
