//! Which adapters act on which batch rows, and how strongly: the per-row gains of the unfused path.
//!
//! One batched forward serves several branches (base, LoRA 1, LoRA 2, ..., both CFG halves) that share the base
//! weights: a LoRA-wrapped layer computes `y = W x + sum_k g[row, k] * B_k (A_k x)` with
//! `g[row, k] = global scale * adapter weight * (alpha / r)_k` for the adapters assigned to that row, 0 otherwise.

use burn::tensor::{backend::Backend, Tensor, TensorData};

/// Per batch row, the adapters acting on it and their multiplier (global LoRA scale x adapter weight; the
/// module's own `alpha / r` is applied by the layer). Adapters are named by their index (`AdapterId.0`).
#[derive(Debug, Clone, PartialEq)]
pub enum RowMultipliers {
    /// The same adapters on every row (diffusers' `set_adapters`).
    AllRows(Vec<(usize, f64)>),
    /// Row `i` of the batch uses `rows[i]`.
    PerRow(Vec<Vec<(usize, f64)>>),
}

impl RowMultipliers {
    /// No adapter anywhere.
    pub fn none() -> Self {
        Self::AllRows(Vec::new())
    }

    /// Number of gain rows: 1 (broadcast over the batch) or the batch size.
    pub fn rows(&self) -> usize {
        match self {
            Self::AllRows(_) => 1,
            Self::PerRow(r) => r.len(),
        }
    }

    /// The multiplier of adapter `id` on gain row `row` (0 when it does not act there).
    pub fn get(&self, row: usize, id: usize) -> f64 {
        let list = match self {
            Self::AllRows(l) => l,
            Self::PerRow(r) => &r[row],
        };
        list.iter().filter(|(i, _)| *i == id).map(|(_, m)| *m).sum()
    }
}

/// One adapter of a layer as the gain computation sees it.
#[derive(Debug, Clone, Copy)]
pub struct AdapterGainInfo {
    pub id: usize,
    pub rank: usize,
    /// `alpha / r` of this module.
    pub alpha_scale: f64,
}

/// The adapters of a layer that act on at least one row (indices into `adapters`) and their gain matrix
/// `[rows, sum of their ranks]` (each adapter's value repeated over its rank columns); `None` when no adapter
/// acts anywhere, so the layer costs nothing extra.
pub fn gain_matrix<B: Backend>(
    adapters: &[AdapterGainInfo],
    mult: &RowMultipliers,
    device: &B::Device,
    dtype: burn::tensor::DType,
) -> Option<(Vec<usize>, Tensor<B, 2>)> {
    let rows = mult.rows();
    let active: Vec<usize> = (0..adapters.len())
        .filter(|&k| {
            (0..rows).any(|r| mult.get(r, adapters[k].id) * adapters[k].alpha_scale != 0.0)
        })
        .collect();
    if active.is_empty() || rows == 0 {
        return None;
    }
    let width: usize = active.iter().map(|&k| adapters[k].rank).sum();
    let mut g = Vec::with_capacity(rows * width);
    for r in 0..rows {
        for &k in &active {
            let a = adapters[k];
            let v = (mult.get(r, a.id) * a.alpha_scale) as f32;
            g.extend(std::iter::repeat_n(v, a.rank));
        }
    }
    let t = Tensor::<B, 2>::from_data(
        TensorData::new(g, [rows, width]),
        (device, burn::tensor::DType::F32),
    );
    let t = if dtype == burn::tensor::DType::F32 {
        t
    } else {
        t.cast(dtype)
    };
    Some((active, t))
}

/// Panics with a clear message when per-row gains were set for a batch of a different size (a caller bug: the
/// pipeline checks this before calling the model, see `LoraState::check_batch`).
pub(crate) fn check_rows(gain_rows: usize, per_row: bool, batch: usize) {
    assert!(
        !per_row || gain_rows == batch,
        "LoRA rows were assigned for a batch of {gain_rows} but the input has {batch} rows: \
         call set_lora_rows with one entry per batch row"
    );
}
