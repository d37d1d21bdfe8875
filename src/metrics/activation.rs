//! The `hidden_act` values of transformers configs that the metric encoders support, with their exact formulas.

use std::path::Path;

use candle::{Module, Tensor};

use crate::error::{Error, Result};

/// An activation named by a transformers config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `quick_gelu`: `x * sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// `gelu`: exact, with erf.
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    /// `relu`.
    Relu,
    /// `silu` / `swish`.
    Silu,
}

impl Activation {
    /// Parses `hidden_act`; the error names the config file and field.
    pub fn parse(name: &str, path: &Path, field: &str) -> Result<Self> {
        Ok(match name {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            other => {
                return Err(Error::config(
                    path,
                    field,
                    format!(
                        "is \"{other}\", expected one of quick_gelu, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, \
                         relu, silu"
                    ),
                ))
            }
        })
    }

    /// The same activation in candle-nn's enum (used by candle-transformers' ViT).
    pub fn to_candle(self) -> Option<candle_nn::Activation> {
        match self {
            Activation::QuickGelu => None,
            Activation::Gelu => Some(candle_nn::Activation::Gelu),
            Activation::GeluTanh => Some(candle_nn::Activation::NewGelu),
            Activation::Relu => Some(candle_nn::Activation::Relu),
            Activation::Silu => Some(candle_nn::Activation::Silu),
        }
    }
}

impl Module for Activation {
    fn forward(&self, xs: &Tensor) -> candle::Result<Tensor> {
        match self {
            Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702f64)?)?,
            Activation::Gelu => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
            Activation::Relu => xs.relu(),
            Activation::Silu => xs.silu(),
        }
    }
}
