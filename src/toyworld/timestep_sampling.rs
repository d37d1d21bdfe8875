//! Which diffusion timesteps the base training draws. The objective is a mean over the schedule's `T`
//! timesteps of `w_t * l_t` (`w_t` the Min-SNR weight, `l_t` the epsilon error at `t`); drawing `t` from `p_t`
//! and weighing its row by `w_t / (T * p_t)` (its *importance*) estimates the same mean with another variance
//! (importance sampling). Three samplers:
//!
//! - [`TimestepSampling::Uniform`]: `p_t = 1/T`, every row's importance 1 (every committed model).
//! - [`TimestepSampling::MinSnr`]: `p_t` proportional to `w_t`, so the nearly clean timesteps that the
//!   weighting turns down are drawn less often instead of weighed less; every row then counts `mean_t w_t`.
//!   At gamma 0.5 on the toyworld's schedule the uniform draw's effective sample size is 80% of the batch.
//! - [`TimestepSampling::Loss`]: `p_t` proportional to the root mean square of recent `w_t * l_t` in `t`'s
//!   bucket of [`BUCKET`] timesteps (Nichol and Dhariwal 2021, "Improved DDPM", section 3.3), mixed with
//!   a share of the uniform draw ([`DEFAULT_UNIFORM_SHARE`] unless [`TimestepSampler::with_uniform_share`]
//!   sets another) so that no timestep's importance exceeds `1 / share`; until
//!   every bucket has [`HISTORY`] losses it draws uniformly. The history is not saved: a resumed run learns it
//!   again (about a hundred batch-16 steps).
//!
//! The non-uniform samplers draw a batch stratified: row `k` of `n` takes `u = (k + U) / n` through the
//! inverse of `p`'s cumulative distribution, so every batch covers the schedule evenly.

use std::collections::VecDeque;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::error::{ToyError, ToyResult};

/// Timesteps per bucket of the loss-aware sampler.
pub const BUCKET: usize = 10;
/// Losses kept per bucket by the loss-aware sampler.
pub const HISTORY: usize = 10;
/// The uniform draw's share in the loss-aware sampler's distribution, unless set.
pub const DEFAULT_UNIFORM_SHARE: f64 = 0.1;

/// How the base training draws its timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestepSampling {
    #[default]
    Uniform,
    MinSnr,
    Loss,
}

/// A timestep and the factor `1 / (T * p_t)` its row's loss is weighed by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    pub t: usize,
    pub importance: f32,
}

/// Draws the training timesteps (see the module docs).
#[derive(Debug, Clone)]
pub struct TimestepSampler {
    sampling: TimestepSampling,
    /// `p_t` over the schedule's timesteps (uniform until a loss-aware sampler has its history).
    probs: Vec<f64>,
    /// Recent `w_t * l_t` per bucket (loss-aware sampler only).
    history: Vec<VecDeque<f64>>,
    /// The uniform draw's share in the loss-aware sampler's `p`.
    uniform_share: f64,
}

impl TimestepSampler {
    /// A sampler over `weights.len()` timesteps; `weights` are the loss weights `w_t` (all 1 without Min-SNR).
    pub fn new(sampling: TimestepSampling, weights: &[f64]) -> ToyResult<Self> {
        let n = weights.len();
        if n == 0 || weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return Err(ToyError::Training(format!(
                "timestep sampling: expected finite weights >= 0 for a schedule of > 0 timesteps, got {n}"
            )));
        }
        let uniform = vec![1.0 / n as f64; n];
        let probs = match sampling {
            TimestepSampling::Uniform | TimestepSampling::Loss => uniform,
            TimestepSampling::MinSnr => {
                let sum: f64 = weights.iter().sum();
                if sum <= 0.0 {
                    return Err(ToyError::Training(
                        "timestep sampling min-snr: every loss weight is 0".into(),
                    ));
                }
                weights.iter().map(|w| w / sum).collect()
            }
        };
        Ok(Self {
            sampling,
            probs,
            history: vec![VecDeque::with_capacity(HISTORY); n.div_ceil(BUCKET)],
            uniform_share: DEFAULT_UNIFORM_SHARE,
        })
    }

    /// The same sampler with the uniform draw's share of the loss-aware `p` set to `share` (in `(0, 1]`; 1 draws
    /// uniformly, stratified). The other samplers have no such share and refuse one other than the default.
    pub fn with_uniform_share(mut self, share: f64) -> ToyResult<Self> {
        if !(share > 0.0 && share <= 1.0) {
            return Err(ToyError::Training(format!(
                "timestep_uniform_share: expected a share in (0, 1], got {share}"
            )));
        }
        if !self.learns() && share != DEFAULT_UNIFORM_SHARE {
            return Err(ToyError::Training(format!(
                "timestep_uniform_share {share}: applies to the loss-aware sampler only, not to {:?}",
                self.sampling
            )));
        }
        self.uniform_share = share;
        Ok(self)
    }

    pub fn sampling(&self) -> TimestepSampling {
        self.sampling
    }

    /// `p_t` as it stands.
    pub fn probabilities(&self) -> &[f64] {
        &self.probs
    }

    /// `batch` stratified draws, or `None` for the uniform sampler, whose rows draw their own timesteps (so its
    /// batches are those of every run before the samplers existed).
    pub fn draw(&self, batch: usize, rng: &mut ChaCha8Rng) -> Option<Vec<Draw>> {
        if self.sampling == TimestepSampling::Uniform {
            return None;
        }
        let n = self.probs.len();
        let mut draws = Vec::with_capacity(batch);
        let (mut t, mut below) = (0usize, 0.0f64);
        for k in 0..batch {
            // The strata rise with k, so the inverse CDF walks forward from the last draw.
            let u = (k as f64 + rng.random::<f64>()) / batch as f64;
            while t + 1 < n && below + self.probs[t] <= u {
                below += self.probs[t];
                t += 1;
            }
            draws.push(Draw {
                t,
                importance: (1.0 / (n as f64 * self.probs[t])) as f32,
            });
        }
        Some(draws)
    }

    /// Whether [`TimestepSampler::observe`] changes anything.
    pub fn learns(&self) -> bool {
        self.sampling == TimestepSampling::Loss
    }

    /// Records a batch's weighted row losses `w_t * l_t` (loss-aware sampler; the others ignore them) and, once
    /// every bucket has its history, sets `p` from it.
    pub fn observe(&mut self, timesteps: &[usize], weighted_losses: &[f64]) {
        if !self.learns() {
            return;
        }
        for (&t, &l) in timesteps.iter().zip(weighted_losses) {
            if !l.is_finite() {
                continue;
            }
            let h = &mut self.history[t / BUCKET];
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(l);
        }
        if self.history.iter().any(|h| h.len() < HISTORY) {
            return;
        }
        let rms: Vec<f64> = self
            .history
            .iter()
            .map(|h| (h.iter().map(|l| l * l).sum::<f64>() / h.len() as f64).sqrt())
            .collect();
        let total: f64 = rms.iter().sum();
        let n = self.probs.len();
        for (t, p) in self.probs.iter_mut().enumerate() {
            let b = t / BUCKET;
            let width = BUCKET.min(n - b * BUCKET) as f64;
            let learned = if total > 0.0 {
                rms[b] / total / width
            } else {
                1.0 / n as f64
            };
            *p = (1.0 - self.uniform_share) * learned + self.uniform_share / n as f64;
        }
    }

    /// The share of draws in each quarter of the schedule, for the log (`t < T/4`, ..., `t >= 3T/4`).
    pub fn quarters(&self) -> [f64; 4] {
        let n = self.probs.len();
        let mut q = [0.0; 4];
        for (t, p) in self.probs.iter().enumerate() {
            q[(4 * t / n).min(3)] += p;
        }
        q
    }
}
