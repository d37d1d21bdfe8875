//! The CLIP-T prompt: the generation prompt with each concept's trigger word replaced by its class noun
//! (`"a photo of sks dog"` with `sks -> dog` becomes `"a photo of dog"`), so that CLIP, which has never seen the
//! trigger, scores the prompt's meaning.

/// A concept's trigger word (or phrase, e.g. `<cat-toy>`) and the class noun it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub word: String,
    pub class_noun: String,
}

impl Trigger {
    pub fn new(word: impl Into<String>, class_noun: impl Into<String>) -> Self {
        Self {
            word: word.into(),
            class_noun: class_noun.into(),
        }
    }

    /// Parses `WORD=NOUN` (the CLI form).
    pub fn parse(s: &str) -> Option<Self> {
        let (w, n) = s.split_once('=')?;
        let (w, n) = (w.trim(), n.trim());
        (!w.is_empty() && !n.is_empty()).then(|| Self::new(w, n))
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Replaces every whole-word occurrence of each trigger by its class noun. When the class noun already follows
/// the trigger (`"sks dog"`), the pair becomes the noun once (`"dog"`, not `"dog dog"`). Matching is
/// case-sensitive for the trigger and case-insensitive for the following noun; a match is "whole word" when
/// the characters around it are not letters, digits or `_` (a trigger that itself begins or ends with a
/// non-word character, like `<s1>`, needs no boundary on that side). Longer triggers are replaced first.
pub fn clip_t_prompt(prompt: &str, triggers: &[Trigger]) -> String {
    let mut order: Vec<&Trigger> = triggers.iter().filter(|t| !t.word.is_empty()).collect();
    order.sort_by_key(|t| std::cmp::Reverse(t.word.len()));
    let mut text = prompt.to_string();
    for t in order {
        text = replace_one(&text, t);
    }
    text
}

fn replace_one(text: &str, t: &Trigger) -> String {
    let word = t.word.as_str();
    let first_is_word = word.chars().next().is_some_and(is_word_char);
    let last_is_word = word.chars().next_back().is_some_and(is_word_char);
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if let Some(after) = rest.strip_prefix(word) {
            let before_ok = !first_is_word
                || text[..i]
                    .chars()
                    .next_back()
                    .is_none_or(|c| !is_word_char(c));
            let after_ok = !last_is_word || after.chars().next().is_none_or(|c| !is_word_char(c));
            if before_ok && after_ok {
                out.push_str(&t.class_noun);
                let mut consumed = word.len();
                // "sks dog" -> "dog": swallow whitespace + the class noun right after the trigger
                let ws = after.len() - after.trim_start().len();
                let next = &after[ws..];
                if ws > 0
                    && next.len() >= t.class_noun.len()
                    && next.is_char_boundary(t.class_noun.len())
                    && next[..t.class_noun.len()].eq_ignore_ascii_case(&t.class_noun)
                    && next[t.class_noun.len()..]
                        .chars()
                        .next()
                        .is_none_or(|c| !is_word_char(c))
                {
                    consumed += ws + t.class_noun.len();
                }
                i += consumed;
                continue;
            }
        }
        let c = rest.chars().next().expect("non-empty rest");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_triggers_by_class_nouns() {
        let t = [Trigger::new("sks", "cat"), Trigger::new("zwx", "cup")];
        assert_eq!(
            clip_t_prompt("a sks cat next to a zwx cup", &t),
            "a cat next to a cup"
        );
        assert_eq!(
            clip_t_prompt("a sks next to a zwx", &t),
            "a cat next to a cup"
        );
        assert_eq!(clip_t_prompt("a photo of sks Cat.", &t), "a photo of cat.");
        // whole words only
        assert_eq!(clip_t_prompt("asks sks_x sks", &t), "asks sks_x cat");
        // the noun after the trigger must be the whole noun
        assert_eq!(clip_t_prompt("sks caterpillar", &t), "cat caterpillar");
    }

    #[test]
    fn punctuation_triggers_and_longest_first() {
        let t = [
            Trigger::new("<cat-toy>", "toy"),
            Trigger::new("<cat>", "cat"),
        ];
        assert_eq!(
            clip_t_prompt("a <cat-toy> and a<cat>", &t),
            "a toy and acat"
        );
        let t = [Trigger::new("sks", "dog"), Trigger::new("sks2", "cat")];
        assert_eq!(clip_t_prompt("sks2 and sks", &t), "cat and dog");
    }

    #[test]
    fn parse_cli_form() {
        assert_eq!(Trigger::parse("sks=dog"), Some(Trigger::new("sks", "dog")));
        assert_eq!(
            Trigger::parse(" <s1> = teddy bear "),
            Some(Trigger::new("<s1>", "teddy bear"))
        );
        assert_eq!(Trigger::parse("sks"), None);
        assert_eq!(Trigger::parse("=dog"), None);
    }
}
