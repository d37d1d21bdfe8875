//! The [`Generator`] of this build on Stable Diffusion: loads the model once, then makes each job's
//! image. It implements the `base` method (`StableDiffusion::generate_latent` + `decode_latent` with the
//! job's plain prompt and noise seed); the other methods answer [`JobError::Unavailable`] until the
//! composition methods are plugged in here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::backend::Backend;

use super::generator::{GeneratedImage, Generator, GeneratorInfo, JobContext, JobError};
use super::job::{Job, JobModel};
use super::plan::Target;
use crate::config::MethodKind;
use crate::latent_io;
use crate::models::sd::{LoadOptions, StableDiffusion};
use crate::pipeline::GenerateParams;

/// SD 1.x on backend `B`.
pub struct SdGenerator<B: Backend> {
    device: B::Device,
    target: Target,
    dtype: crate::config::RunDtype,
    loaded: Option<(JobModel, StableDiffusion<B>, f64)>,
}

impl<B: Backend> SdGenerator<B> {
    /// A generator on `device`; `backend`/`device_name` name them for provenance and hashes.
    pub fn new(
        device: B::Device,
        backend: &str,
        device_name: &str,
        dtype: crate::config::RunDtype,
    ) -> Self {
        Self {
            device,
            target: Target {
                backend: backend.to_string(),
                device: device_name.to_string(),
            },
            dtype,
            loaded: None,
        }
    }

    /// The model of `job`, loaded on first use (and again when a job names another model).
    fn model(&mut self, m: &JobModel) -> Result<(&StableDiffusion<B>, f64), JobError> {
        let same = self.loaded.as_ref().is_some_and(|(have, _, _)| {
            have.path == m.path && have.config_dir == m.config_dir && have.dtype == m.dtype
        });
        if !same {
            let path: PathBuf = m.path.clone().ok_or_else(|| {
                JobError::Fatal(
                    "the config sets no `model.path` and this build has no embedded default model yet; set `model.path` to a diffusers folder or a .safetensors checkpoint".into(),
                )
            })?;
            let t = Instant::now();
            let options = LoadOptions {
                dtype: m.dtype.dtype(),
                config_dir: m.config_dir.clone(),
            };
            let sd = StableDiffusion::<B>::load(&path, &options, &self.device).map_err(|e| {
                JobError::Fatal(format!("loading the model {}: {e}", path.display()))
            })?;
            self.loaded = Some((m.clone(), sd, t.elapsed().as_secs_f64()));
            let (_, sd, secs) = self.loaded.as_ref().expect("just loaded");
            return Ok((sd, *secs));
        }
        let (_, sd, _) = self.loaded.as_ref().expect("checked");
        Ok((sd, 0.0))
    }
}

impl<B: Backend> Generator for SdGenerator<B> {
    fn info(&self) -> GeneratorInfo {
        GeneratorInfo {
            target: self.target.clone(),
            dtype: self.dtype.as_str().to_string(),
        }
    }

    fn generate(&mut self, job: &Job, ctx: &JobContext<'_>) -> Result<GeneratedImage, JobError> {
        if job.kind != MethodKind::Base {
            return Err(JobError::Unavailable(job.kind));
        }
        let t0 = Instant::now();
        let (sd, load_s) = self.model(&job.model)?;
        let native = sd.unet_config.sample_size * sd.vae_scale_factor();
        let params = GenerateParams {
            prompt: job.prompt.text.clone(),
            negative_prompt: job.prompt.negative.clone(),
            steps: job.sampler.steps,
            guidance: job.sampler.guidance,
            scheduler: job.sampler.scheduler,
            width: job.sampler.width.unwrap_or(native),
            height: job.sampler.height.unwrap_or(native),
            seed: job.noise_seed,
            clip_skip: job.sampler.clip_skip,
        };
        ctx.steps.step(0, job.sampler.steps, "denoise");
        let out = sd.generate_latent(&params, None)?;
        ctx.steps
            .step(job.sampler.steps, job.sampler.steps, "decode");
        let t_dec = Instant::now();
        let decoded = sd.decode_latent(out.latent)?;
        let image = latent_io::to_rgb8(&decoded)?;
        let decode_s = t_dec.elapsed().as_secs_f64();
        let mut timings = BTreeMap::new();
        timings.insert("load".to_string(), load_s);
        timings.insert("denoise".to_string(), out.denoise_seconds);
        timings.insert("decode".to_string(), decode_s);
        timings.insert("total".to_string(), t0.elapsed().as_secs_f64());
        Ok(GeneratedImage {
            image,
            timings,
            details: serde_json::json!({ "width": params.width, "height": params.height }),
        })
    }
}
