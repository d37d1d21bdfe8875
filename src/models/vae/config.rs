//! `AutoencoderKL` config (diffusers `vae/config.json`).

use std::path::Path;

use serde_json::json;

use crate::error::{Error, Result};
use crate::models::config_json::JsonConfig;

/// The fields of `AutoencoderKL`'s config that SD 1.x VAEs use.
#[derive(Debug, Clone, PartialEq)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub scaling_factor: f64,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

impl VaeConfig {
    /// SD 1.x's VAE.
    pub fn sd15() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json(&JsonConfig::from_file(path)?)
    }

    pub fn from_json(c: &JsonConfig) -> Result<Self> {
        let class = c.string("_class_name", Some("AutoencoderKL"))?;
        if class != "AutoencoderKL" {
            return Err(Error::config(
                &c.path,
                "_class_name",
                format!("`{class}` is not supported (expected AutoencoderKL)"),
            ));
        }
        c.require_one_of("act_fn", &[json!("silu")])?;
        c.require_one_of("latents_mean", &[])?;
        c.require_one_of("latents_std", &[])?;
        c.require_one_of("shift_factor", &[])?;
        for (field, expected) in [
            ("down_block_types", "DownEncoderBlock2D"),
            ("up_block_types", "UpDecoderBlock2D"),
        ] {
            if c.get(field).is_some() {
                for t in c.strings(field)? {
                    if t != expected {
                        return Err(Error::config(
                            &c.path,
                            field,
                            format!("`{t}` is not supported (expected {expected})"),
                        ));
                    }
                }
            }
        }
        let block_out_channels = match c.get("block_out_channels") {
            Some(_) => c.usizes("block_out_channels")?,
            None => vec![64],
        };
        if block_out_channels.is_empty() {
            return Err(Error::config(
                &c.path,
                "block_out_channels",
                "expected at least one entry",
            ));
        }
        if let Some(types) = c.get("down_block_types").and_then(|v| v.as_array()) {
            if types.len() != block_out_channels.len() {
                return Err(Error::config(
                    &c.path,
                    "down_block_types",
                    format!(
                        "{} entries, expected one per block_out_channels ({})",
                        types.len(),
                        block_out_channels.len()
                    ),
                ));
            }
        }
        let cfg = Self {
            in_channels: c.usize("in_channels", Some(3))?,
            out_channels: c.usize("out_channels", Some(3))?,
            block_out_channels,
            layers_per_block: c.usize("layers_per_block", Some(1))?,
            latent_channels: c.usize("latent_channels", Some(4))?,
            norm_num_groups: c.usize("norm_num_groups", Some(32))?,
            scaling_factor: c.f64("scaling_factor", Some(0.18215))?,
            use_quant_conv: c.bool("use_quant_conv", true)?,
            use_post_quant_conv: c.bool("use_post_quant_conv", true)?,
            mid_block_add_attention: c.bool("mid_block_add_attention", true)?,
        };
        for &ch in &cfg.block_out_channels {
            if !ch.is_multiple_of(cfg.norm_num_groups) {
                return Err(Error::config(
                    &c.path,
                    "norm_num_groups",
                    format!("{} groups do not divide {ch} channels", cfg.norm_num_groups),
                ));
            }
        }
        Ok(cfg)
    }

    /// Pixel size of one latent cell (`2^(blocks - 1)`, 8 for SD).
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}
