//! The library entry point that `harness score` and `harness eval` use: load the CLIP and/or DINO folders once,
//! then score images against a prompt and concepts' reference folders.
//!
//! ```no_run
//! use clora_harness::metrics::{ConceptRefs, ImageQuery, MetricsConfig, Scorer};
//! # fn main() -> clora_harness::Result<()> {
//! let scorer = Scorer::new(MetricsConfig {
//!     clip: Some("models/clip-vit-base-patch32".into()),
//!     dino: Some("models/dino-vits16".into()),
//!     cache_dir: Some("results/run/.metric-cache".into()),
//!     ..MetricsConfig::default()
//! })?;
//! let query = ImageQuery {
//!     prompt_for_clip_t: Some("a cat next to a cup".into()),
//!     concepts: vec![
//!         ConceptRefs { name: "cat".into(), ref_dir: "refs/cat".into(), ..Default::default() },
//!         ConceptRefs { name: "cup".into(), ref_dir: "refs/cup".into(), ..Default::default() },
//!     ],
//! };
//! let scores = scorer.score_image("results/run/images/abc.png".as_ref(), &query)?;
//! for row in scores.rows() {
//!     println!("{} {} {} {}", row.metric.as_str(), row.scope, row.value, row.model_id);
//! }
//! # Ok(()) }
//! ```
//!
//! Embeddings are cached by (model digest, image file sha256): reference images are embedded once per run (or
//! once ever with a `cache_dir`), whatever the number of images scored against them. Images are embedded in
//! batches of `batch_size`. A score whose model is not configured is `None` (no CLIP model: no CLIP-T, no CLIP-I).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use candle::Device;

use super::cache::{CacheStats, EmbeddingCache};
use super::encoder::{ClipEncoder, DinoEncoder, ImageEncoder};
use super::image_io::{hex, list_images, ImageFile};
use super::model_folder::{ModelFolder, ModelKind};
use super::scores::{
    clip_score, cosine, mean_cosine, Aggregate, ClipTScore, ConceptScore, ImageScores,
};
use crate::error::{Error, Result};

/// What to load.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// A `CLIPModel` folder (CLIP-T, CLIP-I).
    pub clip: Option<PathBuf>,
    /// A DINO folder: `ViTModel` (DINO v1) or `Dinov2Model`.
    pub dino: Option<PathBuf>,
    /// Where embeddings (and model digests) are cached on disk; `None` = memory only.
    pub cache_dir: Option<PathBuf>,
    /// Candle device (CPU unless candle is built with a GPU backend).
    pub device: Device,
    /// Images per forward pass.
    pub batch_size: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            clip: None,
            dino: None,
            cache_dir: None,
            device: Device::Cpu,
            batch_size: 16,
        }
    }
}

/// A concept of an image: its name and its reference images, a folder (`.png`/`.jpg`, not recursive) or a list
/// of files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConceptRefs {
    pub name: String,
    pub ref_dir: PathBuf,
    /// Reference images given one by one; when not empty, used instead of listing `ref_dir`.
    pub ref_files: Vec<PathBuf>,
}

impl ConceptRefs {
    /// A concept whose references are the files `files`.
    pub fn from_files(name: impl Into<String>, files: Vec<PathBuf>) -> Self {
        Self {
            name: name.into(),
            ref_dir: PathBuf::new(),
            ref_files: files,
        }
    }

    fn key(&self) -> (PathBuf, Vec<PathBuf>) {
        (self.ref_dir.clone(), self.ref_files.clone())
    }
}

/// What one image is scored against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageQuery {
    /// The CLIP-T text: the prompt with trigger words replaced by class nouns ([`super::clip_t_prompt`]).
    pub prompt_for_clip_t: Option<String>,
    pub concepts: Vec<ConceptRefs>,
}

/// (size, modification time, sha256) of a file.
type FileStamp = (u64, Option<SystemTime>, [u8; 32]);

/// A file identified by its content.
#[derive(Debug, Clone)]
struct FileRef {
    path: PathBuf,
    sha256: [u8; 32],
}

/// Loaded metric models plus caches.
#[derive(Debug)]
pub struct Scorer {
    clip: Option<ClipEncoder>,
    dino: Option<DinoEncoder>,
    cache: EmbeddingCache,
    batch_size: usize,
    /// path -> (len, mtime, sha256), so reference files are hashed once per run.
    hashes: Mutex<HashMap<PathBuf, FileStamp>>,
    /// reference folder -> its image files.
    ref_lists: Mutex<HashMap<PathBuf, Arc<Vec<PathBuf>>>>,
    /// CLIP-T text -> text features.
    texts: Mutex<HashMap<String, Arc<Vec<f32>>>>,
}

impl Scorer {
    /// Loads the configured models (at least one of `clip`, `dino`).
    pub fn new(cfg: MetricsConfig) -> Result<Self> {
        if cfg.clip.is_none() && cfg.dino.is_none() {
            return Err(Error::invalid(
                "MetricsConfig",
                "neither a CLIP nor a DINO model folder is set",
            ));
        }
        if cfg.batch_size == 0 {
            return Err(Error::invalid(
                "MetricsConfig.batch_size",
                "must be at least 1",
            ));
        }
        let cache = EmbeddingCache::new(cfg.cache_dir.as_deref())?;
        let clip = match &cfg.clip {
            Some(dir) => {
                let folder = ModelFolder::open(dir, &[ModelKind::Clip], "the CLIP model (--clip)")?;
                let digest = cache.model_digest(&folder)?;
                Some(ClipEncoder::load(&folder, &digest, &cfg.device)?)
            }
            None => None,
        };
        let dino = match &cfg.dino {
            Some(dir) => {
                let folder = ModelFolder::open(
                    dir,
                    &[ModelKind::DinoV1, ModelKind::DinoV2],
                    "the DINO model (--dino)",
                )?;
                let digest = cache.model_digest(&folder)?;
                Some(DinoEncoder::load(&folder, &digest, &cfg.device)?)
            }
            None => None,
        };
        Ok(Self {
            clip,
            dino,
            cache,
            batch_size: cfg.batch_size,
            hashes: Mutex::new(HashMap::new()),
            ref_lists: Mutex::new(HashMap::new()),
            texts: Mutex::new(HashMap::new()),
        })
    }

    pub fn clip(&self) -> Option<&ClipEncoder> {
        self.clip.as_ref()
    }

    pub fn dino(&self) -> Option<&DinoEncoder> {
        self.dino.as_ref()
    }

    pub fn clip_model_id(&self) -> Option<&str> {
        self.clip.as_ref().map(|c| c.model_id())
    }

    pub fn dino_model_id(&self) -> Option<&str> {
        self.dino.as_ref().map(|d| d.model_id())
    }

    /// Embedding cache counters so far (memory hits, disk hits, computed).
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Scores one image.
    pub fn score_image(&self, image: &Path, query: &ImageQuery) -> Result<ImageScores> {
        let mut out = self.score_images(&[(image.to_path_buf(), query.clone())])?;
        Ok(out.remove(0))
    }

    /// Scores many images; all images (and all references) are embedded in batches first.
    pub fn score_images(&self, items: &[(PathBuf, ImageQuery)]) -> Result<Vec<ImageScores>> {
        let images = items
            .iter()
            .map(|(p, _)| self.file_ref(p))
            .collect::<Result<Vec<_>>>()?;
        let mut concept_refs: HashMap<(PathBuf, Vec<PathBuf>), Vec<FileRef>> = HashMap::new();
        for (_, q) in items {
            for c in &q.concepts {
                if let std::collections::hash_map::Entry::Vacant(slot) = concept_refs.entry(c.key())
                {
                    let files = if c.ref_files.is_empty() {
                        self.ref_list(&c.ref_dir)?
                    } else {
                        Arc::new(c.ref_files.clone())
                    };
                    let refs = files
                        .iter()
                        .map(|p| self.file_ref(p))
                        .collect::<Result<Vec<_>>>()?;
                    slot.insert(refs);
                }
            }
        }
        let all_refs: Vec<FileRef> = concept_refs.values().flatten().cloned().collect();

        let clip_emb = match &self.clip {
            Some(enc) => {
                let mut m = self.embed_files(enc, &images)?;
                m.extend(self.embed_files(enc, &all_refs)?);
                Some(m)
            }
            None => None,
        };
        let dino_emb = match &self.dino {
            Some(enc) => {
                let mut m = self.embed_files(enc, &images)?;
                m.extend(self.embed_files(enc, &all_refs)?);
                Some(m)
            }
            None => None,
        };

        if let Some(enc) = &self.clip {
            let prompts: Vec<&str> = items
                .iter()
                .filter_map(|(_, q)| q.prompt_for_clip_t.as_deref())
                .collect();
            self.embed_texts(enc, &prompts)?;
        }

        let mut out = Vec::with_capacity(items.len());
        for ((_, query), image) in items.iter().zip(&images) {
            let clip_t = match (&self.clip, &clip_emb, &query.prompt_for_clip_t) {
                (Some(enc), Some(emb), Some(prompt)) => {
                    let text = self.text_embedding(enc, prompt)?;
                    let cos = cosine(&text, &emb[&image.sha256]);
                    Some(ClipTScore {
                        prompt: prompt.clone(),
                        cosine: cos,
                        clip_score: clip_score(cos),
                        model_id: enc.model_id().to_string(),
                    })
                }
                _ => None,
            };
            let mut concepts = Vec::with_capacity(query.concepts.len());
            for c in &query.concepts {
                let refs = &concept_refs[&c.key()];
                let score = |emb: &Option<HashMap<[u8; 32], Arc<Vec<f32>>>>| {
                    emb.as_ref().and_then(|m| {
                        mean_cosine(
                            &m[&image.sha256],
                            refs.iter().map(|r| m[&r.sha256].as_slice()),
                        )
                    })
                };
                concepts.push(ConceptScore {
                    concept: c.name.clone(),
                    n_refs: refs.len(),
                    clip_i: score(&clip_emb),
                    dino: score(&dino_emb),
                });
            }
            let agg = |get: fn(&ConceptScore) -> Option<f32>| {
                let v: Option<Vec<f32>> = concepts.iter().map(get).collect();
                v.and_then(|v| Aggregate::of(&v))
            };
            out.push(ImageScores {
                image: image.path.clone(),
                image_sha256: hex(&image.sha256),
                clip_t,
                clip_i: agg(|c| c.clip_i),
                dino: agg(|c| c.dino),
                concepts,
                clip_model: self.clip_model_id().map(str::to_string),
                dino_model: self.dino_model_id().map(str::to_string),
            });
        }
        Ok(out)
    }

    /// CLIP text features of a text, computed once per run.
    pub fn text_embedding(&self, enc: &ClipEncoder, text: &str) -> Result<Arc<Vec<f32>>> {
        self.embed_texts(enc, &[text])?;
        self.texts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(text)
            .cloned()
            .ok_or_else(|| Error::invalid("CLIP-T text", "was not embedded"))
    }

    /// Embeds the texts not embedded yet in this run, `batch_size` at a time.
    fn embed_texts(&self, enc: &ClipEncoder, texts: &[&str]) -> Result<()> {
        let mut todo: Vec<&str> = {
            let known = self.texts.lock().unwrap_or_else(|p| p.into_inner());
            texts
                .iter()
                .copied()
                .filter(|t| !known.contains_key(*t))
                .collect()
        };
        todo.sort_unstable();
        todo.dedup();
        if todo.is_empty() {
            return Ok(());
        }
        let embs = enc.embed_texts(&todo, self.batch_size)?;
        let mut known = self.texts.lock().unwrap_or_else(|p| p.into_inner());
        for (t, e) in todo.into_iter().zip(embs) {
            known.insert(t.to_string(), Arc::new(e));
        }
        Ok(())
    }

    /// Embeddings of image files under one encoder, through the cache; misses are decoded, preprocessed and
    /// embedded in batches. Returned by content hash.
    fn embed_files<E: ImageEncoder>(
        &self,
        enc: &E,
        files: &[FileRef],
    ) -> Result<HashMap<[u8; 32], Arc<Vec<f32>>>> {
        let mut out = HashMap::new();
        let mut missing: Vec<&FileRef> = Vec::new();
        for f in files {
            if out.contains_key(&f.sha256) || missing.iter().any(|m| m.sha256 == f.sha256) {
                continue;
            }
            match self.cache.get(enc.digest(), &f.sha256) {
                Some(v) => {
                    out.insert(f.sha256, v);
                }
                None => missing.push(f),
            }
        }
        for chunk in missing.chunks(self.batch_size) {
            let mut pixels = Vec::with_capacity(chunk.len());
            let mut keys = Vec::with_capacity(chunk.len());
            for f in chunk {
                let file = ImageFile::read(&f.path)?;
                let rgb = file.decode()?;
                let px = enc
                    .processor()
                    .preprocess(&rgb)
                    .map_err(|e| Error::bad_file(&f.path, e.to_string()))?;
                pixels.push(px);
                keys.push((f.sha256, file.sha256));
            }
            let embs = enc.embed_pixels(&pixels, self.batch_size)?;
            for ((asked, read), e) in keys.into_iter().zip(embs) {
                let v = self.cache.put(enc.digest(), enc.model_id(), &read, e)?;
                out.insert(asked, v);
            }
        }
        Ok(out)
    }

    /// The content hash of a file, memoised by (size, mtime) for this run.
    fn file_ref(&self, path: &Path) -> Result<FileRef> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let stamp = (meta.len(), meta.modified().ok());
        if let Some((len, mtime, sha)) = self
            .hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
        {
            if (*len, *mtime) == stamp {
                return Ok(FileRef {
                    path: path.to_path_buf(),
                    sha256: *sha,
                });
            }
        }
        let file = ImageFile::read(path)?;
        self.hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_path_buf(), (stamp.0, stamp.1, file.sha256));
        Ok(FileRef {
            path: path.to_path_buf(),
            sha256: file.sha256,
        })
    }

    /// The images of a reference folder, listed once per run (error naming the folder when it has none).
    fn ref_list(&self, dir: &Path) -> Result<Arc<Vec<PathBuf>>> {
        if let Some(v) = self
            .ref_lists
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(dir)
        {
            return Ok(v.clone());
        }
        let files = Arc::new(list_images(dir)?);
        self.ref_lists
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.to_path_buf(), files.clone());
        Ok(files)
    }
}
