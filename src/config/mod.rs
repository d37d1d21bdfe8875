//! The experiment config: a TOML schema (serde, `deny_unknown_fields`), `include` of shared files,
//! validation with errors that name the file, the field and the expected form, and sweep expansion.
//!
//! ```toml
//! include = ["../experiments/catdog/loras.toml"]   # [[loras]], prompt sets, ... shared by several configs
//! seeds = { start = 0, count = 8 }                  # or [0, 1, 2]
//! samples_per_prompt = 1
//!
//! [run]
//! name = "ablation"                                 # results/<name>/ (default: the file's stem)
//!
//! [model]
//! path = "../models/sd15"                           # diffusers folder or single .safetensors; omit: embedded model
//! dtype = "f32"                                     # f32 | f16 | bf16
//!
//! [[loras]]
//! name = "cat"                                      # written {cat} in prompt templates
//! path = "../models/cat.safetensors"
//! trigger = "sks"                                   # or a list of words
//! class_noun = "cat"
//! references = "../experiments/catdog/cat-refs"     # folder or list of images (CLIP-I, DINO)
//! weight = 1.0
//!
//! [[prompt_sets]]
//! name = "pairs"
//! prompts = ["a {cat} and a {dog}", { text = "a {cat} next to a {dog}", negative = "nsfw" }]
//! # or: file = "../experiments/catdog/prompts.toml"  (a file with `prompts = [...]`)
//!
//! [[methods]]
//! method = "merge"                                  # base | single | merge | switch | composite | clora
//! params = { scale = 0.8 }
//!
//! [[methods]]
//! name = "clora-sweep"
//! method = "clora"
//! params = { step_size = [10, 20], mask_threshold_alpha = [0.3, 0.4], latent_update = [true, false] }
//!
//! [sampler]
//! scheduler = "ddim"                                # ddim | euler | dpmpp-2m
//! steps = 50
//! guidance = 7.5
//! width = 512
//! height = 512
//!
//! [metrics]
//! scores = ["clip_t", "clip_i", "dino"]
//! clip_model = "../models/clip-vit-b32"
//! dino_model = "../models/dino-vits16"
//!
//! [report]
//! trade_off = ["clip_t", "dino"]
//! ```

pub mod error;
pub mod experiment;
pub mod job_file;
pub mod load;
pub mod params;
pub mod prompt;
pub mod raw;
pub mod sweep;
pub mod validate;

use std::path::Path;

pub use error::ConfigError;
pub use experiment::*;
pub use params::{MethodKind, ParamDef, ParamType, ParamValue};
pub use prompt::{ConceptNames, Template};
pub use sweep::{Axis, ParamGrid, Variant};

/// Reads, merges and validates the experiment config `path`.
pub fn load(path: &Path) -> Result<Experiment, ConfigError> {
    if !path.is_file() {
        return Err(ConfigError::Read {
            file: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such config file"),
        });
    }
    validate::validate(load::load(path)?)
}
