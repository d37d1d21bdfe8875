//! Fine-tuning a trained model's VAE decoder on its frozen encoder. The base model (and every LoRA trained on
//! it) sees only the encoder's latents, so a new decoder leaves them valid: it changes how sharp the final
//! images are, nothing else. Short VAE training leaves a decoder that blurs the 2-4 px pattern accents into a
//! darker fill (`harness toyworld oracle-check --vae MODEL` measures it); this phase trains the decoder alone
//! on scenes rich in patterns, with the L1 loss weighted up on accent pixels. Resumable like every phase.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::flat_adam::FlatAdam;
use burn::tensor::{backend::AutodiffBackend, Distribution, ElementConversion, Tensor};
use image::RgbImage;

use super::arch::ToyArch;
use super::error::{ToyError, ToyResult};
use super::export::convert_weights;
use super::progress::{check_finite, learning_rate, LossLog, PhaseState};
use super::tensors::{accent_weights, images_to_tensor};
use super::text_unet::UNET_FILE;
use super::train_vae::{autoencoder_image, vae_model, vae_names};
use super::trainable::trainable;
use crate::files::files_below;
use crate::latent_io::write_atomic;
use crate::models::vae::AutoencoderKL;

pub const PHASE: &str = "decoder";

/// Seeds of the decoder's training scenes: `DECODER_SEED_BASE + i` (apart from the base model's training seeds
/// at 2^32 and the held-out ones at 2^40).
pub const DECODER_SEED_BASE: u64 = 1 << 36;

/// Settings of the decoder fine-tuning.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderTrainConfig {
    pub steps: usize,
    /// Whole 64x64 images per step.
    pub batch: usize,
    /// Peak learning rate (50 warm-up steps, cosine decay to 5%).
    pub lr: f64,
    /// Extra L1 weight on accent pixels (dark pattern marks): a pixel's weight is `1 + accent_weight`.
    pub accent_weight: f64,
    pub seed: u64,
    pub checkpoint_every: usize,
    pub log_every: usize,
}

impl Default for DecoderTrainConfig {
    fn default() -> Self {
        Self {
            steps: 1500,
            batch: 8,
            lr: 5e-4,
            accent_weight: 4.0,
            seed: 3,
            checkpoint_every: 100,
            log_every: 25,
        }
    }
}

/// The `i`-th training image (see [`autoencoder_image`]).
pub fn decoder_image(i: u64) -> ToyResult<RgbImage> {
    autoencoder_image(DECODER_SEED_BASE + i, i)
}

/// What the fine-tuning produced.
#[derive(Debug, Clone)]
pub struct DecoderOutcome {
    pub final_loss: f64,
    pub seconds: f64,
    /// The model folder written.
    pub out: PathBuf,
}

/// Fine-tunes the decoder of `model`'s VAE (a diffusers folder of `arch`) with checkpoints in `work/decoder/`, then
/// writes `out`: a copy of `model` with the new VAE weights (f16 unless `f32`).
pub fn train_decoder<B: AutodiffBackend>(
    arch: &ToyArch,
    model: &Path,
    out: &Path,
    cfg: &DecoderTrainConfig,
    work: &Path,
    f32: bool,
    device: &B::Device,
    log: &mut dyn FnMut(&str),
) -> ToyResult<DecoderOutcome> {
    if cfg.batch == 0 {
        return Err(ToyError::Training(
            "decoder batch must be at least 1".into(),
        ));
    }
    let dir = work.join(PHASE);
    std::fs::create_dir_all(&dir).map_err(|e| ToyError::io(&dir, e))?;
    let mut state = PhaseState::load(work, PHASE)?.unwrap_or(PhaseState {
        total: cfg.steps,
        ..PhaseState::default()
    });
    let names = vae_names::<B>(arch, device)?;
    let mut last = state.values.get("final_loss").copied().unwrap_or(f64::NAN);
    if !(state.done && state.total == cfg.steps) {
        state.total = cfg.steps;
        state.done = false;
        let from = if state.step > 0 {
            log(&format!(
                "decoder: resuming at step {}/{}",
                state.step, cfg.steps
            ));
            dir.clone()
        } else {
            model.join("vae")
        };
        // The loader builds frozen parameters: the encoder stays so, the decoder learns.
        let vae: AutoencoderKL<B> = vae_model(arch, Some(&from), 0, device)?;
        let mut vae = AutoencoderKL {
            decoder: trainable(vae.decoder),
            post_quant_conv: vae.post_quant_conv.map(trainable),
            ..vae
        };
        let mut optim = FlatAdam::new();
        let mut losses = LossLog::open(work, PHASE, state.seconds)?;
        let t0 = Instant::now();
        let start = state.step;
        for step in state.step..cfg.steps {
            let images = (0..cfg.batch)
                .map(|k| {
                    decoder_image(cfg.seed.wrapping_mul(1 << 24) + (step * cfg.batch + k) as u64)
                })
                .collect::<ToyResult<Vec<_>>>()?;
            // x: [b, 3, 64, 64] in [-1, 1]; weights: [b, 1, 64, 64]
            let x = images_to_tensor::<B>(&images, device);
            let weights = accent_weights::<B>(&images, cfg.accent_weight, device);
            let post = vae.encode(x.clone())?;
            // Posterior sample, as the diffusion latents are: z [b, 4, 16, 16]
            let eps =
                Tensor::<B, 4>::random(post.mean.dims(), Distribution::Normal(0.0, 1.0), device);
            let z = post.std() * eps + post.mean;
            let y = vae.decode(z.detach())?;
            let err = (y - x).abs() * weights.clone();
            let loss = err.mean() / weights.mean();
            let value = loss.clone().into_scalar().elem::<f64>();
            check_finite(PHASE, step, value)?;
            let lr = learning_rate(step, cfg.steps, cfg.lr, 50, 0.05);
            vae = optim.step(lr, vae, &loss.backward())?.0;
            last = losses.record(step, value, lr)?;
            let done = step + 1;
            if done % cfg.log_every == 0 || done == cfg.steps {
                let per = t0.elapsed().as_secs_f64() / (done - start) as f64;
                log(&format!(
                    "decoder {done}/{}: weighted L1 {:.4} (smoothed {last:.4}), {per:.2} s/step, ~{:.0} s left",
                    cfg.steps,
                    losses.take_window_mean(),
                    per * (cfg.steps - done) as f64
                ));
            }
            if done % cfg.checkpoint_every == 0 || done == cfg.steps {
                names.save(&vae, &dir.join(UNET_FILE), false)?;
                state.step = done;
                state.seconds = losses.seconds();
                state.save(work, PHASE)?;
            }
        }
        state.done = true;
        if last.is_finite() {
            state.values.insert("final_loss".into(), last);
        }
        state.save(work, PHASE)?;
    }
    write_model(model, &dir.join(UNET_FILE), out, !f32)?;
    log(&format!(
        "decoder: done, {:.0} s; model: {}",
        state.seconds,
        out.display()
    ));
    Ok(DecoderOutcome {
        final_loss: last,
        seconds: state.seconds,
        out: out.to_path_buf(),
    })
}

/// Writes `out` as a copy of the model folder `model` with `vae_weights` as its VAE (converted to f16 when
/// `f16`). Every file is written atomically (a temporary file, then a rename).
fn write_model(model: &Path, vae_weights: &Path, out: &Path, f16: bool) -> ToyResult<()> {
    let vae_file = Path::new("vae").join(UNET_FILE);
    for rel in files_below(model)? {
        let to = out.join(&rel);
        if rel == vae_file {
            convert_weights(vae_weights, &to, f16)?;
        } else {
            let from = model.join(&rel);
            let bytes = std::fs::read(&from).map_err(|e| ToyError::io(&from, e))?;
            write_atomic(&to, &bytes)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_images_mix_patterns_and_concepts() {
        // Every third image is a concept scene; the others are plain scenes of the world's size.
        for i in 0..6 {
            let img = decoder_image(i).unwrap();
            assert_eq!((img.width(), img.height()), (64, 64));
        }
        assert_ne!(decoder_image(0).unwrap(), decoder_image(3).unwrap());
    }
}
