//! Composition methods: how several LoRAs make one image. One trait, one file per method:
//! [`base`] (no LoRA), [`single`] (one LoRA), [`merge`], [`switch`], [`composite`] (the training-free
//! baselines with the semantics of the Multi-LoRA-Composition reference code), [`clora`] and [`excite`]
//! (Attend-and-Excite, on the base model or on merged LoRAs).
//!
//! A method is small: [`sampler::compose`] runs the denoising loop and asks the method, at every step, for the
//! guided noise prediction (and the latent to step from: CLoRA updates it).

pub mod base;
pub mod clora;
pub mod composite;
pub mod excite;
pub mod job;
pub mod merge;
pub mod sampler;
pub mod single;
pub mod spec;
pub mod switch;

use burn::tensor::{backend::AutodiffBackend, Tensor};

pub use job::{CompositionJob, LoraRef};
pub use sampler::{compose, compose_with_progress, Composed};
pub use spec::MethodSpec;

use crate::error::Result;
use crate::models::sd::StableDiffusion;
use crate::schedulers::Scheduler;

/// What a method sees at each denoising step.
pub struct StepContext<'a, B: AutodiffBackend> {
    /// 0-based denoising index `i`.
    pub index: usize,
    /// The timestep fed to the UNet.
    pub t: f64,
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: &'a dyn Scheduler<B>,
}

/// The result of one step: the guided noise prediction and the latent the scheduler steps from.
pub struct StepOutput<B: AutodiffBackend> {
    pub eps: Tensor<B, 4>,
    pub latent: Tensor<B, 4>,
}

/// A composition method. `prepare` sets up the model (prompts, LoRA rows, fusion), `step` predicts, `finish`
/// restores the model so the next job starts from a clean state (it runs even when a step failed).
pub trait CompositionMethod<B: AutodiffBackend> {
    fn name(&self) -> &'static str;

    fn prepare(&mut self, sd: &mut StableDiffusion<B>, job: &CompositionJob) -> Result<()>;

    fn step(
        &mut self,
        sd: &mut StableDiffusion<B>,
        ctx: &StepContext<'_, B>,
        latent: Tensor<B, 4>,
    ) -> Result<StepOutput<B>>;

    fn finish(&mut self, sd: &mut StableDiffusion<B>);
}

/// Builds the method a spec names.
pub fn build<B: AutodiffBackend>(spec: &MethodSpec) -> Result<Box<dyn CompositionMethod<B>>> {
    spec.validate()?;
    Ok(match spec {
        MethodSpec::Base => Box::new(base::Base::default()),
        MethodSpec::Single { lora } => Box::new(single::Single::new(*lora)),
        MethodSpec::Merge { fuse } => Box::new(merge::Merge::new(*fuse)),
        MethodSpec::Switch { switch_step } => Box::new(switch::Switch::new(*switch_step)),
        MethodSpec::Composite { batched } => Box::new(composite::Composite::new(*batched)),
        MethodSpec::Clora(p) => Box::new(clora::Clora::new(p.clone())),
        MethodSpec::Excite(p) => Box::new(excite::Excite::new(p.clone())),
    })
}

/// Classifier-free guidance over a `[2n, ...]` batch laid out `[neg_0, pos_0, neg_1, pos_1, ...]`:
/// returns the `n` per-branch `(uncond, cond)` pairs.
pub fn split_cfg_pairs<B: AutodiffBackend>(
    eps: Tensor<B, 4>,
    n: usize,
) -> Vec<(Tensor<B, 4>, Tensor<B, 4>)> {
    let [_, c, h, w] = eps.dims();
    (0..n)
        .map(|k| {
            let u = eps.clone().slice([2 * k..2 * k + 1, 0..c, 0..h, 0..w]);
            let p = eps.clone().slice([2 * k + 1..2 * k + 2, 0..c, 0..h, 0..w]);
            (u, p)
        })
        .collect()
}

/// `eps_u + w (eps_c - eps_u)`.
pub fn guide<B: AutodiffBackend>(
    uncond: Tensor<B, 4>,
    cond: Tensor<B, 4>,
    guidance: f64,
) -> Tensor<B, 4> {
    uncond.clone() + (cond - uncond) * guidance
}
