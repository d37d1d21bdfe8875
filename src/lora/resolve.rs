//! Matching a LoRA file's modules to the loaded model's layers: dotted paths exactly, kohya names through the
//! model's own paths (`down_blocks.0.attentions.0.proj_in` <-> `down_blocks_0_attentions_0_proj_in`), then
//! checking that each factor pair fits its layer and laying it out the way the layer stores it.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::backend::Backend;

use super::file::{LoraFile, LoraModule};
use super::key::{Component, ModuleRef};
use super::targets::{LoraTargets, Target};
use crate::error::{Error, Result};

/// What to do with keys that match no module of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unmatched {
    /// Refuse the file, naming the first such key (the default).
    #[default]
    Error,
    /// Skip them; they are listed in [`Resolved::skipped`].
    Warn,
}

/// The shape of a targetable layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerShape {
    Linear {
        d_in: usize,
        d_out: usize,
    },
    Conv {
        c_in: usize,
        c_out: usize,
        kernel: usize,
    },
}

impl std::fmt::Display for LayerShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Linear { d_in, d_out } => write!(f, "Linear {d_in} -> {d_out}"),
            Self::Conv {
                c_in,
                c_out,
                kernel,
            } => write!(f, "Conv2d {c_in} -> {c_out}, {kernel}x{kernel}"),
        }
    }
}

/// The targetable layers of one model component, by dotted path and by kohya name.
#[derive(Debug, Clone, Default)]
pub struct ModelTargets {
    pub paths: BTreeMap<String, LayerShape>,
    /// kohya name -> every dotted path that spells it (more than one would be ambiguous).
    kohya: HashMap<String, Vec<String>>,
}

impl ModelTargets {
    pub fn collect<B: Backend, M: LoraTargets<B>>(model: &mut M) -> Self {
        let mut t = Self::default();
        model.for_each_target("", &mut |path, target| {
            let shape = match target {
                Target::Linear(l) => LayerShape::Linear {
                    d_in: l.d_in(),
                    d_out: l.d_out(),
                },
                Target::Conv2d(c) => LayerShape::Conv {
                    c_in: c.c_in(),
                    c_out: c.c_out(),
                    kernel: c.kernel(),
                },
            };
            t.paths.insert(path.to_string(), shape);
            t.kohya
                .entry(path.replace('.', "_"))
                .or_default()
                .push(path.to_string());
        });
        t
    }

    /// The model path a module reference names: `Ok(None)` when it names none.
    fn find(&self, module: &ModuleRef) -> std::result::Result<Option<String>, Vec<String>> {
        match module {
            ModuleRef::Path(p) => Ok(self.paths.contains_key(p).then(|| p.clone())),
            ModuleRef::Kohya(k) => match self.kohya.get(k).map(|v| v.as_slice()) {
                None => Ok(None),
                Some([one]) => Ok(Some(one.clone())),
                Some(many) => Err(many.to_vec()),
            },
        }
    }
}

/// One module's factors in the layer's storage layout (row-major `f32`).
#[derive(Debug, Clone)]
pub enum LayerFactors {
    /// down `[d_in, r]`, up `[r, d_out]` (transposed from PyTorch's `[r, d_in]`, `[d_out, r]`).
    Linear {
        down: Vec<f32>,
        up: Vec<f32>,
        d_in: usize,
        d_out: usize,
        rank: usize,
    },
    /// down `[r, c_in, k, k]`, up `[c_out, r, 1, 1]`.
    Conv {
        down: Vec<f32>,
        up: Vec<f32>,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        rank: usize,
    },
}

/// A file matched against a model: per component, model path -> (factors, alpha / r).
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub layers: [BTreeMap<String, (LayerFactors, f64)>; 2],
    /// Keys skipped under [`Unmatched::Warn`].
    pub skipped: Vec<String>,
}

/// Matches every module of `file` to a layer of `targets[component]`. Shape mismatches are always errors (a
/// LoRA for another model); keys naming no module follow `policy`; a file of which nothing matches is an error.
pub fn resolve(
    file: &LoraFile,
    targets: &[ModelTargets; 2],
    policy: Unmatched,
) -> Result<Resolved> {
    let path = &file.path;
    let mut out = Resolved::default();
    let mut unmatched: Vec<(String, Component)> = Vec::new();
    for m in &file.modules {
        let t = &targets[m.component.index()];
        let found = t.find(&m.module).map_err(|paths| {
            Error::bad_file(
                path,
                format!(
                    "`{}`: kohya name `{}` is ambiguous in this model: {paths:?}",
                    m.down.key, m.module
                ),
            )
        })?;
        let Some(model_path) = found else {
            unmatched.extend(LoraFile::keys_of(m).into_iter().map(|k| (k, m.component)));
            continue;
        };
        let shape = t.paths[&model_path];
        let factors = lay_out(file, m, &model_path, shape)?;
        if out.layers[m.component.index()]
            .insert(model_path.clone(), (factors, m.scale))
            .is_some()
        {
            return Err(Error::bad_file(
                path,
                format!(
                    "module `{model_path}` of the {} is adapted twice (second: `{}`)",
                    m.component.name(),
                    m.down.key
                ),
            ));
        }
    }
    unmatched.extend(
        file.unrecognized
            .iter()
            .map(|k| (k.clone(), Component::Unet)),
    );
    let matched: usize = out.layers.iter().map(|l| l.len()).sum();
    if matched == 0 {
        let first = unmatched.first().map(|(k, _)| k.as_str()).unwrap_or("");
        return Err(Error::bad_file(
            path,
            format!(
                "none of its {} LoRA modules matches a layer of this model (e.g. `{first}`): a LoRA for another model?",
                file.modules.len()
            ),
        ));
    }
    if let Some((first, component)) = unmatched.first() {
        if policy == Unmatched::Error {
            let what = if file.unrecognized.contains(first) {
                "is not a LoRA tensor of any known format".to_string()
            } else {
                format!("matches no module of the {}", component.name())
            };
            return Err(Error::bad_file(
                path,
                format!(
                    "key `{first}` {what} ({} unmatched keys in all; --lora-unmatched warn skips them)",
                    unmatched.len()
                ),
            ));
        }
        out.skipped = unmatched.into_iter().map(|(k, _)| k).collect();
    }
    Ok(out)
}

/// Checks that a module's factors fit `shape` and returns them in the layer's layout. A linear layer accepts
/// 1x1-conv-shaped factors (`proj_in`/`proj_out` of original checkpoints) and a 1x1 conv accepts matrices.
fn lay_out(
    file: &LoraFile,
    m: &LoraModule,
    model_path: &str,
    shape: LayerShape,
) -> Result<LayerFactors> {
    let (d, u, r) = (&m.down.shape, &m.up.shape, m.rank);
    let misfit = || {
        Error::bad_file(
            &file.path,
            format!(
                "`{}` {d:?} and `{}` {u:?} do not fit module `{model_path}` of the {} ({shape}): a LoRA for another model?",
                m.down.key,
                m.up.key,
                m.component.name()
            ),
        )
    };
    let is_1x1 = |s: &[usize]| s.len() == 2 || s[2..] == [1, 1];
    match shape {
        LayerShape::Linear { d_in, d_out } => {
            if d[1] != d_in || u[0] != d_out || !is_1x1(d) || !is_1x1(u) {
                return Err(misfit());
            }
            Ok(LayerFactors::Linear {
                down: transpose(&m.down.values, r, d_in),
                up: transpose(&m.up.values, d_out, r),
                d_in,
                d_out,
                rank: r,
            })
        }
        LayerShape::Conv {
            c_in,
            c_out,
            kernel,
        } => {
            let down_ok = match d.len() {
                2 => kernel == 1,
                _ => d[2] == kernel && d[3] == kernel,
            };
            if d[1] != c_in || u[0] != c_out || !down_ok || !is_1x1(u) {
                return Err(misfit());
            }
            Ok(LayerFactors::Conv {
                down: m.down.values.clone(),
                up: m.up.values.clone(),
                c_in,
                c_out,
                kernel,
                rank: r,
            })
        }
    }
}

/// Row-major `[rows, cols]` -> `[cols, rows]`.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = v[i * cols + j];
        }
    }
    out
}
