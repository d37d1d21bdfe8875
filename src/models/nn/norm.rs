//! `torch.nn.GroupNorm` and `torch.nn.LayerNorm` (affine), computed in f32 whatever the run dtype,
//! as PyTorch does for half-precision inputs.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, DType, Tensor};

use super::frozen;
use super::fused::{self, Norm};
use crate::error::{Error, Result};
use crate::models::weights::VarBuilder;

/// Group normalisation over `[b, c, h, w]`.
#[derive(Module, Debug)]
pub struct GroupNorm<B: Backend> {
    /// gamma `[c]`
    pub weight: Param<Tensor<B, 1>>,
    /// beta `[c]`
    pub bias: Param<Tensor<B, 1>>,
    pub num_groups: usize,
    pub eps: f64,
}

impl<B: Backend> GroupNorm<B> {
    pub fn load(vb: &VarBuilder<B>, num_groups: usize, channels: usize, eps: f64) -> Result<Self> {
        if num_groups == 0 || !channels.is_multiple_of(num_groups) {
            return Err(Error::invalid(
                vb.path(),
                format!(
                    "GroupNorm: {channels} channels are not divisible into {num_groups} groups"
                ),
            ));
        }
        Ok(Self {
            weight: frozen(vb.get("weight", [channels])?),
            bias: frozen(vb.get("bias", [channels])?),
            num_groups,
            eps,
        })
    }

    /// `[b, c, h, w] -> [b, c, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let norm = Norm::Group {
            groups: self.num_groups,
            eps: self.eps,
        };
        affine(norm, x, &self.weight, &self.bias)
    }
}

/// Layer normalisation over the last axis.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// gamma `[d]`
    pub weight: Param<Tensor<B, 1>>,
    /// beta `[d]`
    pub bias: Param<Tensor<B, 1>>,
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    pub fn load(vb: &VarBuilder<B>, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: frozen(vb.get("weight", [dim])?),
            bias: frozen(vb.get("bias", [dim])?),
            eps,
        })
    }

    /// `[..., d] -> [..., d]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        affine(Norm::Layer { eps: self.eps }, x, &self.weight, &self.bias)
    }
}

/// `norm(x) * gamma + beta` in f32, returned in `x`'s dtype.
fn affine<B: Backend, const D: usize>(
    norm: Norm,
    x: Tensor<B, D>,
    gamma: &Param<Tensor<B, 1>>,
    beta: &Param<Tensor<B, 1>>,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    let y = fused::norm(norm, upcast(x), upcast(gamma.val()), upcast(beta.val()));
    downcast(y, dtype)
}

/// Casts a tensor to f32 when it is in a lower precision.
pub fn upcast<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(DType::F32)
    }
}

/// Casts a tensor back to `dtype` when that differs from its own.
pub fn downcast<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if x.dtype() == dtype {
        x
    } else {
        x.cast(dtype)
    }
}
