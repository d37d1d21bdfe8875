//! Single-file SD 1.x checkpoints (the original LDM / CompVis layout that A1111 and civitai ship) read
//! under diffusers names.
//!
//! One safetensors file holds the three models under three prefixes. [`convert_ldm`] splits it into one
//! [`WeightStore`] per model and renames every key to the name the diffusers-layout model code asks for,
//! the same fixed mapping as diffusers 0.27's `loaders/single_file_utils.py` (`convert_ldm_unet_checkpoint`,
//! `convert_ldm_vae_checkpoint`, `create_text_encoder_from_ldm_clip_checkpoint`). Nothing is copied: the
//! stores index the memory-mapped file under new names. Shapes never change, except that the VAE attention's
//! q/k/v/proj_out are 1x1 convolutions `[C, C, 1, 1]` in LDM and linears `[C, C]` in diffusers, which the
//! [`VarBuilder`](super::weights::VarBuilder) accepts as they are.
//!
//! The block numbering is computed from the configs (layers per block, which blocks have attentions), not
//! hard-coded for SD 1.5, so the same code serves tiny test models.
//!
//! # UNet (`model.diffusion_model.` prefix)
//!
//! `L` = number of blocks, `P[b]` = `layers_per_block[b]`. LDM numbers the UNet's children linearly:
//! `input_blocks.0` is `conv_in`, then each down block `b` contributes `P[b]` entries (a resnet at `.0`, its
//! transformer at `.1` in cross-attention blocks) and, except the last block, one entry holding the
//! downsampler. `output_blocks` run over the up blocks in diffusers' order, `P[L-1-u] + 1` entries each
//! (resnet `.0`, transformer `.1` if any, and in the last entry of every block but the last the upsampler,
//! at `.1` or, after a transformer, `.2`).
//!
//! | LDM                                               | diffusers                                 |
//! |---------------------------------------------------|-------------------------------------------|
//! | `time_embed.0` / `time_embed.2`                   | `time_embedding.linear_1` / `linear_2`    |
//! | `input_blocks.0.0`                                | `conv_in`                                 |
//! | `input_blocks.{k}.0.<resnet>`                     | `down_blocks.{b}.resnets.{j}.<resnet'>`   |
//! | `input_blocks.{k}.1.*`                            | `down_blocks.{b}.attentions.{j}.*`        |
//! | `input_blocks.{k}.0.op`                           | `down_blocks.{b}.downsamplers.0.conv`     |
//! | `middle_block.0.<resnet>` / `middle_block.2.<resnet>` | `mid_block.resnets.0/1.<resnet'>`     |
//! | `middle_block.1.*`                                | `mid_block.attentions.0.*`                |
//! | `output_blocks.{k}.0.<resnet>`                    | `up_blocks.{u}.resnets.{j}.<resnet'>`     |
//! | `output_blocks.{k}.1.*` (cross-attention blocks)  | `up_blocks.{u}.attentions.{j}.*`          |
//! | `output_blocks.{k}.{1 or 2}.conv`                 | `up_blocks.{u}.upsamplers.0.conv`         |
//! | `out.0` / `out.2`                                 | `conv_norm_out` / `conv_out`              |
//!
//! UNet resnet parts (`<resnet>` -> `<resnet'>`): `in_layers.0` -> `norm1`, `in_layers.2` -> `conv1`,
//! `emb_layers.1` -> `time_emb_proj`, `out_layers.0` -> `norm2`, `out_layers.3` -> `conv2`,
//! `skip_connection` -> `conv_shortcut`. Transformers (`*`) keep their inner names in both layouts
//! (`norm`, `proj_in`, `transformer_blocks.{t}.{norm1,attn1,norm2,attn2,norm3,ff}...`, `proj_out`).
//!
//! # VAE (`first_stage_model.` prefix)
//!
//! | LDM                                          | diffusers                                          |
//! |----------------------------------------------|----------------------------------------------------|
//! | `{en,de}coder.conv_in` / `conv_out`          | same                                               |
//! | `{en,de}coder.norm_out`                      | `{en,de}coder.conv_norm_out`                       |
//! | `encoder.down.{i}.block.{j}.<vresnet>`       | `encoder.down_blocks.{i}.resnets.{j}.<vresnet'>`   |
//! | `encoder.down.{i}.downsample.conv`           | `encoder.down_blocks.{i}.downsamplers.0.conv`      |
//! | `decoder.up.{L-1-i}.block.{j}.<vresnet>`     | `decoder.up_blocks.{i}.resnets.{j}.<vresnet'>`     |
//! | `decoder.up.{L-1-i}.upsample.conv`           | `decoder.up_blocks.{i}.upsamplers.0.conv`          |
//! | `{en,de}coder.mid.block_1` / `block_2`       | `{en,de}coder.mid_block.resnets.0` / `resnets.1`   |
//! | `{en,de}coder.mid.attn_1.norm`               | `{en,de}coder.mid_block.attentions.0.group_norm`   |
//! | `{en,de}coder.mid.attn_1.{q,k,v}`            | `{en,de}coder.mid_block.attentions.0.{to_q,to_k,to_v}` |
//! | `{en,de}coder.mid.attn_1.proj_out`           | `{en,de}coder.mid_block.attentions.0.to_out.0`     |
//! | `quant_conv` / `post_quant_conv`             | same                                               |
//!
//! LDM numbers the decoder levels from the highest resolution up (`up.0` is the last to run), diffusers
//! numbers `up_blocks` in running order, hence `L-1-i`. VAE resnet parts: `norm1`, `conv1`, `norm2`, `conv2`
//! keep their names, `nin_shortcut` -> `conv_shortcut`.
//!
//! # Text encoder (`cond_stage_model.transformer.` prefix)
//!
//! | LDM                                                      | diffusers (transformers' `CLIPTextModel`)   |
//! |----------------------------------------------------------|---------------------------------------------|
//! | `cond_stage_model.transformer.text_model.*`              | `text_model.*`                              |
//! | `cond_stage_model.transformer.embeddings.*`              | `text_model.embeddings.*`                   |
//! | `cond_stage_model.transformer.encoder.*`                 | `text_model.encoder.*`                      |
//! | `cond_stage_model.transformer.final_layer_norm.*`        | `text_model.final_layer_norm.*`             |
//!
//! The last three rows are the older layout without `text_model` that some SD 1.x files carry (A1111 accepts
//! it; diffusers 0.27 does not). `text_model.embeddings.position_ids` (an int64 buffer that transformers
//! does not load) is dropped, in both layouts.
//!
//! # Dropped keys and errors
//!
//! Everything else is dropped, as diffusers drops it: `model_ema.*` (diffusers keeps the non-EMA weights by
//! default), `alphas_cumprod`, `betas` and the other schedule buffers, `cond_stage_model` extras,
//! `first_stage_model.loss.*`. Unlike diffusers, a tensor under `model.diffusion_model.` or
//! `first_stage_model.{encoder,decoder}.` that the configs do not account for is an error (the config does
//! not describe the checkpoint, e.g. a wrong `layers_per_block`), rather than a warning about unused weights.
//!
//! A file that is not an SD 1.x LDM checkpoint is refused naming the file: no `model.diffusion_model.`
//! tensors (e.g. a diffusers component file), SDXL (`conditioner.*`, `label_emb`), SD 2.x (the OpenCLIP text
//! encoder under `cond_stage_model.model.`). A file without VAE or text encoder tensors (a "UNet only"
//! prune) converts to empty stores for those parts; check [`WeightStore::is_empty`] to supply them elsewhere.

use std::collections::BTreeMap;

use super::unet::config::{DownBlockType, UNetConfig, UpBlockType};
use super::vae::config::VaeConfig;
use super::weights::WeightStore;
use crate::error::{Error, Result};

/// Prefix of the UNet's tensors in an LDM checkpoint.
pub const LDM_UNET_PREFIX: &str = "model.diffusion_model.";
/// Prefix of the VAE's tensors in an LDM checkpoint.
pub const LDM_VAE_PREFIX: &str = "first_stage_model.";
/// Prefix of the (transformers-layout) CLIP text encoder's tensors in an SD 1.x LDM checkpoint.
pub const LDM_TEXT_PREFIX: &str = "cond_stage_model.transformer.";

/// The three models of a single-file checkpoint, each indexed under its diffusers key names.
#[derive(Debug, Clone)]
pub struct SingleFileParts {
    /// Keys as `UNet2DConditionModel` names them (`down_blocks.0.resnets.0.conv1.weight`, ...).
    pub unet: WeightStore,
    /// Keys as `AutoencoderKL` names them (`encoder.down_blocks.0.resnets.0.conv1.weight`, ...).
    pub vae: WeightStore,
    /// Keys as transformers' `CLIPTextModel` names them (`text_model.encoder.layers.0...`).
    pub text_encoder: WeightStore,
}

/// Whether a store looks like an LDM single file (has `model.diffusion_model.` keys).
pub fn is_ldm_checkpoint(store: &WeightStore) -> bool {
    store.keys().any(|k| k.starts_with(LDM_UNET_PREFIX))
}

/// Splits and renames a single-file LDM checkpoint into diffusers-named stores, as diffusers' single-file
/// loader does (the fixed key mapping). The configs give the block structure (see the module docs).
pub fn convert_ldm(
    store: &WeightStore,
    unet: &UNetConfig,
    vae: &VaeConfig,
) -> Result<SingleFileParts> {
    check_sd1_ldm(store)?;
    Ok(SingleFileParts {
        unet: convert_part(
            store,
            LDM_UNET_PREFIX,
            &unet_map(unet),
            |_| true,
            "UNet config",
        )?,
        vae: convert_part(
            store,
            LDM_VAE_PREFIX,
            &vae_map(vae),
            |k| k.starts_with("encoder.") || k.starts_with("decoder."),
            "VAE config",
        )?,
        text_encoder: store.strip_prefix(LDM_TEXT_PREFIX).rename(text_key),
    })
}

/// Refuses files that are not SD 1.x LDM checkpoints, naming the file and what was expected.
fn check_sd1_ldm(store: &WeightStore) -> Result<()> {
    let path = store.describe_path();
    let expected = "expected a Stable Diffusion 1.x single-file checkpoint (LDM layout)";
    if !is_ldm_checkpoint(store) {
        let example = store.keys().next().unwrap_or("<no tensors>").to_string();
        return Err(Error::bad_file(
            path,
            format!("no `{LDM_UNET_PREFIX}*` tensors (first key: `{example}`): {expected}"),
        ));
    }
    let sdxl = store.keys().find(|k| {
        k.starts_with("conditioner.") || k.starts_with("model.diffusion_model.label_emb.")
    });
    if let Some(k) = sdxl {
        return Err(Error::bad_file(
            path,
            format!("this is an SDXL checkpoint (it has `{k}`): {expected}"),
        ));
    }
    if let Some(k) = store
        .keys()
        .find(|k| k.starts_with("cond_stage_model.model."))
    {
        return Err(Error::bad_file(
            path,
            format!("this is an SD 2.x checkpoint (OpenCLIP text encoder, `{k}`): {expected}"),
        ));
    }
    Ok(())
}

/// Renames the tensors under `prefix` by `map`; tensors matching `strict` that `map` does not cover are an
/// error (the config does not describe the file), other unmapped tensors are dropped.
fn convert_part(
    store: &WeightStore,
    prefix: &str,
    map: &PrefixMap,
    strict: impl Fn(&str) -> bool,
    config: &str,
) -> Result<WeightStore> {
    let part = store.strip_prefix(prefix);
    let unmapped: Vec<&str> = part
        .keys()
        .filter(|k| strict(k) && map.get(k).is_none())
        .collect();
    if let Some(first) = unmapped.first() {
        return Err(Error::bad_file(
            store.describe_path(),
            format!(
                "{} tensor(s) under `{prefix}` do not fit the {config} (first: `{prefix}{first}`): the config \
                 does not describe this checkpoint (block counts, layers_per_block, attention blocks)",
                unmapped.len()
            ),
        ));
    }
    Ok(part.rename(|k| map.get(k)))
}

/// LDM module path -> diffusers module path. A key is renamed by its longest mapped module prefix, the
/// rest of the key (`.weight`, or a transformer's inner path) kept as is.
#[derive(Debug, Default)]
struct PrefixMap(BTreeMap<String, String>);

impl PrefixMap {
    fn add(&mut self, ldm: impl Into<String>, diffusers: impl Into<String>) {
        self.0.insert(ldm.into(), diffusers.into());
    }

    /// Maps each `(ldm, diffusers)` pair of part names below the two module paths.
    fn add_parts(&mut self, ldm: &str, diffusers: &str, parts: &[(&str, &str)]) {
        for (l, d) in parts {
            self.add(format!("{ldm}.{l}"), format!("{diffusers}.{d}"));
        }
    }

    /// The diffusers name of an LDM key (without the model prefix), if a prefix of it is mapped.
    fn get(&self, key: &str) -> Option<String> {
        let mut end = key.len();
        while let Some(dot) = key[..end].rfind('.') {
            if let Some(new) = self.0.get(&key[..dot]) {
                return Some(format!("{new}{}", &key[dot..]));
            }
            end = dot;
        }
        None
    }
}

/// The parts of a UNet `ResBlock` (LDM name, diffusers name).
const UNET_RESNET_PARTS: &[(&str, &str)] = &[
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("emb_layers.1", "time_emb_proj"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("skip_connection", "conv_shortcut"),
];

/// The parts of a VAE `ResnetBlock` (LDM name, diffusers name).
const VAE_RESNET_PARTS: &[(&str, &str)] = &[
    ("norm1", "norm1"),
    ("conv1", "conv1"),
    ("norm2", "norm2"),
    ("conv2", "conv2"),
    ("nin_shortcut", "conv_shortcut"),
];

/// The parts of the VAE's mid-block `AttnBlock` (LDM name, diffusers name).
const VAE_ATTN_PARTS: &[(&str, &str)] = &[
    ("norm", "group_norm"),
    ("q", "to_q"),
    ("k", "to_k"),
    ("v", "to_v"),
    ("proj_out", "to_out.0"),
];

/// The UNet's module mapping for `cfg` (see the module docs).
fn unet_map(cfg: &UNetConfig) -> PrefixMap {
    let mut m = PrefixMap::default();
    let n = cfg.block_out_channels.len();
    m.add("time_embed.0", "time_embedding.linear_1");
    m.add("time_embed.2", "time_embedding.linear_2");
    m.add("input_blocks.0.0", "conv_in");
    m.add("out.0", "conv_norm_out");
    m.add("out.2", "conv_out");

    // Down path: `input_blocks.{k}` numbered across all blocks.
    let mut k = 1;
    for (b, kind) in cfg.down_block_types.iter().enumerate() {
        let attention = *kind == DownBlockType::CrossAttnDownBlock2D;
        for j in 0..cfg.layers_per_block[b] {
            let new = format!("down_blocks.{b}");
            m.add_parts(
                &format!("input_blocks.{k}.0"),
                &format!("{new}.resnets.{j}"),
                UNET_RESNET_PARTS,
            );
            if attention {
                m.add(
                    format!("input_blocks.{k}.1"),
                    format!("{new}.attentions.{j}"),
                );
            }
            k += 1;
        }
        if b + 1 < n {
            m.add(
                format!("input_blocks.{k}.0.op"),
                format!("down_blocks.{b}.downsamplers.0.conv"),
            );
            k += 1;
        }
    }

    m.add_parts("middle_block.0", "mid_block.resnets.0", UNET_RESNET_PARTS);
    m.add("middle_block.1", "mid_block.attentions.0");
    m.add_parts("middle_block.2", "mid_block.resnets.1", UNET_RESNET_PARTS);

    // Up path: `output_blocks.{k}` in diffusers' up-block order; up block `u` mirrors down block `L-1-u`
    // and has one more layer.
    let mut k = 0;
    for (u, kind) in cfg.up_block_types.iter().enumerate() {
        let attention = *kind == UpBlockType::CrossAttnUpBlock2D;
        let layers = cfg.layers_per_block[n - 1 - u] + 1;
        for j in 0..layers {
            let new = format!("up_blocks.{u}");
            m.add_parts(
                &format!("output_blocks.{k}.0"),
                &format!("{new}.resnets.{j}"),
                UNET_RESNET_PARTS,
            );
            if attention {
                m.add(
                    format!("output_blocks.{k}.1"),
                    format!("{new}.attentions.{j}"),
                );
            }
            if j + 1 == layers && u + 1 < n {
                let idx = if attention { 2 } else { 1 };
                m.add(
                    format!("output_blocks.{k}.{idx}.conv"),
                    format!("{new}.upsamplers.0.conv"),
                );
            }
            k += 1;
        }
    }
    m
}

/// The VAE's module mapping for `cfg` (see the module docs).
fn vae_map(cfg: &VaeConfig) -> PrefixMap {
    let mut m = PrefixMap::default();
    let n = cfg.block_out_channels.len();
    for coder in ["encoder", "decoder"] {
        m.add(format!("{coder}.conv_in"), format!("{coder}.conv_in"));
        m.add(format!("{coder}.conv_out"), format!("{coder}.conv_out"));
        m.add(
            format!("{coder}.norm_out"),
            format!("{coder}.conv_norm_out"),
        );
        for (i, ldm) in ["block_1", "block_2"].iter().enumerate() {
            m.add_parts(
                &format!("{coder}.mid.{ldm}"),
                &format!("{coder}.mid_block.resnets.{i}"),
                VAE_RESNET_PARTS,
            );
        }
        if cfg.mid_block_add_attention {
            m.add_parts(
                &format!("{coder}.mid.attn_1"),
                &format!("{coder}.mid_block.attentions.0"),
                VAE_ATTN_PARTS,
            );
        }
    }
    for i in 0..n {
        for j in 0..cfg.layers_per_block {
            m.add_parts(
                &format!("encoder.down.{i}.block.{j}"),
                &format!("encoder.down_blocks.{i}.resnets.{j}"),
                VAE_RESNET_PARTS,
            );
        }
        if i + 1 < n {
            m.add(
                format!("encoder.down.{i}.downsample.conv"),
                format!("encoder.down_blocks.{i}.downsamplers.0.conv"),
            );
        }
        // The decoder's LDM levels count up from the highest resolution; diffusers' up_blocks run the other way.
        let l = n - 1 - i;
        for j in 0..cfg.layers_per_block + 1 {
            m.add_parts(
                &format!("decoder.up.{l}.block.{j}"),
                &format!("decoder.up_blocks.{i}.resnets.{j}"),
                VAE_RESNET_PARTS,
            );
        }
        if i + 1 < n {
            m.add(
                format!("decoder.up.{l}.upsample.conv"),
                format!("decoder.up_blocks.{i}.upsamplers.0.conv"),
            );
        }
    }
    if cfg.use_quant_conv {
        m.add("quant_conv", "quant_conv");
    }
    if cfg.use_post_quant_conv {
        m.add("post_quant_conv", "post_quant_conv");
    }
    m
}

/// The text encoder's name for a key below `cond_stage_model.transformer.` (both transformers layouts);
/// `None` drops it (`position_ids` and anything that is not part of `CLIPTextModel`'s text tower).
fn text_key(key: &str) -> Option<String> {
    let inner = key.strip_prefix("text_model.").unwrap_or(key);
    if inner.ends_with("position_ids") {
        return None;
    }
    ["embeddings.", "encoder.", "final_layer_norm."]
        .iter()
        .any(|p| inner.starts_with(p))
        .then(|| format!("text_model.{inner}"))
}
