//! Backend selection by cargo feature: `flex` (CPU, default), `tch` (libtorch), `cuda` (NVIDIA GPU).

/// The CPU backend used by default and in CI.
#[cfg(feature = "flex")]
pub type Cpu = burn::backend::Flex;

/// Autodiff over the default CPU backend (CLoRA's latent update).
#[cfg(feature = "flex")]
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;

/// Frees the autodiff graph entries of tensors that are gone. burn 0.21's autodiff backend registers every
/// operation in a graph, tracked or not, and drops the entries of dropped tensors only when some backward pass
/// runs (its `cleanup_orphaned_entries`). Inference on an autodiff backend, which every harness job is (only
/// CLoRA's latent update calls backward, and not after its last update step), so kept every image's graph
/// entries and the tensors they hold: ~30 MB per 20-step toyworld image, on `flex` and `tch` alike. A
/// backward pass over one fresh element runs that clean-up; call it between images.
pub fn sweep_autodiff_graphs<B: burn::tensor::backend::AutodiffBackend>(device: &B::Device) {
    let one = burn::tensor::Tensor::<B, 1>::zeros([1], device).require_grad();
    // The gradients of that one element are not needed: the pass is run for its clean-up.
    drop(one.sum().backward());
}
