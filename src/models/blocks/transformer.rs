//! diffusers' `Transformer2DModel` with `BasicTransformerBlock`s, as SD 1.x uses them: self-attention,
//! cross-attention on the text embedding, GEGLU feed-forward.

use burn::module::Module;
use burn::tensor::{activation::gelu, backend::Backend, Tensor};

use super::attention::Attention;
use super::probe::AttentionProbe;
use crate::error::Result;
use crate::lora::targets::{visit, LoraTargets, Target};
use crate::models::nn::{Conv2d, GroupNorm, LayerNorm, Linear};
use crate::models::weights::VarBuilder;

/// Shape parameters of one `Transformer2DModel`.
#[derive(Debug, Clone, Copy)]
pub struct TransformerSpec {
    pub channels: usize,
    pub heads: usize,
    pub dim_head: usize,
    pub context_dim: usize,
    pub layers: usize,
    pub norm_groups: usize,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
}

/// `FeedForward` with GEGLU: `net.0.proj` (dim -> 2 * inner), `net.2` (inner -> dim).
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    /// `net.0.proj`
    pub proj: Linear<B>,
    /// `net.2`
    pub out: Linear<B>,
}

impl<B: Backend> FeedForward<B> {
    fn load(vb: &VarBuilder<B>, dim: usize) -> Result<Self> {
        let inner = 4 * dim;
        Ok(Self {
            proj: Linear::load(&vb.pp("net").pp(0).pp("proj"), dim, 2 * inner, true)?,
            out: Linear::load(&vb.pp("net").pp(2), inner, dim, true)?,
        })
    }

    /// `[b, n, dim] -> [b, n, dim]`
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.proj.forward(x);
        let inner = h.dims()[2] / 2;
        // GEGLU: hidden, gate = chunk(2); hidden * gelu(gate)
        let mut parts = h.chunk(2, 2);
        let gate = parts.pop().expect("two chunks");
        let hidden = parts.pop().expect("two chunks");
        debug_assert_eq!(hidden.dims()[2], inner);
        self.out.forward(hidden * gelu(gate))
    }
}

/// `BasicTransformerBlock`: `attn1` (self), `attn2` (cross), `ff`, each after a LayerNorm, with residuals.
#[derive(Module, Debug)]
pub struct BasicTransformerBlock<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn1: Attention<B>,
    pub norm2: LayerNorm<B>,
    pub attn2: Attention<B>,
    pub norm3: LayerNorm<B>,
    pub ff: FeedForward<B>,
}

impl<B: Backend> BasicTransformerBlock<B> {
    fn load(vb: &VarBuilder<B>, s: &TransformerSpec) -> Result<Self> {
        let dim = s.channels;
        Ok(Self {
            norm1: LayerNorm::load(&vb.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::load(
                &vb.pp("attn1"),
                dim,
                dim,
                s.heads,
                s.dim_head,
                false,
                s.upcast_attention,
            )?,
            norm2: LayerNorm::load(&vb.pp("norm2"), dim, 1e-5)?,
            attn2: Attention::load(
                &vb.pp("attn2"),
                dim,
                s.context_dim,
                s.heads,
                s.dim_head,
                false,
                s.upcast_attention,
            )?,
            norm3: LayerNorm::load(&vb.pp("norm3"), dim, 1e-5)?,
            ff: FeedForward::load(&vb.pp("ff"), dim)?,
        })
    }

    /// `x` `[b, n, c]`, `context` `[b, m, context_dim]`.
    fn forward(
        &self,
        x: Tensor<B, 3>,
        context: Tensor<B, 3>,
        probe: &mut AttentionProbe<B>,
    ) -> Tensor<B, 3> {
        let (a, _) = self
            .attn1
            .forward(self.norm1.forward(x.clone()), None, false);
        let x = x + a;
        let keep = probe.wants(x.dims()[1]);
        let (a, probs) = self
            .attn2
            .forward(self.norm2.forward(x.clone()), Some(context), keep);
        probe.record(probs);
        let x = x + a;
        x.clone() + self.ff.forward(self.norm3.forward(x))
    }
}

/// Input/output projection: a 1x1 convolution (SD 1.x) or a linear layer (`use_linear_projection`).
#[derive(Module, Debug)]
pub enum Projection<B: Backend> {
    Conv(Conv2d<B>),
    Linear(Linear<B>),
}

impl<B: Backend> Projection<B> {
    fn load(vb: &VarBuilder<B>, c_in: usize, c_out: usize, linear: bool) -> Result<Self> {
        Ok(if linear {
            Self::Linear(Linear::load(vb, c_in, c_out, true)?)
        } else {
            Self::Conv(Conv2d::load(vb, c_in, c_out, 1, 1, 0)?)
        })
    }
}

/// `Transformer2DModel` over a feature map.
#[derive(Module, Debug)]
pub struct Transformer2DModel<B: Backend> {
    pub norm: GroupNorm<B>,
    pub proj_in: Projection<B>,
    pub transformer_blocks: Vec<BasicTransformerBlock<B>>,
    pub proj_out: Projection<B>,
}

impl<B: Backend> Transformer2DModel<B> {
    pub fn load(vb: &VarBuilder<B>, s: &TransformerSpec) -> Result<Self> {
        let inner = s.heads * s.dim_head;
        let blocks = (0..s.layers)
            .map(|i| BasicTransformerBlock::load(&vb.pp("transformer_blocks").pp(i), s))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm::load(&vb.pp("norm"), s.norm_groups, s.channels, 1e-6)?,
            proj_in: Projection::load(
                &vb.pp("proj_in"),
                s.channels,
                inner,
                s.use_linear_projection,
            )?,
            transformer_blocks: blocks,
            proj_out: Projection::load(
                &vb.pp("proj_out"),
                inner,
                s.channels,
                s.use_linear_projection,
            )?,
        })
    }

    /// `x` `[b, c, h, w]`, `context` `[b, m, context_dim]` -> `[b, c, h, w]`
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        context: Tensor<B, 3>,
        probe: &mut AttentionProbe<B>,
    ) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let residual = x.clone();
        let x = self.norm.forward(x);
        // [b, h*w, inner]
        let mut t = match &self.proj_in {
            Projection::Conv(conv) => {
                let y = conv.forward(x);
                let inner = y.dims()[1];
                y.reshape([b, inner, h * w]).swap_dims(1, 2)
            }
            Projection::Linear(lin) => lin.forward(x.reshape([b, c, h * w]).swap_dims(1, 2)),
        };
        for block in &self.transformer_blocks {
            t = block.forward(t, context.clone(), probe);
        }
        let inner = t.dims()[2];
        let y = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(t.swap_dims(1, 2).reshape([b, inner, h, w])),
            Projection::Linear(lin) => lin.forward(t).swap_dims(1, 2).reshape([b, c, h, w]),
        };
        y + residual
    }
}

impl<B: Backend> LoraTargets<B> for FeedForward<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        visit(&mut self.proj, prefix, "net.0.proj", f);
        visit(&mut self.out, prefix, "net.2", f);
    }
}

impl<B: Backend> LoraTargets<B> for BasicTransformerBlock<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        visit(&mut self.attn1, prefix, "attn1", f);
        visit(&mut self.attn2, prefix, "attn2", f);
        visit(&mut self.ff, prefix, "ff", f);
    }
}

impl<B: Backend> LoraTargets<B> for Projection<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        match self {
            Self::Conv(conv) => conv.for_each_target(prefix, f),
            Self::Linear(lin) => lin.for_each_target(prefix, f),
        }
    }
}

impl<B: Backend> LoraTargets<B> for Transformer2DModel<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        visit(&mut self.proj_in, prefix, "proj_in", f);
        let blocks = &mut self.transformer_blocks;
        visit(blocks, prefix, "transformer_blocks", f);
        visit(&mut self.proj_out, prefix, "proj_out", f);
    }
}
