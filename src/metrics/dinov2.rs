//! DINOv2: transformers' `Dinov2Model` with its HF key names, in candle-transformers' style.
//!
//! Not `candle_transformers::models::dinov2`, which follows the timm/torch-hub layout (fused `qkv`, `blocks.N`,
//! `norm`, a required ImageNet `head`) and mishandles the class-token path. Keys here:
//! `embeddings.{cls_token, mask_token (unused), position_embeddings, patch_embeddings.projection}`,
//! `encoder.layer.N.{norm1, attention.attention.{query,key,value}, attention.output.dense, layer_scale1.lambda1,
//! norm2, mlp.{fc1,fc2} | mlp.{weights_in,weights_out} (SwiGLU), layer_scale2.lambda1}`, `layernorm`.
//!
//! The embedding is `pooler_output` = the class token after the final `layernorm`. Position embeddings are
//! resized to the input's patch grid exactly as `Dinov2Embeddings.interpolate_pos_encoding` does (bicubic with
//! scale factor `(grid + 0.1) / sqrt(num_positions)`, see [`super::bicubic`]), e.g. 37x37 -> 16x16 for the
//! hub checkpoints (image_size 518) at the processor's 224 crop.

use std::sync::Arc;

use candle::{IndexOp, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Init, LayerNorm, Linear, VarBuilder};

use super::activation::Activation;
use super::bicubic;
use super::config::{check_heads, positive};
use crate::error::{Error, Result};
use crate::models::config_json::JsonConfig;

/// `Dinov2Config` (the fields the forward pass uses).
#[derive(Debug, Clone, PartialEq)]
pub struct Dinov2Config {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub mlp_ratio: f64,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub qkv_bias: bool,
    pub use_swiglu_ffn: bool,
}

impl Dinov2Config {
    /// From a `Dinov2Model` `config.json`, with transformers 4.39's defaults.
    pub fn from_json(cfg: &JsonConfig) -> Result<Self> {
        let hidden_size = positive(cfg, "hidden_size", 768)?;
        let num_attention_heads = positive(cfg, "num_attention_heads", 12)?;
        check_heads(cfg, hidden_size, num_attention_heads, "num_attention_heads")?;
        let mlp_ratio = cfg.f64("mlp_ratio", Some(4.0))?;
        if mlp_ratio <= 0.0 {
            return Err(Error::config(&cfg.path, "mlp_ratio", "must be positive"));
        }
        Ok(Self {
            hidden_size,
            num_hidden_layers: cfg.usize("num_hidden_layers", Some(12))?,
            num_attention_heads,
            mlp_ratio,
            hidden_act: Activation::parse(
                &cfg.string("hidden_act", Some("gelu"))?,
                &cfg.path,
                "hidden_act",
            )?,
            layer_norm_eps: cfg.f64("layer_norm_eps", Some(1e-6))?,
            image_size: positive(cfg, "image_size", 224)?,
            patch_size: positive(cfg, "patch_size", 16)?,
            num_channels: positive(cfg, "num_channels", 3)?,
            qkv_bias: cfg.bool("qkv_bias", true)?,
            use_swiglu_ffn: cfg.bool("use_swiglu_ffn", false)?,
        })
    }

    /// facebook/dinov2-small (ViT-S/14, 518 px position grid).
    pub fn vit_s14() -> Self {
        Self {
            hidden_size: 384,
            num_hidden_layers: 12,
            num_attention_heads: 6,
            mlp_ratio: 4.0,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-6,
            image_size: 518,
            patch_size: 14,
            num_channels: 3,
            qkv_bias: true,
            use_swiglu_ffn: false,
        }
    }

    /// Number of position embeddings without the class token: `(image_size / patch_size)^2`.
    pub fn num_positions(&self) -> usize {
        let g = self.image_size / self.patch_size;
        g * g
    }

    /// Hidden width of the MLP (Python's `int()` truncation, SwiGLU's 2/3 rounded up to a multiple of 8).
    pub fn mlp_hidden(&self) -> usize {
        let h = (self.hidden_size as f64 * self.mlp_ratio) as usize;
        if self.use_swiglu_ffn {
            ((h as f64 * 2.0 / 3.0) as usize).div_ceil(8) * 8
        } else {
            h
        }
    }
}

#[derive(Debug, Clone)]
struct Dinov2Embeddings {
    cls_token: Tensor,
    position_embeddings: Tensor,
    /// `position_embeddings[0, 1:]` on the CPU, `[num_positions, hidden]`, for the interpolation.
    patch_positions: Arc<Vec<f32>>,
    projection: Conv2d,
    patch_size: usize,
    hidden: usize,
}

impl Dinov2Embeddings {
    fn new(vb: VarBuilder, c: &Dinov2Config) -> candle::Result<Self> {
        let h = c.hidden_size;
        let randn = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let cls_token = vb.get_with_hints((1, 1, h), "cls_token", randn)?;
        let position_embeddings =
            vb.get_with_hints((1, c.num_positions() + 1, h), "position_embeddings", randn)?;
        let patch_positions = position_embeddings
            .i((0, 1..))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let conv = Conv2dConfig {
            stride: c.patch_size,
            ..Default::default()
        };
        Ok(Self {
            cls_token,
            position_embeddings,
            patch_positions: Arc::new(patch_positions),
            projection: candle_nn::conv2d(
                c.num_channels,
                h,
                c.patch_size,
                conv,
                vb.pp("patch_embeddings").pp("projection"),
            )?,
            patch_size: c.patch_size,
            hidden: h,
        })
    }

    /// `interpolate_pos_encoding` for an input of `height x width` pixels: `[1, 1 + patches, hidden]`.
    fn positions_for(&self, height: usize, width: usize) -> candle::Result<Tensor> {
        let n = self.patch_positions.len() / self.hidden;
        let (gh, gw) = (height / self.patch_size, width / self.patch_size);
        if gh * gw == n && height == width {
            return Ok(self.position_embeddings.clone());
        }
        let side = (n as f64).sqrt();
        let grid = side as usize;
        if grid * grid != n {
            candle::bail!("{n} position embeddings do not form a square grid");
        }
        // [grid, grid, hidden] -> channels first
        let mut chw = vec![0f32; n * self.hidden];
        for p in 0..n {
            for c in 0..self.hidden {
                chw[c * n + p] = self.patch_positions[p * self.hidden + c];
            }
        }
        let (sh, sw) = ((gh as f64 + 0.1) / side, (gw as f64 + 0.1) / side);
        let (out, oh, ow) = bicubic::interpolate(&chw, self.hidden, grid, grid, sh, sw);
        if oh != gh || ow != gw {
            candle::bail!(
                "interpolated position grid {oh}x{ow} does not match the patch grid {gh}x{gw}"
            );
        }
        let mut hwc = vec![0f32; oh * ow * self.hidden];
        for p in 0..oh * ow {
            for c in 0..self.hidden {
                hwc[p * self.hidden + c] = out[c * oh * ow + p];
            }
        }
        let patches = Tensor::from_vec(hwc, (1, oh * ow, self.hidden), self.cls_token.device())?
            .to_dtype(self.position_embeddings.dtype())?;
        let cls_pos = self.position_embeddings.i((.., 0..1, ..))?;
        Tensor::cat(&[&cls_pos, &patches], 1)
    }

    fn forward(&self, pixel_values: &Tensor) -> candle::Result<Tensor> {
        let (b, _, h, w) = pixel_values.dims4()?;
        let patches = self
            .projection
            .forward(pixel_values)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let cls = self.cls_token.broadcast_as((b, 1, self.hidden))?;
        let xs = Tensor::cat(&[&cls, &patches], 1)?;
        xs.broadcast_add(&self.positions_for(h, w)?)
    }
}

#[derive(Debug, Clone)]
struct Dinov2Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    dense: Linear,
    heads: usize,
    head_dim: usize,
}

impl Dinov2Attention {
    fn new(vb: VarBuilder, c: &Dinov2Config) -> candle::Result<Self> {
        let h = c.hidden_size;
        let att = vb.pp("attention");
        Ok(Self {
            query: candle_nn::linear_b(h, h, c.qkv_bias, att.pp("query"))?,
            key: candle_nn::linear_b(h, h, c.qkv_bias, att.pp("key"))?,
            value: candle_nn::linear_b(h, h, c.qkv_bias, att.pp("value"))?,
            dense: candle_nn::linear(h, h, vb.pp("output").pp("dense"))?,
            heads: c.num_attention_heads,
            head_dim: h / c.num_attention_heads,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle::Result<Tensor> {
        let (b, s, h) = xs.dims3()?;
        let split = |t: Tensor| {
            t.reshape((b, s, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.query.forward(xs)?)?;
        let k = split(self.key.forward(xs)?)?;
        let v = split(self.value.forward(xs)?)?;
        let scores = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))?;
        self.dense.forward(&out)
    }
}

#[derive(Debug, Clone)]
enum Dinov2Mlp {
    Plain {
        fc1: Linear,
        fc2: Linear,
        act: Activation,
    },
    SwiGlu {
        weights_in: Linear,
        weights_out: Linear,
    },
}

impl Dinov2Mlp {
    fn new(vb: VarBuilder, c: &Dinov2Config) -> candle::Result<Self> {
        let h = c.hidden_size;
        let m = c.mlp_hidden();
        Ok(if c.use_swiglu_ffn {
            Dinov2Mlp::SwiGlu {
                weights_in: candle_nn::linear(h, 2 * m, vb.pp("weights_in"))?,
                weights_out: candle_nn::linear(m, h, vb.pp("weights_out"))?,
            }
        } else {
            Dinov2Mlp::Plain {
                fc1: candle_nn::linear(h, m, vb.pp("fc1"))?,
                fc2: candle_nn::linear(m, h, vb.pp("fc2"))?,
                act: c.hidden_act,
            }
        })
    }

    fn forward(&self, xs: &Tensor) -> candle::Result<Tensor> {
        match self {
            Dinov2Mlp::Plain { fc1, fc2, act } => fc2.forward(&act.forward(&fc1.forward(xs)?)?),
            Dinov2Mlp::SwiGlu {
                weights_in,
                weights_out,
            } => {
                let x = weights_in.forward(xs)?;
                let half = x.dim(candle::D::Minus1)? / 2;
                let x1 = x.narrow(candle::D::Minus1, 0, half)?;
                let x2 = x.narrow(candle::D::Minus1, half, half)?;
                weights_out.forward(&(x1.silu()? * x2)?)
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Dinov2Layer {
    norm1: LayerNorm,
    attention: Dinov2Attention,
    layer_scale1: Tensor,
    norm2: LayerNorm,
    mlp: Dinov2Mlp,
    layer_scale2: Tensor,
}

impl Dinov2Layer {
    fn new(vb: VarBuilder, c: &Dinov2Config) -> candle::Result<Self> {
        let h = c.hidden_size;
        let one = Init::Const(1.0);
        Ok(Self {
            norm1: candle_nn::layer_norm(h, c.layer_norm_eps, vb.pp("norm1"))?,
            attention: Dinov2Attention::new(vb.pp("attention"), c)?,
            layer_scale1: vb.pp("layer_scale1").get_with_hints(h, "lambda1", one)?,
            norm2: candle_nn::layer_norm(h, c.layer_norm_eps, vb.pp("norm2"))?,
            mlp: Dinov2Mlp::new(vb.pp("mlp"), c)?,
            layer_scale2: vb.pp("layer_scale2").get_with_hints(h, "lambda1", one)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle::Result<Tensor> {
        let attn = self.attention.forward(&self.norm1.forward(xs)?)?;
        let xs = (attn.broadcast_mul(&self.layer_scale1)? + xs)?;
        let mlp = self.mlp.forward(&self.norm2.forward(&xs)?)?;
        mlp.broadcast_mul(&self.layer_scale2)? + xs
    }
}

/// `Dinov2Model`; [`Dinov2Model::forward`] returns `pooler_output`.
#[derive(Debug, Clone)]
pub struct Dinov2Model {
    embeddings: Dinov2Embeddings,
    layers: Vec<Dinov2Layer>,
    layernorm: LayerNorm,
}

impl Dinov2Model {
    pub fn new(vb: VarBuilder, c: &Dinov2Config) -> candle::Result<Self> {
        let lvb = vb.pp("encoder").pp("layer");
        Ok(Self {
            embeddings: Dinov2Embeddings::new(vb.pp("embeddings"), c)?,
            layers: (0..c.num_hidden_layers)
                .map(|i| Dinov2Layer::new(lvb.pp(i), c))
                .collect::<candle::Result<_>>()?,
            layernorm: candle_nn::layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("layernorm"))?,
        })
    }

    /// `pixel_values`: `[b, channels, h, w]` (any size divisible into patches). Returns `[b, hidden]`.
    pub fn forward(&self, pixel_values: &Tensor) -> candle::Result<Tensor> {
        let mut xs = self.embeddings.forward(pixel_values)?;
        for layer in &self.layers {
            xs = layer.forward(&xs)?;
        }
        self.layernorm.forward(&xs)?.i((.., 0, ..))
    }
}
