//! Noise schedulers: DDIM, Euler discrete and DPM-Solver++ 2M, ported from diffusers 0.27.2 with its
//! arithmetic (float32 torch for betas, `alphas_cumprod` and every step coefficient; float64 numpy for
//! timesteps and sigma interpolation), and configured from a diffusers `scheduler_config.json`.
//!
//! Parity (tests/schedulers.rs, against diffusers 0.27.2 on torch 2.2.2 CPU): every step within a few f32
//! ulps of the samples' scale over whole trajectories. Getting there needs torch's own float32 operations,
//! which [`numerics`] mirrors: `torch.linspace` (fused multiply-adds) and `torch.cumprod` (f64 accumulator).
//! Square roots, logs and exps are correctly rounded here; torch's CPU kernels (MKL) are not always, which
//! accounts for the remaining ulps.
//!
//! ```no_run
//! use clora_harness::backend::Cpu;
//! use clora_harness::schedulers::{build, SchedulerConfig, SchedulerKind};
//! # fn main() -> clora_harness::Result<()> {
//! let config = SchedulerConfig::sd15_default();
//! let mut scheduler = build::<Cpu>(SchedulerKind::Euler, &config, 30)?;
//! let timesteps = scheduler.timesteps().to_vec();
//! # let mut latents: burn::tensor::Tensor<Cpu, 4> = burn::tensor::Tensor::zeros([1, 4, 8, 8], &Default::default());
//! latents = latents.mul_scalar(scheduler.init_noise_sigma());
//! for (i, _t) in timesteps.iter().enumerate() {
//!     let input = scheduler.scale_model_input(latents.clone(), i);
//!     let noise_pred = input; // the UNet at timestep `_t`
//!     latents = scheduler.step(noise_pred, i, latents);
//! }
//! # Ok(()) }
//! ```

mod config;
mod ddim;
mod dpmsolver;
mod euler;
pub mod numerics;

use burn::tensor::{backend::Backend, DType, Tensor};

pub use config::{
    AlgorithmType, BetaSchedule, FinalSigmasType, InterpolationType, PredictionType,
    SchedulerConfig, SchedulerKind, SolverType, TimestepSpacing, TimestepType,
};
pub use ddim::DdimScheduler;
pub use dpmsolver::DpmSolverMultistepScheduler;
pub use euler::EulerDiscreteScheduler;

use crate::error::{Error, Result};

/// What one step produces.
#[derive(Clone, Debug)]
pub struct StepOutput<B: Backend> {
    /// The sample at the next (less noisy) timestep.
    pub prev_sample: Tensor<B, 4>,
    /// The model's prediction of the clean sample x0 at this step (DDIM: after clipping; DPM-Solver: the
    /// converted model output the solver keeps).
    pub pred_original_sample: Tensor<B, 4>,
}

/// A sampler over a fixed list of inference timesteps, addressed by step index.
///
/// Arithmetic is in f32 whatever the tensors' dtype (as diffusers upcasts), and the results come back in
/// the model output's dtype.
pub trait Scheduler<B: Backend>: Send {
    /// Which sampler this is.
    fn kind(&self) -> SchedulerKind;

    /// The timestep fed to the UNet at each step (Euler with Karras sigmas gives non-integer ones).
    fn timesteps(&self) -> &[f64];

    /// The number of steps (the length of [`Scheduler::timesteps`]).
    fn num_inference_steps(&self) -> usize {
        self.timesteps().len()
    }

    /// The standard deviation of the initial noise (multiply unit Gaussian latents by it).
    fn init_noise_sigma(&self) -> f64;

    /// The training `alphas_cumprod` (one per training timestep, f32 as diffusers keeps it).
    fn alphas_cumprod(&self) -> &[f32];

    /// The UNet input for step `step_index` (Euler: `sample / sqrt(sigma^2 + 1)`; others: unchanged).
    fn scale_model_input(&self, sample: Tensor<B, 4>, step_index: usize) -> Tensor<B, 4>;

    /// One denoising step from step `step_index` (0-based), with the model's output and the current sample,
    /// also giving the x0 prediction. Steps must be called in order 0..n for multistep solvers.
    ///
    /// Panics if `step_index` is out of range, or (multistep) out of order.
    fn step_output(
        &mut self,
        model_output: Tensor<B, 4>,
        step_index: usize,
        sample: Tensor<B, 4>,
    ) -> StepOutput<B>;

    /// One denoising step from step_index (0-based) with the model's output; steps must be called in order
    /// 0..n for multistep solvers.
    fn step(
        &mut self,
        model_output: Tensor<B, 4>,
        step_index: usize,
        sample: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        self.step_output(model_output, step_index, sample)
            .prev_sample
    }

    /// Forgets any state kept between steps, for a new image (multistep solvers; step 0 also does it).
    fn reset(&mut self) {}
}

/// Builds a scheduler of `kind` from a (pipeline's) config, as `XScheduler.from_config(pipe.scheduler.config)`
/// does in diffusers, with `num_inference_steps` set. `DpmPp2m` is
/// `DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)`.
pub fn build<B: Backend>(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    num_inference_steps: usize,
) -> Result<Box<dyn Scheduler<B>>> {
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(DdimScheduler::new(config, num_inference_steps)?),
        SchedulerKind::Euler => Box::new(EulerDiscreteScheduler::new(config, num_inference_steps)?),
        SchedulerKind::DpmPp2m => {
            // The kind names the algorithm: DPM-Solver++ of order 2, whatever the config's class had.
            let mut config = config.clone();
            config.solver_order = 2;
            config.algorithm_type = AlgorithmType::DpmSolverPlusPlus;
            Box::new(DpmSolverMultistepScheduler::<B>::new(
                &config,
                num_inference_steps,
            )?)
        }
    })
}

/// `num_inference_steps` must be in 1..=num_train_timesteps.
fn check_steps(config: &SchedulerConfig, num_inference_steps: usize) -> Result<()> {
    if num_inference_steps == 0 {
        return Err(Error::invalid(
            "num_inference_steps",
            "expected at least 1 step, found 0",
        ));
    }
    if num_inference_steps > config.num_train_timesteps {
        return Err(Error::invalid(
            "num_inference_steps",
            format!(
                "{num_inference_steps} steps exceed num_train_timesteps = {} of {}",
                config.num_train_timesteps,
                config.source_path().display()
            ),
        ));
    }
    Ok(())
}

fn upcast<const D: usize, B: Backend>(x: Tensor<B, D>) -> Tensor<B, D> {
    if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(DType::F32)
    }
}

fn downcast<const D: usize, B: Backend>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if x.dtype() == dtype {
        x
    } else {
        x.cast(dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use std::path::Path;

    #[test]
    fn sd15_ddim_50_leading() {
        let s = DdimScheduler::new(&SchedulerConfig::sd15_default(), 50).unwrap();
        let t = <DdimScheduler as Scheduler<Cpu>>::timesteps(&s);
        assert_eq!(t.len(), 50);
        assert_eq!(t[0], 981.0);
        assert_eq!(t[1], 961.0);
        assert_eq!(t[49], 1.0);
        assert_eq!(s.prev_timestep(49), -19);
        assert_eq!(s.alpha_prod_t_prev(49), s.alphas_cumprod()[0]); // set_alpha_to_one = false
    }

    #[test]
    fn ddim_spacings() {
        let mut c = SchedulerConfig::sd15_default();
        c.timestep_spacing = Some(TimestepSpacing::Trailing);
        let s = DdimScheduler::new(&c, 50).unwrap();
        assert_eq!(s.timesteps_i64()[0], 999);
        assert_eq!(s.timesteps_i64()[49], 19);
        c.timestep_spacing = Some(TimestepSpacing::Linspace);
        let s = DdimScheduler::new(&c, 4).unwrap();
        assert_eq!(s.timesteps_i64(), &[999, 666, 333, 0]);
    }

    #[test]
    fn euler_sd15_defaults_to_linspace() {
        let s = EulerDiscreteScheduler::new(&SchedulerConfig::sd15_default(), 25).unwrap();
        let t = <EulerDiscreteScheduler as Scheduler<Cpu>>::timesteps(&s);
        assert_eq!(t[0], 999.0);
        assert_eq!(t[24], 0.0);
        assert_eq!(s.sigmas().len(), 26);
        assert_eq!(*s.sigmas().last().unwrap(), 0.0);
        // linspace: init_noise_sigma is the largest sigma (about 14.6 for SD 1.5).
        let ins = <EulerDiscreteScheduler as Scheduler<Cpu>>::init_noise_sigma(&s);
        assert!((ins - 14.6146).abs() < 1e-3, "{ins}");
    }

    #[test]
    fn dpm_sd15_timesteps() {
        let s =
            DpmSolverMultistepScheduler::<Cpu>::new(&SchedulerConfig::sd15_default(), 20).unwrap();
        assert_eq!(s.timesteps_i64()[0], 999);
        assert_eq!(s.timesteps_i64()[19], 50);
        assert_eq!(s.sigmas().len(), 21);
    }

    #[test]
    fn bad_values_name_the_field() {
        let p = Path::new("sched.json");
        let e = SchedulerConfig::from_json_str(r#"{"timestep_spacing": "foo"}"#, p).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("sched.json")
                && msg.contains("timestep_spacing")
                && msg.contains("leading"),
            "{msg}"
        );
        let e = SchedulerConfig::from_json_str(r#"{"num_train_timesteps": -3}"#, p).unwrap_err();
        assert!(e.to_string().contains("num_train_timesteps"));
        let e = SchedulerConfig::from_json_str(r#"{"clip_sample": "yes"}"#, p).unwrap_err();
        assert!(e.to_string().contains("clip_sample"));
        let e = SchedulerConfig::from_json_str("[1]", p).unwrap_err();
        assert!(e.to_string().contains("sched.json"));
        let c = SchedulerConfig::from_json_str(r#"{"thresholding": true}"#, p).unwrap();
        let e = DdimScheduler::new(&c, 10).unwrap_err();
        assert!(e.to_string().contains("sched.json") && e.to_string().contains("thresholding"));
    }

    #[test]
    fn bad_step_counts() {
        let c = SchedulerConfig::sd15_default();
        for kind in SchedulerKind::ALL {
            assert!(build::<Cpu>(kind, &c, 0).is_err());
            assert!(build::<Cpu>(kind, &c, 1001).is_err());
            assert!(build::<Cpu>(kind, &c, 1).is_ok());
        }
        assert!(DdimScheduler::with_eta(&c, 10, 0.5).is_err());
        assert!(DdimScheduler::with_eta(&c, 10, 0.0).is_ok());
    }

    #[test]
    fn python_json_and_defaults() {
        let text = r#"{
            "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0",
            "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
            "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true,
            "steps_offset": 1, "trained_betas": null, "clip_sample": false,
            "lambda_min_clipped": -Infinity, "sigma_max": Infinity, "note": "NaN -Infinity",
            "timestep_spacing": "trailing", "_use_default_values": ["timestep_spacing"]
        }"#;
        let c = SchedulerConfig::from_json_str(text, Path::new("x.json")).unwrap();
        let mut expected = SchedulerConfig::sd15_default();
        expected.source = c.source.clone();
        expected.sigma_max = Some(f64::INFINITY);
        assert_eq!(c, expected);
    }

    #[test]
    fn numbers_parse_exactly() {
        let text = r#"{"beta_start": 0.00085000000000000006, "beta_end": 1.2e-2, "sigma_min": -0.1,
            "trained_betas": [0.1, 0.30000000000000004, 1e-3], "steps_offset": 0}"#;
        let c = SchedulerConfig::from_json_str(text, Path::new("n.json")).unwrap();
        assert_eq!(
            c.beta_start,
            "0.00085000000000000006".parse::<f64>().unwrap()
        );
        assert_eq!(c.beta_end, 0.012);
        assert_eq!(c.sigma_min, Some(-0.1));
        assert_eq!(c.trained_betas, Some(vec![0.1, 0.30000000000000004, 0.001]));
        let e = SchedulerConfig::from_json_str(r#"{"timestep_spacing": 3}"#, Path::new("n.json"))
            .unwrap_err();
        assert!(e.to_string().contains("found 3"), "{e}");
        let e = SchedulerConfig::from_json_str(r#"{"variance_type": 3}"#, Path::new("n.json"))
            .unwrap_err();
        assert!(e.to_string().contains("variance_type"), "{e}");
        let e = SchedulerConfig::from_json_str(r#"{"steps_offset": 1.0}"#, Path::new("n.json"))
            .unwrap_err();
        assert!(e.to_string().contains("found 1.0"), "{e}");
    }

    #[test]
    fn kind_parses() {
        assert_eq!(
            "dpmpp-2m".parse::<SchedulerKind>().unwrap(),
            SchedulerKind::DpmPp2m
        );
        assert_eq!(SchedulerKind::Euler.to_string(), "euler");
        let e = "pndm".parse::<SchedulerKind>().unwrap_err().to_string();
        assert!(e.contains("pndm") && e.contains("ddim"), "{e}");
    }
}
