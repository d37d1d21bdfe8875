//! `harness generate --job FILE.toml`: the worked example of configs/jobs runs (CLoRA on the tiny model with
//! its two fixture LoRAs) and writes the image, its record and the attention maps; the job's seed gives the
//! noise of `harness generate --seed`; bad job files get one clear error naming the field.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("clora-job-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn harness(args: &[&str], extra: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .args(extra)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_tiny_clora_job_writes_image_record_and_maps() {
    let dir = tmp("tiny");
    let out = dir.join("x.png");
    let o = harness(
        &["generate", "--job"],
        &[
            &root().join("configs/jobs/tiny-clora.toml"),
            Path::new("--out"),
            &out,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image::open(&out).unwrap();
    assert_eq!((img.width(), img.height()), (128, 128));
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("x.json")).unwrap()).unwrap();
    // max_iter_to_alter 4, iterative steps [0, 2] with 4 extra cycles: 1 + 4 + 1 + 4 + 1 + 1 ... = 12 updates
    assert_eq!(rec["details"]["clora"]["latent_updates"], 12);
    assert_eq!(rec["job"]["kind"], "clora");
    assert_eq!(rec["job"]["noise_seed"], 53);
    for f in ["attention.safetensors", "masks.png", "attention.png"] {
        assert!(dir.join("x_attention").join(f).is_file(), "{f}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_base_job_equals_generate_with_the_same_seed() {
    let dir = tmp("base");
    let model = root().join("tests/fixtures/sd/tiny-a");
    let job = dir.join("base.toml");
    std::fs::write(
        &job,
        format!(
            "seed = 7\nprompt = \"a red circle\"\n[model]\npath = \"{}\"\n[method]\nmethod = \"base\"\n[sampler]\nsteps = 3\nwidth = 64\nheight = 64\n",
            model.display()
        ),
    )
    .unwrap();
    let o = harness(&["generate", "--job"], &[&job]);
    assert!(o.status.success(), "{}", stderr(&o));
    let direct = dir.join("direct.png");
    let o = harness(
        &[
            "generate",
            "--prompt",
            "a red circle",
            "--steps",
            "3",
            "--width",
            "64",
            "--height",
            "64",
            "--seed",
            "7",
            "--model",
        ],
        &[&model, Path::new("--out"), &direct],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let a = image::open(dir.join("base.png")).unwrap().to_rgb8();
    let b = image::open(&direct).unwrap().to_rgb8();
    let worst = a
        .pixels()
        .zip(b.pixels())
        .flat_map(|(x, y)| (0..3).map(move |c| (x.0[c] as i32 - y.0[c] as i32).abs()))
        .max()
        .unwrap();
    assert!(worst <= 1, "job vs generate: {worst}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_job_files_name_the_field() {
    let dir = tmp("bad");
    let model = root().join("tests/fixtures/sd/tiny-a");
    let cases = [
        // a sweep is several images
        (
            "",
            "[method]\nmethod = \"clora\"\nparams = { step_size = [10.0, 20.0] }\n",
            "method.params.step_size",
        ),
        // an unknown key
        ("seeed = 3\n", "[method]\nmethod = \"base\"\n", "seeed"),
        // no method
        ("", "", "method"),
    ];
    for (i, (head, method, field)) in cases.iter().enumerate() {
        let job = dir.join(format!("bad{i}.toml"));
        std::fs::write(
            &job,
            format!(
                "{head}prompt = \"a {{cat}} and a {{dog}}\"\n[model]\npath = \"{}\"\n[[loras]]\nname = \"cat\"\npath = \"{}\"\nclass_noun = \"cat\"\n[[loras]]\nname = \"dog\"\npath = \"{}\"\nclass_noun = \"dog\"\n{method}",
                model.display(),
                root().join("tests/fixtures/clora/lora_cat.safetensors").display(),
                root().join("tests/fixtures/clora/lora_dog.safetensors").display(),
            ),
        )
        .unwrap();
        let o = harness(&["generate", "--job"], &[&job]);
        let e = stderr(&o);
        assert!(!o.status.success(), "case {i} succeeded");
        assert!(
            e.contains(field) && e.contains(&format!("bad{i}.toml")),
            "case {i}: {e}"
        );
        assert!(!e.contains("panicked"), "{e}");
    }
    // --job with --prompt is refused by the command line itself
    let o = harness(
        &["generate", "--prompt", "x", "--job"],
        &[&dir.join("bad0.toml")],
    );
    assert!(!o.status.success() && stderr(&o).contains("--job"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn init_latent_takes_the_models_latent_shape() {
    // the embedded toyworld model: 64x64 pixels, VAE factor 4, latent [1, 4, 16, 16]; no width/height needed
    let dir = tmp("init");
    let noise = dir.join("noise.safetensors");
    let values: Vec<f32> = clora_harness::noise::gaussian_values(3, 4 * 16 * 16);
    clora_harness::latent_io::write_f32_safetensors(
        &noise,
        &[("latent", vec![1, 4, 16, 16], &values)],
        None,
    )
    .unwrap();
    let job = dir.join("init.toml");
    std::fs::write(
        &job,
        format!(
            "init_latent = \"{}\"\nprompt = \"a red circle\"\n[method]\nmethod = \"base\"\n[sampler]\nsteps = 3\n",
            noise.display()
        ),
    )
    .unwrap();
    let o = harness(&["generate", "--job"], &[&job]);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image::open(dir.join("init.png")).unwrap();
    assert_eq!((img.width(), img.height()), (64, 64));
    // a latent of another shape is refused, naming the file and both shapes
    std::fs::write(
        &job,
        format!(
            "init_latent = \"{}\"\nprompt = \"a red circle\"\n[method]\nmethod = \"base\"\n[sampler]\nsteps = 3\nwidth = 128\nheight = 128\n",
            noise.display()
        ),
    )
    .unwrap();
    let o = harness(&["generate", "--job"], &[&job]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("noise.safetensors") && e.contains("[1, 4, 32, 32]"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
