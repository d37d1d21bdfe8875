//! The fused operations on a plain (non-autodiff) backend: burn tensor operations by default, libtorch's own
//! kernels on `tch` (one call for what takes burn up to a dozen).

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

use super::{reference, Norm};

#[cfg(feature = "tch")]
use burn::backend::libtorch::TchTensor;

/// A backend that runs each fused operation and its gradient in one call each.
pub trait FusedKernels: Backend {
    /// `norm(x) * gamma + beta`: `x` of any shape `norm` takes, `gamma` and `beta` `[channels]`.
    fn norm_forward(
        norm: Norm,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        reference::norm_forward::<Self>(norm, x, gamma, beta)
    }

    /// The gradients for `x`, `gamma` and `beta` from the output's `dy`, each only when `wanted`.
    fn norm_backward(
        norm: Norm,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        wanted: [bool; 3],
    ) -> [Option<FloatTensor<Self>>; 3] {
        reference::norm_backward::<Self>(norm, x, gamma, dy, wanted)
    }

    fn softmax_forward(x: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        Self::softmax(x, dim)
    }

    /// The input's gradient from the output `y` and its gradient `dy`.
    fn softmax_backward(
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        dim: usize,
    ) -> FloatTensor<Self> {
        reference::softmax_backward::<Self>(y, dy, dim)
    }

    fn silu_forward(x: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::silu_forward::<Self>(x)
    }

    fn silu_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::silu_backward::<Self>(x, dy)
    }
}

#[cfg(feature = "flex")]
impl FusedKernels for burn::backend::Flex {}

#[cfg(feature = "cuda")]
impl FusedKernels for burn::backend::Cuda {}

/// `at::native_group_norm`, `at::native_layer_norm`, `at::_softmax`, `at::silu` and their backward kernels
/// where libtorch has them bound in `tch` (the norms' backward is the reference's).
#[cfg(feature = "tch")]
impl FusedKernels for burn::backend::LibTorch {
    fn norm_forward(
        norm: Norm,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        // The native norms require a contiguous input.
        let input = x.tensor.contiguous();
        let dims = input.size();
        let (gamma, beta) = (Some(&gamma.tensor), Some(&beta.tensor));
        let (y, _mean, _rstd) = match norm {
            Norm::Group { groups, eps } => {
                let (n, c) = (dims[0], dims[1]);
                let spatial = dims[2..].iter().product::<i64>();
                input.native_group_norm(gamma, beta, n, c, spatial, groups as i64, eps)
            }
            Norm::Layer { eps } => {
                input.native_layer_norm([dims[dims.len() - 1]], gamma, beta, eps)
            }
        };
        TchTensor::new(y)
    }

    fn softmax_forward(x: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        TchTensor::new(x.tensor.internal_softmax(dim as i64, false))
    }

    fn softmax_backward(
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        dim: usize,
    ) -> FloatTensor<Self> {
        let kind = y.tensor.kind();
        let dx =
            tch::Tensor::internal_softmax_backward_data(&dy.tensor, &y.tensor, dim as i64, kind);
        TchTensor::new(dx)
    }

    fn silu_forward(x: FloatTensor<Self>) -> FloatTensor<Self> {
        TchTensor::new(x.tensor.silu())
    }

    fn silu_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        TchTensor::new(x.tensor.silu_backward(&dy.tensor))
    }
}
