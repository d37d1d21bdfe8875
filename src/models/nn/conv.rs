//! `torch.nn.Conv2d` (square kernel, symmetric padding, no groups).

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, ops::ConvOptions, Tensor};

use super::frozen;
use crate::error::Result;
use crate::lora::conv::ConvLora;
use crate::models::weights::VarBuilder;

/// A 2D convolution with bias.
#[derive(Module, Debug)]
pub struct Conv2d<B: Backend> {
    /// `[c_out, c_in, k, k]`
    pub weight: Param<Tensor<B, 4>>,
    /// `[c_out]`
    pub bias: Option<Param<Tensor<B, 1>>>,
    pub stride: usize,
    pub padding: usize,
    /// Attached LoRA adapters (`None`: never had one; see [`crate::lora`]).
    pub lora: Option<ConvLora<B>>,
}

impl<B: Backend> Conv2d<B> {
    /// Loads a `k x k` convolution `c_in -> c_out` below `vb`.
    pub fn load(
        vb: &VarBuilder<B>,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let weight = vb.get("weight", [c_out, c_in, kernel, kernel])?;
        let bias = vb.get("bias", [c_out])?;
        Ok(Self {
            weight: frozen(weight),
            bias: Some(frozen(bias)),
            stride,
            padding,
            lora: None,
        })
    }

    pub fn c_in(&self) -> usize {
        self.weight.dims()[1]
    }

    pub fn c_out(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn kernel(&self) -> usize {
        self.weight.dims()[2]
    }

    /// `[b, c_in, h, w] -> [b, c_out, h', w']`, plus the active LoRA deltas of each batch row.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let (stride, padding) = (self.stride, self.padding);
        let delta = match &self.lora {
            Some(lora) if lora.is_active() => Some(lora.delta(x.clone(), stride, padding)),
            _ => None,
        };
        let options = ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1);
        let bias = self.bias.as_ref().map(|b| b.val());
        let y = burn::tensor::module::conv2d(x, self.weight.val(), bias, options);
        match delta {
            Some(d) => y + d,
            None => y,
        }
    }
}
