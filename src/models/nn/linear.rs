//! `torch.nn.Linear`.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

use super::frozen;
use crate::error::Result;
use crate::lora::linear::LinearLora;
use crate::models::weights::VarBuilder;

/// A linear layer. The weight is kept in burn's `[d_in, d_out]` layout (PyTorch stores `[d_out, d_in]`).
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[d_in, d_out]`
    pub weight: Param<Tensor<B, 2>>,
    /// `[d_out]`
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Attached LoRA adapters (`None`: never had one; see [`crate::lora`]).
    pub lora: Option<LinearLora<B>>,
}

impl<B: Backend> Linear<B> {
    /// Loads `weight` `[d_out, d_in]` (and `bias` `[d_out]` when `bias`) below `vb`.
    pub fn load(vb: &VarBuilder<B>, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        let weight = vb.get("weight", [d_out, d_in])?.transpose();
        let bias = if bias {
            Some(frozen(vb.get("bias", [d_out])?))
        } else {
            None
        };
        Ok(Self {
            weight: frozen(weight),
            bias,
            lora: None,
        })
    }

    pub fn d_in(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn d_out(&self) -> usize {
        self.weight.dims()[1]
    }

    /// `[b, ..., d_in] -> [b, ..., d_out]`, plus the active LoRA deltas of each batch row.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let delta = match &self.lora {
            Some(lora) if lora.is_active() => Some(lora.delta(x.clone())),
            _ => None,
        };
        let bias = self.bias.as_ref().map(|b| b.val());
        let y = burn::tensor::module::linear(x, self.weight.val(), bias);
        match delta {
            Some(d) => y + d,
            None => y,
        }
    }
}
