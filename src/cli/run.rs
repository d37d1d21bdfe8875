//! `harness run CONFIG`: generate every image of an experiment config, score them, write the report.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use clora_harness::config;
use clora_harness::harness::interrupt::ABANDON_EXIT_CODE;
use clora_harness::harness::{self, Interrupt, RunOptions, SdGenerator, SessionOptions};

use super::backend::{check_precision, Device, Precision};

#[derive(Debug, Args)]
#[command(
    after_help = "Results go to OUT/<run name>/ (images, sidecars, manifest.parquet, scores.parquet, \
provenance/, report/). Images already there are kept: rerunning a config, or a changed one, makes only the \
missing images. Ctrl-C finishes the current image and stops; a second Ctrl-C abandons it."
)]
pub struct RunArgs {
    /// The experiment config (TOML).
    pub config: PathBuf,
    /// Folder that holds the run folders.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Where the models run.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    /// Run precision (default: the config's `model.dtype`); f16/bf16 need --device cuda.
    #[arg(long, value_enum)]
    pub dtype: Option<Precision>,
    /// Check the config and print the plan (jobs per method) without generating anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Skip scoring.
    #[arg(long)]
    pub no_eval: bool,
    /// Skip the report.
    #[arg(long)]
    pub no_report: bool,
    /// Stop after making this many images (the rest stays pending for the next run).
    #[arg(long)]
    pub max_images: Option<usize>,

    /// Make only shard K of N of the images (`--shard 0/2` and `--shard 1/2` in two processes or on two
    /// machines sharing the run folder); generation only: run again without --shard to score and report
    #[arg(long, value_name = "K/N")]
    pub shard: Option<harness::Shard>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: RunArgs) -> Result<()> {
    let mut exp = config::load(&args.config)?;
    if let Some(p) = args.dtype {
        exp.model.dtype = p.run_dtype();
    }
    let precision = Precision::of(exp.model.dtype);
    check_precision(args.device, precision)?;
    crate::with_backend!(args.device, |B, device| {
        let (backend, device_name) = names(args.device);
        let mut generator = SdGenerator::<burn::backend::Autodiff<B>>::new(
            device,
            backend,
            device_name,
            exp.model.dtype,
        );
        run_with(&args, &exp, &mut generator)
    })
}

pub(crate) fn names(d: Device) -> (&'static str, &'static str) {
    match d {
        Device::Cpu => ("flex", "cpu"),
        Device::Tch => ("tch", "cpu"),
        Device::Cuda => ("cuda", "cuda:0"),
    }
}

fn run_with(
    args: &RunArgs,
    exp: &config::Experiment,
    generator: &mut dyn harness::Generator,
) -> Result<()> {
    if args.dry_run {
        let (run, plan, _) = harness::session::prepare(exp, &args.out, generator)?;
        let unique = plan.unique();
        println!(
            "{}: {} jobs, {} distinct images, run folder {}",
            exp.file.display(),
            plan.jobs.len(),
            unique.len(),
            run.root.display()
        );
        let mut variants: Vec<(&str, usize)> = Vec::new();
        for j in &plan.jobs {
            match variants.iter_mut().find(|(v, _)| *v == j.variant) {
                Some((_, n)) => *n += 1,
                None => variants.push((&j.variant, 1)),
            }
        }
        for (v, n) in variants {
            println!("  {n:>6}  {v}");
        }
        return Ok(());
    }
    let interrupt = Interrupt::install().map_err(anyhow::Error::msg)?;
    let options = SessionOptions {
        run: RunOptions {
            progress: !args.quiet && std::io::stderr().is_terminal(),
            max_images: args.max_images,
            shard: args.shard,
        },
        eval: !args.no_eval && args.shard.is_none(),
        report: !args.no_report && args.shard.is_none(),
    };
    let out = harness::run_experiment(exp, &args.out, generator, &interrupt, &options)
        .with_context(|| format!("running {}", args.config.display()))?;
    let g = &out.generation;
    eprintln!(
        "{}: {} jobs, {} images: {} made, {} already there, {} failed, {} pending",
        out.run.root.display(),
        g.jobs,
        g.images,
        g.generated,
        g.skipped,
        g.failed,
        g.pending()
    );
    for (kind, n) in &g.unavailable {
        eprintln!("note: method `{kind}` is not available in this build yet: {n} image(s) recorded as failed");
    }
    for m in &out.metrics_unavailable {
        eprintln!("note: metric `{m}` is not available in this build yet: not scored");
    }
    if let Some(e) = &out.eval {
        eprintln!("scored {} image(s) ({} from cache)", e.scored, e.cached);
    }
    if let Some(r) = &out.report {
        // the methods x metrics table on stdout, the rest in the report
        if let Ok(md) = std::fs::read_to_string(r) {
            let table: Vec<&str> = md
                .lines()
                .skip_while(|l| !l.starts_with("## Methods x metrics"))
                .skip(1)
                .take_while(|l| !l.starts_with("![") && !l.starts_with("## "))
                .filter(|l| l.starts_with('|') || l.starts_with("### "))
                .collect();
            if !table.is_empty() {
                println!("{}", table.join("\n"));
            }
        }
        eprintln!("report: {}", r.display());
    }
    eprintln!("provenance: {}", out.provenance.display());
    if let Some(sh) = args.shard {
        eprintln!(
            "shard {}/{} done: when every shard has finished, run the same command without --shard to score and report",
            sh.index, sh.count
        );
    }
    if g.interrupted && args.max_images.is_none() {
        eprintln!("interrupted: run the same command again to continue");
        std::process::exit(ABANDON_EXIT_CODE);
    }
    let unavailable: usize = g.unavailable.values().sum();
    if g.failed > unavailable {
        bail!("{} image(s) failed (see the `error` column of manifest.parquet, or images/*.error.json)", g.failed - unavailable);
    }
    Ok(())
}
