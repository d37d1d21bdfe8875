//! Attention maps per branch: the official `AttentionStore.aggregate_attention` over the probed
//! cross-attention layers (those at the attention resolution, e.g. the five 16x16 layers of SD 1.5).

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

/// Which rows of the batched UNet call feed a branch's map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapRows {
    /// Both CFG rows (negative and positive prompt), as the official code does (its default).
    Both,
    /// The positive-prompt row only (the fix, `maps = "cond"`).
    Cond,
}

/// Averages the probed probabilities of each branch over layers, heads and the chosen CFG rows.
///
/// `layer_maps`: one `[b, heads, q, tokens]` tensor per probed layer (heads may differ between layers;
/// the mean is over every (layer, row, head) map, as `torch.cat(...).mean(0)` in the reference).
/// `branch_rows[k]` = `(negative row, positive row)` of branch k in the batch.
/// Returns `[branches, q, tokens]` (q = h * w, row-major: index = y * w + x).
pub fn aggregate<B: Backend>(
    layer_maps: &[Tensor<B, 4>],
    branch_rows: &[(usize, usize)],
    rows: MapRows,
) -> Tensor<B, 3> {
    assert!(
        !layer_maps.is_empty(),
        "no attention layer at the attention resolution was probed"
    );
    let device = layer_maps[0].device();
    let per_branch: Vec<Tensor<B, 3>> = branch_rows
        .iter()
        .map(|&(neg, pos)| {
            let chosen: Vec<i64> = match rows {
                MapRows::Both => vec![neg as i64, pos as i64],
                MapRows::Cond => vec![pos as i64],
            };
            let idx = Tensor::<B, 1, Int>::from_data(
                TensorData::new(chosen.clone(), [chosen.len()]),
                &device,
            );
            let mut total: Option<Tensor<B, 2>> = None;
            let mut count = 0usize;
            for m in layer_maps {
                let [_, heads, q, t] = m.dims();
                // [rows, heads, q, t] -> sum over rows and heads -> [q, t]
                let s = m
                    .clone()
                    .select(0, idx.clone())
                    .sum_dim(0)
                    .sum_dim(1)
                    .reshape([q, t]);
                count += chosen.len() * heads;
                total = Some(match total {
                    Some(acc) => acc + s,
                    None => s,
                });
            }
            (total.expect("at least one layer") / count as f64).unsqueeze::<3>()
        })
        .collect();
    Tensor::cat(per_branch, 0)
}
