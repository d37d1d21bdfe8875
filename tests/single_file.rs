//! Single-file (LDM layout) checkpoints read under diffusers names: the tiny-a fixture converts to exactly the
//! weights of its diffusers folder, SD 1.5's numbering is right, foreign files are refused naming the file.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::tensor::DType;
use clora_harness::backend::Cpu;
use clora_harness::models::clip::text_encoder::{ClipTextConfig, ClipTextModel};
use clora_harness::models::single_file::{convert_ldm, is_ldm_checkpoint, SingleFileParts};
use clora_harness::models::unet::config::UNetConfig;
use clora_harness::models::unet::model::UNet2DConditionModel;
use clora_harness::models::vae::config::VaeConfig;
use clora_harness::models::vae::model::AutoencoderKL;
use clora_harness::models::weights::{VarBuilder, WeightStore};
use common::{temp_file, TempPath};
use safetensors::tensor::{Dtype, TensorView};

fn tiny_a() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd/tiny-a");
    assert!(
        dir.join("single_file.safetensors").is_file(),
        "missing fixture {} (made by tools/fixtures)",
        dir.display()
    );
    dir
}

fn trim_ones(s: &[usize]) -> Vec<usize> {
    let mut v = s.to_vec();
    while v.len() > 1 && v.last() == Some(&1) {
        v.pop();
    }
    v
}

/// Every tensor of `reference` is in `converted` under the same key with the same values (shapes equal up
/// to trailing 1s), and `converted` has nothing else. `position_ids` buffers are not weights.
fn assert_same_weights(what: &str, reference: &WeightStore, converted: &WeightStore) {
    let ref_keys: BTreeSet<&str> = reference
        .keys()
        .filter(|k| !k.ends_with("position_ids"))
        .collect();
    let conv_keys: BTreeSet<&str> = converted.keys().collect();
    let missing: Vec<_> = ref_keys.difference(&conv_keys).collect();
    let extra: Vec<_> = conv_keys.difference(&ref_keys).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} keys missing after conversion: {missing:?}",
        missing.len()
    );
    assert!(
        extra.is_empty(),
        "{what}: {} unmapped extra keys: {extra:?}",
        extra.len()
    );
    for key in &ref_keys {
        let (want, want_shape) = reference.read_f32(key).unwrap();
        let (got, got_shape) = converted.read_f32(key).unwrap();
        assert_eq!(
            trim_ones(&want_shape),
            trim_ones(&got_shape),
            "{what}: `{key}` shape"
        );
        assert!(
            want.iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits())
                && want.len() == got.len(),
            "{what}: `{key}` values differ"
        );
    }
    assert!(!ref_keys.is_empty(), "{what}: empty reference");
}

fn convert_tiny_a() -> (PathBuf, SingleFileParts) {
    let dir = tiny_a();
    let unet = UNetConfig::from_file(&dir.join("unet/config.json")).unwrap();
    let vae = VaeConfig::from_file(&dir.join("vae/config.json")).unwrap();
    let single = WeightStore::open(&[dir.join("single_file.safetensors")]).unwrap();
    assert!(is_ldm_checkpoint(&single));
    let parts = convert_ldm(&single, &unet, &vae).unwrap();
    (dir, parts)
}

#[test]
fn tiny_a_single_file_equals_diffusers_folder() {
    let (dir, parts) = convert_tiny_a();
    let component =
        |name: &str, file: &str| WeightStore::open_component(&dir.join(name), &[file]).unwrap();
    assert_same_weights(
        "unet",
        &component("unet", "diffusion_pytorch_model.safetensors"),
        &parts.unet,
    );
    assert_same_weights(
        "vae",
        &component("vae", "diffusion_pytorch_model.safetensors"),
        &parts.vae,
    );
    assert_same_weights(
        "text_encoder",
        &component("text_encoder", "model.safetensors"),
        &parts.text_encoder,
    );
    // A diffusers component file is not a single file.
    assert!(!is_ldm_checkpoint(&component(
        "unet",
        "diffusion_pytorch_model.safetensors"
    )));
}

#[test]
fn tiny_a_models_load_from_single_file() {
    let (dir, parts) = convert_tiny_a();
    let device = Default::default();
    let unet_cfg = UNetConfig::from_file(&dir.join("unet/config.json")).unwrap();
    let vae_cfg = VaeConfig::from_file(&dir.join("vae/config.json")).unwrap();
    let clip_cfg = ClipTextConfig::from_file(&dir.join("text_encoder/config.json")).unwrap();
    UNet2DConditionModel::load(
        &VarBuilder::<Cpu>::new(parts.unet, &device, DType::F32),
        &unet_cfg,
    )
    .unwrap();
    AutoencoderKL::load(
        &VarBuilder::<Cpu>::new(parts.vae, &device, DType::F32),
        &vae_cfg,
    )
    .unwrap();
    ClipTextModel::load(
        &VarBuilder::<Cpu>::new(parts.text_encoder, &device, DType::F32),
        &clip_cfg,
    )
    .unwrap();
}

/// Writes a safetensors file of one-element f32 tensors (I64 for `position_ids`) under the system temp dir,
/// removed when the returned guard drops.
fn write_file(name: &str, keys: &[&str]) -> TempPath {
    let path = temp_file(&format!("single-file-{name}.safetensors"));
    let f32_bytes = 1.5f32.to_le_bytes();
    let i64_bytes = 0i64.to_le_bytes();
    let views: Vec<(String, TensorView)> = keys
        .iter()
        .map(|k| {
            let view = if k.ends_with("position_ids") {
                TensorView::new(Dtype::I64, vec![1, 1], &i64_bytes).unwrap()
            } else {
                TensorView::new(Dtype::F32, vec![1], &f32_bytes).unwrap()
            };
            (k.to_string(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

/// (LDM key, diffusers key) pairs of SD 1.5 that exercise every numbering rule.
const SD15_UNET: &[(&str, &str)] = &[
    ("time_embed.0.weight", "time_embedding.linear_1.weight"),
    ("time_embed.2.bias", "time_embedding.linear_2.bias"),
    ("input_blocks.0.0.weight", "conv_in.weight"),
    (
        "input_blocks.1.0.in_layers.0.weight",
        "down_blocks.0.resnets.0.norm1.weight",
    ),
    (
        "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight",
        "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight",
    ),
    (
        "input_blocks.3.0.op.bias",
        "down_blocks.0.downsamplers.0.conv.bias",
    ),
    (
        "input_blocks.4.0.skip_connection.weight",
        "down_blocks.1.resnets.0.conv_shortcut.weight",
    ),
    (
        "input_blocks.8.1.proj_in.weight",
        "down_blocks.2.attentions.1.proj_in.weight",
    ),
    (
        "input_blocks.9.0.op.weight",
        "down_blocks.2.downsamplers.0.conv.weight",
    ),
    (
        "input_blocks.11.0.out_layers.3.weight",
        "down_blocks.3.resnets.1.conv2.weight",
    ),
    (
        "middle_block.0.in_layers.2.weight",
        "mid_block.resnets.0.conv1.weight",
    ),
    (
        "middle_block.1.transformer_blocks.0.ff.net.0.proj.weight",
        "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
    ),
    (
        "middle_block.2.emb_layers.1.bias",
        "mid_block.resnets.1.time_emb_proj.bias",
    ),
    (
        "output_blocks.0.0.out_layers.0.weight",
        "up_blocks.0.resnets.0.norm2.weight",
    ),
    (
        "output_blocks.2.1.conv.weight",
        "up_blocks.0.upsamplers.0.conv.weight",
    ),
    (
        "output_blocks.3.1.norm.weight",
        "up_blocks.1.attentions.0.norm.weight",
    ),
    (
        "output_blocks.5.2.conv.bias",
        "up_blocks.1.upsamplers.0.conv.bias",
    ),
    (
        "output_blocks.8.2.conv.weight",
        "up_blocks.2.upsamplers.0.conv.weight",
    ),
    (
        "output_blocks.11.0.skip_connection.bias",
        "up_blocks.3.resnets.2.conv_shortcut.bias",
    ),
    (
        "output_blocks.11.1.proj_out.weight",
        "up_blocks.3.attentions.2.proj_out.weight",
    ),
    ("out.0.weight", "conv_norm_out.weight"),
    ("out.2.bias", "conv_out.bias"),
];

const SD15_VAE: &[(&str, &str)] = &[
    ("encoder.conv_in.weight", "encoder.conv_in.weight"),
    (
        "encoder.down.0.block.1.conv2.weight",
        "encoder.down_blocks.0.resnets.1.conv2.weight",
    ),
    (
        "encoder.down.1.block.0.nin_shortcut.bias",
        "encoder.down_blocks.1.resnets.0.conv_shortcut.bias",
    ),
    (
        "encoder.down.2.downsample.conv.weight",
        "encoder.down_blocks.2.downsamplers.0.conv.weight",
    ),
    (
        "encoder.mid.block_2.norm1.weight",
        "encoder.mid_block.resnets.1.norm1.weight",
    ),
    (
        "encoder.mid.attn_1.q.weight",
        "encoder.mid_block.attentions.0.to_q.weight",
    ),
    ("encoder.norm_out.bias", "encoder.conv_norm_out.bias"),
    (
        "decoder.up.3.block.2.conv1.weight",
        "decoder.up_blocks.0.resnets.2.conv1.weight",
    ),
    (
        "decoder.up.1.upsample.conv.weight",
        "decoder.up_blocks.2.upsamplers.0.conv.weight",
    ),
    (
        "decoder.up.0.block.0.nin_shortcut.weight",
        "decoder.up_blocks.3.resnets.0.conv_shortcut.weight",
    ),
    (
        "decoder.mid.block_1.conv2.bias",
        "decoder.mid_block.resnets.0.conv2.bias",
    ),
    (
        "decoder.mid.attn_1.norm.weight",
        "decoder.mid_block.attentions.0.group_norm.weight",
    ),
    (
        "decoder.mid.attn_1.proj_out.bias",
        "decoder.mid_block.attentions.0.to_out.0.bias",
    ),
    ("quant_conv.bias", "quant_conv.bias"),
    ("post_quant_conv.weight", "post_quant_conv.weight"),
];

/// Keys a loader must drop.
const DROPPED: &[&str] = &[
    "alphas_cumprod",
    "betas",
    "model_ema.decay",
    "model_ema.diffusion_modeltime_embed0weight",
    "first_stage_model.loss.logvar",
    "cond_stage_model.transformer.text_model.embeddings.position_ids",
];

fn prefixed(prefix: &str, pairs: &[(&str, &str)]) -> Vec<String> {
    pairs.iter().map(|(l, _)| format!("{prefix}{l}")).collect()
}

fn expected(pairs: &[(&str, &str)]) -> BTreeSet<String> {
    pairs.iter().map(|(_, d)| d.to_string()).collect()
}

fn keys(store: &WeightStore) -> BTreeSet<String> {
    store.keys().map(String::from).collect()
}

fn sd15_keys(text: &[(&str, &str)]) -> Vec<String> {
    let mut all = prefixed("model.diffusion_model.", SD15_UNET);
    all.extend(prefixed("first_stage_model.", SD15_VAE));
    all.extend(prefixed("cond_stage_model.transformer.", text));
    all.extend(DROPPED.iter().map(|k| k.to_string()));
    all
}

fn open(name: &str, keys: &[String]) -> (TempPath, WeightStore) {
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let path = write_file(name, &refs);
    let store = WeightStore::open(&[path.to_path_buf()]).unwrap();
    (path, store)
}

#[test]
fn sd15_numbering_and_dropped_keys() {
    let text = [
        (
            "text_model.encoder.layers.11.self_attn.q_proj.weight",
            "text_model.encoder.layers.11.self_attn.q_proj.weight",
        ),
        (
            "text_model.embeddings.token_embedding.weight",
            "text_model.embeddings.token_embedding.weight",
        ),
        (
            "text_model.final_layer_norm.bias",
            "text_model.final_layer_norm.bias",
        ),
    ];
    let (_, store) = open("sd15", &sd15_keys(&text));
    let parts = convert_ldm(&store, &UNetConfig::sd15(), &VaeConfig::sd15()).unwrap();
    assert_eq!(keys(&parts.unet), expected(SD15_UNET));
    assert_eq!(keys(&parts.vae), expected(SD15_VAE));
    assert_eq!(keys(&parts.text_encoder), expected(&text));
    assert_eq!(parts.unet.read_f32("conv_in.weight").unwrap().0, vec![1.5]);
}

#[test]
fn old_transformers_text_layout() {
    let text = [
        (
            "embeddings.token_embedding.weight",
            "text_model.embeddings.token_embedding.weight",
        ),
        (
            "embeddings.position_embedding.weight",
            "text_model.embeddings.position_embedding.weight",
        ),
        ("embeddings.position_ids", "-"),
        (
            "encoder.layers.0.mlp.fc2.bias",
            "text_model.encoder.layers.0.mlp.fc2.bias",
        ),
        (
            "final_layer_norm.weight",
            "text_model.final_layer_norm.weight",
        ),
    ];
    let (_, store) = open("old-clip", &sd15_keys(&text));
    let parts = convert_ldm(&store, &UNetConfig::sd15(), &VaeConfig::sd15()).unwrap();
    let want: BTreeSet<String> = expected(&text).into_iter().filter(|k| k != "-").collect();
    assert_eq!(keys(&parts.text_encoder), want);
}

fn convert_err(name: &str, keys: &[String]) -> (TempPath, String) {
    let (path, store) = open(name, keys);
    let err = convert_ldm(&store, &UNetConfig::sd15(), &VaeConfig::sd15()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "error does not name the file: {msg}"
    );
    (path, msg)
}

#[test]
fn refuses_sdxl_sd2_and_non_ldm_files() {
    let unet = "model.diffusion_model.input_blocks.0.0.weight".to_string();
    let (_, msg) = convert_err(
        "sdxl",
        &[
            unet.clone(),
            "model.diffusion_model.label_emb.0.0.weight".into(),
            "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight".into(),
        ],
    );
    assert!(
        msg.contains("SDXL") && msg.contains("Stable Diffusion 1.x"),
        "{msg}"
    );

    let (_, msg) = convert_err(
        "sd2",
        &[
            unet.clone(),
            "cond_stage_model.model.ln_final.weight".into(),
        ],
    );
    assert!(msg.contains("SD 2") && msg.contains("OpenCLIP"), "{msg}");

    let (path, msg) = convert_err(
        "diffusers-unet",
        &["conv_in.weight".into(), "conv_out.bias".into()],
    );
    assert!(msg.contains("model.diffusion_model."), "{msg}");
    assert!(!is_ldm_checkpoint(
        &WeightStore::open(&[path.to_path_buf()]).unwrap()
    ));
}

#[test]
fn refuses_tensors_the_config_does_not_describe() {
    let mut extra_unet = sd15_keys(&[]);
    extra_unet.push("model.diffusion_model.input_blocks.12.0.in_layers.0.weight".into());
    let (_, msg) = convert_err("extra-unet", &extra_unet);
    assert!(
        msg.contains("input_blocks.12.0.in_layers.0.weight") && msg.contains("UNet config"),
        "{msg}"
    );

    let mut extra_vae = sd15_keys(&[]);
    extra_vae.push("first_stage_model.decoder.up.4.block.0.conv1.weight".into());
    let (_, msg) = convert_err("extra-vae", &extra_vae);
    assert!(
        msg.contains("decoder.up.4.block.0.conv1.weight") && msg.contains("VAE config"),
        "{msg}"
    );
}
