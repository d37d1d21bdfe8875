//! LoRA adapters of a `Conv2d` layer (LoCon): the down factor is a convolution with the layer's own kernel,
//! stride and padding, the up factor a 1x1 convolution. Unfused per-row deltas, and exact fusing/unfusing.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, module::conv2d, ops::ConvOptions, Tensor};

use super::rows::{check_rows, gain_matrix, AdapterGainInfo, RowMultipliers};
use crate::models::nn::norm::{downcast, upcast};
use crate::models::nn::Conv2d;

/// One adapter of a convolution, in PyTorch's (and burn's) conv layout.
#[derive(Module, Debug)]
pub struct ConvAdapter<B: Backend> {
    /// The adapter (`AdapterId.0`).
    pub id: usize,
    /// down A `[r, c_in, k, k]` (same kernel as the layer)
    pub down: Tensor<B, 4>,
    /// up B `[c_out, r, 1, 1]`
    pub up: Tensor<B, 4>,
    /// `alpha / r` of this module.
    pub alpha_scale: f64,
}

/// The adapters that act on some row, concatenated along the rank axis (`R` = sum of their ranks).
#[derive(Module, Debug)]
pub struct ConvPacked<B: Backend> {
    /// `[R, c_in, k, k]`
    pub down: Tensor<B, 4>,
    /// `[c_out, R, 1, 1]`
    pub up: Tensor<B, 4>,
    /// `[rows, R]`: rows = 1 (every batch row alike) or the batch size.
    pub gain: Tensor<B, 2>,
    /// Whether `gain` has one row per batch row (else one row for all).
    pub per_row: bool,
}

/// The LoRA state of one convolution.
#[derive(Module, Debug)]
pub struct ConvLora<B: Backend> {
    pub adapters: Vec<ConvAdapter<B>>,
    /// `None` when no adapter acts on any row (the layer then costs nothing extra).
    pub packed: Option<ConvPacked<B>>,
    /// The weight `[c_out, c_in, k, k]` before fusing; `unfuse` puts it back bit for bit.
    pub unfused_weight: Option<Tensor<B, 4>>,
}

impl<B: Backend> ConvLora<B> {
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

    /// `sum_k g[row, k] B_k * (A_k * x)`: `[b, c_in, h, w] -> [b, c_out, h', w']` with the layer's `stride` and
    /// `padding`. Call only when active.
    pub fn delta(&self, x: Tensor<B, 4>, stride: usize, padding: usize) -> Tensor<B, 4> {
        let p = self
            .packed
            .as_ref()
            .expect("delta of an inactive LoRA layer");
        let [rows, r] = p.gain.dims();
        check_rows(rows, p.per_row, x.dims()[0]);
        // [b, R, h', w']
        let h = conv2d(
            x,
            p.down.clone(),
            None,
            ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1),
        );
        let h = h * p.gain.clone().reshape([rows, r, 1, 1]);
        conv2d(
            h,
            p.up.clone(),
            None,
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        )
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
                rank: a.down.dims()[0],
                alpha_scale: a.alpha_scale,
            })
            .collect();
        self.packed =
            gain_matrix::<B>(&info, mult, &device, dtype).map(|(active, gain)| ConvPacked {
                down: Tensor::cat(
                    active
                        .iter()
                        .map(|&k| self.adapters[k].down.clone())
                        .collect(),
                    0,
                ),
                up: Tensor::cat(
                    active
                        .iter()
                        .map(|&k| self.adapters[k].up.clone())
                        .collect(),
                    1,
                ),
                gain,
                per_row: matches!(mult, RowMultipliers::PerRow(_)),
            });
    }
}

impl<B: Backend> Conv2d<B> {
    /// Attaches an adapter (down `[r, c_in, k, k]`, up `[c_out, r, 1, 1]`, in the layer's dtype and device).
    pub fn attach_lora(&mut self, adapter: ConvAdapter<B>) {
        self.lora
            .get_or_insert_with(ConvLora::new)
            .adapters
            .push(adapter);
    }

    /// Recomputes which adapters act on which rows.
    pub fn refresh_lora(&mut self, mult: &RowMultipliers) {
        if let Some(l) = &mut self.lora {
            l.refresh(mult);
        }
    }

    /// `W <- W + sum_k m_k (alpha / r)_k B_k A_k` (`[c_out, r] x [r, c_in k k]`) for the listed
    /// `(adapter id, multiplier)`, computed in f32. The original weight is kept for
    /// [`unfuse_lora`](Self::unfuse_lora). No-op for a layer without those adapters.
    pub fn fuse_lora(&mut self, contributions: &[(usize, f64)]) {
        let Some(lora) = &mut self.lora else { return };
        let [c_out, c_in, kh, kw] = self.weight.dims();
        let parts: Vec<Tensor<B, 2>> = lora
            .adapters
            .iter()
            .filter_map(|a| {
                let m: f64 = contributions
                    .iter()
                    .filter(|(id, _)| *id == a.id)
                    .map(|(_, m)| *m)
                    .sum();
                let r = a.down.dims()[0];
                (m != 0.0).then(|| {
                    let up = upcast(a.up.clone()).reshape([c_out, r]);
                    let down = upcast(a.down.clone()).reshape([r, c_in * kh * kw]);
                    up.matmul(down) * (m * a.alpha_scale)
                })
            })
            .collect();
        if parts.is_empty() {
            return;
        }
        let w = self.weight.val();
        let original = lora.unfused_weight.get_or_insert_with(|| w.clone()).clone();
        let delta = parts
            .into_iter()
            .reduce(|a, b| a + b)
            .expect("non-empty")
            .reshape([c_out, c_in, kh, kw]);
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
