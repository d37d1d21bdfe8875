//! Scheduler parity with diffusers 0.27.2 (fixtures made by tools/fixtures/make_sd_fixtures.py, cases in
//! tools/fixtures/scheduler_cases.py): timesteps, sigmas, alphas_cumprod and init_noise_sigma within 1e-6
//! relative; every scaled input, prev_sample and x0 prediction within 1e-5 absolute, iterating the whole
//! trajectory from `sample0` with our own samples.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use clora_harness::schedulers::{
    build, DdimScheduler, DpmSolverMultistepScheduler, EulerDiscreteScheduler, Scheduler, SchedulerConfig,
    SchedulerKind,
};
use common::{device, fixtures, max_abs, max_abs_diff, Reference, B};

const REL_TOL: f64 = 1e-6;
const ABS_TOL: f32 = 1e-5;

fn case_dir() -> PathBuf {
    fixtures().join("schedulers")
}

struct Case {
    name: String,
    json_path: PathBuf,
    kind: SchedulerKind,
    config: SchedulerConfig,
    steps: usize,
    reference: Reference,
}

fn load_case(name: &str) -> Case {
    let json_path = case_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&json_path).unwrap_or_else(|e| panic!("{}: {e}", json_path.display()));
    // Python's json writes `-Infinity` (DPM-Solver's lambda_min_clipped in `resolved_config`).
    let text = text.replace("-Infinity", "null").replace("Infinity", "null").replace("NaN", "null");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let config_text = serde_json::to_string(&json["config"]).unwrap();
    let config = SchedulerConfig::from_json_str(&config_text, &json_path).unwrap();
    let steps = json["num_inference_steps"].as_u64().expect("num_inference_steps") as usize;
    let kind = match json["class"].as_str().expect("class") {
        "DDIMScheduler" => SchedulerKind::Ddim,
        "EulerDiscreteScheduler" => SchedulerKind::Euler,
        "DPMSolverMultistepScheduler" => SchedulerKind::DpmPp2m,
        other => panic!("{name}: unexpected class {other}"),
    };
    if let Some(eta) = json["step_kwargs"].get("eta") {
        assert_eq!(eta.as_f64(), Some(0.0), "{name}: only eta = 0 is supported");
    }
    let reference = Reference::open(&case_dir().join(format!("{name}.safetensors")));
    Case {
        name: name.to_string(),
        json_path,
        kind,
        config,
        steps,
        reference,
    }
}

/// Largest relative difference (|a - b| / max(|b|, tiny)), asserting it is within `tol`.
fn assert_rel(what: &str, ours: &[f64], reference: &[f64], tol: f64) -> f64 {
    assert_eq!(ours.len(), reference.len(), "{what}: length {} vs reference {}", ours.len(), reference.len());
    let mut worst = 0f64;
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        let err = if a == b { 0.0 } else { (a - b).abs() / b.abs().max(1e-30) };
        assert!(err <= tol, "{what}[{i}]: ours {a} vs reference {b} (rel {err:e})");
        worst = worst.max(err);
    }
    worst
}

fn slice_k(values: &(Vec<f32>, Vec<usize>), k: usize) -> (Vec<f32>, Vec<usize>) {
    let shape = values.1[1..].to_vec();
    let n: usize = shape.iter().product();
    (values.0[k * n..(k + 1) * n].to_vec(), shape)
}

fn to_tensor(values: &(Vec<f32>, Vec<usize>)) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(values.0.clone(), values.1.clone()), &device())
}

/// Per-case maxima, printed for the test log.
#[derive(Default, Debug)]
struct Errors {
    timesteps_rel: f64,
    sigmas_rel: f64,
    alphas_cumprod_rel: f64,
    init_noise_sigma_rel: f64,
    scaled_abs: f32,
    prev_abs: f32,
    x0_abs: f32,
    prev_ref_max: f32,
}

/// Runs the whole trajectory from `sample0`, comparing each step, and returns the final sample.
fn run_trajectory(case: &Case, scheduler: &mut dyn Scheduler<B>, errors: &mut Errors) -> Tensor<B, 4> {
    let r = &case.reference;
    let model_outputs = r.f32("model_outputs");
    let scaled_inputs = r.f32("scaled_inputs");
    let prev_samples = r.f32("prev_samples");
    let x0s = r.has("pred_original_samples").then(|| r.f32("pred_original_samples"));
    let k_steps = model_outputs.1[0];
    assert_eq!(k_steps, scheduler.num_inference_steps(), "{}: step count", case.name);
    let mut sample: Tensor<B, 4> = r.tensor("sample0");
    for k in 0..k_steps {
        let scaled = scheduler.scale_model_input(sample.clone(), k);
        let e = max_abs_diff(&scaled, &slice_k(&scaled_inputs, k));
        assert!(e <= ABS_TOL, "{}: scaled input {k}: max abs error {e:e}", case.name);
        errors.scaled_abs = errors.scaled_abs.max(e);

        let out = scheduler.step_output(to_tensor(&slice_k(&model_outputs, k)), k, sample);
        let reference_prev = slice_k(&prev_samples, k);
        let e = max_abs_diff(&out.prev_sample, &reference_prev);
        assert!(e <= ABS_TOL, "{}: prev_sample {k}: max abs error {e:e}", case.name);
        errors.prev_abs = errors.prev_abs.max(e);
        errors.prev_ref_max = errors.prev_ref_max.max(max_abs(&reference_prev));
        if let Some(x0s) = &x0s {
            let e = max_abs_diff(&out.pred_original_sample, &slice_k(x0s, k));
            assert!(e <= ABS_TOL, "{}: pred_original_sample {k}: max abs error {e:e}", case.name);
            errors.x0_abs = errors.x0_abs.max(e);
        }
        sample = out.prev_sample;
    }
    sample
}

fn check_case(name: &str) {
    let case = load_case(name);
    let r = &case.reference;
    let mut errors = Errors::default();
    let mut scheduler = build::<B>(case.kind, &case.config, case.steps)
        .unwrap_or_else(|e| panic!("{name}: building the scheduler failed: {e}"));

    // Schedule.
    let ref_timesteps: Vec<f64> = match case.kind {
        SchedulerKind::Euler => r.f32("timesteps").0.iter().map(|&t| t as f64).collect(),
        _ => r.i64("timesteps").0.iter().map(|&t| t as f64).collect(),
    };
    errors.timesteps_rel = assert_rel(&format!("{name}: timesteps"), scheduler.timesteps(), &ref_timesteps, REL_TOL);
    let ref_ac: Vec<f64> = r.f32("alphas_cumprod").0.iter().map(|&a| a as f64).collect();
    let ours_ac: Vec<f64> = scheduler.alphas_cumprod().iter().map(|&a| a as f64).collect();
    errors.alphas_cumprod_rel = assert_rel(&format!("{name}: alphas_cumprod"), &ours_ac, &ref_ac, REL_TOL);
    let ref_ins = r.f32("init_noise_sigma").0[0] as f64;
    errors.init_noise_sigma_rel =
        assert_rel(&format!("{name}: init_noise_sigma"), &[scheduler.init_noise_sigma()], &[ref_ins], REL_TOL);
    if r.has("sigmas") {
        let ref_sigmas: Vec<f64> = r.f32("sigmas").0.iter().map(|&s| s as f64).collect();
        let ours: Vec<f64> = match case.kind {
            SchedulerKind::Euler => EulerDiscreteScheduler::new(&case.config, case.steps).unwrap().sigmas().to_vec(),
            SchedulerKind::DpmPp2m => DpmSolverMultistepScheduler::<B>::new(&case.config, case.steps)
                .unwrap()
                .sigmas()
                .to_vec(),
            SchedulerKind::Ddim => unreachable!("DDIM has no sigmas"),
        }
        .into_iter()
        .map(|s| s as f64)
        .collect();
        errors.sigmas_rel = assert_rel(&format!("{name}: sigmas"), &ours, &ref_sigmas, REL_TOL);
    }

    // Trajectory, twice on the same scheduler: a multistep solver must start afresh at step 0.
    let first = run_trajectory(&case, scheduler.as_mut(), &mut errors);
    scheduler.reset();
    let second = run_trajectory(&case, scheduler.as_mut(), &mut errors);
    let first: Vec<f32> = first.into_data().to_vec().unwrap();
    let second: Vec<f32> = second.into_data().to_vec().unwrap();
    assert_eq!(first, second, "{name}: a second run on the same scheduler differs");

    println!(
        "{name} ({}, {} steps, {}): timesteps rel {:.1e}, sigmas rel {:.1e}, alphas_cumprod rel {:.1e}, \
         init_noise_sigma rel {:.1e}; max abs error: scaled inputs {:.2e}, prev_samples {:.2e} (|ref| <= {:.2}), \
         x0 {:.2e}",
        case.kind,
        case.steps,
        case.json_path.file_name().unwrap().to_string_lossy(),
        errors.timesteps_rel,
        errors.sigmas_rel,
        errors.alphas_cumprod_rel,
        errors.init_noise_sigma_rel,
        errors.scaled_abs,
        errors.prev_abs,
        errors.prev_ref_max,
        errors.x0_abs,
    );
}

#[test]
fn ddim_leading() {
    check_case("ddim_leading");
}

#[test]
fn ddim_trailing() {
    check_case("ddim_trailing");
}

#[test]
fn ddim_linspace() {
    check_case("ddim_linspace");
}

#[test]
fn ddim_vpred() {
    check_case("ddim_vpred");
}

#[test]
fn euler_leading() {
    check_case("euler_leading");
}

#[test]
fn euler_karras() {
    check_case("euler_karras");
}

#[test]
fn dpmpp2m() {
    check_case("dpmpp2m");
}

#[test]
fn dpmpp2m_karras() {
    check_case("dpmpp2m_karras");
}

/// The concrete constructors give the same schedule as `build`.
#[test]
fn concrete_constructors_match_build() {
    let case = load_case("ddim_leading");
    let direct = DdimScheduler::new(&case.config, case.steps).unwrap();
    let boxed = build::<B>(SchedulerKind::Ddim, &case.config, case.steps).unwrap();
    assert_eq!(Scheduler::<B>::timesteps(&direct), boxed.timesteps());
}

/// `from_file` reads a diffusers `scheduler_config.json`; errors name the file and the field.
#[test]
fn from_file_and_errors() {
    let dir = std::env::temp_dir().join(format!("clora-schedulers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("scheduler_config.json");
    std::fs::write(
        &path,
        r#"{"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
            "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null,
            "clip_sample": false}"#,
    )
    .unwrap();
    let mut config = SchedulerConfig::from_file(&path).unwrap();
    assert_eq!(config.source.as_deref(), Some(path.as_path()));
    config.source = None;
    let mut sd15 = SchedulerConfig::sd15_default();
    sd15.source = None;
    assert_eq!(config, sd15);

    std::fs::write(&path, r#"{"beta_schedule": "cosine"}"#).unwrap();
    let msg = SchedulerConfig::from_file(&path).unwrap_err().to_string();
    assert!(msg.contains("scheduler_config.json") && msg.contains("beta_schedule"), "{msg}");
    std::fs::write(&path, r#"{"steps_offset": 1.5}"#).unwrap();
    let msg = SchedulerConfig::from_file(&path).unwrap_err().to_string();
    assert!(msg.contains("steps_offset"), "{msg}");
    std::fs::write(&path, "{not json").unwrap();
    let msg = SchedulerConfig::from_file(&path).unwrap_err().to_string();
    assert!(msg.contains("scheduler_config.json"), "{msg}");
    let missing = Path::new("/nonexistent/scheduler_config.json");
    let msg = SchedulerConfig::from_file(missing).unwrap_err().to_string();
    assert!(msg.contains("/nonexistent/scheduler_config.json"), "{msg}");
    std::fs::remove_dir_all(&dir).ok();
}
