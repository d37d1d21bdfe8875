//! A local transformers model folder for the metrics: `config.json` (its `model_type` says the architecture),
//! `model.safetensors` (or sharded `model.safetensors.index.json`) and `preprocessor_config.json`.
//! Weights are only ever read from such a folder given by path; nothing is downloaded.
//!
//! Each folder gets a model id recorded with every score: `<kind>:<folder name>@<digest>`, where the digest is
//! the first 16 hex digits of a sha256 over `config.json`, `preprocessor_config.json` and the weight files, so
//! two folders with the same name but different weights never share cached embeddings or results.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::image_io::hex;
use super::preprocess::ImageProcessorConfig;
use crate::error::{Error, Result};
use crate::models::config_json::JsonConfig;
use crate::models::weights::WeightStore;

/// The architectures the metrics load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// `model_type: "clip"` (`CLIPModel`: both towers).
    Clip,
    /// `model_type: "vit"` (`ViTModel`, DINO v1).
    DinoV1,
    /// `model_type: "dinov2"` (`Dinov2Model`).
    DinoV2,
}

impl ModelKind {
    /// The `model_type` value in `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            ModelKind::Clip => "clip",
            ModelKind::DinoV1 => "vit",
            ModelKind::DinoV2 => "dinov2",
        }
    }

    /// Short name used in model ids.
    pub fn id_prefix(self) -> &'static str {
        match self {
            ModelKind::Clip => "clip",
            ModelKind::DinoV1 => "dino-v1",
            ModelKind::DinoV2 => "dinov2",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ModelKind::Clip => "\"clip\" (a CLIPModel checkpoint with text and vision towers)",
            ModelKind::DinoV1 => "\"vit\" (a ViTModel checkpoint, DINO v1)",
            ModelKind::DinoV2 => "\"dinov2\" (a Dinov2Model checkpoint)",
        }
    }
}

/// An opened and checked model folder.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub dir: PathBuf,
    pub kind: ModelKind,
    pub config: JsonConfig,
    pub processor: ImageProcessorConfig,
    pub weights: WeightStore,
    /// The weight files (one, or the shards).
    pub weight_files: Vec<PathBuf>,
}

impl ModelFolder {
    /// Opens `dir` and checks that its `model_type` is one of `accepted` (`role` names the option, e.g.
    /// `--clip`, in the error).
    pub fn open(dir: &Path, accepted: &[ModelKind], role: &str) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::bad_file(
                dir,
                format!(
                    "not a directory: {role} expects a local transformers model folder (config.json, \
                     model.safetensors, preprocessor_config.json)"
                ),
            ));
        }
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::bad_file(
                &config_path,
                format!("missing: {role} expects a transformers model folder with a config.json"),
            ));
        }
        let config = JsonConfig::from_file(&config_path)?;
        let model_type = config.string("model_type", None)?;
        let kind = accepted
            .iter()
            .copied()
            .find(|k| k.model_type() == model_type)
            .ok_or_else(|| {
                let architectures = config
                    .get("architectures")
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default();
                let expected: Vec<&str> = accepted.iter().map(|k| k.describe()).collect();
                Error::config(
                    &config_path,
                    "model_type",
                    format!(
                        "is \"{model_type}\"{architectures}: wrong architecture for {role}, expected {}",
                        expected.join(" or ")
                    ),
                )
            })?;
        let processor_path = dir.join("preprocessor_config.json");
        if !processor_path.is_file() {
            return Err(Error::bad_file(
                &processor_path,
                "missing: the image processor config saved with the model is needed to preprocess exactly as \
                 transformers does",
            ));
        }
        let processor = ImageProcessorConfig::from_file(&processor_path)?;
        let weights = WeightStore::open_component(dir, &["model.safetensors"]).map_err(|e| {
            if dir.join("pytorch_model.bin").is_file() {
                Error::bad_file(
                    dir,
                    "has pytorch_model.bin but no model.safetensors: save the model with \
                     save_pretrained(safe_serialization=True)",
                )
            } else {
                e
            }
        })?;
        let weight_files = weight_files(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            kind,
            config,
            processor,
            weights,
            weight_files,
        })
    }

    /// The weights with the keys of the bare model: a task-model prefix (`vit.` of `ViTForImageClassification`,
    /// `dinov2.` of `Dinov2ForImageClassification`) is removed when present.
    pub fn model_weights(&self) -> WeightStore {
        let prefix = match self.kind {
            ModelKind::Clip => return self.weights.clone(),
            ModelKind::DinoV1 => "vit.",
            ModelKind::DinoV2 => "dinov2.",
        };
        if self
            .weights
            .contains(&format!("{prefix}embeddings.cls_token"))
        {
            self.weights.strip_prefix(prefix)
        } else {
            self.weights.clone()
        }
    }

    /// The folder's name (last path component).
    pub fn name(&self) -> String {
        let canon = self.dir.canonicalize().unwrap_or_else(|_| self.dir.clone());
        canon
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| canon.display().to_string())
    }

    /// sha256 over config.json, preprocessor_config.json and the weight files (in that order, each prefixed
    /// by its length), as lower-case hex.
    pub fn content_digest(&self) -> Result<String> {
        let mut h = Sha256::new();
        let mut files = vec![
            self.dir.join("config.json"),
            self.dir.join("preprocessor_config.json"),
        ];
        files.extend(self.weight_files.iter().cloned());
        let mut buf = vec![0u8; 1 << 20];
        for path in files {
            let mut f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            let len = f.metadata().map_err(|e| Error::io(&path, e))?.len();
            h.update(len.to_le_bytes());
            loop {
                let n = f.read(&mut buf).map_err(|e| Error::io(&path, e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        Ok(hex(&h.finalize()))
    }

    /// The model id `<kind>:<folder name>@<first 16 hex digits of the content digest>`.
    pub fn model_id(&self, digest: &str) -> String {
        format!(
            "{}:{}@{}",
            self.kind.id_prefix(),
            self.name(),
            &digest[..16.min(digest.len())]
        )
    }
}

/// The weight files of a folder: `model.safetensors`, or the shards listed in its index.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    let cfg = JsonConfig::from_file(&index)?;
    let map = cfg
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::config(&index, "weight_map", "expected an object"))?;
    let mut files: Vec<PathBuf> = map
        .values()
        .filter_map(|v| v.as_str())
        .map(|f| dir.join(f))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}
