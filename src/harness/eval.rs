//! The evaluation pass: scores every finished image with each [`Evaluator`], caches the scores per image
//! (`scores/<evaluator>/<hash>.json`, atomic), and rebuilds `scores.parquet` from the caches.
//!
//! `scores.parquet` columns: `hash`, `evaluator`, `metric`, `concept` (null for a whole-image score, the
//! LoRA name for a per-concept one), `value`, `model` (the model id, empty for built-in statistics).
//! Aggregates over concepts: the whole-image row of `clip_i`/`dino` is the mean over the image's concepts, and
//! `clip_i_min`/`dino_min` the min.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::{HarnessError, HarnessResult};
use super::interrupt::Interrupt;
use super::job::Job;
use super::layout::RunDir;
use super::metric_eval::{self, MetricEvaluator};
use super::pixel_stats::PixelStats;
use super::progress::Progress;
use super::sidecar::Sidecar;
use super::table::{write_parquet, TableBuilder};
use super::toy_eval::{self, ToyOracleEvaluator};
use crate::config::Experiment;
use crate::latent_io::write_atomic;

/// One score of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub metric: String,
    /// `None`: the whole image; `Some(lora)`: one concept.
    pub concept: Option<String>,
    pub value: f64,
    /// The model id behind the score (empty for built-in statistics).
    pub model: String,
}

/// An image to score, with its job (prompt, concepts, reference images).
pub struct EvalItem<'a> {
    pub job: &'a Job,
    pub image: PathBuf,
}

/// Scores images. Implemented by the built-in pixel statistics, and by the CLIP/DINO metrics.
pub trait Evaluator {
    /// A stable identifier that changes when the scores would (it names the cache folder), e.g.
    /// `pixel-stats-v1` or `clip-<model hash>`.
    fn id(&self) -> String;

    /// Scores a batch of images: one list of scores per item, in order.
    fn score(&mut self, items: &[EvalItem<'_>]) -> HarnessResult<Vec<Vec<Score>>>;
}

#[derive(Debug, Serialize, Deserialize)]
struct Cached {
    evaluator: String,
    hash: String,
    scores: Vec<Score>,
}

/// What an evaluation pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvalSummary {
    pub scored: usize,
    pub cached: usize,
    pub interrupted: bool,
}

/// A list of evaluators.
pub type Evaluators = Vec<Box<dyn Evaluator>>;

/// The evaluators of `spec` (built-in statistics; CLIP/DINO models loaded from the configured folders, their
/// embeddings cached under `run`'s `cache/`), and the metric names this build cannot compute.
pub fn evaluators(exp: &Experiment, run: &RunDir) -> HarnessResult<(Evaluators, Vec<String>)> {
    let spec = &exp.metrics;
    let mut evaluators: Vec<Box<dyn Evaluator>> = Vec::new();
    let mut missing = Vec::new();
    let pick = |names: &[&str]| -> Vec<String> {
        spec.scores
            .iter()
            .filter(|m| names.contains(&m.as_str()))
            .cloned()
            .collect()
    };
    let stats = pick(&PixelStats::METRICS);
    if !stats.is_empty() {
        evaluators.push(Box::new(PixelStats::new(stats)));
    }
    let toy = pick(toy_eval::METRICS);
    if !toy.is_empty() {
        evaluators.push(Box::new(ToyOracleEvaluator::new(toy, &exp.loras)));
    }
    let models = pick(metric_eval::METRICS);
    if !models.is_empty() {
        evaluators.push(Box::new(MetricEvaluator::new(
            models,
            spec.clip_model.clone(),
            spec.dino_model.clone(),
            spec.batch_size,
            Some(run.root.join("cache").join("embeddings")),
        )?));
    }
    for m in &spec.scores {
        let known = [
            PixelStats::METRICS.as_slice(),
            metric_eval::METRICS,
            toy_eval::METRICS,
        ];
        if !known.iter().any(|k| k.contains(&m.as_str())) {
            missing.push(m.clone());
        }
    }
    Ok((evaluators, missing))
}

/// The finished images of `run`, as their sidecars record them (in manifest order, each once).
pub fn done_jobs(run: &RunDir) -> HarnessResult<Vec<Job>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for row in super::manifest::read(run)? {
        if row.status == super::manifest::DONE && seen.insert(row.hash.clone()) {
            if let Some(s) = Sidecar::read_valid(run, &row.hash) {
                out.push(s.job);
            }
        }
    }
    Ok(out)
}

/// Scores the finished images `done` with `evaluators` (images already scored are not scored again),
/// then rebuilds `scores.parquet` for them.
pub fn evaluate(
    run: &RunDir,
    done: &[Job],
    evaluators: &mut [Box<dyn Evaluator>],
    batch_size: usize,
    interrupt: &Interrupt,
    progress: bool,
) -> HarnessResult<EvalSummary> {
    let mut summary = EvalSummary::default();
    for ev in evaluators.iter_mut() {
        let id = ev.id();
        let todo: Vec<&Job> = done
            .iter()
            .filter(|j| read_cache(run, &id, &j.hash).is_none())
            .collect();
        summary.cached += done.len() - todo.len();
        let bar = Progress::new(todo.len(), "evaluate", progress);
        for chunk in todo.chunks(batch_size.max(1)) {
            if interrupt.stop_requested() {
                summary.interrupted = true;
                break;
            }
            bar.start(&id);
            let items: Vec<EvalItem> = chunk
                .iter()
                .map(|j| EvalItem {
                    job: j,
                    image: run.image(&j.hash),
                })
                .collect();
            let scores = ev.score(&items)?;
            if scores.len() != items.len() {
                return Err(HarnessError::Fatal(format!(
                    "evaluator {id} returned {} score lists for {} images",
                    scores.len(),
                    items.len()
                )));
            }
            for (j, sc) in chunk.iter().zip(scores) {
                let c = Cached {
                    evaluator: id.clone(),
                    hash: j.hash.clone(),
                    scores: sc,
                };
                write_atomic(
                    &run.score_cache(&id, &j.hash),
                    &serde_json::to_vec_pretty(&c).expect("plain data"),
                )?;
                summary.scored += 1;
                bar.advance();
            }
        }
        bar.finish();
    }
    let ids: Vec<String> = evaluators.iter().map(|e| e.id()).collect();
    let hashes: Vec<&str> = done.iter().map(|j| j.hash.as_str()).collect();
    write_scores(run, &hashes, &ids)?;
    Ok(summary)
}

fn read_cache(run: &RunDir, id: &str, hash: &str) -> Option<Cached> {
    let bytes = std::fs::read(run.score_cache(id, hash)).ok()?;
    let c: Cached = serde_json::from_slice(&bytes).ok()?;
    (c.hash == hash && c.evaluator == id).then_some(c)
}

/// Rebuilds `scores.parquet` from the cached scores of `evaluators` for the images `hashes`.
pub fn write_scores(run: &RunDir, hashes: &[&str], evaluators: &[String]) -> HarnessResult<()> {
    let (mut hash, mut evaluator, mut metric, mut concept, mut value, mut model) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for h in hashes {
        for id in evaluators {
            if let Some(c) = read_cache(run, id, h) {
                for s in c.scores {
                    hash.push(Some(h.to_string()));
                    evaluator.push(Some(id.clone()));
                    metric.push(Some(s.metric));
                    concept.push(s.concept);
                    value.push(Some(s.value));
                    model.push(Some(s.model));
                }
            }
        }
    }
    let path = run.scores();
    let mut t = TableBuilder::new();
    t.str("hash", hash)
        .str("evaluator", evaluator)
        .str("metric", metric)
        .str("concept", concept)
        .f64("value", value)
        .str("model", model);
    let mut df = t.build(&path)?;
    write_parquet(&mut df, &path)
}
