//! Loaded metric encoders: a model folder turned into something that embeds images (and, for CLIP, texts)
//! in batches. Runs in f32 on a candle device.

use std::path::Path;

use candle::{DType, Device, Tensor};

use super::clip::{ClipConfig, ClipModel};
use super::dinov2::{Dinov2Config, Dinov2Model};
use super::image_io::RgbImage;
use super::model_folder::{ModelFolder, ModelKind};
use super::preprocess::{ImageProcessorConfig, PixelValues};
use super::vit::{DinoV1, DinoV1Config};
use super::weights::{load, run_error};
use crate::error::{Error, Result};
use crate::models::clip::tokenizer::ClipTokenizer;

/// What an image encoder needs: preprocessing and a forward pass from pixels to one vector per image.
pub trait ImageEncoder {
    /// The model id recorded with every score (`<kind>:<folder>@<digest>`).
    fn model_id(&self) -> &str;
    /// The content digest (cache key).
    fn digest(&self) -> &str;
    fn processor(&self) -> &ImageProcessorConfig;
    fn device(&self) -> &Device;
    /// `pixels`: `[b, 3, h, w]` -> `[b, d]`.
    fn forward(&self, pixels: &Tensor) -> candle::Result<Tensor>;
    /// The input (height, width) the model needs, if it needs one.
    fn input_size(&self) -> Option<(usize, usize)>;

    /// Preprocesses and embeds images, `batch_size` at a time.
    fn embed_images(&self, images: &[RgbImage], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        let pixels = images
            .iter()
            .map(|im| self.processor().preprocess(im))
            .collect::<Result<Vec<_>>>()?;
        self.embed_pixels(&pixels, batch_size)
    }

    /// Embeds preprocessed images, `batch_size` at a time.
    fn embed_pixels(&self, pixels: &[PixelValues], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(pixels.len());
        for chunk in pixels.chunks(batch_size.max(1)) {
            let (h, w) = (chunk[0].height, chunk[0].width);
            if let Some((eh, ew)) = self.input_size() {
                if (h, w) != (eh, ew) {
                    return Err(Error::invalid(
                        self.model_id(),
                        format!(
                            "the processor gives {h}x{w} pixels but the model takes {eh}x{ew}: \
                             preprocessor_config.json does not match config.json"
                        ),
                    ));
                }
            }
            let mut data = Vec::with_capacity(chunk.len() * 3 * h * w);
            for p in chunk {
                if (p.height, p.width) != (h, w) {
                    return Err(Error::invalid(
                        self.model_id(),
                        "images of one batch have different sizes",
                    ));
                }
                data.extend_from_slice(&p.data);
            }
            let t = Tensor::from_vec(data, (chunk.len(), 3, h, w), self.device())
                .map_err(|e| run_error(self.model_id(), e))?;
            let emb = self
                .forward(&t)
                .and_then(|e| e.to_dtype(DType::F32)?.to_vec2::<f32>())
                .map_err(|e| run_error(self.model_id(), e))?;
            out.extend(emb);
        }
        Ok(out)
    }
}

/// A CLIP model folder: image and text features, the folder's tokenizer.
#[derive(Debug)]
pub struct ClipEncoder {
    pub model: ClipModel,
    pub config: ClipConfig,
    pub tokenizer: ClipTokenizer,
    processor: ImageProcessorConfig,
    model_id: String,
    digest: String,
    device: Device,
}

impl ClipEncoder {
    /// Loads a `CLIPModel` folder; `digest` is its content digest (see [`ModelFolder::content_digest`]).
    pub fn load(folder: &ModelFolder, digest: &str, device: &Device) -> Result<Self> {
        if folder.kind != ModelKind::Clip {
            return Err(Error::invalid(
                folder.dir.display().to_string(),
                "not a CLIP model folder",
            ));
        }
        let config = ClipConfig::from_json(&folder.config)?;
        let model = load(&folder.model_weights(), DType::F32, device, |vb| {
            ClipModel::new(vb, &config)
        })?;
        let tokenizer = load_tokenizer(&folder.dir, config.text.vocab_size)?;
        Ok(Self {
            model,
            config,
            tokenizer,
            processor: folder.processor.clone(),
            model_id: folder.model_id(digest),
            digest: digest.to_string(),
            device: device.clone(),
        })
    }

    /// Token ids as transformers' CLIPProcessor gives them with truncation: BOS, the text's tokens, EOS, cut
    /// to `min(max_position_embeddings, model_max_length)` keeping the EOS.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.tokenizer.encode_full(text);
        let max = self
            .config
            .text
            .max_position_embeddings
            .min(self.tokenizer.max_length());
        if ids.len() > max {
            let eos = *ids.last().unwrap_or(&self.tokenizer.eos_id());
            ids.truncate(max - 1);
            ids.push(eos);
        }
        if let Some(&bad) = ids
            .iter()
            .find(|&&t| t as usize >= self.config.text.vocab_size)
        {
            return Err(Error::invalid(
                &self.model_id,
                format!(
                    "token id {bad} is outside the text model's vocab_size {}",
                    self.config.text.vocab_size
                ),
            ));
        }
        Ok(ids)
    }

    /// Text features (`get_text_features`, not normalised), `batch_size` texts at a time.
    pub fn embed_texts(&self, texts: &[&str], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(batch_size.max(1)) {
            let ids = chunk
                .iter()
                .map(|t| self.tokenize(t))
                .collect::<Result<Vec<_>>>()?;
            let emb = self
                .model
                .get_text_features(&ids, &self.device)
                .and_then(|e| e.to_vec2::<f32>())
                .map_err(|e| run_error(&self.model_id, e))?;
            out.extend(emb);
        }
        Ok(out)
    }
}

/// The tokenizer of a CLIP folder (`vocab.json` + `merges.txt`), or the embedded OpenAI vocabulary when the
/// folder has none and the model's vocabulary is OpenAI's (49408 tokens).
fn load_tokenizer(dir: &Path, vocab_size: usize) -> Result<ClipTokenizer> {
    if dir.join("vocab.json").is_file() {
        return ClipTokenizer::from_dir(dir);
    }
    if vocab_size == crate::models::clip::tokenizer::CLIP_VOCAB_SIZE {
        return ClipTokenizer::embedded();
    }
    Err(Error::bad_file(
        dir.join("vocab.json"),
        format!(
            "missing: the text model has {vocab_size} tokens, not OpenAI's 49408, so its own vocab.json and \
             merges.txt are needed"
        ),
    ))
}

impl ImageEncoder for ClipEncoder {
    fn model_id(&self) -> &str {
        &self.model_id
    }
    fn digest(&self) -> &str {
        &self.digest
    }
    fn processor(&self) -> &ImageProcessorConfig {
        &self.processor
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn forward(&self, pixels: &Tensor) -> candle::Result<Tensor> {
        self.model.get_image_features(pixels)
    }
    fn input_size(&self) -> Option<(usize, usize)> {
        let s = self.config.vision.image_size;
        Some((s, s))
    }
}

/// The two DINO architectures.
#[derive(Debug)]
pub enum DinoModel {
    V1(DinoV1, DinoV1Config),
    V2(Dinov2Model, Dinov2Config),
}

/// A DINO model folder (v1 `ViTModel` or `Dinov2Model`): the CLS embedding.
#[derive(Debug)]
pub struct DinoEncoder {
    pub model: DinoModel,
    processor: ImageProcessorConfig,
    model_id: String,
    digest: String,
    device: Device,
}

impl DinoEncoder {
    /// Loads a `ViTModel` (DINO v1) or `Dinov2Model` folder.
    pub fn load(folder: &ModelFolder, digest: &str, device: &Device) -> Result<Self> {
        let weights = folder.model_weights();
        let model = match folder.kind {
            ModelKind::DinoV1 => {
                let cfg = DinoV1Config::from_json(&folder.config)?;
                DinoModel::V1(
                    load(&weights, DType::F32, device, |vb| DinoV1::new(vb, &cfg))?,
                    cfg,
                )
            }
            ModelKind::DinoV2 => {
                let cfg = Dinov2Config::from_json(&folder.config)?;
                DinoModel::V2(
                    load(&weights, DType::F32, device, |vb| {
                        Dinov2Model::new(vb, &cfg)
                    })?,
                    cfg,
                )
            }
            ModelKind::Clip => {
                return Err(Error::invalid(
                    folder.dir.display().to_string(),
                    "not a DINO model folder",
                ))
            }
        };
        Ok(Self {
            model,
            processor: folder.processor.clone(),
            model_id: folder.model_id(digest),
            digest: digest.to_string(),
            device: device.clone(),
        })
    }
}

impl ImageEncoder for DinoEncoder {
    fn model_id(&self) -> &str {
        &self.model_id
    }
    fn digest(&self) -> &str {
        &self.digest
    }
    fn processor(&self) -> &ImageProcessorConfig {
        &self.processor
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn forward(&self, pixels: &Tensor) -> candle::Result<Tensor> {
        match &self.model {
            DinoModel::V1(m, _) => m.forward(pixels),
            DinoModel::V2(m, _) => m.forward(pixels),
        }
    }
    fn input_size(&self) -> Option<(usize, usize)> {
        match &self.model {
            DinoModel::V1(_, c) => Some((c.vit.image_size, c.vit.image_size)),
            // any size that splits into whole patches (position embeddings are interpolated)
            DinoModel::V2(..) => None,
        }
    }
}
