//! The token-attention loss (TokenCompose's token loss, Wang et al. 2024, "TokenCompose: Text-to-Image
//! Diffusion with Token-level Supervision"): each grounded caption word's cross-attention mass should fall
//! inside its object. For a token `k` of a probed layer's maps `A` (averaged over heads; `[n_q]` over the grid's
//! cells, each row of `A` a softmax over the text's keys, 77 in SD 1.x), with its object's coverage `M` of the
//! cells, `L_k = (1 - sum_q A[q, k] M[q] / sum_q A[q, k])^2`, averaged over the grounded tokens and the probed layers.

use burn::tensor::{backend::Backend, Tensor, TensorData};

use super::grounding::Grounding;

/// The loss of a batch whose row `r` shows example `rows[r]` of `grounding`'s training set with its caption
/// (`None`: the empty prompt, nothing grounded), on the batch's probed maps.
pub fn grounded_token_loss<B: Backend>(
    grounding: &Grounding,
    rows: &[Option<usize>],
    maps: &[(usize, Tensor<B, 4>)],
    device: &B::Device,
) -> Tensor<B, 1> {
    let (coverage, selected) = grounding.targets(rows);
    let grounded = selected.iter().filter(|&&v| v > 0.0).count();
    let (b, cells, tokens) = (
        rows.len(),
        grounding.grid * grounding.grid,
        grounding.tokens,
    );
    token_attention_loss(
        maps,
        Tensor::from_data(TensorData::new(coverage, [b, cells, tokens]), device),
        Tensor::from_data(TensorData::new(selected, [b, tokens]), device),
        grounded,
    )
}

/// The loss of one forward's probed maps `(layer, [b, heads, n_q, tokens])`, against the grounding's targets
/// `coverage` `[b, n_q, tokens]` and `selected` `[b, tokens]` (1 on grounded tokens), of which there are
/// `grounded` (the loss is 0 when there are none, or no maps).
pub fn token_attention_loss<B: Backend>(
    maps: &[(usize, Tensor<B, 4>)],
    coverage: Tensor<B, 3>,
    selected: Tensor<B, 2>,
    grounded: usize,
) -> Tensor<B, 1> {
    let device = coverage.device();
    if maps.is_empty() || grounded == 0 {
        return Tensor::zeros([1], &device);
    }
    let [b, n_q, n_k] = coverage.dims();
    let mut total = Tensor::<B, 1>::zeros([1], &device);
    for (_, probs) in maps {
        // [b, heads, n_q, n_k] -> [b, n_q, n_k]
        let a = probs.clone().mean_dim(1).reshape([b, n_q, n_k]);
        // [b, 1, n_k] -> [b, n_k]
        let inside = (a.clone() * coverage.clone()).sum_dim(1).reshape([b, n_k]);
        let mass = a.sum_dim(1).reshape([b, n_k]);
        let outside = (inside / (mass + 1e-12)).neg().add_scalar(1.0);
        total = total + (outside.powf_scalar(2.0) * selected.clone()).sum();
    }
    total / (grounded * maps.len()) as f64
}
