//! SD 1.x parity with diffusers/transformers on the tiny random pipelines of `tests/fixtures/sd/`
//! (made by `tools/fixtures/make_sd_fixtures.py`). Tolerances: 1e-4 per module, 1e-3 end to end (f32, CPU).

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use clora_harness::models::sd::{LoadOptions, StableDiffusion};
use clora_harness::pipeline::GenerateParams;
use clora_harness::schedulers::SchedulerKind;
use common::*;

const CONFIGS: [&str; 2] = ["tiny-a", "tiny-b"];

fn load(name: &str) -> StableDiffusion<B> {
    let dir = fixtures().join("sd").join(name);
    StableDiffusion::<B>::load(&dir, &LoadOptions::default(), &device())
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn reference(name: &str, file: &str) -> Reference {
    Reference::open(
        &fixtures()
            .join("sd")
            .join(name)
            .join("reference")
            .join(file),
    )
}

#[test]
fn text_encoder_matches_transformers() {
    for name in CONFIGS {
        let sd = load(name);
        let r = reference(name, "text_encoder.safetensors");
        let (ids, shape) = r.i64("input_ids");
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, shape), &device());
        let h = sd.text_encoder.forward(ids.clone(), None).unwrap();
        assert_close(
            &format!("{name} last_hidden_state"),
            &h,
            &r.f32("last_hidden_state"),
            1e-4,
        );
        for skip in [1usize, 2] {
            let key = format!("clip_skip_{skip}");
            if r.has(&key) {
                let h = sd.text_encoder.forward(ids.clone(), Some(skip)).unwrap();
                assert_close(&format!("{name} {key}"), &h, &r.f32(&key), 1e-4);
            }
        }
    }
}

#[test]
fn tokenizer_of_pipeline_gives_the_reference_ids() {
    // The ids the text-encoder fixture was fed come from the same prompts as e2e.json's; here we only
    // check the shapes agree (the full tokenizer parity is in tests/tokenizer.rs).
    for name in CONFIGS {
        let sd = load(name);
        let r = reference(name, "text_encoder.safetensors");
        let (_, shape) = r.i64("input_ids");
        assert_eq!(shape[1], sd.tokenizer.max_length());
    }
}

#[test]
fn unet_matches_diffusers() {
    for name in CONFIGS {
        let sd = load(name);
        let r = reference(name, "unet.safetensors");
        let sample: Tensor<B, 4> = r.tensor("sample");
        let context: Tensor<B, 3> = r.tensor("encoder_hidden_states");
        let (ts, _) = r.i64("timesteps");
        for (i, &t) in ts.iter().enumerate() {
            let b = sample.dims()[0];
            let out = sd
                .unet
                .forward(sample.clone(), &vec![t as f32; b], context.clone())
                .unwrap();
            assert_close(
                &format!("{name} unet t={t}"),
                &out,
                &r.f32(&format!("noise_pred_{i}")),
                1e-4,
            );
        }
    }
}

#[test]
fn vae_matches_diffusers() {
    for name in CONFIGS {
        let sd = load(name);
        let r = reference(name, "vae.safetensors");
        let decoded = sd.vae.decode(r.tensor("latent")).unwrap();
        assert_close(
            &format!("{name} vae decode"),
            &decoded,
            &r.f32("decoded"),
            1e-4,
        );
        let post = sd.vae.encode(r.tensor("image")).unwrap();
        assert_close(
            &format!("{name} vae encode mean"),
            &post.mean,
            &r.f32("posterior_mean"),
            1e-4,
        );
        assert_close(
            &format!("{name} vae encode std"),
            &post.std(),
            &r.f32("posterior_std"),
            1e-4,
        );
    }
}

fn e2e_params(name: &str) -> GenerateParams {
    let path = fixtures().join("sd").join(name).join("reference/e2e.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let s = |k: &str| {
        j[k].as_str()
            .unwrap_or_else(|| panic!("e2e.json: {k}"))
            .to_string()
    };
    let u = |k: &str| j[k].as_u64().unwrap_or_else(|| panic!("e2e.json: {k}")) as usize;
    GenerateParams {
        prompt: s("prompt"),
        negative_prompt: s("negative_prompt"),
        steps: u("num_inference_steps"),
        guidance: j["guidance_scale"].as_f64().unwrap(),
        scheduler: SchedulerKind::Ddim,
        width: u("width"),
        height: u("height"),
        seed: 0,
        clip_skip: None,
    }
}

fn check_e2e(sd: &StableDiffusion<B>, name: &str, label: &str) {
    for (kind, file) in [
        (SchedulerKind::Ddim, "e2e_ddim.safetensors"),
        (SchedulerKind::Euler, "e2e_euler.safetensors"),
        (SchedulerKind::DpmPp2m, "e2e_dpmpp2m.safetensors"),
    ] {
        let r = reference(name, file);
        let params = GenerateParams {
            scheduler: kind,
            ..e2e_params(name)
        };
        let out = sd
            .generate_latent(&params, Some(r.tensor("init_latent")))
            .unwrap();
        assert_close(
            &format!("{label} e2e {kind} final latent"),
            &out.latent,
            &r.f32("final_latent"),
            1e-3,
        );
        if r.has("image") {
            let image = sd.decode_latent(out.latent).unwrap();
            assert_close(
                &format!("{label} e2e {kind} image"),
                &image,
                &r.f32("image"),
                1e-3,
            );
        }
    }
}

#[test]
fn end_to_end_matches_diffusers_for_each_scheduler() {
    for name in CONFIGS {
        let sd = load(name);
        check_e2e(&sd, name, name);
    }
}

#[test]
fn single_file_checkpoint_generates_the_same_latents() {
    let dir = fixtures().join("sd/tiny-a");
    let options = LoadOptions {
        config_dir: Some(dir.clone()),
        ..Default::default()
    };
    let sd = StableDiffusion::<B>::load(&dir.join("single_file.safetensors"), &options, &device())
        .unwrap();
    check_e2e(&sd, "tiny-a", "tiny-a single file");
}
