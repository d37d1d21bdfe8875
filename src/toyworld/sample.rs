//! One toyworld image of a prompt at a seed, as the judge samples it: `harness toyworld judge` and the choice of
//! a LoRA's checkpoint ([`lora_select`](super::lora_select)) draw their images through [`JudgeSampler::draw`],
//! so a checkpoint is chosen on the images the figures are measured by.

use burn::tensor::backend::Backend;
use image::RgbImage;

use super::error::ToyResult;
use super::tensors::tensor_to_images;
use crate::models::sd::StableDiffusion;
use crate::pipeline::GenerateParams;
use crate::schedulers::SchedulerKind;

/// The judge's sampler: DPM-Solver++ 2M, 25 steps, guidance 5 by default (since session 20).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JudgeSampler {
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: SchedulerKind,
}

impl Default for JudgeSampler {
    fn default() -> Self {
        Self {
            steps: 25,
            guidance: 5.0,
            scheduler: SchedulerKind::DpmPp2m,
        }
    }
}

impl JudgeSampler {
    /// `sd`'s 64x64 image of `prompt` at `seed` (with whatever adapters `sd` has attached).
    pub fn draw<B: Backend>(
        &self,
        sd: &StableDiffusion<B>,
        prompt: &str,
        seed: u64,
    ) -> ToyResult<RgbImage> {
        let params = GenerateParams {
            prompt: prompt.to_string(),
            steps: self.steps,
            guidance: self.guidance,
            scheduler: self.scheduler,
            width: 64,
            height: 64,
            seed,
            ..GenerateParams::default()
        };
        let latent = sd.generate_latent(&params, None)?.latent;
        // [1, 3, 64, 64] in [0, 1]
        Ok(tensor_to_images(sd.decode_latent(latent)?).remove(0))
    }
}
