//! Attend-and-Excite (Chefer et al., SIGGRAPH 2023): the base model with a test-time update of the latent that
//! raises the weakest subject token's peak cross-attention, so that no named subject is neglected. Follows
//! the authors' `AttendAndExcitePipeline` (github.com/yuval-alaluf/Attend-and-Excite; also diffusers'
//! `StableDiffusionAttendAndExcitePipeline`), see [`method`] for where it differs.

pub mod loss;
pub mod method;
pub mod params;

pub use method::Excite;
pub use params::ExciteParams;
