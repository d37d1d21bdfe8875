//! DPM-Solver++ multistep (`DPMSolverMultistepScheduler` of diffusers 0.27 with `algorithm_type =
//! "dpmsolver++"`): first order (`solver_order = 1`) or 2M (`solver_order = 2`, midpoint or Heun).

use burn::tensor::{backend::Backend, Tensor};

use super::config::{
    AlgorithmType, FinalSigmasType, PredictionType, SchedulerConfig, SolverType, TimestepSpacing,
};
use super::numerics::{
    alphas_cumprod, betas, karras_sigmas, np_arange, np_interp_arange, np_linspace, np_round,
    sigma_to_t, torch_sqrt_f32, train_sigmas_f32,
};
use super::{check_steps, downcast, upcast, Scheduler, SchedulerKind, StepOutput};
use crate::error::Result;

/// DPM-Solver++ (multistep). Keeps the converted model outputs of the previous step; [`Scheduler::reset`]
/// (or calling step 0 again) starts a new trajectory.
#[derive(Clone, Debug)]
pub struct DpmSolverMultistepScheduler<B: Backend> {
    alphas_cumprod: Vec<f32>,
    /// Inference sigmas (f32), descending, plus the final sigma (0 or sigma_min).
    sigmas: Vec<f32>,
    timesteps_i: Vec<i64>,
    timesteps: Vec<f64>,
    prediction_type: PredictionType,
    solver_order: usize,
    solver_type: SolverType,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigmas_zero: bool,
    /// Converted model outputs (x0 predictions), oldest first; `solver_order` slots.
    model_outputs: Vec<Option<Tensor<B, 4>>>,
    lower_order_nums: usize,
    /// The step the next call must be (steps run in order).
    next_step: usize,
}

/// `_sigma_to_alpha_sigma_t` in float32.
fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha_t = 1.0f32 / torch_sqrt_f32(sigma * sigma + 1.0);
    (alpha_t, sigma * alpha_t)
}

/// `lambda = log(alpha) - log(sigma)` in float32.
fn lambda(alpha: f32, sigma: f32) -> f32 {
    alpha.ln() - sigma.ln()
}

impl<B: Backend> DpmSolverMultistepScheduler<B> {
    /// `DPMSolverMultistepScheduler.from_config(config)` then `set_timesteps(num_inference_steps)`.
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        check_steps(config, num_inference_steps)?;
        if config.algorithm_type != AlgorithmType::DpmSolverPlusPlus {
            return Err(config.err("algorithm_type", "only \"dpmsolver++\" is supported"));
        }
        if !(1..=2).contains(&config.solver_order) {
            return Err(config.err(
                "solver_order",
                format!(
                    "expected 1 or 2 (DPM-Solver++ 2M), found {}",
                    config.solver_order
                ),
            ));
        }
        if config.thresholding {
            return Err(config.err(
                "thresholding",
                "only false is supported (dynamic thresholding is for pixel-space models)",
            ));
        }
        if let Some(v) = config.variance_type.as_deref() {
            if v == "learned" || v == "learned_range" {
                return Err(config.err(
                    "variance_type",
                    format!("a model that predicts its variance (\"{v}\") is not supported"),
                ));
            }
        }
        let n_train = config.num_train_timesteps;
        let n = num_inference_steps;
        let betas = betas(config)?;
        let mut alphas_cumprod = alphas_cumprod(&betas);
        if config.rescale_betas_zero_snr {
            *alphas_cumprod.last_mut().unwrap() = 2f32.powi(-24);
        }
        // lambda_min_clipped: the first timesteps (from the top) whose lambda falls below it are skipped.
        let last_timestep = match config.lambda_min_clipped {
            None => n_train,
            Some(clip) => {
                let lambdas: Vec<f32> = alphas_cumprod
                    .iter()
                    .map(|&a| lambda(torch_sqrt_f32(a), torch_sqrt_f32(1.0 - a)))
                    .rev()
                    .collect();
                // torch.searchsorted(flip(lambda_t), clip) (left), on an ascending sequence.
                let clipped_idx = lambdas.iter().take_while(|&&l| (l as f64) < clip).count();
                n_train - clipped_idx
            }
        };
        let mut timesteps: Vec<i64> = match config.spacing_or(TimestepSpacing::Linspace) {
            TimestepSpacing::Linspace => {
                let mut t: Vec<i64> = np_linspace(0.0, (last_timestep as f64) - 1.0, n + 1)
                    .into_iter()
                    .rev()
                    .map(|t| np_round(t) as i64)
                    .collect();
                t.pop();
                t
            }
            TimestepSpacing::Leading => {
                let ratio = (last_timestep / (n + 1)) as i64;
                (1..=n as i64)
                    .rev()
                    .map(|i| i * ratio + config.steps_offset as i64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = n_train as f64 / n as f64;
                np_arange(last_timestep as f64, 0.0, -ratio)
                    .into_iter()
                    .map(|t| np_round(t) as i64 - 1)
                    .collect()
            }
        };
        let train_sigmas = train_sigmas_f32(&alphas_cumprod);
        let log_sigmas: Vec<f32> = train_sigmas.iter().map(|s| s.ln()).collect();
        let sigmas: Vec<f64> = if config.use_karras_sigmas {
            let sigma_min = config.sigma_min.unwrap_or(train_sigmas[0] as f64);
            let sigma_max = config
                .sigma_max
                .unwrap_or(*train_sigmas.last().unwrap() as f64);
            let s = karras_sigmas(sigma_min, sigma_max, n);
            timesteps = s
                .iter()
                .map(|&s| np_round(sigma_to_t(s, &log_sigmas)) as i64)
                .collect();
            s
        } else if config.use_lu_lambdas {
            // Uniform log-SNR (diffusers' `_convert_to_lu` over the flipped log-sigmas).
            let lambda_min = log_sigmas[0] as f64;
            let lambda_max = *log_sigmas.last().unwrap() as f64;
            let ramp = np_linspace(0.0, 1.0, n);
            let s: Vec<f64> = ramp
                .iter()
                .map(|r| (lambda_max + r * (lambda_min - lambda_max)).exp())
                .collect();
            timesteps = s
                .iter()
                .map(|&s| np_round(sigma_to_t(s, &log_sigmas)) as i64)
                .collect();
            s
        } else {
            let fp: Vec<f64> = train_sigmas.iter().map(|&s| s as f64).collect();
            timesteps
                .iter()
                .map(|&t| np_interp_arange(t as f64, &fp))
                .collect()
        };
        let sigma_last = match config.final_sigmas_type {
            FinalSigmasType::SigmaMin => {
                torch_sqrt_f32((1.0 - alphas_cumprod[0]) / alphas_cumprod[0])
            }
            FinalSigmasType::Zero => 0.0,
        };
        let mut sigmas: Vec<f32> = sigmas.into_iter().map(|s| s as f32).collect();
        sigmas.push(sigma_last);
        Ok(Self {
            alphas_cumprod,
            sigmas,
            timesteps: timesteps.iter().map(|&t| t as f64).collect(),
            timesteps_i: timesteps,
            prediction_type: config.prediction_type,
            solver_order: config.solver_order,
            solver_type: config.solver_type,
            lower_order_final: config.lower_order_final,
            euler_at_final: config.euler_at_final,
            final_sigmas_zero: config.final_sigmas_type == FinalSigmasType::Zero,
            model_outputs: vec![None; config.solver_order],
            lower_order_nums: 0,
            next_step: 0,
        })
    }

    /// The inference sigmas (f32, descending, then the final sigma).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// Sigma at step `step_index`.
    pub fn sigma(&self, step_index: usize) -> f32 {
        self.sigmas[step_index]
    }

    /// The integer timesteps.
    pub fn timesteps_i64(&self) -> &[i64] {
        &self.timesteps_i
    }

    /// The training `alphas_cumprod` (f32).
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Forgets the previous model outputs (a new image).
    pub fn reset(&mut self) {
        self.model_outputs = vec![None; self.solver_order];
        self.lower_order_nums = 0;
        self.next_step = 0;
    }

    fn first_order(&self, x0: &Tensor<B, 4>, i: usize, sample: Tensor<B, 4>) -> Tensor<B, 4> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s, sigma_s) = alpha_sigma(self.sigmas[i]);
        let h = lambda(alpha_t, sigma_t) - lambda(alpha_s, sigma_s);
        sample.mul_scalar(sigma_t / sigma_s) - x0.clone().mul_scalar(alpha_t * ((-h).exp() - 1.0))
    }

    fn second_order(
        &self,
        m0: &Tensor<B, 4>,
        m1: &Tensor<B, 4>,
        i: usize,
        sample: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[i - 1]);
        let lambda_t = lambda(alpha_t, sigma_t);
        let lambda_s0 = lambda(alpha_s0, sigma_s0);
        let lambda_s1 = lambda(alpha_s1, sigma_s1);
        let h = lambda_t - lambda_s0;
        let h_0 = lambda_s0 - lambda_s1;
        let r0 = h_0 / h;
        let d1 = (m0.clone() - m1.clone()).mul_scalar(1.0f32 / r0);
        let em1 = (-h).exp() - 1.0;
        let base = sample.mul_scalar(sigma_t / sigma_s0) - m0.clone().mul_scalar(alpha_t * em1);
        match self.solver_type {
            SolverType::Midpoint => base - d1.mul_scalar(0.5f32 * (alpha_t * em1)),
            SolverType::Heun => base + d1.mul_scalar(alpha_t * (em1 / h + 1.0)),
        }
    }
}

impl<B: Backend> Scheduler<B> for DpmSolverMultistepScheduler<B> {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::DpmPp2m
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

    /// Steps must run in order 0, 1, ..., n - 1; step 0 starts a new trajectory.
    fn step_output(
        &mut self,
        model_output: Tensor<B, 4>,
        step_index: usize,
        sample: Tensor<B, 4>,
    ) -> StepOutput<B> {
        let n = self.timesteps.len();
        assert!(
            step_index < n,
            "DPM-Solver step {step_index} out of range ({n} steps)"
        );
        if step_index == 0 {
            self.reset();
        }
        assert_eq!(
            step_index, self.next_step,
            "DPM-Solver++ is multistep: steps must run in order (expected step {}, got {step_index})",
            self.next_step
        );
        let out_dtype = model_output.dtype();
        let (model_output, sample) = (upcast(model_output), upcast(sample));
        let lower_order_final = step_index == n - 1
            && (self.euler_at_final
                || (self.lower_order_final && n < 15)
                || self.final_sigmas_zero);

        // convert_model_output: the data prediction x0.
        let x0 = match self.prediction_type {
            PredictionType::Epsilon => {
                let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[step_index]);
                (sample.clone() - model_output.mul_scalar(sigma_t)).div_scalar(alpha_t)
            }
            PredictionType::Sample => model_output,
            PredictionType::VPrediction => {
                let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[step_index]);
                sample.clone().mul_scalar(alpha_t) - model_output.mul_scalar(sigma_t)
            }
        };
        self.model_outputs.remove(0);
        self.model_outputs.push(Some(x0.clone()));

        let prev_sample =
            if self.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
                self.first_order(&x0, step_index, sample)
            } else {
                // solver_order == 2: the 2M update (diffusers' `lower_order_second` only matters for order 3).
                let m1 = self.model_outputs[self.solver_order - 2]
                    .as_ref()
                    .expect("the previous model output is kept after the first step");
                self.second_order(&x0, m1, step_index, sample)
            };
        if self.lower_order_nums < self.solver_order {
            self.lower_order_nums += 1;
        }
        self.next_step = step_index + 1;
        StepOutput {
            prev_sample: downcast(prev_sample, out_dtype),
            pred_original_sample: downcast(x0, out_dtype),
        }
    }

    fn reset(&mut self) {
        DpmSolverMultistepScheduler::reset(self);
    }
}
