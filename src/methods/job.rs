//! One image to compose: prompts, LoRAs (already attached to the model) with their concepts, sampler settings.

use super::clora::tokens::ConceptWords;
use crate::error::{Error, Result};
use crate::lora::state::AdapterId;
use crate::schedulers::SchedulerKind;

/// A LoRA of the job: the attached adapter, its weight and the concept it adds.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraRef {
    pub id: AdapterId,
    pub weight: f64,
    pub concept: ConceptWords,
}

/// Everything that determines one composed image, but the initial noise.
#[derive(Debug, Clone, PartialEq)]
pub struct CompositionJob {
    /// The prompt without trigger words ("A cat and a dog"): CLoRA's base branch.
    pub base_prompt: String,
    /// The prompt the single-pass methods use (merge, switch, composite, single). `None`: the base prompt with
    /// every LoRA's trigger words put before its class noun.
    pub combined_prompt: Option<String>,
    /// CLoRA's per-LoRA prompts; `None`: the base prompt with that LoRA's trigger words before its class noun.
    pub branch_prompts: Option<Vec<String>>,
    pub negative_prompt: String,
    /// The LoRAs to compose, in order (switch starts with the first).
    pub loras: Vec<LoraRef>,
    /// A global style LoRA active in every branch (CLoRA's `style_lora`), with its weight.
    pub style: Option<(AdapterId, f64)>,
    /// Global LoRA scale (diffusers' `cross_attention_kwargs={"scale": s}`).
    pub lora_scale: f64,
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: SchedulerKind,
    pub width: usize,
    pub height: usize,
    pub clip_skip: Option<usize>,
    /// CLoRA's token positions given by hand (the official `important_token_indices` and `mask_indices`);
    /// `None`: found from the concept words.
    pub token_indices: Option<TokenIndices>,
}

/// Hand-given CLoRA token positions (0-based, position 0 = `<|startoftext|>`), prompts ordered
/// `[base, LoRA 1's, ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIndices {
    /// `groups[g][k]`: positions of concept g's tokens in prompt k.
    pub groups: Vec<Vec<Vec<usize>>>,
    /// `masks[k]`: positions whose maps make branch k's mask (`[]` for the base branch).
    pub masks: Vec<Vec<usize>>,
}

/// Puts `triggers` before the first whole-word occurrence of `noun` in `prompt` ("a dog" -> "a sks dog").
pub fn insert_triggers(prompt: &str, noun: &str, triggers: &[String]) -> Result<String> {
    if triggers.is_empty() {
        return Ok(prompt.to_string());
    }
    let lower = prompt.to_lowercase();
    let n = noun.to_lowercase();
    let mut from = 0;
    while let Some(off) = lower[from..].find(&n) {
        let start = from + off;
        let end = start + n.len();
        let before_ok = lower[..start]
            .chars()
            .last()
            .is_none_or(|c| !c.is_alphanumeric());
        let after_ok = lower[end..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric());
        if before_ok && after_ok {
            return Ok(format!(
                "{}{} {}",
                &prompt[..start],
                triggers.join(" "),
                &prompt[start..]
            ));
        }
        from = end;
    }
    Err(Error::invalid(
        format!("prompt \"{prompt}\""),
        format!(
            "the class noun \"{noun}\" does not occur in it, so its trigger words cannot be placed"
        ),
    ))
}

impl CompositionJob {
    /// The prompt of the single-pass methods.
    pub fn combined(&self) -> Result<String> {
        if let Some(p) = &self.combined_prompt {
            return Ok(p.clone());
        }
        let mut p = self.base_prompt.clone();
        for l in &self.loras {
            p = insert_triggers(&p, &l.concept.class_noun, &l.concept.triggers)?;
        }
        Ok(p)
    }

    /// CLoRA's prompts: `[base, LoRA 1's, ..., LoRA N's]`.
    pub fn clora_prompts(&self) -> Result<Vec<String>> {
        let branches = match &self.branch_prompts {
            Some(b) => {
                if b.len() != self.loras.len() {
                    return Err(Error::invalid(
                        "branch_prompts",
                        format!("{} prompts for {} LoRAs", b.len(), self.loras.len()),
                    ));
                }
                b.clone()
            }
            None => self
                .loras
                .iter()
                .map(|l| {
                    insert_triggers(
                        &self.base_prompt,
                        &l.concept.class_noun,
                        &l.concept.triggers,
                    )
                })
                .collect::<Result<_>>()?,
        };
        let mut all = vec![self.base_prompt.clone()];
        all.extend(branches);
        Ok(all)
    }

    pub fn cfg(&self) -> bool {
        self.guidance > 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_go_before_the_whole_word() {
        let t = vec!["sks".to_string()];
        assert_eq!(
            insert_triggers("A cat and a dog", "dog", &t).unwrap(),
            "A cat and a sks dog"
        );
        assert_eq!(
            insert_triggers("A dogma and a dog", "dog", &t).unwrap(),
            "A dogma and a sks dog"
        );
        assert!(insert_triggers("A cat", "dog", &t).is_err());
    }
}
