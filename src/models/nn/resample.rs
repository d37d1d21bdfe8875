//! Resampling helpers with PyTorch's exact semantics.

use burn::tensor::{backend::Backend, Tensor};

/// Nearest-neighbour 2x upsampling, `F.interpolate(x, scale_factor=2.0, mode="nearest")`:
/// `[b, c, h, w] -> [b, c, 2h, 2w]`.
pub fn upsample_nearest_2x<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1])
        .expand([b, c, h, 2, w, 2])
        .reshape([b, c, 2 * h, 2 * w])
}
