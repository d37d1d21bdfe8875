//! Every knob of the official `CloraPipeline.__call__`, with defaults that reproduce the official code
//! (its `__call__` signature, and the notebook where the notebook is the method as published), plus the
//! named fixes of its known quirks.

use serde::{Deserialize, Serialize};

use super::maps::MapRows;
use super::masks::{MaskMode, Morphology};
use super::tokens::MaskWords;
use crate::error::{Error, Result};

/// CLoRA parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloraParams {
    /// Gradient step on the latent, `z <- z - step_size * grad` (official: 20).
    pub step_size: f64,
    /// Latent updates happen at denoising indices `i < max_iter_to_alter` (official default 30; the
    /// notebook uses 50 of 100 steps, the paper 25 of 50).
    pub max_iter_to_alter: usize,
    /// Indices with `iterative_steps_steps` extra update cycles (notebook: [0, 10, 20]).
    pub iterative_steps: Vec<usize>,
    /// Extra cycles at each of `iterative_steps` (official: 20).
    pub iterative_steps_steps: usize,
    /// Whether to update the latent at all (official `__call__` default false; the notebook and the paper: true).
    pub latent_update: bool,
    /// Masks are applied from this denoising index on; before it all masks are 1 (official: 0).
    pub apply_mask_after: usize,
    /// A cell belongs to a token's mask when its attention exceeds `alpha * max` (official default 0.3,
    /// notebook 0.4). Must lie in (0, 1).
    pub mask_threshold_alpha: f64,
    /// How a cell joins a mask: `threshold` (official: every branch whose token passes `alpha * max`; masks
    /// may overlap) or `argmax` (not in the official code: only the branch with the highest normalised
    /// attention, if it passes `alpha`; disjoint masks).
    pub mask_mode: MaskMode,
    /// Which words' attention makes each branch's mask when the harness finds the tokens itself:
    /// `trigger_and_noun` (official) or `class_noun` (not in the official code). Hand-given `mask_indices`
    /// take precedence.
    pub mask_words: MaskWords,
    /// 3x3 erosion of the masks (off in the official code's defaults and notebook).
    pub erode: bool,
    /// 3x3 dilation of the masks (off in the official code).
    pub dilate: bool,
    /// Morphological opening of the masks (off in the official code).
    pub opening: bool,
    /// Morphological closing of the masks (off in the official code).
    pub closing: bool,
    /// Encode each branch's prompt with its LoRA's text-encoder part (notebook: true).
    pub use_text_encoder_lora: bool,
    /// NT-Xent temperature (hard-coded 0.5 in the official code).
    pub temperature: f64,
    /// Side of the attention maps in latent cells per map cell: maps are taken at
    /// `ceil(width / attention_stride_px)` x `ceil(height / attention_stride_px)` (official: 32 px, 16x16 at 512).
    pub attention_stride_px: usize,
    /// Which CFG rows make the maps: `both` (official, the negative prompt mixed in) or `cond` (the fix).
    pub maps: MapsChoice,
    /// Use a fresh noise prediction on the updated latent for the step (the fix of the stale-ε quirk);
    /// official: false (the ε from before the last update).
    pub fresh_eps: bool,
    /// Run the branches as one batched UNet call (true) or one call per branch (false; same result).
    pub batched: bool,
}

/// Serialised form of [`MapRows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapsChoice {
    Both,
    Cond,
}

impl From<MapsChoice> for MapRows {
    fn from(m: MapsChoice) -> Self {
        match m {
            MapsChoice::Both => MapRows::Both,
            MapsChoice::Cond => MapRows::Cond,
        }
    }
}

impl Default for CloraParams {
    fn default() -> Self {
        Self {
            step_size: 20.0,
            max_iter_to_alter: 25,
            iterative_steps: vec![0, 10, 20],
            iterative_steps_steps: 20,
            latent_update: true,
            apply_mask_after: 0,
            mask_threshold_alpha: 0.4,
            mask_mode: MaskMode::Threshold,
            mask_words: MaskWords::TriggerAndNoun,
            erode: false,
            dilate: false,
            opening: false,
            closing: false,
            use_text_encoder_lora: true,
            temperature: 0.5,
            attention_stride_px: 32,
            maps: MapsChoice::Both,
            fresh_eps: false,
            batched: true,
        }
    }
}

impl CloraParams {
    /// The mask morphology switches.
    pub fn morphology(&self) -> Morphology {
        Morphology {
            erode: self.erode,
            dilate: self.dilate,
            opening: self.opening,
            closing: self.closing,
        }
    }

    /// Checks ranges; errors name the parameter.
    pub fn validate(&self) -> Result<()> {
        if !(self.mask_threshold_alpha > 0.0 && self.mask_threshold_alpha < 1.0) {
            return Err(Error::invalid(
                "clora.mask_threshold_alpha",
                format!("{} is outside (0, 1)", self.mask_threshold_alpha),
            ));
        }
        if self.temperature.is_nan() || self.temperature <= 0.0 || !self.temperature.is_finite() {
            return Err(Error::invalid(
                "clora.temperature",
                format!("{} must be > 0", self.temperature),
            ));
        }
        if !self.step_size.is_finite() {
            return Err(Error::invalid("clora.step_size", "must be finite"));
        }
        if self.attention_stride_px == 0 {
            return Err(Error::invalid(
                "clora.attention_stride_px",
                "must be positive",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_table_takes_the_defaults_for_the_rest() {
        let p: CloraParams = toml::from_str("step_size = 10.0\ndilate = true").unwrap();
        assert_eq!(p.step_size, 10.0);
        assert!(p.morphology().dilate && !p.morphology().erode);
        assert_eq!(
            p.max_iter_to_alter,
            CloraParams::default().max_iter_to_alter
        );
    }

    #[test]
    fn an_unknown_key_is_named() {
        let e = toml::from_str::<CloraParams>("step_sise = 10.0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("step_sise"), "{e}");
    }
}
