//! The diffusers key of every parameter of a model built by the SD loaders, so that a model trained here can be
//! written back in the layout the loaders read (and diffusers/transformers too).
//!
//! The loaders know the keys; the modules do not. [`ParamNames::discover`] asks the loader itself: it loads the
//! model from a store that lacks every key, learns the first missing key and its shape from the loader's
//! [`Error::MissingWeight`], adds a marker tensor for it (filled with the key's index) and loads again until the
//! model loads. The params of that model, visited in burn's module order, then carry their key's index, and
//! whether the loader transposed them (PyTorch `Linear` weights are `[out, in]`, burn's are `[in, out]`).

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, DType, Tensor};

use super::error::{ToyError, ToyResult};
use crate::error::Error;
use crate::models::weights::{VarBuilder, WeightStore};

/// One parameter's key, stored shape (PyTorch layout) and whether burn holds it transposed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamName {
    pub key: String,
    pub shape: Vec<usize>,
    pub transposed: bool,
}

/// The names of a module's parameters, in burn's visit order.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamNames {
    pub params: Vec<ParamName>,
}

/// Collects every float param's values (f32, burn's layout) and shape, in visit order.
struct Collect {
    out: Vec<(Vec<f32>, Vec<usize>)>,
}

impl<B: Backend> ModuleVisitor<B> for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let dims = t.dims().to_vec();
        let values = t
            .cast(DType::F32)
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("f32 data");
        self.out.push((values, dims));
    }
}

/// Every float param of `module` as `(values, burn shape)`, in visit order.
pub fn collect_params<B: Backend, M: Module<B>>(module: &M) -> Vec<(Vec<f32>, Vec<usize>)> {
    let mut c = Collect { out: Vec::new() };
    module.visit(&mut c);
    c.out
}

fn marker_values(index: usize, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let mut v = vec![index as f32; n];
    if n >= 2 {
        v[1] = -1.0;
    }
    v
}

/// Writes f32 tensors `(key, shape, values)` to a safetensors file, as f32 or f16, atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    f16: bool,
) -> ToyResult<()> {
    let views: Vec<(&str, Vec<usize>, &[f32])> = tensors
        .iter()
        .map(|(k, shape, v)| (k.as_str(), shape.clone(), v.as_slice()))
        .collect();
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    Ok(crate::latent_io::write_safetensors(
        path,
        &views,
        f16,
        Some(meta),
    )?)
}

impl ParamNames {
    /// Learns the keys of the model that `load` builds (see the module docs).
    pub fn discover<B: Backend, M: Module<B>>(
        load: impl Fn(&VarBuilder<B>) -> crate::error::Result<M>,
        device: &B::Device,
    ) -> ToyResult<Self> {
        let dir = std::env::temp_dir().join(format!(
            "clora-toy-names-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| ToyError::io(&dir, e))?;
        let result = Self::discover_in(&dir, load, device);
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    fn discover_in<B: Backend, M: Module<B>>(
        dir: &Path,
        load: impl Fn(&VarBuilder<B>) -> crate::error::Result<M>,
        device: &B::Device,
    ) -> ToyResult<Self> {
        let mut keys: Vec<(String, Vec<usize>)> = Vec::new();
        let mut files: Vec<PathBuf> = Vec::new();
        let model = loop {
            let store = if files.is_empty() {
                WeightStore::empty()
            } else {
                WeightStore::open(&files)?
            };
            match load(&VarBuilder::new(store, device, DType::F32)) {
                Ok(m) => break m,
                Err(Error::MissingWeight { key, expected, .. }) => {
                    if keys.iter().any(|(k, _)| *k == key) {
                        return Err(ToyError::Training(format!(
                            "the loader asked twice for `{key}`"
                        )));
                    }
                    let file = dir.join(format!("{}.safetensors", keys.len()));
                    let values = marker_values(keys.len(), &expected);
                    write_safetensors(&file, &[(key.clone(), expected.clone(), values)], false)?;
                    files.push(file);
                    keys.push((key, expected));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let mut seen = vec![false; keys.len()];
        let mut params = Vec::new();
        for (values, dims) in collect_params(&model) {
            let index = values[0];
            if index < 0.0 || index.fract() != 0.0 || index as usize >= keys.len() {
                return Err(ToyError::Training(format!(
                    "a parameter of shape {dims:?} was not loaded from a weight file (marker {index})"
                )));
            }
            let index = index as usize;
            if std::mem::replace(&mut seen[index], true) {
                return Err(ToyError::Training(format!(
                    "`{}` feeds two parameters",
                    keys[index].0
                )));
            }
            let transposed = dims.len() == 2 && values.len() >= 2 && values[1] != -1.0;
            params.push(ParamName {
                key: keys[index].0.clone(),
                shape: keys[index].1.clone(),
                transposed,
            });
        }
        if let Some(i) = seen.iter().position(|s| !s) {
            return Err(ToyError::Training(format!(
                "`{}` feeds no parameter",
                keys[i].0
            )));
        }
        Ok(Self { params })
    }

    /// The params of `module` (built by the same loader) as `(key, stored shape, values)` in PyTorch layout.
    pub fn tensors<B: Backend, M: Module<B>>(
        &self,
        module: &M,
    ) -> ToyResult<Vec<(String, Vec<usize>, Vec<f32>)>> {
        let values = collect_params(module);
        if values.len() != self.params.len() {
            return Err(ToyError::Training(format!(
                "the module has {} parameters, the names describe {}",
                values.len(),
                self.params.len()
            )));
        }
        let mut out = Vec::with_capacity(values.len());
        for (name, (v, dims)) in self.params.iter().zip(values) {
            let v = if name.transposed {
                let (rows, cols) = (dims[0], dims[1]);
                let mut t = vec![0f32; v.len()];
                for r in 0..rows {
                    for c in 0..cols {
                        t[c * rows + r] = v[r * cols + c];
                    }
                }
                t
            } else {
                v
            };
            let n: usize = name.shape.iter().product();
            if n != v.len() {
                return Err(ToyError::Training(format!(
                    "`{}`: {} values for stored shape {:?}",
                    name.key,
                    v.len(),
                    name.shape
                )));
            }
            out.push((name.key.clone(), name.shape.clone(), v));
        }
        Ok(out)
    }

    /// Writes `module`'s params to a safetensors file under their diffusers keys.
    pub fn save<B: Backend, M: Module<B>>(
        &self,
        module: &M,
        path: &Path,
        f16: bool,
    ) -> ToyResult<()> {
        write_safetensors(path, &self.tensors(module)?, f16)
    }
}
