//! Weight files: safetensors (single or sharded), read through a memory map, looked up by diffusers key.
//!
//! A [`WeightStore`] indexes every tensor of one or more files by the key the model asks for. A store can
//! rename keys (the single-file LDM checkpoint is indexed under diffusers names), so the model code always
//! asks for `down_blocks.0.attentions.0.proj_in.weight`, whatever layout the file has.
//! [`VarBuilder`] walks the module tree (`vb.pp("down_blocks").pp(0)`) and converts f32/f16/bf16 data to the
//! run dtype, checking each shape and naming file and key in every error.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::{backend::Backend, DType, Tensor, TensorData};
use safetensors::tensor::{Dtype as StDtype, SafeTensors};

use crate::error::{Error, Result};

/// Where one tensor lives.
#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    file_key: String,
    dtype: StDtype,
    shape: Vec<usize>,
    /// Byte range inside the file (absolute).
    start: usize,
    end: usize,
}

/// An index over the tensors of one or more safetensors files.
#[derive(Clone)]
pub struct WeightStore {
    files: Arc<Vec<(PathBuf, memmap2::Mmap)>>,
    index: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for WeightStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightStore")
            .field(
                "files",
                &self.files.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .field("tensors", &self.index.len())
            .finish()
    }
}

fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the file is opened read-only; we never mutate it and accept that a concurrent writer
    // would be the user's problem, as every safetensors reader does.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

fn index_file(
    path: &Path,
    file_no: usize,
    buf: &[u8],
    index: &mut BTreeMap<String, Entry>,
) -> Result<()> {
    let (header_len, meta) = SafeTensors::read_metadata(buf)
        .map_err(|e| Error::bad_file(path, format!("not a valid safetensors file ({e})")))?;
    let data_start = 8 + header_len;
    for (key, info) in meta.tensors() {
        let (a, b) = info.data_offsets;
        let (start, end) = (data_start + a, data_start + b);
        if end > buf.len() {
            return Err(Error::bad_file(
                path,
                format!(
                    "truncated: tensor `{key}` needs bytes up to {end}, the file has {} bytes",
                    buf.len()
                ),
            ));
        }
        index.insert(
            key.clone(),
            Entry {
                file: file_no,
                file_key: key.clone(),
                dtype: info.dtype,
                shape: info.shape.clone(),
                start,
                end,
            },
        );
    }
    Ok(())
}

impl WeightStore {
    /// A store with no file and no tensor.
    pub fn empty() -> Self {
        Self {
            files: Arc::new(Vec::new()),
            index: BTreeMap::new(),
        }
    }

    /// Open one or more safetensors files as one store (later files do not override earlier keys).
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        let mut index = BTreeMap::new();
        for (i, path) in paths.iter().enumerate() {
            let mmap = map_file(path)?;
            let mut part = BTreeMap::new();
            index_file(path, i, &mmap, &mut part)?;
            for (k, v) in part {
                index.entry(k).or_insert(v);
            }
            files.push((path.clone(), mmap));
        }
        Ok(Self {
            files: Arc::new(files),
            index,
        })
    }

    /// Open the weights of one diffusers component folder (`unet/`, `vae/`, `text_encoder/`): the first of
    /// `names` that exists, or its sharded form (`<name>.index.json`).
    pub fn open_component(dir: &Path, names: &[&str]) -> Result<Self> {
        for name in names {
            let single = dir.join(name);
            if single.is_file() {
                return Self::open(&[single]);
            }
            let index_path = dir.join(format!("{name}.index.json"));
            if index_path.is_file() {
                let text =
                    std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
                let json: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| Error::bad_file(&index_path, format!("invalid JSON ({e})")))?;
                let map = json
                    .get("weight_map")
                    .and_then(|m| m.as_object())
                    .ok_or_else(|| {
                        Error::config(&index_path, "weight_map", "expected an object")
                    })?;
                let mut shards: Vec<PathBuf> = Vec::new();
                for v in map.values() {
                    let f = v.as_str().ok_or_else(|| {
                        Error::config(&index_path, "weight_map", "expected file names")
                    })?;
                    let p = dir.join(f);
                    if !shards.contains(&p) {
                        shards.push(p);
                    }
                }
                return Self::open(&shards);
            }
        }
        Err(Error::bad_file(
            dir,
            format!("no weight file: expected one of {}", names.join(", ")),
        ))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// All keys (sorted).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(|k| k.as_str())
    }

    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Shape of a tensor, if present.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.index.get(key).map(|e| e.shape.as_slice())
    }

    /// The file a key lives in (for error messages).
    pub fn path_of(&self, key: &str) -> PathBuf {
        match self.index.get(key) {
            Some(e) => self.files[e.file].0.clone(),
            None => self.describe_path(),
        }
    }

    /// A path that describes the store (its first file, or the list).
    pub fn describe_path(&self) -> PathBuf {
        match self.files.len() {
            0 => PathBuf::from("<no file>"),
            1 => self.files[0].0.clone(),
            n => PathBuf::from(format!("{} (+{} shards)", self.files[0].0.display(), n - 1)),
        }
    }

    /// A store holding only the keys that start with `prefix`, with the prefix removed
    /// (e.g. `model.diffusion_model.` of a single-file checkpoint).
    pub fn strip_prefix(&self, prefix: &str) -> Self {
        let index = self
            .index
            .iter()
            .filter_map(|(k, e)| k.strip_prefix(prefix).map(|s| (s.to_string(), e.clone())))
            .collect();
        Self {
            files: self.files.clone(),
            index,
        }
    }

    /// A store whose keys are renamed by `rename(old) -> Some(new)`; keys mapped to `None` are dropped.
    pub fn rename(&self, rename: impl Fn(&str) -> Option<String>) -> Self {
        let index = self
            .index
            .iter()
            .filter_map(|(k, e)| rename(k).map(|n| (n, e.clone())))
            .collect();
        Self {
            files: self.files.clone(),
            index,
        }
    }

    /// Reads a tensor as f32 values, whatever its stored dtype (F32, F16, BF16).
    pub fn read_f32(&self, key: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let e = self.index.get(key).ok_or_else(|| Error::MissingWeight {
            path: self.describe_path(),
            key: key.to_string(),
            expected: vec![],
        })?;
        let (path, buf) = &self.files[e.file];
        let bytes = &buf[e.start..e.end];
        let values = decode_f32(bytes, e.dtype).ok_or_else(|| Error::WeightDtype {
            path: path.clone(),
            key: e.file_key.clone(),
            dtype: format!("{:?}", e.dtype),
        })?;
        let numel: usize = e.shape.iter().product();
        if values.len() != numel {
            return Err(Error::bad_file(
                path,
                format!(
                    "tensor `{}`: {} bytes do not hold shape {:?}",
                    e.file_key,
                    bytes.len(),
                    e.shape
                ),
            ));
        }
        Ok((values, e.shape.clone()))
    }

    /// Reads an integer tensor (I64 or I32) as i64 values.
    pub fn read_i64(&self, key: &str) -> Result<(Vec<i64>, Vec<usize>)> {
        let e = self.index.get(key).ok_or_else(|| Error::MissingWeight {
            path: self.describe_path(),
            key: key.to_string(),
            expected: vec![],
        })?;
        let (path, buf) = &self.files[e.file];
        let bytes = &buf[e.start..e.end];
        let values: Vec<i64> = match e.dtype {
            StDtype::I64 => bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            StDtype::I32 => bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            other => {
                return Err(Error::bad_file(
                    path,
                    format!(
                        "tensor `{}` has dtype {other:?}, expected I64 or I32",
                        e.file_key
                    ),
                ))
            }
        };
        Ok((values, e.shape.clone()))
    }

    /// The metadata map (`__metadata__`) of the first file, if any.
    pub fn metadata(&self) -> HashMap<String, String> {
        self.files
            .first()
            .and_then(|(_, buf)| SafeTensors::read_metadata(buf).ok())
            .and_then(|(_, m)| m.metadata().clone())
            .unwrap_or_default()
    }
}

/// Decodes little-endian F32/F16/BF16 bytes to f32; `None` for any other dtype.
pub fn decode_f32(bytes: &[u8], dtype: StDtype) -> Option<Vec<f32>> {
    Some(match dtype {
        StDtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        StDtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32())
            .collect(),
        StDtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes(c.try_into().unwrap()).to_f32())
            .collect(),
        StDtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        _ => return None,
    })
}

/// Builds module weights from a [`WeightStore`], tracking the module path like diffusers names it.
#[derive(Clone)]
pub struct VarBuilder<B: Backend> {
    store: Arc<WeightStore>,
    prefix: Vec<String>,
    device: B::Device,
    dtype: DType,
    /// `Some(seed)`: no file; every tensor is drawn at random (benchmarks of full-size configs).
    random: Option<u64>,
}

impl<B: Backend> VarBuilder<B> {
    /// A builder at the root of `store`, producing tensors of `dtype` on `device`.
    pub fn new(store: WeightStore, device: &B::Device, dtype: DType) -> Self {
        Self {
            store: Arc::new(store),
            prefix: Vec::new(),
            device: device.clone(),
            dtype,
            random: None,
        }
    }

    /// A builder that reads no file: each tensor is random, deterministic in `(seed, key)`, scaled like a
    /// trained layer (matrices `N(0, 1/fan_in)`, 1-D `weight` near 1, 1-D `bias` near 0). For benchmarks
    /// and tests of full-size configs, where only shapes and speed matter.
    pub fn random(seed: u64, device: &B::Device, dtype: DType) -> Self {
        Self {
            store: Arc::new(WeightStore::empty()),
            prefix: Vec::new(),
            device: device.clone(),
            dtype,
            random: Some(seed),
        }
    }

    /// A builder one module deeper: `vb.pp("down_blocks").pp(0)` is `down_blocks.0`.
    pub fn pp(&self, name: impl ToString) -> Self {
        let mut prefix = self.prefix.clone();
        prefix.push(name.to_string());
        Self {
            store: self.store.clone(),
            prefix,
            device: self.device.clone(),
            dtype: self.dtype,
            random: self.random,
        }
    }

    /// The module path of this builder (`down_blocks.0.resnets.1`).
    pub fn path(&self) -> String {
        self.prefix.join(".")
    }

    /// The full key of a tensor below this builder.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.path(), name)
        }
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn store(&self) -> &WeightStore {
        &self.store
    }

    /// Whether the tensor `name` exists below this builder.
    pub fn contains(&self, name: &str) -> bool {
        self.store.contains(&self.key(name))
    }

    /// Loads tensor `name` with the given shape. A stored shape that differs only by trailing size-1 axes
    /// is accepted (a 1x1 conv `[o, i, 1, 1]` loads as a linear `[o, i]` and back), as diffusers does.
    pub fn get<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        let key = self.key(name);
        if let Some(seed) = self.random {
            return Ok(self.finish(random_values(seed, &key, &shape), shape));
        }
        if !self.store.contains(&key) {
            return Err(Error::MissingWeight {
                path: self.store.describe_path(),
                key,
                expected: shape.to_vec(),
            });
        }
        let found = self.store.shape(&key).unwrap_or(&[]).to_vec();
        if !same_up_to_trailing_ones(&found, &shape) {
            return Err(Error::WeightShape {
                path: self.store.path_of(&key),
                key,
                found,
                expected: shape.to_vec(),
            });
        }
        let (values, _) = self.store.read_f32(&key)?;
        Ok(self.finish(values, shape))
    }

    fn finish<const D: usize>(&self, values: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
        let t =
            Tensor::<B, D>::from_data(TensorData::new(values, shape), (&self.device, DType::F32));
        if self.dtype == DType::F32 {
            t
        } else {
            t.cast(self.dtype)
        }
    }
}

/// Random values for `key` (see [`VarBuilder::random`]).
fn random_values(seed: u64, key: &str, shape: &[usize]) -> Vec<f32> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (seed, key).hash(&mut h);
    let n: usize = shape.iter().product();
    let noise = crate::noise::gaussian_values(h.finish(), n);
    if shape.len() >= 2 {
        let fan_in: usize = shape[1..].iter().product();
        let std = (1.0 / fan_in.max(1) as f32).sqrt();
        noise.into_iter().map(|x| x * std).collect()
    } else if key.ends_with("weight") {
        noise.into_iter().map(|x| 1.0 + 0.02 * x).collect()
    } else {
        noise.into_iter().map(|x| 0.02 * x).collect()
    }
}

fn same_up_to_trailing_ones(found: &[usize], expected: &[usize]) -> bool {
    let trim = |s: &[usize]| {
        let mut v = s.to_vec();
        while v.len() > 1 && *v.last().unwrap() == 1 {
            v.pop();
        }
        v
    };
    found == expected || trim(found) == trim(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_ones_match() {
        assert!(same_up_to_trailing_ones(&[4, 3, 1, 1], &[4, 3]));
        assert!(same_up_to_trailing_ones(&[4, 3], &[4, 3, 1, 1]));
        assert!(!same_up_to_trailing_ones(&[4, 3], &[3, 4]));
        assert!(!same_up_to_trailing_ones(&[4, 3, 3, 3], &[4, 3]));
    }
}
