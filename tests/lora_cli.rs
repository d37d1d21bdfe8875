//! `harness generate --lora PATH[:WEIGHT] ... --lora-scale S --lora-unmatched error|warn`: the naive merge of two
//! LoRAs reproduces diffusers' `set_adapters` + `fuse_lora(lora_scale=S)` (tiny-a `merge2` case), and bad LoRA
//! input ends the command with an error naming the file and key.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use clora_harness::latent_io;
use common::*;

fn generate(extra: &[&str], init: &Path, out: &Path) -> std::process::Output {
    let e2e: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("sd/tiny-a/reference/e2e.json")).unwrap(),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.args(["generate", "--model"])
        .arg(fixtures().join("sd/tiny-a"))
        .args(["--prompt", e2e["prompt"].as_str().unwrap()])
        .args([
            "--negative-prompt",
            e2e["negative_prompt"].as_str().unwrap(),
        ])
        .args([
            "--steps",
            "6",
            "--guidance",
            "7.5",
            "--width",
            "64",
            "--height",
            "64",
            "--scheduler",
            "ddim",
        ])
        .arg("--init-latent")
        .arg(init)
        .arg("--save-latent")
        .arg(out)
        .arg("--out")
        .arg(out.with_extension("png"))
        .args(extra);
    cmd.output().unwrap()
}

/// The fixture's initial latent, written into the test's folder `dir`.
fn init_latent_file(dir: &Path) -> PathBuf {
    let r = Reference::open(&fixtures().join("lora/tiny-a/merge2.reference.safetensors"));
    let path = dir.join("init.safetensors");
    latent_io::write_latent(&path, &r.tensor::<4>("init_latent")).unwrap();
    path
}

#[test]
fn naive_merge_from_the_command_line_matches_diffusers() {
    let dir = fixtures().join("lora/tiny-a");
    let kohya = format!("{}:0.8", dir.join("kohya_locon.safetensors").display());
    let peft = format!("{}:1.3", dir.join("peft_meta.safetensors").display());
    let tmp = temp_dir("lora-cli-merge");
    let out = tmp.join("merge2.safetensors");
    let res = generate(
        &["--lora", &kohya, "--lora", &peft, "--lora-scale", "0.7"],
        &init_latent_file(&tmp),
        &out,
    );
    let stderr = String::from_utf8_lossy(&res.stderr);
    println!("{stderr}");
    assert!(res.status.success(), "{stderr}");
    assert!(
        stderr.contains("117 UNet and 18 text-encoder layers"),
        "{stderr}"
    );
    let r = Reference::open(&dir.join("merge2.reference.safetensors"));
    let latent = latent_io::read_latent::<B>(&out, [1, 4, 8, 8], &device()).unwrap();
    assert_close(
        "CLI merge2 final latent",
        &latent,
        &r.f32("final_latent_fused"),
        1e-3,
    );
}

#[test]
fn bad_lora_input_ends_the_command_with_an_error() {
    let tmp = temp_dir("lora-cli-bad");
    let init = init_latent_file(&tmp);
    let out = tmp.join("bad.safetensors");
    let res = generate(
        &["--lora", "/nonexistent/style.safetensors:0.5"],
        &init,
        &out,
    );
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    assert!(
        stderr.contains("/nonexistent/style.safetensors"),
        "{stderr}"
    );

    // a tiny-b LoRA on tiny-a: its modules have other shapes (a LoRA for another model)
    let other = fixtures().join("lora/tiny-b/peft_plain.safetensors");
    let res = generate(&["--lora", other.to_str().unwrap()], &init, &out);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    assert!(
        stderr.contains("peft_plain.safetensors") && stderr.contains("do not fit module"),
        "{stderr}"
    );

    // unmatched keys: an error by default, skipped and listed with --lora-unmatched warn (tiny-b's kohya file
    // names proj_in/proj_out and attention layers; tiny-a has the first attention blocks but not the rest)
    let kohya_b = fixtures().join("lora/tiny-b/diffusers_old_unprefixed.safetensors");
    let res = generate(&["--lora", kohya_b.to_str().unwrap()], &init, &out);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "{stderr}");
    println!("{stderr}");
    assert!(
        stderr.contains("--lora-unmatched warn") || stderr.contains("do not fit module"),
        "{stderr}"
    );
}

#[test]
fn warn_mode_lists_every_skipped_key() {
    // tiny-a's kohya file has text-encoder layers 0..2; a copy with an extra layer-5 module that tiny-a lacks
    let src = fixtures().join("lora/tiny-a/kohya_locon.safetensors");
    let store = clora_harness::models::weights::WeightStore::open(&[src]).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for k in store.keys() {
        let (v, s) = store.read_f32(k).unwrap();
        tensors.push((
            k.to_string(),
            s,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ));
    }
    let extra = "lora_te_text_model_encoder_layers_5_mlp_fc1";
    for (suffix, shape) in [
        ("lora_down.weight", vec![4usize, 32]),
        ("lora_up.weight", vec![64, 4]),
    ] {
        let n: usize = shape.iter().product();
        tensors.push((format!("{extra}.{suffix}"), shape, vec![0u8; 4 * n]));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    let tmp = temp_dir("lora-cli-warn");
    let path = tmp.join("extra_layer.safetensors");
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();

    let init = init_latent_file(&tmp);
    let out = tmp.join("warn.safetensors");
    let res = generate(&["--lora", path.to_str().unwrap()], &init, &out);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    assert!(
        stderr.contains(&format!("{extra}.lora_down.weight"))
            && stderr.contains("matches no module"),
        "{stderr}"
    );

    let res = generate(
        &["--lora", path.to_str().unwrap(), "--lora-unmatched", "warn"],
        &init,
        &out,
    );
    let stderr = String::from_utf8_lossy(&res.stderr);
    println!("{stderr}");
    assert!(res.status.success(), "{stderr}");
    assert!(stderr.contains("skipped 2 keys"), "{stderr}");
    assert!(
        stderr.contains(&format!("  {extra}.lora_down.weight"))
            && stderr.contains(&format!("  {extra}.lora_up.weight"))
    );
}
