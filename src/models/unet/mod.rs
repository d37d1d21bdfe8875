//! `UNet2DConditionModel` of SD 1.x, driven by its diffusers `config.json`.

pub mod blocks;
pub mod config;
pub mod embeddings;
pub mod model;

pub use config::UNetConfig;
pub use model::UNet2DConditionModel;
