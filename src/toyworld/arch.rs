//! The toyworld model's architecture: a miniature Stable Diffusion 1.x (same classes, same config files), sized
//! for 64x64 images on a CPU, written as diffusers `config.json` files and parsed back by the SD loaders.

use std::path::Path;

use serde_json::{json, Value};

use crate::models::clip::text_encoder::ClipTextConfig;
use crate::models::clip::tokenizer::ClipTokenizer;
use crate::models::config_json::JsonConfig;
use crate::models::unet::UNetConfig;
use crate::models::vae::VaeConfig;
use crate::schedulers::SchedulerConfig;

use super::error::{ToyError, ToyResult};

/// Sizes of the miniature pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct ToyArch {
    /// Image side in pixels.
    pub image_size: usize,
    /// VAE channels per level (`len - 1` halvings: 3 levels = 64 px -> 16 latent cells).
    pub vae_channels: Vec<usize>,
    pub vae_groups: usize,
    pub latent_channels: usize,
    /// UNet channels per level.
    pub unet_channels: Vec<usize>,
    /// Whether each UNet level has cross-attention (down block `i`, and the mirrored up block).
    pub unet_cross_attention: Vec<bool>,
    /// Heads per UNet level (the SD 1.x meaning of `attention_head_dim`).
    pub unet_heads: Vec<usize>,
    pub unet_layers_per_block: usize,
    /// Transformer layers (`BasicTransformerBlock`s) in each cross-attention block, mid block included (the
    /// SD 1.x meaning of `transformer_layers_per_block`).
    pub unet_transformer_layers: usize,
    pub unet_groups: usize,
    /// Text encoder width (= the UNet's `cross_attention_dim`).
    pub text_hidden: usize,
    pub text_layers: usize,
    pub text_heads: usize,
    pub text_intermediate: usize,
    /// The text encoder's context (`max_position_embeddings`): prompts are padded or cut to it, and the UNet's
    /// cross-attention reads that many keys. 77, SD 1.x's, in every committed model; the world's longest
    /// caption takes 25 with BOS and EOS.
    pub text_positions: usize,
}

impl Default for ToyArch {
    /// The shipped model: 64x64 images, a 16x16x4 latent, cross-attention at 8x8 and 4x4 (CLoRA reads the
    /// 8x8 maps: `attention_stride_px` 8), a 2-layer CLIP text encoder of width 64 over the real CLIP vocabulary.
    fn default() -> Self {
        Self {
            image_size: 64,
            vae_channels: vec![16, 32, 64],
            vae_groups: 8,
            latent_channels: 4,
            unet_channels: vec![32, 64, 64],
            unet_cross_attention: vec![false, true, true],
            unet_heads: vec![2, 2, 2],
            unet_layers_per_block: 1,
            unet_transformer_layers: 1,
            unet_groups: 8,
            text_hidden: 64,
            text_layers: 2,
            text_heads: 2,
            text_intermediate: 256,
            text_positions: 77,
        }
    }
}

/// The CLIP vocabulary size (the real tokenizer's).
pub const CLIP_VOCAB: usize = 49408;

impl ToyArch {
    /// Pixels per latent cell.
    pub fn vae_scale_factor(&self) -> usize {
        1 << (self.vae_channels.len() - 1)
    }

    /// Latent side in cells.
    pub fn latent_size(&self) -> usize {
        self.image_size / self.vae_scale_factor()
    }

    /// Sets the UNet's channels per level (`--unet-channels`), and with them its number of levels: two or more,
    /// each level but the last halving the latent, which must stay at least 2 cells a side. A new level count
    /// takes the first level's heads at every level and cross-attention at every level but the first (the
    /// default's pattern: 3 levels have it at 8x8 and 4x4, 2 levels at 8x8). An error says why `widths` do
    /// not fit: a level count the latent cannot take, or a width that is not a positive multiple of the norm
    /// groups and of the level's attention heads.
    pub fn set_unet_channels(&mut self, widths: &[usize]) -> ToyResult<()> {
        let levels = widths.len();
        // the latent halved at every level but the last stays at least 2 cells a side
        let max_levels = self.latent_size().max(2).ilog2() as usize;
        if !(2..=max_levels).contains(&levels) {
            return Err(ToyError::Training(format!(
                "UNet channels {widths:?}: expected 2 to {max_levels} widths, one per UNet level (a {}x{} latent \
                 halved at every level but the last)",
                self.latent_size(),
                self.latent_size()
            )));
        }
        let heads = if levels == self.unet_heads.len() {
            self.unet_heads.clone()
        } else {
            vec![self.unet_heads[0]; levels]
        };
        for (&c, &heads) in widths.iter().zip(&heads) {
            if c == 0 || c % self.unet_groups != 0 || c % heads != 0 {
                return Err(ToyError::Training(format!(
                    "UNet channels {widths:?}: {c} is not a positive multiple of the {} norm groups and the level's {heads} heads",
                    self.unet_groups
                )));
            }
        }
        if levels != self.unet_channels.len() {
            self.unet_cross_attention = (0..levels).map(|level| level > 0).collect();
        }
        self.unet_heads = heads;
        self.unet_channels = widths.to_vec();
        Ok(())
    }

    /// Cells per side of the UNet's finest cross-attention maps (`None`: no level has cross-attention).
    pub fn finest_attention_side(&self) -> Option<usize> {
        let level = self.unet_cross_attention.iter().position(|&a| a)?;
        Some(self.latent_size() >> level)
    }

    /// diffusers `unet/config.json`.
    pub fn unet_json(&self) -> Value {
        let down: Vec<&str> = self
            .unet_cross_attention
            .iter()
            .map(|&a| {
                if a {
                    "CrossAttnDownBlock2D"
                } else {
                    "DownBlock2D"
                }
            })
            .collect();
        let up: Vec<&str> = self
            .unet_cross_attention
            .iter()
            .rev()
            .map(|&a| if a { "CrossAttnUpBlock2D" } else { "UpBlock2D" })
            .collect();
        json!({
            "_class_name": "UNet2DConditionModel",
            "_diffusers_version": "0.27.2",
            "act_fn": "silu",
            "attention_head_dim": self.unet_heads,
            "block_out_channels": self.unet_channels,
            "center_input_sample": false,
            "cross_attention_dim": self.text_hidden,
            "down_block_types": down,
            "downsample_padding": 1,
            "dual_cross_attention": false,
            "flip_sin_to_cos": true,
            "freq_shift": 0,
            "in_channels": self.latent_channels,
            "layers_per_block": self.unet_layers_per_block,
            "mid_block_scale_factor": 1,
            "mid_block_type": "UNetMidBlock2DCrossAttn",
            "norm_eps": 1e-5,
            "norm_num_groups": self.unet_groups,
            "only_cross_attention": false,
            "out_channels": self.latent_channels,
            "resnet_time_scale_shift": "default",
            "sample_size": self.latent_size(),
            "transformer_layers_per_block": self.unet_transformer_layers,
            "up_block_types": up,
            "upcast_attention": false,
            "use_linear_projection": false
        })
    }

    /// diffusers `vae/config.json`; `scaling_factor` makes the diffusion latents about unit variance.
    pub fn vae_json(&self, scaling_factor: f64) -> Value {
        let n = self.vae_channels.len();
        json!({
            "_class_name": "AutoencoderKL",
            "_diffusers_version": "0.27.2",
            "act_fn": "silu",
            "block_out_channels": self.vae_channels,
            "down_block_types": vec!["DownEncoderBlock2D"; n],
            "force_upcast": true,
            "in_channels": 3,
            "latent_channels": self.latent_channels,
            "layers_per_block": 1,
            "mid_block_add_attention": false,
            "norm_num_groups": self.vae_groups,
            "out_channels": 3,
            "sample_size": self.image_size,
            "scaling_factor": scaling_factor,
            "up_block_types": vec!["UpDecoderBlock2D"; n]
        })
    }

    /// transformers `text_encoder/config.json` (`CLIPTextModel`).
    pub fn text_json(&self) -> Value {
        json!({
            "architectures": ["CLIPTextModel"],
            "attention_dropout": 0.0,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "hidden_act": "quick_gelu",
            "hidden_size": self.text_hidden,
            "initializer_factor": 1.0,
            "initializer_range": 0.02,
            "intermediate_size": self.text_intermediate,
            "layer_norm_eps": 1e-5,
            "max_position_embeddings": self.text_positions,
            "model_type": "clip_text_model",
            "num_attention_heads": self.text_heads,
            "num_hidden_layers": self.text_layers,
            "pad_token_id": 1,
            "projection_dim": self.text_hidden,
            "torch_dtype": "float16",
            "transformers_version": "4.39.3",
            "vocab_size": CLIP_VOCAB
        })
    }

    /// The toyworld's `scheduler/scheduler_config.json`: SD 1.5's file with DDPM's linear betas
    /// (0.0001..0.02 over 1000 steps) in place of SD's scaled-linear 0.00085..0.012. SD's schedule ends at
    /// `sqrt(alphas_cumprod[999])` = 0.068: on a 16x16 latent whose objects cover a few cells, that much of the
    /// image survives in the noise at the first sampling step, and a model trained on it takes each object's
    /// colour and place from the seed's low frequencies instead of from the prompt (the committed model of the
    /// first training did exactly that). DDPM's schedule, made for 32-64 px images, ends at 0.0064.
    pub fn scheduler_json() -> Value {
        json!({
            "_class_name": "PNDMScheduler",
            "_diffusers_version": "0.6.0",
            "beta_end": 0.02,
            "beta_schedule": "linear",
            "beta_start": 0.0001,
            "num_train_timesteps": 1000,
            "set_alpha_to_one": false,
            "skip_prk_steps": true,
            "steps_offset": 1,
            "trained_betas": null,
            "clip_sample": false
        })
    }

    /// The typed scheduler config of [`scheduler_json`](Self::scheduler_json).
    pub fn scheduler_config() -> ToyResult<SchedulerConfig> {
        Ok(SchedulerConfig::from_json_str(
            &Self::scheduler_json().to_string(),
            &Path::new("<toyworld>").join("scheduler/scheduler_config.json"),
        )?)
    }

    /// diffusers `model_index.json` of a `StableDiffusionPipeline`.
    pub fn model_index_json() -> Value {
        json!({
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": "0.27.2",
            "feature_extractor": [null, null],
            "image_encoder": [null, null],
            "requires_safety_checker": false,
            "safety_checker": [null, null],
            "scheduler": ["diffusers", "PNDMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"]
        })
    }

    /// The typed UNet config, parsed from [`unet_json`](Self::unet_json) by the SD loader's own parser.
    pub fn unet_config(&self) -> ToyResult<UNetConfig> {
        Ok(UNetConfig::from_json(&json_config(
            self.unet_json(),
            "unet/config.json",
        ))?)
    }

    /// The typed VAE config.
    pub fn vae_config(&self, scaling_factor: f64) -> ToyResult<VaeConfig> {
        Ok(VaeConfig::from_json(&json_config(
            self.vae_json(scaling_factor),
            "vae/config.json",
        ))?)
    }

    /// The tokenizer of a model of this shape: the real CLIP vocabulary, padded to [`Self::text_positions`].
    pub fn tokenizer(&self) -> ToyResult<ClipTokenizer> {
        Ok(ClipTokenizer::embedded()?.with_max_length(self.text_positions)?)
    }

    /// The typed text encoder config.
    pub fn text_config(&self) -> ToyResult<ClipTextConfig> {
        Ok(ClipTextConfig::from_json(&json_config(
            self.text_json(),
            "text_encoder/config.json",
        ))?)
    }
}

impl ToyArch {
    /// The sizes of a model folder written by [`export_pipeline`](super::export::export_pipeline) (or any
    /// diffusers folder of this shape), read from its `unet/`, `vae/` and `text_encoder/` configs, so that
    /// LoRA and decoder training build exactly the model they load.
    pub fn from_model_dir(dir: &Path) -> ToyResult<Self> {
        use crate::models::unet::config::DownBlockType;
        let unet = UNetConfig::from_file(&dir.join("unet").join("config.json"))?;
        let vae = VaeConfig::from_file(&dir.join("vae").join("config.json"))?;
        let text = ClipTextConfig::from_file(&dir.join("text_encoder").join("config.json"))?;
        let layers = unet.layers_per_block.first().copied().unwrap_or(1);
        let transformer_layers = unet
            .transformer_layers_per_block
            .last()
            .copied()
            .unwrap_or(1);
        let mut attention_levels = unet
            .down_block_types
            .iter()
            .zip(&unet.transformer_layers_per_block)
            .filter(|(t, _)| **t == DownBlockType::CrossAttnDownBlock2D);
        if unet.layers_per_block.iter().any(|&l| l != layers)
            || attention_levels.any(|(_, &l)| l != transformer_layers)
            || vae.layers_per_block != 1
        {
            return Err(super::error::ToyError::bad_file(
                dir,
                "the toyworld's trainers build one layer count and one transformer layer count for every UNet level \
                 and one VAE resnet per level",
            ));
        }
        Ok(Self {
            image_size: unet.sample_size * vae.scale_factor(),
            vae_channels: vae.block_out_channels.clone(),
            vae_groups: vae.norm_num_groups,
            latent_channels: vae.latent_channels,
            unet_channels: unet.block_out_channels.clone(),
            unet_cross_attention: unet
                .down_block_types
                .iter()
                .map(|t| *t == DownBlockType::CrossAttnDownBlock2D)
                .collect(),
            unet_heads: unet.num_heads.clone(),
            unet_layers_per_block: layers,
            unet_transformer_layers: transformer_layers,
            unet_groups: unet.norm_num_groups,
            text_hidden: text.hidden_size,
            text_layers: text.num_hidden_layers,
            text_heads: text.num_attention_heads,
            text_intermediate: text.intermediate_size,
            text_positions: text.max_position_embeddings,
        })
    }
}

impl ToyArch {
    /// Writes the architecture's configs under `dir` (`unet/`, `vae/`, `text_encoder/` `config.json`, the VAE's
    /// scaling factor left at 1), the form [`from_model_dir`](Self::from_model_dir) reads back. A training
    /// work folder keeps them in `arch/`, so that resuming and exporting build the model that was trained.
    pub fn write_configs(&self, dir: &Path) -> ToyResult<()> {
        for (part, value) in [
            ("unet", self.unet_json()),
            ("vae", self.vae_json(1.0)),
            ("text_encoder", self.text_json()),
        ] {
            let path = dir.join(part).join("config.json");
            let text = serde_json::to_string_pretty(&value).expect("JSON serializes") + "\n";
            crate::latent_io::write_atomic(&path, text.as_bytes())?;
        }
        Ok(())
    }

    /// The architecture a training work folder was started with (`work/arch/`), if it records one.
    pub fn of_work_folder(work: &Path) -> ToyResult<Option<Self>> {
        let dir = work.join("arch");
        if dir.join("unet").join("config.json").is_file() {
            Self::from_model_dir(&dir).map(Some)
        } else {
            Ok(None)
        }
    }
}

fn json_config(value: Value, name: &str) -> JsonConfig {
    let map = match value {
        Value::Object(m) => m,
        _ => unreachable!("the toyworld configs are JSON objects"),
    };
    JsonConfig {
        path: Path::new("<toyworld>").join(name),
        map,
    }
}

#[cfg(test)]
mod tests {
    use super::ToyArch;
    use crate::toyworld::caption::{object_phrase, style_prefix, GREY_SUFFIX};
    use crate::toyworld::concept::Concept;
    use crate::toyworld::palette::Colour;
    use crate::toyworld::pattern::Pattern;
    use crate::toyworld::scene::ObjectRequest;
    use crate::toyworld::shape::ShapeKind;

    /// What `--text-tokens` can go down to without cutting a caption: the longest the caption grammar makes
    /// (a style prefix, three of the longest object phrases, the separators and the background), BOS and EOS
    /// included.
    #[test]
    fn the_worlds_longest_caption_takes_25_tokens() {
        let tok = ToyArch::default().tokenizer().unwrap();
        assert_eq!(tok.max_length(), 77);
        let count = |text: &str| tok.tokens(text).len();
        let mut phrases: Vec<String> = Concept::ALL
            .into_iter()
            .filter_map(ObjectRequest::concept)
            .map(|o| object_phrase(&o))
            .collect();
        for shape in ShapeKind::ALL {
            for colour in Colour::ALL {
                for pattern in Pattern::ALL {
                    phrases.push(object_phrase(&ObjectRequest {
                        shape,
                        colour,
                        pattern,
                        concept: None,
                    }));
                }
            }
        }
        let longest = phrases.iter().max_by_key(|p| count(p)).unwrap();
        let caption = format!(
            "{}{longest}, {longest} and {longest}{GREY_SUFFIX}",
            style_prefix()
        );
        assert_eq!(count(&caption) + 2, 25, "{caption}");
        let short = ToyArch {
            text_positions: 25,
            ..ToyArch::default()
        };
        let ids = short.tokenizer().unwrap().encode(&caption);
        assert_eq!(ids.len(), 25);
        assert_eq!(ids[24], tok.eos_id());
    }

    #[test]
    fn unet_channels_are_checked_against_levels_groups_and_heads() {
        let mut arch = ToyArch::default();
        arch.set_unet_channels(&[48, 96, 96]).unwrap();
        assert_eq!(arch.unet_channels, vec![48, 96, 96]);
        assert_eq!(
            arch.unet_config().unwrap().block_out_channels,
            vec![48, 96, 96]
        );
        let kept = arch.clone();
        for bad in [
            &[48][..],
            &[8, 16, 32, 64, 64],
            &[48, 96, 100],
            &[0, 64, 64],
        ] {
            let why = arch.set_unet_channels(bad).unwrap_err().to_string();
            assert!(why.contains("widths") || why.contains("multiple"), "{why}");
            assert_eq!(
                arch, kept,
                "a refused width leaves the architecture as it was"
            );
        }
    }

    #[test]
    fn unet_channels_set_the_level_count() {
        let mut arch = ToyArch::default();
        arch.set_unet_channels(&[32, 64]).unwrap();
        assert_eq!(arch.unet_cross_attention, vec![false, true]);
        assert_eq!(arch.unet_heads, vec![2, 2]);
        assert_eq!(arch.finest_attention_side(), Some(8));
        let config = arch.unet_config().unwrap();
        assert_eq!(config.block_out_channels, vec![32, 64]);
        assert_eq!(config.down_block_types.len(), 2);
        arch.set_unet_channels(&[16, 32, 64, 64]).unwrap();
        assert_eq!(arch.unet_cross_attention, vec![false, true, true, true]);
        assert_eq!(arch.finest_attention_side(), Some(8));
        let dir = std::env::temp_dir().join(format!("clora-arch-levels-{}", std::process::id()));
        arch.set_unet_channels(&[32, 64]).unwrap();
        arch.write_configs(&dir).unwrap();
        let read = ToyArch::from_model_dir(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            read.unwrap(),
            arch,
            "a two-level UNet reads back from its configs"
        );
    }
}
