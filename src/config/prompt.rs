//! Prompt templates: `"a {cat} and a {dog} on the grass"`, where `{name}` stands for the concept of the
//! LoRA `name`. A concept renders as its trigger word(s) and class noun where that LoRA is active
//! (`"sks cat"`), and as the class noun alone elsewhere (`"cat"`). `{{` and `}}` are literal braces.

use serde::{Deserialize, Serialize};

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Concept(String),
}

/// A parsed prompt template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub pieces: Vec<Piece>,
}

/// How a concept is named in prompts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConceptNames {
    pub triggers: Vec<String>,
    pub class_noun: String,
}

impl ConceptNames {
    /// `"sks cat"` (active) or `"cat"`.
    pub fn render(&self, active: bool) -> String {
        if active && !self.triggers.is_empty() {
            format!("{} {}", self.triggers.join(" "), self.class_noun)
        } else {
            self.class_noun.clone()
        }
    }
}

/// Whether `name` may name a LoRA (and so appear in a template).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Template {
    /// Parses a template; the error says what is wrong and where (character offset).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = s.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, n)| n) == Some('{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().map(|&(_, n)| n) == Some('}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, n) in chars.by_ref() {
                        if n == '}' {
                            closed = true;
                            break;
                        }
                        name.push(n);
                    }
                    if !closed {
                        return Err(format!(
                            "unclosed `{{` at character {i}: write `{{lora_name}}` for a concept, `{{{{` for a literal brace"
                        ));
                    }
                    let name = name.trim().to_string();
                    if !valid_name(&name) {
                        return Err(format!(
                            "`{{{name}}}` at character {i} is not a LoRA name (letters, digits, `_` and `-`)"
                        ));
                    }
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Concept(name));
                }
                '}' => {
                    return Err(format!(
                        "unmatched `}}` at character {i}: write `}}}}` for a literal brace"
                    ))
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Self { pieces })
    }

    /// The LoRA names the template refers to, each once, in order of first appearance.
    pub fn concepts(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.pieces {
            if let Piece::Concept(n) = p {
                if !out.contains(n) {
                    out.push(n.clone());
                }
            }
        }
        out
    }

    /// Renders the template; `names(lora)` gives the concept's words, `active(lora)` whether its LoRA is
    /// active (trigger words shown).
    pub fn render<'a>(
        &self,
        names: impl Fn(&str) -> Option<&'a ConceptNames>,
        active: impl Fn(&str) -> bool,
    ) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Concept(n) => match names(n) {
                    Some(c) => out.push_str(&c.render(active(n))),
                    None => out.push_str(n),
                },
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_render() {
        let t = Template::parse("a {cat} and a {dog} {{x}} near {cat}").unwrap();
        assert_eq!(t.concepts(), vec!["cat", "dog"]);
        let cat = ConceptNames {
            triggers: vec!["sks".into()],
            class_noun: "cat".into(),
        };
        let dog = ConceptNames {
            triggers: vec!["zwx".into(), "qq".into()],
            class_noun: "dog".into(),
        };
        let names = |n: &str| match n {
            "cat" => Some(&cat),
            "dog" => Some(&dog),
            _ => None,
        };
        assert_eq!(t.render(names, |_| false), "a cat and a dog {x} near cat");
        assert_eq!(
            t.render(names, |n| n == "dog"),
            "a cat and a zwx qq dog {x} near cat"
        );
        assert_eq!(
            t.render(names, |_| true),
            "a sks cat and a zwx qq dog {x} near sks cat"
        );
    }

    #[test]
    fn errors() {
        assert!(Template::parse("a {cat").unwrap_err().contains("unclosed"));
        assert!(Template::parse("a cat}").unwrap_err().contains("unmatched"));
        assert!(Template::parse("a {c t}")
            .unwrap_err()
            .contains("not a LoRA name"));
        assert!(Template::parse("a {}")
            .unwrap_err()
            .contains("not a LoRA name"));
    }
}
