//! Scaled dot-product attention, with the probabilities optionally returned (CLoRA's attention store).

use burn::tensor::{backend::Backend, DType, Tensor};

use super::fused::softmax;
use super::norm::{downcast, upcast};

/// `softmax(q k^T * scale + mask) v` over `[b, heads, n, d]` tensors.
///
/// `upcast` computes scores and softmax in f32 (diffusers' `upcast_attention` / `upcast_softmax`), which
/// only matters for half-precision runs. `mask` is added to the scores (`[n_q, n_k]`, broadcast).
/// Returns the output `[b, heads, n_q, d_v]` and, if `keep_probs`, the probabilities `[b, heads, n_q, n_k]`.
pub fn scaled_dot_product<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f64,
    mask: Option<Tensor<B, 2>>,
    upcast_scores: bool,
    keep_probs: bool,
) -> (Tensor<B, 4>, Option<Tensor<B, 4>>) {
    let dtype = q.dtype();
    let (q, k) = if upcast_scores || dtype != DType::F32 {
        // Scores in f32: half-precision softmax over 77 or 4096 keys loses too much.
        (upcast(q), upcast(k))
    } else {
        (q, k)
    };
    // [b, h, n_q, n_k]
    let mut scores = q.matmul(k.swap_dims(2, 3)) * scale;
    if let Some(mask) = mask {
        scores = scores + upcast(mask).unsqueeze::<4>();
    }
    let probs = softmax(scores, 3);
    let probs = downcast(probs, dtype);
    let out = probs.clone().matmul(v);
    (out, keep_probs.then_some(probs))
}

/// `[b, n, heads * d] -> [b, heads, n, d]`
pub fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, n, c] = x.dims();
    x.reshape([b, n, heads, c / heads]).swap_dims(1, 2)
}

/// `[b, heads, n, d] -> [b, n, heads * d]`
pub fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, n, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * d])
}
