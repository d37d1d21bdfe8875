//! Training the base model: DDPM epsilon prediction on the toyworld's noise schedule (DDPM's linear betas
//! 0.0001..0.02 over 1000 steps, see [`ToyArch::scheduler_json`]), text encoder and UNet trained together from scratch on the cached latents
//! of plain scenes, with the caption dropped one time in ten (classifier-free guidance needs the unconditional
//! branch). Resumable from the last checkpoint (the Adam moments restart, with a short warm-up).

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::flat_adam::FlatAdam;
use burn::module::AutodiffModule;
use burn::tensor::{
    backend::{AutodiffBackend, Backend},
    ElementConversion, Int, Tensor, TensorData,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::arch::ToyArch;
use super::caption::CaptionOrder;
use super::ema::Ema;
use super::error::{ToyError, ToyResult};
use super::grounding::Grounding;
use super::latent_data::LatentSet;
use super::noise_assignment::{assign_noise, permute_rows};
use super::progress::{check_finite, learning_rate, LossLog, PhaseState};
use super::scene::PlainWorld;
use super::text_unet::{TextUnet, TextUnetNames, UNET_FILE};
use super::timestep_sampling::{Draw, TimestepSampler, TimestepSampling, DEFAULT_UNIFORM_SHARE};
use super::token_attention::grounded_token_loss;
use super::train_vocab::{FullTable, TrainVocab};
use super::trainable::trainable;
use crate::models::blocks::probe::AttentionProbe;
use crate::models::clip::tokenizer::ClipTokenizer;
use crate::schedulers::{numerics, SchedulerConfig};

pub const PHASE: &str = "base";

/// Settings of the base training.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseTrainConfig {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub warmup: usize,
    /// Scenes in the cached training set.
    pub dataset: usize,
    /// The distribution the training scenes are drawn from.
    pub world: PlainWorld,
    /// The order in which the training captions name their objects (left to right unless an experiment asks).
    pub caption_order: CaptionOrder,
    /// Probability of training a row on the empty prompt.
    pub caption_dropout: f64,
    pub seed: u64,
    pub checkpoint_every: usize,
    pub log_every: usize,
    /// Decay of the weights' exponential moving average, which the export writes (0: no average; the export
    /// then writes the last step's weights).
    pub ema_decay: f64,
    /// Min-SNR-gamma loss weighting (see [`weighted_epsilon_loss`]); `None`: plain MSE.
    pub min_snr_gamma: Option<f64>,
    /// How the timesteps are drawn ([`TimestepSampling`]; uniform for every committed model).
    pub timestep_sampling: TimestepSampling,
    /// The uniform draw's share in the loss-aware sampler's distribution ([`TimestepSampler::with_uniform_share`]).
    pub timestep_uniform_share: f64,
    /// Train only the token-embedding rows the captions use ([`TrainVocab`]; the same numbers, faster steps).
    pub compact_vocab: bool,
    /// Weight of the token-attention loss ([`token_attention_loss`]) on the UNet's finest cross-attention maps,
    /// added to the epsilon loss (0: off).
    pub token_attention_weight: f64,
    /// How each batch's noise meets its latents ([`NoiseOptions`]; experiments, off for every committed model).
    pub noise_options: NoiseOptions,
    /// Input scaling (Chen 2023, "On the Importance of Noise Scheduling for Diffusion Models"): the diffusion's
    /// latents are the VAE's unit-variance latents times this (the exported `scaling_factor` is the VAE's times
    /// this), so below 1 every timestep is noisier; 1 for every committed model.
    pub latent_scale: f64,
    /// Decay of Adam's second moment (burn's 0.999 for every committed model; an experiment below it).
    pub adam_beta2: f64,
    /// Base steps that use `adam_beta2` before Adam's decay returns to burn's 0.999 (`None`: every step).
    pub adam_beta2_steps: Option<usize>,
}

impl Default for BaseTrainConfig {
    fn default() -> Self {
        Self {
            steps: 9000,
            batch: 64,
            lr: 2e-3,
            warmup: 100,
            dataset: 8000,
            world: PlainWorld::default(),
            caption_order: CaptionOrder::LeftToRight,
            caption_dropout: 0.1,
            seed: 2,
            checkpoint_every: 100,
            log_every: 25,
            ema_decay: 0.999,
            min_snr_gamma: Some(5.0),
            timestep_sampling: TimestepSampling::Uniform,
            timestep_uniform_share: DEFAULT_UNIFORM_SHARE,
            compact_vocab: true,
            token_attention_weight: 0.0,
            noise_options: NoiseOptions::default(),
            latent_scale: 1.0,
            adam_beta2: 0.999,
            adam_beta2_steps: None,
        }
    }
}

/// The folder of the base phase's checkpoint (`text_encoder/`, `unet/`).
pub fn checkpoint_dir(work: &Path) -> PathBuf {
    work.join("base")
}

/// The folder of the base phase's weight average, when the training keeps one.
pub fn ema_dir(work: &Path) -> PathBuf {
    work.join("base_ema")
}

/// `alphas_cumprod` of a training schedule.
pub fn alphas_cumprod(cfg: &SchedulerConfig) -> ToyResult<Vec<f32>> {
    Ok(numerics::alphas_cumprod(&numerics::betas(cfg)?))
}

/// One batch of the epsilon objective.
pub struct DiffusionBatch<B: AutodiffBackend> {
    pub noisy: Tensor<B, 4>,
    pub noise: Tensor<B, 4>,
    pub timesteps: Vec<f32>,
    /// Signal-to-noise ratio `alphas_cumprod[t] / (1 - alphas_cumprod[t])` of each row's timestep.
    pub snr: Vec<f32>,
    /// Each row's importance `1 / (T * p_t)` under the timestep sampler (1 under the uniform draw).
    pub importance: Vec<f32>,
    pub ids: Tensor<B, 2, Int>,
    /// Per row, the example it shows when its caption was kept (`None`: trained on the empty prompt).
    pub captioned: Vec<Option<usize>>,
}

/// How a batch's noise meets its latents (experiments of the base training; the default, row by row and
/// unperturbed, for every committed model).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NoiseOptions {
    /// Give the batch's noises to its latents by [`assign_noise`] (Immiscible Diffusion) instead of row by row.
    pub assign: bool,
    /// Input perturbation `gamma` (Ning et al. 2023, "Input Perturbation Reduces Exposure Bias in Diffusion
    /// Models"): the noisy latent is made with `eps + gamma * xi` (`xi` a fresh standard normal draw) while the
    /// target stays `eps`; 0: off.
    pub input_perturbation: f32,
}

/// Draws a batch: examples, posterior samples scaled by `scaling_factor`, timesteps, noise, noisy latents.
/// The timesteps are `draws` (one per row) when given, else drawn uniformly row by row; `noise_options` say how
/// the noise meets the latents.
pub fn diffusion_batch<B: AutodiffBackend>(
    data: &LatentSet,
    latent_shape: [usize; 3],
    batch: usize,
    scaling_factor: f64,
    alphas_cumprod: &[f32],
    empty_ids: &[u32],
    caption_dropout: f64,
    draws: Option<&[Draw]>,
    noise_options: NoiseOptions,
    rng: &mut ChaCha8Rng,
    device: &B::Device,
) -> DiffusionBatch<B> {
    let l = data.latent_len;
    let normal = |rng: &mut ChaCha8Rng| -> f32 {
        let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    };
    // clean latents x0 and noises eps, `[batch, l]`; each row's sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)
    let mut x0s = Vec::with_capacity(batch * l);
    let mut noise = Vec::with_capacity(batch * l);
    let mut scales = Vec::with_capacity(batch);
    let mut timesteps = Vec::with_capacity(batch);
    let mut snr = Vec::with_capacity(batch);
    let mut importance = Vec::with_capacity(batch);
    // every row's token ids, `[batch, tokens]` (the tokenizer's context: the text encoder's positions)
    let tokens = empty_ids.len();
    let mut ids: Vec<i64> = Vec::with_capacity(batch * tokens);
    let mut captioned = Vec::with_capacity(batch);
    for row in 0..batch {
        let i = rng.random_range(0..data.len());
        let (t, imp) = match draws {
            Some(d) => (d[row].t, d[row].importance),
            None => (rng.random_range(0..alphas_cumprod.len()), 1.0),
        };
        let a = alphas_cumprod[t];
        scales.push((a.sqrt(), (1.0 - a).sqrt()));
        for k in 0..l {
            x0s.push(
                (data.means[i * l + k] + data.stds[i * l + k] * normal(rng))
                    * scaling_factor as f32,
            );
            noise.push(normal(rng));
        }
        timesteps.push(t as f32);
        snr.push(a / (1.0 - a));
        importance.push(imp);
        let dropped = rng.random_bool(caption_dropout);
        let row: &[u32] = if dropped { empty_ids } else { data.ids_of(i) };
        captioned.push((!dropped).then_some(i));
        ids.extend(row.iter().map(|&x| x as i64));
    }
    if noise_options.assign {
        noise = permute_rows(&noise, &assign_noise(&x0s, &noise, batch, l), l);
    }
    // x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, `[batch, l]`, where the noise the latents are
    // noised with is eps, or eps + gamma * xi under input perturbation (the target stays eps)
    let gamma = noise_options.input_perturbation;
    let noisy: Vec<f32> = (0..batch * l)
        .map(|k| {
            let (sa, sb) = scales[k / l];
            let applied = if gamma == 0.0 {
                noise[k]
            } else {
                noise[k] + gamma * normal(rng)
            };
            sa * x0s[k] + sb * applied
        })
        .collect();
    let shape = [batch, latent_shape[0], latent_shape[1], latent_shape[2]];
    DiffusionBatch {
        noisy: Tensor::from_data(TensorData::new(noisy, shape), device),
        noise: Tensor::from_data(TensorData::new(noise, shape), device),
        timesteps,
        snr,
        importance,
        ids: Tensor::from_data(TensorData::new(ids, [batch, tokens]), device),
        captioned,
    }
}

/// The epsilon-prediction loss of `model` on a batch (plain mean squared error).
pub fn epsilon_loss<B: AutodiffBackend>(
    model: &TextUnet<B>,
    b: DiffusionBatch<B>,
) -> ToyResult<Tensor<B, 1>> {
    weighted_epsilon_loss(model, b, None)
}

/// The epsilon-prediction loss with Min-SNR-gamma weighting (Hang et al. 2023, "Efficient Diffusion Training via
/// Min-SNR Weighting Strategy"): each row's squared error is weighted by `min(SNR_t, gamma) / SNR_t`, which
/// for epsilon prediction leaves the noisy timesteps (where layout and binding are decided) at weight 1 and
/// turns down the nearly clean ones, whose easy, conflicting gradients slow training. `None`: plain MSE.
pub fn weighted_epsilon_loss<B: AutodiffBackend>(
    model: &TextUnet<B>,
    b: DiffusionBatch<B>,
    min_snr_gamma: Option<f64>,
) -> ToyResult<Tensor<B, 1>> {
    weighted_epsilon_loss_probed(model, b, min_snr_gamma, &mut AttentionProbe::none())
}

/// As [`weighted_epsilon_loss`], handing the UNet's probed cross-attention maps to `probe`.
pub fn weighted_epsilon_loss_probed<B: AutodiffBackend>(
    model: &TextUnet<B>,
    b: DiffusionBatch<B>,
    min_snr_gamma: Option<f64>,
    probe: &mut AttentionProbe<B>,
) -> ToyResult<Tensor<B, 1>> {
    Ok(epsilon_objective(model, b, min_snr_gamma, probe)?.loss)
}

/// The Min-SNR weight `min(SNR_t, gamma) / SNR_t` of a row's squared error (1 without gamma).
pub fn min_snr_weight(snr: f32, min_snr_gamma: Option<f64>) -> f32 {
    match min_snr_gamma {
        Some(gamma) => snr.min(gamma as f32) / snr.max(1e-12),
        None => 1.0,
    }
}

/// The base training's objective on a batch, and its rows.
pub struct EpsilonObjective<B: AutodiffBackend> {
    /// What is minimised: the mean over rows of `w_t * l_t * importance_t` (`l_t` the row's mean squared
    /// error, `w_t` its Min-SNR weight).
    pub loss: Tensor<B, 1>,
    /// `w_t * l_t` per row, `[n]` (what the loss-aware timestep sampler learns from).
    pub rows: Tensor<B, 1>,
}

/// The Min-SNR-weighted epsilon loss of a batch, each row weighed by its importance too, handing the UNet's
/// probed cross-attention maps to `probe`. Without gamma and with every importance 1 the loss is the plain
/// mean over all elements.
pub fn epsilon_objective<B: AutodiffBackend>(
    model: &TextUnet<B>,
    b: DiffusionBatch<B>,
    min_snr_gamma: Option<f64>,
    probe: &mut AttentionProbe<B>,
) -> ToyResult<EpsilonObjective<B>> {
    let context = model.text_encoder.forward(b.ids, None)?;
    let device = b.noisy.device();
    let pred = model
        .unet
        .forward_probed(b.noisy, &b.timesteps, context, probe)?;
    let sq = (pred - b.noise).powf_scalar(2.0);
    let n = b.snr.len();
    // Per-row mean of [n, c, h, w] -> [n].
    let per_row = sq.clone().reshape([n as i32, -1]).mean_dim(1).reshape([n]);
    let weights: Vec<f32> = b
        .snr
        .iter()
        .map(|&s| min_snr_weight(s, min_snr_gamma))
        .collect();
    let rows = per_row * Tensor::<B, 1>::from_data(TensorData::new(weights, [n]), &device);
    let loss = if min_snr_gamma.is_none() && b.importance.iter().all(|&i| i == 1.0) {
        sq.mean()
    } else {
        let importance = Tensor::<B, 1>::from_data(TensorData::new(b.importance, [n]), &device);
        (rows.clone() * importance).mean()
    };
    Ok(EpsilonObjective { loss, rows })
}

/// Writes `model`'s checkpoint below `dir`; a compact token embedding (`compact`: its vocabulary and the
/// whole table it was cut from) is made whole again first.
fn save_whole<B: Backend>(
    names: &TextUnetNames,
    model: &TextUnet<B>,
    compact: Option<(&TrainVocab, &FullTable)>,
    dir: &Path,
) -> ToyResult<()> {
    match compact {
        Some((vocab, table)) => names.save(&vocab.expand(model, table)?, dir, false),
        None => names.save(model, dir, false),
    }
}

/// What the base training produced.
#[derive(Debug, Clone)]
pub struct BaseOutcome {
    pub final_loss: f64,
    pub seconds: f64,
}

/// Trains (or resumes, or finds finished) the text encoder and UNet in `work/base/`.
#[allow(clippy::too_many_arguments)]
pub fn train_base<B: AutodiffBackend>(
    arch: &ToyArch,
    cfg: &BaseTrainConfig,
    data: &LatentSet,
    scaling_factor: f64,
    tokenizer: &ClipTokenizer,
    work: &Path,
    device: &B::Device,
    log: &mut dyn FnMut(&str),
) -> ToyResult<BaseOutcome> {
    // every prompt row the text encoder reads is its context long: the tokenizer's, and the training set's
    let context = tokenizer.max_length();
    if context != arch.text_positions || data.ids.len() != data.len() * context {
        return Err(ToyError::Training(format!(
            "the text encoder reads {} tokens, the tokenizer pads to {context} and the training set holds {} ids for {} captions; expected one context for all three ({} ids)",
            arch.text_positions,
            data.ids.len(),
            data.len(),
            data.len() * arch.text_positions
        )));
    }
    let dir = checkpoint_dir(work);
    let mut state = PhaseState::load(work, PHASE)?.unwrap_or(PhaseState {
        total: cfg.steps,
        ..PhaseState::default()
    });
    if state.done && state.total == cfg.steps {
        return Ok(BaseOutcome {
            final_loss: state.values.get("final_loss").copied().unwrap_or(f64::NAN),
            seconds: state.seconds,
        });
    }
    state.total = cfg.steps;
    state.done = false;
    let names = TextUnetNames::discover::<B>(arch, device)?;
    // A checkpoint is where the phase goes on: one it wrote, or the weights a start from a model folder put there
    // (at any step of the schedule, step 0 included).
    let resumed = state.step > 0 || dir.join("unet").join(UNET_FILE).is_file();
    let model: TextUnet<B> = if resumed {
        log(&format!(
            "base: resuming at step {}/{}",
            state.step, cfg.steps
        ));
        trainable(TextUnet::load(arch, &dir, device)?)
    } else {
        TextUnet::random(arch, cfg.seed, device)?
    };
    if cfg.noise_options != NoiseOptions::default() || cfg.latent_scale != 1.0 {
        log(&format!(
            "base: noise assignment {}, input perturbation {}, latent scale {} (scaling factor {scaling_factor:.4})",
            if cfg.noise_options.assign { "on" } else { "off" },
            cfg.noise_options.input_perturbation,
            cfg.latent_scale
        ));
    }
    let avg = if cfg.ema_decay <= 0.0 {
        None
    } else if resumed && ema_dir(work).is_dir() {
        Some(TextUnet::<B::InnerBackend>::load(
            arch,
            &ema_dir(work),
            device,
        )?)
    } else {
        Some(model.valid())
    };
    let empty = tokenizer.encode("");
    // The live model and its average train compact token embeddings; each keeps its whole table for saving.
    let vocab = if cfg.compact_vocab {
        let n = model.text_encoder.token_embedding.weight.dims()[0];
        Some(TrainVocab::of(data.ids.iter().chain(&empty), n)?)
    } else {
        None
    };
    let (mut model, model_table) = match &vocab {
        Some(v) => {
            let (m, table) = v.compact(model)?;
            (trainable(m), Some(table))
        }
        None => (model, None),
    };
    let (mut ema, ema_table) = match (avg, &vocab) {
        (Some(avg), Some(v)) => {
            let (avg, table) = v.compact(avg)?;
            (
                Some(Ema::new(avg, cfg.ema_decay, state.step as u64)),
                Some(table),
            )
        }
        (Some(avg), None) => (Some(Ema::new(avg, cfg.ema_decay, state.step as u64)), None),
        (None, _) => (None, None),
    };
    let alphas = alphas_cumprod(&ToyArch::scheduler_config()?)?;
    if cfg.timestep_sampling == TimestepSampling::MinSnr && cfg.min_snr_gamma.is_none() {
        return Err(ToyError::Training(
            "timestep sampling min-snr draws timesteps by their Min-SNR weights: set min_snr_gamma"
                .into(),
        ));
    }
    let loss_weights: Vec<f64> = alphas
        .iter()
        .map(|&a| min_snr_weight(a / (1.0 - a), cfg.min_snr_gamma) as f64)
        .collect();
    let mut sampler = TimestepSampler::new(cfg.timestep_sampling, &loss_weights)?
        .with_uniform_share(cfg.timestep_uniform_share)?;
    let ls = arch.latent_size();
    let latent_shape = [arch.latent_channels, ls, ls];
    // The token-attention loss's targets: which caption object each token names, where each object lies.
    let grounding = if cfg.token_attention_weight > 0.0 {
        let grid = arch.finest_attention_side().ok_or_else(|| {
            ToyError::Training(
                "the token-attention loss needs a UNet level with cross-attention".into(),
            )
        })?;
        let t = Instant::now();
        let g = Grounding::of_training_set(
            &cfg.world,
            &data.captions,
            cfg.caption_order,
            tokenizer,
            grid,
        )?;
        log(&format!(
            "base: token-attention loss (weight {}) on the {grid}x{grid} cross-attention maps; {} captions grounded in {:.1} s",
            cfg.token_attention_weight,
            g.examples.len(),
            t.elapsed().as_secs_f64()
        ));
        Some(g)
    } else {
        None
    };
    // (sum, count) of the token-attention loss since the last log line.
    let mut token_window = (0.0f64, 0usize);
    let default_beta2 = BaseTrainConfig::default().adam_beta2;
    if cfg.adam_beta2 != default_beta2 {
        match cfg.adam_beta2_steps {
            None => log(&format!("base: Adam beta2 {}", cfg.adam_beta2)),
            Some(n) => log(&format!(
                "base: Adam beta2 {} for steps 0..{n}, then {default_beta2}",
                cfg.adam_beta2
            )),
        }
    }
    // Adam's second-moment decay at a step.
    let beta2_at = |step: usize| match cfg.adam_beta2_steps {
        Some(n) if step >= n => default_beta2,
        _ => cfg.adam_beta2,
    };
    let mut optim = FlatAdam::with_beta2(beta2_at(state.step) as f32);
    let mut losses = LossLog::open(work, PHASE, state.seconds)?;
    let mut last = f64::NAN;
    let start = state.step;
    let t0 = Instant::now();
    for step in state.step..cfg.steps {
        let mut rng =
            ChaCha8Rng::seed_from_u64(cfg.seed ^ (step as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let draws = sampler.draw(cfg.batch, &mut rng);
        let mut batch = diffusion_batch::<B>(
            data,
            latent_shape,
            cfg.batch,
            scaling_factor,
            &alphas,
            &empty,
            cfg.caption_dropout,
            draws.as_deref(),
            cfg.noise_options,
            &mut rng,
            device,
        );
        let timesteps: Vec<usize> = batch.timesteps.iter().map(|&t| t as usize).collect();
        if let Some(v) = &vocab {
            batch.ids = v.remap(batch.ids)?;
        }
        let captioned = batch.captioned.clone();
        let mut probe = match &grounding {
            Some(g) => AttentionProbe::at_query_len(g.grid * g.grid),
            None => AttentionProbe::none(),
        };
        let eps = epsilon_objective(&model, batch, cfg.min_snr_gamma, &mut probe)?;
        let value = eps.loss.clone().into_scalar().elem::<f64>();
        if sampler.learns() {
            let rows = eps
                .rows
                .clone()
                .into_data()
                .convert::<f64>()
                .to_vec::<f64>();
            sampler.observe(
                &timesteps,
                &rows.map_err(|e| ToyError::Training(format!("{e:?}")))?,
            );
        }
        let loss = match &grounding {
            None => eps.loss,
            Some(g) => {
                let tokens = grounded_token_loss(g, &captioned, &probe.maps, device);
                token_window.0 += tokens.clone().into_scalar().elem::<f64>();
                token_window.1 += 1;
                eps.loss + tokens * cfg.token_attention_weight
            }
        };
        check_finite(PHASE, step, value)?;
        // After a resume, warm up again: the Adam moments start from zero.
        let rewarm = if resumed {
            ((step - start + 1) as f64 / cfg.warmup.max(1) as f64).min(1.0)
        } else {
            1.0
        };
        let lr = learning_rate(step, cfg.steps, cfg.lr, cfg.warmup, 0.05) * rewarm;
        optim.set_beta2(beta2_at(step) as f32);
        let (stepped, weights) = optim.step(lr, model, &loss.backward())?;
        model = stepped;
        if let Some(ema) = ema.as_mut() {
            ema.update(weights)?;
        }
        last = losses.record(step, value, lr)?;
        let done = step + 1;
        if done % cfg.log_every == 0 || done == cfg.steps {
            let per = t0.elapsed().as_secs_f64() / (done - start) as f64;
            let tokens = match std::mem::take(&mut token_window) {
                (_, 0) => String::new(),
                (sum, n) => format!(", token-attention loss {:.4}", sum / n as f64),
            };
            let draws = if sampler.sampling() == TimestepSampling::Uniform {
                String::new()
            } else {
                let q = sampler.quarters().map(|p| format!("{:.0}%", 100.0 * p));
                format!(", timesteps by quarter {}", q.join("/"))
            };
            log(&format!(
                "base {done}/{}: loss {:.4} (smoothed {last:.4}){tokens}{draws}, lr {lr:.2e}, {per:.2} s/step, ~{:.0} s left",
                cfg.steps,
                losses.take_window_mean(),
                per * (cfg.steps - done) as f64
            ));
        }
        if done % cfg.checkpoint_every == 0 || done == cfg.steps {
            save_whole(
                &names,
                &model,
                vocab.as_ref().zip(model_table.as_ref()),
                &dir,
            )?;
            if let Some(ema) = &ema {
                let compact = vocab.as_ref().zip(ema_table.as_ref());
                save_whole(&names, &ema.model(), compact, &ema_dir(work))?;
            }
            state.step = done;
            state.seconds = losses.seconds();
            state.save(work, PHASE)?;
        }
    }
    state.done = true;
    state.seconds = losses.seconds();
    // JSON has no NaN: a phase of zero steps records no loss.
    if last.is_finite() {
        state.values.insert("final_loss".into(), last);
    }
    state.save(work, PHASE)?;
    Ok(BaseOutcome {
        final_loss: last,
        seconds: state.seconds,
    })
}
