//! The CLoRA step: all branches (base + one per LoRA) and both CFG halves in one batched UNet call with
//! per-row LoRA selection, the contrastive loss on the probed attention maps, the latent update by burn
//! autodiff (gradient for the latent only), masks, and the masked fusion of the branches' predictions.
//!
//! Follows the official `CloraPipeline.__call__` (see `shared/design/clora-spec.md`): at step `i`,
//! `(eps, A) = forward_all(z)`; if `latent_update && i < max_iter_to_alter`: `z <- z - step_size * dL/dz`,
//! and if `i` is in `iterative_steps` `iterative_steps_steps` more cycles of {forward, loss, update}. The masks
//! and the fused prediction then use the last forward's `A` and `eps` (taken before the last update, unless
//! `fresh_eps`), and the scheduler steps from the updated `z`.

use burn::tensor::{backend::AutodiffBackend, ElementConversion, Tensor, TensorData};

use super::loss::{min_max_normalise, nt_xent};
use super::maps::{aggregate, MapRows};
use super::masks::{attention_masks, base_noun_inputs, finish_masks, upsample_nearest, MaskMode};
use super::params::CloraParams;
use crate::error::{Error, Result};
use crate::lora::key::Component;
use crate::lora::state::AdapterId;
use crate::models::blocks::AttentionProbe;
use crate::models::sd::StableDiffusion;
use crate::schedulers::Scheduler;

/// The prepared branches of one image.
#[derive(Debug, Clone)]
pub struct Branches<B: AutodiffBackend> {
    /// Adapters of each branch (`[]` for the base branch, + the style LoRA everywhere).
    pub adapters: Vec<Vec<AdapterId>>,
    /// `[2N, 77, d]`: `[neg_0, pos_0, neg_1, pos_1, ...]`.
    pub context: Tensor<B, 3>,
    /// `important_token_indices[g][k]`.
    pub groups: Vec<Vec<Vec<usize>>>,
    /// `mask_indices[k]`.
    pub mask_tokens: Vec<Vec<usize>>,
    /// Attention-map side (h, w) in cells, e.g. (16, 16) at 512x512.
    pub map_hw: (usize, usize),
}

impl<B: AutodiffBackend> Branches<B> {
    pub fn len(&self) -> usize {
        self.adapters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.adapters.is_empty()
    }

    /// UNet rows of branch k: (negative, positive).
    pub fn rows(&self) -> Vec<(usize, usize)> {
        (0..self.len()).map(|k| (2 * k, 2 * k + 1)).collect()
    }
}

/// One forward over all branches.
#[derive(Debug, Clone)]
pub struct Forward<B: AutodiffBackend> {
    /// `[2N, 4, h, w]` noise predictions, rows as in [`Branches::rows`].
    pub eps: Tensor<B, 4>,
    /// `[N, map_h * map_w, 77]` aggregated attention maps.
    pub maps: Tensor<B, 3>,
}

/// Runs every branch on latent `z` (`[1, 4, h, w]`) at step `index`. The UNet's per-row adapters must have been
/// set for the batched layout (see [`set_rows`]); in sequential mode they are set per branch here.
pub fn forward_all<B: AutodiffBackend>(
    sd: &mut StableDiffusion<B>,
    br: &Branches<B>,
    params: &CloraParams,
    scheduler: &dyn Scheduler<B>,
    index: usize,
    t: f64,
    z: Tensor<B, 4>,
) -> Result<Forward<B>> {
    let n = br.len();
    let q = br.map_hw.0 * br.map_hw.1;
    let pair = scheduler.scale_model_input(Tensor::cat(vec![z.clone(), z], 0), index);
    let rows = MapRows::from(params.maps);
    if params.batched {
        let mut probe = AttentionProbe::at_query_len(q);
        let input = pair.repeat_dim(0, n);
        let eps = sd.unet.forward_probed(
            input,
            &vec![t as f32; 2 * n],
            br.context.clone(),
            &mut probe,
        )?;
        let layer_maps = probed(probe, q)?;
        let maps = aggregate(&layer_maps, &br.rows(), rows);
        Ok(Forward { eps, maps })
    } else {
        let mut eps_all = Vec::new();
        let mut maps_all = Vec::new();
        let [_, s, d] = br.context.dims();
        for (k, adapters) in br.adapters.iter().enumerate() {
            sd.set_lora_rows(Component::Unet, &[adapters.clone(), adapters.clone()])?;
            let ctx = br.context.clone().slice([2 * k..2 * k + 2, 0..s, 0..d]);
            let mut probe = AttentionProbe::at_query_len(q);
            eps_all.push(
                sd.unet
                    .forward_probed(pair.clone(), &[t as f32; 2], ctx, &mut probe)?,
            );
            maps_all.push(aggregate(&probed(probe, q)?, &[(0, 1)], rows));
        }
        Ok(Forward {
            eps: Tensor::cat(eps_all, 0),
            maps: Tensor::cat(maps_all, 0),
        })
    }
}

pub(crate) fn probed<B: AutodiffBackend>(
    probe: AttentionProbe<B>,
    q: usize,
) -> Result<Vec<Tensor<B, 4>>> {
    if probe.maps.is_empty() {
        return Err(Error::invalid(
            "clora attention resolution",
            format!(
                "no cross-attention layer of this UNet has {q} queries; choose an image size whose \
                 attention maps (width/attention_stride_px x height/attention_stride_px) match a UNet level"
            ),
        ));
    }
    Ok(probe.maps.into_iter().map(|(_, m)| m).collect())
}

/// Sets the UNet's per-row adapters for the batched layout.
pub fn set_rows<B: AutodiffBackend>(sd: &mut StableDiffusion<B>, br: &Branches<B>) -> Result<()> {
    let rows: Vec<Vec<AdapterId>> = br
        .adapters
        .iter()
        .flat_map(|a| [a.clone(), a.clone()])
        .collect();
    sd.set_lora_rows(Component::Unet, &rows)
}

/// The contrastive loss of the maps `[N, q, 77]` over the concept groups: each (group, prompt, token) map is
/// min-max normalised and labelled with its group.
pub fn contrastive_loss<B: AutodiffBackend>(
    maps: &Tensor<B, 3>,
    groups: &[Vec<Vec<usize>>],
    temperature: f64,
) -> Tensor<B, 1> {
    let [_, q, tokens] = maps.dims();
    let mut embeddings = Vec::new();
    let mut labels = Vec::new();
    for (g, per_prompt) in groups.iter().enumerate() {
        for (k, toks) in per_prompt.iter().enumerate() {
            for &t in toks {
                let e = maps.clone().slice([k..k + 1, 0..q, t..t + 1]).reshape([q]);
                embeddings.push(min_max_normalise(e).unsqueeze::<2>());
                labels.push(g);
                debug_assert!(t < tokens);
            }
        }
    }
    nt_xent(Tensor::cat(embeddings, 0), &labels, temperature)
}

/// One update: forward with the gradient tracked for `z` only, loss, `z - step_size * dL/dz`.
/// Returns the forward (its eps and maps, detached), the loss value and the updated latent.
#[allow(clippy::too_many_arguments)]
pub fn update_once<B: AutodiffBackend>(
    sd: &mut StableDiffusion<B>,
    br: &Branches<B>,
    params: &CloraParams,
    scheduler: &dyn Scheduler<B>,
    index: usize,
    t: f64,
    z: Tensor<B, 4>,
) -> Result<(Forward<B>, f32, Tensor<B, 4>)> {
    let z = z.detach().require_grad();
    let fwd = forward_all(sd, br, params, scheduler, index, t, z.clone())?;
    let loss = contrastive_loss(&fwd.maps, &br.groups, params.temperature);
    let loss_value: f32 = loss.clone().into_scalar().elem();
    let grads = loss.backward();
    let grad = z.grad(&grads).ok_or_else(|| {
        Error::invalid(
            "clora latent update",
            "the loss does not depend on the latent",
        )
    })?;
    let z_new = Tensor::<B, 4>::from_inner(z.inner() - grad * params.step_size);
    if !loss_value.is_finite() || !crate::methods::sampler::all_finite(&z_new) {
        return Err(Error::invalid(
            format!("clora step {index} (t = {t})"),
            format!("the latent update produced a non-finite value (loss {loss_value}); this image is stopped"),
        ));
    }
    Ok((
        Forward {
            eps: fwd.eps.detach(),
            maps: fwd.maps.detach(),
        },
        loss_value,
        z_new,
    ))
}

/// Binary masks `[N, c, h, w]` at latent size from the maps (detached), per the official
/// `attention_map_to_mask`, or from the raw `layout` masks (`mask_mode = "layout"`, map resolution); all
/// ones before `apply_mask_after`. Also returns the masks at map resolution.
pub fn masks_for<B: AutodiffBackend>(
    maps: &Tensor<B, 3>,
    br: &Branches<B>,
    params: &CloraParams,
    index: usize,
    latent_dims: [usize; 4],
    layout: Option<&[Vec<f32>]>,
) -> Result<(Tensor<B, 4>, Vec<Vec<f32>>)> {
    let [n, q, tokens] = maps.dims();
    let (mh, mw) = br.map_hw;
    let [_, c, h, w] = latent_dims;
    let small: Vec<Vec<f32>> = if index < params.apply_mask_after {
        vec![vec![1.0; q]; n]
    } else if let Some(raw) = layout {
        finish_masks(raw.to_vec(), mh, mw, params.morphology())
    } else {
        let values = host_f32(maps, "clora maps")?;
        let mut per: Vec<Vec<f32>> = values.chunks(q * tokens).map(|c| c.to_vec()).collect();
        let mut mask_tokens = br.mask_tokens.clone();
        if params.mask_mode == MaskMode::BaseNouns {
            (per, mask_tokens) = base_noun_inputs(&per, &br.groups);
        }
        attention_masks(
            &per,
            tokens,
            mh,
            mw,
            &mask_tokens,
            params.mask_threshold_alpha as f32,
            params.mask_mode,
            params.morphology(),
        )
    };
    let mut full = Vec::with_capacity(n * c * h * w);
    for m in &small {
        let up = upsample_nearest(m, mh, mw, h, w);
        for _ in 0..c {
            full.extend_from_slice(&up);
        }
    }
    let device = maps.device();
    let t = Tensor::<B, 4>::from_data(TensorData::new(full, [n, c, h, w]), &device);
    Ok((t, small))
}

/// Masked fusion per CFG half, then guidance: `eps_x = sum_k M_k eps_x,k / sum_k M_k`.
pub fn fuse<B: AutodiffBackend>(
    eps: Tensor<B, 4>,
    masks: Tensor<B, 4>,
    guidance: f64,
) -> Tensor<B, 4> {
    let [rows, c, h, w] = eps.dims();
    let n = rows / 2;
    // [n, 2, c, h, w] -> halves [n, c, h, w]
    let e = eps.reshape([n, 2, c, h, w]);
    let uncond = e
        .clone()
        .slice([0..n, 0..1, 0..c, 0..h, 0..w])
        .reshape([n, c, h, w]);
    let cond = e
        .slice([0..n, 1..2, 0..c, 0..h, 0..w])
        .reshape([n, c, h, w]);
    let m = masks.cast(uncond.dtype());
    let denom = m.clone().sum_dim(0);
    let u = (uncond * m.clone()).sum_dim(0) / denom.clone();
    let p = (cond * m).sum_dim(0) / denom;
    u.clone() + (p - u) * guidance
}

/// A tensor's values on the host as f32, row-major; `what` names it in the error.
pub(crate) fn host_f32<B: AutodiffBackend, const D: usize>(
    t: &Tensor<B, D>,
    what: &str,
) -> Result<Vec<f32>> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| Error::invalid(what, format!("{e:?}")))
}
