//! The trainable half of the pipeline: the CLIP text encoder and the UNet, trained together end to end (the
//! VAE is trained first and frozen), with their loading, parameter names and checkpoint files.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{backend::Backend, DType};

use super::arch::ToyArch;
use super::error::ToyResult;
use super::param_names::ParamNames;
use super::trainable::trainable;
use crate::models::clip::text_encoder::ClipTextModel;
use crate::models::unet::UNet2DConditionModel;
use crate::models::weights::{VarBuilder, WeightStore};

pub const TEXT_FILE: &str = "model.safetensors";
pub const UNET_FILE: &str = "diffusion_pytorch_model.safetensors";

/// Text encoder and UNet as one module (one optimizer over both).
#[derive(Module, Debug)]
pub struct TextUnet<B: Backend> {
    pub text_encoder: ClipTextModel<B>,
    pub unet: UNet2DConditionModel<B>,
}

/// Parameter names of both parts.
#[derive(Debug, Clone)]
pub struct TextUnetNames {
    pub text: ParamNames,
    pub unet: ParamNames,
}

impl TextUnetNames {
    pub fn discover<B: Backend>(arch: &ToyArch, device: &B::Device) -> ToyResult<Self> {
        let tc = arch.text_config()?;
        let uc = arch.unet_config()?;
        Ok(Self {
            text: ParamNames::discover(|vb: &VarBuilder<B>| ClipTextModel::load(vb, &tc), device)?,
            unet: ParamNames::discover(
                |vb: &VarBuilder<B>| UNet2DConditionModel::load(vb, &uc),
                device,
            )?,
        })
    }

    /// Writes `text_encoder/` and `unet/` weight files below `dir`.
    pub fn save<B: Backend>(&self, model: &TextUnet<B>, dir: &Path, f16: bool) -> ToyResult<()> {
        self.text.save(
            &model.text_encoder,
            &dir.join("text_encoder").join(TEXT_FILE),
            f16,
        )?;
        self.unet
            .save(&model.unet, &dir.join("unet").join(UNET_FILE), f16)
    }
}

impl<B: Backend> TextUnet<B> {
    /// Random initial weights (deterministic in `seed`), tracked by autodiff.
    pub fn random(arch: &ToyArch, seed: u64, device: &B::Device) -> ToyResult<Self> {
        let vb = VarBuilder::random(seed, device, DType::F32);
        Ok(trainable(Self {
            text_encoder: ClipTextModel::load(&vb.clone(), &arch.text_config()?)?,
            unet: UNet2DConditionModel::load(&vb, &arch.unet_config()?)?,
        }))
    }

    /// Loads the weights that [`TextUnetNames::save`] wrote below `dir`.
    pub fn load(arch: &ToyArch, dir: &Path, device: &B::Device) -> ToyResult<Self> {
        let text = WeightStore::open_component(&dir.join("text_encoder"), &[TEXT_FILE])?;
        let unet = WeightStore::open_component(&dir.join("unet"), &[UNET_FILE])?;
        Ok(Self {
            text_encoder: ClipTextModel::load(
                &VarBuilder::new(text, device, DType::F32),
                &arch.text_config()?,
            )?,
            unet: UNet2DConditionModel::load(
                &VarBuilder::new(unet, device, DType::F32),
                &arch.unet_config()?,
            )?,
        })
    }
}
