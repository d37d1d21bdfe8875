//! `base`: the base model alone (no LoRA) on the base prompt (no trigger words).

use burn::tensor::{backend::AutodiffBackend, Tensor};

use super::single::{cfg_step, encode_context};
use super::{CompositionJob, CompositionMethod, StepContext, StepOutput};
use crate::error::Result;
use crate::models::sd::StableDiffusion;

/// The base model.
#[derive(Debug, Default)]
pub struct Base<B: AutodiffBackend> {
    context: Option<Tensor<B, 3>>,
}

impl<B: AutodiffBackend> CompositionMethod<B> for Base<B> {
    fn name(&self) -> &'static str {
        "base"
    }

    fn prepare(&mut self, sd: &mut StableDiffusion<B>, job: &CompositionJob) -> Result<()> {
        sd.set_adapters(&[])?;
        self.context = Some(encode_context(sd, job, &job.base_prompt)?);
        Ok(())
    }

    fn step(
        &mut self,
        sd: &mut StableDiffusion<B>,
        ctx: &StepContext<'_, B>,
        latent: Tensor<B, 4>,
    ) -> Result<StepOutput<B>> {
        let context = self.context.clone().expect("prepare ran");
        cfg_step(sd, ctx, latent, context)
    }

    fn finish(&mut self, _sd: &mut StableDiffusion<B>) {
        self.context = None;
    }
}
