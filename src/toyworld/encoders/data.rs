//! Training and evaluation data of the metric encoders: rendered toyworld scenes (plain, patterned, subject
//! concepts alone and together, outline drawings) with their captions, image augmentations, and the
//! preprocessing the saved `preprocessor_config.json` describes (so training sees exactly what the metrics feed).

use candle::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::metrics::image_io::RgbImage;
use crate::metrics::preprocess::ImageProcessorConfig;
use crate::metrics::resample::{self, Filter};
use crate::toyworld::caption::caption;
use crate::toyworld::concept::Concept;
use crate::toyworld::error::{ToyError, ToyResult};
use crate::toyworld::palette::{Background, Colour};
use crate::toyworld::pattern::Pattern;
use crate::toyworld::render::render;
use crate::toyworld::scene::{
    concept_scene, place_solid, ObjectRequest, PlainWorld, Scene, CANVAS,
};
use crate::toyworld::shape::ShapeKind;

/// Seeds of the encoders' training scenes start here (below the held-out range, apart from the base model's).
pub const ENCODER_SEED_BASE: u64 = 1 << 36;

/// The kind of scene drawn for a training example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SceneKind {
    Plain,
    Patterned,
    Subject(Concept),
    Together,
    Outline,
}

/// Which kind the `i`-th training scene is: 40% plain, 12% all-patterned, 24% one subject concept alone,
/// 12% several concepts together, 12% outline drawings.
pub fn kind_of(u: f64, rng: &mut ChaCha8Rng) -> SceneKind {
    if u < 0.40 {
        SceneKind::Plain
    } else if u < 0.52 {
        SceneKind::Patterned
    } else if u < 0.76 {
        SceneKind::Subject(Concept::SUBJECTS[rng.random_range(0..3)])
    } else if u < 0.88 {
        SceneKind::Together
    } else {
        SceneKind::Outline
    }
}

/// Two or three subject concepts side by side, sometimes with a plain object (as the held-out set's kind 3).
pub fn together_scene(seed: u64) -> ToyResult<Scene> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7067_e7e7);
    let mut subjects = Concept::SUBJECTS.to_vec();
    let n = rng.random_range(1..=3);
    while subjects.len() > n {
        subjects.remove(rng.random_range(0..subjects.len()));
    }
    let mut objects: Vec<ObjectRequest> = subjects
        .into_iter()
        .filter_map(ObjectRequest::concept)
        .collect();
    while objects.len() < 3 && (objects.len() < 2 || rng.random_bool(0.4)) {
        let shape = ShapeKind::ALL[rng.random_range(0..3)];
        let colour = Colour::BASE[rng.random_range(0..4)];
        let pattern = if rng.random_bool(0.2) {
            Pattern::ALL[rng.random_range(1..Pattern::ALL.len())]
        } else {
            Pattern::Plain
        };
        objects.push(ObjectRequest {
            shape,
            colour,
            pattern,
            concept: None,
        });
    }
    let background = if rng.random_bool(0.25) {
        Background::Grey
    } else {
        Background::White
    };
    place_solid(background, objects, &mut rng)
}

/// The `i`-th training scene of the encoders.
pub fn training_scene(i: u64) -> ToyResult<Scene> {
    let seed = ENCODER_SEED_BASE + i;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let u: f64 = rng.random();
    match kind_of(u, &mut rng) {
        SceneKind::Plain => PlainWorld::default().sample(seed),
        SceneKind::Patterned => PlainWorld {
            pattern_rate: 1.0,
            ..PlainWorld::default()
        }
        .sample(seed),
        SceneKind::Subject(c) => concept_scene(c, seed),
        SceneKind::Together => together_scene(seed),
        SceneKind::Outline => concept_scene(Concept::Outline, seed),
    }
}

/// A rendered scene as the metrics' image type.
pub fn to_metrics_image(img: &image::RgbImage) -> ToyResult<RgbImage> {
    RgbImage::from_raw(
        img.width() as usize,
        img.height() as usize,
        img.as_raw().clone(),
    )
    .ok_or_else(|| ToyError::Image("rendered image has an inconsistent buffer".into()))
}

/// A rendered scene and its caption.
#[derive(Debug, Clone)]
pub struct Example {
    pub scene: Scene,
    pub image: RgbImage,
    pub caption: String,
}

/// Renders `count` training examples starting at scene `first`.
pub fn examples(first: u64, count: usize) -> ToyResult<Vec<Example>> {
    (0..count as u64)
        .map(|k| {
            let i = first + k;
            let scene = training_scene(i)?;
            Ok(Example {
                image: to_metrics_image(&render(&scene))?,
                caption: caption(&scene, ENCODER_SEED_BASE + i),
                scene,
            })
        })
        .collect()
}

/// Mirrors an image left-right.
pub fn flip(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width, img.height);
    let mut data = vec![0u8; img.data.len()];
    for y in 0..h {
        for x in 0..w {
            let s = (y * w + x) * 3;
            let d = (y * w + (w - 1 - x)) * 3;
            data[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

/// A self-supervised view: random resized crop (area 35-100%, aspect 3/4-4/3) back to the canvas size,
/// a random horizontal flip, and a small brightness/contrast jitter (+-8%).
pub fn augment(img: &RgbImage, rng: &mut ChaCha8Rng) -> RgbImage {
    let (w, h) = (img.width as f64, img.height as f64);
    let area = rng.random_range(0.35..1.0) * w * h;
    let log_ratio = rng.random_range((0.75f64).ln()..(4.0f64 / 3.0).ln());
    let ratio = log_ratio.exp();
    let cw = ((area * ratio).sqrt().round() as usize).clamp(8, img.width);
    let ch = ((area / ratio).sqrt().round() as usize).clamp(8, img.height);
    let x0 = rng.random_range(0..=img.width - cw);
    let y0 = rng.random_range(0..=img.height - ch);
    let mut data = Vec::with_capacity(cw * ch * 3);
    for y in y0..y0 + ch {
        let s = (y * img.width + x0) * 3;
        data.extend_from_slice(&img.data[s..s + cw * 3]);
    }
    let crop = RgbImage {
        width: cw,
        height: ch,
        data,
    };
    let mut out = resample::resize(&crop, CANVAS, CANVAS, Filter::Bilinear);
    if rng.random_bool(0.5) {
        out = flip(&out);
    }
    let gain: f32 = rng.random_range(0.92..1.08);
    let shift: f32 = rng.random_range(-10.0..10.0);
    for v in out.data.iter_mut() {
        *v = (*v as f32 * gain + shift).round().clamp(0.0, 255.0) as u8;
    }
    out
}

/// Preprocesses images with `processor` into one `[b, 3, h, w]` tensor.
pub fn pixel_batch(
    images: &[&RgbImage],
    processor: &ImageProcessorConfig,
    device: &Device,
) -> ToyResult<Tensor> {
    let mut data = Vec::new();
    let mut hw = None;
    for im in images {
        let p = processor.preprocess(im)?;
        match hw {
            None => hw = Some((p.height, p.width)),
            Some(s) if s != (p.height, p.width) => {
                return Err(ToyError::Image(
                    "images of one batch preprocess to different sizes".into(),
                ))
            }
            _ => {}
        }
        data.extend_from_slice(&p.data);
    }
    let (h, w) = hw.ok_or_else(|| ToyError::Training("empty image batch".into()))?;
    Tensor::from_vec(data, (images.len(), 3, h, w), device).map_err(candle_err)
}

/// A candle error as the toyworld's error.
pub fn candle_err(e: candle::Error) -> ToyError {
    ToyError::Training(e.to_string())
}
