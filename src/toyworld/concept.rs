//! The personal concepts, DreamBooth-style: three subjects (a specific look of one shape class, named by a
//! trigger word before its class noun: "a dtz circle") and one style ("an olz drawing of ...").
//!
//! Each subject owns a colour no plain scene uses and a pattern, so that the oracle can tell which concept an
//! attribute came from: an orange or dotted square carries the `dots` concept's attributes on the wrong object.

use super::palette::Colour;
use super::pattern::Pattern;
use super::shape::ShapeKind;

/// A personal concept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Concept {
    /// An orange circle with dark dots: "a dtz circle".
    Dots,
    /// A purple square with dark horizontal stripes: "a stz square".
    Stripes,
    /// A teal triangle with a dark inner ring: "a rgz triangle".
    Rings,
    /// Style: every shape drawn as a coloured outline: "an olz drawing of ...".
    Outline,
}

/// What a subject concept looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectLook {
    pub shape: ShapeKind,
    pub colour: Colour,
    pub pattern: Pattern,
}

impl Concept {
    pub const ALL: [Concept; 4] = [
        Concept::Dots,
        Concept::Stripes,
        Concept::Rings,
        Concept::Outline,
    ];
    pub const SUBJECTS: [Concept; 3] = [Concept::Dots, Concept::Stripes, Concept::Rings];

    /// The LoRA's name (`experiments/toyworld/loras.toml`).
    pub fn name(self) -> &'static str {
        match self {
            Concept::Dots => "dots",
            Concept::Stripes => "stripes",
            Concept::Rings => "rings",
            Concept::Outline => "outline",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The trigger word.
    pub fn trigger(self) -> &'static str {
        match self {
            Concept::Dots => "dtz",
            Concept::Stripes => "stz",
            Concept::Rings => "rgz",
            Concept::Outline => "olz",
        }
    }

    pub fn from_trigger(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.trigger() == word)
    }

    /// The class noun that follows the trigger word.
    pub fn class_noun(self) -> &'static str {
        match self {
            Concept::Outline => "drawing",
            other => other.look().expect("subjects have a look").shape.name(),
        }
    }

    pub fn is_style(self) -> bool {
        self == Concept::Outline
    }

    /// The subject's look; `None` for the style.
    pub fn look(self) -> Option<SubjectLook> {
        let (shape, colour, pattern) = match self {
            Concept::Dots => (ShapeKind::Circle, Colour::Orange, Pattern::Dots),
            Concept::Stripes => (ShapeKind::Square, Colour::Purple, Pattern::Stripes),
            Concept::Rings => (ShapeKind::Triangle, Colour::Teal, Pattern::Rings),
            Concept::Outline => return None,
        };
        Some(SubjectLook {
            shape,
            colour,
            pattern,
        })
    }

    /// The words a prompt uses for the concept: "dtz circle", "olz drawing".
    pub fn phrase(self) -> String {
        format!("{} {}", self.trigger(), self.class_noun())
    }
}
