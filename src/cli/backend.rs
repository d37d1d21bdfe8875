//! Runtime choice among the backends compiled in (`--device`), and the run dtype (`--dtype`).

use anyhow::{bail, Result};
use burn::tensor::DType;
use clap::ValueEnum;
use clora_harness::config::RunDtype;

/// Where the models run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// CPU with burn's `flex` backend (default build).
    Cpu,
    /// CPU with libtorch (build with `--features tch`).
    Tch,
    /// NVIDIA GPU (build with `--features cuda`).
    Cuda,
}

/// Run precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    F32,
    F16,
    Bf16,
}

impl Precision {
    /// The config's run dtype of this precision.
    pub fn run_dtype(self) -> RunDtype {
        match self {
            Precision::F32 => RunDtype::F32,
            Precision::F16 => RunDtype::F16,
            Precision::Bf16 => RunDtype::Bf16,
        }
    }

    /// The precision of a config's run dtype.
    pub fn of(d: RunDtype) -> Self {
        match d {
            RunDtype::F32 => Precision::F32,
            RunDtype::F16 => Precision::F16,
            RunDtype::Bf16 => Precision::Bf16,
        }
    }

    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        }
    }
}

/// Calls `$body` with `$B` bound to the backend type selected by `$device` and `$dev` to its device.
#[macro_export]
macro_rules! with_backend {
    ($device:expr, |$B:ident, $dev:ident| $body:block) => {{
        match $device {
            #[cfg(feature = "flex")]
            $crate::cli::backend::Device::Cpu => {
                type $B = clora_harness::backend::Cpu;
                let $dev = <$B as burn::tensor::backend::BackendTypes>::Device::default();
                $body
            }
            #[cfg(feature = "tch")]
            $crate::cli::backend::Device::Tch => {
                $crate::cli::backend::hint_allocator();
                type $B = burn::backend::LibTorch;
                let $dev = burn::backend::libtorch::LibTorchDevice::Cpu;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::cli::backend::Device::Cuda => {
                // A missing driver, NVRTC or toolkit: a clear error here instead of a panic on a device thread.
                clora_harness::cuda_setup::check()?;
                type $B = burn::backend::Cuda;
                let $dev = burn::backend::cuda::CudaDevice::default();
                $body
            }
            #[allow(unreachable_patterns)]
            other => anyhow::bail!(
                "device `{other:?}` is not compiled into this binary (rebuild with `--features {}`)",
                format!("{other:?}").to_lowercase()
            ),
        }
    }};
}

/// Refuses half precision on the CPU backends, where it is slow and unsupported by some kernels.
pub fn check_precision(device: Device, precision: Precision) -> Result<()> {
    if device != Device::Cuda && precision != Precision::F32 {
        bail!("--dtype {precision:?} needs --device cuda; CPU runs use f32");
    }
    Ok(())
}

/// The faster allocator preloaded into this process (`tcmalloc` or `jemalloc`), read off `/proc/self/maps`.
pub fn preloaded_allocator(maps: &str) -> Option<&'static str> {
    ["tcmalloc", "jemalloc"]
        .into_iter()
        .find(|name| maps.contains(name))
}

/// libtorch allocates a buffer per operation, and glibc's malloc is slow at it: tcmalloc takes 13% off a
/// toyworld training step and about 20% off its sampling (docs/toyworld.md, "The allocator and the
/// optimizer"). Says once per process how to preload it when no faster allocator is in. Linux only
/// (elsewhere `/proc/self/maps` does not exist and nothing is said).
#[cfg_attr(not(feature = "tch"), allow(dead_code))]
pub fn hint_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return;
        };
        if preloaded_allocator(&maps).is_none() {
            eprintln!(
                "note: --device tch: training runs 13% and sampling 20% faster with tcmalloc preloaded \
                 (Debian: apt-get install libgoogle-perftools4, then \
                 LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4; README, Backends)"
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_preloaded_allocator_in_the_maps() {
        let glibc = "7f10 r-xp 00000000 fd:01 12 /usr/lib/x86_64-linux-gnu/libc.so.6\n";
        assert_eq!(preloaded_allocator(glibc), None);
        let tc = format!("{glibc}7f20 r-xp 00000000 fd:01 13 /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4\n");
        assert_eq!(preloaded_allocator(&tc), Some("tcmalloc"));
        let je = format!(
            "{glibc}7f30 r-xp 00000000 fd:01 14 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n"
        );
        assert_eq!(preloaded_allocator(&je), Some("jemalloc"));
    }
}
