//! Writing the trained model as a diffusers `StableDiffusionPipeline` folder: `model_index.json`,
//! `scheduler/scheduler_config.json` (SD 1.5's), and `unet/`, `vae/`, `text_encoder/` with their
//! `config.json` and safetensors weights under diffusers/transformers keys (f16 by default). The tokenizer is
//! the real CLIP one, which the loader embeds, so the folder carries none.

use std::path::Path;

use serde_json::Value;

use super::arch::ToyArch;
use super::error::{ToyError, ToyResult};
use super::param_names::write_safetensors;
use super::text_unet::{TEXT_FILE, UNET_FILE};
use super::train_base::{checkpoint_dir, ema_dir};
use crate::models::weights::WeightStore;

fn write_json(path: &Path, value: &Value) -> ToyResult<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ToyError::io(parent, e))?;
    }
    let text = serde_json::to_string_pretty(value).expect("JSON serializes") + "\n";
    std::fs::write(path, text).map_err(|e| ToyError::io(path, e))
}

/// Copies a safetensors file, converting every tensor to f16 (or f32).
pub fn convert_weights(from: &Path, to: &Path, f16: bool) -> ToyResult<()> {
    let store = WeightStore::open(&[from.to_path_buf()])?;
    let tensors = store
        .keys()
        .map(|k| {
            store
                .read_f32(k)
                .map(|(v, shape)| (k.to_string(), shape, v))
        })
        .collect::<crate::error::Result<Vec<_>>>()?;
    write_safetensors(to, &tensors, f16)
}

/// Writes the diffusers folder `out` from the trained weights in `work` (`vae/`, and the weight average
/// `base_ema/` when the training kept one, else the last checkpoint `base/`).
pub fn export_pipeline(
    arch: &ToyArch,
    work: &Path,
    scaling_factor: f64,
    out: &Path,
    f16: bool,
) -> ToyResult<()> {
    write_json(&out.join("model_index.json"), &ToyArch::model_index_json())?;
    write_json(
        &out.join("scheduler/scheduler_config.json"),
        &ToyArch::scheduler_json(),
    )?;
    write_json(&out.join("unet/config.json"), &arch.unet_json())?;
    write_json(&out.join("vae/config.json"), &arch.vae_json(scaling_factor))?;
    write_json(&out.join("text_encoder/config.json"), &arch.text_json())?;
    convert_weights(
        &work.join("vae").join(UNET_FILE),
        &out.join("vae").join(UNET_FILE),
        f16,
    )?;
    let base = if ema_dir(work).join("unet").join(UNET_FILE).is_file() {
        ema_dir(work)
    } else {
        checkpoint_dir(work)
    };
    convert_text_unet(&base, out, f16)
}

/// Copies `text_encoder/` and `unet/` weights from below `from` to below `to` (the layout of a diffusers folder
/// and of the base phase's checkpoints alike), converting them to f16 (or f32).
pub fn convert_text_unet(from: &Path, to: &Path, f16: bool) -> ToyResult<()> {
    convert_weights(
        &from.join("unet").join(UNET_FILE),
        &to.join("unet").join(UNET_FILE),
        f16,
    )?;
    convert_weights(
        &from.join("text_encoder").join(TEXT_FILE),
        &to.join("text_encoder").join(TEXT_FILE),
        f16,
    )
}
