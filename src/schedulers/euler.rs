//! Euler discrete (`EulerDiscreteScheduler` of diffusers 0.27), without churn (`s_churn = 0`: no noise).

use burn::tensor::{backend::Backend, Tensor};

use super::config::{
    InterpolationType, PredictionType, SchedulerConfig, TimestepSpacing, TimestepType,
};
use super::numerics::{
    alphas_cumprod, betas, karras_sigmas, np_arange, np_interp_arange, np_linspace, np_round,
    sigma_to_t, torch_linspace_f32, torch_sqrt_f32, train_sigmas_f32,
};
use super::{check_steps, downcast, upcast, Scheduler, SchedulerKind, StepOutput};
use crate::error::Result;

/// Euler discrete. Holds no tensors: one instance serves any backend.
#[derive(Clone, Debug)]
pub struct EulerDiscreteScheduler {
    alphas_cumprod: Vec<f32>,
    /// Inference sigmas (f32), descending, with a final 0.
    sigmas: Vec<f32>,
    timesteps: Vec<f64>,
    init_noise_sigma: f32,
    prediction_type: PredictionType,
}

impl EulerDiscreteScheduler {
    /// `EulerDiscreteScheduler.from_config(config)` then `set_timesteps(num_inference_steps)`.
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        check_steps(config, num_inference_steps)?;
        let n_train = config.num_train_timesteps;
        let n = num_inference_steps;
        let betas = betas(config)?;
        let mut alphas_cumprod = alphas_cumprod(&betas);
        if config.rescale_betas_zero_snr {
            // Nearly zero rather than zero, so that the first sigma is finite.
            *alphas_cumprod.last_mut().unwrap() = 2f32.powi(-24);
        }
        let spacing = config.spacing_or(TimestepSpacing::Linspace);
        // Timesteps: numpy float64 arithmetic, then float32.
        let mut timesteps: Vec<f32> = match spacing {
            TimestepSpacing::Linspace => np_linspace(0.0, (n_train - 1) as f64, n)
                .into_iter()
                .rev()
                .map(|t| t as f32)
                .collect(),
            TimestepSpacing::Leading => {
                let ratio = (n_train / n) as f64;
                (0..n)
                    .rev()
                    .map(|i| np_round(i as f64 * ratio) as f32 + config.steps_offset as f32)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = n_train as f64 / n as f64;
                np_arange(n_train as f64, 0.0, -ratio)
                    .into_iter()
                    .map(|t| np_round(t) as f32 - 1.0)
                    .collect()
            }
        };
        let train_sigmas = train_sigmas_f32(&alphas_cumprod);
        let log_sigmas: Vec<f32> = train_sigmas.iter().map(|s| s.ln()).collect();
        let train_sigmas_f64: Vec<f64> = train_sigmas.iter().map(|&s| s as f64).collect();
        let mut sigmas: Vec<f64> = match config.interpolation_type {
            InterpolationType::Linear => timesteps
                .iter()
                .map(|&t| np_interp_arange(t as f64, &train_sigmas_f64))
                .collect(),
            InterpolationType::LogLinear => {
                // torch.linspace(log(sigmas[-1]), log(sigmas[0]), n + 1).exp(), in float32.
                torch_linspace_f32(
                    *log_sigmas.last().unwrap() as f64,
                    log_sigmas[0] as f64,
                    n + 1,
                )
                .into_iter()
                .map(|l| l.exp() as f64)
                .collect()
            }
        };
        if config.use_karras_sigmas {
            let sigma_min = config.sigma_min.unwrap_or(*sigmas.last().unwrap());
            let sigma_max = config.sigma_max.unwrap_or(sigmas[0]);
            sigmas = karras_sigmas(sigma_min, sigma_max, n);
            timesteps = sigmas
                .iter()
                .map(|&s| sigma_to_t(s, &log_sigmas) as f32)
                .collect();
        }
        let mut sigmas: Vec<f32> = sigmas.into_iter().map(|s| s as f32).collect();
        if config.timestep_type == TimestepType::Continuous
            && config.prediction_type == PredictionType::VPrediction
        {
            timesteps = sigmas.iter().map(|s| 0.25f32 * s.ln()).collect();
        }
        sigmas.push(0.0);
        let max_sigma = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let init_noise_sigma = match spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max_sigma,
            TimestepSpacing::Leading => torch_sqrt_f32(max_sigma * max_sigma + 1.0),
        };
        Ok(Self {
            alphas_cumprod,
            sigmas,
            timesteps: timesteps.into_iter().map(|t| t as f64).collect(),
            init_noise_sigma,
            prediction_type: config.prediction_type,
        })
    }

    /// The inference sigmas (f32, descending, ending with 0; `log_linear` interpolation gives one extra).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// Sigma at step `step_index`.
    pub fn sigma(&self, step_index: usize) -> f32 {
        self.sigmas[step_index]
    }

    /// The training `alphas_cumprod` (f32).
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }
}

impl<B: Backend> Scheduler<B> for EulerDiscreteScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Euler
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma as f64
    }

    fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// `sample / sqrt(sigma^2 + 1)`.
    fn scale_model_input(&self, sample: Tensor<B, 4>, step_index: usize) -> Tensor<B, 4> {
        let sigma = self.sigmas[step_index];
        sample.div_scalar(torch_sqrt_f32(sigma * sigma + 1.0))
    }

    fn step_output(
        &mut self,
        model_output: Tensor<B, 4>,
        step_index: usize,
        sample: Tensor<B, 4>,
    ) -> StepOutput<B> {
        assert!(
            step_index < self.timesteps.len(),
            "Euler step {step_index} out of range ({} steps)",
            self.timesteps.len()
        );
        let out_dtype = model_output.dtype();
        let (model_output, sample) = (upcast(model_output), upcast(sample));
        let sigma = self.sigmas[step_index];
        // s_churn = 0: gamma = 0, sigma_hat = sigma.
        let sigma_hat = sigma;
        let pred_original_sample = match self.prediction_type {
            PredictionType::Sample => model_output,
            PredictionType::Epsilon => sample.clone() - model_output.mul_scalar(sigma_hat),
            PredictionType::VPrediction => {
                let s2p1 = sigma * sigma + 1.0;
                model_output.mul_scalar(-sigma / torch_sqrt_f32(s2p1))
                    + sample.clone().div_scalar(s2p1)
            }
        };
        let derivative = (sample.clone() - pred_original_sample.clone()).div_scalar(sigma_hat);
        let dt = self.sigmas[step_index + 1] - sigma_hat;
        let prev_sample = sample + derivative.mul_scalar(dt);
        StepOutput {
            prev_sample: downcast(prev_sample, out_dtype),
            pred_original_sample: downcast(pred_original_sample, out_dtype),
        }
    }
}
