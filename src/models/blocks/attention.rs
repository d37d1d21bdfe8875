//! diffusers' `Attention` (the default `AttnProcessor` arithmetic): `to_q`, `to_k`, `to_v`, `to_out.0`.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use crate::error::Result;
use crate::lora::targets::{visit, LoraTargets, Target};
use crate::models::nn::attention::{merge_heads, scaled_dot_product, split_heads};
use crate::models::nn::Linear;
use crate::models::weights::VarBuilder;

/// Multi-head attention over token sequences `[b, n, c]`.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub to_q: Linear<B>,
    pub to_k: Linear<B>,
    pub to_v: Linear<B>,
    /// `to_out.0`
    pub to_out: Linear<B>,
    pub heads: usize,
    pub dim_head: usize,
    pub upcast_attention: bool,
}

impl<B: Backend> Attention<B> {
    /// `query_dim` -> `heads * dim_head` attention whose keys/values come from `context_dim` features.
    /// `qkv_bias`: the VAE's attention has biases on q/k/v, the UNet's has none.
    pub fn load(
        vb: &VarBuilder<B>,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        dim_head: usize,
        qkv_bias: bool,
        upcast_attention: bool,
    ) -> Result<Self> {
        let inner = heads * dim_head;
        Ok(Self {
            to_q: Linear::load(&vb.pp("to_q"), query_dim, inner, qkv_bias)?,
            to_k: Linear::load(&vb.pp("to_k"), context_dim, inner, qkv_bias)?,
            to_v: Linear::load(&vb.pp("to_v"), context_dim, inner, qkv_bias)?,
            to_out: Linear::load(&vb.pp("to_out").pp(0), inner, query_dim, true)?,
            heads,
            dim_head,
            upcast_attention,
        })
    }

    /// `x` `[b, n, query_dim]`, `context` `[b, m, context_dim]` (self-attention when `None`).
    /// Returns `[b, n, query_dim]` and, when `keep_probs`, the probabilities `[b, heads, n, m]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        context: Option<Tensor<B, 3>>,
        keep_probs: bool,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 4>>) {
        let context = context.unwrap_or_else(|| x.clone());
        let q = split_heads(self.to_q.forward(x), self.heads);
        let k = split_heads(self.to_k.forward(context.clone()), self.heads);
        let v = split_heads(self.to_v.forward(context), self.heads);
        let scale = (self.dim_head as f64).powf(-0.5);
        let (out, probs) =
            scaled_dot_product(q, k, v, scale, None, self.upcast_attention, keep_probs);
        (self.to_out.forward(merge_heads(out)), probs)
    }
}

impl<B: Backend> LoraTargets<B> for Attention<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        visit(&mut self.to_q, prefix, "to_q", f);
        visit(&mut self.to_k, prefix, "to_k", f);
        visit(&mut self.to_v, prefix, "to_v", f);
        visit(&mut self.to_out, prefix, "to_out.0", f);
    }
}
