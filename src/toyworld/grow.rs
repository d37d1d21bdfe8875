//! Growing a trained toyworld UNet into a larger architecture without losing what it learnt: cross-attention
//! at more levels (`--unet-attention`) or more transformer layers in each cross-attention block
//! (`--unet-transformer-layers`). The weights both architectures have are copied. Each new module starts as
//! an identity, so the grown UNet computes exactly what the trained one did, and training goes on from there
//! (the zero-initialised residual branches of ControlNet's zero convolutions):
//! - a new `Transformer2DModel` (`*.attentions.N`) starts with a zero `proj_out`, the output of its residual
//!   branch;
//! - a new `BasicTransformerBlock` in a kept one starts with zero `attn1.to_out.0`, `attn2.to_out.0` and
//!   `ff.net.2`, the outputs of its three residual branches.
//!
//! Every other new weight is drawn as [`TextUnet::random`](super::text_unet::TextUnet::random) draws it, so
//! gradients reach it once the zero output has moved.

use std::path::Path;

use burn::tensor::{backend::Backend, DType};

use super::arch::ToyArch;
use super::error::{ToyError, ToyResult};
use super::param_names::{write_safetensors, ParamNames};
use crate::models::unet::UNet2DConditionModel;
use crate::models::weights::{VarBuilder, WeightStore};

/// Why `to` is not `from` grown (`None` when it is): everything but the UNet's cross-attention levels and
/// transformer layer count must be the same, and those may only be added to.
pub fn growth_refused(from: &ToyArch, to: &ToyArch) -> Option<String> {
    let same_rest = ToyArch {
        unet_cross_attention: to.unet_cross_attention.clone(),
        unet_transformer_layers: to.unet_transformer_layers,
        ..from.clone()
    } == *to;
    if !same_rest {
        return Some(
            "only cross-attention levels and transformer layers can be added; every other size must stay".into(),
        );
    }
    if from.unet_cross_attention.len() != to.unet_cross_attention.len()
        || from
            .unet_cross_attention
            .iter()
            .zip(&to.unet_cross_attention)
            .any(|(&had, &has)| had && !has)
    {
        return Some(format!(
            "cross-attention levels {:?} would drop some of {:?}",
            to.unet_cross_attention, from.unet_cross_attention
        ));
    }
    if to.unet_transformer_layers < from.unet_transformer_layers {
        return Some(format!(
            "{} transformer layers would drop some of {}",
            to.unet_transformer_layers, from.unet_transformer_layers
        ));
    }
    None
}

/// Whether the new weight `key` is the output of a new residual branch (see the module docs); `old` holds the
/// trained UNet's keys.
fn starts_at_zero(key: &str, old: &WeightStore) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    let Some(at) = parts.iter().position(|p| *p == "attentions") else {
        return false;
    };
    // `...attentions.N.`: the Transformer2DModel the key belongs to.
    let module = format!("{}.", parts[..(at + 2).min(parts.len())].join("."));
    let rest = &key[module.len().min(key.len())..];
    if old.keys().any(|k| k.starts_with(&module)) {
        ["attn1.to_out.0.", "attn2.to_out.0.", "ff.net.2."]
            .iter()
            .any(|branch| rest.starts_with("transformer_blocks.") && rest.contains(branch))
    } else {
        rest.starts_with("proj_out.")
    }
}

/// Rewrites the f32 UNet weight file `file` (trained for a smaller architecture) as the UNet of `to`. Returns
/// how many tensors were added. An old weight that `to` lacks or holds in another shape is an error: `to` is not
/// a growth of the file's architecture.
pub fn grow_unet<B: Backend>(
    to: &ToyArch,
    file: &Path,
    seed: u64,
    device: &B::Device,
) -> ToyResult<usize> {
    let old = WeightStore::open(&[file.to_path_buf()])?;
    let config = to.unet_config()?;
    let names = ParamNames::discover(
        |vb: &VarBuilder<B>| UNet2DConditionModel::load(vb, &config),
        device,
    )?;
    let fresh =
        UNet2DConditionModel::<B>::load(&VarBuilder::random(seed, device, DType::F32), &config)?;
    let mut tensors = names.tensors(&fresh)?;
    let mut added = 0;
    for (key, shape, values) in &mut tensors {
        if let Some(stored) = old.shape(key) {
            if stored != shape.as_slice() {
                return Err(ToyError::bad_file(
                    file,
                    format!("`{key}` has shape {stored:?}; the grown UNet needs {shape:?}"),
                ));
            }
            *values = old.read_f32(key)?.0;
        } else {
            added += 1;
            if starts_at_zero(key, &old) {
                values.iter_mut().for_each(|v| *v = 0.0);
            }
        }
    }
    let kept = tensors.len() - added;
    if kept != old.len() {
        let missing: Vec<&str> = old
            .keys()
            .filter(|k| !tensors.iter().any(|(key, _, _)| key == k))
            .take(3)
            .collect();
        return Err(ToyError::bad_file(
            file,
            format!("the grown UNet has no place for {missing:?} (and maybe more): it is not a growth of this one"),
        ));
    }
    write_safetensors(file, &tensors, false)?;
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_added_attention_and_layers_are_growth() {
        let from = ToyArch::default();
        let mut to = from.clone();
        assert_eq!(growth_refused(&from, &to), None);
        to.unet_cross_attention = vec![true, true, true];
        to.unet_transformer_layers = 2;
        assert_eq!(growth_refused(&from, &to), None);
        assert!(growth_refused(&to, &from).unwrap().contains("drop"));
        let mut wider = from.clone();
        wider.unet_channels = vec![32, 64, 128];
        assert!(growth_refused(&from, &wider)
            .unwrap()
            .contains("every other size"));
    }
}
