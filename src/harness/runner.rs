//! The generation runner: makes every distinct image of a plan that is not already on disk, with
//! progress bars, atomic writes, per-job failure records, a provenance record and a clean stop on
//! Ctrl-C; then rewrites the manifest.

use std::collections::BTreeMap;
use std::io::Cursor;

use super::attention_artifacts;
use super::error::{HarnessError, HarnessResult};
use super::generator::{Generator, JobContext, JobError};
use super::hash::{sha256_hex, GENERATION_CODE_VERSION};
use super::interrupt::Interrupt;
use super::job::Job;
use super::layout::RunDir;
use super::manifest;
use super::method_job::save_attention;
use super::plan::Plan;
use super::progress::Progress;
use super::provenance::{now, FailureRecord, ImageRecord, ProvenanceWriter};
use super::sidecar::{JobFailure, Sidecar};
use crate::config::MethodKind;
use crate::latent_io::write_atomic;

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Draw progress bars (on a terminal).
    pub progress: bool,
    /// Stop after making this many images (the rest stays pending; for quick looks and tests).
    pub max_images: Option<usize>,
    /// Make only this shard's share of the images (several processes or machines on one run folder).
    pub shard: Option<Shard>,
}

/// One of `count` disjoint shares of a plan's distinct images: those at positions `index`, `index + count`,
/// ... in plan order. Every image belongs to exactly one shard; images are written atomically and named by
/// their content hash, so the shards of one run folder never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `K/N` with `0 <= K < N`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("`{s}`: expected K/N with 0 <= K < N (e.g. 0/2 and 1/2 for two processes)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = k.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// Whether the image at `position` in plan order is this shard's.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}

/// What a generation pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenerationSummary {
    /// Rows of the plan (method variant x prompt x seed x sample).
    pub jobs: usize,
    /// Distinct images among them.
    pub images: usize,
    /// Already on disk.
    pub skipped: usize,
    pub generated: usize,
    pub failed: usize,
    /// Jobs whose method this build lacks, by method.
    pub unavailable: BTreeMap<MethodKind, usize>,
    /// Stopped early (interrupt or `max_images`).
    pub interrupted: bool,
}

impl GenerationSummary {
    /// Images neither on disk nor failed.
    pub fn pending(&self) -> usize {
        self.images - self.skipped - self.generated - self.failed
    }
}

/// Makes the images of `plan` in `run` that are not done yet, then writes `manifest.parquet`.
pub fn generate(
    run: &RunDir,
    plan: &Plan,
    generator: &mut dyn Generator,
    interrupt: &Interrupt,
    provenance: &mut ProvenanceWriter,
    options: &RunOptions,
) -> HarnessResult<GenerationSummary> {
    run.create()?;
    let unique: Vec<_> = plan
        .unique()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| options.shard.is_none_or(|sh| sh.owns(*i)))
        .map(|(_, j)| j)
        .collect();
    let mut s = GenerationSummary {
        jobs: plan.jobs.len(),
        images: unique.len(),
        ..Default::default()
    };
    let info = generator.info();
    let progress = Progress::new(unique.len(), "generate", options.progress);
    let mut fatal = None;
    for job in unique {
        if interrupt.stop_requested() || options.max_images.is_some_and(|m| s.generated >= m) {
            s.interrupted = true;
            break;
        }
        if Sidecar::read_valid(run, &job.hash).is_some_and(|sc| !lacks_attention(job, &sc)) {
            s.skipped += 1;
            progress.advance();
            continue;
        }
        progress.start(&format!(
            "{} | {} | seed {} #{}",
            job.variant, job.prompt.text, job.seed, job.sample
        ));
        let ctx = JobContext {
            steps: &progress,
            interrupt,
            artifact_dir: run.artifacts(&job.hash),
        };
        match generator.generate(job, &ctx) {
            Ok(img) => {
                let mut png = Cursor::new(Vec::new());
                img.image
                    .write_to(&mut png, image::ImageFormat::Png)
                    .map_err(|e| HarnessError::draw(run.image(&job.hash), e))?;
                let png = png.into_inner();
                write_atomic(&run.image(&job.hash), &png)?;
                let sidecar = Sidecar {
                    hash: job.hash.clone(),
                    image: run.relative(&run.image(&job.hash)),
                    png_sha256: sha256_hex(&png),
                    width: img.image.width(),
                    height: img.image.height(),
                    job: job.clone(),
                    timings: img.timings.clone(),
                    backend: info.target.backend.clone(),
                    device: info.target.device.clone(),
                    dtype: info.dtype.clone(),
                    code_version: GENERATION_CODE_VERSION.to_string(),
                    created_at: now().0,
                    details: img.details,
                };
                let bytes = serde_json::to_vec_pretty(&sidecar).expect("plain data");
                write_atomic(&run.sidecar(&job.hash), &bytes)?;
                let err = run.error_file(&job.hash);
                if err.exists() {
                    std::fs::remove_file(&err).map_err(|e| HarnessError::io(&err, e))?;
                }
                s.generated += 1;
                provenance.record.images.push(ImageRecord {
                    hash: job.hash.clone(),
                    variant: job.variant.clone(),
                    prompt: job.prompt.text.clone(),
                    seed: job.seed,
                    sample: job.sample,
                    timings: img.timings,
                });
                provenance.save()?;
            }
            Err(JobError::Abandoned) => {
                s.interrupted = true;
                break;
            }
            Err(JobError::Fatal(msg)) => {
                fatal = Some(msg);
                break;
            }
            Err(e) => {
                if let JobError::Unavailable(kind) = &e {
                    *s.unavailable.entry(*kind).or_default() += 1;
                }
                let failure = JobFailure {
                    hash: job.hash.clone(),
                    variant: job.variant.clone(),
                    error: e.to_string(),
                    at: now().0,
                };
                let bytes = serde_json::to_vec_pretty(&failure).expect("plain data");
                write_atomic(&run.error_file(&job.hash), &bytes)?;
                if !matches!(e, JobError::Unavailable(_)) {
                    progress.println(&format!(
                        "failed: {} | {}: {e}",
                        job.variant, job.prompt.text
                    ));
                }
                s.failed += 1;
                provenance.record.failures.push(FailureRecord {
                    hash: job.hash.clone(),
                    variant: job.variant.clone(),
                    error: e.to_string(),
                });
                provenance.save()?;
            }
        }
        progress.advance();
    }
    progress.finish();
    provenance.record.images_skipped = s.skipped;
    manifest::write(run, plan)?;
    if let Some(msg) = fatal {
        provenance.finish(&format!("failed: {msg}"))?;
        return Err(HarnessError::Fatal(msg));
    }
    provenance.save()?;
    Ok(s)
}

/// Whether a finished image lacks the attention maps its job now asks for: `save_attention` does not change
/// the pixels, so it is not in the job's hash, and turning it on for a finished run would otherwise leave the
/// images without their maps. The generator records their files (possibly none) whenever it saved them.
fn lacks_attention(job: &Job, sidecar: &Sidecar) -> bool {
    save_attention(job)
        && sidecar
            .details
            .get(attention_artifacts::DETAILS_KEY)
            .is_none()
}
