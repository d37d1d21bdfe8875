//! CLoRA (Meral et al.): contrastive test-time update of the latent from cross-attention maps, then
//! attention-mask fusion of each LoRA branch's noise prediction. See `shared/design/clora-spec.md`.

pub mod engine;
pub mod layout;
pub mod loss;
pub mod maps;
pub mod masks;
pub mod method;
pub mod params;
pub mod tokens;

pub use method::{Clora, CloraStepRecord};
pub use params::CloraParams;
