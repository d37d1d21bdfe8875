//! The toyworld oracle as a harness metric: images rendered by the world's own renderer, one with both concepts
//! of the prompt and one with only the first, get the presence and mixing scores they must.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clora_harness::config::{self, MethodKind};
use clora_harness::harness::manifest;
use clora_harness::harness::table::{col_f64, col_str, read_parquet};
use clora_harness::harness::{
    self, GeneratedImage, Generator, GeneratorInfo, Interrupt, Job, JobContext, JobError,
    SessionOptions, Target,
};
use clora_harness::toyworld::concept::Concept;
use clora_harness::toyworld::palette::Background;
use clora_harness::toyworld::render::render;
use clora_harness::toyworld::scene::{place, ObjectRequest, SceneRequest, Style};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// `merge` jobs get both concepts, `base` jobs only the dotted circle.
struct Painter;

impl Generator for Painter {
    fn info(&self) -> GeneratorInfo {
        GeneratorInfo {
            target: Target {
                backend: "test".into(),
                device: "cpu".into(),
            },
            dtype: "f32".into(),
        }
    }

    fn generate(&mut self, job: &Job, _ctx: &JobContext<'_>) -> Result<GeneratedImage, JobError> {
        let mut objects = vec![ObjectRequest::concept(Concept::Dots).unwrap()];
        if job.kind == MethodKind::Merge {
            objects.push(ObjectRequest::concept(Concept::Stripes).unwrap());
        }
        let request = SceneRequest {
            background: Background::White,
            style: Style::Solid,
            objects,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(job.noise_seed);
        let scene = place(&request, &mut rng).map_err(|e| JobError::Failed(e.to_string()))?;
        Ok(GeneratedImage {
            image: render(&scene),
            timings: BTreeMap::new(),
            details: serde_json::Value::Null,
        })
    }
}

#[test]
fn oracle_scores_follow_the_rendered_scenes() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("clora-harness-toyeval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dots.safetensors"), b"x").unwrap();
    std::fs::write(dir.join("stripes.safetensors"), b"y").unwrap();
    std::fs::write(
        dir.join("exp.toml"),
        r#"
seeds = { start = 0, count = 4 }
[model]
path = "dots.safetensors"
[[loras]]
name = "dots"
path = "dots.safetensors"
trigger = "dtz"
class_noun = "circle"
[[loras]]
name = "stripes"
path = "stripes.safetensors"
trigger = "stz"
class_noun = "square"
[[prompt_sets]]
name = "two"
prompts = ["a {dots} and a {stripes}"]
[[methods]]
method = "base"
[[methods]]
method = "merge"
[sampler]
steps = 1
[metrics]
scores = ["toy_present", "toy_all_present", "toy_mixing", "toy_exact", "toy_colour", "toy_all_colours"]
[report]
trade_off = ["toy_all_present", "toy_mixing"]
"#,
    )
    .unwrap();
    let exp = config::load(&dir.join("exp.toml")).unwrap_or_else(|e| panic!("{e}"));
    let o = harness::run_experiment(
        &exp,
        &dir.join("results"),
        &mut Painter,
        &Interrupt::new(),
        &SessionOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.metrics_unavailable.is_empty());
    let rows = manifest::read(&o.run).unwrap();
    let kind: BTreeMap<String, String> = rows
        .iter()
        .map(|r| (r.hash.clone(), r.kind.clone()))
        .collect();
    let p = o.run.scores();
    let df = read_parquet(&p).unwrap();
    let (h, m, c, v) = (
        col_str(&df, "hash", &p).unwrap(),
        col_str(&df, "metric", &p).unwrap(),
        col_str(&df, "concept", &p).unwrap(),
        col_f64(&df, "value", &p).unwrap(),
    );
    let mean = |k: &str, metric: &str, concept: Option<&str>| {
        let vals: Vec<f64> = (0..h.len())
            .filter(|&i| {
                kind[h[i].as_ref().unwrap()] == k
                    && m[i].as_deref() == Some(metric)
                    && c[i].as_deref() == concept
            })
            .map(|i| v[i].unwrap())
            .collect();
        assert_eq!(vals.len(), 4, "{k} {metric} {concept:?}");
        vals.iter().sum::<f64>() / 4.0
    };
    assert_eq!(mean("merge", "toy_all_present", None), 1.0);
    assert_eq!(mean("merge", "toy_exact", None), 1.0);
    assert_eq!(mean("merge", "toy_mixing", None), 0.0);
    assert_eq!(mean("base", "toy_all_present", None), 0.0);
    assert_eq!(mean("base", "toy_present", None), 0.5);
    assert_eq!(mean("base", "toy_present", Some("dots")), 1.0);
    assert_eq!(mean("base", "toy_present", Some("stripes")), 0.0);
    // partial presence: a rendered concept has its colour
    assert_eq!(mean("merge", "toy_all_colours", None), 1.0);
    assert_eq!(mean("base", "toy_colour", None), 0.5);
    assert_eq!(mean("base", "toy_colour", Some("dots")), 1.0);
    assert_eq!(mean("base", "toy_colour", Some("stripes")), 0.0);
    // the report tabulates the rates
    let report = std::fs::read_to_string(o.report.unwrap()).unwrap();
    assert!(report.contains("toy_all_present"));
    std::fs::remove_dir_all(&dir).unwrap();
}
