//! `single`: one of the job's LoRAs on the base prompt with that LoRA's trigger words; also the shared
//! single-pass helpers (prompt encoding with classifier-free guidance, one guided UNet step).

use burn::tensor::{backend::AutodiffBackend, Tensor};

use super::job::insert_triggers;
use super::{guide, CompositionJob, CompositionMethod, StepContext, StepOutput};
use crate::error::{Error, Result};
use crate::models::sd::StableDiffusion;

/// `[neg, pos]` (CFG) or `[pos]` prompt embeddings with the text encoder's current adapters; clip_skip on
/// the prompt only, as diffusers.
pub fn encode_context<B: AutodiffBackend>(
    sd: &StableDiffusion<B>,
    job: &CompositionJob,
    prompt: &str,
) -> Result<Tensor<B, 3>> {
    let pos = sd.encode_prompts(&[prompt], job.clip_skip)?;
    Ok(if job.cfg() {
        let neg = sd.encode_prompts(&[&job.negative_prompt], None)?;
        Tensor::cat(vec![neg, pos], 0)
    } else {
        pos
    })
}

/// One UNet call on `[z, z]` (or `[z]` without guidance) and the guided prediction.
pub fn cfg_step<B: AutodiffBackend>(
    sd: &StableDiffusion<B>,
    ctx: &StepContext<'_, B>,
    latent: Tensor<B, 4>,
    context: Tensor<B, 3>,
) -> Result<StepOutput<B>> {
    let cfg = context.dims()[0] == 2;
    let input = if cfg {
        Tensor::cat(vec![latent.clone(), latent.clone()], 0)
    } else {
        latent.clone()
    };
    let input = ctx.scheduler.scale_model_input(input, ctx.index);
    let b = input.dims()[0];
    let eps = sd.unet.forward(input, &vec![ctx.t as f32; b], context)?;
    let eps = if cfg {
        let mut h = eps.chunk(2, 0);
        let cond = h.pop().expect("two halves");
        let uncond = h.pop().expect("two halves");
        guide(uncond, cond, ctx.guidance)
    } else {
        eps
    };
    Ok(StepOutput { eps, latent })
}

/// One LoRA.
#[derive(Debug)]
pub struct Single<B: AutodiffBackend> {
    lora: usize,
    context: Option<Tensor<B, 3>>,
}

impl<B: AutodiffBackend> Single<B> {
    pub fn new(lora: usize) -> Self {
        Self {
            lora,
            context: None,
        }
    }
}

impl<B: AutodiffBackend> CompositionMethod<B> for Single<B> {
    fn name(&self) -> &'static str {
        "single"
    }

    fn prepare(&mut self, sd: &mut StableDiffusion<B>, job: &CompositionJob) -> Result<()> {
        let l = job.loras.get(self.lora).ok_or_else(|| {
            Error::invalid(
                "single.lora",
                format!(
                    "index {} but the job has {} LoRAs",
                    self.lora,
                    job.loras.len()
                ),
            )
        })?;
        let mut active = vec![(l.id, l.weight)];
        active.extend(job.style);
        sd.set_adapters(&active)?;
        sd.set_lora_scale(job.lora_scale)?;
        let prompt = insert_triggers(&job.base_prompt, &l.concept.class_noun, &l.concept.triggers)?;
        self.context = Some(encode_context(sd, job, &prompt)?);
        Ok(())
    }

    fn step(
        &mut self,
        sd: &mut StableDiffusion<B>,
        ctx: &StepContext<'_, B>,
        latent: Tensor<B, 4>,
    ) -> Result<StepOutput<B>> {
        cfg_step(sd, ctx, latent, self.context.clone().expect("prepare ran"))
    }

    fn finish(&mut self, sd: &mut StableDiffusion<B>) {
        self.context = None;
        let _ = sd.set_adapters(&[]);
        let _ = sd.set_lora_scale(1.0);
    }
}
