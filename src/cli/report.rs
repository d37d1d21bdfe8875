//! `harness report RUN`: tables, plots and image grids of a run folder.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use clora_harness::harness::RunDir;

#[derive(Debug, Args)]
#[command(
    after_help = "Writes RUN/report/: report.md, tables/*.csv and *.md (method x metric with confidence \
intervals, one ablation table per swept parameter, job status), plots/*.png and grids/*.png. Reads \
experiment.json, manifest.parquet and scores.parquet (if present) of RUN."
)]
pub struct ReportArgs {
    /// A run folder (results/<name>) made by `harness run`.
    pub run: PathBuf,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let run = RunDir::new(&args.run);
    let path = clora_harness::report::write(&run)
        .with_context(|| format!("reporting {}", args.run.display()))?;
    println!("{}", path.display());
    Ok(())
}
