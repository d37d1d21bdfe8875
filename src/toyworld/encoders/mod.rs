//! Tiny metric encoders of the toyworld (issue 7): a CLIP (transformers `CLIPModel`, the real CLIP tokenizer)
//! trained contrastively on scenes and captions, and a DINO-style ViT (transformers `ViTModel`, as the
//! metrics load DINO v1) trained self-supervised on scenes, so CLIP-T, CLIP-I and DINO scores mean something
//! for the toyworld's 64x64 images and personal concepts. Trained here with candle autograd and written as
//! model folders (`config.json`, `model.safetensors` in f16, `preprocessor_config.json` at 64 px) that the
//! metrics load unchanged.
//!
//! - [`nn`]: differentiable blocks under transformers' key names;
//! - [`data`]: training scenes, augmentations, preprocessing;
//! - [`clip_train`], [`dino_train`]: the models and their training loops;
//! - [`save`]: seeded init and the folder writer;
//! - [`train_loop`]: the optimiser, step and logging both loops share;
//! - [`eval`]: validation through the metrics' loaders.

pub mod clip_train;
pub mod data;
pub mod dino_train;
pub mod eval;
pub mod nn;
pub mod save;
pub mod train_loop;

use std::path::{Path, PathBuf};

use crate::metrics::image_io::RgbImage;
use candle::{Device, Tensor};

use clip_train::{train_clip, ClipTrainConfig};
use data::{candle_err, pixel_batch};
use dino_train::{train_dino, DinoTrainConfig, HEAD_PREFIX};
use save::write_folder;

use crate::metrics::encoder::ImageEncoder;
use crate::metrics::preprocess::ImageProcessorConfig;
use crate::toyworld::error::ToyResult;

/// Both phases.
#[derive(Debug, Clone, Default)]
pub struct EncoderTrainConfig {
    pub clip: ClipTrainConfig,
    pub dino: DinoTrainConfig,
}

/// What training wrote.
#[derive(Debug, Clone)]
pub struct TrainedEncoders {
    pub clip_dir: PathBuf,
    pub dino_dir: PathBuf,
    /// Weight file sizes in bytes.
    pub clip_bytes: u64,
    pub dino_bytes: u64,
    pub clip_seconds: f64,
    pub dino_seconds: f64,
    /// Lowest cosine between the trained model's image embedding and the metrics' embedding of the saved
    /// (f16) folder, over a few scenes (1.0 = identical functions).
    pub clip_parity: f64,
    pub dino_parity: f64,
}

fn min_cos(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
            let nx = x.iter().map(|p| p * p).sum::<f32>().sqrt();
            let ny = y.iter().map(|p| p * p).sum::<f32>().sqrt();
            (d / (nx * ny).max(1e-12)) as f64
        })
        .fold(1.0, f64::min)
}

/// Lowest cosine between the trained model's embeddings of `images` (`ours`, on pixels made with the saved
/// folder's preprocessing) and the metrics' embeddings of them through the encoder loaded from that folder.
fn saved_parity(
    images: &[RgbImage],
    processor: &ImageProcessorConfig,
    ours: impl FnOnce(&Tensor) -> candle::Result<Tensor>,
    saved: &dyn ImageEncoder,
) -> ToyResult<f64> {
    let refs: Vec<_> = images.iter().collect();
    let px = pixel_batch(&refs, processor, &Device::Cpu)?;
    let ours = ours(&px)
        .and_then(|t| t.to_vec2::<f32>())
        .map_err(candle_err)?;
    let theirs = saved.embed_images(images, 8)?;
    Ok(min_cos(&ours, &theirs))
}

/// Trains CLIP then DINO and writes `out/clip` and `out/dino`. `skip_clip` / `skip_dino` leave an existing
/// folder as it is.
pub fn train_encoders(
    cfg: &EncoderTrainConfig,
    out: &Path,
    skip_clip: bool,
    skip_dino: bool,
    log: &mut dyn FnMut(&str),
) -> ToyResult<TrainedEncoders> {
    let clip_dir = out.join("clip");
    let dino_dir = out.join("dino");
    let probe = eval::probes(8, 2)?;
    let mut rep = TrainedEncoders {
        clip_dir: clip_dir.clone(),
        dino_dir: dino_dir.clone(),
        clip_bytes: 0,
        dino_bytes: 0,
        clip_seconds: 0.0,
        dino_seconds: 0.0,
        clip_parity: f64::NAN,
        dino_parity: f64::NAN,
    };
    if !skip_clip {
        let t = std::time::Instant::now();
        let (varmap, model) = train_clip(&cfg.clip, log)?;
        rep.clip_seconds = t.elapsed().as_secs_f64();
        rep.clip_bytes = write_folder(
            &clip_dir,
            &cfg.clip.shape.config_json(),
            &cfg.clip.shape.preprocessor_json(),
            &varmap,
            &[],
        )?;
        rep.clip_parity = saved_parity(
            &probe.single,
            &cfg.clip.shape.processor()?,
            |px| model.image_features(px),
            &eval::load_clip(&clip_dir)?,
        )?;
        log(&format!(
            "clip: wrote {} ({} bytes), {:.0}s, parity cos >= {:.5}",
            clip_dir.display(),
            rep.clip_bytes,
            rep.clip_seconds,
            rep.clip_parity
        ));
    }
    if !skip_dino {
        let t = std::time::Instant::now();
        let (varmap, model) = train_dino(&cfg.dino, log)?;
        rep.dino_seconds = t.elapsed().as_secs_f64();
        rep.dino_bytes = write_folder(
            &dino_dir,
            &cfg.dino.shape.config_json(),
            &cfg.dino.shape.preprocessor_json(),
            &varmap,
            &[HEAD_PREFIX],
        )?;
        rep.dino_parity = saved_parity(
            &probe.single,
            &cfg.dino.shape.processor()?,
            |px| model.embed(px),
            &eval::load_dino(&dino_dir)?,
        )?;
        log(&format!(
            "dino: wrote {} ({} bytes), {:.0}s, parity cos >= {:.5}",
            dino_dir.display(),
            rep.dino_bytes,
            rep.dino_seconds,
            rep.dino_parity
        ));
    }
    Ok(rep)
}

/// Evaluates `out/clip` and `out/dino` through the metrics and logs the figures (`scenes` held-out scenes for
/// CLIP; 200 single-object scenes and 50 per concept for DINO, against a random-init ViT of `dino_shape`).
pub fn evaluate(
    out: &Path,
    dino_shape: &dino_train::DinoShape,
    scenes: usize,
    log: &mut dyn FnMut(&str),
) -> ToyResult<(eval::ClipReport, eval::DinoReport, eval::DinoReport)> {
    let t = std::time::Instant::now();
    let c = eval::eval_clip(&out.join("clip"), scenes)?;
    log(&format!(
        "clip ({} held-out scenes, {} distinct captions): retrieval top-1 {:.3}; top-1 among the caption and \
         its one-attribute variants {:.3}; cosine own caption {:.3} vs other captions {:.3}",
        c.scenes,
        c.candidates,
        c.retrieval_top1,
        c.one_attribute_top1,
        c.cos_match,
        c.cos_mismatch
    ));
    for (k, r, n) in &c.pairwise {
        log(&format!(
            "clip pairwise true caption > variant ({k:?}): {r}/{n} = {:.3}",
            *r as f64 / (*n).max(1) as f64
        ));
    }
    let (d, b) = eval::eval_dino(&out.join("dino"), dino_shape, 200, 50, 0xba5e)?;
    for (name, r) in [("dino trained", &d), ("dino random-init", &b)] {
        log(&format!(
            "{name}: 1-NN shape {:.3}, colour {:.3} (200 single-object scenes); concept {:.3} (4 x 50 scenes); \
             same-concept cos {:.3} vs cross-concept {:.3}",
            r.shape_nn, r.colour_nn, r.concept_nn, r.concept_same, r.concept_cross
        ));
    }
    log(&format!(
        "evaluation took {:.0}s",
        t.elapsed().as_secs_f64()
    ));
    Ok((c, d, b))
}
