//! The base model's training set: plain scenes rendered once, encoded once by the trained VAE (posterior mean
//! and standard deviation) and tokenized once, cached in the work folder.

use std::path::Path;

use burn::tensor::{backend::Backend, DType};

use super::caption::caption;
use super::error::{ToyError, ToyResult};
use super::param_names::write_safetensors;
use super::render::render;
use super::scene::PlainWorld;
use super::tensors::images_to_tensor;
use crate::models::clip::tokenizer::ClipTokenizer;
use crate::models::vae::AutoencoderKL;
use crate::models::weights::WeightStore;

/// Seeds of training scenes: `TRAIN_SEED_BASE + i` (below the held-out range).
pub const TRAIN_SEED_BASE: u64 = 1 << 32;

/// The cached set.
#[derive(Debug, Clone)]
pub struct LatentSet {
    /// Latent values per example (`latent_len` each): posterior means and standard deviations, unscaled.
    pub means: Vec<f32>,
    pub stds: Vec<f32>,
    pub latent_len: usize,
    /// 77 token ids per example.
    pub ids: Vec<u32>,
    pub captions: Vec<String>,
}

impl LatentSet {
    pub fn len(&self) -> usize {
        self.captions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.captions.is_empty()
    }

    /// Builds the set of `n` plain scenes, or reads it from `path` when it is there with `n` examples.
    pub fn build_or_load<B: Backend>(
        path: &Path,
        n: usize,
        vae: &AutoencoderKL<B>,
        tokenizer: &ClipTokenizer,
        device: &B::Device,
        log: &mut dyn FnMut(&str),
    ) -> ToyResult<Self> {
        let world = PlainWorld::default();
        let captions: Vec<String> = (0..n as u64)
            .map(|i| world.sample(TRAIN_SEED_BASE + i).map(|s| caption(&s, i)))
            .collect::<ToyResult<_>>()?;
        let ids: Vec<u32> = captions.iter().flat_map(|c| tokenizer.encode(c)).collect();
        if path.is_file() {
            let store = WeightStore::open(&[path.to_path_buf()])?;
            let (means, shape) = store.read_f32("means")?;
            let (stds, _) = store.read_f32("stds")?;
            if shape.first() == Some(&n) {
                return Ok(Self {
                    latent_len: shape[1..].iter().product(),
                    means,
                    stds,
                    ids,
                    captions,
                });
            }
            log(&format!(
                "{}: holds {:?}, rebuilding for {n} examples",
                path.display(),
                shape
            ));
        }
        let mut means = Vec::new();
        let mut stds = Vec::new();
        let mut latent_shape = vec![];
        let chunk = 64;
        for start in (0..n).step_by(chunk) {
            let end = (start + chunk).min(n);
            let images = (start..end)
                .map(|i| world.sample(TRAIN_SEED_BASE + i as u64).map(|s| render(&s)))
                .collect::<ToyResult<Vec<_>>>()?;
            let post = vae.encode(images_to_tensor::<B>(&images, device))?;
            latent_shape = post.mean.dims()[1..].to_vec();
            let f = |t: burn::tensor::Tensor<B, 4>| {
                t.cast(DType::F32)
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .map_err(|e| ToyError::Training(format!("latent data: {e:?}")))
            };
            means.extend(f(post.mean.clone())?);
            stds.extend(f(post.std())?);
            if (start / chunk) % 20 == 0 {
                log(&format!("encoding training scenes: {end}/{n}"));
            }
        }
        let mut shape = vec![n];
        shape.extend(&latent_shape);
        write_safetensors(
            path,
            &[
                ("means".into(), shape.clone(), means.clone()),
                ("stds".into(), shape, stds.clone()),
            ],
            false,
        )?;
        Ok(Self {
            latent_len: latent_shape.iter().product(),
            means,
            stds,
            ids,
            captions,
        })
    }
}
