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
