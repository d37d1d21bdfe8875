//! Every knob of Attend-and-Excite, with the authors' defaults (`RunConfig` of the official code, 50 steps).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Attend-and-Excite parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExciteParams {
    /// The subject words whose tokens are excited; every occurrence of each word in the prompt is one token
    /// to excite (a word of several BPE pieces: each piece). The authors pick the nouns by hand.
    pub words: Vec<String>,
    /// Step size `scale_factor * sqrt(scale_range[i])` (official: 20).
    pub scale_factor: f64,
    /// The step size's scale at the first and last denoising index, linear in between (official: 1.0, 0.5).
    pub scale_range: [f64; 2],
    /// Latent updates at denoising indices `i < max_iter_to_alter` (official: 25 of 50).
    pub max_iter_to_alter: usize,
    /// Indices with iterative refinement (official: 0, 10, 20) ...
    pub refine_steps: Vec<usize>,
    /// ... until the weakest token's smoothed peak attention reaches this (official: 0.05, 0.5, 0.8).
    pub refine_thresholds: Vec<f64>,
    /// At most this many updates per refinement (official: 20).
    pub max_refinement_steps: usize,
    /// Gaussian smoothing of each token's map before its peak is taken (official: on, 3x3, sigma 0.5).
    pub smooth: bool,
    pub sigma: f64,
    /// The maps are multiplied by this before the softmax over the prompt's tokens (official: 100).
    pub softmax_scale: f64,
    /// The softmax runs over the prompt's own tokens only, up to before `<|endoftext|>` (official: on for
    /// SD 2.1, off for SD 1.4: then over every position but the start token and the last).
    pub normalize_eot: bool,
    /// Side of the attention maps in pixels per map cell (official: 32 px, 16x16 at 512).
    pub attention_stride_px: usize,
}

impl Default for ExciteParams {
    fn default() -> Self {
        Self {
            words: Vec::new(),
            scale_factor: 20.0,
            scale_range: [1.0, 0.5],
            max_iter_to_alter: 25,
            refine_steps: vec![0, 10, 20],
            refine_thresholds: vec![0.05, 0.5, 0.8],
            max_refinement_steps: 20,
            smooth: true,
            sigma: 0.5,
            softmax_scale: 100.0,
            normalize_eot: false,
            attention_stride_px: 32,
        }
    }
}

impl ExciteParams {
    /// The official schedule scaled to `steps` denoising steps: updates in the first half, refinement at the
    /// same fractions (0, 1/5, 2/5) of the run.
    pub fn scaled_to(mut self, steps: usize) -> Self {
        self.max_iter_to_alter = steps / 2;
        self.refine_steps = vec![0, steps / 5, 2 * steps / 5];
        self
    }

    /// The refinement threshold at denoising index `i`, if any.
    pub fn threshold_at(&self, i: usize) -> Option<f64> {
        self.refine_steps
            .iter()
            .position(|&s| s == i)
            .map(|k| self.refine_thresholds[k])
    }

    /// The step size at index `i` of `steps`: `scale_factor * sqrt(linspace(range)[i])`.
    pub fn step_size(&self, i: usize, steps: usize) -> f64 {
        let [a, b] = self.scale_range;
        let f = if steps > 1 {
            i as f64 / (steps - 1) as f64
        } else {
            0.0
        };
        self.scale_factor * (a + (b - a) * f).sqrt()
    }

    /// Checks ranges; errors name the parameter.
    pub fn validate(&self) -> Result<()> {
        if self.words.is_empty() {
            return Err(Error::invalid(
                "excite.words",
                "empty: name the subject words whose attention to excite (e.g. [\"cat\", \"dog\"])",
            ));
        }
        if self.refine_steps.len() != self.refine_thresholds.len() {
            return Err(Error::invalid(
                "excite.refine_thresholds",
                format!(
                    "{} thresholds for {} refine_steps: give one per step",
                    self.refine_thresholds.len(),
                    self.refine_steps.len()
                ),
            ));
        }
        if let Some(t) = self
            .refine_thresholds
            .iter()
            .find(|t| !(0.0..=1.0).contains(*t))
        {
            return Err(Error::invalid(
                "excite.refine_thresholds",
                format!("{t} is outside [0, 1] (a peak attention)"),
            ));
        }
        if !self.scale_factor.is_finite() {
            return Err(Error::invalid("excite.scale_factor", "must be finite"));
        }
        if self
            .scale_range
            .iter()
            .any(|s| !(s.is_finite() && *s >= 0.0))
        {
            return Err(Error::invalid(
                "excite.scale_range",
                format!("{:?}: both must be finite and >= 0", self.scale_range),
            ));
        }
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            return Err(Error::invalid(
                "excite.sigma",
                format!("{} must be > 0", self.sigma),
            ));
        }
        if !(self.softmax_scale.is_finite() && self.softmax_scale > 0.0) {
            return Err(Error::invalid(
                "excite.softmax_scale",
                format!("{} must be > 0", self.softmax_scale),
            ));
        }
        if self.attention_stride_px == 0 {
            return Err(Error::invalid(
                "excite.attention_stride_px",
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
    fn the_step_size_falls_from_the_first_to_the_last_index_as_the_official_linspace() {
        let p = ExciteParams::default();
        assert!((p.step_size(0, 50) - 20.0).abs() < 1e-12);
        assert!((p.step_size(49, 50) - 20.0 * 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(p.threshold_at(10), Some(0.5));
        assert_eq!(p.threshold_at(11), None);
        let s = p.scaled_to(25);
        assert_eq!(
            (s.max_iter_to_alter, s.refine_steps.clone()),
            (12, vec![0, 5, 10])
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = ExciteParams::default().validate().unwrap_err().to_string();
        assert!(e.contains("excite.words"), "{e}");
        let p = ExciteParams {
            words: vec!["cat".into()],
            refine_thresholds: vec![0.5],
            ..ExciteParams::default()
        };
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("excite.refine_thresholds"), "{e}");
        let e = toml::from_str::<ExciteParams>("scale_facter = 3.0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("scale_facter"), "{e}");
    }
}
