//! One `harness run`: plan, generate, evaluate, report, with a provenance record. Each stage reads what
//! the previous one wrote to the run folder, so any of them can be rerun alone.

use std::path::Path;

use super::error::{HarnessError, HarnessResult};
use super::eval::{self, EvalSummary};
use super::filehash::FileHasher;
use super::generator::Generator;
use super::interrupt::Interrupt;
use super::layout::RunDir;
use super::plan::{self, Plan};
use super::provenance::ProvenanceWriter;
use super::runner::{self, GenerationSummary, RunOptions};
use crate::config::Experiment;
use crate::latent_io::write_atomic;

/// Which stages to run after generation.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub run: RunOptions,
    pub eval: bool,
    pub report: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            run: RunOptions::default(),
            eval: true,
            report: true,
        }
    }
}

/// What a session did.
#[derive(Debug, Clone)]
pub struct SessionOutcome {
    pub run: RunDir,
    pub generation: GenerationSummary,
    pub eval: Option<EvalSummary>,
    /// Metrics the config asks for that this build cannot compute yet.
    pub metrics_unavailable: Vec<String>,
    pub report: Option<std::path::PathBuf>,
    pub provenance: std::path::PathBuf,
}

/// The run folder of `exp` under `out_root`, created, with `experiment.json` written, and its plan.
pub fn prepare(
    exp: &Experiment,
    out_root: &Path,
    generator: &dyn Generator,
) -> HarnessResult<(RunDir, Plan, FileHasher)> {
    let run = RunDir::new(out_root.join(&exp.name));
    run.create()?;
    let json = serde_json::to_vec_pretty(exp).expect("plain data");
    write_atomic(&run.experiment_json(), &json)?;
    let mut hasher = FileHasher::with_cache(&run.file_hash_cache());
    let plan = plan::plan(exp, &generator.info().target, &mut hasher)?;
    hasher.save()?;
    Ok((run, plan, hasher))
}

/// Reads `experiment.json` of a run folder.
pub fn read_experiment(run: &RunDir) -> HarnessResult<Experiment> {
    run.check()?;
    let p = run.experiment_json();
    let bytes = std::fs::read(&p).map_err(|e| HarnessError::io(&p, e))?;
    serde_json::from_slice(&bytes).map_err(|e| HarnessError::RunDir {
        path: p,
        msg: format!("not an experiment record of this version: {e}"),
    })
}

/// Generates, evaluates and reports `exp` in `out_root/<name>/`.
pub fn run_experiment(
    exp: &Experiment,
    out_root: &Path,
    generator: &mut dyn Generator,
    interrupt: &Interrupt,
    options: &SessionOptions,
) -> HarnessResult<SessionOutcome> {
    let (run, plan, mut hasher) = prepare(exp, out_root, generator)?;
    let info = generator.info();
    let mut prov = ProvenanceWriter::start(&run, exp, &plan, &info, &mut hasher)?;
    hasher.save()?;
    let generation = runner::generate(&run, &plan, generator, interrupt, &mut prov, &options.run)?;
    let (mut evaluators, missing) = eval::evaluators(exp, &run)?;
    for m in &missing {
        prov.record.notes.push(format!(
            "metric `{m}` is not available in this build yet: not scored"
        ));
    }
    let mut eval_summary = None;
    if options.eval && !generation.interrupted {
        let done = eval::done_jobs(&run)?;
        eval_summary = Some(eval::evaluate(
            &run,
            &done,
            &mut evaluators,
            exp.metrics.batch_size,
            interrupt,
            options.run.progress,
        )?);
    }
    let interrupted =
        generation.interrupted || eval_summary.as_ref().is_some_and(|e| e.interrupted);
    let mut report = None;
    if options.report && !interrupted {
        report = Some(crate::report::write(&run)?);
    }
    prov.finish(if interrupted {
        "interrupted"
    } else {
        "completed"
    })?;
    Ok(SessionOutcome {
        provenance: prov.path().to_path_buf(),
        run,
        generation,
        eval: eval_summary,
        metrics_unavailable: missing,
        report,
    })
}
