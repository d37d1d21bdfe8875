//! Stable Diffusion 1.x in burn. Module trees and names mirror diffusers/transformers so weight keys map 1:1.

pub mod blocks;
pub mod clip;
pub mod config_json;
pub mod embedded;
pub mod nn;
pub mod sd;
pub mod single_file;
pub mod unet;
pub mod vae;
pub mod weights;
