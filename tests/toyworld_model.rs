//! The committed toyworld model and LoRAs (`assets/toyworld/`): they load through the same loaders as real
//! checkpoints, the base model draws what a prompt asks for (judged by the oracle), each LoRA loads with every
//! key matched and changes the image, and the assets stay within their size budget.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::ElementConversion;
use clora_harness::backend::Cpu;
use clora_harness::lora::file::LoraFile;
use clora_harness::lora::key::LoraFormat;
use clora_harness::lora::resolve::Unmatched;
use clora_harness::models::sd::{LoadOptions, StableDiffusion};
use clora_harness::pipeline::GenerateParams;
use clora_harness::toyworld::caption::caption;
use clora_harness::toyworld::concept::Concept;
use clora_harness::toyworld::heldout::heldout_scene;
use clora_harness::toyworld::oracle::{judge_prompt, read};
use clora_harness::toyworld::palette::Background;
use clora_harness::toyworld::render::render;
use clora_harness::toyworld::tensors::tensor_to_images;
use clora_harness::toyworld::ToyError;
use common::temp_dir;
use image::RgbImage;

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/toyworld")
}

fn load() -> StableDiffusion<Cpu> {
    let dir = assets().join("model");
    StableDiffusion::<Cpu>::load(&dir, &LoadOptions::default(), &Default::default())
        .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

fn params(prompt: &str, seed: u64, steps: usize) -> GenerateParams {
    GenerateParams {
        prompt: prompt.into(),
        steps,
        guidance: 5.0,
        width: 64,
        height: 64,
        seed,
        ..GenerateParams::default()
    }
}

fn generate(sd: &StableDiffusion<Cpu>, prompt: &str, seed: u64, steps: usize) -> RgbImage {
    let latent = sd
        .generate_latent(&params(prompt, seed, steps), None)
        .unwrap()
        .latent;
    tensor_to_images(sd.decode_latent(latent).unwrap()).remove(0)
}

/// The committed model follows its prompt's background in at least 3 of 4 seeds (a global attribute the
/// model has learnt; its object-level caption match is measured by `harness toyworld judge` and reported in
/// docs/toyworld.md, not asserted here).
#[test]
fn the_base_model_follows_the_background_of_its_prompt() {
    let sd = load();
    assert_eq!(sd.vae_scale_factor(), 4);
    for (prompt, want) in [
        (
            "a red circle and a blue square on a grey background",
            Background::Grey,
        ),
        ("a red circle and a blue square", Background::White),
    ] {
        let hits = (0..4)
            .filter(|&seed| read(&generate(&sd, prompt, seed, 12)).background == want)
            .count();
        assert!(
            hits >= 3,
            "`{prompt}`: background {want:?} in only {hits} of 4 seeds"
        );
    }
}

#[test]
fn each_committed_lora_loads_strictly_and_changes_the_image() {
    let base = load();
    for c in Concept::ALL {
        let path = assets().join(format!("loras/{}.safetensors", c.name()));
        let file = LoraFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Two files in each layout, so both loaders stay exercised.
        let want = match c {
            Concept::Dots | Concept::Rings => LoraFormat::Peft,
            Concept::Stripes | Concept::Outline => LoraFormat::Kohya,
        };
        assert_eq!(
            file.formats().into_iter().collect::<Vec<_>>(),
            vec![want],
            "{}",
            path.display()
        );
        assert!(
            file.modules.iter().all(|m| m.rank == 4),
            "{}",
            path.display()
        );
        let mut sd = load();
        let loaded = sd
            .add_lora(c.name(), &file, 1.0, Unmatched::Error)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            loaded.layers[0] > 0 && loaded.layers[1] > 0,
            "{}: UNet and text encoder adapted: {loaded:?}",
            path.display()
        );
        let prompt = match c {
            Concept::Outline => "an olz drawing of a red circle".to_string(),
            s => format!("a {}", s.phrase()),
        };
        let p = params(&prompt, 0, 4);
        let a = base.generate_latent(&p, None).unwrap().latent;
        let b = sd.generate_latent(&p, None).unwrap().latent;
        let diff = (a - b).abs().mean().into_scalar().elem::<f32>();
        assert!(
            diff > 1e-2,
            "{}: the LoRA barely changes the latent ({diff})",
            path.display()
        );
    }
}

#[test]
fn judge_prompt_reads_scenes_and_rejects_other_shapes_of_image() {
    for i in 0..6 {
        let scene = heldout_scene(i).unwrap();
        let img = render(&scene);
        let text = caption(&scene, i);
        assert!(judge_prompt(&img, &text).unwrap().exact, "{text}");
        // Another square size is resized to 64x64.
        let big = image::imageops::resize(&img, 128, 128, image::imageops::FilterType::Nearest);
        assert!(
            judge_prompt(&big, &text).unwrap().exact,
            "{text} at 128x128"
        );
    }
    let scene = heldout_scene(0).unwrap();
    let wrong = judge_prompt(
        &render(&scene),
        "a green triangle and a red square and a blue circle",
    );
    assert!(!wrong.unwrap().exact);
    let err = judge_prompt(&RgbImage::new(64, 32), "a red circle").unwrap_err();
    assert!(matches!(err, ToyError::Image(_)), "{err}");
    assert!(err.to_string().contains("64x32"), "{err}");
    let err = judge_prompt(&RgbImage::new(64, 64), "a red banana").unwrap_err();
    assert!(matches!(err, ToyError::Prompt { .. }), "{err}");
}

#[test]
fn the_assets_fit_their_budget() {
    fn size(p: &Path) -> u64 {
        if p.is_dir() {
            std::fs::read_dir(p)
                .unwrap()
                .map(|e| size(&e.unwrap().path()))
                .sum()
        } else {
            p.metadata().unwrap().len()
        }
    }
    let total = size(&assets());
    assert!(total <= 16 << 20, "assets/toyworld holds {total} bytes");
}

/// The committed VAE's round trip (`harness toyworld oracle-check --vae`): rendered one-concept and patterned
/// scenes stay readable by the oracle after encode + decode (the old, blurry decoder kept 1 in 40 concepts),
/// and `--out` writes every image with its reading.
#[test]
fn the_committed_vae_keeps_concepts_readable() {
    let out = temp_dir("toyworld-vae-check");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["toyworld", "oracle-check", "--count", "200", "--vae"])
        .arg(assets().join("model"))
        .arg("--out")
        .arg(&*out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(text.contains("after a round trip through"), "{text}");
    // `  <kind>   <read>/<of>` per held-out kind
    let kind = |name: &str| -> (u32, u32) {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no `{name}` line in\n{text}"));
        let counts: Vec<u32> = line
            .split_whitespace()
            .last()
            .unwrap()
            .split('/')
            .map(|n| n.parse().unwrap())
            .collect();
        (counts[0], counts[1])
    };
    let one = kind("one concept");
    assert_eq!(one.1, 40, "{text}");
    assert!(
        one.0 >= 36,
        "one-concept scenes read after the round trip: {text}"
    );
    // The decoder fine-tuned in session 11 keeps the small pattern marks apart: 40 of these 40 patterned scenes
    // (100/100 of 500), where session 7's decoder kept 35 (85/100).
    let patterned = kind("patterned");
    assert!(
        patterned.0 >= 38,
        "patterned scenes read after the round trip: {text}"
    );
    let tsv = std::fs::read_to_string(out.join("readings.tsv")).unwrap();
    assert_eq!(tsv.lines().count(), 201);
    assert!(out.join("000199.png").is_file());
}
