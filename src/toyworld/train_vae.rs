//! Training the toyworld's AutoencoderKL: L1 reconstruction plus a small KL term, on random crops first (the
//! convolutions are translation-equivariant and crops cost a fraction of a full image), then on whole images.
//! Images mix plain scenes and concept scenes, so the decoder can draw every pattern and the outline style.
//! Resumable: the weights and the step are checkpointed to the work folder.

use std::path::Path;
use std::time::Instant;

use super::flat_adam::FlatAdam;
use burn::module::AutodiffModule;
use burn::tensor::{
    backend::AutodiffBackend, backend::Backend, DType, Distribution, ElementConversion, Tensor,
};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::arch::ToyArch;
use super::concept::Concept;
use super::error::ToyResult;
use super::param_names::ParamNames;
use super::progress::{check_finite, learning_rate, LossLog, PhaseState};
use super::render::render;
use super::scene::{concept_scene, PlainWorld, CANVAS};
use super::tensors::{accent_weights, crop, images_to_tensor};
use super::trainable::trainable;
use crate::models::vae::{AutoencoderKL, VaeConfig};
use crate::models::weights::{VarBuilder, WeightStore};

pub const PHASE: &str = "vae";
/// The VAE's weights file in a work folder's `vae/` and in a diffusers folder's `vae/` alike.
pub const VAE_FILE: &str = "diffusion_pytorch_model.safetensors";

/// Settings of the VAE training.
#[derive(Debug, Clone, PartialEq)]
pub struct VaeTrainConfig {
    /// Steps on crops, then steps on whole images.
    pub crop_steps: usize,
    pub full_steps: usize,
    pub crop_batch: usize,
    pub full_batch: usize,
    /// Crop side in pixels (a multiple of the VAE's scale factor).
    pub crop: usize,
    pub lr: f64,
    pub kl_weight: f64,
    /// Extra L1 weight on accent pixels (dark pattern marks): a pixel's weight is `1 + accent_weight`.
    pub accent_weight: f64,
    pub seed: u64,
    pub checkpoint_every: usize,
    pub log_every: usize,
}

impl Default for VaeTrainConfig {
    fn default() -> Self {
        Self {
            crop_steps: 1000,
            full_steps: 200,
            crop_batch: 16,
            full_batch: 8,
            crop: 32,
            lr: 2e-3,
            kl_weight: 1e-4,
            accent_weight: 4.0,
            seed: 1,
            checkpoint_every: 100,
            log_every: 25,
        }
    }
}

/// The `i`-th training image of the VAE (see [`autoencoder_image`]).
pub fn vae_image(seed: u64, i: u64) -> ToyResult<RgbImage> {
    autoencoder_image(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i, i)
}

/// An autoencoder training image drawn from scene seed `seed`, of kind `i % 3`: a plain scene, a scene whose
/// objects all carry patterns, or a concept scene (the four concepts in turn, by `i / 3`). Patterns are the
/// finest detail of the world (2-4 px marks, under one latent cell), so two thirds of the images carry them.
pub fn autoencoder_image(seed: u64, i: u64) -> ToyResult<RgbImage> {
    let scene = match i % 3 {
        0 => PlainWorld::default().sample(seed)?,
        1 => PlainWorld {
            pattern_rate: 1.0,
            ..PlainWorld::default()
        }
        .sample(seed)?,
        _ => concept_scene(Concept::ALL[(i / 3 % 4) as usize], seed)?,
    };
    Ok(render(&scene))
}

/// Loads the VAE of `dir` (a `vae/` folder) or, with `None`, builds a fresh one.
pub fn vae_model<B: Backend>(
    arch: &ToyArch,
    dir: Option<&Path>,
    seed: u64,
    device: &B::Device,
) -> ToyResult<AutoencoderKL<B>> {
    let cfg: VaeConfig = arch.vae_config(1.0)?;
    let vb = match dir {
        Some(d) => VarBuilder::new(
            WeightStore::open_component(d, &[VAE_FILE])?,
            device,
            DType::F32,
        ),
        None => VarBuilder::random(seed, device, DType::F32),
    };
    Ok(AutoencoderKL::load(&vb, &cfg)?)
}

/// The VAE's parameter names.
pub fn vae_names<B: Backend>(arch: &ToyArch, device: &B::Device) -> ToyResult<ParamNames> {
    let cfg = arch.vae_config(1.0)?;
    ParamNames::discover(|vb: &VarBuilder<B>| AutoencoderKL::load(vb, &cfg), device)
}

/// What the VAE training produced.
#[derive(Debug, Clone)]
pub struct VaeOutcome {
    pub scaling_factor: f64,
    pub final_loss: f64,
    pub seconds: f64,
}

/// Trains (or resumes, or finds finished) the VAE in `work/vae/`.
pub fn train_vae<B: AutodiffBackend>(
    arch: &ToyArch,
    cfg: &VaeTrainConfig,
    work: &Path,
    device: &B::Device,
    log: &mut dyn FnMut(&str),
) -> ToyResult<VaeOutcome> {
    let dir = work.join("vae");
    let total = cfg.crop_steps + cfg.full_steps;
    let mut state = PhaseState::load(work, PHASE)?.unwrap_or(PhaseState {
        total,
        ..PhaseState::default()
    });
    if state.done {
        return Ok(VaeOutcome {
            scaling_factor: state.values.get("scaling_factor").copied().unwrap_or(1.0),
            final_loss: state.values.get("final_loss").copied().unwrap_or(f64::NAN),
            seconds: state.seconds,
        });
    }
    state.total = total;
    let names = vae_names::<B>(arch, device)?;
    let model: AutoencoderKL<B> = if state.step > 0 {
        log(&format!("vae: resuming at step {}/{total}", state.step));
        vae_model(arch, Some(&dir), cfg.seed, device)?
    } else {
        vae_model(arch, None, cfg.seed, device)?
    };
    let mut model = trainable(model);
    let mut optim = FlatAdam::new();
    let mut losses = LossLog::open(work, PHASE, state.seconds)?;
    let mut last = f64::NAN;
    let t0 = Instant::now();
    let start = state.step;
    for step in state.step..total {
        let mut rng =
            ChaCha8Rng::seed_from_u64(cfg.seed ^ (step as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        let (batch, side) = if step < cfg.crop_steps {
            (cfg.crop_batch, cfg.crop)
        } else {
            (cfg.full_batch, CANVAS)
        };
        let mut images = Vec::with_capacity(batch);
        for k in 0..batch {
            let img = vae_image(cfg.seed, (step * 64 + k) as u64)?;
            if side < CANVAS {
                let cells = ((CANVAS - side) / arch.vae_scale_factor()) as u32 + 1;
                let f = arch.vae_scale_factor() as u32;
                let (x, y) = (
                    rng.random_range(0..cells) * f,
                    rng.random_range(0..cells) * f,
                );
                images.push(crop(&img, x, y, side as u32));
            } else {
                images.push(img);
            }
        }
        // x: [b, 3, side, side] in [-1, 1]; weights: [b, 1, side, side]
        let x = images_to_tensor::<B>(&images, device);
        let weights = accent_weights::<B>(&images, cfg.accent_weight, device);
        let post = model.encode(x.clone())?;
        let eps = Tensor::<B, 4>::random(post.mean.dims(), Distribution::Normal(0.0, 1.0), device);
        let z = post.mean.clone() + post.std() * eps;
        let y = model.decode(z)?;
        // L1 weighted up on accent pixels, normalised by the mean weight.
        let rec = ((y - x).abs() * weights.clone()).mean() / weights.mean();
        let kl =
            (post.mean.clone().powf_scalar(2.0) + post.logvar.clone().exp() - post.logvar - 1.0)
                .mean()
                * 0.5;
        let loss = rec.clone() + kl * cfg.kl_weight;
        let value = loss.clone().into_scalar().elem::<f64>();
        check_finite(PHASE, step, value)?;
        let lr = learning_rate(step, total, cfg.lr, 50, 0.05);
        model = optim.step(lr, model, &loss.backward())?.0;
        last = losses.record(step, rec.into_scalar().elem::<f64>(), lr)?;
        let done = step + 1;
        if done % cfg.log_every == 0 || done == total {
            let per = t0.elapsed().as_secs_f64() / (done - start) as f64;
            log(&format!(
                "vae {done}/{total}: L1 {:.4} (smoothed {last:.4}), {per:.2} s/step, ~{:.0} s left",
                losses.take_window_mean(),
                per * (total - done) as f64
            ));
        }
        if done % cfg.checkpoint_every == 0 || done == total {
            names.save(&model, &dir.join(VAE_FILE), false)?;
            state.step = done;
            state.seconds = losses.seconds();
            state.save(work, PHASE)?;
        }
    }
    // Scaling factor: unit variance of the latent means over fresh whole images.
    let inner = model.valid();
    let images = (0..64u64)
        .map(|i| vae_image(cfg.seed ^ 0xFACE, 1_000_000 + i))
        .collect::<ToyResult<Vec<_>>>()?;
    let x = images_to_tensor::<B::InnerBackend>(&images, device);
    let z = inner.encode(x)?.mean;
    let mean = z.clone().mean().into_scalar().elem::<f64>();
    let var = (z - mean)
        .powf_scalar(2.0)
        .mean()
        .into_scalar()
        .elem::<f64>();
    let scaling_factor = 1.0 / var.sqrt().max(1e-6);
    state.done = true;
    state.seconds = losses.seconds();
    state.values.insert("scaling_factor".into(), scaling_factor);
    // JSON has no NaN: a phase of zero steps records no loss.
    if last.is_finite() {
        state.values.insert("final_loss".into(), last);
    }
    state.save(work, PHASE)?;
    // A config beside the weights makes `work/vae` a VAE folder the SD loader reads (`oracle-check --vae WORK`).
    let config = dir.join("config.json");
    let text = serde_json::to_string_pretty(&arch.vae_json(scaling_factor)).expect("JSON") + "\n";
    std::fs::write(&config, text).map_err(|e| super::error::ToyError::io(&config, e))?;
    log(&format!(
        "vae: done, scaling factor {scaling_factor:.4}, {:.0} s",
        state.seconds
    ));
    Ok(VaeOutcome {
        scaling_factor,
        final_loss: last,
        seconds: state.seconds,
    })
}
