//! The toyworld: a miniature world where composition can be measured on a CPU (see `docs/toyworld.md`).
//!
//! - [`scene`], [`shape`], [`palette`], [`pattern`], [`render`]: deterministic 64x64 scenes of one to three
//!   shapes; [`caption`]: their captions and the parser of the world's prompts.
//! - [`concept`]: the personal concepts (three subjects with trigger words, one style).
//! - [`oracle`]: the procedural detector and the judge of generated images.
//! - [`arch`]: the miniature SD 1.x architecture.
#![allow(
    clippy::too_many_arguments,
    clippy::type_complexity,
    clippy::needless_range_loop
)]

pub mod arch;
pub mod caption;
pub mod concept;
pub mod ema;
pub mod encoders;
pub mod error;
pub mod export;
pub mod flat_adam;
pub mod grounding;
pub mod grow;
pub mod heldout;
pub mod latent_data;
pub mod lora_select;
pub mod misses;
pub mod noise_assignment;
pub mod oracle;
pub mod palette;
pub mod param_names;
pub mod pattern;
pub mod progress;
pub mod render;
pub mod sample;
pub mod scene;
pub mod seed_work;
pub mod shape;
pub mod tensors;
pub mod text_unet;
pub mod timestep_sampling;
pub mod token_attention;
pub mod train;
pub mod train_base;
pub mod train_decoder;
pub mod train_lora;
pub mod train_vae;
pub mod train_vocab;
pub mod trainable;

pub use error::{ToyError, ToyResult};
