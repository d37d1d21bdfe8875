//! The base model's training set: plain scenes rendered once, encoded once by the trained VAE (posterior mean
//! and standard deviation) and tokenized once, cached in the work folder.

use std::path::Path;

use burn::tensor::{backend::Backend, DType};

use super::caption::{training_caption, CaptionOrder};
use super::error::{ToyError, ToyResult};
use super::param_names::write_safetensors;
use super::render::render;
use super::scene::PlainWorld;
use super::tensors::{host_values, images_to_tensor};
use crate::models::clip::tokenizer::ClipTokenizer;
use crate::models::vae::AutoencoderKL;
use crate::models::weights::WeightStore;

/// Seeds of training scenes: `TRAIN_SEED_BASE + i` (below the held-out range).
pub const TRAIN_SEED_BASE: u64 = 1 << 32;

/// Share of plain objects that training captions name by their class noun alone ("a circle").
pub const BARE_RATE: f64 = 0.12;

/// Key of the cache's record of the world it was rendered from: [`world_settings`].
const WORLD_KEY: &str = "world";

/// A world's settings as the cache records them: the probabilities of one, two and three objects, the pattern
/// rate and the grey-background rate.
fn world_settings(world: &PlainWorld) -> Vec<f32> {
    let [one, two, three] = world.object_counts;
    [one, two, three, world.pattern_rate, world.grey_rate]
        .iter()
        .map(|v| *v as f32)
        .collect()
}

/// The cached set.
#[derive(Debug, Clone)]
pub struct LatentSet {
    /// Latent values per example (`latent_len` each): posterior means and standard deviations, unscaled.
    pub means: Vec<f32>,
    pub stds: Vec<f32>,
    pub latent_len: usize,
    /// Token ids, the tokenizer's context (77 for SD 1.x) per example.
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

    /// Example `i`'s token ids (BOS, the caption's, EOS, padding to the context).
    pub fn ids_of(&self, i: usize) -> &[u32] {
        let tokens = self.ids.len() / self.len().max(1);
        &self.ids[i * tokens..(i + 1) * tokens]
    }

    /// Builds the set of `n` scenes of `world`, or reads it from `path` when it is there with `n` examples of
    /// the same world (the file records the world's settings; a file without them holds the default world's).
    pub fn build_or_load<B: Backend>(
        path: &Path,
        n: usize,
        world: &PlainWorld,
        order: CaptionOrder,
        vae: &AutoencoderKL<B>,
        tokenizer: &ClipTokenizer,
        device: &B::Device,
        log: &mut dyn FnMut(&str),
    ) -> ToyResult<Self> {
        let settings = world_settings(world);
        let captions: Vec<String> = (0..n as u64)
            .map(|i| {
                world
                    .sample(TRAIN_SEED_BASE + i)
                    .map(|s| training_caption(&s, i, BARE_RATE, order))
            })
            .collect::<ToyResult<_>>()?;
        let ids: Vec<u32> = captions.iter().flat_map(|c| tokenizer.encode(c)).collect();
        if path.is_file() {
            let store = WeightStore::open(&[path.to_path_buf()])?;
            let (means, shape) = store.read_f32("means")?;
            let (stds, _) = store.read_f32("stds")?;
            let recorded = if store.contains(WORLD_KEY) {
                store.read_f32(WORLD_KEY)?.0
            } else {
                world_settings(&PlainWorld::default())
            };
            if shape.first() == Some(&n) && recorded == settings {
                return Ok(Self {
                    latent_len: shape[1..].iter().product(),
                    means,
                    stds,
                    ids,
                    captions,
                });
            }
            log(&format!(
                "{}: holds {:?} of world {recorded:?}, rebuilding for {n} examples of world {settings:?}",
                path.display(),
                shape
            ));
        }
        let images_of = |start: usize, end: usize| {
            (start..end)
                .map(|i| world.sample(TRAIN_SEED_BASE + i as u64).map(|s| render(&s)))
                .collect::<ToyResult<Vec<_>>>()
        };
        let (means, stds, latent_shape) = encode_chunks(n, images_of, vae, device, log)?;
        let mut shape = vec![n];
        shape.extend(&latent_shape);
        write_safetensors(
            path,
            &[
                ("means".into(), shape.clone(), means.clone()),
                ("stds".into(), shape, stds.clone()),
                (WORLD_KEY.into(), vec![settings.len()], settings.clone()),
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

impl LatentSet {
    /// Encodes `images` (with their captions) by `vae`, without caching.
    pub fn encode<B: Backend>(
        images: &[image::RgbImage],
        captions: Vec<String>,
        vae: &AutoencoderKL<B>,
        tokenizer: &ClipTokenizer,
        device: &B::Device,
    ) -> ToyResult<Self> {
        if images.len() != captions.len() {
            return Err(ToyError::Training(format!(
                "{} images but {} captions",
                images.len(),
                captions.len()
            )));
        }
        let (means, stds, latent_shape) = encode_chunks(
            images.len(),
            |a, b| Ok(images[a..b].to_vec()),
            vae,
            device,
            &mut |_| {},
        )?;
        let ids = captions.iter().flat_map(|c| tokenizer.encode(c)).collect();
        Ok(Self {
            latent_len: latent_shape.iter().product(),
            means,
            stds,
            ids,
            captions,
        })
    }
}

/// Encodes `n` images, produced 64 at a time by `images_of(start, end)`: posterior means, standard deviations
/// and the latent shape `[c, h, w]`.
fn encode_chunks<B: Backend>(
    n: usize,
    images_of: impl Fn(usize, usize) -> ToyResult<Vec<image::RgbImage>>,
    vae: &AutoencoderKL<B>,
    device: &B::Device,
    log: &mut dyn FnMut(&str),
) -> ToyResult<(Vec<f32>, Vec<f32>, Vec<usize>)> {
    let mut means = Vec::new();
    let mut stds = Vec::new();
    let mut latent_shape = vec![];
    let chunk = 64;
    for start in (0..n).step_by(chunk) {
        let end = (start + chunk).min(n);
        let images = images_of(start, end)?;
        let post = vae.encode(images_to_tensor::<B>(&images, device))?;
        latent_shape = post.mean.dims()[1..].to_vec();
        let f = |t: burn::tensor::Tensor<B, 4>| {
            host_values::<f32>(t.cast(DType::F32).into_data(), "latent data")
        };
        means.extend(f(post.mean.clone())?);
        stds.extend(f(post.std())?);
        if (start / chunk) % 20 == 0 {
            log(&format!("encoding training scenes: {end}/{n}"));
        }
    }
    Ok((means, stds, latent_shape))
}
