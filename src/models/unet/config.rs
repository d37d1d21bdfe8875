//! `UNet2DConditionModel` config (diffusers `unet/config.json`), with the SD 1.x quirks:
//! `attention_head_dim` (int or list) is the number of heads, the head width is `channels / heads`.

use std::path::Path;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::models::config_json::JsonConfig;

/// A down block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownBlockType {
    CrossAttnDownBlock2D,
    DownBlock2D,
}

/// An up block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpBlockType {
    CrossAttnUpBlock2D,
    UpBlock2D,
}

/// The fields of `UNet2DConditionModel`'s config that SD 1.x models use.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetConfig {
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<DownBlockType>,
    pub up_block_types: Vec<UpBlockType>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: Vec<usize>,
    pub downsample_padding: usize,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub cross_attention_dim: usize,
    /// Heads per down block (the SD 1.x meaning of `attention_head_dim`).
    pub num_heads: Vec<usize>,
    pub transformer_layers_per_block: Vec<usize>,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
}

impl UNetConfig {
    /// Stable Diffusion 1.5's UNet.
    pub fn sd15() -> Self {
        use DownBlockType::*;
        use UpBlockType::*;
        Self {
            sample_size: 64,
            in_channels: 4,
            out_channels: 4,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: vec![
                CrossAttnDownBlock2D,
                CrossAttnDownBlock2D,
                CrossAttnDownBlock2D,
                DownBlock2D,
            ],
            up_block_types: vec![
                UpBlock2D,
                CrossAttnUpBlock2D,
                CrossAttnUpBlock2D,
                CrossAttnUpBlock2D,
            ],
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: vec![2; 4],
            downsample_padding: 1,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            cross_attention_dim: 768,
            num_heads: vec![8; 4],
            transformer_layers_per_block: vec![1; 4],
            use_linear_projection: false,
            upcast_attention: false,
        }
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json(&JsonConfig::from_file(path)?)
    }

    pub fn from_json(c: &JsonConfig) -> Result<Self> {
        let class = c.string("_class_name", Some("UNet2DConditionModel"))?;
        if class != "UNet2DConditionModel" {
            return Err(Error::config(
                &c.path,
                "_class_name",
                format!("`{class}` is not supported (expected UNet2DConditionModel)"),
            ));
        }
        // Fields whose non-default values select architectures we do not implement (SD 2 variants, SDXL,
        // class/addition embeddings, ...). Each must be absent/null or hold the SD 1.x value.
        let fixed: &[(&str, &[Value])] = &[
            ("center_input_sample", &[json!(false)]),
            ("mid_block_type", &[json!("UNetMidBlock2DCrossAttn")]),
            ("only_cross_attention", &[json!(false)]),
            ("act_fn", &[json!("silu")]),
            ("dual_cross_attention", &[json!(false)]),
            ("resnet_time_scale_shift", &[json!("default")]),
            ("time_embedding_type", &[json!("positional")]),
            ("conv_in_kernel", &[json!(3)]),
            ("conv_out_kernel", &[json!(3)]),
            ("mid_block_scale_factor", &[json!(1), json!(1.0)]),
            ("resnet_skip_time_act", &[json!(false)]),
            ("resnet_out_scale_factor", &[json!(1), json!(1.0)]),
            ("attention_type", &[json!("default")]),
            ("cross_attention_norm", &[]),
            ("class_embed_type", &[]),
            ("addition_embed_type", &[]),
            ("encoder_hid_dim", &[]),
            ("encoder_hid_dim_type", &[]),
            ("num_class_embeds", &[]),
            ("time_cond_proj_dim", &[]),
            ("timestep_post_act", &[]),
            ("time_embedding_dim", &[]),
            ("time_embedding_act_fn", &[]),
            ("projection_class_embeddings_input_dim", &[]),
            ("class_embeddings_concat", &[json!(false)]),
            ("mid_block_only_cross_attention", &[json!(false)]),
            ("reverse_transformer_layers_per_block", &[]),
            ("num_attention_heads", &[]),
            ("addition_time_embed_dim", &[]),
        ];
        for (field, ok) in fixed {
            c.require_one_of(field, ok)?;
        }

        let down_block_types = c
            .strings("down_block_types")?
            .iter()
            .map(|s| match s.as_str() {
                "CrossAttnDownBlock2D" => Ok(DownBlockType::CrossAttnDownBlock2D),
                "DownBlock2D" => Ok(DownBlockType::DownBlock2D),
                other => Err(Error::config(
                    &c.path,
                    "down_block_types",
                    format!(
                        "`{other}` is not supported (expected CrossAttnDownBlock2D or DownBlock2D)"
                    ),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let up_block_types = c
            .strings("up_block_types")?
            .iter()
            .map(|s| match s.as_str() {
                "CrossAttnUpBlock2D" => Ok(UpBlockType::CrossAttnUpBlock2D),
                "UpBlock2D" => Ok(UpBlockType::UpBlock2D),
                other => Err(Error::config(
                    &c.path,
                    "up_block_types",
                    format!(
                        "`{other}` is not supported (expected CrossAttnUpBlock2D or UpBlock2D)"
                    ),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let n = down_block_types.len();
        let block_out_channels = c.usizes("block_out_channels")?;
        if n == 0 || block_out_channels.len() != n || up_block_types.len() != n {
            return Err(Error::config(
                &c.path,
                "block_out_channels",
                format!(
                    "expected as many entries as down_block_types ({n}) and up_block_types ({})",
                    up_block_types.len()
                ),
            ));
        }
        let cross = c.get("cross_attention_dim").ok_or_else(|| {
            Error::config(
                &c.path,
                "cross_attention_dim",
                "missing (expected an integer)",
            )
        })?;
        let cross_attention_dim = cross.as_u64().ok_or_else(|| {
            Error::config(
                &c.path,
                "cross_attention_dim",
                format!("expected one integer, found {cross} (per-block dims are not supported)"),
            )
        })? as usize;
        let num_heads = c.usizes_or_one("attention_head_dim", n, Some(8))?;
        let cfg = Self {
            sample_size: c.usize("sample_size", Some(64))?,
            in_channels: c.usize("in_channels", Some(4))?,
            out_channels: c.usize("out_channels", Some(4))?,
            flip_sin_to_cos: c.bool("flip_sin_to_cos", true)?,
            freq_shift: c.f64("freq_shift", Some(0.0))?,
            down_block_types,
            up_block_types,
            block_out_channels,
            layers_per_block: c.usizes_or_one("layers_per_block", n, Some(2))?,
            downsample_padding: c.usize("downsample_padding", Some(1))?,
            norm_num_groups: c.usize("norm_num_groups", Some(32))?,
            norm_eps: c.f64("norm_eps", Some(1e-5))?,
            cross_attention_dim,
            num_heads,
            transformer_layers_per_block: c.usizes_or_one(
                "transformer_layers_per_block",
                n,
                Some(1),
            )?,
            use_linear_projection: c.bool("use_linear_projection", false)?,
            upcast_attention: c.bool("upcast_attention", false)?,
        };
        cfg.validate(&c.path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        for (i, (&ch, &h)) in self
            .block_out_channels
            .iter()
            .zip(&self.num_heads)
            .enumerate()
        {
            if h == 0 || !ch.is_multiple_of(h) {
                return Err(Error::config(
                    path,
                    "attention_head_dim",
                    format!("block {i}: {h} heads do not divide {ch} channels"),
                ));
            }
            if !ch.is_multiple_of(self.norm_num_groups) {
                return Err(Error::config(
                    path,
                    "norm_num_groups",
                    format!(
                        "{} groups do not divide block {i}'s {ch} channels",
                        self.norm_num_groups
                    ),
                ));
            }
        }
        if self.layers_per_block.contains(&0) {
            return Err(Error::config(
                path,
                "layers_per_block",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// Width of the time embedding (`4 * block_out_channels[0]`).
    pub fn time_embed_dim(&self) -> usize {
        4 * self.block_out_channels[0]
    }

    /// How many times the UNet halves the latent (the latent side must be divisible by `2^this`).
    pub fn num_downsamples(&self) -> usize {
        self.block_out_channels.len() - 1
    }
}
