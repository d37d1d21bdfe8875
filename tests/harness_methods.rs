//! The composition methods inside the harness: a CLoRA job of an experiment config reproduces the official
//! pipeline's image (the fixture of `tests/clora_parity.rs`, through the planner's prompt rendering and the
//! job -> method mapping), every method runs in one experiment with its sidecar records and artifacts, and
//! an Attend-and-Excite job excites its LoRAs' words on the official schedule scaled to its steps.

use std::path::Path;

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use clora_harness::backend::Cpu;
use clora_harness::config::{self, Experiment, MethodKind};
use clora_harness::harness::filehash::FileHasher;
use clora_harness::harness::manifest;
use clora_harness::harness::method_job::method_spec;
use clora_harness::harness::{self, Generator, Interrupt, JobContext, SessionOptions};
use clora_harness::latent_io;
use clora_harness::methods::MethodSpec;
use clora_harness::models::sd::{LoadOptions, StableDiffusion};

mod clora_common;
mod common;

use clora_common::max_diff;
use common::{fixtures, temp_dir, Reference, TempPath};

type AD = Autodiff<Cpu>;

fn folder(test: &str) -> TempPath {
    temp_dir(&format!("methods-{test}"))
}

/// tiny-c with the two CLoRA fixture LoRAs (cat: PEFT, dog: kohya, both trigger `sks`), the fixture's prompt.
fn experiment(dir: &Path, size: usize, steps: usize, methods: &str) -> Experiment {
    let f = fixtures();
    let text = format!(
        r#"
seeds = [0]
[run]
name = "m"
[model]
path = "{model}"
[[loras]]
name = "cat"
path = "{cat}"
trigger = "sks"
class_noun = "cat"
[[loras]]
name = "dog"
path = "{dog}"
trigger = "sks"
class_noun = "dog"
[[prompt_sets]]
name = "pair"
prompts = ["A {{cat}} and a {{dog}}"]
[sampler]
scheduler = "ddim"
steps = {steps}
guidance = 7.5
width = {size}
height = {size}
negative_prompt = "nsfw"
[metrics]
scores = ["mean_luma"]
[report]
trade_off = ["mean_luma", "mean_luma"]
{methods}
"#,
        model = f.join("sd/tiny-c").display(),
        cat = f.join("clora/lora_cat.safetensors").display(),
        dog = f.join("clora/lora_dog.safetensors").display(),
    );
    std::fs::write(dir.join("exp.toml"), text).unwrap();
    config::load(&dir.join("exp.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn generator() -> harness::SdGenerator<AD> {
    harness::SdGenerator::<AD>::new(Default::default(), "flex", "cpu", config::RunDtype::F32)
}

/// A fixture tensor `(values, shape)` as a latent `[1, 4, h, w]`.
fn tensor((values, shape): (Vec<f32>, Vec<usize>)) -> Tensor<AD, 4> {
    assert_eq!(shape.len(), 4, "a latent is [1, c, h, w]");
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

#[test]
fn a_clora_job_reproduces_the_official_pipeline_image() {
    let dir = folder("parity");
    // the fixture's single_update case: one latent update at step 0, masks from step 0
    let exp = experiment(
        &dir,
        128,
        8,
        r#"
[[methods]]
method = "clora"
params = { latent_update = true, max_iter_to_alter = 1, iterative_steps_steps = 0, step_size = 20.0, mask_threshold_alpha = 0.4, apply_mask_after = 0, use_text_encoder_lora = true, save_attention = true }
"#,
    );
    let mut g = generator();
    let plan = harness::plan(&exp, &g.info().target, &mut FileHasher::in_memory()).unwrap();
    assert_eq!(plan.jobs.len(), 1);
    let job = &plan.jobs[0];
    assert_eq!(job.kind, MethodKind::Clora);
    assert_eq!(job.prompt.plain, "A cat and a dog");
    assert_eq!(
        job.prompt.branches,
        vec!["A sks cat and a dog", "A cat and a sks dog"]
    );
    let official = Reference::open(&fixtures().join("clora/single_update.safetensors"));
    let ctx = JobContext {
        steps: &harness::generator::NoSteps,
        interrupt: &Interrupt::new(),
        artifact_dir: dir.join("artifacts"),
    };
    let noise = tensor(official.f32("init_noise"));
    let out = g
        .generate_from(job, Some(&|_| Ok(noise.clone())), &ctx)
        .unwrap();
    // the reference image: the official final latent through our VAE (itself checked against diffusers)
    let sd = StableDiffusion::<AD>::load(
        &fixtures().join("sd/tiny-c"),
        &LoadOptions::default(),
        &Default::default(),
    )
    .unwrap();
    let want = latent_io::to_rgb8(
        &sd.decode_latent(tensor(official.f32("final_latent")))
            .unwrap(),
    )
    .unwrap();
    let worst = out
        .image
        .pixels()
        .zip(want.pixels())
        .flat_map(|(a, b)| (0..3).map(move |c| (a.0[c] as i32 - b.0[c] as i32).abs()))
        .max()
        .unwrap();
    println!("harness CLoRA image vs the official pipeline's: max pixel difference {worst}");
    assert!(worst <= 1, "max pixel difference {worst}");
    // the sidecar record and the saved maps and masks
    let c = &out.details["clora"];
    assert_eq!(c["latent_updates"], 1);
    assert_eq!(c["losses"].as_array().unwrap().len(), 8);
    assert_eq!(c["mask_tokens"], serde_json::json!([[], [2, 3], [5, 6]]));
    let cov = c["final_mask_coverage"].as_array().unwrap();
    assert!(cov.iter().skip(1).all(|x| {
        let x = x.as_f64().unwrap();
        x > 0.0 && x < 1.0
    }));
    for f in ["attention.safetensors", "masks.png", "attention.png"] {
        assert!(dir.join("artifacts").join(f).is_file(), "{f}");
    }
    let saved = Reference::open(&dir.join("artifacts/attention.safetensors"));
    assert_eq!(saved.f32("masks").1, [8, 3, 4, 4]);
    assert_eq!(saved.f32("maps").1, [8, 3, 16, 77]);
    // the latent each step received and what the update moved it by, against the official pipeline's
    let ((ours_in, in_shape), (ours_shift, shift_shape)) =
        (saved.f32("latent_in"), saved.f32("latent_shift"));
    assert_eq!(
        (in_shape, shift_shape),
        (vec![8, 4, 16, 16], vec![8, 4, 16, 16])
    );
    let in_err = max_diff(&ours_in, &official.f32("latents_in").0);
    let want_shift: Vec<f32> = official
        .f32("update_out")
        .0
        .iter()
        .zip(official.f32("update_in").0)
        .map(|(o, i)| o - i)
        .collect();
    let per_step = 4 * 16 * 16;
    let shift_err = max_diff(&ours_shift[..per_step], &want_shift);
    println!("saved latents: latent_in max abs error {in_err:.2e}, step 0's latent_shift {shift_err:.2e}");
    // the same tolerance as the final latent's in clora_parity (single_update): 8 steps of f32 drift
    assert!(in_err <= 1e-3, "latent_in error {in_err:e}");
    assert!(shift_err <= 1e-4, "latent_shift error {shift_err:e}");
    assert!(
        want_shift.iter().any(|x| x.abs() > 1e-3),
        "the reference update moves the latent"
    );
    assert!(
        ours_shift[per_step..].iter().all(|&x| x == 0.0),
        "no update after step 0, so no shift"
    );
    let png = image::open(dir.join("artifacts/masks.png")).unwrap();
    assert!(png.width() > 8 * 96 && png.height() > 3 * 96);
}

#[test]
fn a_layout_job_records_its_pass_and_words() {
    let dir = folder("layout");
    let exp = experiment(
        &dir,
        128,
        3,
        r#"
[[methods]]
method = "clora"
params = { mask_mode = "layout", mask_words = "after_noun", latent_update = false, save_attention = true }
"#,
    );
    let mut g = generator();
    let plan = harness::plan(&exp, &g.info().target, &mut FileHasher::in_memory()).unwrap();
    let job = &plan.jobs[0];
    assert_eq!(job.prompt.plain, "A cat and a dog");
    let ctx = JobContext {
        steps: &harness::generator::NoSteps,
        interrupt: &Interrupt::new(),
        artifact_dir: dir.join("artifacts"),
    };
    let out = g.generate_from(job, None, &ctx).unwrap();
    // the token after each class noun of the plain prompt: "and" after "cat" (3), the end after "dog" (6)
    let c = &out.details["clora"];
    assert_eq!(c["layout_words"], serde_json::json!([[3], [6]]));
    let saved = Reference::open(&dir.join("artifacts/attention.safetensors"));
    assert_eq!(saved.f32("layout_maps").1, [3, 16, 77]);
    assert_eq!(saved.f32("layout_latent").1, [4, 16, 16]);
    // the masks are the layout's at every step
    let (masks, shape) = saved.f32("masks");
    let per_step = masks.len() / shape[0];
    assert!(masks.chunks(per_step).all(|m| m == &masks[..per_step]));
}

#[test]
fn every_method_runs_in_one_experiment() {
    let dir = folder("all");
    let exp = experiment(
        &dir,
        64,
        3,
        r#"
[[methods]]
method = "base"
[[methods]]
method = "single"
[[methods]]
method = "merge"
params = { scale = 0.8, fuse = [false, true] }
[[methods]]
method = "switch"
params = { switch_step = 1 }
[[methods]]
method = "composite"
[[methods]]
method = "clora"
params = { max_iter_to_alter = 2, iterative_steps = [0], iterative_steps_steps = 1, attention_stride_px = 16, step_size = 5.0 }
[[methods]]
method = "excite"
params = { attention_stride_px = 16, max_refinement_steps = 2 }
"#,
    );
    let mut g = generator();
    let interrupt = Interrupt::new();
    let options = SessionOptions {
        run: harness::RunOptions {
            progress: false,
            max_images: None,
            shard: None,
        },
        eval: true,
        report: true,
    };
    let o =
        harness::run_experiment(&exp, &dir.join("results"), &mut g, &interrupt, &options).unwrap();
    // base 1, single 2 (one per LoRA), merge 2, switch 1, composite 1, clora 1, excite 1
    assert_eq!((o.generation.generated, o.generation.failed), (9, 0));
    let rows = manifest::read(&o.run).unwrap();
    assert!(rows.iter().all(|r| r.status == manifest::DONE));
    // unfused and fused merge agree up to rounding; the methods differ from each other
    let img = |variant: &str| {
        let r = rows.iter().find(|r| r.variant == variant).unwrap();
        image::open(o.run.root.join(r.image.as_ref().unwrap()))
            .unwrap()
            .to_rgb8()
    };
    let (unfused, fused) = (img("merge[fuse=false]"), img("merge[fuse=true]"));
    let worst = unfused
        .pixels()
        .zip(fused.pixels())
        .flat_map(|(a, b)| (0..3).map(move |c| (a.0[c] as i32 - b.0[c] as i32).abs()))
        .max()
        .unwrap();
    assert!(worst <= 1, "fused vs unfused merge: {worst}");
    assert_ne!(img("base"), img("composite"));
    assert_ne!(img("clora"), img("composite"));
    // Attend-and-Excite is merge (unfused) with its latent updates
    assert_ne!(img("excite"), img("merge[fuse=false]"));
}

#[test]
fn an_excite_job_excites_the_concepts_nouns_on_the_scaled_schedule() {
    let dir = folder("excite");
    let exp = experiment(
        &dir,
        64,
        5,
        r#"
[[methods]]
method = "excite"
params = { attention_stride_px = 16, words = ["class_nouns", "concepts"] }
"#,
    );
    let mut g = generator();
    let plan = harness::plan(&exp, &g.info().target, &mut FileHasher::in_memory()).unwrap();
    assert_eq!(plan.jobs.len(), 2);
    for job in &plan.jobs {
        assert_eq!(job.kind, MethodKind::Excite);
        // the LoRAs merged on the combined prompt
        assert_eq!(job.prompt.text, "A sks cat and a sks dog");
        let MethodSpec::Excite(p) = method_spec(job).unwrap() else {
            panic!("not an excite spec: {:?}", job.kind)
        };
        let concepts = job.variant.contains("concepts");
        let want: &[&str] = if concepts {
            &["sks", "cat", "dog"]
        } else {
            &["cat", "dog"]
        };
        assert_eq!(p.words, want, "{}", job.variant);
        // the official 50-step schedule at 5 steps
        assert_eq!(
            (p.max_iter_to_alter, p.refine_steps.clone()),
            (2, vec![0, 1, 2])
        );
    }
    let ctx = JobContext {
        steps: &harness::generator::NoSteps,
        interrupt: &Interrupt::new(),
        artifact_dir: dir.join("artifacts"),
    };
    let out = g.generate_from(&plan.jobs[0], None, &ctx).unwrap();
    // a loss at each of the first two indices and the refinement ones, each with at least one update
    let records = out.details["excite"].as_array().unwrap();
    let indices: Vec<u64> = records
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, vec![0, 1, 2]);
    assert!(records[0]["updates"].as_u64().unwrap() >= 1);
}
