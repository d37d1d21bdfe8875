//! Concept groups and mask tokens from words: the harness tokenizes each branch prompt and finds the
//! token positions of trigger words and class nouns itself (multi-piece words included), so users do not
//! count BPE pieces by hand (the official code's issue #2).

use crate::error::{Error, Result};
use crate::models::clip::tokenizer::ClipTokenizer;

/// Which words of a LoRA's concept make its branch's mask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskWords {
    /// The official rule: the trigger word(s), every BPE piece, and the class noun in the branch's prompt.
    #[default]
    TriggerAndNoun,
    /// Not in the official code: the class noun alone (a trigger word the base model never learnt can
    /// attend almost evenly over the image; docs/toyworld.md, "Why CLoRA fails on the committed model").
    ClassNoun,
    /// Not in the official code: the token right after each occurrence of the class noun (after its last
    /// BPE piece; a comma, "and" or the end-of-text token). A causal text encoder's token there has read the
    /// whole noun phrase; on the toyworld model its attention finds the noun's object where the noun's own
    /// does not (docs/toyworld.md, "Three concepts: masks from a layout pass").
    AfterNoun,
}

/// The position right after each run of consecutive positions (a word's BPE pieces), in order.
pub fn following(positions: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = positions
        .iter()
        .filter(|&&p| !positions.contains(&(p + 1)))
        .map(|p| p + 1)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// One concept (one LoRA): the words that name it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConceptWords {
    /// The LoRA's trigger word(s), e.g. `["sks"]`; present only in that LoRA's own prompt.
    pub triggers: Vec<String>,
    /// The class noun, e.g. `"cat"`; present in every prompt.
    pub class_noun: String,
}

/// Token positions (0-based, position 0 = `<|startoftext|>`) of every occurrence of `word` in `prompt`.
/// A word of several BPE pieces yields all its pieces' positions.
pub fn word_positions(tokenizer: &ClipTokenizer, prompt: &str, word: &str) -> Vec<usize> {
    let hay = tokenizer.tokens(prompt);
    let needle = tokenizer.tokens(word);
    let max = tokenizer.max_length().saturating_sub(1);
    let mut out = Vec::new();
    if needle.is_empty() || needle.len() > hay.len() {
        return out;
    }
    for start in 0..=(hay.len() - needle.len()) {
        if hay[start..start + needle.len()] == needle[..] {
            // +1 for <|startoftext|>; positions past truncation are dropped
            out.extend((start + 1..start + 1 + needle.len()).filter(|&p| p < max));
        }
    }
    out
}

/// `important_token_indices[g][k]` (positions of concept g's tokens in prompt k).
pub type TokenGroups = Vec<Vec<Vec<usize>>>;

/// The official `important_token_indices[g][k]` and `mask_indices[k]` for prompts
/// `[base, branch of LoRA 1, ..., branch of LoRA N]` and one concept per LoRA.
///
/// Group g holds concept g's class noun in every prompt, plus its trigger words in LoRA g's own prompt.
/// Branch k's mask tokens are LoRA k's trigger words and class noun in prompt k (`MaskWords::ClassNoun`:
/// the class noun alone); the base has none. Errors name the prompt and the word that is missing.
pub fn concept_groups(
    tokenizer: &ClipTokenizer,
    prompts: &[String],
    concepts: &[ConceptWords],
    mask_words: MaskWords,
) -> Result<(TokenGroups, Vec<Vec<usize>>)> {
    if concepts.len() < 2 {
        return Err(Error::invalid(
            "clora concepts",
            format!(
                "{} concept(s) given; the contrastive loss needs at least 2 groups",
                concepts.len()
            ),
        ));
    }
    if prompts.len() != concepts.len() + 1 {
        return Err(Error::invalid(
            "clora prompts",
            format!(
                "{} prompts for {} LoRAs: expected the base prompt then one per LoRA",
                prompts.len(),
                concepts.len()
            ),
        ));
    }
    let find = |k: usize, word: &str| -> Result<Vec<usize>> {
        let pos = word_positions(tokenizer, &prompts[k], word);
        if pos.is_empty() {
            Err(Error::invalid(
                format!("clora prompt {k} (\"{}\")", prompts[k]),
                format!(
                    "the concept word \"{word}\" does not occur in it (within the first 75 tokens)"
                ),
            ))
        } else {
            Ok(pos)
        }
    };
    let mut groups = Vec::new();
    for (g, c) in concepts.iter().enumerate() {
        let mut per_prompt = Vec::new();
        for k in 0..prompts.len() {
            let mut pos = find(k, &c.class_noun)?;
            if k == g + 1 {
                for t in &c.triggers {
                    pos.extend(find(k, t)?);
                }
            }
            pos.sort_unstable();
            pos.dedup();
            per_prompt.push(pos);
        }
        groups.push(per_prompt);
    }
    let mut masks = vec![Vec::new()];
    for (g, c) in concepts.iter().enumerate() {
        let k = g + 1;
        let mut pos = Vec::new();
        if mask_words == MaskWords::TriggerAndNoun {
            for t in &c.triggers {
                pos.extend(find(k, t)?);
            }
        }
        let noun = find(k, &c.class_noun)?;
        if mask_words == MaskWords::AfterNoun {
            pos.extend(following(&noun));
        } else {
            pos.extend(noun);
        }
        pos.sort_unstable();
        pos.dedup();
        masks.push(pos);
    }
    Ok((groups, masks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notebook_example_indices() {
        let tok = ClipTokenizer::embedded().unwrap();
        let prompts = vec![
            "A cat and a dog".to_string(),
            "A sks dog and a cat".to_string(),
            "A sks cat and a dog".to_string(),
        ];
        // LoRA 1 = dog, LoRA 2 = cat (the notebook's lora_list order)
        let concepts = vec![
            ConceptWords {
                triggers: vec!["sks".into()],
                class_noun: "dog".into(),
            },
            ConceptWords {
                triggers: vec!["sks".into()],
                class_noun: "cat".into(),
            },
        ];
        let (groups, masks) =
            concept_groups(&tok, &prompts, &concepts, MaskWords::TriggerAndNoun).unwrap();
        // dog group: base "dog"=5; dog prompt "sks dog"=[2,3]; cat prompt "dog"=6
        assert_eq!(groups[0], vec![vec![5], vec![2, 3], vec![6]]);
        // cat group: base "cat"=2; dog prompt "cat"=6; cat prompt "sks cat"=[2,3]
        assert_eq!(groups[1], vec![vec![2], vec![6], vec![2, 3]]);
        assert_eq!(masks, vec![vec![], vec![2, 3], vec![2, 3]]);
        // the class noun alone: the same groups (the loss), masks without the trigger word
        let (nouns_groups, nouns_masks) =
            concept_groups(&tok, &prompts, &concepts, MaskWords::ClassNoun).unwrap();
        assert_eq!(nouns_groups, groups);
        assert_eq!(nouns_masks, vec![vec![], vec![3], vec![3]]);
        // the token after the class noun: "and" after "sks dog" (4) and after "sks cat" (4)
        let (after_groups, after_masks) =
            concept_groups(&tok, &prompts, &concepts, MaskWords::AfterNoun).unwrap();
        assert_eq!(after_groups, groups);
        assert_eq!(after_masks, vec![vec![], vec![4], vec![4]]);
    }

    #[test]
    fn following_is_after_each_run_of_pieces() {
        assert_eq!(following(&[2, 3, 4]), vec![5]);
        assert_eq!(following(&[2, 7, 8]), vec![3, 9]);
        assert!(following(&[]).is_empty());
    }

    #[test]
    fn missing_word_names_prompt_and_word() {
        let tok = ClipTokenizer::embedded().unwrap();
        let prompts = vec![
            "a cat".to_string(),
            "a sks cat".to_string(),
            "a cat".to_string(),
        ];
        let concepts = vec![
            ConceptWords {
                triggers: vec!["sks".into()],
                class_noun: "cat".into(),
            },
            ConceptWords {
                triggers: vec!["zwx".into()],
                class_noun: "dog".into(),
            },
        ];
        let e = concept_groups(&tok, &prompts, &concepts, MaskWords::ClassNoun)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"dog\"") && e.contains("prompt 0"), "{e}");
    }

    #[test]
    fn multi_piece_words_give_all_positions() {
        let tok = ClipTokenizer::embedded().unwrap();
        let word = "zzxqvk";
        let pieces = tok.tokens(word).len();
        assert!(pieces > 1);
        let pos = word_positions(&tok, &format!("a {word} cat"), word);
        assert_eq!(pos, (2..2 + pieces).collect::<Vec<_>>());
    }
}
