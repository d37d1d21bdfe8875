//! Choosing a LoRA training's checkpoint with the oracle (early stopping on held-out seeds).
//!
//! A concept LoRA's quality on a base model is what the oracle reads from the images it draws alone ("a dtz
//! circle": an orange dotted circle), not its training loss, and it need not be best at the last step: the
//! `dots` LoRA at lr 5e-3 on one hour-trained model shows its concept in 30-32 of 32 seeds from step 500 to
//! 1750 and in 19-22 at four of the five checkpoints after. So a training can save its adapters every few
//! steps and keep the checkpoint whose images match their prompt most often on seeds apart from the reported
//! ones ([`SELECT_FIRST_SEED`]); docs/toyworld.md, "Choosing a LoRA's checkpoint with the oracle".

use std::ops::Range;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use super::concept::Concept;
use super::error::{ToyError, ToyResult};
use super::oracle::judge_prompt;
use super::sample::JudgeSampler;
use crate::lora::file::LoraFile;
use crate::lora::resolve::Unmatched;
use crate::models::sd::{LoadOptions, StableDiffusion};

/// The first seed the selection samples: the figures judge a concept's LoRA on seeds 0..32, so a checkpoint
/// chosen on seeds from here on is not chosen on the images it is reported by.
pub const SELECT_FIRST_SEED: u64 = 1000;

/// The prompts a concept's LoRA is judged by alone (docs/toyworld.md, step 4): its subject
/// ("a dtz circle"), or for the style one and two plain objects in it.
pub fn concept_prompts(concept: Concept) -> Vec<String> {
    if concept.is_style() {
        vec![
            format!("an {} of a red circle", concept.phrase()),
            format!(
                "an {} of a blue square and a green triangle",
                concept.phrase()
            ),
        ]
    } else {
        vec![format!("a {}", concept.phrase())]
    }
}

/// One checkpoint of a training: its step and file.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub step: usize,
    pub path: PathBuf,
}

/// What the oracle read from a checkpoint's images.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointScore {
    pub checkpoint: Checkpoint,
    /// Images that match their prompt exactly (shape, colour, pattern and style).
    pub matched: usize,
    pub images: usize,
}

/// How the selection samples: `sampler` (the judge's) on `seeds` of each of `prompts`.
#[derive(Debug, Clone)]
pub struct SelectConfig {
    pub prompts: Vec<String>,
    pub seeds: Range<u64>,
    pub sampler: JudgeSampler,
}

impl SelectConfig {
    /// The concept's prompts on `seeds` held-out seeds from [`SELECT_FIRST_SEED`].
    pub fn for_concept(concept: Concept, seeds: u64) -> Self {
        Self {
            prompts: concept_prompts(concept),
            seeds: SELECT_FIRST_SEED..SELECT_FIRST_SEED + seeds,
            sampler: JudgeSampler::default(),
        }
    }
}

/// Samples `sd` with the LoRA file `lora` attached at weight 1 in place of any adapter it had and counts the
/// images the oracle finds to match their prompt.
pub fn score_lora<B: Backend>(
    sd: &mut StableDiffusion<B>,
    lora: &Path,
    cfg: &SelectConfig,
) -> ToyResult<(usize, usize)> {
    sd.remove_loras();
    sd.add_lora("checkpoint", &LoraFile::open(lora)?, 1.0, Unmatched::Error)?;
    let (mut matched, mut images) = (0, 0);
    for prompt in &cfg.prompts {
        for seed in cfg.seeds.clone() {
            let image = cfg.sampler.draw(sd, prompt, seed)?;
            matched += judge_prompt(&image, prompt)?.exact as usize;
            images += 1;
        }
    }
    Ok((matched, images))
}

/// Scores each checkpoint ([`score_lora`], on the model in `model_dir` loaded once) and writes the best
/// ([`best`]) to `out` ([`keep_best`]). Returns every score, in the order of `checkpoints`.
pub fn select_checkpoint<B: Backend>(
    model_dir: &Path,
    checkpoints: &[Checkpoint],
    cfg: &SelectConfig,
    out: &Path,
    device: &B::Device,
    log: &mut dyn FnMut(&str),
) -> ToyResult<Vec<CheckpointScore>> {
    let mut sd = StableDiffusion::<B>::load(model_dir, &LoadOptions::default(), device)?;
    let mut scores = Vec::with_capacity(checkpoints.len());
    for c in checkpoints {
        let (matched, images) = score_lora(&mut sd, &c.path, cfg)?;
        log(&format!(
            "step {}: {matched}/{images} images match their prompt",
            c.step
        ));
        scores.push(CheckpointScore {
            checkpoint: c.clone(),
            matched,
            images,
        });
    }
    keep_best(&scores, out)?;
    Ok(scores)
}

/// Writes the [`best`] of `scores` to `out` (through a temporary file), unless it is `out` already.
pub fn keep_best(scores: &[CheckpointScore], out: &Path) -> ToyResult<()> {
    if let Some(b) = best(scores) {
        if b.checkpoint.path != out {
            let bytes = std::fs::read(&b.checkpoint.path)
                .map_err(|e| ToyError::io(&b.checkpoint.path, e))?;
            crate::latent_io::write_atomic(out, &bytes)?;
        }
    }
    Ok(())
}

/// The checkpoint to keep: the most matched images; of equals, the latest step (the fuller schedule).
pub fn best(scores: &[CheckpointScore]) -> Option<&CheckpointScore> {
    scores.iter().max_by_key(|s| (s.matched, s.checkpoint.step))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toyworld::caption::parse;

    fn score(step: usize, matched: usize) -> CheckpointScore {
        CheckpointScore {
            checkpoint: Checkpoint {
                step,
                path: PathBuf::from(format!("lora_dots.step{step}.safetensors")),
            },
            matched,
            images: 16,
        }
    }

    #[test]
    fn best_takes_the_most_matches_then_the_latest_step() {
        let scores = [
            score(500, 9),
            score(1000, 14),
            score(1500, 14),
            score(2000, 3),
        ];
        assert_eq!(best(&scores).unwrap().checkpoint.step, 1500);
        let scores = [score(500, 15), score(1000, 14), score(3000, 2)];
        assert_eq!(best(&scores).unwrap().checkpoint.step, 500);
        assert!(best(&[]).is_none());
    }

    #[test]
    fn the_best_checkpoint_replaces_the_output_file() {
        let dir = std::env::temp_dir().join(format!("clora-keep-best-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("dots.safetensors");
        let mut scores = vec![score(1, 12), score(2, 9)];
        scores[0].checkpoint.path = dir.join("lora_dots.step1.safetensors");
        scores[1].checkpoint.path = out.clone();
        std::fs::write(&scores[0].checkpoint.path, b"step 1").unwrap();
        std::fs::write(&out, b"step 2").unwrap();
        keep_best(&scores, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"step 1");
        // the last step best: the output stays as it is
        std::fs::write(&out, b"step 2").unwrap();
        scores[1].matched = 12;
        keep_best(&scores, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"step 2");
        // a checkpoint gone: an error that names it
        scores[1].matched = 0;
        std::fs::remove_file(&scores[0].checkpoint.path).unwrap();
        let err = keep_best(&scores, &out).unwrap_err().to_string();
        assert!(err.contains("lora_dots.step1.safetensors"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn every_concept_prompt_parses_and_names_the_concept() {
        for c in Concept::ALL {
            let prompts = concept_prompts(c);
            assert!(!prompts.is_empty());
            for p in &prompts {
                parse(p).unwrap_or_else(|e| panic!("{p}: {e}"));
                assert!(p.contains(&c.phrase()), "{p}");
            }
        }
        assert_eq!(concept_prompts(Concept::Dots), ["a dtz circle"]);
    }

    #[test]
    fn selection_seeds_are_apart_from_the_reported_ones() {
        let cfg = SelectConfig::for_concept(Concept::Rings, 16);
        assert_eq!(cfg.seeds, 1000..1016);
        assert!(cfg.seeds.start >= 32);
    }
}
