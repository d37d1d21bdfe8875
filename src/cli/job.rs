//! `harness generate --job FILE.toml`: one image described completely by a job file
//! ([`clora_harness::config::job_file`]), made by the harness's generator (any composition method), with its
//! record (`<out>.json`: the job, timings, CLoRA losses and masks) and, with `save_attention`, the attention maps
//! and masks in `<out stem>_attention/`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use clora_harness::config::job_file::load_job_file;
use clora_harness::harness::filehash::FileHasher;
use clora_harness::harness::generator::StepReporter;
use clora_harness::harness::sd_generator::InitNoise;
use clora_harness::harness::{self, Generator, Interrupt, JobContext, SdGenerator};
use clora_harness::latent_io;

use super::backend::{check_precision, Device, Precision};

/// Prints the denoising progress on one line.
struct Steps;

impl StepReporter for Steps {
    fn step(&self, done: usize, total: usize, what: &str) {
        eprint!("\r{what}: step {done}/{total}   ");
        if what == "decode" {
            eprintln!();
        }
    }
}

/// Makes the image of the job file `file`; `out` overrides its `out`.
pub fn run(
    file: &Path,
    out: Option<&Path>,
    device: Device,
    dtype: Option<Precision>,
) -> Result<()> {
    let mut jf = load_job_file(file)?;
    if let Some(p) = dtype {
        jf.experiment.model.dtype = p.run_dtype();
    }
    let precision = Precision::of(jf.experiment.model.dtype);
    check_precision(device, precision)?;
    let out: PathBuf = out.map(Path::to_path_buf).unwrap_or_else(|| jf.out.clone());
    crate::with_backend!(device, |B, dev| {
        type A = burn::backend::Autodiff<B>;
        let (backend, device_name) = super::run::names(device);
        #[allow(clippy::clone_on_copy)] // the device is Copy on some backends only
        let mut g =
            SdGenerator::<A>::new(dev.clone(), backend, device_name, jf.experiment.model.dtype);
        let plan = harness::plan(
            &jf.experiment,
            &g.info().target,
            &mut FileHasher::in_memory(),
        )?;
        if plan.jobs.len() != 1 {
            let variants: Vec<&str> = plan.jobs.iter().map(|j| j.variant.as_str()).collect();
            bail!(
                "{} describes {} images ({}); a job file describes one (for `single`, set `method.params.lora`)",
                file.display(),
                plan.jobs.len(),
                variants.join(", ")
            );
        }
        // the noise of `harness generate --seed`, not the experiment's per-prompt seed
        let mut job = plan.jobs[0].clone();
        job.noise_seed = jf.seed;
        // the initial noise from a file, in the latent shape of the model (known once it is loaded)
        let read_init = |shape: [usize; 4]| {
            let p = jf
                .init_latent
                .as_deref()
                .expect("only called with init_latent");
            latent_io::read_latent::<A>(p, shape, &dev).map_err(|e| {
                harness::JobError::Failed(format!("reading init_latent {}: {e}", p.display()))
            })
        };
        let init: Option<&InitNoise<'_, A>> = jf.init_latent.as_ref().map(|_| &read_init as _);
        let stem = out
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let artifact_dir = out.with_file_name(format!("{stem}_attention"));
        let ctx = JobContext {
            steps: &Steps,
            interrupt: &Interrupt::new(),
            artifact_dir,
        };
        let made = g
            .generate_from(&job, init, &ctx)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        latent_io::write_png(&out, &made.image)
            .with_context(|| format!("writing {}", out.display()))?;
        let record = serde_json::json!({
            "job_file": file.display().to_string(),
            "job": job,
            "timings": made.timings,
            "details": made.details,
        });
        let rec_path = out.with_extension("json");
        latent_io::write_atomic(&rec_path, &serde_json::to_vec_pretty(&record)?)
            .with_context(|| format!("writing {}", rec_path.display()))?;
        eprintln!(
            "wrote {} and {} ({}, {:.2}s)",
            out.display(),
            rec_path.display(),
            job.variant,
            made.timings.get("total").copied().unwrap_or(0.0)
        );
        Ok(())
    })
}
