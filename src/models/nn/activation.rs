//! Activations named as in transformers' `ACT2FN` / diffusers' `get_activation`.

use burn::tensor::{activation, backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

/// An activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// exact (erf) GELU.
    Gelu,
    /// SiLU / swish.
    Silu,
}

impl Activation {
    /// Parses a transformers/diffusers activation name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "quick_gelu" => Some(Self::QuickGelu),
            "gelu" => Some(Self::Gelu),
            "silu" | "swish" => Some(Self::Silu),
            _ => None,
        }
    }

    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::QuickGelu => x.clone() * activation::sigmoid(x * 1.702),
            Self::Gelu => activation::gelu(x),
            Self::Silu => super::fused::silu(x),
        }
    }
}
