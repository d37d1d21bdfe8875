//! Why a generated image misses its caption: each prompt object the oracle did not find is put down to the
//! unmatched object nearest to it (the one attribute drawn wrong, or several) or to nothing drawn for it;
//! an image with every prompt object found can still have extra objects, or the wrong style or background.
//! The judge tallies these over a run, to tell which part of the task a model gets wrong.

use super::caption::PromptSpec;
use super::oracle::{mismatches, Reading, Verdict};

/// How a prompt object that was not found went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Miss {
    /// An unmatched object has its shape and colour, another pattern (or marks of no pattern).
    Pattern,
    /// An unmatched object has its shape and pattern, another colour (e.g. one object drawn twice).
    Colour,
    /// An unmatched object has its colour and pattern, another shape.
    Shape,
    /// The nearest unmatched object differs in two or more attributes (or outline against filled).
    Several,
    /// No unmatched object is left for it: fewer objects were drawn.
    NotDrawn,
}

impl Miss {
    pub const ALL: [Miss; 5] = [
        Miss::Pattern,
        Miss::Colour,
        Miss::Shape,
        Miss::Several,
        Miss::NotDrawn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Miss::Pattern => "pattern",
            Miss::Colour => "colour",
            Miss::Shape => "shape",
            Miss::Several => "two or more attributes",
            Miss::NotDrawn => "not drawn",
        }
    }
}

/// What an image got wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misses {
    /// One entry per prompt object not found.
    pub objects: Vec<Miss>,
    /// Objects drawn beyond those matched to prompt objects or to a miss.
    pub extra: usize,
    /// Every prompt object found and nothing extra, yet the style or background is wrong.
    pub style_or_background: bool,
}

/// Classifies what `reading` misses of `spec`, given the oracle's `verdict` on them.
pub fn misses(spec: &PromptSpec, reading: &Reading, verdict: &Verdict) -> Misses {
    // the detections the oracle matched to found prompt objects are taken
    let mut free: Vec<bool> = vec![true; reading.objects.len()];
    for &k in verdict.matched.iter().flatten() {
        free[k] = false;
    }
    // each missed prompt object, in turn, takes the free detection with the fewest wrong attributes
    let mut objects = Vec::new();
    for e in (0..spec.objects.len()).filter(|&e| verdict.matched[e].is_none()) {
        let nearest = (0..free.len())
            .filter(|&k| free[k])
            .map(|k| (mismatches(spec, e, &reading.objects[k]), k))
            .min_by_key(|(w, _)| w.iter().filter(|x| **x).count());
        objects.push(match nearest {
            None => Miss::NotDrawn,
            Some((w, k)) => {
                free[k] = false;
                match w {
                    [false, false, true, false] => Miss::Pattern,
                    [false, true, false, false] => Miss::Colour,
                    [true, false, false, false] => Miss::Shape,
                    _ => Miss::Several,
                }
            }
        });
    }
    let extra = free.iter().filter(|f| **f).count();
    let style_or_background = objects.is_empty() && extra == 0 && !verdict.exact;
    Misses {
        objects,
        extra,
        style_or_background,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toyworld::caption::parse;
    use crate::toyworld::oracle::{judge, Detection};
    use crate::toyworld::palette::{Background, Colour};
    use crate::toyworld::pattern::Pattern;
    use crate::toyworld::shape::ShapeKind;

    fn det(shape: ShapeKind, colour: Colour, pattern: Option<Pattern>) -> Detection {
        Detection {
            shape: Some(shape),
            colour: Some(colour),
            pattern,
            outline: false,
            bbox: (0, 0, 10, 10),
            area: 100,
        }
    }

    fn check(prompt: &str, objects: Vec<Detection>) -> Misses {
        let spec = parse(prompt).unwrap();
        let reading = Reading {
            background: Background::White,
            objects,
        };
        let verdict = judge(&spec, &reading);
        misses(&spec, &reading, &verdict)
    }

    #[test]
    fn each_kind_of_miss_is_told_apart() {
        use Colour::*;
        use ShapeKind::*;
        let plain = Some(Pattern::Plain);
        // one object drawn twice in its colour, the other left without its own
        let m = check(
            "a blue square, a green square and a yellow circle",
            vec![
                det(Square, Blue, plain),
                det(Square, Blue, plain),
                det(Circle, Yellow, plain),
            ],
        );
        assert_eq!((m.objects, m.extra), (vec![Miss::Colour], 0));
        // dots drawn as marks of no pattern
        let m = check(
            "a yellow circle and a blue dotted triangle",
            vec![det(Circle, Yellow, plain), det(Triangle, Blue, None)],
        );
        assert_eq!(m.objects, vec![Miss::Pattern]);
        // a shape wrong, and one object fewer
        let m = check(
            "a red circle, a green square and a blue triangle",
            vec![det(Circle, Red, plain), det(Circle, Green, plain)],
        );
        assert_eq!(m.objects, vec![Miss::Shape, Miss::NotDrawn]);
        // everything found, and a fourth object
        let m = check(
            "a red circle and a green square",
            vec![
                det(Circle, Red, plain),
                det(Square, Green, plain),
                det(Square, Green, plain),
            ],
        );
        assert_eq!(
            (m.objects.len(), m.extra, m.style_or_background),
            (0, 1, false)
        );
        // nothing near
        let m = check("a red dotted circle", vec![det(Square, Blue, plain)]);
        assert_eq!(m.objects, vec![Miss::Several]);
        // exact
        let m = check("a red circle", vec![det(Circle, Red, plain)]);
        assert_eq!(
            m,
            Misses {
                objects: vec![],
                extra: 0,
                style_or_background: false
            }
        );
        // the wrong background only
        let m = check(
            "a red circle on a grey background",
            vec![det(Circle, Red, plain)],
        );
        assert!(m.style_or_background && m.objects.is_empty());
    }
}
