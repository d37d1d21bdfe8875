//! The renderer and captions: determinism, the world's distributions, and captions that parse back into the
//! scenes they describe.

use clora_harness::toyworld::caption::{caption, parse, training_caption, CaptionOrder};
use clora_harness::toyworld::concept::Concept;
use clora_harness::toyworld::heldout::heldout_scene;
use clora_harness::toyworld::palette::{Background, Colour};
use clora_harness::toyworld::pattern::Pattern;
use clora_harness::toyworld::render::render;
use clora_harness::toyworld::scene::{
    concept_scene, concept_scene_among, PlainWorld, Style, CANVAS, EDGE_MARGIN, GAP,
};

#[test]
fn same_seed_same_pixels_other_seed_other_pixels() {
    let world = PlainWorld::default();
    for seed in [0u64, 1, 99, 12345] {
        let a = world.sample(seed).unwrap();
        let b = world.sample(seed).unwrap();
        assert_eq!(a, b);
        assert_eq!(render(&a).into_raw(), render(&b).into_raw(), "seed {seed}");
        let c = world.sample(seed + 1).unwrap();
        assert_ne!(render(&a).into_raw(), render(&c).into_raw());
    }
}

#[test]
fn objects_stay_inside_and_apart() {
    let world = PlainWorld::default();
    for seed in 0..500 {
        let s = world.sample(seed).unwrap();
        assert!((1..=3).contains(&s.objects.len()));
        for (i, o) in s.objects.iter().enumerate() {
            let (x0, y0, x1, y1) = o.bbox();
            assert!(
                x0 >= EDGE_MARGIN - 1e-3 && y0 >= EDGE_MARGIN - 1e-3,
                "seed {seed}"
            );
            assert!(
                x1 <= CANVAS as f32 - EDGE_MARGIN + 1e-3
                    && y1 <= CANVAS as f32 - EDGE_MARGIN + 1e-3
            );
            assert!(
                Colour::BASE.contains(&o.colour),
                "plain scenes use base colours only"
            );
            assert!(o.concept.is_none());
            for p in &s.objects[i + 1..] {
                let (a0, b0, a1, b1) = p.bbox();
                let apart = x1 + GAP <= a0 || a1 + GAP <= x0 || y1 + GAP <= b0 || b1 + GAP <= y0;
                assert!(apart, "seed {seed}: overlapping objects");
                assert!(
                    !(p.shape == o.shape && p.colour == o.colour),
                    "duplicate object"
                );
            }
        }
    }
}

#[test]
fn the_world_covers_every_kind() {
    let world = PlainWorld::default();
    let scenes: Vec<_> = (0..400).map(|s| world.sample(s).unwrap()).collect();
    for n in 1..=3 {
        assert!(scenes.iter().any(|s| s.objects.len() == n), "{n} objects");
    }
    for p in Pattern::ALL {
        assert!(
            scenes
                .iter()
                .flat_map(|s| &s.objects)
                .any(|o| o.pattern == p),
            "{p:?}"
        );
    }
    assert!(scenes.iter().any(|s| s.background == Background::Grey));
    assert!(scenes.iter().any(|s| s.background == Background::White));
}

#[test]
fn captions_parse_back_to_their_scenes() {
    for i in 0..300 {
        let scene = heldout_scene(i).unwrap();
        let text = caption(&scene, i);
        let spec = parse(&text).unwrap_or_else(|e| panic!("`{text}`: {e}"));
        assert_eq!(spec.background, scene.background, "`{text}`");
        assert_eq!(spec.style, scene.style, "`{text}`");
        let mut want: Vec<_> = scene
            .objects
            .iter()
            .map(|o| (o.shape, o.colour, o.pattern, o.concept))
            .collect();
        let mut got: Vec<_> = spec
            .objects
            .iter()
            .map(|o| (o.shape, o.colour.unwrap(), o.pattern.unwrap(), o.concept))
            .collect();
        want.sort();
        got.sort();
        assert_eq!(want, got, "`{text}`");
    }
}

#[test]
fn captions_name_objects_from_left_to_right() {
    let mut several = 0;
    for i in 0..200 {
        let scene = heldout_scene(i).unwrap();
        if scene.objects.len() < 2 {
            continue;
        }
        several += 1;
        let spec = parse(&caption(&scene, i)).unwrap();
        let mut by_x: Vec<_> = scene.objects.clone();
        by_x.sort_by(|a, b| a.cx.total_cmp(&b.cx));
        let named: Vec<_> = spec.objects.iter().map(|o| o.shape).collect();
        let placed: Vec<_> = by_x.iter().map(|o| o.shape).collect();
        assert_eq!(named, placed, "{}", caption(&scene, i));
    }
    assert!(several > 50, "{several} scenes with several objects");
}

#[test]
fn training_captions_sometimes_name_the_class_noun_alone() {
    let world = PlainWorld::default();
    let captions: Vec<String> = (0..200)
        .map(|i| {
            training_caption(
                &world.sample(i).unwrap(),
                i,
                0.12,
                CaptionOrder::LeftToRight,
            )
        })
        .collect();
    let bare = captions
        .iter()
        .filter(|c| parse(c).unwrap().objects.iter().any(|o| o.colour.is_none()))
        .count();
    assert!(
        bare > 10 && bare < 100,
        "{bare} of 200 captions have a bare noun"
    );
    let spec = parse("a circle and a blue square").unwrap();
    assert_eq!(
        (spec.objects[0].colour, spec.objects[0].pattern),
        (None, None)
    );
}

#[test]
fn concept_captions_use_trigger_and_class_noun() {
    for c in Concept::ALL {
        let scene = concept_scene(c, 3).unwrap();
        let text = caption(&scene, 0);
        assert!(
            text.contains(&c.phrase()),
            "`{text}` should name `{}`",
            c.phrase()
        );
        if c.is_style() {
            assert_eq!(scene.style, Style::Outline);
            assert!(text.starts_with("an olz drawing of "), "`{text}`");
        } else {
            let look = c.look().unwrap();
            assert_eq!(scene.objects.len(), 1);
            assert_eq!(
                (scene.objects[0].shape, scene.objects[0].colour),
                (look.shape, look.colour)
            );
        }
        assert_eq!(parse(&text).unwrap().concepts(), vec![c]);
    }
}

#[test]
fn prompts_outside_the_world_are_refused() {
    for bad in [
        "a red hexagon",
        "a pink circle",
        "a dtz square",
        "two red circles",
        "a red wavy circle",
        "",
    ] {
        assert!(parse(bad).is_err(), "`{bad}` should not parse");
    }
    assert!(parse("A Red Circle and a dtz circle on a grey background").is_ok());
}

#[test]
fn shuffled_captions_name_the_same_objects_in_another_order() {
    // `--caption-order shuffled`: the same objects (as a multiset of phrases), the order from the caption's seed;
    // left to right stays the order of `caption`.
    let world = PlainWorld {
        object_counts: [0.0, 0.0, 1.0],
        ..PlainWorld::default()
    };
    // What a caption asks for, objects sorted: the same for any order of naming them.
    let asked = |c: &str| {
        let spec = parse(c).unwrap_or_else(|e| panic!("`{c}`: {e}"));
        let mut objects: Vec<_> = spec
            .objects
            .iter()
            .map(|o| (o.shape, o.colour, o.pattern, o.concept))
            .collect();
        objects.sort();
        (objects, spec.background, spec.style)
    };
    let mut reordered = 0;
    for i in 0..40u64 {
        let scene = world.sample(i).unwrap();
        let ordered = training_caption(&scene, i, 0.0, CaptionOrder::LeftToRight);
        assert_eq!(ordered, caption(&scene, i));
        let shuffled = training_caption(&scene, i, 0.0, CaptionOrder::Shuffled);
        assert_eq!(asked(&shuffled), asked(&ordered), "{shuffled} / {ordered}");
        assert_eq!(
            shuffled,
            training_caption(&scene, i, 0.0, CaptionOrder::Shuffled)
        );
        reordered += (shuffled != ordered) as usize;
    }
    // 5 of the 6 orders of three objects differ from left to right.
    assert!(
        (25..=39).contains(&reordered),
        "{reordered} of 40 reordered"
    );
}

#[test]
fn concept_scenes_among_plain_objects_name_the_concept_at_every_place() {
    // `train-lora --companions N`: a subject concept beside up to N plain objects, captioned in a random order.
    let mut places = [0usize; 3];
    for c in [Concept::Dots, Concept::Stripes, Concept::Rings] {
        let look = c.look().unwrap();
        assert_eq!(
            concept_scene_among(c, 7, 0).unwrap(),
            concept_scene(c, 7).unwrap(),
            "no companions: the subject alone, as before"
        );
        let mut counts = [0usize; 3];
        for seed in 0..40u64 {
            let scene = concept_scene_among(c, seed, 2).unwrap();
            let n = scene.objects.len();
            assert!((1..=3).contains(&n), "{n} objects");
            counts[n - 1] += 1;
            let concept: Vec<_> = scene
                .objects
                .iter()
                .filter(|o| o.concept.is_some())
                .collect();
            assert_eq!(concept.len(), 1, "one concept instance");
            assert_eq!(
                (concept[0].shape, concept[0].colour),
                (look.shape, look.colour)
            );
            for o in scene.objects.iter().filter(|o| o.concept.is_none()) {
                assert_eq!(o.pattern, Pattern::Plain, "companions are plain");
                assert!((o.shape, o.colour) != (look.shape, look.colour));
            }
            let text = training_caption(&scene, seed, 0.0, CaptionOrder::Shuffled);
            let parsed = parse(&text).unwrap_or_else(|e| panic!("`{text}`: {e}"));
            assert_eq!(parsed.concepts(), vec![c], "`{text}`");
            let at = parsed
                .objects
                .iter()
                .position(|o| o.concept.is_some())
                .unwrap();
            places[at] += 1;
        }
        assert!(
            counts.iter().all(|&k| k >= 5),
            "{c:?}: object counts {counts:?}"
        );
    }
    assert!(
        places.iter().all(|&k| k >= 5),
        "the trigger's place in the captions: {places:?}"
    );
}
