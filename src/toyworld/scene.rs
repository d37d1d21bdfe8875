//! Scenes: a background, a drawing style and one to three non-overlapping objects, sampled deterministically
//! from a seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::concept::Concept;
use super::error::{ToyError, ToyResult};
use super::palette::{Background, Colour};
use super::pattern::Pattern;
use super::shape::ShapeKind;

/// Image side in pixels.
pub const CANVAS: usize = 64;

/// Pixels kept free between an object's bounding box and the canvas edge.
pub const EDGE_MARGIN: f32 = 2.0;

/// Pixels kept free between two objects' bounding boxes.
pub const GAP: f32 = 3.0;

/// How objects are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Style {
    /// Filled shapes.
    Solid,
    /// Coloured outlines only (the `outline` style concept).
    Outline,
}

/// One object of a scene.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Object {
    pub shape: ShapeKind,
    pub colour: Colour,
    pub pattern: Pattern,
    /// Centre in pixels (x right, y down).
    pub cx: f32,
    pub cy: f32,
    /// Size: the radius of a circle, half the base of a triangle.
    pub r: f32,
    /// The subject concept this object is an instance of (its caption says "a dtz circle").
    pub concept: Option<Concept>,
}

impl Object {
    /// The axis-aligned bounding box `(x0, y0, x1, y1)`.
    pub fn bbox(&self) -> (f32, f32, f32, f32) {
        let (hx, hy) = self.shape.half_extent(self.r);
        (self.cx - hx, self.cy - hy, self.cx + hx, self.cy + hy)
    }
}

/// A scene.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub background: Background,
    pub style: Style,
    pub objects: Vec<Object>,
    /// Seed of the background's light texture.
    pub texture_seed: u64,
}

/// What to put in a scene: each object's kind, colour, pattern and concept; the sampler chooses sizes and
/// positions.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneRequest {
    pub background: Background,
    pub style: Style,
    pub objects: Vec<ObjectRequest>,
}

/// One requested object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectRequest {
    pub shape: ShapeKind,
    pub colour: Colour,
    pub pattern: Pattern,
    pub concept: Option<Concept>,
}

impl ObjectRequest {
    /// An instance of a subject concept.
    pub fn concept(c: Concept) -> Option<Self> {
        c.look().map(|l| Self {
            shape: l.shape,
            colour: l.colour,
            pattern: l.pattern,
            concept: Some(c),
        })
    }
}

/// Size range `[min, max)` of objects in a scene of `n` objects.
pub fn size_range(n: usize) -> (f32, f32) {
    match n {
        1 => (10.0, 17.0),
        2 => (9.0, 14.0),
        _ => (8.5, 11.5),
    }
}

/// [`place`] for solid (not outline) objects on `background`.
pub fn place_solid(
    background: Background,
    objects: Vec<ObjectRequest>,
    rng: &mut ChaCha8Rng,
) -> ToyResult<Scene> {
    place(
        &SceneRequest {
            background,
            style: Style::Solid,
            objects,
        },
        rng,
    )
}

/// Places the requested objects at random sizes and positions without overlap.
pub fn place(request: &SceneRequest, rng: &mut ChaCha8Rng) -> ToyResult<Scene> {
    let n = request.objects.len();
    if n == 0 || n > 3 {
        return Err(ToyError::Scene(format!(
            "{n} objects requested, expected 1 to 3"
        )));
    }
    let (lo, hi) = size_range(n);
    'attempt: for _ in 0..500 {
        let mut placed: Vec<Object> = Vec::with_capacity(n);
        for o in &request.objects {
            let r = rng.random_range(lo..hi) * o.shape.size_boost();
            let (hx, hy) = o.shape.half_extent(r);
            let (min_x, max_x) = (hx + EDGE_MARGIN, CANVAS as f32 - hx - EDGE_MARGIN);
            let (min_y, max_y) = (hy + EDGE_MARGIN, CANVAS as f32 - hy - EDGE_MARGIN);
            let mut ok = false;
            for _ in 0..60 {
                let cx = rng.random_range(min_x..max_x);
                let cy = rng.random_range(min_y..max_y);
                let cand = Object {
                    shape: o.shape,
                    colour: o.colour,
                    pattern: o.pattern,
                    cx,
                    cy,
                    r,
                    concept: o.concept,
                };
                if placed.iter().all(|p| apart(p, &cand)) {
                    placed.push(cand);
                    ok = true;
                    break;
                }
            }
            if !ok {
                continue 'attempt;
            }
        }
        return Ok(Scene {
            background: request.background,
            style: request.style,
            objects: placed,
            texture_seed: rng.random(),
        });
    }
    Err(ToyError::Scene(format!(
        "could not place {n} objects without overlap"
    )))
}

fn apart(a: &Object, b: &Object) -> bool {
    let (ax0, ay0, ax1, ay1) = a.bbox();
    let (bx0, by0, bx1, by1) = b.bbox();
    ax1 + GAP <= bx0 || bx1 + GAP <= ax0 || ay1 + GAP <= by0 || by1 + GAP <= ay0
}

/// The distribution of plain scenes (the base model's training data).
#[derive(Debug, Clone, PartialEq)]
pub struct PlainWorld {
    /// Probabilities of 1, 2 and 3 objects.
    pub object_counts: [f64; 3],
    /// Probability that an object carries a pattern (dotted, striped or ringed).
    pub pattern_rate: f64,
    /// Probability of the grey background.
    pub grey_rate: f64,
}

impl Default for PlainWorld {
    fn default() -> Self {
        Self {
            object_counts: [0.35, 0.4, 0.25],
            pattern_rate: 0.25,
            grey_rate: 0.2,
        }
    }
}

impl PlainWorld {
    /// A random plain scene request: base colours, distinct (colour, shape) pairs.
    pub fn request(&self, rng: &mut ChaCha8Rng) -> SceneRequest {
        let u: f64 = rng.random();
        let n = if u < self.object_counts[0] {
            1
        } else if u < self.object_counts[0] + self.object_counts[1] {
            2
        } else {
            3
        };
        let mut objects: Vec<ObjectRequest> = Vec::with_capacity(n);
        while objects.len() < n {
            let shape = ShapeKind::ALL[rng.random_range(0..ShapeKind::ALL.len())];
            let colour = Colour::BASE[rng.random_range(0..Colour::BASE.len())];
            if objects
                .iter()
                .any(|o| o.shape == shape && o.colour == colour)
            {
                continue;
            }
            let pattern = if rng.random_bool(self.pattern_rate) {
                Pattern::ALL[rng.random_range(1..Pattern::ALL.len())]
            } else {
                Pattern::Plain
            };
            objects.push(ObjectRequest {
                shape,
                colour,
                pattern,
                concept: None,
            });
        }
        let background = if rng.random_bool(self.grey_rate) {
            Background::Grey
        } else {
            Background::White
        };
        SceneRequest {
            background,
            style: Style::Solid,
            objects,
        }
    }

    /// The plain scene of `seed`.
    pub fn sample(&self, seed: u64) -> ToyResult<Scene> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let request = self.request(&mut rng);
        place(&request, &mut rng)
    }
}

/// The training scenes of a concept's LoRA: the subject alone (DreamBooth's "a [V] [class]"), or for the style,
/// a plain scene drawn in outline.
pub fn concept_scene(concept: Concept, seed: u64) -> ToyResult<Scene> {
    concept_scene_among(concept, seed, 0)
}

/// The most plain objects beside a subject concept in a training scene (the world holds three objects at most).
pub const MAX_COMPANIONS: usize = 2;

/// [`concept_scene`] with up to `companions` (at most 2) plain, unpatterned objects beside a subject concept (0 to
/// `companions`, uniformly; the concept at a random place in the object list). With 0 it is the subject alone, the
/// same scene as [`concept_scene`]; the style concept ignores `companions`.
pub fn concept_scene_among(concept: Concept, seed: u64, companions: usize) -> ToyResult<Scene> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c0de_0000_0000 ^ (concept as u64) << 48);
    let background = if rng.random_bool(0.2) {
        Background::Grey
    } else {
        Background::White
    };
    match ObjectRequest::concept(concept) {
        Some(o) => {
            // The world holds at most three objects: up to two beside the concept.
            // (No draw without companions: the subject-alone scenes stay those the shipped LoRAs saw.)
            let k = if companions > 0 {
                rng.random_range(0..=companions.min(MAX_COMPANIONS))
            } else {
                0
            };
            let objects = if k == 0 {
                vec![o]
            } else {
                let mut object_counts = [0.0; 3];
                object_counts[k - 1] = 1.0;
                let mut others = PlainWorld {
                    object_counts,
                    pattern_rate: 0.0,
                    ..PlainWorld::default()
                }
                .request(&mut rng)
                .objects;
                // Not the concept's own shape in its colour (the oracle would read two of it).
                others.retain(|x| !(x.shape == o.shape && x.colour == o.colour));
                let at = rng.random_range(0..=others.len());
                others.insert(at, o);
                others
            };
            place_solid(background, objects, &mut rng)
        }
        None => {
            let mut request = PlainWorld {
                pattern_rate: 0.0,
                ..PlainWorld::default()
            }
            .request(&mut rng);
            request.style = Style::Outline;
            request.background = background;
            place(&request, &mut rng)
        }
    }
}
