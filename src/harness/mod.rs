//! The experiment harness: planning (cartesian expansion into jobs with content hashes), the runner
//! (skip what exists, progress bars, Ctrl-C, atomic writes, provenance), the manifest and scores tables,
//! and the evaluation pass. See [`layout`] for the results folder.
//!
//! Composition methods and metrics plug in through two traits: [`Generator`] (one job -> one image) and
//! [`Evaluator`] (images -> scores).

pub mod attention_artifacts;
pub mod error;
pub mod eval;
pub mod filehash;
pub mod generator;
pub mod hash;
pub mod interrupt;
pub mod job;
pub mod layout;
pub mod manifest;
pub mod method_job;
pub mod metric_eval;
pub mod pixel_stats;
pub mod plan;
pub mod progress;
pub mod provenance;
pub mod runner;
pub mod sd_generator;
pub mod session;
pub mod sidecar;
pub mod table;
pub mod toy_eval;

pub use error::{HarnessError, HarnessResult};
pub use eval::{EvalItem, Evaluator, Score};
pub use generator::{GeneratedImage, Generator, GeneratorInfo, JobContext, JobError, StepReporter};
pub use interrupt::Interrupt;
pub use job::Job;
pub use layout::RunDir;
pub use plan::{plan, Plan, Target};
pub use runner::{GenerationSummary, RunOptions, Shard};
pub use sd_generator::SdGenerator;
pub use session::{run_experiment, SessionOptions, SessionOutcome};
