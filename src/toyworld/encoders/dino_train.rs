//! The toyworld's tiny DINO-style image encoder: a ViT in transformers' `ViTModel` layout (what the metrics
//! load for DINO v1, as facebook/dino-vits16), trained self-supervised on rendered scenes, no labels:
//! SimCLR's InfoNCE (NT-Xent) between two augmented views of each scene (random resized crop, flip, small
//! brightness/contrast jitter), through a two-layer projection head that is dropped when saving. The
//! embedding the metrics use is the class token after the final layer norm.

use candle::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Linear, Optimizer, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::clip_train::processor_from_json;
use super::data::{augment, candle_err, examples, pixel_batch};
use super::nn::{l2_normalize, linear, patchify, randn, Naming, Norm, Stack, StackShape};
use super::save::reinit;
use super::train_loop::{adamw, check_batch, StepStats};
use crate::metrics::activation::Activation;
use crate::metrics::preprocess::{
    ImageProcessorConfig, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD,
};
use crate::toyworld::error::ToyResult;
use crate::toyworld::progress::learning_rate;

/// Prefix of the projection head's parameters (trained, not saved).
pub const HEAD_PREFIX: &str = "ssl_head.";

const LAYER_NORM_EPS: f64 = 1e-6;

/// The tiny ViT's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct DinoShape {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    /// Width of the projection head's hidden layer and output.
    pub head_hidden: usize,
    pub head_out: usize,
}

impl Default for DinoShape {
    fn default() -> Self {
        Self {
            hidden: 64,
            layers: 4,
            heads: 4,
            image_size: 64,
            patch_size: 8,
            head_hidden: 256,
            head_out: 64,
        }
    }
}

impl DinoShape {
    /// `config.json` of the `ViTModel`.
    pub fn config_json(&self) -> serde_json::Value {
        json!({
            "architectures": ["ViTModel"],
            "model_type": "vit",
            "hidden_size": self.hidden,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "intermediate_size": 4 * self.hidden,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "initializer_range": 0.02,
            "layer_norm_eps": LAYER_NORM_EPS,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_channels": 3,
            "qkv_bias": true,
            "torch_dtype": "float16"
        })
    }

    /// `preprocessor_config.json`: `ViTImageProcessor` at the model's size, ImageNet mean/std (as the DINO
    /// checkpoints), bilinear.
    pub fn preprocessor_json(&self) -> serde_json::Value {
        let s = self.image_size;
        json!({
            "image_processor_type": "ViTImageProcessor",
            "do_resize": true,
            "size": {"height": s, "width": s},
            "resample": 2,
            "do_rescale": true,
            "rescale_factor": 1.0 / 255.0,
            "do_normalize": true,
            "image_mean": IMAGENET_DEFAULT_MEAN,
            "image_std": IMAGENET_DEFAULT_STD
        })
    }

    pub fn processor(&self) -> ToyResult<ImageProcessorConfig> {
        processor_from_json(&self.preprocessor_json())
    }
}

/// The trainable ViT (parameters under `ViTModel` names) and its projection head.
pub struct DinoTrain {
    cls_token: Tensor,
    position: Tensor,
    patch_weight: Tensor,
    patch_bias: Tensor,
    stack: Stack,
    layernorm: Norm,
    head1: Linear,
    head2: Linear,
    shape: DinoShape,
}

impl DinoTrain {
    pub fn new(vb: VarBuilder, c: &DinoShape) -> candle::Result<Self> {
        let grid = c.image_size / c.patch_size;
        let e = vb.pp("embeddings");
        let stack_shape = StackShape {
            hidden: c.hidden,
            intermediate: 4 * c.hidden,
            heads: c.heads,
            layers: c.layers,
            eps: LAYER_NORM_EPS,
            act: Activation::Gelu,
        };
        let head = vb.pp(HEAD_PREFIX.trim_end_matches('.'));
        Ok(Self {
            cls_token: e.get_with_hints((1, 1, c.hidden), "cls_token", randn(0.02))?,
            position: e.get_with_hints(
                (1, grid * grid + 1, c.hidden),
                "position_embeddings",
                randn(0.02),
            )?,
            patch_weight: e.pp("patch_embeddings.projection").get_with_hints(
                (c.hidden, 3, c.patch_size, c.patch_size),
                "weight",
                candle_nn::init::DEFAULT_KAIMING_NORMAL,
            )?,
            patch_bias: e.pp("patch_embeddings.projection").get_with_hints(
                c.hidden,
                "bias",
                candle_nn::Init::Const(0.0),
            )?,
            stack: Stack::new(vb.pp("encoder"), &stack_shape, Naming::Vit)?,
            layernorm: Norm::new(c.hidden, LAYER_NORM_EPS, vb.pp("layernorm"))?,
            head1: linear(c.hidden, c.head_hidden, true, head.pp("fc1"))?,
            head2: linear(c.head_hidden, c.head_out, true, head.pp("fc2"))?,
            shape: c.clone(),
        })
    }

    /// The embedding the metrics use: the class token of the final layer norm, `[b, hidden]`.
    pub fn embed(&self, pixels: &Tensor) -> candle::Result<Tensor> {
        let b = pixels.dim(0)?;
        let h = self.shape.hidden;
        let patches = patchify(
            pixels,
            &self.patch_weight,
            Some(&self.patch_bias),
            self.shape.patch_size,
        )?;
        let cls = self.cls_token.broadcast_as((b, 1, h))?;
        let x = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.position)?;
        let x = self.stack.forward(&x, None)?;
        self.layernorm.forward(&x)?.i((.., 0, ..))
    }

    /// The projection head's output for the self-supervised loss.
    pub fn project(&self, pixels: &Tensor) -> candle::Result<Tensor> {
        let e = self.embed(pixels)?;
        self.head2.forward(&self.head1.forward(&e)?.gelu_erf()?)
    }
}

/// Settings of the DINO phase.
#[derive(Debug, Clone)]
pub struct DinoTrainConfig {
    pub shape: DinoShape,
    pub steps: usize,
    /// Scenes per batch (two views each).
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup: usize,
    pub temperature: f64,
    pub dataset: usize,
    pub seed: u64,
}

impl Default for DinoTrainConfig {
    fn default() -> Self {
        Self {
            shape: DinoShape::default(),
            steps: 400,
            batch: 48,
            lr: 2e-3,
            weight_decay: 0.05,
            warmup: 30,
            temperature: 0.2,
            dataset: 4000,
            seed: 0,
        }
    }
}

/// NT-Xent over `2b` projected views (`z1[i]` and `z2[i]` are the positives); returns (loss, top-1 accuracy
/// of finding the other view).
pub fn nt_xent(z1: &Tensor, z2: &Tensor, temperature: f64) -> candle::Result<(Tensor, f64)> {
    let b = z1.dim(0)?;
    let z = l2_normalize(&Tensor::cat(&[z1, z2], 0)?)?;
    let sim = (z.matmul(&z.t()?)? / temperature)?;
    let eye: Vec<f32> = (0..2 * b)
        .flat_map(|i| (0..2 * b).map(move |j| if i == j { -1e9 } else { 0.0 }))
        .collect();
    let sim = sim.broadcast_add(&Tensor::from_vec(eye, (2 * b, 2 * b), z.device())?)?;
    let targets: Vec<u32> = (0..2 * b).map(|i| ((i + b) % (2 * b)) as u32).collect();
    let pred = sim.argmax(1)?.to_vec1::<u32>()?;
    let acc = pred.iter().zip(&targets).filter(|(p, t)| p == t).count() as f64 / (2 * b) as f64;
    let targets = Tensor::from_vec(targets, 2 * b, z.device())?;
    Ok((candle_nn::loss::cross_entropy(&sim, &targets)?, acc))
}

/// Builds a ViT with seeded random weights (the untrained baseline of the evaluation, or the start of training).
pub fn init_dino(shape: &DinoShape, seed: u64) -> ToyResult<(VarMap, DinoTrain)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = DinoTrain::new(vb, shape).map_err(candle_err)?;
    reinit(&varmap, seed).map_err(candle_err)?;
    Ok((varmap, model))
}

/// Trains the ViT self-supervised; returns its `VarMap` (head under [`HEAD_PREFIX`]) and the model.
pub fn train_dino(
    cfg: &DinoTrainConfig,
    log: &mut dyn FnMut(&str),
) -> ToyResult<(VarMap, DinoTrain)> {
    check_batch("DINO", cfg.batch, cfg.dataset)?;
    let device = Device::Cpu;
    let processor = cfg.shape.processor()?;
    let t0 = std::time::Instant::now();
    // other scenes than the CLIP phase's (same distribution, no captions used)
    let data = examples(1 << 20, cfg.dataset)?;
    log(&format!(
        "dino: {} scenes rendered in {:.1}s",
        data.len(),
        t0.elapsed().as_secs_f64()
    ));
    let (varmap, model) = init_dino(&cfg.shape, cfg.seed ^ 0xd1_0000)?;
    let mut opt = adamw(&varmap, cfg.lr, cfg.weight_decay)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xd1_da7a);
    let mut stats = StepStats::default();
    for step in 0..cfg.steps {
        opt.set_learning_rate(learning_rate(step, cfg.steps, cfg.lr, cfg.warmup, 0.05));
        let idx: Vec<usize> = (0..cfg.batch)
            .map(|_| rng.random_range(0..data.len()))
            .collect();
        let v1: Vec<_> = idx
            .iter()
            .map(|&i| augment(&data[i].image, &mut rng))
            .collect();
        let v2: Vec<_> = idx
            .iter()
            .map(|&i| augment(&data[i].image, &mut rng))
            .collect();
        let views: Vec<_> = v1.iter().chain(v2.iter()).collect();
        let pixels = pixel_batch(&views, &processor, &device)?;
        let (loss, acc) = (|| {
            let z = model.project(&pixels)?;
            let z1 = z.narrow(0, 0, cfg.batch)?;
            let z2 = z.narrow(0, cfg.batch, cfg.batch)?;
            nt_xent(&z1, &z2, cfg.temperature)
        })()
        .map_err(candle_err)?;
        stats.step(&mut opt, &loss, acc, "DINO", step)?;
        if StepStats::due(step, cfg.steps) {
            let (mean_loss, mean_acc) = stats.take();
            log(&format!(
                "dino step {:>5}/{}: loss {mean_loss:.4}  view acc {mean_acc:.3}  {:.0}s",
                step + 1,
                cfg.steps,
                t0.elapsed().as_secs_f64()
            ));
        }
    }
    Ok((varmap, model))
}
