//! Image metrics on candle: CLIP-T / CLIPScore, CLIP-I and DINO, per concept and aggregated, equal to what
//! transformers computes from the same local checkpoints.
//!
//! Layers, bottom up:
//! - [`image_io`]: PNG/JPEG to 8-bit RGB (RGBA, gray, palette and 16-bit converted as PIL does);
//! - [`resample`] + [`preprocess`]: the HF image processors (CLIP, Bit for DINOv2, ViT for DINO v1), bit-exact;
//! - encoders in candle-transformers' style: [`clip`] (text + vision + projections), [`vit`] (DINO v1 on
//!   candle-transformers' ViT), [`dinov2`] (HF `Dinov2Model` layout, with [`bicubic`] position interpolation);
//!   [`weights`] loads them from safetensors with typed errors; [`model_folder`] checks a folder's architecture;
//! - [`encoder`]: a loaded model that embeds batches; [`cache`]: embeddings keyed by model and file content;
//! - [`scores`]: definitions and result rows; [`prompt`]: trigger words to class nouns for CLIP-T;
//! - [`scorer`]: the API (`Scorer::new(MetricsConfig)`, `score_image(path, &ImageQuery)`).

pub mod activation;
pub mod bicubic;
pub mod cache;
pub mod clip;
pub mod config;
pub mod dinov2;
pub mod encoder;
pub mod image_io;
pub mod model_folder;
pub mod preprocess;
pub mod prompt;
pub mod resample;
pub mod scorer;
pub mod scores;
pub mod vit;
pub mod weights;

pub use cache::CacheStats;
pub use encoder::{ClipEncoder, DinoEncoder, ImageEncoder};
pub use prompt::{clip_t_prompt, Trigger};
pub use scorer::{ConceptRefs, ImageQuery, MetricsConfig, Scorer};
pub use scores::{Aggregate, ClipTScore, ConceptScore, ImageScores, Metric, Scope, ScoreRow};
