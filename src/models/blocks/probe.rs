//! The attention probe: which cross-attention layers must hand back their probabilities during a UNet
//! forward (CLoRA's attention store), leaving every other layer on the plain path.

use burn::tensor::{backend::Backend, Tensor};

/// Collects cross-attention probabilities of the layers whose query count equals `query_len`
/// (e.g. 256 for the 16x16 layers of SD 1.x at 512x512), in forward order.
#[derive(Debug, Clone)]
pub struct AttentionProbe<B: Backend> {
    /// Keep the maps of cross-attention layers with this many queries; `None` keeps none.
    pub query_len: Option<usize>,
    /// `(layer index among all cross-attention layers, probabilities [b, heads, n_q, n_k])`.
    pub maps: Vec<(usize, Tensor<B, 4>)>,
    /// Running count of cross-attention layers seen in this forward.
    pub cross_layers_seen: usize,
}

impl<B: Backend> Default for AttentionProbe<B> {
    fn default() -> Self {
        Self::none()
    }
}

impl<B: Backend> AttentionProbe<B> {
    /// A probe that keeps nothing.
    pub fn none() -> Self {
        Self {
            query_len: None,
            maps: Vec::new(),
            cross_layers_seen: 0,
        }
    }

    /// A probe keeping the cross-attention maps with `query_len` queries.
    pub fn at_query_len(query_len: usize) -> Self {
        Self {
            query_len: Some(query_len),
            maps: Vec::new(),
            cross_layers_seen: 0,
        }
    }

    /// Whether the next cross-attention layer, with `n_q` queries, must return its probabilities.
    pub fn wants(&self, n_q: usize) -> bool {
        self.query_len == Some(n_q)
    }

    pub(crate) fn record(&mut self, probs: Option<Tensor<B, 4>>) {
        if let Some(p) = probs {
            self.maps.push((self.cross_layers_seen, p));
        }
        self.cross_layers_seen += 1;
    }
}
