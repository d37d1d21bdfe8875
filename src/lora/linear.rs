//! LoRA adapters of a `Linear` layer: unfused per-row deltas, and fusing into (and exactly out of) the weight.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

use super::rows::{check_rows, gain_matrix, AdapterGainInfo, RowMultipliers};
use crate::models::nn::norm::{downcast, upcast};
use crate::models::nn::Linear;

/// One adapter of a linear layer, in burn's layout.
#[derive(Module, Debug)]
pub struct LinearAdapter<B: Backend> {
    /// The adapter (`AdapterId.0`).
    pub id: usize,
    /// down A `[d_in, r]` (PyTorch stores `[r, d_in]`)
    pub down: Tensor<B, 2>,
    /// up B `[r, d_out]` (PyTorch stores `[d_out, r]`)
    pub up: Tensor<B, 2>,
    /// `alpha / r` of this module.
    pub alpha_scale: f64,
}

/// The adapters that act on some row, concatenated along the rank axis (`R` = sum of their ranks).
#[derive(Module, Debug)]
pub struct LinearPacked<B: Backend> {
    /// `[d_in, R]`
    pub down: Tensor<B, 2>,
    /// `[R, d_out]`
    pub up: Tensor<B, 2>,
    /// `[rows, R]`: rows = 1 (every batch row alike) or the batch size.
    pub gain: Tensor<B, 2>,
    /// Whether `gain` has one row per batch row (else one row for all).
    pub per_row: bool,
}

/// The LoRA state of one linear layer.
#[derive(Module, Debug)]
pub struct LinearLora<B: Backend> {
    pub adapters: Vec<LinearAdapter<B>>,
    /// `None` when no adapter acts on any row (the layer then costs nothing extra).
    pub packed: Option<LinearPacked<B>>,
    /// The weight `[d_in, d_out]` before fusing; `unfuse` puts it back bit for bit.
    pub unfused_weight: Option<Tensor<B, 2>>,
}

impl<B: Backend> LinearLora<B> {
    fn new() -> Self {
        Self {
            adapters: Vec::new(),
            packed: None,
            unfused_weight: None,
        }
    }

    /// Whether the unfused path adds anything.
    pub fn is_active(&self) -> bool {
        self.packed.is_some()
    }

    /// `sum_k g[row, k] B_k (A_k x)`: `[b, ..., d_in] -> [b, ..., d_out]`. Call only when active.
    pub fn delta<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let p = self
            .packed
            .as_ref()
            .expect("delta of an inactive LoRA layer");
        let [rows, r] = p.gain.dims();
        check_rows(rows, p.per_row, x.dims()[0]);
        // [b, ..., R]
        let h = burn::tensor::module::linear(x, p.down.clone(), None);
        let mut shape = [1usize; D];
        shape[0] = rows;
        shape[D - 1] = r;
        let h = h * p.gain.clone().reshape(shape);
        burn::tensor::module::linear(h, p.up.clone(), None)
    }

    fn refresh(&mut self, mult: &RowMultipliers) {
        let Some(first) = self.adapters.first() else {
            self.packed = None;
            return;
        };
        let (device, dtype) = (first.down.device(), first.down.dtype());
        let info: Vec<AdapterGainInfo> = self
            .adapters
            .iter()
            .map(|a| AdapterGainInfo {
                id: a.id,
                rank: a.down.dims()[1],
                alpha_scale: a.alpha_scale,
            })
            .collect();
        self.packed =
            gain_matrix::<B>(&info, mult, &device, dtype).map(|(active, gain)| LinearPacked {
                down: Tensor::cat(
                    active
                        .iter()
                        .map(|&k| self.adapters[k].down.clone())
                        .collect(),
                    1,
                ),
                up: Tensor::cat(
                    active
                        .iter()
                        .map(|&k| self.adapters[k].up.clone())
                        .collect(),
                    0,
                ),
                gain,
                per_row: matches!(mult, RowMultipliers::PerRow(_)),
            });
    }
}

impl<B: Backend> Linear<B> {
    /// Attaches an adapter (down `[d_in, r]`, up `[r, d_out]`, in the layer's dtype and device).
    pub fn attach_lora(&mut self, adapter: LinearAdapter<B>) {
        self.lora
            .get_or_insert_with(LinearLora::new)
            .adapters
            .push(adapter);
    }

    /// Recomputes which adapters act on which rows.
    pub fn refresh_lora(&mut self, mult: &RowMultipliers) {
        if let Some(l) = &mut self.lora {
            l.refresh(mult);
        }
    }

    /// `W <- W + sum_k m_k (alpha / r)_k A_k B_k` for the listed `(adapter id, multiplier)`, computed in f32.
    /// The original weight is kept for [`unfuse_lora`](Self::unfuse_lora). No-op for a layer without those
    /// adapters.
    pub fn fuse_lora(&mut self, contributions: &[(usize, f64)]) {
        let Some(lora) = &mut self.lora else { return };
        let parts: Vec<Tensor<B, 2>> = lora
            .adapters
            .iter()
            .filter_map(|a| {
                let m: f64 = contributions
                    .iter()
                    .filter(|(id, _)| *id == a.id)
                    .map(|(_, m)| *m)
                    .sum();
                (m != 0.0).then(|| {
                    upcast(a.down.clone()).matmul(upcast(a.up.clone())) * (m * a.alpha_scale)
                })
            })
            .collect();
        if parts.is_empty() {
            return;
        }
        let w = self.weight.val();
        let original = lora.unfused_weight.get_or_insert_with(|| w.clone()).clone();
        let delta = parts.into_iter().reduce(|a, b| a + b).expect("non-empty");
        let fused = downcast(upcast(original.clone().detach()) + delta, original.dtype());
        self.weight = Param::initialized(
            self.weight.id,
            fused.set_require_grad(original.is_require_grad()),
        );
    }

    /// Puts back the weight from before [`fuse_lora`](Self::fuse_lora) (bit-exact).
    pub fn unfuse_lora(&mut self) {
        if let Some(original) = self.lora.as_mut().and_then(|l| l.unfused_weight.take()) {
            self.weight = Param::initialized(self.weight.id, original);
        }
    }

    /// Unfuses and drops every adapter.
    pub fn remove_loras(&mut self) {
        self.unfuse_lora();
        self.lora = None;
    }
}
