//! `harness generate`: one image from a prompt.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use clora_harness::latent_io;
use clora_harness::lora::{LoraFile, Unmatched};
use clora_harness::models::sd::{LoadOptions, StableDiffusion};
use clora_harness::pipeline::GenerateParams;
use clora_harness::schedulers::SchedulerKind;

use super::backend::{check_precision, Device, Precision};

#[derive(Debug, Args)]
#[command(
    after_help = "Either a prompt (--model, --prompt, --out, optional --lora: the base model or a naive merge of the \
LoRAs) or a job file (--job FILE.toml: one image with any composition method, CLoRA included, described in the \
schema of an experiment config; see configs/jobs/ and the README)."
)]
pub struct GenerateArgs {
    /// One image described completely in TOML (model, LoRAs, prompt, method and parameters, seed or initial
    /// noise, output); --out overrides its `out`, --device and --dtype apply, the other flags are refused.
    #[arg(long, conflicts_with_all = ["model", "prompt", "loras", "init_latent", "save_latent"])]
    pub job: Option<PathBuf>,
    /// SD 1.x model: a diffusers folder or a single-file `.safetensors` checkpoint (LDM layout).
    #[arg(long, required_unless_present = "job")]
    pub model: Option<PathBuf>,
    /// For a single-file checkpoint: a diffusers folder whose configs describe it (default: SD 1.5's).
    #[arg(long)]
    pub model_config: Option<PathBuf>,
    /// The prompt.
    #[arg(long, required_unless_present = "job")]
    pub prompt: Option<String>,
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
    /// Output PNG (with --job: default the job file's `out`).
    #[arg(long, required_unless_present = "job")]
    pub out: Option<PathBuf>,
    /// A LoRA file (kohya/A1111, diffusers/PEFT or older diffusers format) with an optional adapter weight,
    /// `PATH[:WEIGHT]` (default weight 1.0). Repeatable: several LoRAs are summed into the weights (naive
    /// merge, `W + s * sum_i w_i (alpha_i / r_i) B_i A_i`).
    #[arg(long = "lora", value_name = "PATH[:WEIGHT]", value_parser = parse_lora_arg)]
    pub loras: Vec<LoraArg>,
    /// Global LoRA scale `s` multiplying every LoRA (diffusers' `cross_attention_kwargs={"scale": s}`).
    #[arg(long, default_value_t = 1.0)]
    pub lora_scale: f64,
    /// What to do with LoRA keys that match no module of the model: stop with an error naming the key, or
    /// skip them with a warning listing every skipped key.
    #[arg(long, value_enum, default_value = "error")]
    pub lora_unmatched: UnmatchedArg,
    /// Where to run.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    /// Run precision (f16/bf16 on GPU only; with --job, default the job file's `model.dtype`).
    #[arg(long, value_enum)]
    pub dtype: Option<Precision>,
}

/// One `--lora PATH[:WEIGHT]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraArg {
    pub path: PathBuf,
    pub weight: f64,
}

/// `PATH[:WEIGHT]`: the text after the last `:` is the weight when it parses as a number, else part of the path.
fn parse_lora_arg(s: &str) -> std::result::Result<LoraArg, String> {
    let (path, weight) = match s.rsplit_once(':') {
        Some((p, w)) if !p.is_empty() => match w.parse::<f64>() {
            Ok(w) if w.is_finite() => (p, w),
            Ok(_) => return Err(format!("`{w}`: the LoRA weight must be a finite number")),
            Err(_) => (s, 1.0),
        },
        _ => (s, 1.0),
    };
    if path.is_empty() {
        return Err("empty LoRA path".into());
    }
    Ok(LoraArg {
        path: PathBuf::from(path),
        weight,
    })
}

/// `--lora-unmatched`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnmatchedArg {
    Error,
    Warn,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    if let Some(job) = &args.job {
        return super::job::run(job, args.out.as_deref(), args.device, args.dtype);
    }
    check_precision(args.device, args.dtype.unwrap_or(Precision::F32))?;
    crate::with_backend!(args.device, |B, device| { run_on::<B>(&args, &device) })
}

fn run_on<B: burn::tensor::backend::Backend>(
    args: &GenerateArgs,
    device: &B::Device,
) -> Result<()> {
    // clap requires these without --job
    let (Some(model), Some(prompt), Some(out_path)) = (&args.model, &args.prompt, &args.out) else {
        anyhow::bail!("--model, --prompt and --out are required (or give --job FILE.toml)");
    };
    let options = LoadOptions {
        dtype: args.dtype.unwrap_or(Precision::F32).dtype(),
        config_dir: args.model_config.clone(),
    };
    let mut sd = StableDiffusion::<B>::load(model, &options, device)
        .with_context(|| format!("loading model {}", model.display()))?;
    apply_loras(&mut sd, args)?;
    let default_side = sd.unet_config.sample_size * sd.vae_scale_factor();
    let params = GenerateParams {
        prompt: prompt.clone(),
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
            Some(
                latent_io::read_latent::<B>(path, shape, device)
                    .context("reading --init-latent")?,
            )
        }
        None => None,
    };
    let out = sd.generate_latent(&params, init)?;
    if let Some(path) = &args.save_latent {
        latent_io::write_latent(path, &out.latent).context("writing --save-latent")?;
    }
    let image = sd.decode_latent(out.latent)?;
    latent_io::save_png(out_path, &image).context("writing the image")?;
    eprintln!(
        "wrote {} ({}x{}, {} steps in {:.2}s, total {:.2}s)",
        out_path.display(),
        params.width,
        params.height,
        params.steps,
        out.denoise_seconds,
        out.total_seconds
    );
    Ok(())
}

/// Attaches every `--lora` and fuses their weighted sum (scaled by `--lora-scale`) into the weights.
fn apply_loras<B: burn::tensor::backend::Backend>(
    sd: &mut StableDiffusion<B>,
    args: &GenerateArgs,
) -> Result<()> {
    if args.loras.is_empty() {
        return Ok(());
    }
    let policy = match args.lora_unmatched {
        UnmatchedArg::Error => Unmatched::Error,
        UnmatchedArg::Warn => Unmatched::Warn,
    };
    let mut merged = Vec::new();
    for lora in &args.loras {
        let file = LoraFile::open(&lora.path)
            .with_context(|| format!("reading LoRA {}", lora.path.display()))?;
        let name = lora
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let load = sd
            .add_lora(&name, &file, lora.weight, policy)
            .with_context(|| format!("applying LoRA {}", lora.path.display()))?;
        if !load.skipped.is_empty() {
            eprintln!(
                "warning: {}: skipped {} keys that match no module of this model:",
                lora.path.display(),
                load.skipped.len()
            );
            for k in &load.skipped {
                eprintln!("  {k}");
            }
        }
        eprintln!(
            "LoRA {} (weight {}): {} UNet and {} text-encoder layers, {:?}",
            lora.path.display(),
            lora.weight,
            load.layers[0],
            load.layers[1],
            file.formats()
        );
        merged.push((load.id, lora.weight));
    }
    sd.fuse_loras(&merged, args.lora_scale)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_arg_with_and_without_weight() {
        let a = parse_lora_arg("dir/style.safetensors:0.75").unwrap();
        assert_eq!(
            (a.path, a.weight),
            (PathBuf::from("dir/style.safetensors"), 0.75)
        );
        let a = parse_lora_arg("dir/style.safetensors").unwrap();
        assert_eq!(
            (a.path, a.weight),
            (PathBuf::from("dir/style.safetensors"), 1.0)
        );
        // a colon that is not followed by a number belongs to the path
        let a = parse_lora_arg("C:/loras/x.safetensors").unwrap();
        assert_eq!(
            (a.path, a.weight),
            (PathBuf::from("C:/loras/x.safetensors"), 1.0)
        );
        assert!(parse_lora_arg("x.safetensors:inf").is_err());
        assert!(parse_lora_arg(":0.5").is_ok_and(|a| a.path == std::path::Path::new(":0.5")));
    }
}
