//! The fused operations and their gradients written in burn tensor operations, generic over the backend: a
//! forward here is the one every backend without a kernel of its own runs (on an autodiff backend it is then
//! differentiated operation by operation, as before the fused node existed); a backward is what the fused
//! autodiff node computes on its inner backend unless that has a kernel for it.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, Tensor, TensorMetadata, TensorPrimitive};

use super::Norm;

/// A primitive reshaped to `dims` and wrapped as a tensor.
fn view<B: Backend, const D: usize>(x: FloatTensor<B>, dims: [usize; D]) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(B::float_reshape(
        x,
        Shape::new(dims),
    )))
}

/// A tensor's primitive, reshaped to `shape`.
fn unview<B: Backend, const D: usize>(x: Tensor<B, D>, shape: Shape) -> FloatTensor<B> {
    B::float_reshape(x.into_primitive().tensor(), shape)
}

/// How `norm` views a tensor: `[outer, groups, inner]` rows whose statistics are taken over `inner`, and
/// the view `[outer, channels, spatial]` in which gamma and beta (`[channels]`) broadcast.
struct Layout {
    outer: usize,
    groups: usize,
    inner: usize,
    channels: usize,
    spatial: usize,
}

impl Layout {
    fn of(norm: Norm, shape: &Shape) -> Self {
        let numel = shape.num_elements();
        match norm {
            // [n, c, h, w]: statistics over each group of c/g channels, gamma per channel.
            Norm::Group { groups, .. } => {
                let (n, c) = (shape[0], shape[1]);
                Self {
                    outer: n,
                    groups,
                    inner: numel / (n * groups),
                    channels: c,
                    spatial: numel / (n * c),
                }
            }
            // [..., d]: statistics over the last axis, gamma per element of it.
            Norm::Layer { .. } => {
                let d = shape[shape.num_dims() - 1];
                Self {
                    outer: numel / d,
                    groups: 1,
                    inner: d,
                    channels: d,
                    spatial: 1,
                }
            }
        }
    }
}

/// `(x - mean) / sqrt(var + eps)` over `[outer, groups, inner]` (biased variance, as PyTorch), with the
/// reciprocal standard deviation `[outer, groups, 1]`.
fn standardise<B: Backend>(x: Tensor<B, 3>, eps: f64) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let mean = x.clone().mean_dim(2);
    let centered = x - mean;
    let var = centered.clone().square().mean_dim(2);
    let std = (var + eps).sqrt();
    (centered / std.clone(), std.recip())
}

/// `norm(x) * gamma + beta`, `x` of any shape the norm takes, `gamma` and `beta` `[channels]`.
pub fn norm_forward<B: Backend>(
    norm: Norm,
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
) -> FloatTensor<B> {
    let shape = x.shape();
    let l = Layout::of(norm, &shape);
    let (xhat, _) = standardise(view::<B, 3>(x, [l.outer, l.groups, l.inner]), norm.eps());
    // [outer, channels, spatial]
    let xhat = xhat.reshape([l.outer, l.channels, l.spatial]);
    let gamma = view::<B, 3>(gamma, [1, l.channels, 1]);
    let beta = view::<B, 3>(beta, [1, l.channels, 1]);
    unview(xhat * gamma + beta, shape)
}

/// The gradients of `norm_forward` with respect to `x`, `gamma` and `beta` from the output's gradient `dy`, each
/// computed only when `wanted`:
/// `dbeta = sum dy`, `dgamma = sum dy * xhat` (over all but the channel axis), and with `g = dy * gamma`,
/// `dx = rstd * (g - mean(g) - xhat * mean(g * xhat))` (means over each normalised group).
pub fn norm_backward<B: Backend>(
    norm: Norm,
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    dy: FloatTensor<B>,
    wanted: [bool; 3],
) -> [Option<FloatTensor<B>>; 3] {
    let shape = x.shape();
    let l = Layout::of(norm, &shape);
    let (xhat, rstd) = standardise(view::<B, 3>(x, [l.outer, l.groups, l.inner]), norm.eps());
    // [outer, channels, spatial]
    let dy = view::<B, 3>(dy, [l.outer, l.channels, l.spatial]);
    let per_channel = |t: Tensor<B, 3>| unview(t.sum_dim(2).sum_dim(0), Shape::new([l.channels]));
    let dbeta = wanted[2].then(|| per_channel(dy.clone()));
    let dgamma = wanted[1]
        .then(|| per_channel(dy.clone() * xhat.clone().reshape([l.outer, l.channels, l.spatial])));
    let dx = wanted[0].then(|| {
        let g =
            (dy * view::<B, 3>(gamma, [1, l.channels, 1])).reshape([l.outer, l.groups, l.inner]);
        let mean_g = g.clone().mean_dim(2);
        let mean_gx = (g.clone() * xhat.clone()).mean_dim(2);
        unview((g - mean_g - xhat * mean_gx) * rstd, shape)
    });
    [dx, dgamma, dbeta]
}

/// The gradient of `y = softmax(x)` along `dim`: `dx = y * (dy - sum(dy * y))`.
pub fn softmax_backward<B: Backend>(
    y: FloatTensor<B>,
    dy: FloatTensor<B>,
    dim: usize,
) -> FloatTensor<B> {
    let dot = B::float_sum_dim(B::float_mul(dy.clone(), y.clone()), dim);
    B::float_mul(y, B::float_sub(dy, dot))
}

/// `x * sigmoid(x)` (burn's `activation::silu`).
pub fn silu_forward<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::float_mul(x.clone(), B::sigmoid(x))
}

/// The gradient of SiLU: `dx = dy * s * (1 + x * (1 - s))`, `s = sigmoid(x)`.
pub fn silu_backward<B: Backend>(x: FloatTensor<B>, dy: FloatTensor<B>) -> FloatTensor<B> {
    let s = B::sigmoid(x.clone());
    let one_minus_s = B::float_add_scalar(B::float_neg(s.clone()), 1.0.into());
    let slope = B::float_add_scalar(B::float_mul(x, one_minus_s), 1.0.into());
    B::float_mul(dy, B::float_mul(s, slope))
}
