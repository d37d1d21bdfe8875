//! Bad input to the SD loader and `harness generate`: every case is an error that names the file and the key or
//! field and what was expected; never a panic. Also the CLI's `--init-latent` / `--save-latent` round trip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use clora_harness::latent_io;
use clora_harness::models::sd::{LoadOptions, StableDiffusion};
use common::*;

fn tiny_a() -> PathBuf {
    fixtures().join("sd/tiny-a")
}

fn load_err(path: &Path) -> String {
    match StableDiffusion::<B>::load(path, &LoadOptions::default(), &device()) {
        Ok(_) => panic!("{} loaded, expected an error", path.display()),
        Err(e) => e.to_string(),
    }
}

fn copy_tiny_a(tag: &str) -> TempPath {
    let dir = temp_dir(tag);
    copy_dir(&tiny_a(), &dir);
    dir
}

#[test]
fn missing_model_path_is_named() {
    let e = load_err(Path::new("/nonexistent/model-folder"));
    assert!(e.contains("/nonexistent/model-folder"), "{e}");
}

#[test]
fn folder_without_unet_names_the_missing_part() {
    let dir = copy_tiny_a("no-unet");
    std::fs::remove_dir_all(dir.join("unet")).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("unet/") && e.contains(&dir.display().to_string()),
        "{e}"
    );
}

#[test]
fn truncated_weight_file_is_reported() {
    let dir = copy_tiny_a("truncated");
    let f = dir.join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("diffusion_pytorch_model.safetensors") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn garbage_weight_file_is_reported() {
    let dir = copy_tiny_a("garbage");
    let f = dir.join("vae/diffusion_pytorch_model.safetensors");
    std::fs::write(&f, b"this is not a safetensors file").unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("vae/diffusion_pytorch_model.safetensors") && e.contains("safetensors"),
        "{e}"
    );
}

#[test]
fn unsupported_config_field_is_named() {
    let dir = copy_tiny_a("bad-config");
    let p = dir.join("unet/config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    cfg["class_embed_type"] = serde_json::json!("timestep");
    std::fs::write(&p, cfg.to_string()).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("unet/config.json") && e.contains("class_embed_type"),
        "{e}"
    );

    cfg["class_embed_type"] = serde_json::Value::Null;
    cfg["block_out_channels"] = serde_json::json!("wide");
    std::fs::write(&p, cfg.to_string()).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("block_out_channels") && e.contains("expected"),
        "{e}"
    );
}

#[test]
fn invalid_json_config_is_reported() {
    let dir = copy_tiny_a("bad-json");
    std::fs::write(dir.join("vae/config.json"), "{ not json").unwrap();
    let e = load_err(&dir);
    assert!(e.contains("vae/config.json") && e.contains("JSON"), "{e}");
}

#[test]
fn missing_weight_names_key_and_expected_shape() {
    let dir = copy_tiny_a("missing-weight");
    let f = dir.join("unet/diffusion_pytorch_model.safetensors");
    rewrite_safetensors(&f, |k, v, s| (k != "conv_in.weight").then_some((v, s)));
    let e = load_err(&dir);
    assert!(
        e.contains("conv_in.weight") && e.contains("missing") && e.contains("[32, 4, 3, 3]"),
        "{e}"
    );
}

#[test]
fn misshaped_weight_names_key_and_both_shapes() {
    let dir = copy_tiny_a("bad-shape");
    let f = dir.join("unet/diffusion_pytorch_model.safetensors");
    rewrite_safetensors(&f, |k, v, s| {
        if k == "time_embedding.linear_1.weight" {
            let n: usize = s.iter().product();
            Some((v[..n / 2].to_vec(), vec![s[0] / 2, s[1]]))
        } else {
            Some((v, s))
        }
    });
    let e = load_err(&dir);
    assert!(
        e.contains("time_embedding.linear_1.weight")
            && e.contains("[64, 32]")
            && e.contains("[128, 32]"),
        "{e}"
    );
}

#[test]
fn init_latent_of_wrong_shape_is_refused() {
    let dir = temp_dir("latent");
    let f = dir.join("latent.safetensors");
    let t = burn::tensor::Tensor::<B, 4>::zeros([1, 4, 4, 4], &device());
    latent_io::write_latent(&f, &t).unwrap();
    let e = latent_io::read_latent::<B>(&f, [1, 4, 8, 8], &device())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("latent.safetensors")
            && e.contains("[1, 4, 4, 4]")
            && e.contains("[1, 4, 8, 8]"),
        "{e}"
    );
}

fn harness() -> Command {
    Command::new(env!("CARGO_BIN_EXE_harness"))
}

#[test]
fn cli_generate_reproduces_diffusers_from_an_init_latent() {
    let dir = temp_dir("cli");
    let r = Reference::open(&tiny_a().join("reference/e2e_ddim.safetensors"));
    let init = dir.join("init.safetensors");
    latent_io::write_latent(&init, &r.tensor::<4>("init_latent")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tiny_a().join("reference/e2e.json")).unwrap(),
    )
    .unwrap();
    let out = harness()
        .args(["generate", "--model"])
        .arg(tiny_a())
        .args(["--prompt", doc["prompt"].as_str().unwrap()])
        .args([
            "--negative-prompt",
            doc["negative_prompt"].as_str().unwrap(),
        ])
        .args(["--steps", &doc["num_inference_steps"].to_string()])
        .args(["--guidance", &doc["guidance_scale"].to_string()])
        .args(["--scheduler", "ddim", "--width", "64", "--height", "64"])
        .arg("--init-latent")
        .arg(&init)
        .arg("--save-latent")
        .arg(dir.join("final.safetensors"))
        .arg("--out")
        .arg(dir.join("image.png"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let latent =
        latent_io::read_latent::<B>(&dir.join("final.safetensors"), [1, 4, 8, 8], &device())
            .unwrap();
    assert_close("cli final latent", &latent, &r.f32("final_latent"), 1e-3);
    let img = image::open(dir.join("image.png")).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (64, 64));
}

#[test]
fn cli_errors_name_the_file_and_exit_nonzero() {
    let dir = temp_dir("cli-bad");
    let bad = dir.join("init.safetensors");
    let t = burn::tensor::Tensor::<B, 4>::zeros([1, 4, 16, 16], &device());
    latent_io::write_latent(&bad, &t).unwrap();
    let out = harness()
        .args(["generate", "--model"])
        .arg(tiny_a())
        .args([
            "--prompt",
            "a cat",
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "--init-latent",
        ])
        .arg(&bad)
        .arg("--out")
        .arg(dir.join("x.png"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("init.safetensors") && err.contains("[1, 4, 8, 8]"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!dir.join("x.png").exists(), "no half-written output");

    let out = harness()
        .args([
            "generate",
            "--model",
            "/nonexistent/sd",
            "--prompt",
            "a",
            "--out",
        ])
        .arg(dir.join("y.png"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("/nonexistent/sd"),
        "{err}"
    );
}
