//! Starting a training work folder from a finished model folder, so that a model whose work folder is gone
//! (the committed one: work folders are not committed) can be trained further: the VAE phase is marked done
//! with the model's weights and `scaling_factor`, and the base phase's checkpoint and weight average both start
//! from the model's text encoder and UNet at a given step of the schedule. The Adam moments restart, as on any
//! resume (see [`super::train_base`]). The architecture to train may be the model's grown (more cross-attention
//! levels or transformer layers, [`super::grow`]): its UNet then starts as the model's, with identity modules added.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::arch::ToyArch;
use super::error::{ToyError, ToyResult};
use super::export::{convert_text_unet, convert_weights};
use super::grow::{grow_unet, growth_refused};
use super::progress::{read_json_if_present, PhaseState};
use super::text_unet::UNET_FILE;
use super::train_base::{self, checkpoint_dir, ema_dir};
use super::train_vae::{self, VAE_FILE};
use crate::models::vae::config::VaeConfig;

/// Where a work folder was started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStart {
    /// The diffusers folder whose weights the work folder started from.
    pub model: PathBuf,
    /// The base phase's step those weights stand for (its place on the learning-rate schedule).
    pub step: usize,
}

/// The record a seeded work folder keeps of its start.
pub fn record_path(work: &Path) -> PathBuf {
    work.join("seeded_from.json")
}

impl ModelStart {
    /// The start recorded in `work`, if the folder was seeded.
    pub fn recorded(work: &Path) -> ToyResult<Option<Self>> {
        read_json_if_present(&record_path(work), "record")
    }
}

/// Seeds `work` from `start.model` unless it was seeded from the same start before (then a rerun resumes
/// it). A work folder that holds another training is an error: seeding would overwrite it.
///
/// `vae_steps` is the VAE phase's length in the plan (the seeded VAE phase is recorded as finished at it);
/// `seed` draws the new weights of a grown UNet. Returns whether the folder was seeded now.
pub fn seed_work<B: Backend>(
    arch: &ToyArch,
    start: &ModelStart,
    vae_steps: usize,
    seed: u64,
    work: &Path,
    device: &B::Device,
    log: &mut dyn FnMut(&str),
) -> ToyResult<bool> {
    // The record names the model by its absolute path, so a rerun from another folder finds it.
    let start = &ModelStart {
        model: std::fs::canonicalize(&start.model).map_err(|e| ToyError::io(&start.model, e))?,
        step: start.step,
    };
    if let Some(recorded) = ModelStart::recorded(work)? {
        if recorded == *start {
            return Ok(false);
        }
        return Err(ToyError::Training(format!(
            "{} was started from {} at step {}, not from {} at step {}; use a new work folder",
            work.display(),
            recorded.model.display(),
            recorded.step,
            start.model.display(),
            start.step
        )));
    }
    for phase in [train_vae::PHASE, train_base::PHASE] {
        let p = PhaseState::path(work, phase);
        if p.is_file() {
            return Err(ToyError::Training(format!(
                "{} already holds a training ({}); starting from {} needs a new work folder",
                work.display(),
                p.display(),
                start.model.display()
            )));
        }
    }
    let found = ToyArch::from_model_dir(&start.model)?;
    if let Some(why) = growth_refused(&found, arch) {
        return Err(ToyError::bad_file(
            &start.model,
            format!(
                "the model's architecture ({found:?}) is not the one to train ({arch:?}), nor can it grow into it: {why}"
            ),
        ));
    }
    let vae_config = VaeConfig::from_file(&start.model.join("vae").join("config.json"))?;
    // f32 copies: the checkpoints the trainers write and read back are f32.
    convert_weights(
        &start.model.join("vae").join(VAE_FILE),
        &work.join("vae").join(VAE_FILE),
        false,
    )?;
    let checkpoint = checkpoint_dir(work);
    convert_text_unet(&start.model, &checkpoint, false)?;
    if found != *arch {
        let added = grow_unet::<B>(arch, &checkpoint.join("unet").join(UNET_FILE), seed, device)?;
        log(&format!(
            "{}: the UNet grown by {added} tensors (cross-attention levels {:?} -> {:?}, transformer layers {} -> {})",
            checkpoint.display(),
            found.unet_cross_attention,
            arch.unet_cross_attention,
            found.unet_transformer_layers,
            arch.unet_transformer_layers
        ));
    }
    // The weight average starts as the same (grown) weights.
    convert_text_unet(&checkpoint, &ema_dir(work), false)?;
    let mut vae_state = PhaseState {
        step: vae_steps,
        total: vae_steps,
        done: true,
        ..PhaseState::default()
    };
    vae_state
        .values
        .insert("scaling_factor".into(), vae_config.scaling_factor);
    vae_state.save(work, train_vae::PHASE)?;
    PhaseState {
        step: start.step,
        total: start.step,
        ..PhaseState::default()
    }
    .save(work, train_base::PHASE)?;
    let text = serde_json::to_string_pretty(start).expect("record serializes") + "\n";
    crate::latent_io::write_atomic(&record_path(work), text.as_bytes())?;
    log(&format!(
        "{}: started from {} (VAE done, scaling factor {:.4}; text encoder + UNet at step {})",
        work.display(),
        start.model.display(),
        vae_config.scaling_factor,
        start.step
    ));
    Ok(true)
}
