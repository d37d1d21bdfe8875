//! Attend-and-Excite's loss: each excited token's attention map (a softmax over the prompt's tokens, sharpened
//! by `softmax_scale`), Gaussian-smoothed, gives its peak; the loss is `max_token max(0, 1 - peak)`, the
//! most neglected subject (the official `_compute_max_attention_per_index` and `_compute_loss`).

use burn::tensor::{activation::softmax, backend::Backend, Tensor};

/// The official `GaussianSmoothing(channels=1, kernel_size=3, sigma)` kernel: the product over both axes of
/// `exp(-((x - 1) / (2 sigma))^2)`, x = 0, 1, 2 (the reference writes `2 * std` where a Gaussian has
/// `sqrt(2) * std`), normalised to sum 1.
pub fn gaussian_kernel(sigma: f64) -> [[f64; 3]; 3] {
    let g: Vec<f64> = (0..3)
        .map(|x| (-((x as f64 - 1.0) / (2.0 * sigma)).powi(2)).exp())
        .collect();
    let total: f64 = g.iter().sum::<f64>().powi(2);
    let mut k = [[0.0; 3]; 3];
    for (y, row) in k.iter_mut().enumerate() {
        for (x, v) in row.iter_mut().enumerate() {
            *v = g[y] * g[x] / total;
        }
    }
    k
}

/// A 3x3 convolution of `img` (`[h, w]`, h and w >= 2) with `kernel` after reflect padding by one cell
/// (`F.pad(..., mode="reflect")` then `conv2d`): same size out.
pub fn smooth<B: Backend>(img: Tensor<B, 2>, kernel: &[[f64; 3]; 3]) -> Tensor<B, 2> {
    let [h, w] = img.dims();
    // reflect: row -1 is row 1, row h is row h-2; the same for columns.  [h, w] -> [h + 2, w + 2]
    let rows = Tensor::cat(
        vec![
            img.clone().slice([1..2, 0..w]),
            img.clone(),
            img.slice([h - 2..h - 1, 0..w]),
        ],
        0,
    );
    let padded = Tensor::cat(
        vec![
            rows.clone().slice([0..h + 2, 1..2]),
            rows.clone(),
            rows.slice([0..h + 2, w - 2..w - 1]),
        ],
        1,
    );
    let mut out: Option<Tensor<B, 2>> = None;
    for (dy, row) in kernel.iter().enumerate() {
        for (dx, &k) in row.iter().enumerate() {
            let term = padded.clone().slice([dy..dy + h, dx..dx + w]) * k;
            out = Some(match out {
                Some(acc) => acc + term,
                None => term,
            });
        }
    }
    out.expect("a 3x3 kernel")
}

/// Each excited token's peak attention. `maps`: `[q, 77]` (q = h * w cells, row-major; the mean over layers
/// and heads of the prompt row); the softmax runs over token positions `1..end` (the official SD 1.x setting
/// is `end = 76`: every position but the start token and the last); `tokens`: positions to excite, each in
/// `1..end`. Returns `[tokens.len()]`.
pub fn max_attention_per_token<B: Backend>(
    maps: Tensor<B, 2>,
    hw: (usize, usize),
    end: usize,
    tokens: &[usize],
    softmax_scale: f64,
    kernel: Option<&[[f64; 3]; 3]>,
) -> Tensor<B, 1> {
    let [q, _] = maps.dims();
    let (h, w) = hw;
    // [q, end - 1]: per cell, a distribution over the prompt's tokens
    let text = softmax(maps.slice([0..q, 1..end]) * softmax_scale, 1);
    let peaks: Vec<Tensor<B, 1>> = tokens
        .iter()
        .map(|&t| {
            let img = text.clone().slice([0..q, t - 1..t]).reshape([h, w]);
            let img = match kernel {
                Some(k) => smooth(img, k),
                None => img,
            };
            img.max()
        })
        .collect();
    Tensor::cat(peaks, 0)
}

/// `max_i max(0, 1 - peak_i)`: `[1]`.
pub fn excite_loss<B: Backend>(peaks: Tensor<B, 1>) -> Tensor<B, 1> {
    (peaks.neg() + 1.0).clamp_min(0.0).max()
}
