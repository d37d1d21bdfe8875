//! The toyworld's tiny CLIP (transformers `CLIPModel` layout, the real CLIP tokenizer), trained contrastively
//! on rendered scenes and their captions: symmetric InfoNCE over a batch with CLIP's learnable logit scale
//! (initialised to `ln(1/0.07)`, clamped at `ln(100)`).

use candle::{DType, Device, IndexOp, Module, Tensor, Var};
use candle_nn::{Linear, Optimizer, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::data::{candle_err, examples, flip, pixel_batch, Example};
use super::eval::{one_attribute_variants, Change};
use super::nn::{causal_mask, l2_normalize, linear, randn, Naming, Norm, Stack, StackShape};
use super::save::reinit;
use super::train_loop::{adamw, check_batch, StepStats};
use crate::metrics::activation::Activation;
use crate::metrics::preprocess::{ImageProcessorConfig, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD};
use crate::models::clip::tokenizer::ClipTokenizer;
use crate::toyworld::caption::caption;
use crate::toyworld::error::{ToyError, ToyResult};
use crate::toyworld::progress::learning_rate;

/// The tiny CLIP's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipShape {
    pub vocab_size: usize,
    pub text_hidden: usize,
    pub text_layers: usize,
    pub text_heads: usize,
    pub max_positions: usize,
    pub vision_hidden: usize,
    pub vision_layers: usize,
    pub vision_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub projection_dim: usize,
}

impl Default for ClipShape {
    fn default() -> Self {
        Self {
            vocab_size: crate::models::clip::tokenizer::CLIP_VOCAB_SIZE,
            text_hidden: 16,
            text_layers: 2,
            text_heads: 2,
            max_positions: 77,
            vision_hidden: 64,
            vision_layers: 3,
            vision_heads: 4,
            image_size: 64,
            patch_size: 8,
            projection_dim: 32,
        }
    }
}

/// Token ids of CLIP's special tokens.
const BOS: u32 = 49406;
const EOS: u32 = 49407;
const LAYER_NORM_EPS: f64 = 1e-5;

impl ClipShape {
    /// `config.json` of the `CLIPModel`.
    pub fn config_json(&self) -> serde_json::Value {
        json!({
            "architectures": ["CLIPModel"],
            "model_type": "clip",
            "initializer_factor": 1.0,
            "logit_scale_init_value": 2.6592,
            "projection_dim": self.projection_dim,
            "torch_dtype": "float16",
            "text_config": {
                "model_type": "clip_text_model",
                "vocab_size": self.vocab_size,
                "hidden_size": self.text_hidden,
                "intermediate_size": 4 * self.text_hidden,
                "num_hidden_layers": self.text_layers,
                "num_attention_heads": self.text_heads,
                "max_position_embeddings": self.max_positions,
                "hidden_act": "quick_gelu",
                "layer_norm_eps": LAYER_NORM_EPS,
                "bos_token_id": BOS,
                "eos_token_id": EOS,
                "pad_token_id": 1,
                "projection_dim": self.projection_dim
            },
            "vision_config": {
                "model_type": "clip_vision_model",
                "hidden_size": self.vision_hidden,
                "intermediate_size": 4 * self.vision_hidden,
                "num_hidden_layers": self.vision_layers,
                "num_attention_heads": self.vision_heads,
                "num_channels": 3,
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "hidden_act": "quick_gelu",
                "layer_norm_eps": LAYER_NORM_EPS,
                "projection_dim": self.projection_dim
            }
        })
    }

    /// `preprocessor_config.json`: `CLIPImageProcessor` at the model's own size (a 64 px scene passes
    /// through resize and crop unchanged), OpenAI's mean and std.
    pub fn preprocessor_json(&self) -> serde_json::Value {
        let s = self.image_size;
        json!({
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": true,
            "size": {"shortest_edge": s},
            "resample": 3,
            "do_center_crop": true,
            "crop_size": {"height": s, "width": s},
            "do_rescale": true,
            "rescale_factor": 1.0 / 255.0,
            "do_normalize": true,
            "image_mean": OPENAI_CLIP_MEAN,
            "image_std": OPENAI_CLIP_STD,
            "do_convert_rgb": true
        })
    }

    /// The processor the metrics will build from [`Self::preprocessor_json`].
    pub fn processor(&self) -> ToyResult<ImageProcessorConfig> {
        processor_from_json(&self.preprocessor_json())
    }
}

/// Parses a processor config through the metrics' own reader.
pub fn processor_from_json(v: &serde_json::Value) -> ToyResult<ImageProcessorConfig> {
    let map = match v {
        serde_json::Value::Object(m) => m.clone(),
        _ => {
            return Err(ToyError::Training(
                "processor config is not an object".into(),
            ))
        }
    };
    let cfg = crate::models::config_json::JsonConfig {
        path: "preprocessor_config.json".into(),
        map,
    };
    Ok(ImageProcessorConfig::from_json(&cfg)?)
}

/// The trainable CLIP (parameters under the `CLIPModel` names).
pub struct ClipTrain {
    token_embedding: Tensor,
    position_embedding: Tensor,
    text_stack: Stack,
    final_layer_norm: Norm,
    class_embedding: Tensor,
    patch_embedding: Tensor,
    vision_position: Tensor,
    pre_layrnorm: Norm,
    vision_stack: Stack,
    post_layernorm: Norm,
    visual_projection: Linear,
    text_projection: Linear,
    pub logit_scale: Tensor,
    shape: ClipShape,
}

impl ClipTrain {
    pub fn new(vb: VarBuilder, c: &ClipShape) -> candle::Result<Self> {
        let t = vb.pp("text_model");
        let v = vb.pp("vision_model");
        let text_shape = StackShape {
            hidden: c.text_hidden,
            intermediate: 4 * c.text_hidden,
            heads: c.text_heads,
            layers: c.text_layers,
            eps: LAYER_NORM_EPS,
            act: Activation::QuickGelu,
        };
        let vision_shape = StackShape {
            hidden: c.vision_hidden,
            intermediate: 4 * c.vision_hidden,
            heads: c.vision_heads,
            layers: c.vision_layers,
            eps: LAYER_NORM_EPS,
            act: Activation::QuickGelu,
        };
        let grid = c.image_size / c.patch_size;
        Ok(Self {
            token_embedding: t.pp("embeddings.token_embedding").get_with_hints(
                (c.vocab_size, c.text_hidden),
                "weight",
                randn(0.02),
            )?,
            position_embedding: t.pp("embeddings.position_embedding").get_with_hints(
                (c.max_positions, c.text_hidden),
                "weight",
                randn(0.01),
            )?,
            text_stack: Stack::new(t.pp("encoder"), &text_shape, Naming::Clip)?,
            final_layer_norm: Norm::new(c.text_hidden, LAYER_NORM_EPS, t.pp("final_layer_norm"))?,
            class_embedding: v.pp("embeddings").get_with_hints(
                c.vision_hidden,
                "class_embedding",
                randn(0.02),
            )?,
            patch_embedding: v.pp("embeddings.patch_embedding").get_with_hints(
                (c.vision_hidden, 3, c.patch_size, c.patch_size),
                "weight",
                candle_nn::init::DEFAULT_KAIMING_NORMAL,
            )?,
            vision_position: v.pp("embeddings.position_embedding").get_with_hints(
                (grid * grid + 1, c.vision_hidden),
                "weight",
                randn(0.02),
            )?,
            pre_layrnorm: Norm::new(c.vision_hidden, LAYER_NORM_EPS, v.pp("pre_layrnorm"))?,
            vision_stack: Stack::new(v.pp("encoder"), &vision_shape, Naming::Clip)?,
            post_layernorm: Norm::new(c.vision_hidden, LAYER_NORM_EPS, v.pp("post_layernorm"))?,
            visual_projection: linear(
                c.vision_hidden,
                c.projection_dim,
                false,
                vb.pp("visual_projection"),
            )?,
            text_projection: linear(
                c.text_hidden,
                c.projection_dim,
                false,
                vb.pp("text_projection"),
            )?,
            logit_scale: vb.get_with_hints(
                (),
                "logit_scale",
                candle_nn::Init::Const((1.0f64 / 0.07).ln()),
            )?,
            shape: c.clone(),
        })
    }

    /// Image features `[b, projection_dim]` (not normalised).
    pub fn image_features(&self, pixels: &Tensor) -> candle::Result<Tensor> {
        let b = pixels.dim(0)?;
        let h = self.shape.vision_hidden;
        let patches =
            super::nn::patchify(pixels, &self.patch_embedding, None, self.shape.patch_size)?;
        let cls = self
            .class_embedding
            .reshape((1, 1, h))?
            .broadcast_as((b, 1, h))?;
        let x = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.vision_position)?;
        let x = self.pre_layrnorm.forward(&x)?;
        let x = self.vision_stack.forward(&x, None)?;
        let pooled = self.post_layernorm.forward(&x.i((.., 0, ..))?)?;
        self.visual_projection.forward(&pooled)
    }

    /// Text features `[b, projection_dim]` of token rows (BOS ... EOS), pooled at the first EOS.
    pub fn text_features(&self, ids: &[Vec<u32>], device: &Device) -> candle::Result<Tensor> {
        let b = ids.len();
        let s = ids.iter().map(Vec::len).max().unwrap_or(0);
        if s == 0 {
            candle::bail!("no token ids");
        }
        let h = self.shape.text_hidden;
        let flat: Vec<u32> = ids
            .iter()
            .flat_map(|row| {
                let pad = row.last().copied().unwrap_or(EOS);
                row.iter().copied().chain(std::iter::repeat(pad)).take(s)
            })
            .collect();
        let pool: Vec<u32> = ids
            .iter()
            .enumerate()
            .map(|(i, row)| (i * s + row.iter().position(|&t| t == EOS).unwrap_or(0)) as u32)
            .collect();
        let idx = Tensor::from_vec(flat, b * s, device)?;
        let tokens = self
            .token_embedding
            .index_select(&idx, 0)?
            .reshape((b, s, h))?;
        let x = tokens.broadcast_add(&self.position_embedding.narrow(0, 0, s)?)?;
        let mask = causal_mask(s, device)?;
        let x = self.text_stack.forward(&x, Some(&mask))?;
        let x = self.final_layer_norm.forward(&x)?.reshape((b * s, h))?;
        let pooled = x.index_select(&Tensor::from_vec(pool, b, device)?, 0)?;
        self.text_projection.forward(&pooled)
    }
}

/// Settings of the CLIP phase.
#[derive(Debug, Clone)]
pub struct ClipTrainConfig {
    pub shape: ClipShape,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup: usize,
    /// Rendered training scenes (sampled with distinct captions per batch).
    pub dataset: usize,
    pub seed: u64,
    /// Add one hard negative caption per row (the row's scene with one attribute changed, preferably a shape).
    pub hard_negatives: bool,
}

impl Default for ClipTrainConfig {
    fn default() -> Self {
        Self {
            shape: ClipShape::default(),
            steps: 600,
            batch: 64,
            lr: 2e-3,
            weight_decay: 0.01,
            warmup: 40,
            dataset: 4000,
            seed: 0,
            hard_negatives: true,
        }
    }
}

/// Tokenizes as the metrics' `ClipEncoder::tokenize` does (BOS, tokens, EOS, truncated keeping the EOS).
pub fn tokenize(tok: &ClipTokenizer, text: &str, max: usize) -> Vec<u32> {
    let mut ids = tok.encode_full(text);
    let max = max.min(tok.max_length()).max(2);
    if ids.len() > max {
        let eos = ids.last().copied().unwrap_or(EOS);
        ids.truncate(max - 1);
        ids.push(eos);
    }
    ids
}

/// Draws a batch of example indices whose captions are all different (InfoNCE needs one positive per row).
fn distinct_batch(data: &[Example], batch: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(batch);
    let mut tries = 0;
    while out.len() < batch && tries < batch * 50 {
        tries += 1;
        let i = rng.random_range(0..data.len());
        if seen.insert(data[i].caption.as_str()) {
            out.push(i);
        }
    }
    out
}

/// Symmetric InfoNCE of normalised image and text features with `scale = exp(logit_scale)`; `hard`: extra
/// negative captions (one per row, an attribute of the row's scene changed) added to the image->text side.
/// Returns (loss, image->text top-1 accuracy within the batch).
pub fn clip_loss(
    img: &Tensor,
    txt: &Tensor,
    hard: Option<&Tensor>,
    logit_scale: &Tensor,
) -> candle::Result<(Tensor, f64)> {
    let b = img.dim(0)?;
    let img = l2_normalize(img)?;
    let txt = l2_normalize(txt)?;
    let scale = logit_scale.exp()?;
    let logits = img.matmul(&txt.t()?)?.broadcast_mul(&scale)?;
    let targets = Tensor::arange(0u32, b as u32, img.device())?;
    let l1 = match hard {
        Some(h) => {
            let neg = img.matmul(&l2_normalize(h)?.t()?)?.broadcast_mul(&scale)?;
            candle_nn::loss::cross_entropy(&Tensor::cat(&[&logits, &neg], 1)?, &targets)?
        }
        None => candle_nn::loss::cross_entropy(&logits, &targets)?,
    };
    let l2 = candle_nn::loss::cross_entropy(&logits.t()?.contiguous()?, &targets)?;
    let pred = logits.argmax(1)?.to_vec1::<u32>()?;
    let acc = pred
        .iter()
        .enumerate()
        .filter(|(i, &p)| *i as u32 == p)
        .count() as f64
        / b as f64;
    Ok((((l1 + l2)? * 0.5)?, acc))
}

/// Trains the tiny CLIP; returns its `VarMap` (HF names) and the model.
pub fn train_clip(
    cfg: &ClipTrainConfig,
    log: &mut dyn FnMut(&str),
) -> ToyResult<(VarMap, ClipTrain)> {
    check_batch("CLIP", cfg.batch, cfg.dataset)?;
    let device = Device::Cpu;
    let tok = ClipTokenizer::embedded()?;
    let processor = cfg.shape.processor()?;
    let t0 = std::time::Instant::now();
    let data = examples(0, cfg.dataset)?;
    let ids: Vec<Vec<u32>> = data
        .iter()
        .map(|e| tokenize(&tok, &e.caption, cfg.shape.max_positions))
        .collect();
    // hard negatives: captions of the scene with one object's shape (or subject concept) changed, else
    // its pattern or colour
    let hard: Vec<Vec<Vec<u32>>> = data
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let seed = super::data::ENCODER_SEED_BASE + i as u64;
            let variants = one_attribute_variants(&e.scene);
            let pick = |want: &[Change]| -> Vec<Vec<u32>> {
                variants
                    .iter()
                    .filter(|(c, _)| want.contains(c))
                    .map(|(_, v)| caption(v, seed))
                    .filter(|t| *t != e.caption)
                    .map(|t| tokenize(&tok, &t, cfg.shape.max_positions))
                    .collect()
            };
            let main = pick(&[Change::Shape, Change::Concept]);
            if main.is_empty() {
                pick(&[
                    Change::Pattern,
                    Change::Colour,
                    Change::Style,
                    Change::Background,
                ])
            } else {
                main
            }
        })
        .collect();
    log(&format!(
        "clip: {} scenes rendered in {:.1}s",
        data.len(),
        t0.elapsed().as_secs_f64()
    ));
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let model = ClipTrain::new(vb, &cfg.shape).map_err(candle_err)?;
    reinit(&varmap, cfg.seed ^ 0xc119).map_err(candle_err)?;
    let mut opt = adamw(&varmap, cfg.lr, cfg.weight_decay)?;
    let scale_var: Option<Var> = varmap
        .data()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get("logit_scale")
        .cloned();
    let max_scale = 100f32.ln();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xc11b_da7a);
    let mut stats = StepStats::default();
    for step in 0..cfg.steps {
        opt.set_learning_rate(learning_rate(step, cfg.steps, cfg.lr, cfg.warmup, 0.05));
        let mut idx = distinct_batch(&data, cfg.batch, &mut rng);
        idx.shuffle(&mut rng);
        let flipped: Vec<_> = idx
            .iter()
            .map(|&i| {
                if rng.random_bool(0.5) {
                    flip(&data[i].image)
                } else {
                    data[i].image.clone()
                }
            })
            .collect();
        let refs: Vec<_> = flipped.iter().collect();
        let pixels = pixel_batch(&refs, &processor, &device)?;
        let rows: Vec<Vec<u32>> = idx.iter().map(|&i| ids[i].clone()).collect();
        let neg_rows: Vec<Vec<u32>> = idx
            .iter()
            .map(|&i| match hard[i].len() {
                0 => ids[i].clone(),
                n => hard[i][rng.random_range(0..n)].clone(),
            })
            .collect();
        let use_hard = cfg.hard_negatives && hard.iter().any(|h| !h.is_empty());
        let (loss, acc) = (|| {
            let img = model.image_features(&pixels)?;
            let txt = model.text_features(&rows, &device)?;
            let neg = if use_hard {
                Some(model.text_features(&neg_rows, &device)?)
            } else {
                None
            };
            clip_loss(&img, &txt, neg.as_ref(), &model.logit_scale)
        })()
        .map_err(candle_err)?;
        stats.step(&mut opt, &loss, acc, "CLIP", step)?;
        if let Some(v) = &scale_var {
            let s = v.to_scalar::<f32>().map_err(candle_err)?;
            if s > max_scale {
                v.set(&Tensor::new(max_scale, &device).map_err(candle_err)?)
                    .map_err(candle_err)?;
            }
        }
        if StepStats::due(step, cfg.steps) {
            let scale = model
                .logit_scale
                .exp()
                .and_then(|t| t.to_scalar::<f32>())
                .map_err(candle_err)?;
            let (mean_loss, mean_acc) = stats.take();
            log(&format!(
                "clip step {:>5}/{}: loss {mean_loss:.4}  in-batch acc {mean_acc:.3}  scale {scale:.1}  {:.0}s",
                step + 1,
                cfg.steps,
                t0.elapsed().as_secs_f64()
            ));
        }
    }
    Ok((varmap, model))
}
