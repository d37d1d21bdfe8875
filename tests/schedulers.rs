//! Scheduler parity with diffusers 0.27.2 (fixtures made by tools/fixtures/make_sd_fixtures.py, cases in
//! tools/fixtures/scheduler_cases.py): timesteps, sigmas, alphas_cumprod and init_noise_sigma within 1e-6
//! relative; every scaled input, prev_sample and x0 prediction within a few f32 ulps of the samples' scale
//! (`max(1e-5, 1e-6 * max |sample|)`, 1e-5 to 5e-5 here), each step from the reference's sample and over the
//! whole trajectory from `sample0` with our own samples. (torch's float32 sqrt/exp/log on CPU go through MKL,
//! whose kernels are not all correctly rounded; we compute correctly rounded values and accept the ulps.)

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use clora_harness::schedulers::{
    build, DdimScheduler, DpmSolverMultistepScheduler, EulerDiscreteScheduler, Scheduler,
    SchedulerConfig, SchedulerKind,
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
    let text = std::fs::read_to_string(&json_path)
        .unwrap_or_else(|e| panic!("{}: {e}", json_path.display()));
    // Python's json writes `-Infinity` (DPM-Solver's lambda_min_clipped in `resolved_config`).
    let text = text
        .replace("-Infinity", "null")
        .replace("Infinity", "null")
        .replace("NaN", "null");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let config_text = serde_json::to_string(&json["config"]).unwrap();
    let config = SchedulerConfig::from_json_str(&config_text, &json_path).unwrap();
    let steps = json["num_inference_steps"]
        .as_u64()
        .expect("num_inference_steps") as usize;
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
    assert_eq!(
        ours.len(),
        reference.len(),
        "{what}: length {} vs reference {}",
        ours.len(),
        reference.len()
    );
    let mut worst = 0f64;
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        let err = if a == b {
            0.0
        } else {
            (a - b).abs() / b.abs().max(1e-30)
        };
        assert!(
            err <= tol,
            "{what}[{i}]: ours {a} vs reference {b} (rel {err:e})"
        );
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
    Tensor::from_data(
        TensorData::new(values.0.clone(), values.1.clone()),
        &device(),
    )
}

/// Maximum errors of one trajectory run.
#[derive(Default, Debug, Clone, Copy)]
struct StepErrors {
    scaled: f32,
    prev: f32,
    x0: f32,
    /// Largest |reference prev_sample| (for scale).
    prev_ref_max: f32,
}

/// Runs the whole trajectory from `sample0`, comparing each scaled input, prev_sample and x0 prediction
/// with the reference within `tol`. With `teacher_forcing` each step gets the reference's sample (so a
/// step's error is its own); without, our own previous sample (so errors compound, as in a real run).
/// Returns the final sample and the maximum errors.
fn run_trajectory(
    case: &Case,
    scheduler: &mut dyn Scheduler<B>,
    teacher_forcing: bool,
    tol: f32,
) -> (Tensor<B, 4>, StepErrors) {
    let r = &case.reference;
    let mode = if teacher_forcing {
        "teacher-forced"
    } else {
        "free-running"
    };
    let model_outputs = r.f32("model_outputs");
    let scaled_inputs = r.f32("scaled_inputs");
    let prev_samples = r.f32("prev_samples");
    let x0s = r
        .has("pred_original_samples")
        .then(|| r.f32("pred_original_samples"));
    let k_steps = model_outputs.1[0];
    assert_eq!(
        k_steps,
        scheduler.num_inference_steps(),
        "{}: step count",
        case.name
    );
    let mut errors = StepErrors::default();
    let mut sample: Tensor<B, 4> = r.tensor("sample0");
    for k in 0..k_steps {
        let scaled = scheduler.scale_model_input(sample.clone(), k);
        let e = max_abs_diff(&scaled, &slice_k(&scaled_inputs, k));
        assert!(
            e <= tol,
            "{} ({mode}): scaled input {k}: max abs error {e:e} > {tol:e}",
            case.name
        );
        errors.scaled = errors.scaled.max(e);

        let out = scheduler.step_output(to_tensor(&slice_k(&model_outputs, k)), k, sample);
        let reference_prev = slice_k(&prev_samples, k);
        let e = max_abs_diff(&out.prev_sample, &reference_prev);
        assert!(
            e <= tol,
            "{} ({mode}): prev_sample {k}: max abs error {e:e} > {tol:e}",
            case.name
        );
        errors.prev = errors.prev.max(e);
        errors.prev_ref_max = errors.prev_ref_max.max(max_abs(&reference_prev));
        if let Some(x0s) = &x0s {
            let e = max_abs_diff(&out.pred_original_sample, &slice_k(x0s, k));
            assert!(
                e <= tol,
                "{} ({mode}): pred_original_sample {k}: max abs error {e:e} > {tol:e}",
                case.name
            );
            errors.x0 = errors.x0.max(e);
        }
        sample = if teacher_forcing {
            to_tensor(&reference_prev)
        } else {
            out.prev_sample
        };
    }
    (sample, errors)
}

fn check_case(name: &str) {
    let case = load_case(name);
    let r = &case.reference;
    let mut scheduler = build::<B>(case.kind, &case.config, case.steps)
        .unwrap_or_else(|e| panic!("{name}: building the scheduler failed: {e}"));

    // Schedule.
    let ref_timesteps: Vec<f64> = match case.kind {
        SchedulerKind::Euler => r.f32("timesteps").0.iter().map(|&t| t as f64).collect(),
        _ => r.i64("timesteps").0.iter().map(|&t| t as f64).collect(),
    };
    let timesteps_rel = assert_rel(
        &format!("{name}: timesteps"),
        scheduler.timesteps(),
        &ref_timesteps,
        REL_TOL,
    );
    let ref_ac: Vec<f64> = r
        .f32("alphas_cumprod")
        .0
        .iter()
        .map(|&a| a as f64)
        .collect();
    let ours_ac: Vec<f64> = scheduler
        .alphas_cumprod()
        .iter()
        .map(|&a| a as f64)
        .collect();
    let alphas_cumprod_rel = assert_rel(
        &format!("{name}: alphas_cumprod"),
        &ours_ac,
        &ref_ac,
        REL_TOL,
    );
    let ref_ins = r.f32("init_noise_sigma").0[0] as f64;
    let init_noise_sigma_rel = assert_rel(
        &format!("{name}: init_noise_sigma"),
        &[scheduler.init_noise_sigma()],
        &[ref_ins],
        REL_TOL,
    );
    let mut sigmas_rel = f64::NAN;
    if r.has("sigmas") {
        let ref_sigmas: Vec<f64> = r.f32("sigmas").0.iter().map(|&s| s as f64).collect();
        let ours: Vec<f64> = match case.kind {
            SchedulerKind::Euler => EulerDiscreteScheduler::new(&case.config, case.steps)
                .unwrap()
                .sigmas()
                .to_vec(),
            SchedulerKind::DpmPp2m => {
                DpmSolverMultistepScheduler::<B>::new(&case.config, case.steps)
                    .unwrap()
                    .sigmas()
                    .to_vec()
            }
            SchedulerKind::Ddim => unreachable!("DDIM has no sigmas"),
        }
        .into_iter()
        .map(|s| s as f64)
        .collect();
        sigmas_rel = assert_rel(&format!("{name}: sigmas"), &ours, &ref_sigmas, REL_TOL);
    }

    // A few ulps of the samples' scale (values reach ~50 here, where one f32 ulp is 3.8e-6).
    let tol = ABS_TOL.max(1e-6 * max_abs(&r.f32("prev_samples")));
    // Each step on the reference's own sample.
    let (_, forced) = run_trajectory(&case, scheduler.as_mut(), true, tol);

    // The whole trajectory on our own samples, on the same scheduler (a multistep solver starts afresh at
    // step 0); ulp differences of the coefficients compound over the steps, within the same bound.
    scheduler.reset();
    let free_tol = tol;
    let (first, free) = run_trajectory(&case, scheduler.as_mut(), false, free_tol);
    let (second, _) = run_trajectory(&case, scheduler.as_mut(), false, free_tol);
    let first: Vec<f32> = first.into_data().to_vec().unwrap();
    let second: Vec<f32> = second.into_data().to_vec().unwrap();
    assert_eq!(
        first, second,
        "{name}: a second run on the same scheduler differs"
    );

    let has_x0 = r.has("pred_original_samples");
    let x0 = |e: f32| {
        if has_x0 {
            format!("{e:.2e}")
        } else {
            "n/a".to_string()
        }
    };
    let sigmas = if sigmas_rel.is_nan() {
        "n/a".to_string()
    } else {
        format!("{sigmas_rel:.1e}")
    };
    println!(
        "{name} ({}, {} steps, {}): rel error timesteps {timesteps_rel:.1e}, sigmas {sigmas}, \
         alphas_cumprod {alphas_cumprod_rel:.1e}, init_noise_sigma {init_noise_sigma_rel:.1e}; max abs error \
         (|prev_sample| <= {:.2}) teacher-forced: scaled {:.2e}, prev {:.2e}, x0 {}; free-running \
         (tol {free_tol:.1e}): scaled {:.2e}, prev {:.2e}, x0 {}",
        case.kind,
        case.steps,
        case.json_path.file_name().unwrap().to_string_lossy(),
        forced.prev_ref_max,
        forced.scaled,
        forced.prev,
        x0(forced.x0),
        free.scaled,
        free.prev,
        x0(free.x0),
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
    assert!(
        msg.contains("scheduler_config.json") && msg.contains("beta_schedule"),
        "{msg}"
    );
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

/// More configurations, checked against values from diffusers 0.27.2 / torch 2.2.2 (CPU) embedded below:
/// zero-SNR rescale, cosine betas, trained betas, clipping, `sample` and `v_prediction`, `log_linear`,
/// continuous timesteps, Karras bounds, Heun, `sigma_min` final sigma, Lu lambdas, order 1,
/// `lambda_min_clipped`, step counts that do not divide 1000. The sample is `sin(0.7 i) *
/// init_noise_sigma` and the model output at step k `0.8 cos(0.3 i + k)` over a [1, 4, 2, 2] tensor; the
/// final sample after all steps must match within 1e-5 of its scale (DPM-Solver's ln/exp differ by an ulp
/// from MKL's, see `check_case`).
#[test]
fn more_configurations_match_diffusers() {
    let cases: serde_json::Value = serde_json::from_str(EXTRA_REFERENCE).unwrap();
    let n = 16;
    for (name, case) in cases.as_object().unwrap() {
        let mut cfg_json = case["config"].clone();
        let trained = cfg_json.get("trained_betas").is_some();
        if trained {
            cfg_json.as_object_mut().unwrap().remove("trained_betas");
        }
        let mut config = SchedulerConfig::from_json_str(
            &serde_json::to_string(&cfg_json).unwrap(),
            Path::new(name),
        )
        .unwrap();
        if trained {
            config.trained_betas = Some(clora_harness::schedulers::numerics::np_linspace(
                0.0001, 0.02, 1000,
            ));
        }
        let steps = case["steps"].as_u64().unwrap() as usize;
        let mut scheduler: Box<dyn Scheduler<B>> = match case["cls"].as_str().unwrap() {
            "DDIM" => Box::new(DdimScheduler::new(&config, steps).unwrap()),
            "Euler" => Box::new(EulerDiscreteScheduler::new(&config, steps).unwrap()),
            "DPM" => Box::new(DpmSolverMultistepScheduler::<B>::new(&config, steps).unwrap()),
            other => panic!("{other}"),
        };
        let floats = |key: &str| -> Vec<f64> {
            case[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        };
        let t_rel = assert_rel(
            &format!("{name}: timesteps"),
            scheduler.timesteps(),
            &floats("timesteps"),
            REL_TOL,
        );
        let ac_idx = [0usize, 1, 500, 998, 999];
        let ours_ac: Vec<f64> = ac_idx
            .iter()
            .map(|&i| scheduler.alphas_cumprod()[i] as f64)
            .collect();
        assert_rel(
            &format!("{name}: alphas_cumprod"),
            &ours_ac,
            &floats("alphas_cumprod"),
            REL_TOL,
        );
        assert_rel(
            &format!("{name}: init_noise_sigma"),
            &[scheduler.init_noise_sigma()],
            &[case["init_noise_sigma"].as_f64().unwrap()],
            REL_TOL,
        );
        if case.get("sigmas").is_some() {
            let ours: Vec<f64> = match case["cls"].as_str().unwrap() {
                "Euler" => EulerDiscreteScheduler::new(&config, steps)
                    .unwrap()
                    .sigmas()
                    .to_vec(),
                _ => DpmSolverMultistepScheduler::<B>::new(&config, steps)
                    .unwrap()
                    .sigmas()
                    .to_vec(),
            }
            .into_iter()
            .map(|s| s as f64)
            .collect();
            assert_rel(
                &format!("{name}: sigmas"),
                &ours,
                &floats("sigmas"),
                REL_TOL,
            );
        }
        let ins = scheduler.init_noise_sigma() as f32;
        let x: Vec<f32> = (0..n)
            .map(|i| (i as f64 * 0.7).sin() as f32 * ins)
            .collect();
        let mut sample: Tensor<B, 4> =
            Tensor::from_data(TensorData::new(x, [1, 4, 2, 2]), &device());
        for k in 0..scheduler.num_inference_steps() {
            let mo: Vec<f32> = (0..n)
                .map(|i| ((i as f64 * 0.3 + k as f64).cos() * 0.8) as f32)
                .collect();
            let mo = Tensor::from_data(TensorData::new(mo, [1, 4, 2, 2]), &device());
            let _ = scheduler.scale_model_input(sample.clone(), k);
            sample = scheduler.step(mo, k, sample);
        }
        let reference: Vec<f32> = floats("final").into_iter().map(|v| v as f32).collect();
        let scale = reference.iter().fold(1f32, |m, v| m.max(v.abs()));
        let err = max_abs_diff(&sample, &(reference, vec![1, 4, 2, 2]));
        println!("{name}: timesteps rel {t_rel:.1e}, final sample max abs error {err:.2e} (|ref| <= {scale:.2})");
        assert!(
            err <= ABS_TOL * scale,
            "{name}: final sample max abs error {err:e}"
        );
    }
}

// Made with this script (diffusers 0.27.2, torch 2.2.2, numpy 1.26.4; `trained_betas` replaced by its
// formula afterwards, `last_scaled` dropped):
//
// import json, math, numpy as np, torch
// from diffusers import DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler
// SD=dict(num_train_timesteps=1000,beta_start=0.00085,beta_end=0.012,beta_schedule="scaled_linear",clip_sample=False,set_alpha_to_one=False,steps_offset=1)
// def sd(**k): c=dict(SD); c.update(k); return c
// CASES={
//  "ddim_zero_snr_trailing_vpred": ("DDIM", sd(rescale_betas_zero_snr=True,timestep_spacing="trailing",prediction_type="v_prediction"), 10),
//  "ddim_cosine_clip_linspace": ("DDIM", dict(beta_schedule="squaredcos_cap_v2",clip_sample=True,clip_sample_range=0.8,set_alpha_to_one=True,timestep_spacing="linspace"), 8),
//  "ddim_trained_betas_sample": ("DDIM", dict(trained_betas=np.linspace(0.0001,0.02,1000).tolist(),prediction_type="sample",clip_sample=False), 5),
//  "ddim_trailing_30": ("DDIM", sd(timestep_spacing="trailing"), 30),
//  "euler_log_linear": ("Euler", sd(interpolation_type="log_linear"), 7),
//  "euler_vpred_continuous_trailing": ("Euler", sd(prediction_type="v_prediction",timestep_type="continuous",timestep_spacing="trailing"), 9),
//  "euler_zero_snr_karras_vpred": ("Euler", sd(rescale_betas_zero_snr=True,timestep_spacing="trailing",prediction_type="v_prediction",use_karras_sigmas=True), 6),
//  "euler_sd15_default_30": ("Euler", dict(SD), 30),
//  "euler_karras_bounds": ("Euler", sd(use_karras_sigmas=True, sigma_min=0.1, sigma_max=10.0), 5),
//  "dpm_heun_sigma_min_20": ("DPM", sd(solver_type="heun",final_sigmas_type="sigma_min"), 20),
//  "dpm_lu_vpred": ("DPM", sd(use_lu_lambdas=True,prediction_type="v_prediction"), 10),
//  "dpm_order1_trailing": ("DPM", sd(solver_order=1,timestep_spacing="trailing"), 8),
//  "dpm_cosine_lambda_clip": ("DPM", dict(beta_schedule="squaredcos_cap_v2",lambda_min_clipped=-5.1), 10),
//  "dpm_karras_bounds_sample": ("DPM", sd(use_karras_sigmas=True,sigma_min=0.05,sigma_max=12.0,prediction_type="sample"), 16),
//  "dpm_sd15_default_25": ("DPM", dict(SD), 25),
// }
// CLS={"DDIM":DDIMScheduler,"Euler":EulerDiscreteScheduler,"DPM":DPMSolverMultistepScheduler}
// out={}
// N=16
// for name,(cls,cfg,steps) in CASES.items():
//     s=CLS[cls].from_config(cfg); s.set_timesteps(steps)
//     ins=float(s.init_noise_sigma)
//     x=torch.tensor([math.sin(i*0.7) for i in range(N)],dtype=torch.float32).reshape(1,4,2,2)*s.init_noise_sigma
//     for k,t in enumerate(s.timesteps):
//         mo=torch.tensor([math.cos(i*0.3+k)*0.8 for i in range(N)],dtype=torch.float32).reshape(1,4,2,2)
//         xin=s.scale_model_input(x,t)
//         kw={"eta":0.0} if cls=="DDIM" else {}
//         x=s.step(mo,t,x,**kw).prev_sample
//     cfg_json=dict(cfg)
//     out[name]=dict(cls=cls,config=cfg_json,steps=steps,timesteps=[float(t) for t in s.timesteps],
//         sigmas=[float(v) for v in s.sigmas] if hasattr(s,'sigmas') and cls!="DDIM" else None,
//         init_noise_sigma=ins, final=[float(v) for v in x.flatten()], last_scaled=[float(v) for v in xin.flatten()],
//         alphas_cumprod=[float(s.alphas_cumprod[i]) for i in (0,1,500,998,999)])
// json.dump(out, open('/work/main/tests/schedulers_extra_reference.json.tmp','w'))
// print(len(out))
const EXTRA_REFERENCE: &str = r#"{
"ddim_zero_snr_trailing_vpred":{"cls":"DDIM","config":{"num_train_timesteps":1000,"beta_start":0.00085,"beta_end":0.012,"beta_schedule":"scaled_linear","clip_sample":false,"set_alpha_to_one":false,"steps_offset":1,"rescale_betas_zero_snr":true,"timestep_spacing":"trailing","prediction_type":"v_prediction"},"steps":10,"timesteps":[999.0,899.0,799.0,699.0,599.0,499.0,399.0,299.0,199.0,99.0],"init_noise_sigma":1.0,"final":[0.10834351927042007,0.7307027578353882,1.0751252174377441,0.9981997013092041,0.5471504926681519,-0.06335824728012085,-0.5524088740348816,-0.704395592212677,-0.46913933753967285,0.016413502395153046,0.4949495792388916,0.7123929858207703,0.53999263048172,0.037241436541080475,-0.5741752982139587,-1.0133230686187744],"alphas_cumprod":[0.9991499781608582,0.9982334971427917,0.2410186380147934,1.9679633567193378e-07,0.0]},
"ddim_cosine_clip_linspace":{"cls":"DDIM","config":{"beta_schedule":"squaredcos_cap_v2","clip_sample":true,"clip_sample_range":0.8,"set_alpha_to_one":true,"timestep_spacing":"linspace"},"steps":8,"timesteps":[999.0,856.0,714.0,571.0,428.0,285.0,143.0,0.0],"init_noise_sigma":1.0,"final":[0.05113399028778076,-0.05625806376338005,-0.0971997007727623,-0.33393704891204834,-0.4750061333179474,-0.5078056454658508,-0.5753766894340515,-0.45366647839546204,-0.36134645342826843,-0.3066634237766266,-0.12477361410856247,0.014267573133111,0.0837358757853508,0.23301202058792114,0.4213627576828003,0.5062354803085327],"alphas_cumprod":[0.9999586939811707,0.9999125599861145,0.4922850430011749,2.428766265438753e-06,2.4287349909002387e-09]},
"ddim_trained_betas_sample":{"cls":"DDIM","config":{"trained_betas":"np.linspace(0.0001, 0.02, 1000)","prediction_type":"sample","clip_sample":false},"steps":5,"timesteps":[800.0,600.0,400.0,200.0,0.0],"init_noise_sigma":1.0,"final":[-0.5229148864746094,-0.32063934206962585,-0.08972202241420746,0.1492099016904831,0.37481334805488586,0.5669358372688293,0.7084156274795532,0.7866147756576538,0.7945479154586792,0.7315065264701843,0.603121817111969,0.42086201906204224,0.2010078728199005,-0.03680169954895973,-0.27132388949394226,-0.4816095232963562],"alphas_cumprod":[0.9998999834060669,0.9997800588607788,0.07779666036367416,4.1181938286172226e-05,4.035829988424666e-05]},
"ddim_trailing_30":{"cls":"DDIM","config":{"num_train_timesteps":1000,"beta_start":0.00085,"beta_end":0.012,"beta_schedule":"scaled_linear","clip_sample":false,"set_alpha_to_one":false,"steps_offset":1,"timestep_spacing":"trailing"},"steps":30,"timesteps":[999.0,966.0,932.0,899.0,866.0,832.0,799.0,766.0,732.0,699.0,666.0,632.0,599.0,566.0,532.0,499.0,466.0,432.0,399.0,366.0,332.0,299.0,266.0,232.0,199.0,166.0,132.0,99.0,66.0,32.0],"init_noise_sigma":1.0,"final":[-1.396771788597107,8.364245414733887,13.876120567321777,12.791547775268555,5.871896266937256,-3.3932783603668213,-10.448471069335938,-11.832412719726562,-6.81875467300415,2.2355918884277344,10.998845100402832,15.208199501037598,12.687323570251465,4.3874945640563965,-6.038877010345459,-13.933626174926758],"alphas_cumprod":[0.9991499781608582,0.9982960224151611,0.27633246779441833,0.004716695751994848,0.00466009508818388]},
"euler_log_linear":{"cls":"Euler","config":{"num_train_timesteps":1000,"beta_start":0.00085,"beta_end":0.012,"beta_schedule":"scaled_linear","clip_sample":false,"set_alpha_to_one":false,"steps_offset":1,"interpolation_type":"log_linear"},"steps":7,"timesteps":[999.0,832.5,666.0,499.5,333.0,166.5,0.0],"sigmas":[14.614646911621094,6.012982368469238,2.4739534854888916,1.0178719758987427,0.4187886714935303,0.17230446636676788,0.07089215517044067,0.0291675366461277,0.0],"init_noise_sigma":14.614646911621094,"final":[-7.37799596786499,3.333746910095215,10.160682678222656,10.592997550964355,5.27271032333374,-2.383791446685791,-7.874190807342529,-7.808266639709473,-1.5745422840118408,8.314732551574707,17.367656707763672,21.211069107055664,17.657629013061523,7.76846170425415,-4.59138298034668,-14.500531196594238],"alphas_cumprod":[0.9991499781608582,0.9982960224151611,0.27633246779441833,0.004716695751994848,0.00466009508818388]},
"euler_vpred_continuous_trailing":{"cls":"Euler","config":{"num_train_timesteps":1000,"beta_start":0.00085,"beta_end":0.012,"beta_schedule":"scaled_linear","clip_sample":false,"set_alpha_to_one":false,"steps_offset":1,"prediction_type":"v_prediction","timestep_type":"continuous","timestep_spacing":"trailing"},"steps":9,"timesteps":[0.6705060601234436,0.5148060321807861,0.382012277841568,0.2677510380744934,0.1669781655073166,0.07326535880565643,-0.018353812396526337,-0.11849774420261383,-0.2509958744049072],"sigmas":[14.614646911621094,7.8398847579956055,4.609176158905029,2.9183084964752197,1.950162410736084,1.3405251502990723,0.9292148947715759,0.6225128769874573,0.36641693115234375,0.0],"init_noise_sigma":14.614646911621094,"final":[-0.10950832068920135,0.5213285088539124,0.8960927724838257,0.8703369498252869,0.48611485958099365,-0.050470829010009766,-0.4684710204601288,-0.5611817836761475,-0.2842634916305542,0.22333917021751404,0.705523669719696,0.9110294580459595,0.7137964963912964,0.17488113045692444,-0.4834287762641907,-0.9793741703033447],"alphas_cumprod":[0.9991499781608582,0.9982960224151611,0.27633246779441833,0.004716695751994848,0.00466009508818388]},
"euler_zero_snr_karras_vpred":{"cls":"Euler","config":{"num_train_timesteps":1000,"beta_start":0.00085,"beta_end":0.012,"beta_schedule":"scaled_linear","clip_sample":false,"set_alpha_to_one":false,"steps_offset":1,"rescale_betas_zero_snr":true,"timestep_spacing":"trailing","prediction_type":"v_prediction","use_karras_sigmas":true},"steps":6,"timesteps":[999.0,997.2868041992188,993.059814453125,971.239501953125,835.1295776367188,166.0],"sigmas":[4096.0,1372.7447509765625,375.5782775878906,76.44577026367188,9.705775260925293,0.5133514404296875,0.0],"init_noise_sigma":4096.0,"final":[0.3217323124408722,0.3844773471355438,0.2942623198032379,-0.003686577081680298,-0.4602445662021637,-0.9373694658279419,-1.266174077987671,-1.3213964700698853,-1.0776869058609009,-0.6214784979820251,-0.11285099387168884,0.28488901257514954,0.47523289918899536,0.46577298641204834,0.35595208406448364,0.2818138599395752],"alphas_cumprod":[0.9991499781608582,0.9982334971427917,0.2410186380147934,1.9679633567193378e-07,5.960464477539063e-08]},
"euler_sd15_default_30":{"cls":"Euler","config":{"num_train_timesteps":1000,"beta_start":0.00085,"beta_end":0.012,"beta_schedule":"scaled_linear","clip_sample":false,"set_alpha_to_one":false,"steps_offset":1},"steps":30,"timesteps":[999.0,964.5516967773438,930.1034545898438,895.6551513671875,861.2069091796875,826.7586059570312,792.3103637695312,757.862060546875,723.413818359375,688.9655151367188,654.5172119140625,620.0689697265625,585.6206665039062,551.1724243164062,516.72412109375,482.2758483886719,447.82757568359375,413.3793029785156,378.9310302734375,344.4827575683594,310.03448486328125,275.5862121582031,241.13792419433594,206.6896514892578,172.2413787841797,137.79310607910156,103.3448257446289,68.89655303955078,34.44827651977539,0.0],"sigmas":[14.614646911621094,11.917562484741211,9.814177513122559,8.158467292785645,6.84306001663208,5.788556098937988,4.935649871826172,4.23970365524292,3.6668949127197266,3.1913352012634277,2.7931482791900635,2.456883668899536,2.1705198287963867,1.9245887994766235,1.7116186618804932,1.5256537199020386,1.3619239330291748,1.2165794372558594,1.086483120918274,0.9690636396408081,0.8621751070022583,0.7640080451965332,0.6729854941368103,0.5876845717430115,0.5067253112792969,0.42861977219581604,0.3514690101146698,0.27218401432037354,0.18345697224140167,0.02916753478348255,0.0],"init_noise_sigma":14.614646911621094,"final":[-1.5348879098892212,8.51248550415039,14.212454795837402,13.155868530273438,6.117743968963623,-3.332078695297241,-10.53109073638916,-11.936443328857422,-6.805241584777832,2.448754072189331,11.39039134979248,15.65644645690918,13.021824836730957,4.465581893920898,-6.266302585601807,-14.39787483215332],"alphas_cumprod":[0.9991499781608582,0.9982960224151611,0.27633246779441833,0.004716695751994848,0.00466009508818388]},
"euler_karras_bounds":{"cls":"Euler","config":{"num_train_timesteps":1000,"beta_start":0.00085,"beta_end":0.012,"beta_schedule":"scaled_linear","clip_sample":false,"set_alpha_to_one":false,"steps_offset":1,"use_karras_sigmas":true,"sigma_min":0.1,"sigma_max":10.0},"steps":5,"timesteps":[933.5067138671875,748.329833984375,467.0378723144531,139.5023651123047,10.38216781616211],"sigmas":[10.0,4.070104122161865,1.4507321119308472,0.4324527978897095,0.10000000149011612,0.0],"init_noise_sigma":10.0,"final":[-5.221523761749268,2.1870572566986084,6.9458794593811035,7.3297953605651855,3.770232915878296,-1.4023797512054443,-5.113276958465576,-5.046816825866699,-0.7865073084831238,5.949113368988037,12.089256286621094,14.646459579467773,12.130531311035156,5.275092124938965,-3.2672832012176514,-10.12155818939209],"alphas_cumprod":[0.9991499781608582,0.9982960224151611,0.27633246779441833,0.004716695751994848,0.00466009508818388]},
"dpm_heun_sigma_min_20":{"cls":"DPM","config":{"num_train_timesteps":1000,"beta_start":0.00085,"beta_end":0.012,"beta_schedule":"scaled_linear","clip_sample":false,"set_alpha_to_one":false,"steps_offset":1,"solver_type":"heun","final_sigmas_type":"sigma_min"},"steps":20,"timesteps":[999.0,949.0,899.0,849.0,799.0,749.0,699.0,649.0,599.0,549.0,500.0,450.0,400.0,350.0,300.0,250.0,200.0,150.0,100.0,50.0],"sigmas":[14.614646911621094,10.904239654541016,8.30280590057373,6.442957401275635,5.087765216827393,4.081730842590332,3.321084499359131,2.7354702949523926,2.2764639854431152,1.9102516174316406,1.6182796955108643,1.3716686964035034,1.1643916368484497,0.9871089458465576,0.8327531814575195,0.6957994699478149,0.5716663599014282,0.4560753107070923,0.34393182396888733,0.225582554936409,0.02916753478348255],"init_noise_sigma":1.0,"final":[-1.8932955265045166,8.528571128845215,14.594731330871582,13.859707832336426,7.071069240570068,-2.217980146408081,-9.352010726928711,-10.788416862487793,-5.780368328094482,3.265651226043701,11.926156997680664,15.856231689453125,12.857263565063477,3.9422755241394043,-7.105005741119385,-15.473162651062012],"alphas_cumprod":[0.9991499781608582,0.9982960224151611,0.27633246779441833,0.004716695751994848,0.00466009508818388]},
"dpm_lu_vpred":{"cls":"DPM","config":{"num_train_timesteps":1000,"beta_start":0.00085,"beta_end":0.012,"beta_schedule":"scaled_linear","clip_sample":false,"set_alpha_to_one":false,"steps_offset":1,"use_lu_lambdas":true,"prediction_type":"v_prediction"},"steps":10,"timesteps":[999.0,875.0,724.0,538.0,330.0,153.0,52.0,14.0,3.0,0.0],"sigmas":[14.614646911621094,7.324883460998535,3.6712427139282227,1.8400323390960693,0.9222270250320435,0.46222159266471863,0.23166616261005402,0.11611143499612808,0.05819522589445114,0.0291675366461277,0.0],"init_noise_sigma":1.0,"final":[0.2783483564853668,0.8742464780807495,1.1412373781204224,0.9226193428039551,0.2855128049850464,-0.5075188875198364,-1.1186449527740479,-1.290514588356018,-0.9646078944206238,-0.30676424503326416,0.37193548679351807,0.7616267800331116,0.6985599398612976,0.240371435880661,-0.3635232448577881,-0.7922641038894653],"alphas_cumprod":[0.9991499781608582,0.9982960224151611,0.27633246779441833,0.004716695751994848,0.00466009508818388]},
"dpm_order1_trailing":{"cls":"DPM","config":{"num_train_timesteps":1000,"beta_start":0.00085,"beta_end":0.012,"beta_schedule":"scaled_linear","clip_sample":false,"set_alpha_to_one":false,"steps_offset":1,"solver_order":1,"timestep_spacing":"trailing"},"steps":8,"timesteps":[999.0,874.0,749.0,624.0,499.0,374.0,249.0,124.0],"sigmas":[14.614646911621094,7.297353744506836,4.081730842590332,2.4925317764282227,1.6128870248794556,1.0689518451690674,0.6932054162025452,0.39774635434150696,0.0],"init_noise_sigma":1.0,"final":[-6.285695552825928,4.302521705627441,10.911005020141602,11.045015335083008,5.3748040199279785,-2.6451010704040527,-8.470993995666504,-8.67590618133545,-2.622722864151001,7.187858581542969,16.262535095214844,20.21786117553711,16.85218048095703,7.211607933044434,-4.8540568351745605,-14.440790176391602],"alphas_cumprod":[0.9991499781608582,0.9982960224151611,0.27633246779441833,0.004716695751994848,0.00466009508818388]},
"dpm_cosine_lambda_clip":{"cls":"DPM","config":{"beta_schedule":"squaredcos_cap_v2","lambda_min_clipped":-5.1},"steps":10,"timesteps":[995.0,896.0,796.0,696.0,597.0,498.0,398.0,298.0,199.0,100.0],"sigmas":[160.41366577148438,6.176133632659912,3.0547263622283936,1.9578906297683716,1.3816450834274292,1.009238839149475,0.7354666590690613,0.518397867679596,0.33572447299957275,0.1710437536239624,0.0],"init_noise_sigma":1.0,"final":[-123.5045166015625,-13.773040771484375,57.81612014770508,64.01300811767578,11.735127449035645,-62.06447982788086,-108.8812484741211,-92.7039794921875,-8.201160430908203,115.61530303955078,228.07662963867188,280.0115051269531,246.53990173339844,138.815185546875,-0.8117929100990295,-117.96817779541016],"alphas_cumprod":[0.9999586939811707,0.9999125599861145,0.4922850430011749,2.428766265438753e-06,2.4287349909002387e-09]},
"dpm_karras_bounds_sample":{"cls":"DPM","config":{"num_train_timesteps":1000,"beta_start":0.00085,"beta_end":0.012,"beta_schedule":"scaled_linear","clip_sample":false,"set_alpha_to_one":false,"steps_offset":1,"use_karras_sigmas":true,"sigma_min":0.05,"sigma_max":12.0,"prediction_type":"sample"},"steps":16,"timesteps":[966.0,920.0,868.0,811.0,745.0,670.0,584.0,487.0,382.0,274.0,176.0,100.0,49.0,21.0,7.0,2.0],"sigmas":[12.0,9.270465850830078,7.091385364532471,5.366957187652588,4.0152130126953125,2.966459274291992,2.1618454456329346,1.552045226097107,1.0960508584976196,0.7600727081298828,0.5165415406227112,0.3432065546512604,0.22232571244239807,0.1399424970149994,0.08524469286203384,0.05000000074505806,0.0],"init_noise_sigma":1.0,"final":[-0.6077503561973572,-0.7343446016311646,-0.7953420877456665,-0.7852940559387207,-0.7050979733467102,-0.5619176626205444,-0.36854287981987,-0.1422472596168518,0.09675487875938416,0.32711419463157654,0.5282533764839172,0.6822052597999573,0.7752177715301514,0.7989823818206787,0.7513762712478638,0.6366519927978516],"alphas_cumprod":[0.9991499781608582,0.9982960224151611,0.27633246779441833,0.004716695751994848,0.00466009508818388]},
"dpm_sd15_default_25":{"cls":"DPM","config":{"num_train_timesteps":1000,"beta_start":0.00085,"beta_end":0.012,"beta_schedule":"scaled_linear","clip_sample":false,"set_alpha_to_one":false,"steps_offset":1},"steps":25,"timesteps":[999.0,959.0,919.0,879.0,839.0,799.0,759.0,719.0,679.0,639.0,599.0,559.0,519.0,480.0,440.0,400.0,360.0,320.0,280.0,240.0,200.0,160.0,120.0,80.0,40.0],"sigmas":[14.614646911621094,11.54277515411377,9.237425804138184,7.485424041748047,6.137463092803955,5.087765216827393,4.260558605194092,3.600989818572998,3.0689444541931152,2.634796619415283,2.2764639854431152,1.9773333072662354,1.7247951030731201,1.5141955614089966,1.3274052143096924,1.1643916368484497,1.020531415939331,0.892125129699707,0.7761549949645996,0.6700836420059204,0.5716663599014282,0.4787280857563019,0.38880211114883423,0.2982640266418457,0.1990589052438736,0.0],"init_noise_sigma":1.0,"final":[-0.8750790357589722,9.219731330871582,14.895561218261719,13.740998268127441,6.541383266448975,-3.1121320724487305,-10.52991771697998,-12.142802238464355,-7.187901973724365,1.932190179824829,10.785847663879395,15.009367942810059,12.377150535583496,3.8697733879089355,-6.7641777992248535,-14.748573303222656],"alphas_cumprod":[0.9991499781608582,0.9982960224151611,0.27633246779441833,0.004716695751994848,0.00466009508818388]}
}"#;
