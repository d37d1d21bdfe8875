//! `AutoencoderKL`: the VAE of SD 1.x (encoder to a diagonal Gaussian over latents, decoder to pixels).

pub mod config;
pub mod model;

pub use config::VaeConfig;
pub use model::{AutoencoderKL, DiagonalGaussian};
