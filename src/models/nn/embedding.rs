//! `torch.nn.Embedding`.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Int, Tensor};

use super::frozen;
use crate::error::Result;
use crate::models::weights::VarBuilder;

/// A lookup table `[n, d]`.
#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    /// `[n, d]`
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Embedding<B> {
    pub fn load(vb: &VarBuilder<B>, n: usize, d: usize) -> Result<Self> {
        Ok(Self {
            weight: frozen(vb.get("weight", [n, d])?),
        })
    }

    /// `[b, s]` ids `-> [b, s, d]`
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        burn::tensor::module::embedding(self.weight.val(), ids)
    }
}
