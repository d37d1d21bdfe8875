//! `mask_mode = "layout"` (not in the official code): the masks come from a first pass of the base branch
//! alone, held fixed over the whole CLoRA pass.
//!
//! Why: on a model whose word attention localises late, the cross-attention maps of the first denoising
//! steps, where an object's colour is decided, do not yet tell the objects apart, so any per-cell rule gives
//! an object's colour to the wrong branch (docs/toyworld.md, "Three concepts: masks from a layout pass").
//! The layout pass samples the plain prompt from the same initial latent, finds the objects in its final
//! latent (connected regions that differ from the border, i.e. objects on a plain background) and gives each
//! concept one whole object: the assignment of objects to concepts that maximises the summed attention of
//! the concepts' words in the base prompt (the class noun, or with `mask_words = "after_noun"` the token
//! after it) over their objects, averaged over the pass's steps.

use burn::tensor::{backend::AutodiffBackend, Tensor};

use super::engine::{forward_all, fuse, host_f32, set_rows, Branches};
use super::masks::{base_prompt_nouns, token_scores, Score};
use super::params::CloraParams;
use super::tokens::{following, MaskWords};
use crate::error::{Error, Result};
use crate::models::sd::StableDiffusion;
use crate::schedulers::{self, SchedulerKind};

/// What the layout pass leaves: its final latent and the base branch's maps at every step.
#[derive(Debug, Clone)]
pub struct LayoutPass {
    /// `[c, h, w]` flattened: the base branch's final latent.
    pub latent: Vec<f32>,
    pub latent_chw: [usize; 3],
    /// `[steps, q, tokens]` flattened (q = map h * map w, row-major): the base branch's map at each step.
    pub step_maps: Vec<f32>,
    /// `[q, tokens]` flattened: `step_maps` averaged over the steps.
    pub map: Vec<f32>,
    pub tokens: usize,
}

/// A made layout: the pass, the token positions (base prompt) that scored each concept, and the raw masks
/// of [`layout_masks`].
#[derive(Debug, Clone)]
pub struct Layout {
    pub pass: LayoutPass,
    pub words: Vec<Vec<usize>>,
    pub masks: Vec<Vec<f32>>,
}

/// The layout pass's objects considered for the concepts (the largest), which bounds the assignment's search.
const MAX_OBJECTS: usize = 8;

/// The layout of one image: the pass from `z` (the first step's latent), the words that score each concept
/// (its class noun in the base prompt, `important_token_indices[g][0]`, or with `mask_words = "after_noun"`
/// the token after it) and the raw masks. Leaves the UNet's per-row adapters set for `br` when batched.
pub fn make_layout<B: AutodiffBackend>(
    sd: &mut StableDiffusion<B>,
    br: &Branches<B>,
    params: &CloraParams,
    kind: SchedulerKind,
    steps: usize,
    guidance: f64,
    z: Tensor<B, 4>,
) -> Result<Layout> {
    let pass = run_layout_pass(sd, br, params, kind, steps, guidance, z)?;
    if params.batched {
        set_rows(sd, br)?;
    }
    let words: Vec<Vec<usize>> = base_prompt_nouns(&br.groups)
        .into_iter()
        .map(|noun| match params.mask_words {
            MaskWords::AfterNoun => following(&noun),
            MaskWords::TriggerAndNoun | MaskWords::ClassNoun => noun,
        })
        .collect();
    let masks = layout_masks(
        &pass,
        br.map_hw,
        &words,
        params.mask_threshold_alpha as f32,
        MAX_OBJECTS,
    );
    Ok(Layout { pass, words, masks })
}

/// Samples the base branch of `br` (its prompt, no branch LoRA) from `z` (the first step's latent, already
/// scaled by `init_noise_sigma`) with a fresh scheduler of `kind` over `steps` steps.
fn run_layout_pass<B: AutodiffBackend>(
    sd: &mut StableDiffusion<B>,
    br: &Branches<B>,
    params: &CloraParams,
    kind: SchedulerKind,
    steps: usize,
    guidance: f64,
    z: Tensor<B, 4>,
) -> Result<LayoutPass> {
    let [_, s, d] = br.context.dims();
    let base = Branches {
        adapters: vec![br.adapters[0].clone()],
        context: br.context.clone().slice([0..2, 0..s, 0..d]),
        groups: Vec::new(),
        mask_tokens: vec![Vec::new()],
        map_hw: br.map_hw,
    };
    // one branch, run unbatched: `forward_all` sets the UNet's rows to the base branch's adapters
    let one = CloraParams {
        batched: false,
        ..params.clone()
    };
    let mut scheduler = schedulers::build::<B>(kind, &sd.scheduler_config, steps)?;
    let timesteps = scheduler.timesteps().to_vec();
    let mut z = z.detach();
    let mut step_maps = Vec::new();
    for (i, &t) in timesteps.iter().enumerate() {
        let fwd = forward_all(sd, &base, &one, scheduler.as_ref(), i, t, z.clone())?;
        step_maps.extend(host_f32(&fwd.maps, "clora layout pass")?);
        // one branch: its mask is everywhere, and the fusion is plain classifier-free guidance
        let [_, c, h, w] = fwd.eps.dims();
        let ones = Tensor::ones([1, c, h, w], &fwd.eps.device());
        let eps = fuse(fwd.eps.detach(), ones, guidance);
        z = scheduler.step(eps, i, z).detach();
    }
    let [_, c, h, w] = z.dims();
    let steps = timesteps.len();
    if steps == 0 {
        return Err(Error::invalid(
            "clora layout pass",
            "the sampler has no steps",
        ));
    }
    let per_step = step_maps.len() / steps;
    let tokens = per_step / (br.map_hw.0 * br.map_hw.1).max(1);
    let mut map = vec![0f32; per_step];
    for m in step_maps.chunks(per_step) {
        for (a, v) in map.iter_mut().zip(m) {
            *a += v / steps as f32;
        }
    }
    Ok(LayoutPass {
        latent: host_f32(&z, "clora layout pass")?,
        latent_chw: [c, h, w],
        step_maps,
        map,
        tokens,
    })
}

/// The objects of a latent `[c, h, w]`: 4-connected regions of cells whose distance from the border's
/// per-channel median exceeds `alpha` times the largest such distance. Returns one label per cell (0 =
/// background, objects 1..=k, largest first) and k. Regions of a single cell are left out (noise).
pub fn segment_objects(latent: &[f32], [c, h, w]: [usize; 3], alpha: f32) -> (Vec<usize>, usize) {
    let border: Vec<usize> = (0..h * w)
        .filter(|&i| i / w == 0 || i / w == h - 1 || i % w == 0 || i % w == w - 1)
        .collect();
    let median: Vec<f32> = (0..c)
        .map(|ch| {
            let mut v: Vec<f32> = border.iter().map(|&i| latent[ch * h * w + i]).collect();
            v.sort_by(f32::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    let dist: Vec<f32> = (0..h * w)
        .map(|i| {
            (0..c)
                .map(|ch| (latent[ch * h * w + i] - median[ch]).powi(2))
                .sum::<f32>()
                .sqrt()
        })
        .collect();
    let max = dist.iter().cloned().fold(0.0, f32::max);
    let fg: Vec<bool> = dist.iter().map(|&d| max > 0.0 && d > alpha * max).collect();
    // flood fill
    let mut regions: Vec<Vec<usize>> = Vec::new();
    let mut seen = vec![false; h * w];
    for start in 0..h * w {
        if !fg[start] || seen[start] {
            continue;
        }
        let mut cells = vec![start];
        seen[start] = true;
        let mut k = 0;
        while k < cells.len() {
            let i = cells[k];
            let (y, x) = (i / w, i % w);
            let near = [
                (y > 0).then(|| i - w),
                (y + 1 < h).then(|| i + w),
                (x > 0).then(|| i - 1),
                (x + 1 < w).then(|| i + 1),
            ];
            for j in near.into_iter().flatten() {
                if fg[j] && !seen[j] {
                    seen[j] = true;
                    cells.push(j);
                }
            }
            k += 1;
        }
        if cells.len() > 1 {
            regions.push(cells);
        }
    }
    regions.sort_by_key(|r| std::cmp::Reverse(r.len()));
    let mut labels = vec![0usize; h * w];
    for (k, r) in regions.iter().enumerate() {
        for &i in r {
            labels[i] = k + 1;
        }
    }
    (labels, regions.len())
}

/// The objects at map resolution: for each object (1..=k) its map cells, `[k][mh * mw]` of 0/1. A map cell
/// goes to the object with the most latent cells under it, if any (ties to the larger object); labels above
/// k (the smaller objects left out) count as background.
pub fn objects_on_map(
    labels: &[usize],
    k: usize,
    (lh, lw): (usize, usize),
    (mh, mw): (usize, usize),
) -> Vec<Vec<f32>> {
    let mut out = vec![vec![0f32; mh * mw]; k];
    for my in 0..mh {
        for mx in 0..mw {
            let mut count = vec![0usize; k + 1];
            for y in my * lh / mh..((my + 1) * lh).div_ceil(mh) {
                for x in mx * lw / mw..((mx + 1) * lw).div_ceil(mw) {
                    let l = labels[y * lw + x];
                    count[if l <= k { l } else { 0 }] += 1;
                }
            }
            let best = (1..=k).fold(None::<usize>, |b, o| match b {
                Some(b) if count[b] >= count[o] => Some(b),
                _ if count[o] > 0 => Some(o),
                b => b,
            });
            if let Some(o) = best {
                out[o - 1][my * mw + mx] = 1.0;
            }
        }
    }
    out
}

/// The one-to-one assignment of concepts to objects that maximises the summed score (`score[g][o]`, concept
/// g on object o), by exhaustive search; with fewer objects than concepts, some concepts get none.
/// Returns, per concept, its object.
pub fn assign(score: &[Vec<f32>]) -> Vec<Option<usize>> {
    fn search(
        score: &[Vec<f32>],
        g: usize,
        used: &mut Vec<bool>,
        cur: &mut Vec<Option<usize>>,
        best: &mut (f32, usize, Vec<Option<usize>>),
    ) {
        if g == score.len() {
            let total: f32 = cur
                .iter()
                .enumerate()
                .filter_map(|(g, o)| o.map(|o| score[g][o]))
                .sum();
            let placed = cur.iter().flatten().count();
            // more concepts placed first, then the larger total
            if (placed, total) > (best.1, best.0) || best.2.is_empty() {
                *best = (total, placed, cur.clone());
            }
            return;
        }
        let objects = score[g].len();
        for o in 0..objects {
            if !used[o] {
                used[o] = true;
                cur.push(Some(o));
                search(score, g + 1, used, cur, best);
                cur.pop();
                used[o] = false;
            }
        }
        if objects < score.len() {
            cur.push(None);
            search(score, g + 1, used, cur, best);
            cur.pop();
        }
    }
    let objects = score.first().map_or(0, Vec::len);
    let mut best = (f32::NEG_INFINITY, 0, Vec::new());
    search(
        score,
        0,
        &mut vec![false; objects],
        &mut Vec::new(),
        &mut best,
    );
    best.2
}

/// The raw masks of the layout (before morphology and background), one per branch at map resolution:
/// branch 0 (base) none, LoRA branch g + 1 the object assigned to concept g. `nouns[g]` are the token
/// positions of concept g's words in the base prompt; a concept scores an object by its words' best
/// attention, scaled by that word's maximum, averaged over the object's cells. At most the `max_objects` largest objects
/// are considered.
pub fn layout_masks(
    pass: &LayoutPass,
    map_hw: (usize, usize),
    nouns: &[Vec<usize>],
    alpha: f32,
    max_objects: usize,
) -> Vec<Vec<f32>> {
    let [_, lh, lw] = pass.latent_chw;
    let (labels, k) = segment_objects(&pass.latent, pass.latent_chw, alpha);
    let objects = objects_on_map(&labels, k.min(max_objects), (lh, lw), map_hw);
    let q = map_hw.0 * map_hw.1;
    let tokens = pass.tokens;
    let score: Vec<Vec<f32>> = nouns
        .iter()
        .map(|toks| {
            // best scaled attention (`a / max`) of the concept's words per cell
            let s = token_scores(&pass.map, tokens, q, toks, Score::Max);
            objects
                .iter()
                .map(|cells| {
                    let n: f32 = cells.iter().sum();
                    if n == 0.0 {
                        return 0.0;
                    }
                    cells.iter().zip(&s).map(|(c, v)| c * v).sum::<f32>() / n
                })
                .collect()
        })
        .collect();
    let mut masks = vec![vec![0f32; q]];
    for o in assign(&score) {
        masks.push(o.map_or_else(|| vec![0f32; q], |o| objects[o].clone()));
    }
    masks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1-channel 6x6 latent on a background of 0.1 with the given cells set to `v`.
    fn latent(cells: &[(usize, usize, f32)]) -> Vec<f32> {
        let mut z = vec![0.1f32; 36];
        for &(y, x, v) in cells {
            z[y * 6 + x] = v;
        }
        z
    }

    #[test]
    fn objects_are_connected_regions_off_the_border_colour_largest_first() {
        // a 2x2 object top left, a 3-cell object bottom right, one stray cell (left out)
        let z = latent(&[
            (1, 1, 2.0),
            (1, 2, 2.0),
            (2, 1, 2.0),
            (2, 2, 2.0),
            (4, 3, -2.0),
            (4, 4, -2.0),
            (3, 4, -2.0),
            (0, 5, 1.5),
        ]);
        let (labels, k) = segment_objects(&z, [1, 6, 6], 0.4);
        assert_eq!(k, 2);
        assert_eq!(labels[6 + 1], 1);
        assert_eq!(labels[2 * 6 + 2], 1);
        assert_eq!(labels[4 * 6 + 3], 2);
        assert_eq!(labels[5], 0);
        assert_eq!(labels.iter().filter(|&&l| l == 1).count(), 4);
        // a flat latent has no objects
        assert_eq!(segment_objects(&[0.3; 36], [1, 6, 6], 0.4).1, 0);
    }

    #[test]
    fn map_cells_go_to_the_object_under_most_of_them() {
        // 4x4 latent, 2x2 map: object 1 fills the top-left quarter and one cell of the top-right one,
        // object 2 the other three cells of the top-right quarter
        #[rustfmt::skip]
        let labels = vec![
            1, 1, 1, 2,
            1, 1, 2, 2,
            0, 0, 0, 0,
            0, 0, 0, 0,
        ];
        let m = objects_on_map(&labels, 2, (4, 4), (2, 2));
        assert_eq!(m[0], vec![1.0, 0.0, 0.0, 0.0]);
        assert_eq!(m[1], vec![0.0, 1.0, 0.0, 0.0]);
        // with only the largest object kept, object 2's cells are background
        let m = objects_on_map(&labels, 1, (4, 4), (2, 2));
        assert_eq!(m, vec![vec![1.0, 1.0, 0.0, 0.0]]);
    }

    #[test]
    fn assignment_is_one_to_one_and_maximises_the_sum() {
        // concept 1 attends most everywhere (a flat map): per-object argmax would give it both objects
        let score = vec![vec![0.5, 0.2], vec![0.9, 0.8]];
        assert_eq!(assign(&score), vec![Some(0), Some(1)]);
        // fewer objects than concepts: the best concept takes it
        assert_eq!(assign(&[vec![0.2], vec![0.7]]), vec![None, Some(0)]);
        // three concepts, three objects: the identity is not the best
        let s3 = vec![
            vec![0.1, 0.9, 0.0],
            vec![0.8, 0.7, 0.1],
            vec![0.3, 0.2, 0.6],
        ];
        assert_eq!(assign(&s3), vec![Some(1), Some(0), Some(2)]);
    }

    #[test]
    fn layout_masks_give_each_concept_its_nouns_object() {
        // 4x4 latent (1 channel), 2x2 map, 3 tokens: object A top left, object B bottom right
        #[rustfmt::skip]
        let z = vec![
            2.0, 2.0, 0.0, 0.0,
            2.0, 2.0, 0.0, 0.0,
            0.0, 0.0, 0.0, -2.0,
            0.0, 0.0, -2.0, -2.0,
        ];
        // token 1 ("circle") high on the bottom-right cell, token 2 ("square") flat with a top-left peak
        #[rustfmt::skip]
        let map = vec![
            0.0, 0.2, 1.0,
            0.0, 0.1, 0.9,
            0.0, 0.1, 0.9,
            0.0, 0.8, 0.95,
        ];
        let pass = LayoutPass {
            latent: z,
            latent_chw: [1, 4, 4],
            step_maps: map.clone(),
            map,
            tokens: 3,
        };
        let m = layout_masks(&pass, (2, 2), &[vec![1], vec![2]], 0.4, 8);
        assert_eq!(m[0], vec![0.0; 4]);
        assert_eq!(m[1], vec![0.0, 0.0, 0.0, 1.0]);
        assert_eq!(m[2], vec![1.0, 0.0, 0.0, 0.0]);
    }
}
