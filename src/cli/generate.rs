//! `harness generate`: one image from a prompt.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use clora_harness::latent_io;
use clora_harness::models::sd::{LoadOptions, StableDiffusion};
use clora_harness::pipeline::GenerateParams;
use clora_harness::schedulers::SchedulerKind;

use super::backend::{check_precision, Device, Precision};

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// SD 1.x model: a diffusers folder or a single-file `.safetensors` checkpoint (LDM layout).
    #[arg(long)]
    pub model: PathBuf,
    /// For a single-file checkpoint: a diffusers folder whose configs describe it (default: SD 1.5's).
    #[arg(long)]
    pub model_config: Option<PathBuf>,
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// The negative prompt (default: empty, as diffusers).
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// Denoising steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance weight (<= 1 disables guidance).
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// Sampler: ddim, euler or dpmpp-2m (configured from the model's scheduler_config.json).
    #[arg(long, default_value = "ddim")]
    pub scheduler: SchedulerKind,
    /// Seed of the initial noise (ignored with --init-latent).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image width in pixels (default: the UNet's sample_size x 8).
    #[arg(long)]
    pub width: Option<usize>,
    /// Image height in pixels (default: the UNet's sample_size x 8).
    #[arg(long)]
    pub height: Option<usize>,
    /// diffusers' clip_skip (1 uses the penultimate text-encoder layer).
    #[arg(long)]
    pub clip_skip: Option<usize>,
    /// Initial noise: a safetensors file with one tensor `latent` [1,4,H/8,W/8], before scaling by
    /// the scheduler's init_noise_sigma (diffusers' `latents=`).
    #[arg(long)]
    pub init_latent: Option<PathBuf>,
    /// Also write the final latent (before VAE scaling) as a safetensors file with tensor `latent`.
    #[arg(long)]
    pub save_latent: Option<PathBuf>,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
    /// Where to run.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    /// Run precision (f16/bf16 on GPU only).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: Precision,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    check_precision(args.device, args.dtype)?;
    crate::with_backend!(args.device, |B, device| { run_on::<B>(&args, &device) })
}

fn run_on<B: burn::tensor::backend::Backend>(args: &GenerateArgs, device: &B::Device) -> Result<()> {
    let options = LoadOptions {
        dtype: args.dtype.dtype(),
        config_dir: args.model_config.clone(),
    };
    let sd = StableDiffusion::<B>::load(&args.model, &options, device)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let default_side = sd.unet_config.sample_size * sd.vae_scale_factor();
    let params = GenerateParams {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        steps: args.steps,
        guidance: args.guidance,
        scheduler: args.scheduler,
        width: args.width.unwrap_or(default_side),
        height: args.height.unwrap_or(default_side),
        seed: args.seed,
        clip_skip: args.clip_skip,
    };
    let init = match &args.init_latent {
        Some(path) => {
            let shape = sd.latent_shape(params.width, params.height)?;
            Some(latent_io::read_latent::<B>(path, shape, device).context("reading --init-latent")?)
        }
        None => None,
    };
    let out = sd.generate_latent(&params, init)?;
    if let Some(path) = &args.save_latent {
        latent_io::write_latent(path, &out.latent).context("writing --save-latent")?;
    }
    let image = sd.decode_latent(out.latent)?;
    latent_io::save_png(&args.out, &image).context("writing the image")?;
    eprintln!(
        "wrote {} ({}x{}, {} steps in {:.2}s, total {:.2}s)",
        args.out.display(),
        params.width,
        params.height,
        params.steps,
        out.denoise_seconds,
        out.total_seconds
    );
    Ok(())
}
