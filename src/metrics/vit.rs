//! DINO v1: transformers' `ViTModel` (e.g. facebook/dino-vits16, the DreamBooth protocol's DINO ViT-S/16),
//! built from candle-transformers' ViT embeddings and encoder, which use the HF key names
//! (`embeddings.{cls_token, position_embeddings, patch_embeddings.projection}`,
//! `encoder.layer.N.{layernorm_before, attention.attention.{query,key,value}, attention.output.dense,
//! intermediate.dense, output.dense, layernorm_after}`, `layernorm`). The embedding is the class token of
//! `last_hidden_state` (after the final `layernorm`); the pooler, if the checkpoint has one, is not used.
//! As in transformers (without `interpolate_pos_encoding`), the input must be `image_size` square.

use candle::{IndexOp, Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};
use candle_transformers::models::vit;

use super::activation::Activation;
use super::config::{check_heads, positive};
use crate::error::{Error, Result};
use crate::models::config_json::JsonConfig;

/// `ViTConfig` as candle-transformers' ViT takes it.
#[derive(Debug, Clone)]
pub struct DinoV1Config {
    pub vit: vit::Config,
}

impl DinoV1Config {
    /// From a `ViTModel` `config.json`, with transformers 4.39's defaults.
    pub fn from_json(cfg: &JsonConfig) -> Result<Self> {
        let hidden_size = positive(cfg, "hidden_size", 768)?;
        let num_attention_heads = positive(cfg, "num_attention_heads", 12)?;
        check_heads(cfg, hidden_size, num_attention_heads, "num_attention_heads")?;
        let act_name = cfg.string("hidden_act", Some("gelu"))?;
        let hidden_act = Activation::parse(&act_name, &cfg.path, "hidden_act")?
            .to_candle()
            .ok_or_else(|| {
                Error::config(
                    &cfg.path,
                    "hidden_act",
                    format!("\"{act_name}\" is not supported for ViT"),
                )
            })?;
        let image_size = positive(cfg, "image_size", 224)?;
        let patch_size = positive(cfg, "patch_size", 16)?;
        if image_size % patch_size != 0 {
            return Err(Error::config(
                &cfg.path,
                "patch_size",
                format!("{patch_size} does not divide image_size {image_size}"),
            ));
        }
        Ok(Self {
            vit: vit::Config {
                hidden_size,
                num_hidden_layers: cfg.usize("num_hidden_layers", Some(12))?,
                num_attention_heads,
                intermediate_size: positive(cfg, "intermediate_size", 3072)?,
                hidden_act,
                layer_norm_eps: cfg.f64("layer_norm_eps", Some(1e-12))?,
                image_size,
                patch_size,
                num_channels: positive(cfg, "num_channels", 3)?,
                qkv_bias: cfg.bool("qkv_bias", true)?,
            },
        })
    }

    /// facebook/dino-vits16 (ViT-S/16).
    pub fn vit_s16() -> Self {
        Self {
            vit: vit::Config {
                hidden_size: 384,
                num_hidden_layers: 12,
                num_attention_heads: 6,
                intermediate_size: 1536,
                hidden_act: candle_nn::Activation::Gelu,
                layer_norm_eps: 1e-12,
                image_size: 224,
                patch_size: 16,
                num_channels: 3,
                qkv_bias: true,
            },
        }
    }
}

/// `ViTModel` up to the final layer norm; [`DinoV1::forward`] returns the class token.
#[derive(Debug, Clone)]
pub struct DinoV1 {
    embeddings: vit::Embeddings,
    encoder: vit::Encoder,
    layernorm: LayerNorm,
    image_size: usize,
}

impl DinoV1 {
    pub fn new(vb: VarBuilder, c: &DinoV1Config) -> candle::Result<Self> {
        let cfg = &c.vit;
        Ok(Self {
            embeddings: vit::Embeddings::new(cfg, false, vb.pp("embeddings"))?,
            encoder: vit::Encoder::new(cfg, vb.pp("encoder"))?,
            layernorm: candle_nn::layer_norm(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                vb.pp("layernorm"),
            )?,
            image_size: cfg.image_size,
        })
    }

    /// `pixel_values`: `[b, channels, image_size, image_size]`. Returns the CLS embeddings `[b, hidden]`.
    pub fn forward(&self, pixel_values: &Tensor) -> candle::Result<Tensor> {
        let (_, _, h, w) = pixel_values.dims4()?;
        if h != self.image_size || w != self.image_size {
            candle::bail!(
                "ViT input is {h}x{w}, the model's image_size is {0}x{0}",
                self.image_size
            );
        }
        let xs = self.embeddings.forward(pixel_values, None, false)?;
        let xs = self.encoder.forward(&xs)?;
        self.layernorm.forward(&xs)?.i((.., 0, ..))
    }
}
