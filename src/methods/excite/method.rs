//! The Attend-and-Excite method: the base model on the base prompt, or with LoRAs the job's LoRAs all active
//! (as `merge`, unfused) on the combined prompt (trigger words in); at each denoising index `i`, one UNet
//! pass on the prompt row alone with the gradient tracked for the latent `z`, the loss of [`super::loss`] on
//! its cross-attention maps, and `z <- z - step_i * dL/dz` while `i < max_iter_to_alter`
//! (`step_i = scale_factor * sqrt(scale_range[i])`). At a refinement index, while the loss exceeds
//! `1 - threshold` (at most `max_refinement_steps` times), the update repeats first. The guided prediction is
//! then taken at the updated latent, as in the official pipeline.
//!
//! As the official code: the refinement loop tests the loss of the latent *before* its last update, so it
//! makes one update more than it needs (at least two), and the maps are the mean over the cross-attention
//! layers at the attention resolution and their heads. Differences: the maps are probed at one resolution
//! of this UNet (`attention_stride_px`), and where the official code forwards the same latent twice at the
//! start of a refinement, the first forward is used twice here (same values, one UNet call less).

use burn::tensor::{backend::AutodiffBackend, ElementConversion, Tensor};
use serde::Serialize;

use super::loss::{excite_loss, gaussian_kernel, max_attention_per_token};
use super::params::ExciteParams;
use crate::error::{Error, Result};
use crate::methods::clora::engine::probed;
use crate::methods::clora::maps::{aggregate, MapRows};
use crate::methods::clora::tokens::word_positions;
use crate::methods::single::{cfg_step, encode_context};
use crate::methods::{CompositionJob, CompositionMethod, StepContext, StepOutput};
use crate::models::blocks::AttentionProbe;
use crate::models::sd::StableDiffusion;

/// One denoising index's record: every loss computed there, in order (the first at the latent the step
/// received, then after each refinement update), and the number of updates made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExciteStepRecord {
    pub index: usize,
    pub losses: Vec<f32>,
    pub updates: usize,
}

/// Attend-and-Excite on the base model, or on the job's LoRAs merged.
#[derive(Debug)]
pub struct Excite<B: AutodiffBackend> {
    params: ExciteParams,
    /// `[neg, pos]` (or `[pos]` without guidance) for the guided prediction.
    context: Option<Tensor<B, 3>>,
    /// `[1, 77, d]`: the prompt row the maps come from.
    cond: Option<Tensor<B, 3>>,
    /// Token positions to excite (0 = `<|startoftext|>`).
    tokens: Vec<usize>,
    /// The softmax over tokens runs over positions `1..end`.
    end: usize,
    /// Attention-map side (h, w) in cells.
    map_hw: (usize, usize),
    records: Vec<ExciteStepRecord>,
}

impl<B: AutodiffBackend> Excite<B> {
    pub fn new(params: ExciteParams) -> Self {
        Self {
            params,
            context: None,
            cond: None,
            tokens: Vec::new(),
            end: 0,
            map_hw: (0, 0),
            records: Vec::new(),
        }
    }

    /// The token positions excited in the last prepared prompt.
    pub fn tokens(&self) -> &[usize] {
        &self.tokens
    }

    /// One record per denoising index with a loss computed, of the last image.
    pub fn records(&self) -> &[ExciteStepRecord] {
        &self.records
    }

    /// The loss at latent `z` and, when it is not 0, its gradient to `z`.
    fn loss_and_grad(
        &self,
        sd: &StableDiffusion<B>,
        ctx: &StepContext<'_, B>,
        z: Tensor<B, 4>,
    ) -> Result<(f32, Option<Tensor<B::InnerBackend, 4>>)> {
        let (h, w) = self.map_hw;
        let z = z.detach().require_grad();
        let input = ctx.scheduler.scale_model_input(z.clone(), ctx.index);
        let mut probe = AttentionProbe::at_query_len(h * w);
        let cond = self.cond.clone().expect("prepare ran");
        sd.unet
            .forward_probed(input, &[ctx.t as f32], cond, &mut probe)?;
        // [1, q, 77] -> [q, 77]
        let maps = aggregate(&probed(probe, h * w)?, &[(0, 0)], MapRows::Cond);
        let [_, q, tokens] = maps.dims();
        let kernel = gaussian_kernel(self.params.sigma);
        let peaks = max_attention_per_token(
            maps.reshape([q, tokens]),
            self.map_hw,
            self.end,
            &self.tokens,
            self.params.softmax_scale,
            self.params.smooth.then_some(&kernel),
        );
        let loss = excite_loss(peaks);
        let value: f32 = loss.clone().into_scalar().elem();
        if !value.is_finite() {
            return Err(Error::invalid(
                format!("excite step {} (t = {})", ctx.index, ctx.t),
                format!("the loss is {value}; this image is stopped"),
            ));
        }
        if value == 0.0 {
            return Ok((value, None));
        }
        let grads = loss.backward();
        let grad = z.grad(&grads).ok_or_else(|| {
            Error::invalid(
                "excite latent update",
                "the loss does not depend on the latent",
            )
        })?;
        Ok((value, Some(grad)))
    }
}

/// `z - step * grad`.
fn update<B: AutodiffBackend>(
    z: Tensor<B, 4>,
    grad: Tensor<B::InnerBackend, 4>,
    step: f64,
) -> Tensor<B, 4> {
    Tensor::from_inner(z.inner() - grad * step)
}

impl<B: AutodiffBackend> CompositionMethod<B> for Excite<B> {
    fn name(&self) -> &'static str {
        "excite"
    }

    fn prepare(&mut self, sd: &mut StableDiffusion<B>, job: &CompositionJob) -> Result<()> {
        self.params.validate()?;
        self.records.clear();
        // the job's LoRAs all active at once, as `merge` without fusing; none: the base model
        let mut active: Vec<_> = job.loras.iter().map(|l| (l.id, l.weight)).collect();
        active.extend(job.style);
        sd.set_adapters(&active)?;
        sd.set_lora_scale(job.lora_scale)?;
        let prompt = &if job.loras.is_empty() {
            job.base_prompt.clone()
        } else {
            job.combined()?
        };
        let max = sd.tokenizer.max_length();
        let mut tokens = Vec::new();
        for word in &self.params.words {
            let pos = word_positions(&sd.tokenizer, prompt, word);
            if pos.is_empty() {
                return Err(Error::invalid(
                    format!("excite.words (prompt \"{prompt}\")"),
                    format!("the word \"{word}\" does not occur in the prompt (within its first {} tokens)", max - 2),
                ));
            }
            tokens.extend(pos);
        }
        tokens.sort_unstable();
        tokens.dedup();
        self.end = if self.params.normalize_eot {
            // the prompt's tokens, positions 1..=n; <|endoftext|> at n + 1
            (sd.tokenizer.tokens(prompt).len() + 1).min(max - 1)
        } else {
            // the official SD 1.x setting: every position but the start token and the last
            max - 1
        };
        let stride = self.params.attention_stride_px;
        self.map_hw = (job.height.div_ceil(stride), job.width.div_ceil(stride));
        if self.map_hw.0 < 2 || self.map_hw.1 < 2 {
            return Err(Error::invalid(
                "excite.attention_stride_px",
                format!(
                    "{stride} px gives {}x{} maps for {}x{} images; the smoothing needs at least 2x2",
                    self.map_hw.1, self.map_hw.0, job.width, job.height
                ),
            ));
        }
        self.tokens = tokens;
        let context = encode_context(sd, job, prompt)?;
        let rows = context.dims()[0];
        self.cond = Some(context.clone().narrow(0, rows - 1, 1));
        self.context = Some(context);
        Ok(())
    }

    fn step(
        &mut self,
        sd: &mut StableDiffusion<B>,
        ctx: &StepContext<'_, B>,
        latent: Tensor<B, 4>,
    ) -> Result<StepOutput<B>> {
        let p = self.params.clone();
        let i = ctx.index;
        let threshold = p.threshold_at(i);
        let mut z = latent.detach();
        if i < p.max_iter_to_alter || threshold.is_some() {
            let step = p.step_size(i, ctx.steps);
            let (first, mut grad) = self.loss_and_grad(sd, ctx, z.clone())?;
            let mut losses = vec![first];
            let mut updates = 0;
            if let Some(th) = threshold {
                let target = (1.0 - th).max(0.0) as f32;
                // the official loop: each pass takes the loss at the current latent and updates from it;
                // the test is on the loss before the pass's update
                let mut tested = first;
                let mut passes = 0;
                while tested > target {
                    passes += 1;
                    let (l, g) = if passes == 1 {
                        (first, grad.take())
                    } else {
                        let (l, g) = self.loss_and_grad(sd, ctx, z.clone())?;
                        losses.push(l);
                        (l, g)
                    };
                    if let Some(g) = g {
                        z = update(z, g, step);
                        updates += 1;
                    }
                    tested = l;
                    if passes >= p.max_refinement_steps {
                        break;
                    }
                }
                if passes > 0 {
                    let (l, g) = self.loss_and_grad(sd, ctx, z.clone())?;
                    losses.push(l);
                    grad = g;
                }
            }
            if i < p.max_iter_to_alter {
                if let Some(g) = grad {
                    z = update(z, g, step);
                    updates += 1;
                }
            }
            self.records.push(ExciteStepRecord {
                index: i,
                losses,
                updates,
            });
            if !crate::methods::sampler::all_finite(&z) {
                return Err(Error::invalid(
                    format!("excite step {i} (t = {})", ctx.t),
                    "the latent update produced a non-finite value; this image is stopped",
                ));
            }
        }
        cfg_step(sd, ctx, z, self.context.clone().expect("prepare ran"))
    }

    fn finish(&mut self, sd: &mut StableDiffusion<B>) {
        self.context = None;
        self.cond = None;
        let _ = sd.set_adapters(&[]);
        let _ = sd.set_lora_scale(1.0);
    }
}
