//! Building blocks shared by the text encoder, the UNet and the VAE. Each layer is loaded from a
//! [`VarBuilder`](crate::models::weights::VarBuilder) with the parameter names PyTorch uses
//! (`weight`, `bias`), so module paths map 1:1 onto diffusers keys.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod embedding;
pub mod fused;
pub mod linear;
pub mod norm;
pub mod resample;

pub use conv::Conv2d;
pub use embedding::Embedding;
pub use linear::Linear;
pub use norm::{GroupNorm, LayerNorm};

/// A parameter holding loaded weights. Not tracked by autodiff (burn's `Param::from_tensor` would mark it as
/// requiring a gradient): the models are only ever run for inference, and CLoRA differentiates through the UNet
/// for the latent alone, so a backward pass must not compute (and keep) a gradient for every weight.
pub fn frozen<B: burn::tensor::backend::Backend, const D: usize>(
    t: burn::tensor::Tensor<B, D>,
) -> burn::module::Param<burn::tensor::Tensor<B, D>> {
    burn::module::Param::initialized(burn::module::ParamId::new(), t)
}
