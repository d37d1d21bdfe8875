//! The harness: planning (expansion, content hashes, shared noise), the runner (skip what exists, rerun
//! only what a change affects, per-job failures), the SD generator on the tiny fixture model, and the
//! report's tables, plots and grids.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clora_harness::config::{self, Experiment, MethodKind};
use clora_harness::harness::filehash::FileHasher;
use clora_harness::harness::manifest;
use clora_harness::harness::table::{col_f64, col_str, read_parquet};
use clora_harness::harness::{
    self, GeneratedImage, Generator, GeneratorInfo, Interrupt, Job, JobContext, JobError, RunDir,
    SessionOptions, Target,
};
use clora_harness::harness::{attention_artifacts, method_job};

fn folder(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("clora-harness-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd/tiny-a")
}

/// Writes a config (and two LoRA files) into `dir`; `methods` is TOML appended at the end.
fn experiment(dir: &Path, model: &Path, methods: &str) -> Experiment {
    std::fs::write(dir.join("cat.safetensors"), b"cat lora").unwrap();
    std::fs::write(dir.join("dog.safetensors"), b"dog lora").unwrap();
    let text = format!(
        r#"
seeds = [0, 1]
samples_per_prompt = 2
[run]
name = "t"
[model]
path = "{}"
[[loras]]
name = "cat"
path = "cat.safetensors"
trigger = "sks"
class_noun = "cat"
[[loras]]
name = "dog"
path = "dog.safetensors"
trigger = "zwx"
class_noun = "dog"
[[prompt_sets]]
name = "pairs"
prompts = ["a {{cat}} and a {{dog}}", "a {{dog}} near a {{cat}}"]
[[prompt_sets]]
name = "singles"
prompts = ["a {{cat}} alone"]
[sampler]
steps = 2
width = 64
height = 64
[metrics]
scores = ["mean_luma", "rms_contrast"]
[report]
trade_off = ["mean_luma", "rms_contrast"]
{methods}
"#,
        model.display()
    );
    std::fs::write(dir.join("exp.toml"), text).unwrap();
    config::load(&dir.join("exp.toml")).unwrap_or_else(|e| panic!("{e}"))
}

const METHODS: &str = r#"
[[methods]]
method = "base"
[[methods]]
method = "merge"
params = { scale = [0.5, 1.0] }
[[methods]]
method = "single"
[[methods]]
method = "clora"
prompt_sets = ["pairs"]
params = { step_size = [10, 20], latent_update = [true, false], save_attention = false }
"#;

fn target() -> Target {
    Target {
        backend: "test".into(),
        device: "cpu".into(),
    }
}

fn plan_of(exp: &Experiment) -> harness::Plan {
    harness::plan(exp, &target(), &mut FileHasher::in_memory()).unwrap()
}

#[test]
fn planner_expands_the_grid_and_shares_noise_across_methods() {
    let dir = folder("plan");
    let exp = experiment(&dir, &dir.join("cat.safetensors"), METHODS);
    let plan = plan_of(&exp);
    // base 3 prompts x 2 seeds x 2 samples; merge x2 variants; single: 2 + 2 + 1 LoRAs; clora 4 variants x 2 prompts
    assert_eq!(plan.jobs.len(), 12 + 24 + 20 + 32);
    assert_eq!(plan.unique().len(), plan.jobs.len());
    let by = |kind: MethodKind| plan.jobs.iter().filter(move |j| j.kind == kind);
    // initial noise from (seed, prompt, sample) only
    let mut noise: BTreeMap<(usize, u64, usize), BTreeSet<u64>> = BTreeMap::new();
    for j in &plan.jobs {
        noise
            .entry((j.prompt.index, j.seed, j.sample))
            .or_default()
            .insert(j.noise_seed);
    }
    assert_eq!(noise.len(), 12);
    assert!(
        noise.values().all(|s| s.len() == 1),
        "one noise seed per (prompt, seed, sample)"
    );
    let distinct: BTreeSet<u64> = noise.values().flatten().copied().collect();
    assert_eq!(distinct.len(), 12);
    // prompts rendered per method
    let b = by(MethodKind::Base).next().unwrap();
    assert_eq!(
        (b.prompt.text.as_str(), b.loras.len()),
        ("a cat and a dog", 0)
    );
    let m = by(MethodKind::Merge).next().unwrap();
    assert_eq!(m.prompt.text, "a sks cat and a zwx dog");
    assert_eq!(
        m.loras.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        vec!["cat", "dog"]
    );
    let singles: Vec<&Job> = by(MethodKind::Single)
        .filter(|j| j.prompt.index == 0 && j.seed == 0 && j.sample == 0)
        .collect();
    assert_eq!(
        singles
            .iter()
            .map(|j| j.prompt.text.as_str())
            .collect::<Vec<_>>(),
        vec!["a sks cat and a dog", "a cat and a zwx dog"]
    );
    assert_eq!(singles[1].variant, "single[lora=dog]");
    let c = by(MethodKind::Clora).find(|j| j.prompt.index == 1).unwrap();
    assert_eq!(c.prompt.plain, "a dog near a cat");
    assert_eq!(
        c.prompt.branches,
        vec!["a zwx dog near a cat", "a dog near a sks cat"]
    );
    assert_eq!(c.variant, "clora[latent_update=true, step_size=10]");
    assert!(by(MethodKind::Clora).all(|j| j.prompt.set == "pairs"));
    // an entry identical in what makes the pixels shares the images
    let exp2 = experiment(
        &dir,
        &dir.join("cat.safetensors"),
        &format!("{METHODS}\n[[methods]]\nname = \"base-again\"\nmethod = \"base\"\n"),
    );
    let plan2 = plan_of(&exp2);
    assert_eq!(plan2.jobs.len(), plan.jobs.len() + 12);
    assert_eq!(plan2.unique().len(), plan.jobs.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Hashes by (variant, prompt, seed, sample).
fn hashes(plan: &harness::Plan) -> BTreeMap<(String, usize, u64, usize), String> {
    plan.jobs
        .iter()
        .map(|j| {
            (
                (j.variant.clone(), j.prompt.index, j.seed, j.sample),
                j.hash.clone(),
            )
        })
        .collect()
}

#[test]
fn a_changed_parameter_changes_only_the_affected_hashes() {
    let dir = folder("hashes");
    let model = dir.join("cat.safetensors");
    let a = hashes(&plan_of(&experiment(&dir, &model, METHODS)));
    // a CLoRA step size: only those jobs
    let b = hashes(&plan_of(&experiment(
        &dir,
        &model,
        &METHODS.replace("step_size = [10, 20]", "step_size = [10, 30]"),
    )));
    let changed: Vec<_> = a.keys().filter(|k| b.get(*k) != Some(&a[*k])).collect();
    assert_eq!(changed.len(), 16);
    assert!(changed.iter().all(|k| k.0.contains("step_size=20")));
    // a knob that does not touch the pixels: nothing
    let c = hashes(&plan_of(&experiment(
        &dir,
        &model,
        &METHODS.replace("save_attention = false", "save_attention = true"),
    )));
    assert_eq!(a, c);
    // the content of one LoRA file: every job that applies it, no other
    let plan_a = plan_of(&experiment(&dir, &model, METHODS));
    let exp = experiment(&dir, &model, METHODS);
    std::fs::write(dir.join("dog.safetensors"), b"dog lora v2").unwrap();
    let e = hashes(&plan_of(&exp));
    for j in &plan_a.jobs {
        let k = (j.variant.clone(), j.prompt.index, j.seed, j.sample);
        let uses_dog = j.loras.iter().any(|l| l.name == "dog");
        assert_eq!(a[&k] != e[&k], uses_dog, "{k:?}");
    }
    // a sampler setting: everything
    let mut exp = experiment(&dir, &model, METHODS);
    exp.sampler.guidance = 5.0;
    let f = hashes(&plan_of(&exp));
    assert!(a.iter().all(|(k, h)| f[k] != *h));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lora_weights_set_the_jobs_weights_and_change_only_their_images() {
    let dir = folder("loraweights");
    let model = dir.join("cat.safetensors");
    let plain = hashes(&plan_of(&experiment(&dir, &model, METHODS)));
    let plan = plan_of(&experiment(
        &dir,
        &model,
        &METHODS.replace(
            "params = { scale = [0.5, 1.0] }",
            "params = { scale = [0.5, 1.0], lora_weights = [{ dog = 1.0 }, { dog = 0.25 }] }",
        ),
    ));
    let weighted = hashes(&plan);
    for j in plan.jobs.iter().filter(|j| j.kind == MethodKind::Merge) {
        let dog = j.variant.contains("dog=0.25");
        for l in &j.loras {
            let w = if dog && l.name == "dog" { 0.25 } else { 1.0 };
            assert_eq!(l.weight, w, "{} {}", j.variant, l.name);
        }
        // the same job without the table: same image where the weights it sets are the [[loras]] ones
        let unweighted = j
            .variant
            .replace("lora_weights={dog=1}, ", "")
            .replace("lora_weights={dog=0.25}, ", "");
        let same = plain[&(unweighted, j.prompt.index, j.seed, j.sample)]
            == weighted[&(j.variant.clone(), j.prompt.index, j.seed, j.sample)];
        let uses_dog = j.loras.iter().any(|l| l.name == "dog");
        assert_eq!(
            same,
            !(dog && uses_dog),
            "{} prompt {}",
            j.variant,
            j.prompt.index
        );
    }
    // the other methods' images do not move
    for (k, h) in &plain {
        if !k.0.starts_with("merge") {
            assert_eq!(&weighted[k], h, "{k:?}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A generator for runner tests: a flat image whose colour derives from the job's noise seed and hash,
/// recording every job it is asked for.
#[derive(Default)]
struct Recorder {
    calls: Vec<String>,
    fail_kind: Option<MethodKind>,
}

impl Generator for Recorder {
    fn info(&self) -> GeneratorInfo {
        GeneratorInfo {
            target: target(),
            dtype: "f32".into(),
        }
    }

    fn generate(&mut self, job: &Job, _ctx: &JobContext<'_>) -> Result<GeneratedImage, JobError> {
        self.calls.push(job.hash.clone());
        if Some(job.kind) == self.fail_kind {
            return Err(JobError::Failed(format!("{} refuses", job.kind)));
        }
        let h = u64::from_str_radix(&job.hash[..8], 16).unwrap();
        let mut img = image::RgbImage::new(8, 8);
        for (i, p) in img.pixels_mut().enumerate() {
            let v = (job.noise_seed as usize).wrapping_add(i * 7) as u8;
            *p = image::Rgb([v, (h >> 8) as u8, (h >> 16) as u8 ^ (i as u8)]);
        }
        // as the real generator: the files it saved, recorded whenever the job asks for attention maps
        let details = if method_job::save_attention(job) {
            serde_json::json!({ attention_artifacts::DETAILS_KEY: [] })
        } else {
            serde_json::Value::Null
        };
        Ok(GeneratedImage {
            image: img,
            timings: BTreeMap::from([("total".to_string(), 0.0)]),
            details,
        })
    }
}

fn session(exp: &Experiment, out: &Path, g: &mut dyn Generator) -> harness::SessionOutcome {
    harness::run_experiment(exp, out, g, &Interrupt::new(), &SessionOptions::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_runner_skips_done_images_and_reruns_only_affected_jobs() {
    let dir = folder("rerun");
    let out = dir.join("results");
    let model = dir.join("cat.safetensors");
    let exp = experiment(&dir, &model, METHODS);
    let mut g = Recorder::default();
    let o = session(&exp, &out, &mut g);
    assert_eq!(g.calls.len(), 88);
    assert_eq!(
        (
            o.generation.generated,
            o.generation.skipped,
            o.generation.failed
        ),
        (88, 0, 0)
    );
    // again: nothing to do
    let mut g = Recorder::default();
    let o = session(&exp, &out, &mut g);
    assert!(g.calls.is_empty());
    assert_eq!(o.generation.skipped, 88);
    // one axis value changed: only its jobs
    let exp2 = experiment(
        &dir,
        &model,
        &METHODS.replace("step_size = [10, 20]", "step_size = [10, 30]"),
    );
    let mut g = Recorder::default();
    let o = session(&exp2, &out, &mut g);
    assert_eq!(g.calls.len(), 16);
    assert_eq!(o.generation.skipped, 72);
    let rows = manifest::read(&o.run).unwrap();
    assert_eq!(rows.len(), 88);
    assert!(rows.iter().all(|r| r.status == manifest::DONE));
    assert_eq!(
        rows.iter()
            .filter(|r| r.variant.contains("step_size=30"))
            .count(),
        16
    );
    // a damaged image is made again
    let victim = &rows[0].hash;
    std::fs::write(o.run.image(victim), b"not a png").unwrap();
    let mut g = Recorder::default();
    session(&exp2, &out, &mut g);
    assert_eq!(g.calls, vec![victim.clone()]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn turning_save_attention_on_remakes_the_images_without_their_maps_once() {
    let dir = folder("attention");
    let out = dir.join("results");
    let model = dir.join("cat.safetensors");
    let mut g = Recorder::default();
    session(&experiment(&dir, &model, METHODS), &out, &mut g);
    assert_eq!(g.calls.len(), 88);
    // the same jobs (the knob is not in their hashes), but the CLoRA images have no maps yet: only they
    let with_maps = experiment(
        &dir,
        &model,
        &METHODS.replace("save_attention = false", "save_attention = true"),
    );
    let mut g = Recorder::default();
    let o = session(&with_maps, &out, &mut g);
    assert_eq!(g.calls.len(), 32);
    assert_eq!(o.generation.skipped, 56);
    let rows = manifest::read(&o.run).unwrap();
    let clora: Vec<_> = rows
        .iter()
        .filter(|r| r.kind == "clora")
        .map(|r| &r.hash)
        .collect();
    assert!(g.calls.iter().all(|h| clora.contains(&h)));
    // now they have them: nothing to do, and turning the knob off again keeps them
    let mut g = Recorder::default();
    session(&with_maps, &out, &mut g);
    assert!(g.calls.is_empty());
    let mut g = Recorder::default();
    session(&experiment(&dir, &model, METHODS), &out, &mut g);
    assert!(g.calls.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shards_split_the_images_without_overlap_and_a_plain_run_finishes_the_report() {
    let dir = folder("shards");
    let out = dir.join("results");
    let model = dir.join("cat.safetensors");
    let exp = experiment(&dir, &model, METHODS);
    let mut seen: Vec<String> = Vec::new();
    for index in 0..3 {
        let options = SessionOptions {
            run: harness::RunOptions {
                shard: Some(format!("{index}/3").parse().unwrap()),
                ..Default::default()
            },
            eval: false,
            report: false,
        };
        let mut g = Recorder::default();
        let o = harness::run_experiment(&exp, &out, &mut g, &Interrupt::new(), &options)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            (29..=30).contains(&g.calls.len()),
            "shard {index}/3 made {}",
            g.calls.len()
        );
        assert_eq!(o.generation.images, g.calls.len());
        assert!(g.calls.iter().all(|h| !seen.contains(h)), "shards overlap");
        seen.extend(g.calls);
    }
    assert_eq!(seen.len(), 88);
    // every image exists: the plain run makes nothing and writes the report
    let mut g = Recorder::default();
    let o = session(&exp, &out, &mut g);
    assert!(g.calls.is_empty());
    assert_eq!(o.generation.skipped, 88);
    assert!(o.report.is_some());
    for bad in ["3/3", "1", "a/2", "0/0"] {
        assert!(bad.parse::<harness::Shard>().is_err(), "{bad} accepted");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failed_jobs_are_recorded_and_the_run_goes_on() {
    let dir = folder("failures");
    let exp = experiment(&dir, &dir.join("cat.safetensors"), METHODS);
    let mut g = Recorder {
        fail_kind: Some(MethodKind::Merge),
        ..Default::default()
    };
    let o = session(&exp, &dir.join("results"), &mut g);
    assert_eq!((o.generation.failed, o.generation.generated), (24, 64));
    let rows = manifest::read(&o.run).unwrap();
    let merge: Vec<_> = rows.iter().filter(|r| r.kind == "merge").collect();
    assert!(merge.iter().all(|r| r.status == manifest::FAILED
        && r.error.as_deref() == Some("merge refuses")
        && r.image.is_none()));
    // failures are retried on the next run, and succeed now
    let mut g = Recorder::default();
    let o = session(&exp, &dir.join("results"), &mut g);
    assert_eq!(g.calls.len(), 24);
    assert!(manifest::read(&o.run)
        .unwrap()
        .iter()
        .all(|r| r.status == manifest::DONE));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sd_generator_makes_base_images_and_records_bad_lora_files() {
    let dir = folder("sd");
    let exp = experiment(&dir, &tiny_model(), "[[methods]]\nmethod = \"base\"\n[[methods]]\nmethod = \"clora\"\nprompt_sets = [\"pairs\"]\n");
    let mut g = harness::SdGenerator::<burn::backend::Autodiff<clora_harness::backend::Cpu>>::new(
        Default::default(),
        "flex",
        "cpu",
        exp.model.dtype,
    );
    let o = session(&exp, &dir.join("results"), &mut g);
    assert_eq!(o.generation.generated, 12);
    // the LoRA files of this config are not safetensors: every CLoRA job fails, naming the file; the run goes on
    assert_eq!(o.generation.failed, 8);
    assert!(o.generation.unavailable.is_empty());
    let rows = manifest::read(&o.run).unwrap();
    let clora = rows.iter().find(|r| r.kind == "clora").unwrap();
    let err = clora.error.as_deref().unwrap();
    assert!(
        err.contains("LoRA `cat`") && err.contains("cat.safetensors"),
        "{err}"
    );
    // the images decode, at the configured size, and differ across samples
    let base: Vec<_> = rows.iter().filter(|r| r.kind == "base").collect();
    let a = image::open(o.run.root.join(base[0].image.as_ref().unwrap()))
        .unwrap()
        .to_rgb8();
    let b = image::open(o.run.root.join(base[1].image.as_ref().unwrap()))
        .unwrap()
        .to_rgb8();
    assert_eq!(a.dimensions(), (64, 64));
    assert_ne!(a, b);
    // the same job again gives the same pixels (deterministic noise from the job's seed)
    let plan = plan_of_target(&exp, &g.info().target);
    let job = plan.jobs.iter().find(|j| j.hash == base[0].hash).unwrap();
    let ctx = JobContext {
        steps: &harness::generator::NoSteps,
        interrupt: &Interrupt::new(),
        artifact_dir: dir.join("artifacts"),
    };
    let again = g.generate(job, &ctx).unwrap();
    assert_eq!(again.image, a);
    assert!(o.report.unwrap().is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn plan_of_target(exp: &Experiment, t: &Target) -> harness::Plan {
    harness::plan(exp, t, &mut FileHasher::in_memory()).unwrap()
}

#[test]
fn report_tables_agree_with_the_scores() {
    let dir = folder("report");
    let exp = experiment(&dir, &dir.join("cat.safetensors"), METHODS);
    let o = session(&exp, &dir.join("results"), &mut Recorder::default());
    let run: &RunDir = &o.run;
    let report = run.report_dir();
    // the method table: recompute one mean from scores.parquet and the manifest
    let scores = read_parquet(&run.scores()).unwrap();
    let sp = run.scores();
    let (h, m, v) = (
        col_str(&scores, "hash", &sp).unwrap(),
        col_str(&scores, "metric", &sp).unwrap(),
        col_f64(&scores, "value", &sp).unwrap(),
    );
    let luma: BTreeMap<String, f64> = (0..h.len())
        .filter(|&i| m[i].as_deref() == Some("mean_luma"))
        .map(|i| (h[i].clone().unwrap(), v[i].unwrap()))
        .collect();
    let rows = manifest::read(run).unwrap();
    let merge05: Vec<f64> = rows
        .iter()
        .filter(|r| r.variant == "merge[scale=0.5]")
        .map(|r| luma[&r.hash])
        .collect();
    assert_eq!(merge05.len(), 12);
    let want = merge05.iter().sum::<f64>() / 12.0;
    let table = read_csv(&report.join("tables/methods.csv"));
    let row = table
        .iter()
        .find(|r| r["variant"] == "merge[scale=0.5]" && r["metric"] == "mean_luma")
        .expect("row of merge[scale=0.5]");
    assert!((row["mean"].parse::<f64>().unwrap() - want).abs() < 1e-12);
    assert_eq!(row["n"], "12");
    // one variant per method x metric row, no duplicates
    let keys: BTreeSet<(String, String)> = table
        .iter()
        .map(|r| (r["variant"].clone(), r["metric"].clone()))
        .collect();
    assert_eq!(keys.len(), table.len());
    assert_eq!(table.len(), (1 + 2 + 2 + 4) * 2);
    // ablation tables: clora's two axes pool the other one
    let abl = read_csv(&report.join("tables/ablation_clora_step_size.csv"));
    let r10 = abl
        .iter()
        .find(|r| r["value"] == "10" && r["metric"] == "mean_luma")
        .unwrap();
    assert_eq!(r10["n"], "16");
    assert!(report
        .join("tables/ablation_clora_latent_update.csv")
        .is_file());
    assert!(report.join("tables/ablation_single_lora.csv").is_file());
    // plots and grids
    for f in [
        "plots/methods_mean_luma.png",
        "plots/sweep_step_size_mean_luma.png",
        "plots/sweep_latent_update_rms_contrast.png",
        "plots/sweep_scale_mean_luma.png",
        "plots/tradeoff_mean_luma_rms_contrast.png",
        "grids/grid_pairs_seed0.png",
        "grids/grid_singles_seed0.png",
    ] {
        let img = image::open(report.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(img.width() > 300 && img.height() > 150, "{f}");
    }
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        md.contains("| clora[latent_update=true, step_size=10] | 8 |"),
        "{md}"
    );
    assert!(md.contains("### clora: step_size"));
    // per prompt set: the same mean over that set's rows only
    let pairs = read_csv(&report.join("tables/methods_pairs.csv"));
    let want: Vec<f64> = rows
        .iter()
        .filter(|r| r.variant == "merge[scale=0.5]" && r.prompt_set == "pairs")
        .map(|r| luma[&r.hash])
        .collect();
    assert_eq!(want.len(), 8);
    let row = pairs
        .iter()
        .find(|r| r["variant"] == "merge[scale=0.5]" && r["metric"] == "mean_luma")
        .expect("row of merge[scale=0.5] in the pairs table");
    assert_eq!(row["n"], "8");
    assert!((row["mean"].parse::<f64>().unwrap() - want.iter().sum::<f64>() / 8.0).abs() < 1e-12);
    let singles = read_csv(&report.join("tables/methods_singles.csv"));
    assert!(singles.iter().all(|r| !r["variant"].starts_with("clora")));
    // nor a row in its Markdown table: clora runs on `pairs` only
    let singles_md = std::fs::read_to_string(report.join("tables/methods_singles.md")).unwrap();
    assert!(
        singles_md.contains("| merge[scale=0.5] | 4 |"),
        "{singles_md}"
    );
    assert!(!singles_md.contains("| clora"), "{singles_md}");
    assert!(md.contains("### Prompt set `pairs`") && md.contains("### Prompt set `singles`"));
    // seconds per image: one row per variant (the recorder reports 0 s)
    let times = read_csv(&report.join("tables/times.csv"));
    assert_eq!(times.len(), 1 + 2 + 2 + 4);
    assert!(times
        .iter()
        .all(|r| r["metric"] == "seconds_per_image" && r["mean"].parse::<f64>().unwrap() == 0.0));
    assert!(md.contains("## Time per image"));
    // the report is a pure function of the run folder
    let first = std::fs::read(report.join("tables/methods.csv")).unwrap();
    clora_harness::report::write(run).unwrap();
    assert_eq!(
        std::fs::read(report.join("tables/methods.csv")).unwrap(),
        first
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A small CSV reader for the report's tables (no quoted commas in these).
fn read_csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(|s| s.trim_matches('"').to_string())
        .collect();
    lines
        .map(|l| {
            let cells = split_csv(l);
            header.iter().cloned().zip(cells).collect()
        })
        .collect()
}

fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}
