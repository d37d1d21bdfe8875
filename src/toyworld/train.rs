//! The whole base-model training: VAE, then the cached training latents, then text encoder + UNet, then the
//! export to a diffusers folder. Every phase resumes from the work folder.

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;

use super::arch::ToyArch;
use super::error::{ToyError, ToyResult};
use super::export::export_pipeline;
use super::latent_data::LatentSet;
use super::seed_work::{seed_work, ModelStart};
use super::train_base::{train_base, BaseOutcome, BaseTrainConfig};
use super::train_vae::{train_vae, vae_model, VaeOutcome, VaeTrainConfig};

/// Everything the base training needs.
#[derive(Debug, Clone)]
pub struct TrainPlan {
    pub arch: ToyArch,
    pub vae: VaeTrainConfig,
    pub base: BaseTrainConfig,
    /// Checkpoints, caches and loss logs.
    pub work: PathBuf,
    /// The diffusers folder to write.
    pub out: PathBuf,
    /// Write f16 weights.
    pub f16: bool,
    /// Start a new work folder from a finished model instead of from scratch (see [`seed_work`]).
    pub start: Option<ModelStart>,
}

/// What the training produced.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub vae: VaeOutcome,
    pub base: BaseOutcome,
    pub out: PathBuf,
}

/// Runs (or resumes) every phase and exports the model.
pub fn train_pipeline<B: AutodiffBackend>(
    plan: &TrainPlan,
    device: &B::Device,
    log: &mut dyn FnMut(&str),
) -> ToyResult<TrainReport> {
    std::fs::create_dir_all(&plan.work).map_err(|e| ToyError::io(&plan.work, e))?;
    match ToyArch::of_work_folder(&plan.work)? {
        Some(recorded) if recorded != plan.arch => {
            return Err(ToyError::Training(format!(
                "{} was started with another architecture ({recorded:?}); use a new work folder for {:?}",
                plan.work.display(),
                plan.arch
            )))
        }
        Some(_) => {}
        None => plan.arch.write_configs(&plan.work.join("arch"))?,
    }
    if let Some(start) = &plan.start {
        if plan.base.steps <= start.step {
            return Err(ToyError::Training(format!(
                "the base phase's {} steps do not go past step {}, where the start from {} stands; ask for more steps",
                plan.base.steps,
                start.step,
                start.model.display()
            )));
        }
        seed_work::<B::InnerBackend>(
            &plan.arch,
            start,
            plan.vae.crop_steps + plan.vae.full_steps,
            plan.base.seed,
            &plan.work,
            device,
            log,
        )?;
    }
    let vae = train_vae::<B>(&plan.arch, &plan.vae, &plan.work, device, log)?;
    let tokenizer = plan.arch.tokenizer()?;
    let data = {
        let vae_model =
            vae_model::<B>(&plan.arch, Some(&plan.work.join("vae")), 0, device)?.valid();
        LatentSet::build_or_load::<B::InnerBackend>(
            &data_path(&plan.work),
            plan.base.dataset,
            &plan.base.world,
            plan.base.caption_order,
            &vae_model,
            &tokenizer,
            device,
            log,
        )?
    };
    // the diffusion's latents: the VAE's unit-variance latents, times the input scaling
    let scaling_factor = vae.scaling_factor * plan.base.latent_scale;
    let base = train_base::<B>(
        &plan.arch,
        &plan.base,
        &data,
        scaling_factor,
        &tokenizer,
        &plan.work,
        device,
        log,
    )?;
    export_pipeline(&plan.arch, &plan.work, scaling_factor, &plan.out, plan.f16)?;
    log(&format!("wrote {}", plan.out.display()));
    Ok(TrainReport {
        vae,
        base,
        out: plan.out.clone(),
    })
}

/// The cached training latents.
pub fn data_path(work: &Path) -> PathBuf {
    work.join("base_latents.safetensors")
}
