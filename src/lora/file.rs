//! Reading a LoRA `.safetensors` file in any of the supported formats into per-module factor pairs with their
//! scale, validated (ranks agree, shapes are matrices or convolutions, values finite), not yet matched to a model.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::key::{parse_key, Component, KeyKind, LoraFormat, ModuleRef, Role};
use super::metadata::{adapter_configs, AdapterConfig};
use crate::error::{Error, Result};
use crate::models::weights::WeightStore;

/// One tensor read from the file (f32 values in PyTorch's layout).
#[derive(Debug, Clone)]
pub struct FileTensor {
    /// The key in the file (every error names it).
    pub key: String,
    pub values: Vec<f32>,
    pub shape: Vec<usize>,
}

/// The LoRA of one module: `delta W = scale * up @ down`.
#[derive(Debug, Clone)]
pub struct LoraModule {
    pub component: Component,
    pub module: ModuleRef,
    pub format: LoraFormat,
    /// A: `[r, in]`, or `[r, in, k, k]` for a convolution.
    pub down: FileTensor,
    /// B: `[out, r]`, or `[out, r, 1, 1]`.
    pub up: FileTensor,
    /// The `.alpha` key, when the file has one for this module.
    pub alpha_key: Option<String>,
    pub rank: usize,
    /// `alpha / r` (`alpha / sqrt(r)` for rsLoRA); 1 when the file gives no alpha.
    pub scale: f64,
}

/// A parsed LoRA file.
#[derive(Debug, Clone)]
pub struct LoraFile {
    pub path: PathBuf,
    pub modules: Vec<LoraModule>,
    /// Keys that belong to no known LoRA format (reported by the unmatched-key policy when applied).
    pub unrecognized: Vec<String>,
}

#[derive(Default)]
struct Parts {
    format: Option<LoraFormat>,
    down: Option<String>,
    up: Option<String>,
    alpha: Option<String>,
}

impl LoraFile {
    /// Reads and validates a LoRA file (any of the formats of [`super::key`]; f32, f16 or bf16 tensors).
    pub fn open(path: &Path) -> Result<Self> {
        let store = WeightStore::open(&[path.to_path_buf()])?;
        let configs = adapter_configs(&store.metadata(), path)?;
        let mut groups: BTreeMap<(Component, ModuleRef), Parts> = BTreeMap::new();
        let mut unrecognized = Vec::new();
        for key in store.keys() {
            match parse_key(key) {
                KeyKind::Lora(k) => {
                    let parts = groups.entry((k.component, k.module.clone())).or_default();
                    let slot = match k.role {
                        Role::Down => &mut parts.down,
                        Role::Up => &mut parts.up,
                        Role::Alpha => &mut parts.alpha,
                    };
                    if let Some(previous) = slot.replace(key.to_string()) {
                        return Err(Error::bad_file(
                            path,
                            format!("`{previous}` and `{key}` are the same factor of module `{}`", k.module),
                        ));
                    }
                    if k.role != Role::Alpha {
                        parts.format = Some(k.format);
                    }
                }
                KeyKind::OtherArchitecture(why) => {
                    return Err(Error::bad_file(
                        path,
                        format!("`{key}`: this LoRA is for another architecture ({why}); the model is SD 1.x"),
                    ))
                }
                KeyKind::Unsupported(what) => {
                    return Err(Error::bad_file(path, format!("`{key}`: {what} is not supported")));
                }
                KeyKind::Unrecognized => unrecognized.push(key.to_string()),
            }
        }
        let mut modules = Vec::new();
        for ((component, module), parts) in groups {
            let (Some(down_key), Some(up_key)) = (&parts.down, &parts.up) else {
                let (have, missing) = match (&parts.down, &parts.up, &parts.alpha) {
                    (Some(d), None, _) => (d.clone(), "up (B) factor"),
                    (None, Some(u), _) => (u.clone(), "down (A) factor"),
                    (None, None, Some(a)) => (a.clone(), "down (A) and up (B) factors"),
                    _ => unreachable!("a group has at least one key"),
                };
                return Err(Error::bad_file(
                    path,
                    format!("`{have}` has no matching {missing} for module `{module}`"),
                ));
            };
            let down = read(&store, path, down_key)?;
            let up = read(&store, path, up_key)?;
            let rank = check_factor_shapes(path, &down, &up)?;
            let format = parts.format.expect("set with down/up");
            let alpha = match &parts.alpha {
                Some(k) => Some(read_scalar(&store, path, k)?),
                None => None,
            };
            let config = configs.get(&component);
            let scale = module_scale(path, &module, format, rank, alpha, config, &down.key)?;
            modules.push(LoraModule {
                component,
                module,
                format,
                down,
                up,
                alpha_key: parts.alpha.clone(),
                rank,
                scale,
            });
        }
        if modules.is_empty() {
            return Err(Error::bad_file(
                path,
                format!(
                    "no LoRA tensors found ({} keys, e.g. `{}`); expected kohya (`lora_unet_*.lora_down.weight`), \
                     diffusers/PEFT (`unet.*.lora_A.weight`) or older diffusers (`*.to_q_lora.down.weight`) names",
                    store.len(),
                    store.keys().next().unwrap_or("")
                ),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            modules,
            unrecognized,
        })
    }

    /// The formats present in the file.
    pub fn formats(&self) -> BTreeSet<LoraFormat> {
        self.modules.iter().map(|m| m.format).collect()
    }

    /// Every key of a module (down, up, alpha), as the file names them.
    pub fn keys_of(m: &LoraModule) -> Vec<String> {
        let mut k = vec![m.down.key.clone(), m.up.key.clone()];
        k.extend(m.alpha_key.clone());
        k
    }

    /// Number of adapted modules of a component.
    pub fn count(&self, component: Component) -> usize {
        self.modules
            .iter()
            .filter(|m| m.component == component)
            .count()
    }
}

fn read(store: &WeightStore, path: &Path, key: &str) -> Result<FileTensor> {
    let (values, shape) = store.read_f32(key)?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::bad_file(
            path,
            format!(
                "tensor `{key}` holds a non-finite value ({}) at flat index {i}",
                values[i]
            ),
        ));
    }
    Ok(FileTensor {
        key: key.to_string(),
        values,
        shape,
    })
}

fn read_scalar(store: &WeightStore, path: &Path, key: &str) -> Result<f64> {
    let t = read(store, path, key)?;
    match t.values.as_slice() {
        [v] => Ok(*v as f64),
        _ => Err(Error::bad_file(
            path,
            format!("alpha `{key}` has shape {:?}, expected a scalar", t.shape),
        )),
    }
}

/// Checks that down/up are `[r, in]`/`[out, r]` (or convolutions `[r, in, k, k]`/`[out, r, 1, 1]`) with the same
/// rank; returns the rank.
fn check_factor_shapes(path: &Path, down: &FileTensor, up: &FileTensor) -> Result<usize> {
    let bad = |t: &FileTensor, what: &str| {
        Error::bad_file(
            path,
            format!(
                "tensor `{}` has shape {:?}, expected {what}",
                t.key, t.shape
            ),
        )
    };
    match down.shape.len() {
        2 => {}
        4 if down.shape[2] == down.shape[3] => {}
        _ => return Err(bad(down, "a down factor [r, in] or [r, in, k, k]")),
    }
    match up.shape.as_slice() {
        [_, _] | [_, _, 1, 1] => {}
        _ => return Err(bad(up, "an up factor [out, r] or [out, r, 1, 1]")),
    }
    let (r_down, r_up) = (down.shape[0], up.shape[1]);
    if r_down == 0 {
        return Err(bad(down, "a rank of at least 1"));
    }
    if r_down != r_up {
        return Err(Error::bad_file(
            path,
            format!(
                "rank mismatch: `{}` {:?} has rank {r_down} but `{}` {:?} has rank {r_up}",
                down.key, down.shape, up.key, up.shape
            ),
        ));
    }
    Ok(r_down)
}

/// `alpha / r`: kohya's `.alpha` (0 or absent means alpha = r, as kohya and A1111 treat it); for PEFT an
/// `.alpha` tensor, else the adapter metadata (`lora_alpha`, `alpha_pattern`, rsLoRA), else 1.
fn module_scale(
    path: &Path,
    module: &ModuleRef,
    format: LoraFormat,
    rank: usize,
    alpha: Option<f64>,
    config: Option<&AdapterConfig>,
    down_key: &str,
) -> Result<f64> {
    let r = rank as f64;
    if let Some(a) = alpha.filter(|&a| a != 0.0) {
        return Ok(a / r);
    }
    if format == LoraFormat::Kohya || alpha.is_some() {
        return Ok(1.0);
    }
    let (Some(cfg), ModuleRef::Path(name)) = (config, module) else {
        return Ok(1.0);
    };
    let (expected_rank, cfg_alpha) = cfg.rank_and_alpha(name);
    if let Some(er) = expected_rank.filter(|&er| er != rank) {
        return Err(Error::bad_file(
            path,
            format!("`{down_key}` has rank {rank} but the adapter metadata gives module `{name}` rank {er}"),
        ));
    }
    let alpha = cfg_alpha.unwrap_or(r);
    Ok(if cfg.use_rslora {
        alpha / r.sqrt()
    } else {
        alpha / r
    })
}
