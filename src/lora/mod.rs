//! LoRA: the file formats users bring (kohya/A1111 incl. LoCon, diffusers/PEFT, the older diffusers
//! attention-processor format), runtime adapters that stay unfused and act per batch row, and fusing.
//!
//! - [`key`]: the key grammar of the three formats; [`metadata`]: PEFT adapter configs in the file metadata;
//!   [`file`]: reading and validating a file into per-module factor pairs with their `alpha / r`.
//! - [`targets`]: the module-path traversal of the models (diffusers paths of every `Linear`/`Conv2d`);
//!   [`resolve`]: matching a file to those paths (kohya names through the model's own paths) and shapes.
//! - [`rows`]: which adapters act on which batch rows, so one batched forward serves several branches.
//! - [`linear`], [`conv`]: the adapter state of one layer, its delta, fuse and exact unfuse.
//! - [`state`], [`apply`]: the bookkeeping and the API on [`crate::models::sd::StableDiffusion`]
//!   (`add_lora`, `set_adapters`, `set_lora_scale`, `set_lora_rows`, `fuse_loras`, `unfuse_loras`,
//!   `remove_loras`, `encode_prompts_per_row`).

pub mod apply;
pub mod conv;
pub mod file;
pub mod key;
pub mod linear;
pub mod metadata;
pub mod resolve;
pub mod rows;
pub mod state;
pub mod targets;

pub use apply::LoraLoad;
pub use file::LoraFile;
pub use key::{Component, LoraFormat};
pub use resolve::Unmatched;
pub use rows::RowMultipliers;
pub use state::{AdapterId, AdapterInfo, LoraState};
pub use targets::{LoraTargets, Target};
