//! Binary masks from attention maps (the official `attention_map_to_mask`), computed on the CPU from the
//! detached maps: threshold at a fraction of each token map's max, OR over the branch's mask tokens,
//! optional 3x3 morphology, background to the base branch, nearest upsampling to the latent.

/// How a cell joins a branch's mask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskMode {
    /// The official rule: a cell joins every branch one of whose mask tokens gives it more than
    /// `alpha * max` of that token's attention; the branches' masks may overlap.
    #[default]
    Threshold,
    /// Not in the official code: a cell joins only the branch whose normalised attention (`a / max`, the
    /// best of its mask tokens) is highest, and only when that exceeds `alpha`; the masks are disjoint
    /// before morphology.
    Argmax,
    /// Not in the official code: as `Argmax`, with each token's map rescaled by its own range
    /// (`(a - min) / (max - min)`) instead of its max, so that a token attending everywhere alike (a flat map,
    /// high in every cell under `a / max`) no longer wins the cells of other concepts' objects.
    #[serde(rename = "argmax_minmax")]
    ArgmaxMinmax,
    /// Not in the official code: every LoRA branch scored on the base branch's maps, by its concept's
    /// class-noun tokens in the base prompt (see [`base_noun_inputs`]); a cell goes to the concept whose noun
    /// takes the most of its attention (the raw softmax shares, which compete within one prompt), when that
    /// exceeds `alpha` times the noun's own maximum.
    #[serde(rename = "base_nouns")]
    BaseNouns,
    /// Not in the official code: masks from a first pass of the base branch alone, held over the whole
    /// image: each concept gets one whole object of that pass's final latent (see [`super::layout`]);
    /// `alpha` is the fraction of the largest distance from the border colour that makes a latent cell part
    /// of an object.
    Layout,
}

/// How `argmax_masks` (and the layout, `a / max`) scores a token's attention at a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Score {
    /// `a / max`, threshold `alpha`.
    Max,
    /// `(a - min) / (max - min)`, threshold `alpha`.
    MinMax,
    /// `a` itself, threshold `alpha` times the branch's highest score.
    Raw,
}

/// The maps and mask tokens of [`MaskMode::BaseNouns`]: every branch gets the base branch's map (`maps[0]`),
/// LoRA branch k the positions of its concept's class noun in the base prompt (`groups[k - 1][0]`,
/// `important_token_indices`), the base branch none.
pub fn base_noun_inputs(
    maps: &[Vec<f32>],
    groups: &[Vec<Vec<usize>>],
) -> (Vec<Vec<f32>>, Vec<Vec<usize>>) {
    let base = maps.first().cloned().unwrap_or_default();
    let tokens = std::iter::once(Vec::new())
        .chain(base_prompt_nouns(groups))
        .collect();
    (vec![base; maps.len()], tokens)
}

/// Each concept's class-noun positions in the base prompt: `important_token_indices[g][0]`.
pub fn base_prompt_nouns(groups: &[Vec<Vec<usize>>]) -> Vec<Vec<usize>> {
    groups
        .iter()
        .map(|g| g.first().cloned().unwrap_or_default())
        .collect()
}

/// Morphology switches (applied in the order dilate, erode, opening, closing, as the reference does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Morphology {
    pub erode: bool,
    pub dilate: bool,
    pub opening: bool,
    pub closing: bool,
}

/// 3x3 max-pool with stride 1 and padding 1 (padding ignored in the max), over an `h x w` map.
fn max_pool3(m: &[f32], h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut best = f32::NEG_INFINITY;
            for yy in y.saturating_sub(1)..(y + 2).min(h) {
                for xx in x.saturating_sub(1)..(x + 2).min(w) {
                    best = best.max(m[yy * w + xx]);
                }
            }
            out[y * w + x] = best;
        }
    }
    out
}

fn dilate(m: &[f32], h: usize, w: usize) -> Vec<f32> {
    max_pool3(m, h, w)
}

fn erode(m: &[f32], h: usize, w: usize) -> Vec<f32> {
    let inv: Vec<f32> = m.iter().map(|v| 1.0 - v).collect();
    max_pool3(&inv, h, w).into_iter().map(|v| 1.0 - v).collect()
}

/// Masks at attention resolution, `[branches][h * w]` with values 0/1.
///
/// `maps[k]` is branch k's aggregated map `[h * w, tokens]` (row-major), `mask_tokens[k]` the token
/// positions whose maps make branch k's mask (empty for the base branch, which gets the background).
#[allow(clippy::too_many_arguments)]
pub fn attention_masks(
    maps: &[Vec<f32>],
    tokens: usize,
    h: usize,
    w: usize,
    mask_tokens: &[Vec<usize>],
    threshold_alpha: f32,
    mode: MaskMode,
    morphology: Morphology,
) -> Vec<Vec<f32>> {
    let q = h * w;
    let raw: Vec<Vec<f32>> = match mode {
        // made by `layout::layout_masks` from the layout pass, not from the maps (`finish_masks` then)
        MaskMode::Layout => vec![vec![0.0; q]; maps.len()],
        MaskMode::Threshold => maps
            .iter()
            .zip(mask_tokens)
            .map(|(map, toks)| threshold_mask(map, tokens, q, toks, threshold_alpha))
            .collect(),
        MaskMode::Argmax => argmax_masks(maps, tokens, q, mask_tokens, threshold_alpha, Score::Max),
        MaskMode::ArgmaxMinmax => {
            argmax_masks(maps, tokens, q, mask_tokens, threshold_alpha, Score::MinMax)
        }
        MaskMode::BaseNouns => {
            argmax_masks(maps, tokens, q, mask_tokens, threshold_alpha, Score::Raw)
        }
    };
    finish_masks(raw, h, w, morphology)
}

/// Morphology on each branch's raw mask (`[branches][h * w]`), then every cell no branch claims to the base
/// branch (branch 0).
pub fn finish_masks(
    raw: Vec<Vec<f32>>,
    h: usize,
    w: usize,
    morphology: Morphology,
) -> Vec<Vec<f32>> {
    let q = h * w;
    let mut masks: Vec<Vec<f32>> = raw
        .into_iter()
        .map(|mut m| {
            if morphology.dilate {
                m = dilate(&m, h, w);
            }
            if morphology.erode {
                m = erode(&m, h, w);
            }
            if morphology.opening {
                m = dilate(&erode(&m, h, w), h, w);
            }
            if morphology.closing {
                m = erode(&dilate(&m, h, w), h, w);
            }
            m
        })
        .collect();
    // Background (no branch claims the cell) goes to the base branch, which keeps its own ones too.
    if let Some((first, rest)) = masks.split_first_mut() {
        for i in 0..q {
            if first[i] + rest.iter().map(|m| m[i]).sum::<f32>() == 0.0 {
                first[i] = 1.0;
            }
        }
    }
    masks
}

/// Column `t` of a `[q, tokens]` map and its maximum.
fn token_column(map: &[f32], tokens: usize, q: usize, t: usize) -> (Vec<f32>, f32) {
    let col: Vec<f32> = (0..q).map(|i| map[i * tokens + t]).collect();
    let max = col.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    (col, max)
}

/// The official mask of one branch: OR over its tokens of `attention > alpha * max`.
fn threshold_mask(map: &[f32], tokens: usize, q: usize, toks: &[usize], alpha: f32) -> Vec<f32> {
    let mut m = vec![0f32; q];
    for &t in toks {
        let (col, max) = token_column(map, tokens, q, t);
        let thr = max * alpha;
        for (i, &v) in col.iter().enumerate() {
            if v > thr {
                m[i] = 1.0;
            }
        }
    }
    m
}

/// The best score of the tokens `toks` at each cell of a `[q, tokens]` map (see [`Score`]; a map with no
/// range scores 0).
pub(crate) fn token_scores(
    map: &[f32],
    tokens: usize,
    q: usize,
    toks: &[usize],
    how: Score,
) -> Vec<f32> {
    let mut s = vec![0f32; q];
    for &t in toks {
        let (col, max) = token_column(map, tokens, q, t);
        let (min, range) = match how {
            Score::Max => (0.0, max),
            Score::MinMax => {
                let min = col.iter().cloned().fold(f32::INFINITY, f32::min);
                (min, max - min)
            }
            Score::Raw => (0.0, 1.0),
        };
        if max > min {
            for (si, v) in s.iter_mut().zip(col) {
                *si = si.max((v - min) / range);
            }
        }
    }
    s
}

/// Disjoint masks: each cell to the branch with the highest score (best of its tokens, see [`Score`]; a
/// constant map scores 0 under `MinMax`), when that clears the threshold; ties go to the earlier branch.
fn argmax_masks(
    maps: &[Vec<f32>],
    tokens: usize,
    q: usize,
    mask_tokens: &[Vec<usize>],
    alpha: f32,
    how: Score,
) -> Vec<Vec<f32>> {
    // score[k][i]: branch k's normalised attention at cell i (0 for a branch without mask tokens)
    let score: Vec<Vec<f32>> = maps
        .iter()
        .zip(mask_tokens)
        .map(|(map, toks)| token_scores(map, tokens, q, toks, how))
        .collect();
    let threshold: Vec<f32> = score
        .iter()
        .map(|s| match how {
            Score::Raw => alpha * s.iter().cloned().fold(0.0, f32::max),
            Score::Max | Score::MinMax => alpha,
        })
        .collect();
    let mut masks = vec![vec![0f32; q]; maps.len()];
    for i in 0..q {
        let best = (0..maps.len())
            .filter(|&k| !mask_tokens[k].is_empty())
            .fold(None::<usize>, |b, k| match b {
                Some(b) if score[b][i] >= score[k][i] => Some(b),
                _ => Some(k),
            });
        if let Some(k) = best.filter(|&k| score[k][i] > threshold[k]) {
            masks[k][i] = 1.0;
        }
    }
    masks
}

/// Nearest-neighbour resize of an `h x w` map to `oh x ow` (`F.interpolate(mode="nearest")`).
pub fn upsample_nearest(m: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    let (sy, sx) = (h as f32 / oh as f32, w as f32 / ow as f32);
    let mut out = vec![0f32; oh * ow];
    for y in 0..oh {
        let src_y = ((y as f32 * sy).floor() as usize).min(h - 1);
        for x in 0..ow {
            let src_x = ((x as f32 * sx).floor() as usize).min(w - 1);
            out[y * ow + x] = m[src_y * w + src_x];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_or_and_background() {
        // 2x2 maps with 2 tokens, branch 0 = base (no tokens), branch 1 uses token 1.
        let base = vec![0.0; 8];
        let lora = vec![0.0, 0.9, 0.0, 0.1, 0.0, 0.5, 0.0, 0.2];
        let m = attention_masks(
            &[base, lora],
            2,
            2,
            2,
            &[vec![], vec![1]],
            0.3,
            MaskMode::Threshold,
            Morphology::default(),
        );
        assert_eq!(m[1], vec![1.0, 0.0, 1.0, 0.0]);
        assert_eq!(m[0], vec![0.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn argmax_gives_each_cell_to_one_branch() {
        // 4 cells, 2 tokens; branch 1 uses token 0, branch 2 token 1. Normalised: branch 1 [1, 0.9, 0.2, 0.1],
        // branch 2 [0.5, 1, 0.25, 0.2]. Threshold 0.3 would give cells 0-1 to both branches.
        let base = vec![0.0; 8];
        let b1 = vec![1.0, 0.0, 0.9, 0.0, 0.2, 0.0, 0.1, 0.0];
        let b2 = vec![0.0, 0.4, 0.0, 0.8, 0.0, 0.2, 0.0, 0.16];
        let maps = [base, b1, b2];
        let toks = [vec![], vec![0], vec![1]];
        let th = attention_masks(
            &maps,
            2,
            2,
            2,
            &toks,
            0.3,
            MaskMode::Threshold,
            Morphology::default(),
        );
        assert_eq!(th[1], vec![1.0, 1.0, 0.0, 0.0]);
        assert_eq!(th[2], vec![1.0, 1.0, 0.0, 0.0]);
        let am = attention_masks(
            &maps,
            2,
            2,
            2,
            &toks,
            0.3,
            MaskMode::Argmax,
            Morphology::default(),
        );
        assert_eq!(am[1], vec![1.0, 0.0, 0.0, 0.0]);
        assert_eq!(am[2], vec![0.0, 1.0, 0.0, 0.0]);
        // cells no branch claims above alpha go to the base branch
        assert_eq!(am[0], vec![0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn argmax_minmax_keeps_a_flat_token_off_other_objects() {
        // 4 cells, 2 tokens; branch 1's token 0 peaks on cells 0-1, branch 2's token 1 is flat (0.8-1.0, peak
        // on cell 3). Under a / max the flat token scores >= 0.8 everywhere and takes cell 1 from branch 1;
        // rescaled by its range it scores 0, 0, 0.5, 1.
        let base = vec![0.0; 8];
        let b1 = vec![1.0, 0.0, 0.7, 0.0, 0.1, 0.0, 0.0, 0.0];
        let b2 = vec![0.0, 0.8, 0.0, 0.8, 0.0, 0.9, 0.0, 1.0];
        let maps = [base, b1, b2];
        let toks = [vec![], vec![0], vec![1]];
        let masks = |mode| attention_masks(&maps, 2, 2, 2, &toks, 0.3, mode, Morphology::default());
        let am = masks(MaskMode::Argmax);
        assert_eq!(am[1], vec![1.0, 0.0, 0.0, 0.0]);
        assert_eq!(am[2], vec![0.0, 1.0, 1.0, 1.0]);
        let mm = masks(MaskMode::ArgmaxMinmax);
        assert_eq!(mm[1], vec![1.0, 1.0, 0.0, 0.0]);
        assert_eq!(mm[2], vec![0.0, 0.0, 1.0, 1.0]);
        assert_eq!(mm[0], vec![0.0; 4]);
    }

    #[test]
    fn base_nouns_compare_raw_shares_on_the_base_map() {
        // the base branch's map over 4 cells and 3 tokens: token 1 ("circle") peaks on cell 0, token 2
        // ("square") is everywhere a little and peaks on cell 2; the LoRA branches' own maps are ignored
        let base = vec![
            0.0, 0.6, 0.3, //
            0.0, 0.5, 0.2, //
            0.0, 0.1, 0.4, //
            0.0, 0.0, 0.05,
        ];
        let own = vec![9.0; 12];
        let groups = vec![vec![vec![1], vec![1, 2]], vec![vec![2], vec![0, 2]]];
        let (maps, toks) = base_noun_inputs(&[base.clone(), own.clone(), own], &groups);
        assert_eq!(toks, vec![vec![], vec![1], vec![2]]);
        assert!(maps.iter().all(|m| m == &base));
        let m = attention_masks(
            &maps,
            3,
            2,
            2,
            &toks,
            0.3,
            MaskMode::BaseNouns,
            Morphology::default(),
        );
        // cell 0: 0.6 vs 0.3, cell 1: 0.5 vs 0.2 -> circle; cell 2: 0.1 vs 0.4 -> square; cell 3: 0.05 is
        // below 0.3 * 0.4 -> base
        assert_eq!(m[1], vec![1.0, 1.0, 0.0, 0.0]);
        assert_eq!(m[2], vec![0.0, 0.0, 1.0, 0.0]);
        assert_eq!(m[0], vec![0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn morphology_matches_maxpool_definitions() {
        let mut m = vec![0f32; 25];
        m[12] = 1.0;
        let d = dilate(&m, 5, 5);
        assert_eq!(d.iter().sum::<f32>(), 9.0);
        assert_eq!(erode(&d, 5, 5), m);
        // a single pixel disappears under opening, a 3x3 block survives it
        assert_eq!(dilate(&erode(&m, 5, 5), 5, 5).iter().sum::<f32>(), 0.0);
        assert_eq!(dilate(&erode(&d, 5, 5), 5, 5), d);
    }

    #[test]
    fn nearest_upsampling_repeats_cells() {
        let up = upsample_nearest(&[1.0, 2.0, 3.0, 4.0], 2, 2, 4, 4);
        assert_eq!(&up[..4], &[1.0, 1.0, 2.0, 2.0]);
        assert_eq!(&up[12..], &[3.0, 3.0, 4.0, 4.0]);
    }
}
