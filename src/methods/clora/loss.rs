//! The contrastive loss of CLoRA: `pytorch_metric_learning.losses.NTXentLoss(temperature)` (v2.4.1) with its
//! defaults (cosine similarity, mean over all ordered positive pairs), in burn so that it differentiates.
//!
//! For a positive pair (a, p) with cosine similarities `s`:
//! `l_ap = -log( exp(s_ap/τ) / (exp(s_ap/τ) + Σ_{n: y_n != y_a} exp(s_an/τ)) + tiny )`, `tiny = f32::MIN_POSITIVE`;
//! the loss is the mean of `l_ap` over every ordered pair `a != p` with `y_a == y_p`, and 0 when there is no
//! positive pair or no negative.

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

/// Stand-in for `-inf` on masked similarities: large enough that `exp` gives exactly 0, finite so that
/// no NaN reaches the gradient.
const MASKED: f32 = -1.0e30;

/// NT-Xent over `embeddings` `[n, d]` with class `labels` (length n). Returns a `[1]` tensor.
pub fn nt_xent<B: Backend>(
    embeddings: Tensor<B, 2>,
    labels: &[usize],
    temperature: f64,
) -> Tensor<B, 1> {
    let [n, _] = embeddings.dims();
    assert_eq!(n, labels.len(), "one label per embedding");
    let device = embeddings.device();
    let mut anchors = Vec::new();
    let mut positives = Vec::new();
    for a in 0..n {
        for p in 0..n {
            if a != p && labels[a] == labels[p] {
                anchors.push(a as i64);
                positives.push(p as i64);
            }
        }
    }
    let has_negative = (0..n).any(|a| (0..n).any(|b| labels[a] != labels[b]));
    if anchors.is_empty() || !has_negative {
        // Zero, still attached to the graph so callers can always differentiate.
        return embeddings.sum() * 0.0;
    }
    let n_pos = anchors.len();

    // Cosine similarity: rows scaled to unit L2 norm (F.normalize, eps 1e-12), then e e^T / τ. [n, n]
    let norm = embeddings
        .clone()
        .square()
        .sum_dim(1)
        .sqrt()
        .clamp_min(1e-12);
    let unit = embeddings / norm;
    let sim = unit.clone().matmul(unit.transpose()) / temperature;

    let anchor_idx =
        Tensor::<B, 1, Int>::from_data(TensorData::new(anchors.clone(), [n_pos]), &device);
    let pos_idx = Tensor::<B, 2, Int>::from_data(TensorData::new(positives, [n_pos, 1]), &device);
    // [P, n]: each positive pair's anchor row
    let rows = sim.select(0, anchor_idx);
    // [P, 1]: s_ap / τ
    let pos = rows.clone().gather(1, pos_idx);
    // [P, n]: s_an / τ where n is a negative of a, MASKED elsewhere
    let mask: Vec<f32> = anchors
        .iter()
        .flat_map(|&a| {
            (0..n).map(move |j| {
                if labels[a as usize] != labels[j] {
                    0.0
                } else {
                    MASKED
                }
            })
        })
        .collect();
    let neg = rows + Tensor::<B, 2>::from_data(TensorData::new(mask, [n_pos, n]), &device);

    // The max is only for stability (it cancels); detached as in the reference.
    let max_val = pos.clone().max_pair(neg.clone().max_dim(1)).detach();
    let numerator = (pos - max_val.clone()).exp();
    let denominator = (neg - max_val).exp().sum_dim(1) + numerator.clone();
    let per_pair = -(numerator / denominator + f32::MIN_POSITIVE as f64).log();
    per_pair.mean()
}

/// Min-max normalises a vector to [0, 1]: `(e - min e) / (max e - min e)`, as the official `loss_fn`
/// does to each token's attention map. `e` is `[d]`; a constant map gives NaN, as in the reference.
pub fn min_max_normalise<B: Backend>(e: Tensor<B, 1>) -> Tensor<B, 1> {
    let min = e.clone().min();
    let max = e.clone().max();
    (e - min.clone()) / (max - min)
}
