//! The PEFT adapter configuration newer diffusers (>= 0.34) store in a LoRA file's safetensors metadata:
//! `__metadata__["lora_adapter_metadata"]` = JSON `{"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern":
//! {...}, "unet.rank_pattern": {...}, "text_encoder.r": ..., ...}` (a `LoraConfig` per component, keys prefixed
//! with the component). diffusers 0.27 writes only `{"format": "pt"}`: then every module's alpha equals its
//! rank (scale 1).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::Value;

use super::key::Component;
use crate::error::{Error, Result};

/// The metadata key diffusers uses.
pub const LORA_ADAPTER_METADATA_KEY: &str = "lora_adapter_metadata";

/// One component's `LoraConfig` fields that decide the scale.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdapterConfig {
    pub r: Option<usize>,
    pub lora_alpha: Option<f64>,
    /// Module-name pattern -> rank.
    pub rank_pattern: BTreeMap<String, usize>,
    /// Module-name pattern -> alpha.
    pub alpha_pattern: BTreeMap<String, f64>,
    /// rsLoRA: scale = alpha / sqrt(r).
    pub use_rslora: bool,
}

impl AdapterConfig {
    /// The `(expected rank, alpha)` PEFT gives `module`: the first key of `rank_pattern` then `alpha_pattern`
    /// that `module` ends with (after a `.`), else the exact module name, else the defaults (peft 0.10
    /// `LoraModel._create_and_replace`). `None` fields: not in the config.
    pub fn rank_and_alpha(&self, module: &str) -> (Option<usize>, Option<f64>) {
        let suffix_match = |k: &String| module.ends_with(&format!(".{k}"));
        let key = self
            .rank_pattern
            .keys()
            .chain(self.alpha_pattern.keys())
            .find(|k| suffix_match(k))
            .map(|k| k.as_str())
            .unwrap_or(module);
        let r = self.rank_pattern.get(key).copied().or(self.r);
        let alpha = self.alpha_pattern.get(key).copied().or(self.lora_alpha);
        (r, alpha)
    }
}

/// Reads the per-component adapter configs of a file's metadata (empty when there are none).
pub fn adapter_configs(
    metadata: &HashMap<String, String>,
    path: &Path,
) -> Result<BTreeMap<Component, AdapterConfig>> {
    let Some(raw) = metadata.get(LORA_ADAPTER_METADATA_KEY) else {
        return Ok(BTreeMap::new());
    };
    let field = |f: &str| format!("__metadata__.{LORA_ADAPTER_METADATA_KEY}.{f}");
    let json: Value = serde_json::from_str(raw).map_err(|e| {
        Error::config(
            path,
            format!("__metadata__.{LORA_ADAPTER_METADATA_KEY}"),
            format!("invalid JSON ({e})"),
        )
    })?;
    let obj = json
        .as_object()
        .ok_or_else(|| Error::config(path, field(""), "expected a JSON object"))?;
    let mut out: BTreeMap<Component, AdapterConfig> = BTreeMap::new();
    for (full, value) in obj {
        let (component, name) = if let Some(n) = full.strip_prefix("unet.") {
            (Component::Unet, n)
        } else if let Some(n) = full.strip_prefix("text_encoder.") {
            (Component::TextEncoder, n)
        } else {
            continue; // another component (text_encoder_2, transformer): its keys are rejected elsewhere
        };
        let cfg = out.entry(component).or_default();
        let bad = |what: &str| {
            Error::config(path, field(full), format!("expected {what}, found {value}"))
        };
        match name {
            "r" => {
                cfg.r = Some(
                    value
                        .as_u64()
                        .filter(|&r| r > 0)
                        .ok_or_else(|| bad("a positive integer"))? as usize,
                )
            }
            "lora_alpha" => cfg.lora_alpha = Some(value.as_f64().ok_or_else(|| bad("a number"))?),
            "rank_pattern" => {
                for (k, v) in value.as_object().ok_or_else(|| bad("an object"))? {
                    let r = v
                        .as_u64()
                        .filter(|&r| r > 0)
                        .ok_or_else(|| bad("positive integer ranks"))?;
                    cfg.rank_pattern.insert(k.clone(), r as usize);
                }
            }
            "alpha_pattern" => {
                for (k, v) in value.as_object().ok_or_else(|| bad("an object"))? {
                    cfg.alpha_pattern
                        .insert(k.clone(), v.as_f64().ok_or_else(|| bad("numeric alphas"))?);
                }
            }
            "use_rslora" => cfg.use_rslora = value.as_bool().ok_or_else(|| bad("a boolean"))?,
            "use_dora" if value.as_bool() == Some(true) => {
                return Err(Error::config(
                    path,
                    field(full),
                    "DoRA adapters are not supported",
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_follow_peft() {
        let cfg = AdapterConfig {
            r: Some(4),
            lora_alpha: Some(8.0),
            rank_pattern: [("attn2.to_k".to_string(), 2)].into(),
            alpha_pattern: [(
                "mid_block.attentions.0.transformer_blocks.0.attn1.to_q".to_string(),
                3.0,
            )]
            .into(),
            use_rslora: false,
        };
        assert_eq!(
            cfg.rank_and_alpha("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"),
            (Some(4), Some(8.0))
        );
        // suffix match after a dot
        assert_eq!(
            cfg.rank_and_alpha("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"),
            (Some(2), Some(8.0))
        );
        // a full path only matches exactly (nothing precedes it)
        assert_eq!(
            cfg.rank_and_alpha("mid_block.attentions.0.transformer_blocks.0.attn1.to_q"),
            (Some(4), Some(3.0))
        );
    }

    #[test]
    fn reads_diffusers_metadata() {
        let raw = r#"{"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {"x.to_q": 2},
                      "unet.rank_pattern": {}, "unet.target_modules": ["to_q"], "text_encoder.r": 2,
                      "text_encoder.lora_alpha": 3.0}"#;
        let md: HashMap<String, String> =
            [(LORA_ADAPTER_METADATA_KEY.to_string(), raw.to_string())].into();
        let cfgs = adapter_configs(&md, Path::new("f.safetensors")).unwrap();
        assert_eq!(cfgs[&Component::Unet].r, Some(4));
        assert_eq!(cfgs[&Component::Unet].alpha_pattern["x.to_q"], 2.0);
        assert_eq!(cfgs[&Component::TextEncoder].lora_alpha, Some(3.0));
        let bad: HashMap<String, String> = [(
            LORA_ADAPTER_METADATA_KEY.to_string(),
            r#"{"unet.use_dora": true}"#.to_string(),
        )]
        .into();
        let e = adapter_configs(&bad, Path::new("f.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("DoRA"), "{e}");
    }
}
