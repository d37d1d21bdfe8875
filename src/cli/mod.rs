//! Command-line interface: one file per subcommand.

mod backend;
mod bench;
mod eval;
mod generate;
mod job;
mod report;
mod run;
mod score;
mod toyworld;

use clap::{Parser, Subcommand};

/// clora-harness: compose LoRA adapters in Stable Diffusion 1.x images (CLoRA and baselines), on burn.
#[derive(Debug, Parser)]
#[command(name = "harness", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate one image from a prompt with an SD 1.x model.
    Generate(generate::GenerateArgs),
    /// Time model pieces on random weights (no weight file needed).
    Bench(bench::BenchArgs),
    /// Run an experiment config: generate its images, score them, write the report.
    Run(run::RunArgs),
    /// Score the finished images of a run folder.
    Eval(eval::EvalArgs),
    /// Write the tables, plots and image grids of a run folder.
    Report(report::ReportArgs),
    /// CLIP-T / CLIPScore, CLIP-I and DINO scores of images against a prompt and reference folders.
    Score(score::ScoreArgs),
    /// The toyworld: render scenes, check the oracle, train the miniature model, judge its images.
    Toyworld(toyworld::ToyworldArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Run(args) => run::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Report(args) => report::run(args),
        Command::Score(args) => score::run(args),
        Command::Toyworld(args) => toyworld::run(args),
    }
}
