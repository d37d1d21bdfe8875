//! A whole SD 1.x model: tokenizer, text encoder, UNet, VAE and the scheduler config, loaded from a
//! diffusers folder or a single-file LDM checkpoint, in f32, f16 or bf16.

use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, DType};

use crate::error::{Error, Result};
use crate::lora::state::LoraState;
use crate::models::clip::text_encoder::{ClipTextConfig, ClipTextModel};
use crate::models::clip::tokenizer::ClipTokenizer;
use crate::models::single_file;
use crate::models::unet::{UNet2DConditionModel, UNetConfig};
use crate::models::vae::{AutoencoderKL, VaeConfig};
use crate::models::weights::{VarBuilder, WeightStore};
use crate::schedulers::SchedulerConfig;

/// Where the model comes from and how to load it.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Run dtype: F32 (CPU), or F16/BF16 (GPU).
    pub dtype: DType,
    /// For a single-file checkpoint: a diffusers folder whose `*/config.json`, `tokenizer/` and
    /// `scheduler/` describe it. `None` uses SD 1.5's configs.
    pub config_dir: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            config_dir: None,
        }
    }
}

/// The loaded model.
#[derive(Debug)]
pub struct StableDiffusion<B: Backend> {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel<B>,
    pub unet: UNet2DConditionModel<B>,
    pub vae: AutoencoderKL<B>,
    pub unet_config: UNetConfig,
    pub vae_config: VaeConfig,
    pub text_config: ClipTextConfig,
    pub scheduler_config: SchedulerConfig,
    /// What was loaded (the folder or the file).
    pub source: PathBuf,
    pub dtype: DType,
    /// Attached LoRA adapters, their weights, per-row assignment and fused state (see [`crate::lora`]).
    pub lora: LoraState,
}

const UNET_FILES: &[&str] = &["diffusion_pytorch_model.safetensors", "model.safetensors"];
const VAE_FILES: &[&str] = &["diffusion_pytorch_model.safetensors", "model.safetensors"];
const TEXT_FILES: &[&str] = &["model.safetensors", "diffusion_pytorch_model.safetensors"];

impl<B: Backend> StableDiffusion<B> {
    /// Loads a diffusers folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`, `tokenizer/`,
    /// `scheduler/`) or a single `.safetensors` checkpoint in the original LDM layout.
    pub fn load(path: &Path, options: &LoadOptions, device: &B::Device) -> Result<Self> {
        if path.is_dir() {
            Self::load_diffusers(path, options, device)
        } else if path.is_file() {
            Self::load_single_file(path, options, device)
        } else {
            Err(Error::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such model folder or checkpoint file",
                ),
            ))
        }
    }

    fn load_diffusers(dir: &Path, options: &LoadOptions, device: &B::Device) -> Result<Self> {
        for sub in ["unet", "vae", "text_encoder"] {
            if !dir.join(sub).is_dir() {
                return Err(Error::bad_file(
                    dir,
                    format!("not a diffusers SD folder: `{sub}/` is missing (expected unet/, vae/, text_encoder/, tokenizer/, scheduler/)"),
                ));
            }
        }
        let unet_config = UNetConfig::from_file(&dir.join("unet/config.json"))?;
        let vae_config = VaeConfig::from_file(&dir.join("vae/config.json"))?;
        let text_config = ClipTextConfig::from_file(&dir.join("text_encoder/config.json"))?;
        let scheduler_config = read_scheduler_config(dir)?;
        let tokenizer = read_tokenizer(dir, &text_config)?;
        let unet_store = WeightStore::open_component(&dir.join("unet"), UNET_FILES)?;
        let vae_store = WeightStore::open_component(&dir.join("vae"), VAE_FILES)?;
        let text_store = WeightStore::open_component(&dir.join("text_encoder"), TEXT_FILES)?;
        Self::assemble(
            Parts {
                tokenizer,
                unet_config,
                vae_config,
                text_config,
                scheduler_config,
                unet_store,
                vae_store,
                text_store,
            },
            dir,
            options,
            device,
        )
    }

    fn load_single_file(file: &Path, options: &LoadOptions, device: &B::Device) -> Result<Self> {
        let (unet_config, vae_config, tokenizer, text_config, scheduler_config) =
            match &options.config_dir {
                Some(dir) => {
                    let text = ClipTextConfig::from_file(&dir.join("text_encoder/config.json"))?;
                    (
                        UNetConfig::from_file(&dir.join("unet/config.json"))?,
                        VaeConfig::from_file(&dir.join("vae/config.json"))?,
                        read_tokenizer(dir, &text)?,
                        text,
                        read_scheduler_config(dir)?,
                    )
                }
                None => (
                    UNetConfig::sd15(),
                    VaeConfig::sd15(),
                    ClipTokenizer::embedded()?,
                    ClipTextConfig::sd15(),
                    SchedulerConfig::sd15_default(),
                ),
            };
        let store = WeightStore::open(&[file.to_path_buf()])?;
        let parts = single_file::convert_ldm(&store, &unet_config, &vae_config)?;
        Self::assemble(
            Parts {
                tokenizer,
                unet_config,
                vae_config,
                text_config,
                scheduler_config,
                unet_store: parts.unet,
                vae_store: parts.vae,
                text_store: parts.text_encoder,
            },
            file,
            options,
            device,
        )
    }

    fn assemble(
        p: Parts,
        source: &Path,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        // the configs agree before any weight is read
        if p.tokenizer.max_length() > p.text_config.max_position_embeddings {
            return Err(Error::bad_file(
                source,
                format!(
                    "the tokenizer pads prompts to {} tokens (model_max_length), but the text encoder has {} positions (max_position_embeddings)",
                    p.tokenizer.max_length(),
                    p.text_config.max_position_embeddings
                ),
            ));
        }
        if p.text_config.hidden_size != p.unet_config.cross_attention_dim {
            return Err(Error::bad_file(
                source,
                format!(
                    "text encoder width {} differs from the UNet's cross_attention_dim {}",
                    p.text_config.hidden_size, p.unet_config.cross_attention_dim
                ),
            ));
        }
        let dtype = options.dtype;
        let text_encoder = ClipTextModel::load(
            &VarBuilder::new(p.text_store, device, dtype),
            &p.text_config,
        )?;
        let unet = UNet2DConditionModel::load(
            &VarBuilder::new(p.unet_store, device, dtype),
            &p.unet_config,
        )?;
        let vae = AutoencoderKL::load(&VarBuilder::new(p.vae_store, device, dtype), &p.vae_config)?;
        Ok(Self {
            tokenizer: p.tokenizer,
            text_encoder,
            unet,
            vae,
            unet_config: p.unet_config,
            vae_config: p.vae_config,
            text_config: p.text_config,
            scheduler_config: p.scheduler_config,
            source: source.to_path_buf(),
            dtype,
            lora: LoraState::default(),
        })
    }

    /// Pixels per latent cell (8 for SD).
    pub fn vae_scale_factor(&self) -> usize {
        self.vae_config.scale_factor()
    }
}

struct Parts {
    tokenizer: ClipTokenizer,
    unet_config: UNetConfig,
    vae_config: VaeConfig,
    text_config: ClipTextConfig,
    scheduler_config: SchedulerConfig,
    unet_store: WeightStore,
    vae_store: WeightStore,
    text_store: WeightStore,
}

fn read_scheduler_config(dir: &Path) -> Result<SchedulerConfig> {
    let p = dir.join("scheduler/scheduler_config.json");
    if p.is_file() {
        SchedulerConfig::from_file(&p)
    } else {
        Ok(SchedulerConfig::sd15_default())
    }
}

/// The folder's `tokenizer/`, or without one the embedded CLIP vocabulary, its context the text encoder's
/// (`max_position_embeddings`) where that is shorter than CLIP's 77.
fn read_tokenizer(dir: &Path, text: &ClipTextConfig) -> Result<ClipTokenizer> {
    let t = dir.join("tokenizer");
    if t.join("vocab.json").is_file() {
        ClipTokenizer::from_dir(&t)
    } else {
        let tokenizer = ClipTokenizer::embedded()?;
        if text.max_position_embeddings < tokenizer.max_length() {
            tokenizer.with_max_length(text.max_position_embeddings)
        } else {
            Ok(tokenizer)
        }
    }
}
