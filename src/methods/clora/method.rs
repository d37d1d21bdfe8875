//! CLoRA as a [`CompositionMethod`]: prepares the branches (prompts, per-branch text encoding, concept groups
//! from words, per-row LoRAs) and runs [`engine`](super::engine) at each step, recording what a researcher
//! inspects (losses, latents per update, maps, masks).

use burn::tensor::{backend::AutodiffBackend, Tensor};

use super::engine::{forward_all, fuse, host_f32, masks_for, set_rows, update_once, Branches};
use super::layout::{make_layout, Layout};
use super::masks::MaskMode;
use super::params::CloraParams;
use super::tokens::concept_groups;
use crate::error::{Error, Result};
use crate::lora::key::Component;
use crate::lora::state::AdapterId;
use crate::methods::job::TokenIndices;
use crate::methods::{CompositionJob, CompositionMethod, StepContext, StepOutput};
use crate::models::sd::StableDiffusion;
use crate::schedulers::SchedulerKind;

/// What happened at one denoising step (values copied to the CPU).
#[derive(Debug, Clone, PartialEq)]
pub struct CloraStepRecord {
    pub index: usize,
    pub t: f64,
    /// Loss of each latent update at this step, in order.
    pub losses: Vec<f32>,
    /// The latent after each update (`[1, 4, h, w]` flattened), when latents are recorded.
    pub latents: Vec<Vec<f32>>,
    /// Channels, height and width of the latent (`[1, c, h, w]`).
    pub latent_chw: [usize; 3],
    /// The latent this step received, `z_t` before any update (`[1, c, h, w]` flattened).
    pub latent_in: Vec<f32>,
    /// What this step's updates moved it by, `z_t(updated) - z_t` (`[1, c, h, w]` flattened; zeros without
    /// updates): where and how far the contrastive loss pushed the latent.
    pub latent_shift: Vec<f32>,
    /// Aggregated maps `[N, map_h * map_w, 77]` flattened (those the masks were made from).
    pub maps: Vec<f32>,
    /// Masks at map resolution, one `map_h * map_w` vector per branch.
    pub masks: Vec<Vec<f32>>,
}

/// The CLoRA method.
#[derive(Debug)]
pub struct Clora<B: AutodiffBackend> {
    pub params: CloraParams,
    /// Keep per-update latents in the records (for teacher-forced checks; off by default).
    pub record_latents: bool,
    branches: Option<Branches<B>>,
    records: Vec<CloraStepRecord>,
    /// `mask_indices[k]` and the map side of the last image (kept after `finish`).
    mask_tokens: Vec<Vec<usize>>,
    map_hw: (usize, usize),
    /// The job's sampler and step count (the layout pass samples with the same).
    sampling: Option<(SchedulerKind, usize)>,
    /// `mask_mode = "layout"`: the layout pass and its raw masks (map resolution), made at the first step.
    layout: Option<Layout>,
}

impl<B: AutodiffBackend> Clora<B> {
    pub fn new(params: CloraParams) -> Self {
        Self {
            params,
            record_latents: false,
            branches: None,
            records: Vec::new(),
            mask_tokens: Vec::new(),
            map_hw: (0, 0),
            sampling: None,
            layout: None,
        }
    }

    /// The records of the last image, one per step.
    pub fn records(&self) -> &[CloraStepRecord] {
        &self.records
    }

    /// The token positions whose maps made each branch's mask in the last image (`[]` for the base branch).
    pub fn mask_tokens(&self) -> &[Vec<usize>] {
        &self.mask_tokens
    }

    /// The attention-map side (h, w) of the last image.
    pub fn map_hw(&self) -> (usize, usize) {
        self.map_hw
    }

    /// The layout of the last image (`mask_mode = "layout"`).
    pub fn layout(&self) -> Option<&Layout> {
        self.layout.as_ref()
    }

    /// The prepared branches (after `prepare`).
    pub fn branches(&self) -> Option<&Branches<B>> {
        self.branches.as_ref()
    }

    /// Prepares the branches of `job` on `sd`: prompts `[base, LoRA 1's, ...]`, per-branch text encoding (with the
    /// branch's LoRA when `use_text_encoder_lora`, the style LoRA always), concept groups and mask tokens from the
    /// concept words, per-row UNet adapters.
    pub fn prepare_branches(
        &self,
        sd: &mut StableDiffusion<B>,
        job: &CompositionJob,
    ) -> Result<Branches<B>> {
        self.params.validate()?;
        if !job.cfg() {
            return Err(Error::invalid(
                "clora.guidance",
                "CLoRA runs classifier-free guidance: guidance must be > 1",
            ));
        }
        let prompts = job.clora_prompts()?;
        let concepts: Vec<_> = job.loras.iter().map(|l| l.concept.clone()).collect();
        let (groups, mask_tokens) = match &job.token_indices {
            Some(ti) => {
                check_indices(ti, prompts.len(), sd.tokenizer.max_length())?;
                (ti.groups.clone(), ti.masks.clone())
            }
            None => concept_groups(&sd.tokenizer, &prompts, &concepts, self.params.mask_words)?,
        };
        // Every branch LoRA at its weight (the weights per-row selection uses), and the global scale.
        let mut weights: Vec<(AdapterId, f64)> =
            job.loras.iter().map(|l| (l.id, l.weight)).collect();
        weights.extend(job.style);
        sd.set_adapters(&weights)?;
        sd.set_lora_scale(job.lora_scale)?;
        let style: Vec<AdapterId> = job.style.map(|s| s.0).into_iter().collect();
        let mut adapters = vec![style.clone()];
        for l in &job.loras {
            let mut a = vec![l.id];
            a.extend(style.iter().copied());
            adapters.push(a);
        }
        let te_rows: Vec<Vec<AdapterId>> = adapters
            .iter()
            .enumerate()
            .map(|(k, a)| {
                if k == 0 || self.params.use_text_encoder_lora {
                    a.clone()
                } else {
                    style.clone()
                }
            })
            .flat_map(|a| [a.clone(), a])
            .collect();
        // [neg_0, pos_0, neg_1, pos_1, ...]; clip_skip on the prompts only, as diffusers' encode_prompt.
        let negatives: Vec<&str> = prompts
            .iter()
            .map(|_| job.negative_prompt.as_str())
            .collect();
        let neg_rows: Vec<Vec<AdapterId>> = te_rows.iter().step_by(2).cloned().collect();
        let pos_rows: Vec<Vec<AdapterId>> = te_rows.iter().skip(1).step_by(2).cloned().collect();
        let prompt_refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let neg = sd.encode_prompts_per_row(&negatives, &neg_rows, None)?;
        let pos = sd.encode_prompts_per_row(&prompt_refs, &pos_rows, job.clip_skip)?;
        let [n, s, d] = pos.dims();
        let context = Tensor::stack::<4>(vec![neg, pos], 1).reshape([2 * n, s, d]);
        let stride = self.params.attention_stride_px;
        let map_hw = (job.height.div_ceil(stride), job.width.div_ceil(stride));
        let br = Branches {
            adapters,
            context,
            groups,
            mask_tokens,
            map_hw,
        };
        if self.params.batched {
            set_rows(sd, &br)?;
        }
        Ok(br)
    }
}

impl<B: AutodiffBackend> CompositionMethod<B> for Clora<B> {
    fn name(&self) -> &'static str {
        "clora"
    }

    fn prepare(&mut self, sd: &mut StableDiffusion<B>, job: &CompositionJob) -> Result<()> {
        self.records.clear();
        self.layout = None;
        self.sampling = Some((job.scheduler, job.steps));
        let br = self.prepare_branches(sd, job)?;
        self.mask_tokens = br.mask_tokens.clone();
        self.map_hw = br.map_hw;
        self.branches = Some(br);
        Ok(())
    }

    fn step(
        &mut self,
        sd: &mut StableDiffusion<B>,
        ctx: &StepContext<'_, B>,
        latent: Tensor<B, 4>,
    ) -> Result<StepOutput<B>> {
        let br = self.branches.clone().expect("prepare ran");
        let p = self.params.clone();
        let (i, t) = (ctx.index, ctx.t);
        let z_in = latent.detach();
        if p.mask_mode == MaskMode::Layout && self.layout.is_none() {
            let (kind, steps) = self.sampling.ok_or_else(|| {
                Error::invalid("clora layout pass", "the method was not prepared for a job")
            })?;
            self.layout = Some(make_layout(
                sd,
                &br,
                &p,
                kind,
                steps,
                ctx.guidance,
                z_in.clone(),
            )?);
        }
        let mut z = z_in.clone();
        let mut losses = Vec::new();
        let mut latents = Vec::new();
        let mut fwd = None;
        if p.latent_update && i < p.max_iter_to_alter {
            let cycles = 1 + if p.iterative_steps.contains(&i) {
                p.iterative_steps_steps
            } else {
                0
            };
            for _ in 0..cycles {
                let (f, loss, z_new) = update_once(sd, &br, &p, ctx.scheduler, i, t, z)?;
                losses.push(loss);
                if self.record_latents {
                    latents.push(to_vec(&z_new)?);
                }
                fwd = Some(f);
                z = z_new;
            }
        }
        let fwd = match fwd {
            Some(f) if !p.fresh_eps => f,
            _ => forward_all(sd, &br, &p, ctx.scheduler, i, t, z.clone())?,
        };
        let (masks, small) = masks_for(
            &fwd.maps,
            &br,
            &p,
            i,
            z.dims(),
            self.layout.as_ref().map(|l| l.masks.as_slice()),
        )?;
        let eps = fuse(fwd.eps, masks, ctx.guidance);
        let latent_shift = to_vec(&(z.clone() - z_in.clone()))?;
        self.records.push(CloraStepRecord {
            index: i,
            t,
            losses,
            latents,
            latent_chw: {
                let [_, c, h, w] = z_in.dims();
                [c, h, w]
            },
            latent_in: to_vec(&z_in)?,
            latent_shift,
            maps: to_vec(&fwd.maps)?,
            masks: small,
        });
        Ok(StepOutput { eps, latent: z })
    }

    fn finish(&mut self, sd: &mut StableDiffusion<B>) {
        self.branches = None;
        sd.clear_lora_rows(Component::Unet);
        let _ = sd.set_adapters(&[]);
        let _ = sd.set_lora_scale(1.0);
    }
}

/// Checks hand-given indices: at least 2 groups, one entry per prompt, positions inside the 77 tokens.
fn check_indices(ti: &TokenIndices, prompts: usize, max_len: usize) -> Result<()> {
    if ti.groups.len() < 2 {
        return Err(Error::invalid(
            "clora token_indices",
            format!(
                "{} group(s); the contrastive loss needs at least 2",
                ti.groups.len()
            ),
        ));
    }
    for (g, per_prompt) in ti.groups.iter().enumerate() {
        if per_prompt.len() != prompts {
            return Err(Error::invalid(
                format!("clora token_indices[{g}]"),
                format!(
                    "{} entries, expected one per prompt ({prompts})",
                    per_prompt.len()
                ),
            ));
        }
    }
    if ti.masks.len() != prompts {
        return Err(Error::invalid(
            "clora mask_indices",
            format!(
                "{} entries, expected one per prompt ({prompts})",
                ti.masks.len()
            ),
        ));
    }
    let all = ti
        .groups
        .iter()
        .flatten()
        .flatten()
        .chain(ti.masks.iter().flatten());
    if let Some(bad) = all.into_iter().find(|&&p| p >= max_len) {
        return Err(Error::invalid(
            "clora token_indices",
            format!("position {bad} is outside the {max_len} tokens"),
        ));
    }
    Ok(())
}

fn to_vec<B: AutodiffBackend, const D: usize>(t: &Tensor<B, D>) -> Result<Vec<f32>> {
    host_f32(t, "clora record")
}
