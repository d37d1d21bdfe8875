//! CLIP and DINO scores inside the harness: an experiment whose generator "makes" a fixture photo is scored with
//! the tiny transformers fixtures of `tests/metrics.rs`; `scores.parquet` holds the same values as transformers
//! (within 1e-4): CLIP-T of the prompt with class nouns only, CLIP-I and DINO per concept, their mean and min.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clora_harness::config;
use clora_harness::harness::table::{col_f64, col_str, read_parquet};
use clora_harness::harness::{
    self, GeneratedImage, Generator, GeneratorInfo, Interrupt, Job, JobContext, JobError,
    SessionOptions, Target,
};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics")
}

/// Every job's image is the photo `chelsea.png`.
struct Photo;

impl Generator for Photo {
    fn info(&self) -> GeneratorInfo {
        GeneratorInfo {
            target: Target {
                backend: "test".into(),
                device: "cpu".into(),
            },
            dtype: "f32".into(),
        }
    }

    fn generate(&mut self, _job: &Job, _ctx: &JobContext<'_>) -> Result<GeneratedImage, JobError> {
        let image = image::open(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/photos/chelsea.png"),
        )
        .unwrap()
        .to_rgb8();
        Ok(GeneratedImage {
            image,
            timings: BTreeMap::new(),
            details: Value::Null,
        })
    }
}

fn write_config(dir: &Path, clip: &str, dino: &str) -> PathBuf {
    std::fs::write(dir.join("cat.safetensors"), b"cat lora").unwrap();
    std::fs::write(dir.join("cup.safetensors"), b"cup lora").unwrap();
    let f = fixtures();
    let text = format!(
        r#"
seeds = [0]
[run]
name = "scored"
[model]
path = "cat.safetensors"
[[loras]]
name = "cat"
path = "cat.safetensors"
trigger = "sks"
class_noun = "cat"
references = "{cat}"
[[loras]]
name = "cup"
path = "cup.safetensors"
trigger = "zwx"
class_noun = "cup"
references = ["{cup0}", "{cup1}"]
[[prompt_sets]]
name = "p"
prompts = ["a {{cat}} next to a {{cup}}"]
[[methods]]
method = "merge"
[sampler]
steps = 1
[metrics]
scores = ["clip_t", "clip_score", "clip_i", "dino"]
clip_model = "{clip}"
dino_model = "{dino}"
batch_size = 2
"#,
        cat = f.join("concepts/cat").display(),
        cup0 = f.join("concepts/cup/cup_0.png").display(),
        cup1 = f.join("concepts/cup/cup_1.png").display(),
        clip = f.join("models").join(clip).display(),
        dino = f.join("models").join(dino).display(),
    );
    let p = dir.join("exp.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn harness_scores_equal_the_transformers_reference() {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("scores.json")).unwrap())
            .unwrap();
    let dir = std::env::temp_dir().join(format!("clora-harness-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let exp =
        config::load(&write_config(&dir, "clip-a", "vit-a")).unwrap_or_else(|e| panic!("{e}"));
    let o = harness::run_experiment(
        &exp,
        &dir.join("results"),
        &mut Photo,
        &Interrupt::new(),
        &SessionOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.metrics_unavailable.is_empty());
    assert_eq!(o.eval.as_ref().unwrap().scored, 1);
    let path = o.run.scores();
    let df = read_parquet(&path).unwrap();
    let (m, c, v) = (
        col_str(&df, "metric", &path).unwrap(),
        col_str(&df, "concept", &path).unwrap(),
        col_f64(&df, "value", &path).unwrap(),
    );
    let get = |metric: &str, concept: Option<&str>| -> f64 {
        let i = (0..m.len())
            .find(|&i| m[i].as_deref() == Some(metric) && c[i].as_deref() == concept)
            .unwrap_or_else(|| panic!("no {metric} {concept:?} row"));
        v[i].unwrap()
    };
    let want = doc["runs"]["clip-a+vit-a"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image"] == "chelsea.png")
        .unwrap();
    let f = |v: &Value| v.as_f64().unwrap();
    let checks = [
        (get("clip_t", None), f(&want["clip_t_cosine"])),
        (get("clip_score", None), f(&want["clip_score"])),
        (
            get("clip_i", Some("cat")),
            f(&want["concepts"]["cat"]["clip_i"]),
        ),
        (
            get("dino", Some("cup")),
            f(&want["concepts"]["cup"]["dino"]),
        ),
        (get("clip_i", None), f(&want["clip_i_mean"])),
        (get("clip_i_min", None), f(&want["clip_i_min"])),
        (get("dino", None), f(&want["dino_mean"])),
        (get("dino_min", None), f(&want["dino_min"])),
    ];
    for (i, (got, want)) in checks.iter().enumerate() {
        // clip_score is 100 x a cosine
        let tol = if i == 1 { 1e-2 } else { 1e-4 };
        assert!((got - want).abs() <= tol, "check {i}: {got} vs {want}");
    }
    // the model ids are recorded with the scores
    let models = col_str(&df, "model", &path).unwrap();
    assert!(models.iter().flatten().any(|m| m.contains("clip-a")));
    assert!(models.iter().flatten().any(|m| m.contains("vit-a")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_metric_model_folder_is_named() {
    let dir = std::env::temp_dir().join(format!("clora-harness-badmetric-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // a DINO folder given as the CLIP model
    let exp = config::load(&write_config(&dir, "vit-a", "vit-a")).unwrap_or_else(|e| panic!("{e}"));
    let e = harness::run_experiment(
        &exp,
        &dir.join("results"),
        &mut Photo,
        &Interrupt::new(),
        &SessionOptions::default(),
    )
    .expect_err("a ViT folder is no CLIP model")
    .to_string();
    assert!(e.contains("vit-a"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
