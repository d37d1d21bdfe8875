//! Held-out scenes for measuring the oracle: every kind of image the world produces (plain scenes with and
//! without patterns, single concept instances, several concepts side by side, outline drawings), from seeds
//! disjoint from the training seeds.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::concept::Concept;
use super::error::ToyResult;
use super::palette::{Background, Colour};
use super::pattern::Pattern;
use super::scene::{concept_scene, place_solid, ObjectRequest, PlainWorld, Scene};

/// First seed of the held-out range (training uses seeds below it).
pub const HELDOUT_SEED_BASE: u64 = 1 << 40;

/// The `i`-th held-out scene. Kinds rotate: plain, patterned, concept instance, concepts together, outline.
pub fn heldout_scene(i: u64) -> ToyResult<Scene> {
    let seed = HELDOUT_SEED_BASE + i;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    match i % 5 {
        0 => PlainWorld::default().sample(seed),
        1 => PlainWorld {
            pattern_rate: 1.0,
            ..PlainWorld::default()
        }
        .sample(seed),
        2 => concept_scene(Concept::SUBJECTS[(i / 5 % 3) as usize], seed),
        3 => {
            // Two or three subject concepts, sometimes with a plain object.
            let mut subjects = Concept::SUBJECTS.to_vec();
            let n = rng.random_range(2..=3);
            while subjects.len() > n {
                subjects.remove(rng.random_range(0..subjects.len()));
            }
            let mut objects: Vec<ObjectRequest> = subjects
                .into_iter()
                .filter_map(ObjectRequest::concept)
                .collect();
            if objects.len() < 3 && rng.random_bool(0.5) {
                let shape = super::shape::ShapeKind::ALL[rng.random_range(0..3)];
                objects.push(ObjectRequest {
                    shape,
                    colour: Colour::BASE[rng.random_range(0..4)],
                    pattern: Pattern::Plain,
                    concept: None,
                });
            }
            let background = if rng.random_bool(0.3) {
                Background::Grey
            } else {
                Background::White
            };
            place_solid(background, objects, &mut rng)
        }
        _ => concept_scene(Concept::Outline, seed),
    }
}
