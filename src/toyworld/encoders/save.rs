//! Seeded initialisation of a `VarMap` and writing a trained `VarMap` as a transformers model folder
//! (`config.json`, `preprocessor_config.json`, `model.safetensors` in f16).

use std::collections::HashMap;
use std::path::Path;

use candle::{DType, Tensor};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::data::candle_err;
use crate::toyworld::error::{ToyError, ToyResult};

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    // Box-Muller
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Re-initialises every variable from a seeded generator (candle's CPU generator cannot be seeded), by name:
/// norm weights 1, biases 0, `logit_scale` `ln(1/0.07)`, embeddings and tokens N(0, 0.02), other weights
/// N(0, 1/fan_in) (fan_in = the product of all but the first dimension).
pub fn reinit(varmap: &VarMap, seed: u64) -> candle::Result<()> {
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let shape = var.shape().clone();
        let dims = shape.dims().to_vec();
        let n = shape.elem_count();
        let is_norm = name.contains("norm") || name.contains("layrnorm");
        let values: Vec<f32> = if name == "logit_scale" {
            vec![(1.0f32 / 0.07).ln(); n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else if is_norm && name.ends_with(".weight") {
            vec![1.0; n]
        } else if name.contains("embedding") || name.contains("cls_token") {
            (0..n).map(|_| 0.02 * normal(&mut rng)).collect()
        } else {
            let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
            let std = (1.0 / fan_in as f32).sqrt();
            (0..n).map(|_| std * normal(&mut rng)).collect()
        };
        var.set(&Tensor::from_vec(values, shape, var.device())?)?;
    }
    Ok(())
}

/// The VarMap's tensors whose names do not start with one of `skip`, as f16.
pub fn tensors_f16(varmap: &VarMap, skip: &[&str]) -> candle::Result<HashMap<String, Tensor>> {
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    data.iter()
        .filter(|(k, _)| !skip.iter().any(|s| k.starts_with(s)))
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().to_dtype(DType::F16)?)))
        .collect()
}

fn write_json(path: &Path, v: &serde_json::Value) -> ToyResult<()> {
    let text =
        serde_json::to_string_pretty(v).map_err(|e| ToyError::bad_file(path, e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|e| ToyError::io(path, e))
}

/// Writes a model folder: `config.json`, `preprocessor_config.json` and `model.safetensors` (f16, the
/// VarMap's tensors except those under `skip`). Returns the size of the weight file in bytes.
pub fn write_folder(
    dir: &Path,
    config: &serde_json::Value,
    processor: &serde_json::Value,
    varmap: &VarMap,
    skip: &[&str],
) -> ToyResult<u64> {
    std::fs::create_dir_all(dir).map_err(|e| ToyError::io(dir, e))?;
    write_json(&dir.join("config.json"), config)?;
    write_json(&dir.join("preprocessor_config.json"), processor)?;
    let tensors = tensors_f16(varmap, skip).map_err(candle_err)?;
    let path = dir.join("model.safetensors");
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let views: Vec<(String, Tensor)> = {
        let mut v: Vec<_> = tensors.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = views
        .iter()
        .map(|(k, t)| {
            let vals = t.flatten_all()?.to_vec1::<half::f16>()?;
            let mut b = Vec::with_capacity(vals.len() * 2);
            for x in vals {
                b.extend_from_slice(&x.to_le_bytes());
            }
            Ok((k.clone(), b, t.dims().to_vec()))
        })
        .collect::<candle::Result<_>>()
        .map_err(candle_err)?;
    let st_views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(k, b, shape)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F16, shape.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| ToyError::bad_file(&path, e.to_string()))
        })
        .collect::<ToyResult<_>>()?;
    safetensors::serialize_to_file(st_views, Some(meta), &path)
        .map_err(|e| ToyError::bad_file(&path, e.to_string()))?;
    std::fs::metadata(&path)
        .map(|m| m.len())
        .map_err(|e| ToyError::io(&path, e))
}
