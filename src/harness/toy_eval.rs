//! The toyworld's exact oracle ([`crate::toyworld::oracle`]) as an [`Evaluator`]. Every image is judged against
//! its prompt with *every* concept's trigger words (so `base` and `single` images are held to the same prompt as
//! the composition methods): per concept whether it is present (`toy_present`, concept rows; the whole-image row
//! is the fraction present), whether all are (`toy_all_present`), whether an attribute landed on the wrong object
//! (`toy_mixing`), and whether the image is exactly the prompt (`toy_exact`); and a partial presence: whether
//! each subject concept's own colour is on some object (`toy_colour`, concept rows and the fraction;
//! `toy_all_colours`). Values are 0 or 1 per image, so their means are rates.

use std::collections::BTreeMap;

use super::error::{HarnessError, HarnessResult};
use super::eval::{EvalItem, Evaluator, Score};
use crate::config::{ConceptNames, LoraSpec, Template};
use crate::toyworld::concept::Concept;
use crate::toyworld::oracle::judge_prompt;

/// The metric names this evaluator computes.
pub const METRICS: &[&str] = &[
    "toy_present",
    "toy_all_present",
    "toy_mixing",
    "toy_exact",
    "toy_colour",
    "toy_all_colours",
];

/// Model id recorded with the scores (the oracle is procedural: its version).
const ORACLE: &str = "toyworld-oracle-v2";

/// Judges toyworld images.
pub struct ToyOracleEvaluator {
    wanted: Vec<String>,
    /// The words of every LoRA of the experiment, by name.
    names: BTreeMap<String, ConceptNames>,
}

impl ToyOracleEvaluator {
    pub fn new(wanted: Vec<String>, loras: &[LoraSpec]) -> Self {
        let names = loras
            .iter()
            .filter_map(|l| l.concept().map(|c| (l.name.clone(), c)))
            .collect();
        Self { wanted, names }
    }

    fn wants(&self, m: &str) -> bool {
        self.wanted.iter().any(|w| w == m)
    }

    /// The prompt with every concept's trigger words.
    fn full_prompt(&self, template: &str) -> HarnessResult<String> {
        let t = Template::parse(template)
            .map_err(|e| HarnessError::Fatal(format!("prompt template {template:?}: {e}")))?;
        Ok(t.render(|n| self.names.get(n), |_| true))
    }
}

impl Evaluator for ToyOracleEvaluator {
    fn id(&self) -> String {
        format!("{ORACLE}-{}", self.wanted.join("+"))
    }

    fn score(&mut self, items: &[EvalItem<'_>]) -> HarnessResult<Vec<Vec<Score>>> {
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            let prompt = self.full_prompt(&it.job.prompt.template)?;
            let image = image::open(&it.image)
                .map_err(|e| HarnessError::Fatal(format!("{}: {e}", it.image.display())))?
                .to_rgb8();
            let v = judge_prompt(&image, &prompt).map_err(|e| {
                HarnessError::Fatal(format!(
                    "toyworld oracle on {} ({prompt:?}): {e}",
                    it.image.display()
                ))
            })?;
            let score = |metric: &str, concept: Option<String>, x: bool| Score {
                metric: metric.to_string(),
                concept,
                value: if x { 1.0 } else { 0.0 },
                model: ORACLE.to_string(),
            };
            let mut s = Vec::new();
            if self.wants("toy_present") {
                s.extend(per_concept("toy_present", &v.concepts));
            }
            if self.wants("toy_all_present") {
                s.push(score("toy_all_present", None, v.all_concepts_present()));
            }
            if self.wants("toy_mixing") {
                s.push(score("toy_mixing", None, v.mixing()));
            }
            if self.wants("toy_exact") {
                s.push(score("toy_exact", None, v.exact));
            }
            if self.wants("toy_colour") {
                s.extend(per_concept("toy_colour", &v.concept_colours));
            }
            if self.wants("toy_all_colours") {
                s.push(score("toy_all_colours", None, v.all_concept_colours()));
            }
            out.push(s);
        }
        Ok(out)
    }
}

/// A 0/1 score per concept, and the whole-image row: the fraction of the concepts that hold.
fn per_concept(metric: &str, flags: &[(Concept, bool)]) -> Vec<Score> {
    let row = |concept: Option<String>, value: f64| Score {
        metric: metric.to_string(),
        concept,
        value,
        model: ORACLE.to_string(),
    };
    let mut out: Vec<Score> = flags
        .iter()
        .map(|(c, p)| row(Some(c.name().to_string()), if *p { 1.0 } else { 0.0 }))
        .collect();
    let n = flags.len().max(1) as f64;
    out.push(row(
        None,
        flags.iter().filter(|(_, p)| *p).count() as f64 / n,
    ));
    out
}
