//! `harness eval RUN`: score the finished images of a run folder with the metrics of its config.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use clora_harness::harness::{eval, session, Interrupt, RunDir};

#[derive(Debug, Args)]
#[command(
    after_help = "Scores every finished image of RUN that has no cached score yet (RUN/scores/<evaluator>/), \
then rewrites RUN/scores.parquet. The metrics are those of the run's config (`[metrics] scores`)."
)]
pub struct EvalArgs {
    /// A run folder (results/<name>) made by `harness run`.
    pub run: PathBuf,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let run = RunDir::new(&args.run);
    let exp = session::read_experiment(&run)?;
    let (mut evaluators, missing) = eval::evaluators(&exp, &run)?;
    for m in &missing {
        eprintln!("note: metric `{m}` is not available in this build yet: not scored");
    }
    let done = eval::done_jobs(&run)?;
    let interrupt = Interrupt::install().map_err(anyhow::Error::msg)?;
    let progress = !args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let s = eval::evaluate(
        &run,
        &done,
        &mut evaluators,
        exp.metrics.batch_size,
        &interrupt,
        progress,
    )
    .with_context(|| format!("scoring {}", args.run.display()))?;
    eprintln!(
        "scored {} image(s) ({} from cache); {}",
        s.scored,
        s.cached,
        run.scores().display()
    );
    Ok(())
}
