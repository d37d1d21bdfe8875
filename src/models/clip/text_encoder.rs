//! The CLIP text encoder of SD 1.x (transformers' `CLIPTextModel`), with `clip_skip`.
//!
//! Module tree as in transformers: `text_model.embeddings.{token,position}_embedding`,
//! `text_model.encoder.layers.{i}.{self_attn.{q,k,v,out}_proj, layer_norm1, mlp.{fc1,fc2}, layer_norm2}`,
//! `text_model.final_layer_norm`.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use serde_json::json;

use crate::error::{Error, Result};
use crate::lora::targets::{visit, LoraTargets, Target};
use crate::models::config_json::JsonConfig;
use crate::models::nn::activation::Activation;
use crate::models::nn::attention::{merge_heads, scaled_dot_product, split_heads};
use crate::models::nn::{Embedding, LayerNorm, Linear};
use crate::models::weights::VarBuilder;

/// `CLIPTextConfig` fields that SD 1.x uses.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl ClipTextConfig {
    /// SD 1.x's text encoder (OpenAI CLIP ViT-L/14 text tower).
    pub fn sd15() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json(&JsonConfig::from_file(path)?)
    }

    pub fn from_json(c: &JsonConfig) -> Result<Self> {
        let act = c.string("hidden_act", Some("quick_gelu"))?;
        let hidden_act = Activation::from_name(&act).ok_or_else(|| {
            Error::config(
                &c.path,
                "hidden_act",
                format!("`{act}` is not supported (expected quick_gelu or gelu)"),
            )
        })?;
        // CLIPTextModelWithProjection (SDXL/SD2's second encoder) has other keys; refuse clearly.
        if let Some(archs) = c.get("architectures").and_then(|a| a.as_array()) {
            if !archs.iter().any(|a| a == &json!("CLIPTextModel")) {
                return Err(Error::config(
                    &c.path,
                    "architectures",
                    format!(
                        "expected [\"CLIPTextModel\"] (the SD 1.x text encoder), found {archs:?}"
                    ),
                ));
            }
        }
        let cfg = Self {
            vocab_size: c.usize("vocab_size", Some(49408))?,
            hidden_size: c.usize("hidden_size", Some(512))?,
            intermediate_size: c.usize("intermediate_size", Some(2048))?,
            num_hidden_layers: c.usize("num_hidden_layers", Some(12))?,
            num_attention_heads: c.usize("num_attention_heads", Some(8))?,
            max_position_embeddings: c.usize("max_position_embeddings", Some(77))?,
            hidden_act,
            layer_norm_eps: c.f64("layer_norm_eps", Some(1e-5))?,
        };
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(Error::config(
                &c.path,
                "num_attention_heads",
                format!("must divide hidden_size {}", cfg.hidden_size),
            ));
        }
        Ok(cfg)
    }
}

/// `CLIPAttention`: causal self-attention.
#[derive(Module, Debug)]
pub struct ClipAttention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub out_proj: Linear<B>,
    pub heads: usize,
}

impl<B: Backend> ClipAttention<B> {
    fn load(vb: &VarBuilder<B>, cfg: &ClipTextConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(Self {
            q_proj: Linear::load(&vb.pp("q_proj"), d, d, true)?,
            k_proj: Linear::load(&vb.pp("k_proj"), d, d, true)?,
            v_proj: Linear::load(&vb.pp("v_proj"), d, d, true)?,
            out_proj: Linear::load(&vb.pp("out_proj"), d, d, true)?,
            heads: cfg.num_attention_heads,
        })
    }

    /// `[b, s, d] -> [b, s, d]`, `mask` `[s, s]` additive causal mask.
    fn forward(&self, x: Tensor<B, 3>, mask: Tensor<B, 2>) -> Tensor<B, 3> {
        let d = x.dims()[2];
        let scale = ((d / self.heads) as f64).powf(-0.5);
        let q = split_heads(self.q_proj.forward(x.clone()), self.heads);
        let k = split_heads(self.k_proj.forward(x.clone()), self.heads);
        let v = split_heads(self.v_proj.forward(x), self.heads);
        let (out, _) = scaled_dot_product(q, k, v, scale, Some(mask), false, false);
        self.out_proj.forward(merge_heads(out))
    }
}

/// `CLIPMLP`.
#[derive(Module, Debug)]
pub struct ClipMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    pub act: Activation,
}

/// `CLIPEncoderLayer`: pre-norm attention and MLP with residuals.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer<B: Backend> {
    pub self_attn: ClipAttention<B>,
    pub layer_norm1: LayerNorm<B>,
    pub mlp: ClipMlp<B>,
    pub layer_norm2: LayerNorm<B>,
}

impl<B: Backend> ClipEncoderLayer<B> {
    fn load(vb: &VarBuilder<B>, cfg: &ClipTextConfig) -> Result<Self> {
        let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            self_attn: ClipAttention::load(&vb.pp("self_attn"), cfg)?,
            layer_norm1: LayerNorm::load(&vb.pp("layer_norm1"), d, cfg.layer_norm_eps)?,
            mlp: ClipMlp {
                fc1: Linear::load(&vb.pp("mlp").pp("fc1"), d, f, true)?,
                fc2: Linear::load(&vb.pp("mlp").pp("fc2"), f, d, true)?,
                act: cfg.hidden_act,
            },
            layer_norm2: LayerNorm::load(&vb.pp("layer_norm2"), d, cfg.layer_norm_eps)?,
        })
    }

    fn forward(&self, x: Tensor<B, 3>, mask: Tensor<B, 2>) -> Tensor<B, 3> {
        let h = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x), mask);
        let m = self.layer_norm2.forward(h.clone());
        let m = self
            .mlp
            .fc2
            .forward(self.mlp.act.forward(self.mlp.fc1.forward(m)));
        h + m
    }
}

/// `CLIPTextModel` (its `text_model`).
#[derive(Module, Debug)]
pub struct ClipTextModel<B: Backend> {
    pub token_embedding: Embedding<B>,
    pub position_embedding: Embedding<B>,
    pub layers: Vec<ClipEncoderLayer<B>>,
    pub final_layer_norm: LayerNorm<B>,
}

impl<B: Backend> ClipTextModel<B> {
    /// Loads from a builder at the root of a `CLIPTextModel` file (keys `text_model.*`).
    pub fn load(vb: &VarBuilder<B>, cfg: &ClipTextConfig) -> Result<Self> {
        let vb = vb.pp("text_model");
        let emb = vb.pp("embeddings");
        let d = cfg.hidden_size;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ClipEncoderLayer::load(&vb.pp("encoder").pp("layers").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            token_embedding: Embedding::load(&emb.pp("token_embedding"), cfg.vocab_size, d)?,
            position_embedding: Embedding::load(
                &emb.pp("position_embedding"),
                cfg.max_position_embeddings,
                d,
            )?,
            layers,
            final_layer_norm: LayerNorm::load(&vb.pp("final_layer_norm"), d, cfg.layer_norm_eps)?,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Token ids `[b, s]` to the prompt embedding `[b, s, d]` that conditions the UNet.
    ///
    /// `clip_skip` as in diffusers' `encode_prompt`: `None` (or 0) gives `last_hidden_state`; `Some(k)` takes the
    /// output of the layer `k` before the last and applies the final layer norm.
    pub fn forward(
        &self,
        ids: Tensor<B, 2, Int>,
        clip_skip: Option<usize>,
    ) -> Result<Tensor<B, 3>> {
        let [b, s] = ids.dims();
        let n_pos = self.position_embedding.weight.dims()[0];
        if s > n_pos {
            return Err(Error::invalid(
                "text encoder input",
                format!("{s} tokens, the model has {n_pos} positions"),
            ));
        }
        let skip = clip_skip.unwrap_or(0);
        if skip > self.layers.len() {
            return Err(Error::invalid(
                "clip_skip",
                format!("{skip} skips every one of the {} layers", self.layers.len()),
            ));
        }
        let device = ids.device();
        let pos: Tensor<B, 2, Int> =
            Tensor::<B, 1, Int>::arange(0..s as i64, &device).reshape([1, s]);
        let pos = pos.expand([b, s]);
        // [b, s, d]
        let mut h = self.token_embedding.forward(ids) + self.position_embedding.forward(pos);
        let mask = causal_mask::<B>(s, &device).cast(h.dtype());
        for layer in &self.layers[..self.layers.len() - skip] {
            h = layer.forward(h, mask.clone());
        }
        Ok(self.final_layer_norm.forward(h))
    }

    /// Embeds a batch of tokenized prompts given as `u32` ids.
    pub fn encode_ids(
        &self,
        ids: &[Vec<u32>],
        clip_skip: Option<usize>,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let b = ids.len();
        let s = ids.first().map(|v| v.len()).unwrap_or(0);
        if ids.iter().any(|v| v.len() != s) {
            return Err(Error::invalid(
                "token ids",
                "prompts of different lengths in one batch",
            ));
        }
        let vocab = self.token_embedding.weight.dims()[0];
        if let Some(bad) = ids.iter().flatten().find(|&&i| i as usize >= vocab) {
            return Err(Error::invalid(
                "token ids",
                format!("id {bad} outside the vocabulary of {vocab}"),
            ));
        }
        let flat: Vec<i64> = ids.iter().flatten().map(|&i| i as i64).collect();
        let t = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [b, s]), device);
        self.forward(t, clip_skip)
    }
}

/// Additive causal mask `[s, s]`: 0 on and below the diagonal, a large negative value above.
fn causal_mask<B: Backend>(s: usize, device: &B::Device) -> Tensor<B, 2> {
    let mut v = vec![0f32; s * s];
    for i in 0..s {
        for j in (i + 1)..s {
            v[i * s + j] = f32::MIN;
        }
    }
    Tensor::from_data(TensorData::new(v, [s, s]), device)
}

impl<B: Backend> LoraTargets<B> for ClipAttention<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        visit(&mut self.q_proj, prefix, "q_proj", f);
        visit(&mut self.k_proj, prefix, "k_proj", f);
        visit(&mut self.v_proj, prefix, "v_proj", f);
        visit(&mut self.out_proj, prefix, "out_proj", f);
    }
}

impl<B: Backend> LoraTargets<B> for ClipMlp<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        visit(&mut self.fc1, prefix, "fc1", f);
        visit(&mut self.fc2, prefix, "fc2", f);
    }
}

impl<B: Backend> LoraTargets<B> for ClipEncoderLayer<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        visit(&mut self.self_attn, prefix, "self_attn", f);
        visit(&mut self.mlp, prefix, "mlp", f);
    }
}

/// Paths from the root of a `CLIPTextModel` file: `text_model.encoder.layers.{i}.…`.
impl<B: Backend> LoraTargets<B> for ClipTextModel<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        visit(&mut self.layers, prefix, "text_model.encoder.layers", f);
    }
}
