//! `harness toyworld`: the miniature world — render scenes, check the oracle, train the base model, and judge a
//! model's images with the oracle.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};

use burn::backend::Autodiff;
use burn::tensor::{
    backend::{AutodiffBackend, Backend},
    DType,
};

use super::backend::Device;
use clora_harness::lora::file::LoraFile;
use clora_harness::lora::resolve::Unmatched;
use clora_harness::lora::state::AdapterId;
use clora_harness::methods::clora::tokens::ConceptWords;
use clora_harness::methods::excite::{Excite, ExciteParams};
use clora_harness::methods::{compose, CompositionJob, LoraRef};
use clora_harness::models::sd::{LoadOptions, StableDiffusion};
use clora_harness::models::vae::{AutoencoderKL, VaeConfig};
use clora_harness::models::weights::{VarBuilder, WeightStore};
use clora_harness::report::stats::wilson_interval;
use clora_harness::schedulers::SchedulerKind;
use clora_harness::toyworld::arch::ToyArch;
use clora_harness::toyworld::caption::{caption, parse, CaptionOrder};
use clora_harness::toyworld::concept::Concept;
use clora_harness::toyworld::export::export_pipeline;
use clora_harness::toyworld::heldout::{heldout_scene, HELDOUT_SEED_BASE};
use clora_harness::toyworld::misses::{misses, Miss};
use clora_harness::toyworld::oracle::{judge, judge_prompt, read, read_generated};
use clora_harness::toyworld::pattern::Pattern;
use clora_harness::toyworld::progress::PhaseState;
use clora_harness::toyworld::render::render;
use clora_harness::toyworld::sample::JudgeSampler;
use clora_harness::toyworld::scene::{concept_scene, PlainWorld, MAX_COMPANIONS};
use clora_harness::toyworld::seed_work::ModelStart;
use clora_harness::toyworld::tensors::{images_to_tensor, tensor_to_images};
use clora_harness::toyworld::timestep_sampling::TimestepSampling;
use clora_harness::toyworld::train::{train_pipeline, TrainPlan};
use clora_harness::toyworld::train_base::BaseTrainConfig;
use clora_harness::toyworld::train_decoder::{train_decoder, DecoderTrainConfig};
use clora_harness::toyworld::train_lora::{train_lora, LoraLayout, LoraTrainConfig};
use clora_harness::toyworld::train_vae::{VaeTrainConfig, VAE_FILE};

#[derive(Debug, Args)]
pub struct ToyworldArgs {
    #[command(subcommand)]
    pub what: ToyworldWhat,
}

#[derive(Debug, Subcommand)]
pub enum ToyworldWhat {
    /// Train the base model (VAE, then text encoder + UNet) and write it as a diffusers folder. Resumes from
    /// the work folder when interrupted.
    Train(Box<TrainArgs>),
    /// Render scenes of the world to PNG files with their captions (`captions.tsv`).
    Render(RenderArgs),
    /// Render each concept's reference images (for CLIP-I / DINO scores) into `OUT/<concept>/`.
    References(ReferencesArgs),
    /// Measure the oracle's accuracy on held-out rendered scenes.
    OracleCheck(OracleCheckArgs),
    /// Print what the oracle reads in images (objects with shape, colour, pattern; background), and with
    /// `--prompt` its verdict.
    Read(ReadArgs),
    /// Generate images of a model for prompts and judge them with the oracle.
    Judge(JudgeArgs),
    /// Export the current checkpoints of a work folder (VAE + latest base checkpoint) as a diffusers folder.
    Export(ExportArgs),
    /// Train the personal concepts' LoRAs (rank 4, UNet + text encoder) on a trained model.
    TrainLora(TrainLoraArgs),
    /// Train the tiny metric encoders (CLIP, DINO-style ViT) on scenes and write them as model folders.
    TrainEncoders(TrainEncodersArgs),
    /// Fine-tune a trained model's VAE decoder on its frozen encoder (sharper patterns; the latents, and so
    /// the base model and its LoRAs, stay valid) and write the model with the new VAE.
    TuneDecoder(TuneDecoderArgs),
}

/// Steps, batch size and peak learning rate of a training phase; each left out keeps the phase's default.
#[derive(Debug, Default, Args)]
pub struct PhaseArgs {
    /// Optimizer steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Examples per step (decoder: whole images; LoRA: concept + prior rows).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
}

impl PhaseArgs {
    /// Overrides `steps`, `batch`, `lr` with the values given.
    fn apply(&self, steps: &mut usize, batch: &mut usize, lr: &mut f64) {
        *steps = self.steps.unwrap_or(*steps);
        *batch = self.batch.unwrap_or(*batch);
        *lr = self.lr.unwrap_or(*lr);
    }
}

#[derive(Debug, Args)]
pub struct TuneDecoderArgs {
    /// The trained model (diffusers folder).
    #[arg(long, default_value = "assets/toyworld/model")]
    pub model: PathBuf,
    /// The model folder to write (a copy of `--model` with the new VAE weights).
    #[arg(long)]
    pub out: PathBuf,
    /// Checkpoints and the loss log (`decoder.loss.csv`).
    #[arg(long, default_value = "target/toyworld/work-decoder")]
    pub work: PathBuf,
    #[command(flatten)]
    pub phase: PhaseArgs,
    /// Extra L1 weight on pattern-accent pixels.
    #[arg(long)]
    pub accent_weight: Option<f64>,
    /// Write f32 weights instead of f16.
    #[arg(long)]
    pub f32: bool,
    /// Where to train (tch: build with `--features tch`, cuda: `--features cuda`).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
}

#[derive(Debug, Args)]
pub struct TrainEncodersArgs {
    /// Output folder (`clip/` and `dino/` model folders).
    #[arg(long, default_value = "assets/toyworld/encoders")]
    pub out: PathBuf,
    #[arg(long)]
    pub clip_steps: Option<usize>,
    #[arg(long)]
    pub dino_steps: Option<usize>,
    /// Batch size of both phases (DINO: scenes, two views each).
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep the existing CLIP / DINO folder instead of training it.
    #[arg(long)]
    pub skip_clip: bool,
    #[arg(long)]
    pub skip_dino: bool,
    /// Held-out scenes of the CLIP evaluation (0: no evaluation).
    #[arg(long, default_value_t = 200)]
    pub eval_scenes: usize,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long, default_value = "target/toyworld/work")]
    pub work: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Write f32 weights instead of f16.
    #[arg(long)]
    pub f32: bool,
}

#[derive(Debug, Args)]
pub struct TrainLoraArgs {
    /// The trained base model (diffusers folder).
    #[arg(long, default_value = "assets/toyworld/model")]
    pub model: PathBuf,
    /// Concepts to train (dots, stripes, rings, outline); default: all four.
    #[arg(long)]
    pub concept: Vec<String>,
    /// Output folder: `<concept>.safetensors` each.
    #[arg(long, default_value = "assets/toyworld/loras")]
    pub out: PathBuf,
    /// Loss logs.
    #[arg(long, default_value = "target/toyworld/work")]
    pub work: PathBuf,
    /// File layout (peft or kohya); default: the shipped one (dots, rings: peft; stripes, outline: kohya).
    #[arg(long)]
    pub format: Option<String>,
    #[command(flatten)]
    pub phase: PhaseArgs,
    /// Retrain even when the output file exists.
    #[arg(long)]
    pub force: bool,
    /// Adapt only the transformer blocks' linears in the UNet (default: also its resnets' conv1/conv2).
    #[arg(long)]
    pub no_resnet_convs: bool,
    /// Rows of each batch drawn from plain scenes for prior preservation (default 2, `outline` 0).
    #[arg(long)]
    pub prior_rows: Option<usize>,
    /// Up to N plain objects beside a subject concept in its training scenes, captioned in a random order, so
    /// the trigger phrase is learnt at every place of a prompt (default 0: the subject alone, as shipped).
    #[arg(long, default_value_t = 0, value_parser = parse_companions)]
    pub companions: usize,
    /// Save the adapters every N steps and at the last, and keep the checkpoint whose images the oracle finds
    /// to match the concept's prompts most often on `--select-seeds` seeds from 1000 (apart from the seeds
    /// 0..32 the figures report); the checkpoints stay in `--work`. 0: the last step's adapters, no choice.
    /// Default: the concept's recipe (`dots` 250, the others 0).
    #[arg(long)]
    pub select_every: Option<usize>,
    /// Seeds per prompt that `--select-every` judges each checkpoint on (default 32).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub select_seeds: Option<u64>,
    /// Seed of the adapters' initialization and of the batches drawn (default 5, the shipped LoRAs').
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the LoRA files (and checkpoints) in f16, as the committed LoRAs trained among plain objects.
    #[arg(long)]
    pub f16: bool,
    /// Where to train (cuda: build with `--features cuda`).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
}

/// `--caption-order`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CaptionOrderArg {
    LeftToRight,
    Shuffled,
}

/// `--timestep-sampling`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TimestepSamplingArg {
    Uniform,
    MinSnr,
    Loss,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Checkpoints, caches and loss logs (`*.loss.csv`).
    #[arg(long, default_value = "target/toyworld/work")]
    pub work: PathBuf,
    /// The diffusers folder to write.
    #[arg(long, default_value = "assets/toyworld/model")]
    pub out: PathBuf,
    /// Start a new work folder from this finished model folder (e.g. the committed assets/toyworld/model)
    /// instead of from scratch: its VAE is kept, its text encoder and UNet are trained further.
    #[arg(long, requires = "from_step")]
    pub from_model: Option<PathBuf>,
    /// The base step the `--from-model` weights stand for (their place on the learning-rate schedule; the
    /// committed model's is in docs/toyworld.md).
    #[arg(long, requires = "from_model")]
    pub from_step: Option<usize>,
    /// VAE steps on 32x32 crops.
    #[arg(long)]
    pub vae_crop_steps: Option<usize>,
    /// VAE steps on whole 64x64 images.
    #[arg(long)]
    pub vae_full_steps: Option<usize>,
    /// Batch size of the VAE's crop steps.
    #[arg(long)]
    pub vae_crop_batch: Option<usize>,
    /// Batch size of the VAE's whole-image steps.
    #[arg(long)]
    pub vae_full_batch: Option<usize>,
    /// Peak learning rate of the VAE.
    #[arg(long)]
    pub vae_lr: Option<f64>,
    /// Text encoder + UNet steps.
    #[arg(long)]
    pub base_steps: Option<usize>,
    /// Batch size of the text encoder + UNet steps.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Plain scenes in the cached training set.
    #[arg(long)]
    pub dataset: Option<usize>,
    /// Shares of one-, two- and three-object scenes in that set, e.g. `0.2,0.4,0.4` (default
    /// `0.35,0.4,0.25`); a new mix rebuilds the cached set.
    #[arg(long)]
    pub object_counts: Option<String>,
    /// Probability that an object of that set carries a pattern (dotted, striped or ringed; default 0.25); a new
    /// rate rebuilds the cached set.
    #[arg(long)]
    pub pattern_rate: Option<f64>,
    /// Peak learning rate of the text encoder + UNet.
    #[arg(long)]
    pub lr: Option<f64>,
    /// The order in which the training captions name their objects: `left-to-right` (every committed model) or
    /// `shuffled` (an experiment: captions that carry no layout; docs/toyworld.md, "Which object is lost").
    #[arg(long, value_enum)]
    pub caption_order: Option<CaptionOrderArg>,
    /// Decay of the text encoder + UNet weight average that the model is exported from (0: export the last
    /// step's weights).
    #[arg(long)]
    pub ema_decay: Option<f64>,
    /// Min-SNR-gamma loss weighting of the text encoder + UNet (0: plain MSE).
    #[arg(long)]
    pub min_snr_gamma: Option<f64>,
    /// How the text encoder + UNet's training draws its timesteps: `uniform` (every committed model),
    /// `min-snr` (in proportion to the Min-SNR weights, each row then weighed alike) or `loss` (in proportion to
    /// recent weighted losses per bucket of 10 timesteps, Improved DDPM's importance sampling); an experiment,
    /// docs/toyworld.md.
    #[arg(long, value_enum)]
    pub timestep_sampling: Option<TimestepSamplingArg>,
    /// The uniform draw's share of `--timestep-sampling loss`'s distribution, in (0, 1]: no row's importance
    /// exceeds 1 / share (default 0.1).
    #[arg(long)]
    pub timestep_uniform_share: Option<f64>,
    /// Seed of the text encoder + UNet's initial weights and of their batches (default 2).
    #[arg(long)]
    pub base_seed: Option<u64>,
    /// Weight of the token-attention loss (TokenCompose's token loss: each caption word's cross-attention mass
    /// inside its object, on the finest cross-attention maps) added to the text encoder + UNet's loss (default
    /// 0: off; an experiment, docs/toyworld.md).
    #[arg(long)]
    pub token_attention_weight: Option<f64>,
    /// Give each batch's noises to its latents by a minimal-distance assignment (Immiscible Diffusion) instead
    /// of row by row (an experiment, docs/toyworld.md; off for every committed model).
    #[arg(long)]
    pub noise_assignment: bool,
    /// Input perturbation gamma (Ning et al. 2023): the training's noisy latents are made with noise
    /// `eps + gamma * xi`, the target staying `eps` (default 0: off; an experiment, docs/toyworld.md).
    #[arg(long)]
    pub input_perturbation: Option<f32>,
    /// Input scaling b (Chen 2023): the diffusion's latents are the VAE's unit-variance latents times b, and
    /// the model's `scaling_factor` the VAE's times b (default 1; below 1 every timestep is noisier; an
    /// experiment, docs/toyworld.md).
    #[arg(long)]
    pub latent_scale: Option<f64>,
    /// Decay of Adam's second moment in the text encoder + UNet's training (default 0.999, burn's; an
    /// experiment, docs/toyworld.md).
    #[arg(long)]
    pub adam_beta2: Option<f64>,
    /// With `--adam-beta2`: only the first N base steps use it, later ones burn's 0.999 (the moments kept).
    #[arg(long, requires = "adam_beta2")]
    pub adam_beta2_steps: Option<usize>,
    /// Latent channels of the VAE (and the UNet's input and output).
    #[arg(long)]
    pub latent_channels: Option<usize>,
    /// After the base model, train the four concepts' LoRAs on it into this folder (`<concept>.safetensors`).
    #[arg(long)]
    pub loras: Option<PathBuf>,
    /// Steps of each LoRA (with `--loras`; default: 900, `dots` 3000, `outline` 4000).
    #[arg(long)]
    pub lora_steps: Option<usize>,
    /// Which UNet levels have cross-attention, highest resolution first, as 0/1 digits (`110`: SD 1.x's
    /// pattern, attention at the 16x16 and 8x8 latent levels, none at the lowest).
    #[arg(long)]
    pub unet_attention: Option<String>,
    /// Transformer layers in each UNet cross-attention block, mid block included (default 1). With
    /// `--from-model`, added levels and layers grow the model's UNet: they start as identities.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4))]
    pub unet_transformer_layers: Option<u64>,
    /// UNet channels per level, highest resolution first, comma-separated (default `32,64,64`); each a
    /// multiple of the group norms' 8 groups and of the level's 2 attention heads. Their count sets the
    /// UNet's levels (2 to 4 for the 16x16 latent: `32,64` has cross-attention at 8x8 only, mid block
    /// included); `--unet-attention` then takes one digit per level. A new work folder only.
    #[arg(long, value_delimiter = ',')]
    pub unet_channels: Option<Vec<usize>>,
    /// Layers of the text encoder (default 2). A new work folder only.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=12))]
    pub text_layers: Option<u64>,
    /// The text encoder's context in tokens, BOS and EOS included (default 77, SD 1.x's): prompts are padded or
    /// cut to it, and the UNet's cross-attention reads that many keys. The world's longest caption takes 25.
    /// A new work folder only.
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=77))]
    pub text_tokens: Option<u64>,
    /// Write f32 weights instead of f16.
    #[arg(long)]
    pub f32: bool,
    /// Where to train (cuda: build with `--features cuda`); f32 on every device.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of scenes.
    #[arg(long, default_value_t = 16)]
    pub count: u64,
    /// `plain` (the base model's training distribution) or `heldout` (every kind, held-out seeds).
    #[arg(long, default_value = "heldout")]
    pub kind: String,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct ReferencesArgs {
    /// Output folder (one subfolder per concept).
    #[arg(long, default_value = "assets/toyworld/references")]
    pub out: PathBuf,
    /// Images per concept.
    #[arg(long, default_value_t = 4)]
    pub count: u64,
}

#[derive(Debug, Args)]
pub struct OracleCheckArgs {
    /// Number of held-out scenes.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Read each scene after a round trip through this model's VAE (`<model>/vae`: encode, posterior mean,
    /// decode), the sharpest image a model with this VAE can draw: what the oracle can still read bounds what
    /// any generation from that model can score.
    #[arg(long)]
    pub vae: Option<PathBuf>,
    /// Where to run the VAE (with `--vae`).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    /// Write the images read (after the round trip, with `--vae`) here, with `readings.tsv`.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Image files (64x64, or square images of another size, resized as the judge does).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Judge each image against this prompt too.
    #[arg(long)]
    pub prompt: Option<String>,
}

#[derive(Debug, Args)]
pub struct JudgeArgs {
    /// A diffusers folder (e.g. the trained `assets/toyworld/model`).
    #[arg(long, default_value = "assets/toyworld/model")]
    pub model: PathBuf,
    /// Prompts; default: captions of held-out plain scenes.
    #[arg(long)]
    pub prompt: Vec<String>,
    /// Held-out captions to use when no prompt is given.
    #[arg(long, default_value_t = 16)]
    pub captions: u64,
    /// Index of the first held-out caption (e.g. 32 for captions 32.. as a validation set apart from the
    /// reported 0..32).
    #[arg(long, default_value_t = 0)]
    pub first_caption: u64,
    /// Seeds per prompt.
    #[arg(long, default_value_t = 4)]
    pub seeds: u64,
    /// Denoising steps.
    #[arg(long, default_value_t = 25)]
    pub steps: usize,
    /// Sampler: dpmpp-2m (DPM-Solver++ 2M: the judge's sampler since session 20), ddim (the figures before
    /// it) or euler.
    #[arg(long, default_value = "dpmpp-2m")]
    pub scheduler: SchedulerKind,
    /// Classifier-free guidance weight.
    #[arg(long, default_value_t = 5.0)]
    pub guidance: f64,
    /// Write the images here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// LoRA files to attach (weight 1 each, every key must match: `Unmatched::Error`).
    #[arg(long)]
    pub lora: Vec<PathBuf>,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Where to generate (tch: build with `--features tch`, cuda: `--features cuda`).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    /// Sample with Attend-and-Excite on these words of each prompt (with `--lora`: on the LoRAs merged):
    /// `shapes` (the objects' nouns, as the authors excite subject nouns) or `objects` (every word of every
    /// object: colour, pattern or trigger word, and shape).
    #[arg(long, value_enum)]
    pub excite: Option<ExciteWords>,
    /// Attend-and-Excite's step-size factor (official: 20).
    #[arg(long, default_value_t = 20.0)]
    pub excite_scale: f64,
    /// Attend-and-Excite's softmax over the prompt's own tokens only (the official SD 2.1 setting; off: SD 1.4's).
    #[arg(long)]
    pub excite_eot: bool,
    /// Attend-and-Excite's attention maps: pixels per map cell (8: the 8x8 cross-attention of 64x64 images).
    #[arg(long, default_value_t = 8)]
    pub excite_stride: usize,
}

/// Which words of a toyworld prompt Attend-and-Excite excites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExciteWords {
    Shapes,
    Objects,
}

pub fn run(args: ToyworldArgs) -> Result<()> {
    match args.what {
        ToyworldWhat::Train(a) => train(*a),
        ToyworldWhat::Render(a) => render_cmd(a),
        ToyworldWhat::References(a) => references(a),
        ToyworldWhat::OracleCheck(a) => oracle_check(a),
        ToyworldWhat::Judge(a) => judge_cmd(a),
        ToyworldWhat::Read(a) => read_cmd(a),
        ToyworldWhat::TrainLora(a) => train_lora_cmd(a),
        ToyworldWhat::Export(a) => export_cmd(a),
        ToyworldWhat::TrainEncoders(a) => train_encoders_cmd(a),
        ToyworldWhat::TuneDecoder(a) => tune_decoder_cmd(a),
    }
}

fn train(a: TrainArgs) -> Result<()> {
    let mut vae = VaeTrainConfig::default();
    let mut base = BaseTrainConfig::default();
    if let Some(v) = a.vae_crop_steps {
        vae.crop_steps = v;
    }
    if let Some(v) = a.vae_full_steps {
        vae.full_steps = v;
    }
    if let Some(v) = a.vae_crop_batch {
        vae.crop_batch = v;
    }
    if let Some(v) = a.vae_full_batch {
        vae.full_batch = v;
    }
    if let Some(v) = a.vae_lr {
        vae.lr = v;
    }
    if let Some(v) = a.base_steps {
        base.steps = v;
    }
    if let Some(v) = a.batch {
        base.batch = v;
    }
    if let Some(v) = a.dataset {
        base.dataset = v;
    }
    if let Some(v) = &a.object_counts {
        base.world.object_counts = parse_object_counts(v)?;
    }
    if let Some(v) = a.pattern_rate {
        if !(0.0..=1.0).contains(&v) {
            anyhow::bail!("--pattern-rate {v}: expected a probability between 0 and 1");
        }
        base.world.pattern_rate = v;
    }
    if let Some(v) = a.lr {
        base.lr = v;
    }
    if let Some(v) = a.ema_decay {
        base.ema_decay = v;
    }
    if let Some(v) = a.caption_order {
        base.caption_order = match v {
            CaptionOrderArg::LeftToRight => CaptionOrder::LeftToRight,
            CaptionOrderArg::Shuffled => CaptionOrder::Shuffled,
        };
    }
    if let Some(v) = a.min_snr_gamma {
        base.min_snr_gamma = (v > 0.0).then_some(v);
    }
    if let Some(v) = a.timestep_sampling {
        base.timestep_sampling = match v {
            TimestepSamplingArg::Uniform => TimestepSampling::Uniform,
            TimestepSamplingArg::MinSnr => TimestepSampling::MinSnr,
            TimestepSamplingArg::Loss => TimestepSampling::Loss,
        };
    }
    if let Some(v) = a.timestep_uniform_share {
        base.timestep_uniform_share = v;
    }
    if let Some(v) = a.base_seed {
        base.seed = v;
    }
    if let Some(v) = a.token_attention_weight {
        if !v.is_finite() || v < 0.0 {
            anyhow::bail!("--token-attention-weight {v}: expected a weight >= 0");
        }
        base.token_attention_weight = v;
    }
    base.noise_options.assign = a.noise_assignment;
    if let Some(v) = a.input_perturbation {
        if !v.is_finite() || v < 0.0 {
            anyhow::bail!("--input-perturbation {v}: expected a gamma >= 0");
        }
        base.noise_options.input_perturbation = v;
    }
    if let Some(v) = a.latent_scale {
        if !v.is_finite() || v <= 0.0 {
            anyhow::bail!("--latent-scale {v}: expected a scale > 0");
        }
        base.latent_scale = v;
    }
    if let Some(v) = a.adam_beta2 {
        if !(v > 0.0 && v < 1.0) {
            anyhow::bail!("--adam-beta2 {v}: expected a decay in (0, 1)");
        }
        base.adam_beta2 = v;
    }
    base.adam_beta2_steps = a.adam_beta2_steps;
    let mut arch = ToyArch::default();
    if let Some(v) = a.latent_channels {
        arch.latent_channels = v;
    }
    if let Some(v) = &a.unet_channels {
        arch.set_unet_channels(v).context("--unet-channels")?;
    }
    if let Some(v) = &a.unet_attention {
        let levels: Vec<bool> = v
            .chars()
            .map(|c| match c {
                '0' => Ok(false),
                '1' => Ok(true),
                _ => Err(anyhow::anyhow!(
                    "--unet-attention `{v}`: expected one 0/1 digit per UNet level"
                )),
            })
            .collect::<Result<_>>()?;
        if levels.len() != arch.unet_channels.len() {
            anyhow::bail!(
                "--unet-attention `{v}`: expected {} digits, one per UNet level",
                arch.unet_channels.len()
            );
        }
        arch.unet_cross_attention = levels;
    }
    if let Some(v) = a.unet_transformer_layers {
        arch.unet_transformer_layers = v as usize;
    }
    if let Some(v) = a.text_layers {
        arch.text_layers = v as usize;
    }
    if let Some(v) = a.text_tokens {
        arch.text_positions = v as usize;
    }
    let plan = TrainPlan {
        arch,
        vae,
        base,
        work: a.work,
        out: a.out,
        f16: !a.f32,
        start: a.from_model.map(|model| ModelStart {
            model,
            step: a.from_step.unwrap_or_default(),
        }),
    };
    let started = std::time::Instant::now();
    let report = crate::with_backend!(a.device, |B, device| {
        train_pipeline::<Autodiff<B>>(&plan, &device, &mut |line: &str| eprintln!("{line}"))
    })
    .context("toyworld training")?;
    if let Some(dir) = &a.loras {
        let jobs = LoraJobs {
            model: &plan.out,
            out: dir,
            work: &plan.work,
            overrides: LoraOverrides {
                phase: PhaseArgs {
                    steps: a.lora_steps,
                    ..PhaseArgs::default()
                },
                ..LoraOverrides::default()
            },
            layout: None,
            force: false,
        };
        crate::with_backend!(a.device, |B, device| {
            train_loras::<Autodiff<B>>(&jobs, &Concept::ALL, &device)
        })?;
    }
    // A work folder started from a model has a VAE it did not train: no loss to report.
    let vae = if report.vae.final_loss.is_finite() {
        format!(
            "L1 {:.4}, scaling factor {:.4}, {:.0} s",
            report.vae.final_loss, report.vae.scaling_factor, report.vae.seconds
        )
    } else {
        format!("scaling factor {:.4}", report.vae.scaling_factor)
    };
    println!(
        "VAE: {vae}; base: loss {:.4}, {:.0} s; model: {}",
        report.base.final_loss,
        report.base.seconds,
        report.out.display()
    );
    println!(
        "wall time of this command: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `--companions`: 0 to [`MAX_COMPANIONS`] (a scene holds at most three objects).
fn parse_companions(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n <= MAX_COMPANIONS => Ok(n),
        _ => Err(format!(
            "expected a whole number from 0 to {MAX_COMPANIONS} (a scene holds at most three objects), got `{text}`"
        )),
    }
}

/// `--object-counts a,b,c`: three shares, none negative, summing to 1.
fn parse_object_counts(text: &str) -> Result<[f64; 3]> {
    let shares: Vec<f64> = text
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| {
            anyhow::anyhow!(
                "--object-counts `{text}`: {e}; expected three numbers like 0.35,0.4,0.25"
            )
        })?;
    let sum: f64 = shares.iter().sum();
    match shares[..] {
        [one, two, three]
            if shares.iter().all(|v| v.is_finite() && *v >= 0.0) && (sum - 1.0).abs() < 1e-6 =>
        {
            Ok([one, two, three])
        }
        _ => anyhow::bail!(
            "--object-counts `{text}`: expected three shares of one-, two- and three-object scenes, none \
             negative, summing to 1 (like 0.35,0.4,0.25)"
        ),
    }
}

fn render_cmd(a: RenderArgs) -> Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut tsv = String::from("file\tcaption\n");
    for i in a.seed..a.seed + a.count {
        let scene = match a.kind.as_str() {
            "plain" => PlainWorld::default().sample(i)?,
            "heldout" => heldout_scene(i)?,
            other => anyhow::bail!("--kind `{other}`: expected plain or heldout"),
        };
        let name = format!("{i:06}.png");
        render(&scene)
            .save(a.out.join(&name))
            .with_context(|| format!("writing {name}"))?;
        tsv.push_str(&format!("{name}\t{}\n", caption(&scene, i)));
    }
    std::fs::write(a.out.join("captions.tsv"), tsv)?;
    println!("wrote {} scenes to {}", a.count, a.out.display());
    Ok(())
}

fn references(a: ReferencesArgs) -> Result<()> {
    for c in Concept::ALL {
        let dir = a.out.join(c.name());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for i in 0..a.count {
            let scene = concept_scene(c, HELDOUT_SEED_BASE + 1000 + i)?;
            let path = dir.join(format!("{}_{i}.png", c.name()));
            render(&scene)
                .save(&path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    println!(
        "wrote {} reference images per concept to {}",
        a.count,
        a.out.display()
    );
    Ok(())
}

fn oracle_check(a: OracleCheckArgs) -> Result<()> {
    let scenes: Vec<_> = (0..a.count).map(heldout_scene).collect::<Result<_, _>>()?;
    let images = match &a.vae {
        None => scenes.iter().map(render).collect(),
        Some(model) => crate::with_backend!(a.device, |B, device| {
            vae_round_trip::<B>(model, &scenes, &device)
        })?,
    };
    // Per held-out kind (they rotate with the index, see `heldout_scene`).
    const KINDS: [&str; 5] = [
        "plain",
        "patterned",
        "one concept",
        "concepts together",
        "outline",
    ];
    let mut right = [0u64; 5];
    let mut total = [0u64; 5];
    let mut tsv = String::from("file\tkind\tcaption\tread exactly\n");
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    for (i, (scene, img)) in scenes.iter().zip(&images).enumerate() {
        total[i % 5] += 1;
        let ok = read(img).matches_scene(scene);
        if ok {
            right[i % 5] += 1;
        }
        if let Some(out) = &a.out {
            let name = format!("{i:06}.png");
            img.save(out.join(&name))
                .with_context(|| format!("writing {}", out.join(&name).display()))?;
            tsv.push_str(&format!(
                "{name}\t{}\t{}\t{ok}\n",
                KINDS[i % 5],
                caption(scene, HELDOUT_SEED_BASE + i as u64)
            ));
        }
    }
    if let Some(out) = &a.out {
        std::fs::write(out.join("readings.tsv"), tsv)
            .with_context(|| format!("writing {}/readings.tsv", out.display()))?;
    }
    let correct: u64 = right.iter().sum();
    let through = match &a.vae {
        Some(m) => format!(" after a round trip through {}/vae", m.display()),
        None => String::new(),
    };
    println!(
        "oracle: {correct}/{} held-out scenes read exactly{through} ({:.2}%)",
        a.count,
        100.0 * correct as f64 / a.count.max(1) as f64
    );
    for k in 0..5 {
        println!("  {:<18} {}/{}", KINDS[k], right[k], total[k]);
    }
    Ok(())
}

/// `scenes` rendered, encoded by `model`'s VAE (posterior mean) and decoded again.
fn vae_round_trip<B: Backend>(
    model: &std::path::Path,
    scenes: &[clora_harness::toyworld::scene::Scene],
    device: &B::Device,
) -> Result<Vec<image::RgbImage>> {
    let dir = model.join("vae");
    // The folder's own config (any latent width), the same loader as every SD VAE.
    let cfg = VaeConfig::from_file(&dir.join("config.json"))?;
    let store = WeightStore::open_component(&dir, &[VAE_FILE])?;
    let vae = AutoencoderKL::<B>::load(&VarBuilder::new(store, device, DType::F32), &cfg)
        .with_context(|| format!("loading the VAE of {}", dir.display()))?;
    let mut out = Vec::with_capacity(scenes.len());
    for chunk in scenes.chunks(32) {
        let images: Vec<_> = chunk.iter().map(render).collect();
        let post = vae.encode(images_to_tensor::<B>(&images, device))?;
        // [b, 3, H, W] in [0, 1]
        out.extend(tensor_to_images(vae.decode_to_unit(post.mean)?));
    }
    Ok(out)
}

fn read_cmd(a: ReadArgs) -> Result<()> {
    for path in &a.images {
        let image = image::open(path)
            .with_context(|| format!("reading {}", path.display()))?
            .to_rgb8();
        let image = if image.dimensions() == (64, 64) {
            image
        } else {
            image::imageops::resize(&image, 64, 64, image::imageops::FilterType::Triangle)
        };
        let reading = read(&image);
        let objects: Vec<String> = reading
            .objects
            .iter()
            .map(|d| {
                let name = |o: Option<&str>| o.unwrap_or("?").to_string();
                format!(
                    "{} {} {}{} at {:?} ({} px)",
                    name(d.colour.map(|c| c.name())),
                    name(d.pattern.map(|p| p.name())),
                    name(d.shape.map(|s| s.name())),
                    if d.outline { " outline" } else { "" },
                    d.bbox,
                    d.area
                )
            })
            .collect();
        let mut line = format!(
            "{}: {} background; {}",
            path.display(),
            reading.background.name(),
            if objects.is_empty() {
                "no objects".to_string()
            } else {
                objects.join("; ")
            }
        );
        if let Some(prompt) = &a.prompt {
            let v = judge_prompt(&image, prompt)?;
            line.push_str(&format!(
                " | exact {}, concepts {:?}, mixed {}",
                v.exact, v.concepts, v.mixed_objects
            ));
        }
        println!("{line}");
    }
    Ok(())
}

fn judge_cmd(a: JudgeArgs) -> Result<()> {
    crate::with_backend!(a.device, |B, device| {
        match a.excite {
            Some(which) => judge_excite::<Autodiff<B>>(&a, which, &device),
            None => judge_plain::<B>(&a, &device),
        }
    })
}

/// The `--lora` files attached to the judge's model: each file's name (its stem) and adapter.
type Attached = Vec<(String, AdapterId)>;

/// The judge's model with the `--lora` files attached (all active, weight 1).
fn judge_model<B: Backend>(
    a: &JudgeArgs,
    device: &B::Device,
) -> Result<(StableDiffusion<B>, Attached)> {
    let mut sd = StableDiffusion::<B>::load(&a.model, &LoadOptions::default(), device)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let mut attached = Vec::new();
    for path in &a.lora {
        let file = LoraFile::open(path)?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let id = sd
            .add_lora(&name, &file, 1.0, Unmatched::Error)
            .with_context(|| format!("attaching {}", path.display()))?
            .id;
        attached.push((name, id));
    }
    Ok((sd, attached))
}

/// The judge's images from the pipeline (with the `--lora` files attached).
fn judge_plain<B: Backend>(a: &JudgeArgs, device: &B::Device) -> Result<()> {
    let (sd, _) = judge_model::<B>(a, device)?;
    let sampler = JudgeSampler {
        steps: a.steps,
        guidance: a.guidance,
        scheduler: a.scheduler,
    };
    judge_images(a, &mut |prompt, seed| Ok(sampler.draw(&sd, prompt, seed)?))
}

/// The judge's images sampled with Attend-and-Excite on the words `--excite` names (on the `--lora` files
/// merged, if any), the official schedule scaled to `--steps`.
fn judge_excite<B: AutodiffBackend>(
    a: &JudgeArgs,
    which: ExciteWords,
    device: &B::Device,
) -> Result<()> {
    let (mut sd, attached) = judge_model::<B>(a, device)?;
    // the `--lora` files, all active at weight 1 (merged, as without `--excite`) on the prompt as given
    let loras: Vec<LoraRef> = attached
        .into_iter()
        .map(|(name, id)| LoraRef {
            id,
            weight: 1.0,
            concept: ConceptWords {
                triggers: Vec::new(),
                class_noun: name,
            },
        })
        .collect();
    judge_images(a, &mut |prompt, seed| {
        let params = ExciteParams {
            words: excite_words(prompt, which)?,
            scale_factor: a.excite_scale,
            normalize_eot: a.excite_eot,
            attention_stride_px: a.excite_stride,
            ..ExciteParams::default()
        }
        .scaled_to(a.steps);
        let job = CompositionJob {
            base_prompt: prompt.to_string(),
            combined_prompt: Some(prompt.to_string()),
            branch_prompts: None,
            negative_prompt: String::new(),
            loras: loras.clone(),
            style: None,
            lora_scale: 1.0,
            steps: a.steps,
            guidance: a.guidance,
            scheduler: a.scheduler,
            width: 64,
            height: 64,
            clip_skip: None,
            token_indices: None,
        };
        let shape = sd.latent_shape(64, 64)?;
        let noise = clora_harness::noise::gaussian::<B>(seed, shape, device);
        let mut method = Excite::<B>::new(params);
        let latent = compose(&mut sd, &mut method, &job, noise)?.latent;
        let image = tensor_to_images(sd.decode_latent(latent)?).remove(0);
        clora_harness::backend::sweep_autodiff_graphs::<B>(device);
        Ok(image)
    })
}

/// The words of a toyworld prompt to excite: each object's shape noun, or every word of each object.
fn excite_words(prompt: &str, which: ExciteWords) -> Result<Vec<String>> {
    let spec = parse(prompt)?;
    let mut words: Vec<String> = Vec::new();
    match which {
        ExciteWords::Shapes => {
            words.extend(spec.objects.iter().map(|o| o.shape.name().to_string()));
        }
        ExciteWords::Objects => {
            // the prompt before " on a ... background", its words but the articles and "and"
            let objects = prompt.split(" on a ").next().unwrap_or(prompt);
            words.extend(
                objects
                    .split(|c: char| c.is_whitespace() || c == ',')
                    .filter(|w| !w.is_empty() && *w != "a" && *w != "an" && *w != "and")
                    .map(str::to_string),
            );
        }
    }
    words.sort();
    words.dedup();
    Ok(words)
}

/// Makes `--seeds` images of each prompt with `image_of(prompt, seed)` and judges them with the oracle.
fn judge_images(
    a: &JudgeArgs,
    image_of: &mut dyn FnMut(&str, u64) -> Result<image::RgbImage>,
) -> Result<()> {
    let prompts: Vec<String> = if a.prompt.is_empty() {
        (a.first_caption..a.first_caption + a.captions)
            .map(|i| {
                PlainWorld::default()
                    .sample(HELDOUT_SEED_BASE + 7 * i)
                    .map(|s| caption(&s, i))
            })
            .collect::<Result<_, _>>()?
    } else {
        a.prompt.clone()
    };
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out)?;
    }
    let (mut exact, mut concepts, mut colours, mut mixed, mut total) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    // Prompt objects drawn right (shape, colour, pattern), of all the prompt objects: a graded view of progress.
    let (mut objects_found, mut objects_named) = (0usize, 0usize);
    // Caption matches and images per kind of caption: by its number of objects, and with or without a
    // patterned object (the parts of the task the model finds hard).
    let mut by_objects: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    let mut by_pattern: BTreeMap<bool, (usize, usize)> = BTreeMap::new();
    // Why images miss their caption: each prompt object not found, by what was drawn instead (misses.rs).
    let mut missed: BTreeMap<Miss, usize> = BTreeMap::new();
    let (mut extra_only, mut style_only) = (0usize, 0usize);
    for (p, prompt) in prompts.iter().enumerate() {
        let spec = parse(prompt)?;
        let patterned = spec
            .objects
            .iter()
            .any(|o| o.pattern.is_some_and(|p| p != Pattern::Plain));
        let mut row = String::new();
        for seed in a.first_seed..a.first_seed + a.seeds {
            let image = image_of(prompt, seed)?;
            // as `judge_prompt` does, keeping the reading for the misses
            let reading = read_generated(&image)?;
            let verdict = judge(&spec, &reading);
            if !verdict.exact {
                let m = misses(&spec, &reading, &verdict);
                for miss in &m.objects {
                    *missed.entry(*miss).or_default() += 1;
                }
                extra_only += (m.objects.is_empty() && m.extra > 0) as usize;
                style_only += m.style_or_background as usize;
            }
            total += 1;
            exact += verdict.exact as usize;
            for tally in [
                by_objects.entry(spec.objects.len()).or_default(),
                by_pattern.entry(patterned).or_default(),
            ] {
                tally.0 += verdict.exact as usize;
                tally.1 += 1;
            }
            concepts += verdict.all_concepts_present() as usize;
            colours += verdict.all_concept_colours() as usize;
            mixed += verdict.mixing() as usize;
            objects_found += verdict.matched.iter().flatten().count();
            objects_named += verdict.matched.len();
            row.push(if verdict.exact {
                '+'
            } else if verdict.all_concepts_present() {
                'c'
            } else {
                '.'
            });
            if let Some(out) = &a.out {
                image.save(out.join(format!("p{p:02}_s{seed:02}.png")))?;
            }
        }
        println!("{row}  {prompt}");
    }
    let pct = |k: usize| 100.0 * k as f64 / total.max(1) as f64;
    println!(
        "caption match: {exact}/{total} ({:.1}%); all named concepts present: {concepts}/{total} ({:.1}%); all concept colours present: {colours}/{total} ({:.1}%); attribute mixing: {mixed}/{total} ({:.1}%)",
        pct(exact),
        pct(concepts),
        pct(colours),
        pct(mixed)
    );
    let (lo, hi) = wilson_interval(exact, total, 1.959964);
    println!(
        "caption match, 95% interval (Wilson): {:.1}-{:.1}%",
        100.0 * lo,
        100.0 * hi
    );
    let share =
        |(k, n): (usize, usize)| format!("{k}/{n} ({:.1}%)", 100.0 * k as f64 / n.max(1) as f64);
    let parts: Vec<String> = by_objects
        .iter()
        .map(|(objects, tally)| format!("{objects}: {}", share(*tally)))
        .collect();
    println!("caption match by objects named: {}", parts.join(", "));
    let parts: Vec<String> = by_pattern
        .iter()
        .rev()
        .map(|(patterned, tally)| {
            let kind = if *patterned { "with" } else { "without" };
            format!("{kind} a patterned object {}", share(*tally))
        })
        .collect();
    println!("caption match {}", parts.join(", "));
    println!(
        "prompt objects drawn (shape, colour, pattern): {objects_found}/{objects_named} ({:.1}%)",
        100.0 * objects_found as f64 / objects_named.max(1) as f64
    );
    let parts: Vec<String> = Miss::ALL
        .iter()
        .map(|m| format!("{} {}", m.name(), missed.get(m).copied().unwrap_or(0)))
        .collect();
    println!(
        "prompt objects missed, by what was drawn instead: {} ({}); images with every prompt object but extra objects: {extra_only}; style or background only: {style_only}",
        missed.values().sum::<usize>(),
        parts.join(", ")
    );
    Ok(())
}

fn tune_decoder_cmd(a: TuneDecoderArgs) -> Result<()> {
    let mut cfg = DecoderTrainConfig::default();
    a.phase.apply(&mut cfg.steps, &mut cfg.batch, &mut cfg.lr);
    if let Some(v) = a.accent_weight {
        cfg.accent_weight = v;
    }
    let arch = ToyArch::from_model_dir(&a.model)
        .with_context(|| format!("reading the architecture of {}", a.model.display()))?;
    let o = crate::with_backend!(a.device, |B, device| {
        train_decoder::<Autodiff<B>>(
            &arch,
            &a.model,
            &a.out,
            &cfg,
            &a.work,
            a.f32,
            &device,
            &mut |line: &str| eprintln!("{line}"),
        )
    })
    .with_context(|| format!("fine-tuning the decoder of {}", a.model.display()))?;
    println!(
        "decoder: weighted L1 {:.4}, {:.0} s; model: {}",
        o.final_loss,
        o.seconds,
        o.out.display()
    );
    Ok(())
}

fn train_lora_cmd(a: TrainLoraArgs) -> Result<()> {
    let concepts: Vec<Concept> = if a.concept.is_empty() {
        Concept::ALL.to_vec()
    } else {
        a.concept
            .iter()
            .map(|n| {
                Concept::from_name(n).with_context(|| {
                    format!("--concept `{n}`: expected dots, stripes, rings or outline")
                })
            })
            .collect::<Result<_>>()?
    };
    let layout = a.format.as_deref().map(LoraLayout::parse).transpose()?;
    let jobs = LoraJobs {
        model: &a.model,
        out: &a.out,
        work: &a.work,
        overrides: LoraOverrides {
            phase: a.phase,
            prior_rows: a.prior_rows,
            no_resnet_convs: a.no_resnet_convs,
            companions: a.companions,
            select_every: a.select_every,
            select_seeds: a.select_seeds,
            seed: a.seed,
            f16: a.f16,
        },
        layout,
        force: a.force,
    };
    crate::with_backend!(a.device, |B, device| {
        train_loras::<Autodiff<B>>(&jobs, &concepts, &device)
    })
}

/// What the command line changes in a concept's LoRA recipe.
#[derive(Debug, Default)]
struct LoraOverrides {
    phase: PhaseArgs,
    prior_rows: Option<usize>,
    no_resnet_convs: bool,
    companions: usize,
    select_every: Option<usize>,
    select_seeds: Option<u64>,
    seed: Option<u64>,
    f16: bool,
}

impl LoraOverrides {
    fn config(&self, concept: Concept) -> LoraTrainConfig {
        let mut cfg = LoraTrainConfig::for_concept(concept);
        self.phase
            .apply(&mut cfg.steps, &mut cfg.batch, &mut cfg.lr);
        cfg.prior_rows = self.prior_rows.unwrap_or(cfg.prior_rows);
        cfg.resnet_convs &= !self.no_resnet_convs;
        cfg.companions = self.companions;
        cfg.select_every = self.select_every.unwrap_or(cfg.select_every);
        cfg.select_seeds = self.select_seeds.unwrap_or(cfg.select_seeds);
        cfg.seed = self.seed.unwrap_or(cfg.seed);
        cfg.f16 = self.f16;
        cfg
    }
}

/// LoRA trainings on one model: `<out>/<concept>.safetensors` each.
struct LoraJobs<'a> {
    model: &'a std::path::Path,
    out: &'a std::path::Path,
    work: &'a std::path::Path,
    /// Changes to each concept's recipe ([`LoraTrainConfig::for_concept`]).
    overrides: LoraOverrides,
    /// `None`: each concept's shipped layout.
    layout: Option<LoraLayout>,
    /// Retrain when the file exists.
    force: bool,
}

fn train_loras<B: burn::tensor::backend::AutodiffBackend>(
    jobs: &LoraJobs,
    concepts: &[Concept],
    device: &B::Device,
) -> Result<()> {
    let arch = ToyArch::from_model_dir(jobs.model)
        .with_context(|| format!("reading the architecture of {}", jobs.model.display()))?;
    for &c in concepts {
        let out = jobs.out.join(format!("{}.safetensors", c.name()));
        if out.is_file() && !jobs.force {
            println!("{}: exists, skipped (--force retrains)", out.display());
            continue;
        }
        let layout = jobs.layout.unwrap_or(LoraLayout::shipped(c));
        let o = train_lora::<B>(
            &arch,
            jobs.model,
            c,
            &jobs.overrides.config(c),
            layout,
            &out,
            jobs.work,
            device,
            &mut |line: &str| eprintln!("{line}"),
        )
        .with_context(|| format!("training the LoRA of `{}`", c.name()))?;
        println!(
            "{}: {:?}, {} layers, {} parameters, loss {:.4}, {:.0} s",
            out.display(),
            layout,
            o.layers,
            o.parameters,
            o.final_loss,
            o.seconds
        );
        if let Some(kept) = o
            .selection
            .iter()
            .find(|s| s.checkpoint.step == o.kept_step)
        {
            println!(
                "{}: kept step {} of {} ({}/{} images on held-out seeds match their prompt)",
                out.display(),
                o.kept_step,
                o.selection.last().map_or(0, |s| s.checkpoint.step),
                kept.matched,
                kept.images
            );
        }
    }
    Ok(())
}

fn export_cmd(a: ExportArgs) -> Result<()> {
    let state = PhaseState::load(&a.work, "vae")?
        .filter(|s| s.done)
        .with_context(|| format!("{}: the VAE is not trained yet", a.work.display()))?;
    let scaling = *state
        .values
        .get("scaling_factor")
        .with_context(|| format!("{}: vae.state.json has no scaling_factor", a.work.display()))?;
    let arch = ToyArch::of_work_folder(&a.work)?.unwrap_or_default();
    export_pipeline(&arch, &a.work, scaling, &a.out, !a.f32)?;
    let step = PhaseState::load(&a.work, "base")?
        .map(|s| s.step)
        .unwrap_or(0);
    println!("wrote {} (base checkpoint at step {step})", a.out.display());
    Ok(())
}

fn train_encoders_cmd(a: TrainEncodersArgs) -> Result<()> {
    use clora_harness::toyworld::encoders::{evaluate, train_encoders, EncoderTrainConfig};
    let mut cfg = EncoderTrainConfig::default();
    cfg.clip.steps = a.clip_steps.unwrap_or(cfg.clip.steps);
    cfg.dino.steps = a.dino_steps.unwrap_or(cfg.dino.steps);
    cfg.clip.batch = a.batch.unwrap_or(cfg.clip.batch);
    cfg.dino.batch = a.batch.unwrap_or(cfg.dino.batch);
    (cfg.clip.seed, cfg.dino.seed) = (a.seed, a.seed);
    let mut log = |s: &str| println!("{s}");
    train_encoders(&cfg, &a.out, a.skip_clip, a.skip_dino, &mut log)?;
    if a.eval_scenes > 0 {
        evaluate(&a.out, &cfg.dino.shape, a.eval_scenes, &mut log)?;
    }
    Ok(())
}
