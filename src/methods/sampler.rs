//! The denoising loop shared by every composition method.

use std::time::Instant;

use burn::tensor::{backend::AutodiffBackend, ElementConversion, Tensor};

use super::{CompositionJob, CompositionMethod, StepContext};
use crate::error::{Error, Result};
use crate::models::sd::StableDiffusion;
use crate::schedulers;

/// A composed image's final latent (before VAE scaling) and timings.
#[derive(Debug, Clone)]
pub struct Composed<B: AutodiffBackend> {
    /// `[1, 4, h, w]`
    pub latent: Tensor<B, 4>,
    pub seconds: f64,
}

/// Runs `method` over the denoising loop of `job` from `init_noise` (`[1, 4, h, w]`, before scaling by the
/// scheduler's `init_noise_sigma`, as diffusers' `latents=`). The method's `finish` always runs, so the model is
/// clean for the next job even after an error. A non-finite latent stops the image with an error naming the step.
pub fn compose<B: AutodiffBackend>(
    sd: &mut StableDiffusion<B>,
    method: &mut dyn CompositionMethod<B>,
    job: &CompositionJob,
    init_noise: Tensor<B, 4>,
) -> Result<Composed<B>> {
    compose_with_progress(sd, method, job, init_noise, &mut |_, _| {})
}

/// [`compose`], calling `on_step(done, total)` after each denoising step.
pub fn compose_with_progress<B: AutodiffBackend>(
    sd: &mut StableDiffusion<B>,
    method: &mut dyn CompositionMethod<B>,
    job: &CompositionJob,
    init_noise: Tensor<B, 4>,
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<Composed<B>> {
    let t0 = Instant::now();
    let shape = sd.latent_shape(job.width, job.height)?;
    if init_noise.dims() != shape {
        return Err(Error::invalid(
            "initial noise",
            format!(
                "shape {:?}, expected {:?} for {}x{}",
                init_noise.dims(),
                shape,
                job.width,
                job.height
            ),
        ));
    }
    if job.steps == 0 {
        return Err(Error::invalid("steps", "must be at least 1"));
    }
    let result = (|| {
        method.prepare(sd, job)?;
        let mut scheduler = schedulers::build::<B>(job.scheduler, &sd.scheduler_config, job.steps)?;
        let noise = if init_noise.dtype() == sd.dtype {
            init_noise
        } else {
            init_noise.cast(sd.dtype)
        };
        let mut latent = noise * scheduler.init_noise_sigma();
        let timesteps = scheduler.timesteps().to_vec();
        for (i, &t) in timesteps.iter().enumerate() {
            let ctx = StepContext {
                index: i,
                t,
                steps: timesteps.len(),
                guidance: job.guidance,
                scheduler: scheduler.as_ref(),
            };
            let out = method.step(sd, &ctx, latent)?;
            latent = scheduler.step(out.eps.detach(), i, out.latent.detach());
            if !all_finite(&latent) {
                return Err(Error::invalid(
                    format!("{} step {i} (t = {t})", method.name()),
                    "the latent became NaN or infinite; this image is stopped",
                ));
            }
            on_step(i + 1, timesteps.len());
        }
        Ok(latent)
    })();
    method.finish(sd);
    let latent = result?;
    Ok(Composed {
        latent,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Whether every value of `x` is finite.
pub fn all_finite<B: burn::tensor::backend::Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    // x - x is 0 where x is finite and NaN where it is NaN or infinite.
    let bad: bool = (x.clone() - x.clone()).is_nan().any().into_scalar().elem();
    !bad
}
