//! The CLIP and DINO metrics ([`crate::metrics`]) as an [`Evaluator`]: CLIP-T and CLIPScore of the prompt with
//! class nouns only (`job.prompt.plain`), CLIP-I and DINO per concept against the LoRA's reference images, and
//! their mean (`clip_i`, `dino` with no concept) and min (`clip_i_min`, `dino_min`) over the concepts of the image.

use std::path::PathBuf;

use super::error::{HarnessError, HarnessResult};
use super::eval::{EvalItem, Evaluator, Score};
use crate::metrics::{ConceptRefs, ImageQuery, MetricsConfig, Scorer};

/// The metric names this evaluator computes (the config's `scores`).
pub const METRICS: &[&str] = &["clip_t", "clip_score", "clip_i", "dino"];

/// CLIP/DINO scores of generated images.
pub struct MetricEvaluator {
    scorer: Scorer,
    wanted: Vec<String>,
}

impl MetricEvaluator {
    /// Loads the models the `wanted` metrics need; embeddings are cached in `cache_dir`.
    pub fn new(
        wanted: Vec<String>,
        clip_model: Option<PathBuf>,
        dino_model: Option<PathBuf>,
        batch_size: usize,
        cache_dir: Option<PathBuf>,
    ) -> HarnessResult<Self> {
        let needs_clip = wanted.iter().any(|m| m != "dino");
        let needs_dino = wanted.iter().any(|m| m == "dino");
        let cfg = MetricsConfig {
            clip: if needs_clip { clip_model } else { None },
            dino: if needs_dino { dino_model } else { None },
            cache_dir,
            batch_size: batch_size.max(1),
            ..MetricsConfig::default()
        };
        let scorer = Scorer::new(cfg).map_err(|e| HarnessError::Fatal(format!("metrics: {e}")))?;
        Ok(Self { scorer, wanted })
    }

    fn wants(&self, m: &str) -> bool {
        self.wanted.iter().any(|w| w == m)
    }
}

impl Evaluator for MetricEvaluator {
    fn id(&self) -> String {
        // the model ids carry content digests: other weights, another cache folder
        let mut id = String::from("metrics-v1");
        for m in [self.scorer.clip_model_id(), self.scorer.dino_model_id()]
            .into_iter()
            .flatten()
        {
            let digest = m.rsplit('@').next().unwrap_or(m);
            id.push('-');
            id.push_str(&digest.chars().take(16).collect::<String>());
        }
        id.push('-');
        id.push_str(&self.wanted.join("+"));
        id
    }

    fn score(&mut self, items: &[EvalItem<'_>]) -> HarnessResult<Vec<Vec<Score>>> {
        let queries: Vec<(PathBuf, ImageQuery)> = items
            .iter()
            .map(|it| {
                let concepts = it
                    .job
                    .loras
                    .iter()
                    .filter(|l| !l.references.is_empty())
                    .map(|l| ConceptRefs::from_files(l.name.clone(), l.references.clone()))
                    .collect();
                let q = ImageQuery {
                    prompt_for_clip_t: Some(it.job.prompt.plain.clone()),
                    concepts,
                };
                (it.image.clone(), q)
            })
            .collect();
        let scored = self
            .scorer
            .score_images(&queries)
            .map_err(|e| HarnessError::Fatal(format!("metrics: {e}")))?;
        let mut out = Vec::with_capacity(scored.len());
        for s in scored {
            let mut v = Vec::new();
            let whole = |metric: &str, value: f32, model: &str| Score {
                metric: metric.to_string(),
                concept: None,
                value: value as f64,
                model: model.to_string(),
            };
            if let Some(t) = &s.clip_t {
                if self.wants("clip_t") {
                    v.push(whole("clip_t", t.cosine, &t.model_id));
                }
                if self.wants("clip_score") {
                    v.push(whole("clip_score", t.clip_score, &t.model_id));
                }
            }
            for (metric, model, agg) in [
                ("clip_i", s.clip_model.as_deref(), s.clip_i),
                ("dino", s.dino_model.as_deref(), s.dino),
            ] {
                let (Some(model), true) = (model, self.wants(metric)) else {
                    continue;
                };
                for c in &s.concepts {
                    let value = if metric == "clip_i" { c.clip_i } else { c.dino };
                    if let Some(x) = value {
                        v.push(Score {
                            metric: metric.to_string(),
                            concept: Some(c.concept.clone()),
                            value: x as f64,
                            model: model.to_string(),
                        });
                    }
                }
                if let Some(a) = agg {
                    // the image's value is the mean over its concepts; the min exposes an omitted one
                    v.push(whole(metric, a.mean, model));
                    v.push(whole(&format!("{metric}_min"), a.min, model));
                }
            }
            out.push(v);
        }
        Ok(out)
    }
}
