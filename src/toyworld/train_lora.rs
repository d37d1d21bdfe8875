//! Training a personal concept's LoRA (DreamBooth-style): rank-`r` adapters on the UNet's transformer-block
//! linears (`attn1`, `attn2`, `ff`), by default on its resnets' `conv1`/`conv2` (LoCon, as kohya's `conv_dim`
//! LoRAs), and on every text-encoder linear, trained with burn autodiff on the epsilon objective over the
//! concept's scenes ("a dtz circle", "an olz drawing of ..."), mixed with plain scenes of the base distribution
//! (prior preservation), the base weights frozen. The adapters are attached through the same
//! `Linear::attach_lora` / `Conv2d::attach_lora` paths that loading a LoRA file uses, so what is trained is
//! what is loaded; the result is saved in the PEFT/diffusers layout (`save_lora_weights`) or in kohya's
//! (`lora_unet_*`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{
    backend::AutodiffBackend, backend::Backend, ElementConversion, Tensor, TensorData,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::arch::ToyArch;
use super::caption::{training_caption, CaptionOrder};
use super::concept::Concept;
use super::error::{ToyError, ToyResult};
use super::latent_data::{LatentSet, TRAIN_SEED_BASE};
use super::lora_select::{best, select_checkpoint, Checkpoint, CheckpointScore, SelectConfig};
use super::progress::{check_finite, learning_rate, LossLog};
use super::render::render;
use super::scene::{concept_scene_among, PlainWorld, MAX_COMPANIONS};
use super::tensors::host_values;
use super::text_unet::TextUnet;
use super::train_base::{alphas_cumprod, diffusion_batch, epsilon_loss, NoiseOptions};
use super::train_vae::vae_model;
use crate::lora::conv::ConvAdapter;
use crate::lora::key::Component;
use crate::lora::linear::LinearAdapter;
use crate::lora::metadata::LORA_ADAPTER_METADATA_KEY;
use crate::lora::rows::RowMultipliers;
use crate::lora::targets::{LoraTargets, Target};
use crate::models::clip::tokenizer::ClipTokenizer;
use crate::schedulers::SchedulerConfig;

/// Seeds of a concept's training scenes: `CONCEPT_SEED_BASE + i` (apart from plain and held-out seeds).
pub const CONCEPT_SEED_BASE: u64 = 3 << 32;

/// The two LoRA file layouts the harness reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraLayout {
    /// diffusers `save_lora_weights` with PEFT keys: `unet.<path>.lora_A.weight` / `lora_B.weight`, the
    /// adapter config (rank, alpha) in the `lora_adapter_metadata` metadata entry.
    Peft,
    /// kohya / A1111: `lora_unet_<path_with_underscores>.lora_down.weight` / `lora_up.weight` / `.alpha`.
    Kohya,
}

impl LoraLayout {
    pub fn parse(s: &str) -> ToyResult<Self> {
        match s {
            "peft" => Ok(Self::Peft),
            "kohya" => Ok(Self::Kohya),
            other => Err(ToyError::Training(format!(
                "LoRA format `{other}`: expected peft or kohya"
            ))),
        }
    }

    /// The layout the shipped LoRA of `concept` uses (two of each, so both loaders are exercised).
    pub fn shipped(concept: Concept) -> Self {
        match concept {
            Concept::Dots | Concept::Rings => Self::Peft,
            Concept::Stripes | Concept::Outline => Self::Kohya,
        }
    }
}

/// Settings of one LoRA training.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraTrainConfig {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub warmup: usize,
    pub rank: usize,
    /// The alpha written to the file (the adapters are trained at scale 1 and rescaled to `alpha / rank`).
    pub alpha: f64,
    /// Distinct concept scenes in the training set.
    pub concept_scenes: usize,
    /// Plain scenes for prior preservation.
    pub prior_scenes: usize,
    /// Rows of each batch drawn from the plain scenes.
    pub prior_rows: usize,
    pub seed: u64,
    pub log_every: usize,
    /// Also adapt the UNet resnets' 3x3 `conv1`/`conv2` (the only layers at the full latent resolution in the
    /// toy UNet, where a pattern or a line style is drawn).
    pub resnet_convs: bool,
    /// Up to this many plain objects beside a subject concept in its training scenes, which are then
    /// captioned in a random order, so the trigger phrase stands at every place of a caption (0: the subject
    /// alone, "a rgz triangle", as the shipped LoRAs were trained; see [`concept_scene_among`]).
    pub companions: usize,
    /// Save the adapters every this many steps and at the last as `<work>/lora_<concept>.step<N>.safetensors`
    /// and copy to the output file the checkpoint whose images the oracle finds to match the concept's prompts
    /// most often on held-out seeds ([`lora_select`](super::lora_select)); 0: the last step's adapters.
    pub select_every: usize,
    /// Seeds per prompt that each checkpoint is judged on (`select_every > 0`).
    pub select_seeds: u64,
    /// Write the adapters (and the checkpoints) in f16 instead of f32.
    pub f16: bool,
}

impl LoraTrainConfig {
    /// The recipe of the shipped LoRAs for `concept` (measured on the 13000-step base model, 32 seeds each):
    /// 900 steps for `stripes` (32/32) and `rings` (29/32); 3000 for `dots`, whose dots ran together into
    /// bars at 900 and 1500 steps (27/32, 28/32; 31/32 at 3000; 26/32 at 1500 without prior rows); 4000
    /// steps without prior rows for the `outline` style, which has to redraw every object: the 2 plain rows
    /// per batch teach the adapters, the resnet convolutions among them, to leave filled shapes alone (at
    /// 2400 steps on the 11000-step model: 1/32 with them, 19/32 without; at 4000 without them, on the 13000-step
    /// model: 31/32). On the committed model (session 21) the same recipe gives 32/32
    /// for each of the four, but the `dots` and `stripes` so trained no longer compose when merged (1/32).
    ///
    /// Since session 35 `dots` trains at lr 5e-3 and keeps the best of its checkpoints every 250 steps by the
    /// oracle on held-out seeds: over ten trainings on five hour-trained base models its concept then shows in
    /// 87.5-100% of 96 seeds, where at lr 3e-3 and the last step one model fell to 70% and at 1e-2 three to 17-55%
    /// (docs/toyworld.md, "Choosing a LoRA's checkpoint with the oracle"). The shipped `dots` file predates it.
    pub fn for_concept(concept: Concept) -> Self {
        match concept {
            Concept::Outline => Self {
                steps: 4000,
                prior_rows: 0,
                ..Self::default()
            },
            Concept::Dots => Self {
                steps: 3000,
                lr: 5e-3,
                select_every: 250,
                ..Self::default()
            },
            Concept::Stripes | Concept::Rings => Self::default(),
        }
    }
}

impl Default for LoraTrainConfig {
    /// The subjects' recipe. lr 3e-3: at 1e-2 the loss jumped after ~200 steps (the `outline` loss from 0.06
    /// to 0.13, `rings` 0.034 to 0.086) and the subjects showed their concept in 62-69% of seeds, vs 75-100%
    /// at 3e-3 and 900 steps.
    fn default() -> Self {
        Self {
            steps: 900,
            batch: 8,
            lr: 3e-3,
            warmup: 10,
            rank: 4,
            alpha: 4.0,
            concept_scenes: 192,
            prior_scenes: 192,
            prior_rows: 2,
            seed: 5,
            log_every: 10,
            resnet_convs: true,
            companions: 0,
            select_every: 0,
            select_seeds: 32,
            f16: false,
        }
    }
}

/// Whether a layer of `component` at `path` gets an adapter: the UNet's transformer-block linears, with
/// `resnet_convs` its resnets' `conv1`/`conv2`, and every text-encoder linear.
pub fn is_lora_target<B: Backend>(
    component: Component,
    path: &str,
    layer: &Target<'_, B>,
    resnet_convs: bool,
) -> bool {
    match (component, layer) {
        (Component::Unet, Target::Linear(_)) => path.contains(".transformer_blocks."),
        (Component::Unet, Target::Conv2d(_)) => {
            resnet_convs
                && path.contains(".resnets.")
                && (path.ends_with(".conv1") || path.ends_with(".conv2"))
        }
        (Component::TextEncoder, Target::Linear(_)) => true,
        (Component::TextEncoder, Target::Conv2d(_)) => false,
    }
}

/// The kernel of an adapted convolution: `c_in` input channels, `k` x `k`.
#[derive(Debug, Clone, Copy)]
struct ConvKernel {
    c_in: usize,
    k: usize,
}

/// The trainable factors of one layer, in burn's linear layout (`down` `[d_in, r]`, `up` `[r, d_out]`; for a
/// convolution `d_in = c_in k k`, `d_out = c_out`), with Adam moments.
struct Factors<B: Backend> {
    down: Tensor<B, 2>,
    up: Tensor<B, 2>,
    moments: [(Tensor<B, 2>, Tensor<B, 2>); 2],
    /// `Some` for a convolution.
    conv: Option<ConvKernel>,
}

impl<B: Backend> Factors<B> {
    /// `down` in PyTorch's layout: `[r, d_in]`, or `[r, c_in, k, k]` for a convolution.
    fn torch_down_shape(&self) -> Vec<usize> {
        let [d_in, r] = self.down.dims();
        match self.conv {
            Some(ConvKernel { c_in, k }) => vec![r, c_in, k, k],
            None => vec![r, d_in],
        }
    }

    /// `up` in PyTorch's layout: `[d_out, r]`, or `[c_out, r, 1, 1]` for a convolution.
    fn torch_up_shape(&self) -> Vec<usize> {
        let [r, d_out] = self.up.dims();
        match self.conv {
            Some(_) => vec![d_out, r, 1, 1],
            None => vec![d_out, r],
        }
    }
}

/// The adapters being trained, by (component, layer path).
pub struct LoraSet<B: Backend> {
    layers: BTreeMap<(Component, String), Factors<B>>,
}

fn components<B: Backend>(
    model: &mut TextUnet<B>,
    f: &mut dyn FnMut(Component, &str, Target<'_, B>),
) {
    model
        .unet
        .for_each_target("", &mut |p, t| f(Component::Unet, p, t));
    model
        .text_encoder
        .for_each_target("", &mut |p, t| f(Component::TextEncoder, p, t));
}

impl<B: Backend> LoraSet<B> {
    /// Fresh adapters for every target layer of `model`: `down` Kaiming-uniform-like, `up` zero (PEFT's
    /// initialization: the model starts as the base model).
    pub fn init(
        model: &mut TextUnet<B>,
        rank: usize,
        resnet_convs: bool,
        seed: u64,
        device: &B::Device,
    ) -> Self {
        let mut layers = BTreeMap::new();
        let mut k = 0u64;
        components(model, &mut |c, path, t| {
            if !is_lora_target(c, path, &t, resnet_convs) {
                return;
            }
            let (d_in, d_out, conv) = match t {
                Target::Linear(lin) => {
                    let [d_in, d_out] = lin.weight.val().dims();
                    (d_in, d_out, None)
                }
                Target::Conv2d(conv) => {
                    let (c_in, k) = (conv.c_in(), conv.kernel());
                    (c_in * k * k, conv.c_out(), Some(ConvKernel { c_in, k }))
                }
            };
            let bound = 1.0 / (d_in as f32).sqrt();
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(k));
            k += 1;
            let values: Vec<f32> = (0..d_in * rank)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let down = Tensor::<B, 2>::from_data(TensorData::new(values, [d_in, rank]), device);
            let up = Tensor::<B, 2>::zeros([rank, d_out], device);
            let moments = [
                (down.zeros_like(), down.zeros_like()),
                (up.zeros_like(), up.zeros_like()),
            ];
            layers.insert(
                (c, path.to_string()),
                Factors {
                    down,
                    up,
                    moments,
                    conv,
                },
            );
        });
        Self { layers }
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Number of trained values.
    pub fn parameters(&self) -> usize {
        self.layers
            .values()
            .map(|f| {
                f.down.dims().iter().product::<usize>() + f.up.dims().iter().product::<usize>()
            })
            .sum()
    }

    /// Number of adapted convolutions.
    pub fn convolutions(&self) -> usize {
        self.layers.values().filter(|f| f.conv.is_some()).count()
    }
}

/// Attaches the current factors (tracked by autodiff) to `model` as adapter 0 at scale 1; returns the leaves.
fn attach<B: AutodiffBackend>(
    model: &mut TextUnet<B>,
    set: &LoraSet<B::InnerBackend>,
) -> BTreeMap<(Component, String), (Tensor<B, 2>, Tensor<B, 2>)> {
    let mut leaves = BTreeMap::new();
    let mult = RowMultipliers::AllRows(vec![(0, 1.0)]);
    components(model, &mut |c, path, t| {
        let key = (c, path.to_string());
        let Some(f) = set.layers.get(&key) else {
            return;
        };
        let down = Tensor::<B, 2>::from_inner(f.down.clone()).require_grad();
        let up = Tensor::<B, 2>::from_inner(f.up.clone()).require_grad();
        match t {
            Target::Linear(lin) => {
                lin.remove_loras();
                lin.attach_lora(LinearAdapter {
                    id: 0,
                    down: down.clone(),
                    up: up.clone(),
                    alpha_scale: 1.0,
                });
                lin.refresh_lora(&mult);
            }
            Target::Conv2d(conv) => {
                // [d_in, r] -> [r, c_in, k, k]; [r, c_out] -> [c_out, r, 1, 1]
                let down4: Tensor<B, 4> = down
                    .clone()
                    .transpose()
                    .reshape(dims4(&f.torch_down_shape()));
                let up4: Tensor<B, 4> = up.clone().transpose().reshape(dims4(&f.torch_up_shape()));
                conv.remove_loras();
                conv.attach_lora(ConvAdapter {
                    id: 0,
                    down: down4,
                    up: up4,
                    alpha_scale: 1.0,
                });
                conv.refresh_lora(&mult);
            }
        }
        leaves.insert(key, (down, up));
    });
    leaves
}

/// A 4-d shape from a convolution factor's `Vec` shape.
fn dims4(shape: &[usize]) -> [usize; 4] {
    [shape[0], shape[1], shape[2], shape[3]]
}

fn adam<B: Backend>(
    w: Tensor<B, 2>,
    g: Tensor<B, 2>,
    m: &mut (Tensor<B, 2>, Tensor<B, 2>),
    lr: f64,
    t: usize,
) -> Tensor<B, 2> {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    m.0 = m.0.clone() * b1 + g.clone() * (1.0 - b1);
    m.1 = m.1.clone() * b2 + g.powf_scalar(2.0) * (1.0 - b2);
    let c1 = 1.0 - b1.powi(t as i32);
    let c2 = 1.0 - b2.powi(t as i32);
    let step = (m.0.clone() / c1) / ((m.1.clone() / c2).sqrt() + eps);
    w - step * lr
}

/// The training set of a concept: its scenes (captioned with the trigger phrase) and, for prior preservation,
/// plain scenes with their captions, encoded by the model's VAE.
pub fn concept_data<B: Backend>(
    arch: &ToyArch,
    model_dir: &Path,
    concept: Concept,
    cfg: &LoraTrainConfig,
    tokenizer: &ClipTokenizer,
    device: &B::Device,
) -> ToyResult<(LatentSet, LatentSet)> {
    let vae = vae_model::<B>(arch, Some(&model_dir.join("vae")), 0, device)?;
    let scenes = (0..cfg.concept_scenes as u64)
        .map(|i| concept_scene_among(concept, CONCEPT_SEED_BASE + i, cfg.companions))
        .collect::<ToyResult<Vec<_>>>()?;
    let order = if cfg.companions > 0 {
        CaptionOrder::Shuffled
    } else {
        CaptionOrder::LeftToRight
    };
    let captions = scenes
        .iter()
        .enumerate()
        .map(|(i, s)| training_caption(s, i as u64, 0.0, order))
        .collect();
    let images = scenes.iter().map(render).collect::<Vec<_>>();
    let concept_set = LatentSet::encode(&images, captions, &vae, tokenizer, device)?;
    let world = PlainWorld::default();
    // Plain scenes from the end of the base training range (other seeds than the base set's start).
    let plain = (0..cfg.prior_scenes as u64)
        .map(|i| world.sample(TRAIN_SEED_BASE + (1 << 30) + i))
        .collect::<ToyResult<Vec<_>>>()?;
    let captions = plain
        .iter()
        .enumerate()
        .map(|(i, s)| training_caption(s, i as u64, 0.0, CaptionOrder::LeftToRight))
        .collect();
    let images = plain.iter().map(render).collect::<Vec<_>>();
    let prior_set = LatentSet::encode(&images, captions, &vae, tokenizer, device)?;
    Ok((concept_set, prior_set))
}

/// What a LoRA training produced.
#[derive(Debug, Clone)]
pub struct LoraOutcome {
    pub layers: usize,
    pub parameters: usize,
    pub final_loss: f64,
    pub seconds: f64,
    /// The step whose adapters are in the output file (the last, unless `select_every` chose another).
    pub kept_step: usize,
    /// With `select_every`: what the oracle read from each checkpoint's images, by step; empty without.
    pub selection: Vec<CheckpointScore>,
}

/// Where a training saves its adapters at `step` (`cfg.select_every`).
pub fn checkpoint_path(work: &Path, concept: Concept, step: usize) -> PathBuf {
    work.join(format!("{}{step}.safetensors", checkpoint_prefix(concept)))
}

/// The file names of `concept`'s checkpoints start so ([`checkpoint_path`]).
fn checkpoint_prefix(concept: Concept) -> String {
    format!("lora_{}.step", concept.name())
}

/// Trains the LoRA of `concept` on the model in `model_dir` (a diffusers folder of the toy architecture) and
/// writes it to `out` in `layout`. The loss log goes to `work/lora_<name>.loss.csv`.
#[allow(clippy::too_many_arguments)]
pub fn train_lora<B: AutodiffBackend>(
    arch: &ToyArch,
    model_dir: &Path,
    concept: Concept,
    cfg: &LoraTrainConfig,
    layout: LoraLayout,
    out: &Path,
    work: &Path,
    device: &B::Device,
    log: &mut dyn FnMut(&str),
) -> ToyResult<LoraOutcome> {
    if cfg.prior_rows >= cfg.batch {
        return Err(ToyError::Training(format!(
            "LoRA: prior_rows {} must be below the batch {}",
            cfg.prior_rows, cfg.batch
        )));
    }
    if cfg.companions > MAX_COMPANIONS {
        return Err(ToyError::Training(format!(
            "LoRA: companions {} must be at most {MAX_COMPANIONS} (a scene holds at most three objects)",
            cfg.companions
        )));
    }
    std::fs::create_dir_all(work).map_err(|e| ToyError::io(work, e))?;
    let scaling_factor = read_scaling_factor(model_dir)?;
    let tokenizer = arch.tokenizer()?;
    let (data, prior) =
        concept_data::<B::InnerBackend>(arch, model_dir, concept, cfg, &tokenizer, device)?;
    let mut model: TextUnet<B> = TextUnet::load(arch, model_dir, device)?;
    let mut set = LoraSet::<B::InnerBackend>::init(
        &mut TextUnet::<B::InnerBackend>::load(arch, model_dir, device)?,
        cfg.rank,
        cfg.resnet_convs,
        cfg.seed,
        device,
    );
    log(&format!(
        "lora {}: {} layers ({} convolutions), {} parameters, {} concept + {} prior scenes",
        concept.name(),
        set.len(),
        set.convolutions(),
        set.parameters(),
        data.len(),
        prior.len()
    ));
    // The schedule the base model was trained on.
    let alphas = alphas_cumprod(&SchedulerConfig::from_file(
        &model_dir.join("scheduler").join("scheduler_config.json"),
    )?)?;
    let empty = tokenizer.encode("");
    let ls = arch.latent_size();
    let latent_shape = [arch.latent_channels, ls, ls];
    let phase = format!("lora_{}", concept.name());
    let loss_path = work.join(format!("{phase}.loss.csv"));
    if loss_path.is_file() {
        std::fs::remove_file(&loss_path).map_err(|e| ToyError::io(&loss_path, e))?;
    }
    // checkpoints of an earlier training of this concept are not this one's
    let prefix = checkpoint_prefix(concept);
    for entry in std::fs::read_dir(work).map_err(|e| ToyError::io(work, e))? {
        let path = entry.map_err(|e| ToyError::io(work, e))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with(&prefix) && name.ends_with(".safetensors") {
            std::fs::remove_file(&path).map_err(|e| ToyError::io(&path, e))?;
        }
    }
    let mut checkpoints = Vec::new();
    let mut losses = LossLog::open(work, &phase, 0.0)?;
    let mut last = f64::NAN;
    let t0 = Instant::now();
    for step in 0..cfg.steps {
        let leaves = attach::<B>(&mut model, &set);
        let mut rng =
            ChaCha8Rng::seed_from_u64(cfg.seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let loss = lora_loss(
            &model,
            &data,
            &prior,
            cfg,
            latent_shape,
            scaling_factor,
            &alphas,
            &empty,
            &mut rng,
            device,
        )?;
        let value = loss.clone().into_scalar().elem::<f64>();
        check_finite(&phase, step, value)?;
        let lr = learning_rate(step, cfg.steps, cfg.lr, cfg.warmup, 0.1);
        let grads = loss.backward();
        for (key, (down, up)) in leaves {
            let f = set.layers.get_mut(&key).expect("attached from the set");
            if let Some(g) = down.grad(&grads) {
                f.down = adam(f.down.clone(), g, &mut f.moments[0], lr, step + 1);
            }
            if let Some(g) = up.grad(&grads) {
                f.up = adam(f.up.clone(), g, &mut f.moments[1], lr, step + 1);
            }
        }
        last = losses.record(step, value, lr)?;
        let done = step + 1;
        if done % cfg.log_every == 0 || done == cfg.steps {
            let per = t0.elapsed().as_secs_f64() / done as f64;
            log(&format!(
                "{phase} {done}/{}: loss {:.4} (smoothed {last:.4}), {per:.2} s/step, ~{:.0} s left",
                cfg.steps,
                losses.take_window_mean(),
                per * (cfg.steps - done) as f64
            ));
        }
        if cfg.select_every > 0 && (done % cfg.select_every == 0 || done == cfg.steps) {
            let path = checkpoint_path(work, concept, done);
            save_lora(&set, cfg.rank, cfg.alpha, layout, cfg.f16, &path)?;
            checkpoints.push(Checkpoint { step: done, path });
        }
    }
    let (mut kept_step, mut selection) = (cfg.steps, Vec::new());
    if cfg.select_every == 0 {
        save_lora(&set, cfg.rank, cfg.alpha, layout, cfg.f16, out)?;
    } else {
        let select = SelectConfig::for_concept(concept, cfg.select_seeds);
        selection = select_checkpoint::<B::InnerBackend>(
            model_dir,
            &checkpoints,
            &select,
            out,
            device,
            &mut |line: &str| log(&format!("{phase} {line}")),
        )?;
        kept_step = best(&selection).map_or(cfg.steps, |b| b.checkpoint.step);
    }
    Ok(LoraOutcome {
        layers: set.len(),
        parameters: set.parameters(),
        final_loss: last,
        seconds: losses.seconds(),
        kept_step,
        selection,
    })
}

/// The epsilon loss of one LoRA batch: `batch - prior_rows` concept rows and `prior_rows` plain rows.
#[allow(clippy::too_many_arguments)]
fn lora_loss<B: AutodiffBackend>(
    model: &TextUnet<B>,
    data: &LatentSet,
    prior: &LatentSet,
    cfg: &LoraTrainConfig,
    latent_shape: [usize; 3],
    scaling_factor: f64,
    alphas: &[f32],
    empty: &[u32],
    rng: &mut ChaCha8Rng,
    device: &B::Device,
) -> ToyResult<Tensor<B, 1>> {
    let own = diffusion_batch::<B>(
        data,
        latent_shape,
        cfg.batch - cfg.prior_rows,
        scaling_factor,
        alphas,
        empty,
        0.0,
        None,
        NoiseOptions::default(),
        rng,
        device,
    );
    if cfg.prior_rows == 0 {
        return epsilon_loss(model, own);
    }
    let p = diffusion_batch::<B>(
        prior,
        latent_shape,
        cfg.prior_rows,
        scaling_factor,
        alphas,
        empty,
        0.0,
        None,
        NoiseOptions::default(),
        rng,
        device,
    );
    let mut timesteps = own.timesteps;
    timesteps.extend(p.timesteps);
    let mut snr = own.snr;
    snr.extend(p.snr);
    let mut importance = own.importance;
    importance.extend(p.importance);
    // Each row's example in its own set (the LoRA's loss grounds nothing).
    let mut captioned = own.captioned;
    captioned.extend(p.captioned);
    epsilon_loss(
        model,
        super::train_base::DiffusionBatch {
            noisy: Tensor::cat(vec![own.noisy, p.noisy], 0),
            noise: Tensor::cat(vec![own.noise, p.noise], 0),
            timesteps,
            snr,
            importance,
            ids: Tensor::cat(vec![own.ids, p.ids], 0),
            captioned,
        },
    )
}

/// The VAE `scaling_factor` of a diffusers folder.
pub fn read_scaling_factor(model_dir: &Path) -> ToyResult<f64> {
    let p = model_dir.join("vae").join("config.json");
    let text = std::fs::read_to_string(&p).map_err(|e| ToyError::io(&p, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ToyError::bad_file(&p, format!("invalid JSON ({e})")))?;
    v.get("scaling_factor")
        .and_then(|x| x.as_f64())
        .ok_or_else(|| ToyError::bad_file(&p, "field `scaling_factor`: missing or not a number"))
}

fn to_vec<B: Backend>(t: Tensor<B, 2>) -> ToyResult<Vec<f32>> {
    host_values(t.into_data(), "LoRA factors")
}

/// Writes the adapters in `layout`: PyTorch layout (`down`/`lora_A` `[r, d_in]`, `up`/`lora_B` `[d_out, r]`),
/// with `alpha` (scale `alpha / r`; the up factors are rescaled so the delta equals the trained one), as f32 or
/// `f16`.
pub fn save_lora<B: Backend>(
    set: &LoraSet<B>,
    rank: usize,
    alpha: f64,
    layout: LoraLayout,
    f16: bool,
    out: &Path,
) -> ToyResult<()> {
    let rescale = (rank as f64 / alpha) as f32;
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for ((c, path), f) in &set.layers {
        let (c, down_shape, up_shape) = (*c, f.torch_down_shape(), f.torch_up_shape());
        let a = to_vec(f.down.clone().transpose())?;
        let b: Vec<f32> = to_vec(f.up.clone().transpose())?
            .into_iter()
            .map(|x| x * rescale)
            .collect();
        match layout {
            LoraLayout::Peft => {
                let prefix = match c {
                    Component::Unet => "unet",
                    Component::TextEncoder => "text_encoder",
                };
                tensors.push((format!("{prefix}.{path}.lora_A.weight"), down_shape, a));
                tensors.push((format!("{prefix}.{path}.lora_B.weight"), up_shape, b));
            }
            LoraLayout::Kohya => {
                let prefix = match c {
                    Component::Unet => "lora_unet",
                    Component::TextEncoder => "lora_te",
                };
                let name = format!("{prefix}_{}", path.replace('.', "_"));
                tensors.push((format!("{name}.lora_down.weight"), down_shape, a));
                tensors.push((format!("{name}.lora_up.weight"), up_shape, b));
                tensors.push((format!("{name}.alpha"), vec![], vec![alpha as f32]));
            }
        }
    }
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    if layout == LoraLayout::Peft {
        let config = json!({
            "unet.r": rank, "unet.lora_alpha": alpha,
            "text_encoder.r": rank, "text_encoder.lora_alpha": alpha,
        });
        meta.insert(LORA_ADAPTER_METADATA_KEY.to_string(), config.to_string());
    }
    let views: Vec<(&str, Vec<usize>, &[f32])> = tensors
        .iter()
        .map(|(k, shape, v)| (k.as_str(), shape.clone(), v.as_slice()))
        .collect();
    Ok(crate::latent_io::write_safetensors(
        out,
        &views,
        f16,
        Some(meta),
    )?)
}
