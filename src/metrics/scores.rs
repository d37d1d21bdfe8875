//! Score definitions and result types.
//!
//! - CLIP-T: cosine between the CLIP text features of the (trigger-free) prompt and the image features;
//!   CLIPScore = `100 * max(cos, 0)` (Hessel et al. with w = 100, as torchmetrics reports it).
//! - CLIP-I of a concept: mean over the concept's reference images of cosine(image, reference) in CLIP image
//!   feature space.
//! - DINO of a concept: the same with the DINO class-token embeddings (DreamBooth's DINO metric).
//! - Aggregates over the concepts of one image: min (exposes an omitted concept) and mean.
//!
//! Every score carries the id of the model that produced it. Cosines are computed in f64.

use std::path::PathBuf;

use serde::Serialize;

/// Cosine similarity (f64 accumulation); 0 when a vector is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    (ab / (aa.sqrt() * bb.sqrt())) as f32
}

/// CLIPScore from a cosine: `100 * max(cos, 0)`.
pub fn clip_score(cos: f32) -> f32 {
    100.0 * cos.max(0.0)
}

/// Mean of cosines between one embedding and each reference embedding.
pub fn mean_cosine<'a>(x: &[f32], refs: impl IntoIterator<Item = &'a [f32]>) -> Option<f32> {
    let (mut sum, mut n) = (0f64, 0usize);
    for r in refs {
        sum += f64::from(cosine(x, r));
        n += 1;
    }
    (n > 0).then(|| (sum / n as f64) as f32)
}

/// Min and mean of per-concept values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Aggregate {
    pub min: f32,
    pub mean: f32,
}

impl Aggregate {
    pub fn of(values: &[f32]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let min = values.iter().copied().fold(f32::INFINITY, f32::min);
        let mean = (values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64) as f32;
        Some(Self { min, mean })
    }
}

/// CLIP-T of one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClipTScore {
    /// The text that was scored (triggers already replaced).
    pub prompt: String,
    pub cosine: f32,
    /// `100 * max(cosine, 0)`.
    pub clip_score: f32,
    pub model_id: String,
}

/// One concept of one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConceptScore {
    pub concept: String,
    /// Number of reference images.
    pub n_refs: usize,
    /// Mean CLIP image-image cosine to the references (with a CLIP model).
    pub clip_i: Option<f32>,
    /// Mean DINO cosine to the references (with a DINO model).
    pub dino: Option<f32>,
}

/// All scores of one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageScores {
    pub image: PathBuf,
    /// sha256 of the image file.
    pub image_sha256: String,
    pub clip_t: Option<ClipTScore>,
    pub concepts: Vec<ConceptScore>,
    /// Min / mean of `clip_i` over the concepts.
    pub clip_i: Option<Aggregate>,
    /// Min / mean of `dino` over the concepts.
    pub dino: Option<Aggregate>,
    /// Model that produced CLIP-T and CLIP-I.
    pub clip_model: Option<String>,
    /// Model that produced DINO.
    pub dino_model: Option<String>,
}

/// The metric of a [`ScoreRow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// CLIP-T cosine.
    ClipT,
    /// CLIPScore (100 * max(CLIP-T, 0)).
    ClipScore,
    ClipI,
    Dino,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::ClipT => "clip_t",
            Metric::ClipScore => "clip_score",
            Metric::ClipI => "clip_i",
            Metric::Dino => "dino",
        }
    }
}

/// What a [`ScoreRow`] is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The whole image (CLIP-T).
    Image,
    /// One concept.
    Concept(String),
    /// Minimum over the image's concepts.
    Min,
    /// Mean over the image's concepts.
    Mean,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Image => write!(f, "image"),
            Scope::Concept(c) => write!(f, "concept:{c}"),
            Scope::Min => write!(f, "min"),
            Scope::Mean => write!(f, "mean"),
        }
    }
}

/// One score as a flat row (for tables).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreRow {
    pub metric: Metric,
    pub scope: Scope,
    pub value: f32,
    pub model_id: String,
}

impl ImageScores {
    /// Every score as a row: CLIP-T and CLIPScore (image), then per concept CLIP-I and DINO, then min and mean.
    pub fn rows(&self) -> Vec<ScoreRow> {
        let mut rows = Vec::new();
        if let Some(t) = &self.clip_t {
            for (metric, value) in [(Metric::ClipT, t.cosine), (Metric::ClipScore, t.clip_score)] {
                rows.push(ScoreRow {
                    metric,
                    scope: Scope::Image,
                    value,
                    model_id: t.model_id.clone(),
                });
            }
        }
        #[allow(clippy::type_complexity)]
        let per_metric: [(
            Metric,
            &Option<String>,
            Option<Aggregate>,
            fn(&ConceptScore) -> Option<f32>,
        ); 2] = [
            (
                Metric::ClipI,
                &self.clip_model,
                self.clip_i,
                |c: &ConceptScore| c.clip_i,
            ),
            (
                Metric::Dino,
                &self.dino_model,
                self.dino,
                |c: &ConceptScore| c.dino,
            ),
        ];
        for (metric, model, agg, get) in per_metric {
            let Some(model) = model else { continue };
            for c in &self.concepts {
                if let Some(value) = get(c) {
                    rows.push(ScoreRow {
                        metric,
                        scope: Scope::Concept(c.concept.clone()),
                        value,
                        model_id: model.clone(),
                    });
                }
            }
            if let Some(a) = agg {
                for (scope, value) in [(Scope::Min, a.min), (Scope::Mean, a.mean)] {
                    rows.push(ScoreRow {
                        metric,
                        scope,
                        value,
                        model_id: model.clone(),
                    });
                }
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_and_clip_score() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
        assert_eq!(cosine(&[1.0, 2.0], &[-1.0, -2.0]), -1.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 2.0]), 0.0);
        assert_eq!(clip_score(-0.2), 0.0);
        assert!((clip_score(0.31) - 31.0).abs() < 1e-5);
    }

    #[test]
    fn aggregates_and_rows() {
        assert_eq!(Aggregate::of(&[]), None);
        let a = Aggregate::of(&[0.5, 0.1, 0.3]).unwrap();
        assert_eq!(a.min, 0.1);
        assert!((a.mean - 0.3).abs() < 1e-7);
        let s = ImageScores {
            image: "x.png".into(),
            image_sha256: "00".into(),
            clip_t: Some(ClipTScore {
                prompt: "a cat".into(),
                cosine: 0.25,
                clip_score: 25.0,
                model_id: "clip:m@1".into(),
            }),
            concepts: vec![
                ConceptScore {
                    concept: "cat".into(),
                    n_refs: 2,
                    clip_i: Some(0.8),
                    dino: Some(0.4),
                },
                ConceptScore {
                    concept: "cup".into(),
                    n_refs: 1,
                    clip_i: Some(0.6),
                    dino: Some(0.2),
                },
            ],
            clip_i: Aggregate::of(&[0.8, 0.6]),
            dino: Aggregate::of(&[0.4, 0.2]),
            clip_model: Some("clip:m@1".into()),
            dino_model: Some("dino-v1:d@2".into()),
        };
        let rows = s.rows();
        assert_eq!(rows.len(), 2 + 4 + 4);
        assert_eq!(rows[2].scope, Scope::Concept("cat".into()));
        assert_eq!(rows[5].scope, Scope::Mean);
        assert_eq!(rows[5].metric, Metric::ClipI);
        assert_eq!(rows[9].model_id, "dino-v1:d@2");
        assert!((rows[9].value - 0.3).abs() < 1e-6);
    }
}
