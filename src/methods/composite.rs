//! `composite` (LoRA Composite of Multi-LoRA-Composition): at every step one CFG prediction per LoRA (that LoRA
//! active on both halves), `eps_u = mean_k eps_u,k`, `eps_c = mean_k eps_c,k`, then guidance. No base branch. The
//! prompt is the combined one, encoded once with every LoRA active in the text encoder (as the reference, which
//! calls `set_adapters(loras)` before the pipeline). `batched`: all LoRAs in one UNet call with per-row adapters.

use burn::tensor::{backend::AutodiffBackend, Tensor};

use super::single::encode_context;
use super::{guide, split_cfg_pairs, CompositionJob, CompositionMethod, StepContext, StepOutput};
use crate::error::{Error, Result};
use crate::lora::key::Component;
use crate::lora::state::AdapterId;
use crate::models::sd::StableDiffusion;

#[derive(Debug)]
pub struct Composite<B: AutodiffBackend> {
    batched: bool,
    /// Adapters of each branch (its LoRA + the style LoRA).
    branches: Vec<Vec<AdapterId>>,
    context: Option<Tensor<B, 3>>,
}

impl<B: AutodiffBackend> Composite<B> {
    pub fn new(batched: bool) -> Self {
        Self {
            batched,
            branches: Vec::new(),
            context: None,
        }
    }
}

impl<B: AutodiffBackend> CompositionMethod<B> for Composite<B> {
    fn name(&self) -> &'static str {
        "composite"
    }

    fn prepare(&mut self, sd: &mut StableDiffusion<B>, job: &CompositionJob) -> Result<()> {
        if job.loras.is_empty() {
            return Err(Error::invalid("composite", "needs at least one LoRA"));
        }
        if !job.cfg() {
            return Err(Error::invalid(
                "composite.guidance",
                "LoRA Composite averages CFG pairs: guidance must be > 1",
            ));
        }
        let mut all: Vec<_> = job.loras.iter().map(|l| (l.id, l.weight)).collect();
        all.extend(job.style);
        sd.set_adapters(&all)?;
        sd.set_lora_scale(job.lora_scale)?;
        self.context = Some(encode_context(sd, job, &job.combined()?)?);
        self.branches = job
            .loras
            .iter()
            .map(|l| {
                std::iter::once(l.id)
                    .chain(job.style.map(|s| s.0))
                    .collect()
            })
            .collect();
        if self.batched {
            let rows: Vec<Vec<AdapterId>> = self
                .branches
                .iter()
                .flat_map(|b| [b.clone(), b.clone()])
                .collect();
            sd.set_lora_rows(Component::Unet, &rows)?;
        }
        Ok(())
    }

    fn step(
        &mut self,
        sd: &mut StableDiffusion<B>,
        ctx: &StepContext<'_, B>,
        latent: Tensor<B, 4>,
    ) -> Result<StepOutput<B>> {
        let context = self.context.clone().expect("prepare ran");
        let n = self.branches.len();
        let pair = Tensor::cat(vec![latent.clone(), latent.clone()], 0);
        let pair = ctx.scheduler.scale_model_input(pair, ctx.index);
        let eps = if self.batched {
            let input = pair.repeat_dim(0, n);
            let ctxs = context.repeat_dim(0, n);
            sd.unet.forward(input, &vec![ctx.t as f32; 2 * n], ctxs)?
        } else {
            let mut outs = Vec::new();
            for b in self.branches.clone() {
                sd.set_lora_rows(Component::Unet, &[b.clone(), b])?;
                outs.push(
                    sd.unet
                        .forward(pair.clone(), &[ctx.t as f32; 2], context.clone())?,
                );
            }
            Tensor::cat(outs, 0)
        };
        let pairs = split_cfg_pairs(eps, n);
        let (us, cs): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        let uncond = Tensor::cat(us, 0).mean_dim(0);
        let cond = Tensor::cat(cs, 0).mean_dim(0);
        Ok(StepOutput {
            eps: guide(uncond, cond, ctx.guidance),
            latent,
        })
    }

    fn finish(&mut self, sd: &mut StableDiffusion<B>) {
        self.context = None;
        sd.clear_lora_rows(Component::Unet);
        let _ = sd.set_adapters(&[]);
        let _ = sd.set_lora_scale(1.0);
    }
}
