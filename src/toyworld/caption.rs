//! Captions of scenes, and the parser that reads a caption or prompt of this world back into what it asks
//! for (the oracle compares images against that).
//!
//! Grammar: `[an olz drawing of ]OBJECT[, OBJECT] [and OBJECT][ on a grey background]`, where
//! `OBJECT = a COLOUR [PATTERN] SHAPE` (pattern: dotted, striped, ringed), `a SHAPE` (any colour) or `a TRIGGER CLASS` for a subject
//! concept ("a dtz circle").

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::concept::Concept;
use super::error::{ToyError, ToyResult};
use super::palette::{Background, Colour};
use super::pattern::Pattern;
use super::scene::{ObjectRequest, Scene, Style};
use super::shape::ShapeKind;

/// The phrase of one object: "a red striped square", or "a dtz circle" for a concept instance.
pub fn object_phrase(o: &ObjectRequest) -> String {
    if let Some(c) = o.concept {
        return format!("a {}", c.phrase());
    }
    match o.pattern.adjective() {
        Some(adj) => format!("a {} {} {}", o.colour.name(), adj, o.shape.name()),
        None => format!("a {} {}", o.colour.name(), o.shape.name()),
    }
}

/// Joins object phrases: "A", "A and B", "A, B and C".
pub fn join_phrases(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [a] => a.clone(),
        [init @ .., last] => format!("{} and {}", init.join(", "), last),
    }
}

/// The order in which a caption names a scene's objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CaptionOrder {
    /// From left to right (by the x of their centres): the captions of every committed model and prompt set.
    #[default]
    LeftToRight,
    /// A random order per caption (from its seed): the caption then carries no layout, an experiment on
    /// where the base model's three-object misses come from (docs/toyworld.md, "Which object is lost").
    Shuffled,
}

/// The caption of a scene. Objects are named from left to right (by the x of their centres), the order a
/// reader scans a picture in: the only layout a caption carries. (`seed` only matters to
/// [`training_caption`]'s choice of bare nouns.)
pub fn caption(scene: &Scene, seed: u64) -> String {
    training_caption(scene, seed, 0.0, CaptionOrder::LeftToRight)
}

/// A training caption: as [`caption`], but each plain-scene object is named by its class noun alone ("a
/// circle") with probability `bare_rate`, so the model also knows the nouns without their adjectives, and the
/// objects are named in `order`.
pub fn training_caption(scene: &Scene, seed: u64, bare_rate: f64, order: CaptionOrder) -> String {
    let phrases: Vec<String> = caption_phrases(scene, seed, bare_rate, order)
        .into_iter()
        .map(|(_, phrase)| phrase)
        .collect();
    let mut text = join_phrases(&phrases);
    if scene.style == Style::Outline {
        text = format!("{}{text}", style_prefix());
    }
    if scene.background == Background::Grey {
        text.push_str(GREY_SUFFIX);
    }
    text
}

/// What an outline scene's caption starts with: "an olz drawing of ".
pub fn style_prefix() -> String {
    format!("an {} of ", Concept::Outline.phrase())
}

/// What a grey-background scene's caption ends with.
pub const GREY_SUFFIX: &str = " on a grey background";

/// The object phrases of [`training_caption`], in the caption's order, each with the index of its object in
/// `scene.objects`.
pub fn caption_phrases(
    scene: &Scene,
    seed: u64,
    bare_rate: f64,
    order: CaptionOrder,
) -> Vec<(usize, String)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let objects = &scene.objects;
    let mut placed: Vec<usize> = (0..objects.len()).collect();
    placed.sort_by(|&a, &b| {
        let (a, b) = (&objects[a], &objects[b]);
        a.cx.total_cmp(&b.cx).then(a.cy.total_cmp(&b.cy))
    });
    if order == CaptionOrder::Shuffled {
        placed.shuffle(&mut rng);
    }
    placed
        .into_iter()
        .map(|k| {
            let o = &objects[k];
            let request = ObjectRequest {
                shape: o.shape,
                colour: o.colour,
                pattern: o.pattern,
                concept: o.concept,
            };
            let phrase = if o.concept.is_none() && bare_rate > 0.0 && rng.random_bool(bare_rate) {
                format!("a {}", o.shape.name())
            } else {
                object_phrase(&request)
            };
            (k, phrase)
        })
        .collect()
}

/// One object a prompt asks for; `None` leaves that attribute free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectSpec {
    pub shape: ShapeKind,
    pub colour: Option<Colour>,
    pub pattern: Option<Pattern>,
    pub concept: Option<Concept>,
}

impl From<ObjectRequest> for ObjectSpec {
    fn from(o: ObjectRequest) -> Self {
        Self {
            shape: o.shape,
            colour: Some(o.colour),
            pattern: Some(o.pattern),
            concept: o.concept,
        }
    }
}

/// What a caption or prompt asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSpec {
    pub objects: Vec<ObjectSpec>,
    pub style: Style,
    pub background: Background,
}

impl PromptSpec {
    /// The concepts the prompt names (subjects in order, then the style).
    pub fn concepts(&self) -> Vec<Concept> {
        let mut out: Vec<Concept> = self.objects.iter().filter_map(|o| o.concept).collect();
        if self.style == Style::Outline {
            out.push(Concept::Outline);
        }
        out
    }
}

/// Parses a caption or prompt of this world (case and surrounding spaces ignored).
pub fn parse(prompt: &str) -> ToyResult<PromptSpec> {
    let err = |msg: String| ToyError::Prompt {
        prompt: prompt.to_string(),
        msg,
    };
    let mut text = prompt.trim().to_lowercase();
    let mut background = Background::White;
    for bg in [Background::Grey, Background::White] {
        let suffix = format!(" on a {} background", bg.name());
        if let Some(rest) = text.strip_suffix(&suffix) {
            background = bg;
            text = rest.to_string();
            break;
        }
    }
    let mut style = Style::Solid;
    if let Some(rest) = text.strip_prefix(&style_prefix()) {
        style = Style::Outline;
        text = rest.to_string();
    }
    let normalized = text.replace(", ", " and ");
    let mut objects = Vec::new();
    for phrase in normalized.split(" and ") {
        let words: Vec<&str> = phrase.split_whitespace().collect();
        let (article, rest) = words
            .split_first()
            .ok_or_else(|| err("an empty object phrase".to_string()))?;
        if *article != "a" && *article != "an" {
            return Err(err(format!("`{phrase}`: expected `a ...`")));
        }
        let object = match rest {
            [trigger, class] if Concept::from_trigger(trigger).is_some() => {
                let c = Concept::from_trigger(trigger).expect("checked");
                if c.class_noun() != *class {
                    return Err(err(format!(
                        "`{trigger}` is a {}, not a {class}",
                        c.class_noun()
                    )));
                }
                ObjectRequest::concept(c)
                    .map(ObjectSpec::from)
                    .ok_or_else(|| err(format!("`{trigger}` is a style, not an object")))?
            }
            [shape] => ObjectSpec {
                shape: parse_shape(shape).map_err(&err)?,
                colour: None,
                pattern: None,
                concept: None,
            },
            [colour, shape] => ObjectSpec {
                shape: parse_shape(shape).map_err(&err)?,
                colour: Some(parse_colour(colour).map_err(&err)?),
                pattern: Some(Pattern::Plain),
                concept: None,
            },
            [colour, adjective, shape] => ObjectSpec {
                shape: parse_shape(shape).map_err(&err)?,
                colour: Some(parse_colour(colour).map_err(&err)?),
                pattern: Some(Pattern::from_adjective(adjective).ok_or_else(|| {
                    err(format!(
                        "unknown pattern `{adjective}` (dotted, striped, ringed)"
                    ))
                })?),
                concept: None,
            },
            _ => return Err(err(format!("cannot read the object phrase `{phrase}`"))),
        };
        objects.push(object);
    }
    if objects.is_empty() || objects.len() > 3 {
        return Err(err(format!("{} objects, expected 1 to 3", objects.len())));
    }
    Ok(PromptSpec {
        objects,
        style,
        background,
    })
}

fn parse_shape(word: &str) -> Result<ShapeKind, String> {
    ShapeKind::from_name(word)
        .ok_or_else(|| format!("unknown shape `{word}` (circle, square, triangle)"))
}

fn parse_colour(word: &str) -> Result<Colour, String> {
    Colour::from_name(word).ok_or_else(|| format!("unknown colour `{word}`"))
}
