//! CLIP (transformers' `CLIPModel`): text and vision towers with their projections, for any ViT configuration
//! (B/32, B/16, L/14, LAION's, ...), loaded from HF checkpoints with their own key names.
//!
//! Written in candle-transformers' style rather than reusing `candle_transformers::models::clip`, which
//! hard-codes `quick_gelu` for the text tower and `layer_norm_eps = 1e-5`, and pools the text at
//! `argmax(input_ids)`; transformers pools at the first `eos_token_id` (argmax only for the legacy
//! `eos_token_id == 2` configs), and LAION checkpoints use `gelu`. The key names are the same:
//! `text_model.{embeddings.{token,position}_embedding, encoder.layers.N.{self_attn.{q,k,v,out}_proj,
//! layer_norm1, mlp.fc1, mlp.fc2, layer_norm2}, final_layer_norm}`, `vision_model.{embeddings.{class_embedding,
//! patch_embedding, position_embedding}, pre_layrnorm, encoder..., post_layernorm}`, `text_projection`,
//! `visual_projection`.

use candle::{Device, IndexOp, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Embedding, Init, LayerNorm, Linear, VarBuilder};

use super::activation::Activation;
use super::config::{check_heads, in_section, nested, positive};
use crate::error::{Error, Result};
use crate::models::config_json::JsonConfig;

/// `CLIPTextConfig` (the fields the forward pass uses).
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
    /// Where the text is pooled: the first position of this id, or `argmax(input_ids)` when it is 2 (legacy).
    pub eos_token_id: u32,
}

/// `CLIPVisionConfig` (the fields the forward pass uses).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

/// `CLIPConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    pub text: ClipTextConfig,
    pub vision: ClipVisionConfig,
    pub projection_dim: usize,
}

impl ClipTextConfig {
    /// From a `text_config` object, with transformers 4.39's defaults.
    pub fn from_json(cfg: &JsonConfig) -> Result<Self> {
        let hidden_size = positive(cfg, "hidden_size", 512)?;
        let num_attention_heads = positive(cfg, "num_attention_heads", 8)?;
        check_heads(cfg, hidden_size, num_attention_heads, "num_attention_heads")?;
        Ok(Self {
            vocab_size: positive(cfg, "vocab_size", 49408)?,
            hidden_size,
            intermediate_size: positive(cfg, "intermediate_size", 2048)?,
            num_hidden_layers: cfg.usize("num_hidden_layers", Some(12))?,
            num_attention_heads,
            max_position_embeddings: positive(cfg, "max_position_embeddings", 77)?,
            hidden_act: Activation::parse(
                &cfg.string("hidden_act", Some("quick_gelu"))?,
                &cfg.path,
                "hidden_act",
            )?,
            layer_norm_eps: cfg.f64("layer_norm_eps", Some(1e-5))?,
            eos_token_id: u32::try_from(cfg.usize("eos_token_id", Some(49407))?)
                .map_err(|_| Error::config(&cfg.path, "eos_token_id", "does not fit in 32 bits"))?,
        })
    }

    /// openai/clip-vit-base-patch32's text tower.
    pub fn vit_b32() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 2,
        }
    }
}

impl ClipVisionConfig {
    /// From a `vision_config` object, with transformers 4.39's defaults.
    pub fn from_json(cfg: &JsonConfig) -> Result<Self> {
        let hidden_size = positive(cfg, "hidden_size", 768)?;
        let num_attention_heads = positive(cfg, "num_attention_heads", 12)?;
        check_heads(cfg, hidden_size, num_attention_heads, "num_attention_heads")?;
        let image_size = positive(cfg, "image_size", 224)?;
        let patch_size = positive(cfg, "patch_size", 32)?;
        if image_size % patch_size != 0 {
            return Err(Error::config(
                &cfg.path,
                "patch_size",
                format!("{patch_size} does not divide image_size {image_size}"),
            ));
        }
        Ok(Self {
            hidden_size,
            intermediate_size: positive(cfg, "intermediate_size", 3072)?,
            num_hidden_layers: cfg.usize("num_hidden_layers", Some(12))?,
            num_attention_heads,
            num_channels: positive(cfg, "num_channels", 3)?,
            image_size,
            patch_size,
            hidden_act: Activation::parse(
                &cfg.string("hidden_act", Some("quick_gelu"))?,
                &cfg.path,
                "hidden_act",
            )?,
            layer_norm_eps: cfg.f64("layer_norm_eps", Some(1e-5))?,
        })
    }

    /// openai/clip-vit-base-patch32's vision tower.
    pub fn vit_b32() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

impl ClipConfig {
    /// From a `CLIPModel` `config.json` (the caller has checked `model_type`).
    pub fn from_json(cfg: &JsonConfig) -> Result<Self> {
        let text = in_section(
            "text_config",
            ClipTextConfig::from_json(&nested(cfg, "text_config")?),
        )?;
        let vision = in_section(
            "vision_config",
            ClipVisionConfig::from_json(&nested(cfg, "vision_config")?),
        )?;
        Ok(Self {
            text,
            vision,
            projection_dim: positive(cfg, "projection_dim", 512)?,
        })
    }

    /// openai/clip-vit-base-patch32.
    pub fn vit_b32() -> Self {
        Self {
            text: ClipTextConfig::vit_b32(),
            vision: ClipVisionConfig::vit_b32(),
            projection_dim: 512,
        }
    }
}

/// The settings one transformer stack needs (shared by both towers).
#[derive(Debug, Clone, Copy)]
struct StackConfig {
    hidden: usize,
    intermediate: usize,
    heads: usize,
    layers: usize,
    act: Activation,
    eps: f64,
}

#[derive(Debug, Clone)]
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
    scale: f64,
}

impl ClipAttention {
    fn new(vb: VarBuilder, c: &StackConfig) -> candle::Result<Self> {
        let h = c.hidden;
        let head_dim = h / c.heads;
        Ok(Self {
            q_proj: candle_nn::linear(h, h, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear(h, h, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear(h, h, vb.pp("v_proj"))?,
            out_proj: candle_nn::linear(h, h, vb.pp("out_proj"))?,
            heads: c.heads,
            head_dim,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    fn split_heads(&self, xs: &Tensor, b: usize, s: usize) -> candle::Result<Tensor> {
        xs.reshape((b, s, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// `mask`: additive, broadcast to `[b, heads, s, s]`.
    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> candle::Result<Tensor> {
        let (b, s, h) = xs.dims3()?;
        let q = self.split_heads(&(self.q_proj.forward(xs)? * self.scale)?, b, s)?;
        let k = self.split_heads(&self.k_proj.forward(xs)?, b, s)?;
        let v = self.split_heads(&self.v_proj.forward(xs)?, b, s)?;
        let mut attn = q.matmul(&k.t()?)?;
        if let Some(mask) = mask {
            attn = attn.broadcast_add(mask)?;
        }
        let attn = candle_nn::ops::softmax_last_dim(&attn)?;
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))?;
        self.out_proj.forward(&out)
    }
}

#[derive(Debug, Clone)]
struct ClipMlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl ClipMlp {
    fn new(vb: VarBuilder, c: &StackConfig) -> candle::Result<Self> {
        Ok(Self {
            fc1: candle_nn::linear(c.hidden, c.intermediate, vb.pp("fc1"))?,
            fc2: candle_nn::linear(c.intermediate, c.hidden, vb.pp("fc2"))?,
            act: c.act,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle::Result<Tensor> {
        self.fc2.forward(&self.act.forward(&self.fc1.forward(xs)?)?)
    }
}

#[derive(Debug, Clone)]
struct ClipEncoderLayer {
    self_attn: ClipAttention,
    layer_norm1: LayerNorm,
    mlp: ClipMlp,
    layer_norm2: LayerNorm,
}

impl ClipEncoderLayer {
    fn new(vb: VarBuilder, c: &StackConfig) -> candle::Result<Self> {
        Ok(Self {
            self_attn: ClipAttention::new(vb.pp("self_attn"), c)?,
            layer_norm1: candle_nn::layer_norm(c.hidden, c.eps, vb.pp("layer_norm1"))?,
            mlp: ClipMlp::new(vb.pp("mlp"), c)?,
            layer_norm2: candle_nn::layer_norm(c.hidden, c.eps, vb.pp("layer_norm2"))?,
        })
    }

    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> candle::Result<Tensor> {
        let residual = xs;
        let xs = (self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, mask)?
            + residual)?;
        let residual = &xs;
        self.mlp.forward(&self.layer_norm2.forward(&xs)?)? + residual
    }
}

#[derive(Debug, Clone)]
struct ClipEncoder {
    layers: Vec<ClipEncoderLayer>,
}

impl ClipEncoder {
    fn new(vb: VarBuilder, c: &StackConfig) -> candle::Result<Self> {
        let vb = vb.pp("layers");
        let layers = (0..c.layers)
            .map(|i| ClipEncoderLayer::new(vb.pp(i), c))
            .collect::<candle::Result<_>>()?;
        Ok(Self { layers })
    }

    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> candle::Result<Tensor> {
        let mut xs = xs.clone();
        for layer in &self.layers {
            xs = layer.forward(&xs, mask)?;
        }
        Ok(xs)
    }
}

/// `CLIPTextTransformer`: returns the pooled output (final layer norm at the pooling position).
#[derive(Debug, Clone)]
pub struct ClipTextTransformer {
    token_embedding: Embedding,
    position_embedding: Embedding,
    encoder: ClipEncoder,
    final_layer_norm: LayerNorm,
    config: ClipTextConfig,
}

impl ClipTextTransformer {
    pub fn new(vb: VarBuilder, c: &ClipTextConfig) -> candle::Result<Self> {
        let stack = StackConfig {
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            heads: c.num_attention_heads,
            layers: c.num_hidden_layers,
            act: c.hidden_act,
            eps: c.layer_norm_eps,
        };
        let emb = vb.pp("embeddings");
        Ok(Self {
            token_embedding: candle_nn::embedding(
                c.vocab_size,
                c.hidden_size,
                emb.pp("token_embedding"),
            )?,
            position_embedding: candle_nn::embedding(
                c.max_position_embeddings,
                c.hidden_size,
                emb.pp("position_embedding"),
            )?,
            encoder: ClipEncoder::new(vb.pp("encoder"), &stack)?,
            final_layer_norm: candle_nn::layer_norm(
                c.hidden_size,
                c.layer_norm_eps,
                vb.pp("final_layer_norm"),
            )?,
            config: c.clone(),
        })
    }

    /// Where transformers pools each sequence: the first `eos_token_id`, or the first maximum id for the legacy
    /// `eos_token_id == 2` (0 when the id is absent, as torch's argmax over an all-false mask).
    pub fn pooling_positions(&self, ids: &[Vec<u32>]) -> Vec<usize> {
        ids.iter()
            .map(|row| {
                if self.config.eos_token_id == 2 {
                    let max = row.iter().copied().max().unwrap_or(0);
                    row.iter().position(|&t| t == max).unwrap_or(0)
                } else {
                    row.iter()
                        .position(|&t| t == self.config.eos_token_id)
                        .unwrap_or(0)
                }
            })
            .collect()
    }

    /// `input_ids`: `[b, s]` u32 (rows padded with anything after their pooling position);
    /// `positions[i]`: the pooling position of row i. Returns `[b, hidden]`.
    pub fn forward(&self, input_ids: &Tensor, positions: &[usize]) -> candle::Result<Tensor> {
        let (b, s) = input_ids.dims2()?;
        if positions.len() != b || positions.iter().any(|&p| p >= s) {
            candle::bail!(
                "pooling positions {positions:?} do not fit input ids of shape [{b}, {s}]"
            );
        }
        let tokens = self.token_embedding.forward(input_ids)?;
        let pos = self.position_embedding.embeddings().narrow(0, 0, s)?;
        let xs = tokens.broadcast_add(&pos)?;
        let mask = causal_mask(s, xs.device())?;
        let xs = self.encoder.forward(&xs, Some(&mask))?;
        let xs = self.final_layer_norm.forward(&xs)?;
        let rows = positions
            .iter()
            .enumerate()
            .map(|(i, &p)| xs.i((i, p)))
            .collect::<candle::Result<Vec<_>>>()?;
        Tensor::stack(&rows, 0)
    }
}

/// `[s, s]` additive causal mask: 0 on and below the diagonal, `f32::MIN` above (transformers' finfo.min).
fn causal_mask(s: usize, device: &Device) -> candle::Result<Tensor> {
    let mask: Vec<f32> = (0..s)
        .flat_map(|i| (0..s).map(move |j| if j > i { f32::MIN } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (s, s), device)
}

/// `CLIPVisionTransformer`: returns the pooled output (`post_layernorm` of the class token).
#[derive(Debug, Clone)]
pub struct ClipVisionTransformer {
    class_embedding: Tensor,
    patch_embedding: Conv2d,
    position_embedding: Embedding,
    pre_layrnorm: LayerNorm,
    encoder: ClipEncoder,
    post_layernorm: LayerNorm,
    config: ClipVisionConfig,
}

impl ClipVisionTransformer {
    pub fn new(vb: VarBuilder, c: &ClipVisionConfig) -> candle::Result<Self> {
        let stack = StackConfig {
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            heads: c.num_attention_heads,
            layers: c.num_hidden_layers,
            act: c.hidden_act,
            eps: c.layer_norm_eps,
        };
        let emb = vb.pp("embeddings");
        let conv = Conv2dConfig {
            stride: c.patch_size,
            ..Default::default()
        };
        Ok(Self {
            class_embedding: emb.get_with_hints(
                c.hidden_size,
                "class_embedding",
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?,
            patch_embedding: candle_nn::conv2d_no_bias(
                c.num_channels,
                c.hidden_size,
                c.patch_size,
                conv,
                emb.pp("patch_embedding"),
            )?,
            position_embedding: candle_nn::embedding(
                c.grid() * c.grid() + 1,
                c.hidden_size,
                emb.pp("position_embedding"),
            )?,
            pre_layrnorm: candle_nn::layer_norm(
                c.hidden_size,
                c.layer_norm_eps,
                vb.pp("pre_layrnorm"),
            )?,
            encoder: ClipEncoder::new(vb.pp("encoder"), &stack)?,
            post_layernorm: candle_nn::layer_norm(
                c.hidden_size,
                c.layer_norm_eps,
                vb.pp("post_layernorm"),
            )?,
            config: c.clone(),
        })
    }

    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    /// `pixel_values`: `[b, channels, image_size, image_size]`. Returns `[b, hidden]`.
    pub fn forward(&self, pixel_values: &Tensor) -> candle::Result<Tensor> {
        let (b, _, h, w) = pixel_values.dims4()?;
        let side = self.config.image_size;
        if h != side || w != side {
            candle::bail!("CLIP vision input is {h}x{w}, the model's image_size is {side}x{side}");
        }
        let hidden = self.config.hidden_size;
        let patches = self
            .patch_embedding
            .forward(pixel_values)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let cls = self
            .class_embedding
            .reshape((1, 1, hidden))?
            .broadcast_as((b, 1, hidden))?;
        let xs = Tensor::cat(&[&cls, &patches], 1)?;
        let xs = xs.broadcast_add(self.position_embedding.embeddings())?;
        let xs = self.pre_layrnorm.forward(&xs)?;
        let xs = self.encoder.forward(&xs, None)?;
        self.post_layernorm.forward(&xs.i((.., 0, ..))?)
    }
}

/// `CLIPModel`: both towers and their projections (`logit_scale` is not needed for the metrics).
#[derive(Debug, Clone)]
pub struct ClipModel {
    pub text_model: ClipTextTransformer,
    pub vision_model: ClipVisionTransformer,
    visual_projection: Linear,
    text_projection: Linear,
}

impl ClipModel {
    pub fn new(vb: VarBuilder, c: &ClipConfig) -> candle::Result<Self> {
        Ok(Self {
            text_model: ClipTextTransformer::new(vb.pp("text_model"), &c.text)?,
            vision_model: ClipVisionTransformer::new(vb.pp("vision_model"), &c.vision)?,
            visual_projection: candle_nn::linear_no_bias(
                c.vision.hidden_size,
                c.projection_dim,
                vb.pp("visual_projection"),
            )?,
            text_projection: candle_nn::linear_no_bias(
                c.text.hidden_size,
                c.projection_dim,
                vb.pp("text_projection"),
            )?,
        })
    }

    /// `get_image_features`: `[b, projection_dim]`, not normalised.
    pub fn get_image_features(&self, pixel_values: &Tensor) -> candle::Result<Tensor> {
        self.visual_projection
            .forward(&self.vision_model.forward(pixel_values)?)
    }

    /// `get_text_features` for rows of token ids (BOS ... EOS, any lengths): `[b, projection_dim]`.
    pub fn get_text_features(&self, ids: &[Vec<u32>], device: &Device) -> candle::Result<Tensor> {
        let s = ids.iter().map(Vec::len).max().unwrap_or(0);
        if s == 0 {
            candle::bail!("no token ids");
        }
        let positions = self.text_model.pooling_positions(ids);
        // pad each row with its last id; the causal mask keeps padding out of every earlier position
        let flat: Vec<u32> = ids
            .iter()
            .flat_map(|row| {
                let pad = row.last().copied().unwrap_or(0);
                row.iter().copied().chain(std::iter::repeat(pad)).take(s)
            })
            .collect();
        let input = Tensor::from_vec(flat, (ids.len(), s), device)?;
        self.text_projection
            .forward(&self.text_model.forward(&input, &positions)?)
    }
}
