//! The oracle against held-out rendered scenes: accuracy of exact readings (>= 95% required), and the judge
//! on captions of the same scenes.

use clora_harness::toyworld::caption::{caption, parse};
use clora_harness::toyworld::heldout::heldout_scene;
use clora_harness::toyworld::oracle::{judge, read};
use clora_harness::toyworld::render::render;

const N: u64 = 600;

#[test]
fn oracle_reads_heldout_scenes() {
    let mut correct = 0;
    let mut failures = Vec::new();
    for i in 0..N {
        let scene = heldout_scene(i).expect("scene");
        let reading = read(&render(&scene));
        if reading.matches_scene(&scene) {
            correct += 1;
        } else if failures.len() < 10 {
            failures.push(format!(
                "#{i}: {}\n  scene {:?}\n  read {:?}",
                caption(&scene, 0),
                scene.objects,
                reading.objects
            ));
        }
    }
    let accuracy = correct as f64 / N as f64;
    eprintln!("oracle accuracy on {N} held-out scenes: {accuracy:.4}");
    for f in &failures {
        eprintln!("{f}");
    }
    if std::env::var("TOY_DUMP").is_ok() {
        std::fs::create_dir_all("/tmp/toy").unwrap();
        let mut grid = image::RgbImage::new(64 * 3 * 10, 64 * 3 * 2);
        for i in 0..20u32 {
            let img = render(&heldout_scene(i as u64).unwrap());
            let big = image::imageops::resize(&img, 192, 192, image::imageops::FilterType::Nearest);
            image::imageops::replace(
                &mut grid,
                &big,
                (i % 10 * 192) as i64,
                (i / 10 * 192) as i64,
            );
        }
        grid.save("/tmp/toy/grid.png").unwrap();
    }
    assert!(accuracy >= 0.95, "oracle accuracy {accuracy:.4} < 0.95");
}

#[test]
fn captions_judge_their_own_scenes_exact() {
    for i in 0..200 {
        let scene = heldout_scene(i).expect("scene");
        let text = caption(&scene, i);
        let spec = parse(&text).expect("captions parse");
        let reading = read(&render(&scene));
        let verdict = judge(&spec, &reading);
        if reading.matches_scene(&scene) {
            assert!(verdict.exact, "#{i} `{text}`: {verdict:?}");
            assert!(verdict.all_concepts_present());
            assert_eq!(verdict.mixed_objects, 0);
        }
    }
}

mod judge_cases {
    use clora_harness::toyworld::caption::parse;
    use clora_harness::toyworld::concept::Concept;
    use clora_harness::toyworld::oracle::{judge, read};
    use clora_harness::toyworld::palette::{Background, Colour};
    use clora_harness::toyworld::pattern::Pattern;
    use clora_harness::toyworld::render::render;
    use clora_harness::toyworld::scene::{Object, Scene, Style};
    use clora_harness::toyworld::shape::ShapeKind;

    fn obj(shape: ShapeKind, colour: Colour, pattern: Pattern, cx: f32, cy: f32) -> Object {
        Object {
            shape,
            colour,
            pattern,
            cx,
            cy,
            r: 12.0,
            concept: None,
        }
    }

    fn scene(objects: Vec<Object>) -> Scene {
        Scene {
            background: Background::White,
            style: Style::Solid,
            objects,
            texture_seed: 9,
        }
    }

    #[test]
    fn both_concepts_present() {
        let s = scene(vec![
            obj(ShapeKind::Circle, Colour::Orange, Pattern::Dots, 17.0, 20.0),
            obj(
                ShapeKind::Square,
                Colour::Purple,
                Pattern::Stripes,
                46.0,
                44.0,
            ),
        ]);
        let v = judge(
            &parse("a dtz circle and a stz square").unwrap(),
            &read(&render(&s)),
        );
        assert!(v.exact && v.all_concepts_present() && !v.mixing(), "{v:?}");
    }

    #[test]
    fn swapped_attributes_are_mixing() {
        // The dots concept's colour and pattern on the square, the stripes concept's on the circle.
        let s = scene(vec![
            obj(
                ShapeKind::Circle,
                Colour::Purple,
                Pattern::Stripes,
                17.0,
                20.0,
            ),
            obj(ShapeKind::Square, Colour::Orange, Pattern::Dots, 46.0, 44.0),
        ]);
        let v = judge(
            &parse("a dtz circle and a stz square").unwrap(),
            &read(&render(&s)),
        );
        assert_eq!(
            v.concepts,
            vec![(Concept::Dots, false), (Concept::Stripes, false)]
        );
        assert_eq!(v.mixed_objects, 2, "{v:?}");
    }

    #[test]
    fn a_missing_concept_is_omission_not_mixing() {
        let s = scene(vec![obj(
            ShapeKind::Circle,
            Colour::Orange,
            Pattern::Dots,
            30.0,
            30.0,
        )]);
        let v = judge(
            &parse("a dtz circle and a stz square").unwrap(),
            &read(&render(&s)),
        );
        assert_eq!(
            v.concepts,
            vec![(Concept::Dots, true), (Concept::Stripes, false)]
        );
        assert!(!v.mixing() && !v.exact);
        assert_eq!(
            v.concept_colours,
            vec![(Concept::Dots, true), (Concept::Stripes, false)]
        );
    }

    #[test]
    fn a_concept_colour_without_its_pattern_is_partial_presence() {
        // an orange circle without dots and a purple triangle: neither concept, both concept colours
        let s = scene(vec![
            obj(
                ShapeKind::Circle,
                Colour::Orange,
                Pattern::Plain,
                17.0,
                20.0,
            ),
            obj(
                ShapeKind::Triangle,
                Colour::Purple,
                Pattern::Plain,
                46.0,
                44.0,
            ),
        ]);
        let v = judge(
            &parse("a dtz circle and a stz square").unwrap(),
            &read(&render(&s)),
        );
        assert_eq!(
            v.concepts,
            vec![(Concept::Dots, false), (Concept::Stripes, false)]
        );
        assert!(v.all_concept_colours());
        let v = judge(&parse("a red circle").unwrap(), &read(&render(&s)));
        assert!(v.concept_colours.is_empty() && v.all_concept_colours());
    }

    #[test]
    fn wrong_colour_binding_in_a_plain_prompt_is_mixing() {
        let s = scene(vec![
            obj(ShapeKind::Circle, Colour::Blue, Pattern::Plain, 17.0, 20.0),
            obj(ShapeKind::Square, Colour::Red, Pattern::Plain, 46.0, 44.0),
        ]);
        let v = judge(
            &parse("a red circle and a blue square").unwrap(),
            &read(&render(&s)),
        );
        assert_eq!(v.objects_found(), vec![false, false]);
        assert_eq!(v.mixed_objects, 2);
    }

    #[test]
    fn a_bare_class_noun_accepts_any_colour() {
        let s = scene(vec![obj(
            ShapeKind::Circle,
            Colour::Green,
            Pattern::Dots,
            30.0,
            30.0,
        )]);
        let v = judge(&parse("a circle").unwrap(), &read(&render(&s)));
        assert!(v.exact, "{v:?}");
    }

    #[test]
    fn outline_style_is_read() {
        let mut s = scene(vec![obj(
            ShapeKind::Triangle,
            Colour::Green,
            Pattern::Plain,
            30.0,
            30.0,
        )]);
        s.style = Style::Outline;
        let img = render(&s);
        let v = judge(
            &parse("an olz drawing of a green triangle").unwrap(),
            &read(&img),
        );
        assert!(v.exact && v.all_concepts_present(), "{v:?}");
        let v = judge(&parse("a green triangle").unwrap(), &read(&img));
        assert!(!v.exact, "an outline is not a filled triangle");
    }

    /// An outline whose stroke fades almost to the background for a stretch (a thin generated line drawn
    /// faintly) is still read as that outline; with a real gap in the stroke it is no shape at all.
    #[test]
    fn a_faint_outline_stretch_is_bridged_a_gap_is_not() {
        let read_faded = |t: f32| {
            let mut s = scene(vec![obj(
                ShapeKind::Circle,
                Colour::Red,
                Pattern::Plain,
                32.0,
                32.0,
            )]);
            s.style = Style::Outline;
            let mut img = render(&s);
            let bg = Background::White.rgb();
            // A strip across the left side of the stroke, blended towards the background by t.
            for (x, y, p) in img.enumerate_pixels_mut() {
                if x < 26 && (30..=34).contains(&y) {
                    for (c, b) in p.0.iter_mut().zip(bg) {
                        *c = (*c as f32 * (1.0 - t) + b as f32 * t).round() as u8;
                    }
                }
            }
            judge(
                &parse("an olz drawing of a red circle").unwrap(),
                &read(&img),
            )
        };
        assert!(read_faded(0.0).exact);
        // t = 0.85: the stroke differs from the background by ~32 levels there, under FOREGROUND_DIFF.
        let v = read_faded(0.85);
        assert!(v.exact && v.all_concepts_present(), "{v:?}");
        let v = read_faded(1.0);
        assert!(!v.all_concepts_present(), "a broken outline: {v:?}");
    }

    /// A ring whose stroke fades for a few pixels (as generations draw it) is still a ring; the same ring
    /// with a real gap is not, and faded dots do not become a ring.
    #[test]
    fn a_faint_ring_stroke_is_a_ring_a_broken_one_is_not() {
        let read_pattern = |pattern: Pattern, fade: &dyn Fn(u32, u32) -> Option<f32>| {
            let mut img = render(&scene(vec![obj(
                ShapeKind::Triangle,
                Colour::Teal,
                pattern,
                32.0,
                34.0,
            )]));
            let body = Colour::Teal.rgb();
            for (x, y, p) in img.enumerate_pixels_mut() {
                let dark = p.0.iter().all(|&c| c < 60);
                if let (true, Some(t)) = (dark, fade(x, y)) {
                    // t = 0: the accent as drawn, t = 1: the object's own colour.
                    for (c, b) in p.0.iter_mut().zip(body) {
                        *c = (*c as f32 * (1.0 - t) + b as f32 * t).round() as u8;
                    }
                }
            }
            read(&img).objects.first().and_then(|o| o.pattern)
        };
        // The right third of the stroke at 60% body colour: above the mark threshold, still darker than
        // the body.
        let right_third = |t: f32| move |x: u32, _y: u32| (x >= 36).then_some(t);
        assert_eq!(
            read_pattern(Pattern::Rings, &|_, _| None),
            Some(Pattern::Rings)
        );
        assert_eq!(
            read_pattern(Pattern::Rings, &right_third(0.6)),
            Some(Pattern::Rings)
        );
        assert_ne!(
            read_pattern(Pattern::Rings, &right_third(1.0)),
            Some(Pattern::Rings),
            "a ring with a gap"
        );
        assert_eq!(
            read_pattern(Pattern::Dots, &|_, _| None),
            Some(Pattern::Dots)
        );
        for t in [0.3, 0.6] {
            assert_ne!(
                read_pattern(Pattern::Dots, &|_, _| Some(t)),
                Some(Pattern::Rings),
                "dots at fade {t}"
            );
        }
    }

    /// Generated objects sometimes touch (the renderer never lets them): a blue circle against a red square,
    /// or a striped yellow triangle against a blue circle, is still two objects, each read on its own. Two
    /// touching objects of neighbouring palette colours (red and orange) stay one piece of no shape: the split
    /// never breaks an object's shading apart.
    #[test]
    fn touching_objects_of_different_colours_are_two() {
        // r = 12: a circle's radius (a square's drawn half side is 11); these centres make them touch.
        let touching = |a: Object, b: Object| read(&render(&scene(vec![a, b])));
        let reading = touching(
            obj(ShapeKind::Square, Colour::Red, Pattern::Plain, 20.0, 32.0),
            obj(ShapeKind::Circle, Colour::Blue, Pattern::Plain, 44.0, 32.0),
        );
        let v = judge(&parse("a red square and a blue circle").unwrap(), &reading);
        assert!(v.exact, "{reading:?} {v:?}");
        let reading = touching(
            obj(
                ShapeKind::Triangle,
                Colour::Yellow,
                Pattern::Stripes,
                20.0,
                32.0,
            ),
            obj(ShapeKind::Circle, Colour::Blue, Pattern::Plain, 43.0, 38.0),
        );
        let v = judge(
            &parse("a yellow striped triangle and a blue circle").unwrap(),
            &reading,
        );
        assert!(v.exact && !v.mixing(), "{reading:?} {v:?}");
        let reading = touching(
            obj(ShapeKind::Square, Colour::Red, Pattern::Plain, 20.0, 32.0),
            obj(
                ShapeKind::Square,
                Colour::Orange,
                Pattern::Plain,
                41.0,
                32.0,
            ),
        );
        assert_eq!(reading.objects.len(), 1, "{reading:?}");
    }
}
