//! Backend selection by cargo feature: `flex` (CPU, default), `tch` (libtorch), `cuda` (NVIDIA GPU).

/// The CPU backend used by default and in CI.
#[cfg(feature = "flex")]
pub type Cpu = burn::backend::Flex;

/// Autodiff over the default CPU backend (CLoRA's latent update).
#[cfg(feature = "flex")]
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;
