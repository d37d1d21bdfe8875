//! Command-line interface: one file per subcommand.

mod backend;
mod bench;
mod generate;

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
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
