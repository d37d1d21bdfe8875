//! DDIM (`DDIMScheduler` of diffusers 0.27), deterministic (eta = 0).

use burn::tensor::{backend::Backend, DType, Tensor};

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::numerics::{alphas_cumprod, betas, np_arange, np_linspace, np_round, torch_sqrt_f32};
use super::{check_steps, upcast, Scheduler, SchedulerKind, StepOutput};
use crate::error::{Error, Result};

/// DDIM with eta = 0. Holds no tensors: one instance serves any backend.
#[derive(Clone, Debug)]
pub struct DdimScheduler {
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    /// Integer training timesteps, descending.
    timesteps_i: Vec<i64>,
    timesteps: Vec<f64>,
    /// `num_train_timesteps // num_inference_steps`: diffusers' DDIM steps back by this for every spacing.
    step_ratio: i64,
    prediction_type: PredictionType,
    clip_sample: Option<f32>,
}

impl DdimScheduler {
    /// `DDIMScheduler.from_config(config)` then `set_timesteps(num_inference_steps)`.
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        check_steps(config, num_inference_steps)?;
        if config.thresholding {
            return Err(config.err(
                "thresholding",
                "only false is supported (dynamic thresholding is for pixel-space models)",
            ));
        }
        let betas = betas(config)?;
        let alphas_cumprod = alphas_cumprod(&betas);
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        let n_train = config.num_train_timesteps;
        let n = num_inference_steps;
        let timesteps_i: Vec<i64> = match config.spacing_or(TimestepSpacing::Leading) {
            TimestepSpacing::Linspace => np_linspace(0.0, (n_train - 1) as f64, n)
                .into_iter()
                .rev()
                .map(|t| np_round(t) as i64)
                .collect(),
            TimestepSpacing::Leading => {
                let ratio = (n_train / n) as i64;
                (0..n as i64)
                    .rev()
                    .map(|i| i * ratio + config.steps_offset as i64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = n_train as f64 / n as f64;
                np_arange(n_train as f64, 0.0, -ratio)
                    .into_iter()
                    .map(|t| np_round(t) as i64 - 1)
                    .collect()
            }
        };
        if let Some(&t) = timesteps_i
            .iter()
            .find(|&&t| t < 0 || t as usize >= n_train)
        {
            return Err(config.err(
                "steps_offset",
                format!(
                    "timestep {t} falls outside the {n_train} training timesteps (steps_offset = {}, {n} steps)",
                    config.steps_offset
                ),
            ));
        }
        Ok(Self {
            alphas_cumprod,
            final_alpha_cumprod,
            timesteps: timesteps_i.iter().map(|&t| t as f64).collect(),
            timesteps_i,
            step_ratio: (n_train / n) as i64,
            prediction_type: config.prediction_type,
            clip_sample: config
                .clip_sample
                .then_some(config.clip_sample_range as f32),
        })
    }

    /// As [`DdimScheduler::new`], refusing any `eta` but 0 (stochastic DDIM is not implemented).
    pub fn with_eta(
        config: &SchedulerConfig,
        num_inference_steps: usize,
        eta: f64,
    ) -> Result<Self> {
        if eta != 0.0 {
            return Err(Error::invalid(
                "eta",
                format!("DDIM supports only eta = 0 (deterministic), found {eta}"),
            ));
        }
        Self::new(config, num_inference_steps)
    }

    /// The training `alphas_cumprod` (f32, one per training timestep).
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// The integer timesteps.
    pub fn timesteps_i64(&self) -> &[i64] {
        &self.timesteps_i
    }

    /// The timestep DDIM steps to from step `step_index` (negative after the last: the final alpha is used).
    pub fn prev_timestep(&self, step_index: usize) -> i64 {
        self.timesteps_i[step_index] - self.step_ratio
    }

    /// `alpha_prod_t` at step `step_index`.
    pub fn alpha_prod_t(&self, step_index: usize) -> f32 {
        self.alphas_cumprod[self.timesteps_i[step_index] as usize]
    }

    /// `alpha_prod_t_prev` of step `step_index`.
    pub fn alpha_prod_t_prev(&self, step_index: usize) -> f32 {
        let prev = self.prev_timestep(step_index);
        if prev >= 0 {
            self.alphas_cumprod[prev as usize]
        } else {
            self.final_alpha_cumprod
        }
    }
}

impl<B: Backend> Scheduler<B> for DdimScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Ddim
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    fn scale_model_input(&self, sample: Tensor<B, 4>, _step_index: usize) -> Tensor<B, 4> {
        sample
    }

    fn step_output(
        &mut self,
        model_output: Tensor<B, 4>,
        step_index: usize,
        sample: Tensor<B, 4>,
    ) -> StepOutput<B> {
        assert!(
            step_index < self.timesteps_i.len(),
            "DDIM step {step_index} out of range ({} steps)",
            self.timesteps_i.len()
        );
        let out_dtype: DType = model_output.dtype();
        let (model_output, sample) = (upcast(model_output), upcast(sample));
        // All coefficients are float32 0-d tensors in diffusers.
        let alpha_prod_t = self.alpha_prod_t(step_index);
        let alpha_prod_t_prev = self.alpha_prod_t_prev(step_index);
        let beta_prod_t = 1.0f32 - alpha_prod_t;
        let (sqrt_a, sqrt_b) = (torch_sqrt_f32(alpha_prod_t), torch_sqrt_f32(beta_prod_t));
        let (pred_original_sample, pred_epsilon) = match self.prediction_type {
            PredictionType::Epsilon => (
                (sample.clone() - model_output.clone().mul_scalar(sqrt_b)).div_scalar(sqrt_a),
                model_output,
            ),
            PredictionType::Sample => (
                model_output.clone(),
                (sample.clone() - model_output.mul_scalar(sqrt_a)).div_scalar(sqrt_b),
            ),
            PredictionType::VPrediction => (
                sample.clone().mul_scalar(sqrt_a) - model_output.clone().mul_scalar(sqrt_b),
                model_output.mul_scalar(sqrt_a) + sample.mul_scalar(sqrt_b),
            ),
        };
        let pred_original_sample = match self.clip_sample {
            Some(r) => pred_original_sample.clamp(-r, r),
            None => pred_original_sample,
        };
        // eta = 0: std_dev_t = 0, so the direction is sqrt(1 - alpha_prod_t_prev - 0) * eps.
        let dir_coef = torch_sqrt_f32(1.0f32 - alpha_prod_t_prev - 0.0f32);
        let pred_sample_direction = pred_epsilon.mul_scalar(dir_coef);
        let prev_sample = pred_original_sample
            .clone()
            .mul_scalar(torch_sqrt_f32(alpha_prod_t_prev))
            + pred_sample_direction;
        StepOutput {
            prev_sample: super::downcast(prev_sample, out_dtype),
            pred_original_sample: super::downcast(pred_original_sample, out_dtype),
        }
    }
}
