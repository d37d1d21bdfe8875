//! The interface between the runner and image generation: a [`Generator`] turns one [`Job`] into an
//! image. The runner owns everything else (skipping, files, progress, provenance, interrupts).
//!
//! The composition methods plug in here: an implementation dispatches on `job.kind`, reads
//! `job.params` (only what the config sets; the method applies its own defaults for the rest), applies
//! `job.loras` and uses `job.prompt` (`text` for single-pass methods, `plain` + `branches` for CLoRA),
//! with the initial noise drawn from `job.noise_seed`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::interrupt::Interrupt;
use super::job::Job;
use super::plan::Target;
use crate::config::MethodKind;

/// What a generator runs on (recorded in provenance and part of every content hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorInfo {
    pub target: Target,
    /// `f32`, `f16` or `bf16`.
    pub dtype: String,
}

/// One generated image.
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    pub image: image::RgbImage,
    /// Seconds per phase, e.g. `{"load": .., "denoise": .., "decode": .., "total": ..}`.
    pub timings: BTreeMap<String, f64>,
    /// Method-specific record for the sidecar (losses per update, mask coverage, ...).
    pub details: serde_json::Value,
}

/// Why one job produced no image.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The method is not in this build; recorded for the job, the run goes on.
    #[error("method `{0}` is not available in this build yet")]
    Unavailable(MethodKind),
    /// This job failed (bad input for this job, NaN in a step, ...); recorded, the run goes on.
    #[error("{0}")]
    Failed(String),
    /// Nothing can be generated (the model does not load, ...): the run stops.
    #[error("{0}")]
    Fatal(String),
    /// Stopped by a second interrupt before the image was done.
    #[error("abandoned")]
    Abandoned,
}

impl From<crate::Error> for JobError {
    fn from(e: crate::Error) -> Self {
        JobError::Failed(e.to_string())
    }
}

/// Where a generator reports progress within one image.
pub trait StepReporter {
    /// `done` of `total` denoising steps (or update cycles) of the current image; `what` is a short
    /// phase name (`"denoise"`, `"latent update"`, `"decode"`).
    fn step(&self, done: usize, total: usize, what: &str);
}

/// A reporter that ignores everything.
pub struct NoSteps;

impl StepReporter for NoSteps {
    fn step(&self, _: usize, _: usize, _: &str) {}
}

/// What the runner hands a generator with each job.
pub struct JobContext<'a> {
    pub steps: &'a dyn StepReporter,
    /// Check `stop_requested()` between steps only to abandon work that cannot be finished; the runner
    /// itself stops after the current image.
    pub interrupt: &'a Interrupt,
    /// A folder for optional per-image artifacts (attention maps, masks); created on first use by the
    /// generator, written atomically (`latent_io::write_atomic`).
    pub artifact_dir: PathBuf,
}

/// Turns jobs into images.
pub trait Generator {
    /// The backend, device and dtype.
    fn info(&self) -> GeneratorInfo;

    /// Makes the image of `job`.
    fn generate(&mut self, job: &Job, ctx: &JobContext<'_>) -> Result<GeneratedImage, JobError>;
}
