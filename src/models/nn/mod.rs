//! Building blocks shared by the text encoder, the UNet and the VAE. Each layer is loaded from a
//! [`VarBuilder`](crate::models::weights::VarBuilder) with the parameter names PyTorch uses
//! (`weight`, `bias`), so module paths map 1:1 onto diffusers keys.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod embedding;
pub mod linear;
pub mod norm;
pub mod resample;

pub use conv::Conv2d;
pub use embedding::Embedding;
pub use linear::Linear;
pub use norm::{GroupNorm, LayerNorm};
