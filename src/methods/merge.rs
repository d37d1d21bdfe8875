//! `merge` (LoRA Merge of Multi-LoRA-Composition): every LoRA active at once in UNet and text encoder,
//! `W' = W + s * sum_i w_i (alpha_i / r_i) B_i A_i` — a sum, not an average — on the combined prompt. The
//! reference keeps the adapters unfused (`set_adapters(loras)` + `scale`); `fuse = true` merges the deltas into
//! the weights instead (same result up to rounding, faster).

use burn::tensor::{backend::AutodiffBackend, Tensor};

use super::single::{cfg_step, encode_context};
use super::{CompositionJob, CompositionMethod, StepContext, StepOutput};
use crate::error::Result;
use crate::models::sd::StableDiffusion;

#[derive(Debug)]
pub struct Merge<B: AutodiffBackend> {
    fuse: bool,
    context: Option<Tensor<B, 3>>,
}

impl<B: AutodiffBackend> Merge<B> {
    pub fn new(fuse: bool) -> Self {
        Self {
            fuse,
            context: None,
        }
    }
}

impl<B: AutodiffBackend> CompositionMethod<B> for Merge<B> {
    fn name(&self) -> &'static str {
        "merge"
    }

    fn prepare(&mut self, sd: &mut StableDiffusion<B>, job: &CompositionJob) -> Result<()> {
        let mut all: Vec<_> = job.loras.iter().map(|l| (l.id, l.weight)).collect();
        all.extend(job.style);
        if self.fuse {
            sd.set_adapters(&[])?;
            sd.fuse_loras(&all, job.lora_scale)?;
        } else {
            sd.set_adapters(&all)?;
            sd.set_lora_scale(job.lora_scale)?;
        }
        self.context = Some(encode_context(sd, job, &job.combined()?)?);
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
        sd.unfuse_loras();
        let _ = sd.set_adapters(&[]);
        let _ = sd.set_lora_scale(1.0);
    }
}
