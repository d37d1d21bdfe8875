//! clora-harness: compose several LoRA adapters in one Stable Diffusion 1.x image, on burn.
//!
//! Layers, one folder each: [`models`] (SD 1.x: tokenizer, CLIP text encoder, UNet, VAE, weight loading),
//! [`schedulers`] (DDIM, Euler, DPM-Solver++ 2M), [`pipeline`] (the sampling loop with classifier-free
//! guidance).

pub mod backend;
pub mod config;
pub mod cuda_setup;
pub mod error;
pub mod files;
pub mod harness;
pub mod latent_io;
pub mod lora;
pub mod methods;
pub mod metrics;
pub mod models;
pub mod noise;
pub mod pipeline;
pub mod report;
pub mod schedulers;
pub mod toyworld;

pub use error::{Error, Result};

/// The crate version (recorded in provenance).
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
