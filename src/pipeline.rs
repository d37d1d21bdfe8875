//! The sampling loop of `StableDiffusionPipeline`: encode the prompts, denoise with classifier-free
//! guidance, decode with the VAE.

use std::time::Instant;

use burn::tensor::{backend::Backend, Tensor};

use crate::error::{Error, Result};
use crate::lora::Component;
use crate::models::sd::StableDiffusion;
use crate::noise;
use crate::schedulers::{self, SchedulerKind};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub prompt: String,
    /// `""` when the user gives none, as diffusers does.
    pub negative_prompt: String,
    pub steps: usize,
    /// Classifier-free guidance weight `w`; `w <= 1` runs the conditional branch only.
    pub guidance: f64,
    pub scheduler: SchedulerKind,
    pub width: usize,
    pub height: usize,
    pub seed: u64,
    pub clip_skip: Option<usize>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: 50,
            guidance: 7.5,
            scheduler: SchedulerKind::Ddim,
            width: 512,
            height: 512,
            seed: 0,
            clip_skip: None,
        }
    }
}

/// The result of one generation.
#[derive(Debug, Clone)]
pub struct Generated<B: Backend> {
    /// The final diffusion latent `[1, 4, h, w]` (before dividing by the VAE scaling factor).
    pub latent: Tensor<B, 4>,
    /// Seconds spent in the denoising loop and in total.
    pub denoise_seconds: f64,
    pub total_seconds: f64,
}

impl<B: Backend> StableDiffusion<B> {
    /// The latent shape for an image of `width x height` pixels.
    pub fn latent_shape(&self, width: usize, height: usize) -> Result<[usize; 4]> {
        let f = self.vae_scale_factor();
        let k = f << self.unet.num_downsamples;
        if width == 0 || height == 0 || !width.is_multiple_of(k) || !height.is_multiple_of(k) {
            return Err(Error::invalid(
                "image size",
                format!("{width}x{height}: width and height must be positive multiples of {k} for this model"),
            ));
        }
        Ok([1, self.unet_config.in_channels, height / f, width / f])
    }

    /// Encodes prompts with the text encoder: `[n, 77, d]`.
    pub fn encode_prompts(
        &self,
        prompts: &[&str],
        clip_skip: Option<usize>,
    ) -> Result<Tensor<B, 3>> {
        let rows = prompts.len();
        self.lora.check_batch(Component::TextEncoder, rows)?;
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| self.tokenizer.encode(p)).collect();
        let device = self.unet.conv_in.weight.device();
        self.text_encoder.encode_ids(&ids, clip_skip, &device)
    }

    /// Runs the whole text-to-latent loop. `init_latent` is the initial noise before scaling by the
    /// scheduler's `init_noise_sigma` (diffusers' `latents=`); `None` draws it from `params.seed`.
    pub fn generate_latent(
        &self,
        params: &GenerateParams,
        init_latent: Option<Tensor<B, 4>>,
    ) -> Result<Generated<B>> {
        let t0 = Instant::now();
        if params.steps == 0 {
            return Err(Error::invalid("steps", "must be at least 1"));
        }
        let shape = self.latent_shape(params.width, params.height)?;
        let device = self.unet.conv_in.weight.device();
        let noise = match init_latent {
            Some(l) => {
                if l.dims() != shape {
                    return Err(Error::invalid(
                        "init latent",
                        format!(
                            "shape {:?}, expected {:?} for {}x{}",
                            l.dims(),
                            shape,
                            params.width,
                            params.height
                        ),
                    ));
                }
                l
            }
            None => noise::gaussian::<B>(params.seed, shape, &device),
        };
        let noise = if noise.dtype() == self.dtype {
            noise
        } else {
            noise.cast(self.dtype)
        };

        let cfg = params.guidance > 1.0;
        // [neg, pos] as diffusers concatenates them
        // diffusers applies clip_skip to the prompt only; the negative prompt always uses the last layer.
        let positive = self.encode_prompts(&[&params.prompt], params.clip_skip)?;
        let context = if cfg {
            let negative = self.encode_prompts(&[&params.negative_prompt], None)?;
            Tensor::cat(vec![negative, positive], 0)
        } else {
            positive
        };

        let mut scheduler =
            schedulers::build::<B>(params.scheduler, &self.scheduler_config, params.steps)?;
        let mut latents = noise * scheduler.init_noise_sigma();
        let timesteps: Vec<f64> = scheduler.timesteps().to_vec();
        let t_loop = Instant::now();
        for (i, &t) in timesteps.iter().enumerate() {
            let input = if cfg {
                Tensor::cat(vec![latents.clone(), latents.clone()], 0)
            } else {
                latents.clone()
            };
            let input = scheduler.scale_model_input(input, i);
            let b = input.dims()[0];
            self.lora.check_batch(Component::Unet, b)?;
            let eps = self
                .unet
                .forward(input, &vec![t as f32; b], context.clone())?;
            let eps = if cfg {
                let mut halves = eps.chunk(2, 0);
                let cond = halves.pop().expect("two halves");
                let uncond = halves.pop().expect("two halves");
                uncond.clone() + (cond - uncond) * params.guidance
            } else {
                eps
            };
            latents = scheduler.step(eps, i, latents);
        }
        Ok(Generated {
            latent: latents,
            denoise_seconds: t_loop.elapsed().as_secs_f64(),
            total_seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// Decodes a diffusion latent to an image `[1, 3, H, W]` in [0, 1].
    pub fn decode_latent(&self, latent: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        self.vae.decode_to_unit(latent / self.vae.scaling_factor)
    }
}
