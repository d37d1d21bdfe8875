//! Attention maps per branch: the official `AttentionStore.aggregate_attention` over the probed
//! cross-attention layers (those at the attention resolution, e.g. the five 16x16 layers of SD 1.5).

use burn::tensor::{backend::Backend, Tensor};

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
    let per_branch: Vec<Tensor<B, 3>> = branch_rows
        .iter()
        .map(|&(neg, pos)| {
            let chosen: &[usize] = match rows {
                MapRows::Both => &[neg, pos],
                MapRows::Cond => &[pos],
            };
            let mut total: Option<Tensor<B, 2>> = None;
            let mut count = 0usize;
            for m in layer_maps {
                let [_, heads, q, t] = m.dims();
                // Each (row, head) map [q, t] is sliced out and added: no `select` and no `sum_dim` here. On
                // burn 0.21's CUDA backend the gradient of `sum_dim` over the row and head axes of these maps
                // came out wrong (session 15, `tests/backend_grads.rs`: "sum over batch and heads of a 4-d
                // tensor"), which sent CLoRA's latent update astray there; slices and adds were checked right
                // on `flex` and CUDA.
                for &r in chosen {
                    for h in 0..heads {
                        let s = m
                            .clone()
                            .slice([r..r + 1, h..h + 1, 0..q, 0..t])
                            .reshape([q, t]);
                        total = Some(match total {
                            Some(acc) => acc + s,
                            None => s,
                        });
                    }
                    count += heads;
                }
            }
            (total.expect("at least one layer") / count as f64).unsqueeze::<3>()
        })
        .collect();
    Tensor::cat(per_branch, 0)
}
