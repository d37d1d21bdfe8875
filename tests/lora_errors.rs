//! Bad LoRA input gives a clear error naming the file and key, never a panic, and leaves the model unchanged:
//! unmatched keys (error, or warn listing every skipped key), rank and shape mismatches, LoRAs for other
//! architectures, non-finite values, missing and truncated files, unsupported variants. Also: kohya names are
//! resolved through the model's own paths (including layers diffusers' converter cannot name), and
//! alpha/metadata scales.

mod common;

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::Tensor;
use clora_harness::lora::{Component, LoraFile, Unmatched};
use clora_harness::models::sd::{LoadOptions, StableDiffusion};
use common::*;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// A tensor to write: key, shape, values.
type T = (String, Vec<usize>, Vec<f32>);

fn tensor(key: &str, shape: &[usize], seed: u64) -> T {
    let n: usize = shape.iter().product();
    let v = clora_harness::noise::gaussian_values(seed, n)
        .into_iter()
        .map(|x| 0.2 * x)
        .collect();
    (key.to_string(), shape.to_vec(), v)
}

fn scalar(key: &str, v: f32) -> T {
    (key.to_string(), vec![], vec![v])
}

fn write(name: &str, tensors: &[T], metadata: Option<HashMap<String, String>>) -> TempPath {
    let path = temp_file(&format!("lora-errors-{name}"));
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((k, s, _), b)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(&path, safetensors::serialize(views, metadata).unwrap()).unwrap();
    path
}

/// kohya keys of one module: down [r, d_in], up [d_out, r], alpha.
fn kohya(name: &str, r: usize, d_in: usize, d_out: usize, alpha: f32, seed: u64) -> Vec<T> {
    vec![
        tensor(&format!("{name}.lora_down.weight"), &[r, d_in], seed),
        tensor(&format!("{name}.lora_up.weight"), &[d_out, r], seed + 1),
        scalar(&format!("{name}.alpha"), alpha),
    ]
}

const Q: &str = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";

fn load() -> StableDiffusion<B> {
    StableDiffusion::<B>::load(
        &fixtures().join("sd/tiny-a"),
        &LoadOptions::default(),
        &device(),
    )
    .unwrap()
}

fn unet_out(sd: &StableDiffusion<B>) -> Tensor<B, 4> {
    let r = Reference::open(&fixtures().join("sd/tiny-a/reference/unet.safetensors"));
    sd.unet
        .forward(
            r.tensor("sample"),
            &[500.0, 500.0],
            r.tensor("encoder_hidden_states"),
        )
        .unwrap()
}

fn diff(a: &Tensor<B, 4>, b: &Tensor<B, 4>) -> f32 {
    (a.clone() - b.clone()).abs().max().into_scalar()
}

/// `LoraFile::open` then `add_lora`; the error text of whichever fails.
fn apply_err(sd: &mut StableDiffusion<B>, path: &Path, policy: Unmatched) -> String {
    let r = LoraFile::open(path).and_then(|f| sd.add_lora("x", &f, 1.0, policy));
    let e = r.expect_err("expected an error").to_string();
    println!("{}: {e}", path.file_name().unwrap().to_string_lossy());
    e
}

#[test]
fn unmatched_keys_error_by_default_and_are_listed_in_warn_mode() {
    let bogus = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn3_to_q";
    let mut ts = kohya(Q, 4, 32, 32, 2.0, 1);
    ts.extend(kohya(bogus, 4, 32, 32, 2.0, 3));
    ts.push(tensor("some_other_tensor", &[3], 5));
    let path = write("unmatched.safetensors", &ts, None);
    let mut sd = load();
    let base = unet_out(&sd);

    let e = apply_err(&mut sd, &path, Unmatched::Error);
    assert!(
        e.contains(&format!("{bogus}.")) && e.contains("matches no module of the UNet"),
        "{e}"
    );
    assert!(
        e.contains("unmatched.safetensors") && e.contains("4 unmatched keys"),
        "{e}"
    );
    assert!(
        sd.lora.adapters().is_empty(),
        "nothing attached after an error"
    );
    assert_eq!(diff(&unet_out(&sd), &base), 0.0);

    let load = sd
        .add_lora("x", &LoraFile::open(&path).unwrap(), 1.0, Unmatched::Warn)
        .unwrap();
    let mut skipped = load.skipped.clone();
    skipped.sort();
    assert_eq!(
        skipped,
        vec![
            format!("{bogus}.alpha"),
            format!("{bogus}.lora_down.weight"),
            format!("{bogus}.lora_up.weight"),
            "some_other_tensor".to_string()
        ]
    );
    assert_eq!(load.layers, [1, 0]);
    assert!(
        diff(&unet_out(&sd), &base) > 1e-3,
        "the matched module is applied"
    );
}

#[test]
fn factor_mismatches_are_errors() {
    let mut sd = load();
    // rank of down and up differ
    let ts = vec![
        tensor(&format!("{Q}.lora_down.weight"), &[4, 32], 1),
        tensor(&format!("{Q}.lora_up.weight"), &[32, 3], 2),
    ];
    let e = apply_err(
        &mut sd,
        &write("rank.safetensors", &ts, None),
        Unmatched::Error,
    );
    assert!(
        e.contains("rank mismatch") && e.contains(&format!("{Q}.lora_down.weight")),
        "{e}"
    );
    // an up factor with no down factor
    let ts = vec![tensor(&format!("{Q}.lora_up.weight"), &[32, 4], 2)];
    let e = apply_err(
        &mut sd,
        &write("noup.safetensors", &ts, None),
        Unmatched::Error,
    );
    assert!(e.contains("has no matching down (A) factor"), "{e}");
    // a 3-D factor
    let ts = vec![
        tensor(&format!("{Q}.lora_down.weight"), &[4, 32, 2], 1),
        tensor(&format!("{Q}.lora_up.weight"), &[32, 4], 2),
    ];
    let e = apply_err(
        &mut sd,
        &write("rank3.safetensors", &ts, None),
        Unmatched::Error,
    );
    assert!(e.contains("expected a down factor"), "{e}");
    // shapes that fit no module: an SD 1.5-sized attn2.to_k (768-d text) on tiny-a (32-d text)
    let k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
    let e = apply_err(
        &mut sd,
        &write("shape.safetensors", &kohya(k, 4, 768, 32, 4.0, 7), None),
        Unmatched::Error,
    );
    assert!(
        e.contains("do not fit module")
            && e.contains("Linear 32 -> 32")
            && e.contains("another model"),
        "{e}"
    );
    // the same even in warn mode: a misfit is not an unmatched key
    let e = apply_err(
        &mut sd,
        &write("shape2.safetensors", &kohya(k, 4, 768, 32, 4.0, 7), None),
        Unmatched::Warn,
    );
    assert!(e.contains("do not fit module"), "{e}");
    assert!(sd.lora.adapters().is_empty());
}

#[test]
fn other_architectures_are_refused() {
    let mut sd = load();
    let sdxl_unet = kohya(
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
        4,
        640,
        640,
        4.0,
        1,
    );
    let e = apply_err(
        &mut sd,
        &write("sdxl_unet.safetensors", &sdxl_unet, None),
        Unmatched::Warn,
    );
    assert!(
        e.contains("another architecture") && e.contains("input_blocks"),
        "{e}"
    );
    let sdxl_te = kohya(
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj",
        4,
        1280,
        1280,
        4.0,
        1,
    );
    let e = apply_err(
        &mut sd,
        &write("sdxl_te.safetensors", &sdxl_te, None),
        Unmatched::Error,
    );
    assert!(
        e.contains("another architecture") && e.contains("lora_te2_"),
        "{e}"
    );
    let peft_te2 = vec![
        tensor(
            "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight",
            &[4, 1280],
            1,
        ),
        tensor(
            "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight",
            &[1280, 4],
            2,
        ),
    ];
    let e = apply_err(
        &mut sd,
        &write("peft_te2.safetensors", &peft_te2, None),
        Unmatched::Error,
    );
    assert!(e.contains("another architecture"), "{e}");
    // SD 2.x-like dotted paths that exist nowhere in this model: nothing matches
    let sd2 = vec![
        tensor(
            "unet.down_blocks.3.attentions.0.proj_in.lora_A.weight",
            &[4, 1280],
            1,
        ),
        tensor(
            "unet.down_blocks.3.attentions.0.proj_in.lora_B.weight",
            &[1280, 4],
            2,
        ),
    ];
    let e = apply_err(
        &mut sd,
        &write("sd2.safetensors", &sd2, None),
        Unmatched::Warn,
    );
    assert!(e.contains("none of its 1 LoRA modules matches"), "{e}");
    assert!(sd.lora.adapters().is_empty());
}

#[test]
fn non_finite_values_are_errors() {
    let mut sd = load();
    for (bad, label) in [
        (f32::NAN, "NaN"),
        (f32::INFINITY, "inf"),
        (f32::NEG_INFINITY, "-inf"),
    ] {
        let mut ts = kohya(Q, 4, 32, 32, 2.0, 1);
        ts[1].2[17] = bad;
        let e = apply_err(
            &mut sd,
            &write(&format!("nonfinite_{label}.safetensors"), &ts, None),
            Unmatched::Warn,
        );
        assert!(
            e.contains(&format!("`{Q}.lora_up.weight` holds a non-finite value"))
                && e.contains("index 17"),
            "{e}"
        );
    }
    let mut ts = kohya(Q, 4, 32, 32, 2.0, 1);
    ts[2].2[0] = f32::NAN;
    let e = apply_err(
        &mut sd,
        &write("nan_alpha.safetensors", &ts, None),
        Unmatched::Error,
    );
    assert!(e.contains(&format!("{Q}.alpha")), "{e}");
}

#[test]
fn missing_truncated_and_foreign_files_are_errors() {
    let mut sd = load();
    let e = apply_err(
        &mut sd,
        Path::new("/nonexistent/dir/style.safetensors"),
        Unmatched::Error,
    );
    assert!(e.contains("/nonexistent/dir/style.safetensors"), "{e}");

    let bytes = std::fs::read(fixtures().join("lora/tiny-a/kohya_locon.safetensors")).unwrap();
    let dir = temp_dir("lora-errors-truncated");
    let cut = dir.join("truncated.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = apply_err(&mut sd, &cut, Unmatched::Error);
    assert!(
        e.contains("truncated.safetensors") && e.contains("not fully covered"),
        "{e}"
    );
    let header_cut = dir.join("header_cut.safetensors");
    std::fs::write(&header_cut, &bytes[..100]).unwrap();
    let e = apply_err(&mut sd, &header_cut, Unmatched::Error);
    assert!(
        e.contains("header_cut.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );

    // a model file, not a LoRA
    let e = apply_err(
        &mut sd,
        &fixtures().join("sd/tiny-a/unet/diffusion_pytorch_model.safetensors"),
        Unmatched::Warn,
    );
    assert!(e.contains("no LoRA tensors found"), "{e}");
    // LyCORIS variants we do not implement
    let loha = vec![tensor(&format!("{Q}.hada_w1_a"), &[32, 4], 1)];
    let e = apply_err(
        &mut sd,
        &write("loha.safetensors", &loha, None),
        Unmatched::Warn,
    );
    assert!(e.contains("LoHa") && e.contains("not supported"), "{e}");
    assert!(sd.lora.adapters().is_empty());
}

#[test]
fn kohya_names_resolve_through_model_paths_including_conv_in_and_time_embedding() {
    // diffusers 0.27's string-surgery converter cannot name these (it makes `conv.in`, `time.embedding...`);
    // matching against the model's own module paths can.
    let mut ts = Vec::new();
    ts.extend(kohya(
        "lora_unet_time_embedding_linear_1",
        4,
        32,
        128,
        8.0,
        1,
    ));
    let conv_in = "lora_unet_conv_in";
    ts.push(tensor(
        &format!("{conv_in}.lora_down.weight"),
        &[2, 4, 3, 3],
        3,
    ));
    ts.push(tensor(
        &format!("{conv_in}.lora_up.weight"),
        &[32, 2, 1, 1],
        4,
    ));
    ts.push(scalar(&format!("{conv_in}.alpha"), 1.0));
    // a 1x1 conv (tiny-a's proj_in) given plain matrices
    ts.extend(kohya(
        "lora_unet_down_blocks_0_attentions_0_proj_in",
        4,
        32,
        32,
        4.0,
        5,
    ));
    // a stride-2 conv
    let down = "lora_unet_down_blocks_0_downsamplers_0_conv";
    ts.push(tensor(
        &format!("{down}.lora_down.weight"),
        &[2, 32, 3, 3],
        6,
    ));
    ts.push(tensor(&format!("{down}.lora_up.weight"), &[32, 2, 1, 1], 7));
    let path = write("locon_extra.safetensors", &ts, None);
    let file = LoraFile::open(&path).unwrap();
    let scales: Vec<f64> = file.modules.iter().map(|m| m.scale).collect();
    println!("scales {scales:?}");
    let mut sd = load();
    let base = unet_out(&sd);
    let load = sd.add_lora("x", &file, 1.0, Unmatched::Error).unwrap();
    assert_eq!(load.layers, [4, 0]);
    let unfused = unet_out(&sd);
    assert!(diff(&unfused, &base) > 1e-2);
    sd.fuse_loras(&[(load.id, 1.0)], 1.0).unwrap();
    let fused = unet_out(&sd);
    let d = diff(&fused, &unfused);
    println!("conv_in/time_embedding/proj_in/downsampler LoRA: fused vs unfused {d:.2e}");
    assert!(d <= 1e-5);
    sd.unfuse_loras();
    sd.set_adapters(&[]).unwrap();
    assert_eq!(diff(&unet_out(&sd), &base), 0.0);
}

#[test]
fn scales_come_from_alpha_keys_and_adapter_metadata() {
    // kohya: alpha / r; alpha 0 means "no alpha" (kohya, A1111)
    let mut ts = kohya(Q, 4, 32, 32, 6.0, 1);
    ts.extend(kohya(
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k",
        4,
        32,
        32,
        0.0,
        3,
    ));
    ts.extend(kohya(
        "lora_te_text_model_encoder_layers_0_mlp_fc1",
        2,
        32,
        64,
        1.0,
        5,
    ));
    let f = LoraFile::open(&write("alphas.safetensors", &ts, None)).unwrap();
    let mut scales: Vec<(String, f64)> = f
        .modules
        .iter()
        .map(|m| (m.module.to_string(), m.scale))
        .collect();
    scales.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(scales[0].1, 1.0); // to_k, alpha 0
    assert_eq!(scales[1].1, 1.5); // to_q, 6 / 4
    assert_eq!(scales[2].1, 0.5); // te fc1, 1 / 2
    assert_eq!(f.count(Component::TextEncoder), 1);

    // PEFT with diffusers' adapter metadata (lora_alpha, an alpha_pattern, rsLoRA) and an explicit .alpha key
    let p = |m: &str, ab: &str| {
        format!("unet.down_blocks.0.attentions.0.transformer_blocks.0.{m}.{ab}.weight")
    };
    let ts = vec![
        tensor(&p("attn1.to_q", "lora_A"), &[4, 32], 1),
        tensor(&p("attn1.to_q", "lora_B"), &[32, 4], 2),
        tensor(&p("attn1.to_k", "lora_A"), &[4, 32], 3),
        tensor(&p("attn1.to_k", "lora_B"), &[32, 4], 4),
        tensor(&p("attn1.to_v", "lora_A"), &[4, 32], 5),
        tensor(&p("attn1.to_v", "lora_B"), &[32, 4], 6),
        scalar(
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v.alpha",
            1.0,
        ),
    ];
    let meta = |json: &str| {
        Some(HashMap::from([(
            "lora_adapter_metadata".to_string(),
            json.to_string(),
        )]))
    };
    let json = r#"{"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {"attn1.to_k": 2}, "unet.rank_pattern": {}}"#;
    let f = LoraFile::open(&write("peft_meta.safetensors", &ts, meta(json))).unwrap();
    let scale = |f: &LoraFile, m: &str| {
        f.modules
            .iter()
            .find(|x| x.module.to_string().ends_with(m))
            .unwrap()
            .scale
    };
    assert_eq!(scale(&f, "attn1.to_q"), 2.0);
    assert_eq!(scale(&f, "attn1.to_k"), 0.5);
    assert_eq!(scale(&f, "attn1.to_v"), 0.25); // the .alpha tensor wins
    let json = r#"{"unet.r": 4, "unet.lora_alpha": 8, "unet.use_rslora": true}"#;
    let f = LoraFile::open(&write("peft_rslora.safetensors", &ts, meta(json))).unwrap();
    assert_eq!(scale(&f, "attn1.to_q"), 4.0);
    // metadata that disagrees with the tensors
    let json = r#"{"unet.r": 8, "unet.lora_alpha": 8}"#;
    let e = LoraFile::open(&write("peft_badrank.safetensors", &ts, meta(json)))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("rank 4 but the adapter metadata gives module") && e.contains("rank 8"),
        "{e}"
    );
    let e = LoraFile::open(&write("peft_badjson.safetensors", &ts, meta("{not json")))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lora_adapter_metadata") && e.contains("invalid JSON"),
        "{e}"
    );
    // no metadata: scale 1, as diffusers 0.27 writes and reads these files
    let f = LoraFile::open(&write("peft_plain.safetensors", &ts[..4], None)).unwrap();
    assert!(f.modules.iter().all(|m| m.scale == 1.0));
}
