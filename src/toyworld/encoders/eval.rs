//! Validation of the trained encoders through the metrics' own loaders (`ModelFolder`, `ClipEncoder`,
//! `DinoEncoder`): CLIP caption retrieval and attribute discrimination on held-out scenes, DINO
//! nearest-neighbour accuracy of attributes and concept identity against a random-init ViT of the same shape.

use std::path::Path;

use candle::Device;

use super::data::{candle_err, pixel_batch, to_metrics_image};
use super::dino_train::{init_dino, DinoShape};
use crate::metrics::encoder::{ClipEncoder, DinoEncoder, ImageEncoder};
use crate::metrics::image_io::RgbImage;
use crate::metrics::model_folder::{ModelFolder, ModelKind};
use crate::toyworld::caption::caption;
use crate::toyworld::concept::Concept;
use crate::toyworld::error::ToyResult;
use crate::toyworld::heldout::{heldout_scene, HELDOUT_SEED_BASE};
use crate::toyworld::palette::{Background, Colour};
use crate::toyworld::pattern::Pattern;
use crate::toyworld::render::render;
use crate::toyworld::scene::{concept_scene, PlainWorld, Scene, Style};
use crate::toyworld::shape::ShapeKind;

/// Loads a CLIP folder through the metrics.
pub fn load_clip(dir: &Path) -> ToyResult<ClipEncoder> {
    let folder = ModelFolder::open(dir, &[ModelKind::Clip], "the toyworld CLIP")?;
    let digest = folder.content_digest()?;
    Ok(ClipEncoder::load(&folder, &digest, &Device::Cpu)?)
}

/// Loads a DINO (`ViTModel`) folder through the metrics.
pub fn load_dino(dir: &Path) -> ToyResult<DinoEncoder> {
    let folder = ModelFolder::open(dir, &[ModelKind::DinoV1], "the toyworld DINO")?;
    let digest = folder.content_digest()?;
    Ok(DinoEncoder::load(&folder, &digest, &Device::Cpu)?)
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Rendered images of scenes.
pub fn images_of(scenes: &[Scene]) -> ToyResult<Vec<RgbImage>> {
    scenes
        .iter()
        .map(|s| to_metrics_image(&render(s)))
        .collect()
}

/// What an attribute change did to a caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Colour,
    Shape,
    Pattern,
    Concept,
    Style,
    Background,
}

/// The scene's variants that differ from it in one attribute of one object (or its style or background).
pub fn one_attribute_variants(scene: &Scene) -> Vec<(Change, Scene)> {
    let mut out = Vec::new();
    for j in 0..scene.objects.len() {
        let o = scene.objects[j];
        let mut push = |change: Change, f: &dyn Fn(&mut crate::toyworld::scene::Object)| {
            let mut s = scene.clone();
            f(&mut s.objects[j]);
            out.push((change, s));
        };
        if let Some(c) = o.concept {
            for c2 in Concept::SUBJECTS.into_iter().filter(|&c2| c2 != c) {
                if let Some(l) = c2.look() {
                    push(Change::Concept, &|x| {
                        x.shape = l.shape;
                        x.colour = l.colour;
                        x.pattern = l.pattern;
                        x.concept = Some(c2);
                    });
                }
            }
        } else {
            for col in Colour::BASE.into_iter().filter(|&c| c != o.colour) {
                push(Change::Colour, &|x| x.colour = col);
            }
            for sh in ShapeKind::ALL.into_iter().filter(|&s| s != o.shape) {
                push(Change::Shape, &|x| x.shape = sh);
            }
            if scene.style == Style::Solid {
                for p in Pattern::ALL.into_iter().filter(|&p| p != o.pattern) {
                    push(Change::Pattern, &|x| x.pattern = p);
                }
            }
        }
    }
    let mut s = scene.clone();
    s.style = match scene.style {
        Style::Solid => Style::Outline,
        Style::Outline => Style::Solid,
    };
    if s.objects.iter().all(|o| o.concept.is_none()) {
        out.push((Change::Style, s));
    }
    let mut s = scene.clone();
    s.background = match scene.background {
        Background::White => Background::Grey,
        Background::Grey => Background::White,
    };
    out.push((Change::Background, s));
    out
}

/// CLIP on held-out scenes.
#[derive(Debug, Clone, Default)]
pub struct ClipReport {
    pub scenes: usize,
    /// Distinct captions among the scenes (the retrieval candidates).
    pub candidates: usize,
    /// Image -> caption top-1 among all distinct captions of the set.
    pub retrieval_top1: f64,
    /// Top-1 among the true caption and all its one-attribute variants.
    pub one_attribute_top1: f64,
    /// Pairwise accuracy (true caption scores above the variant), per kind of change: (kind, right, total).
    pub pairwise: Vec<(Change, usize, usize)>,
    /// Mean cosine of an image with its own caption, and with the other scenes' (different) captions.
    pub cos_match: f64,
    pub cos_mismatch: f64,
}

/// Evaluates a CLIP folder on the first `count` held-out scenes.
pub fn eval_clip(dir: &Path, count: usize) -> ToyResult<ClipReport> {
    let enc = load_clip(dir)?;
    let scenes: Vec<Scene> = (0..count as u64)
        .map(heldout_scene)
        .collect::<ToyResult<_>>()?;
    let captions: Vec<String> = scenes
        .iter()
        .enumerate()
        .map(|(i, s)| caption(s, HELDOUT_SEED_BASE + i as u64))
        .collect();
    let img: Vec<Vec<f32>> = enc
        .embed_images(&images_of(&scenes)?, 50)?
        .iter()
        .map(|v| unit(v))
        .collect();
    let mut distinct = captions.clone();
    distinct.sort();
    distinct.dedup();
    let refs: Vec<&str> = distinct.iter().map(String::as_str).collect();
    let txt: Vec<Vec<f32>> = enc
        .embed_texts(&refs, 256)?
        .iter()
        .map(|v| unit(v))
        .collect();
    let mut rep = ClipReport {
        scenes: count,
        candidates: distinct.len(),
        ..Default::default()
    };
    let (mut right, mut cm, mut cx, mut ncx) = (0usize, 0.0f64, 0.0f64, 0usize);
    for (i, e) in img.iter().enumerate() {
        let sims: Vec<f32> = txt.iter().map(|t| dot(e, t)).collect();
        let own = distinct.binary_search(&captions[i]).unwrap_or(0);
        if argmax(&sims) == own {
            right += 1;
        }
        cm += sims[own] as f64;
        for (k, s) in sims.iter().enumerate() {
            if k != own {
                cx += *s as f64;
                ncx += 1;
            }
        }
    }
    rep.retrieval_top1 = right as f64 / count.max(1) as f64;
    rep.cos_match = cm / count.max(1) as f64;
    rep.cos_mismatch = cx / ncx.max(1) as f64;
    let mut one_right = 0;
    let mut pair: std::collections::BTreeMap<Change, (usize, usize)> = Default::default();
    for (i, scene) in scenes.iter().enumerate() {
        let seed = HELDOUT_SEED_BASE + i as u64;
        let mut texts = vec![captions[i].clone()];
        let mut kinds = vec![];
        for (change, v) in one_attribute_variants(scene) {
            let t = caption(&v, seed);
            if !texts.contains(&t) {
                texts.push(t);
                kinds.push(change);
            }
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let sims: Vec<f32> = enc
            .embed_texts(&refs, 256)?
            .iter()
            .map(|t| dot(&img[i], &unit(t)))
            .collect();
        if argmax(&sims) == 0 {
            one_right += 1;
        }
        for (k, change) in kinds.iter().enumerate() {
            let e = pair.entry(*change).or_default();
            e.1 += 1;
            if sims[0] > sims[k + 1] {
                e.0 += 1;
            }
        }
    }
    rep.one_attribute_top1 = one_right as f64 / count.max(1) as f64;
    rep.pairwise = pair.into_iter().map(|(k, (r, n))| (k, r, n)).collect();
    Ok(rep)
}

/// Leave-one-out 1-nearest-neighbour (cosine) accuracy of `labels`.
pub fn nn_accuracy(emb: &[Vec<f32>], labels: &[usize]) -> f64 {
    let e: Vec<Vec<f32>> = emb.iter().map(|v| unit(v)).collect();
    let mut right = 0;
    for i in 0..e.len() {
        let mut best = (f32::MIN, usize::MAX);
        for j in 0..e.len() {
            if j != i {
                let s = dot(&e[i], &e[j]);
                if s > best.0 {
                    best = (s, j);
                }
            }
        }
        if best.1 < labels.len() && labels[best.1] == labels[i] {
            right += 1;
        }
    }
    right as f64 / e.len().max(1) as f64
}

/// Mean cosine of same-label pairs and of different-label pairs.
pub fn same_vs_cross(emb: &[Vec<f32>], labels: &[usize]) -> (f64, f64) {
    let e: Vec<Vec<f32>> = emb.iter().map(|v| unit(v)).collect();
    let (mut s, mut ns, mut c, mut nc) = (0.0, 0usize, 0.0, 0usize);
    for i in 0..e.len() {
        for j in i + 1..e.len() {
            let d = dot(&e[i], &e[j]) as f64;
            if labels[i] == labels[j] {
                s += d;
                ns += 1;
            } else {
                c += d;
                nc += 1;
            }
        }
    }
    (s / ns.max(1) as f64, c / nc.max(1) as f64)
}

/// Held-out probe sets for an image encoder.
pub struct Probes {
    /// Single-object plain scenes (any pattern), with shape and colour labels.
    pub single: Vec<RgbImage>,
    pub shape: Vec<usize>,
    pub colour: Vec<usize>,
    /// Concept scenes (three subjects and the outline style), with the concept's index.
    pub concept_images: Vec<RgbImage>,
    pub concept: Vec<usize>,
}

/// `single` single-object scenes and `per_concept` scenes of each concept, from held-out seeds.
pub fn probes(single: usize, per_concept: usize) -> ToyResult<Probes> {
    let world = PlainWorld {
        object_counts: [1.0, 0.0, 0.0],
        ..PlainWorld::default()
    };
    let mut p = Probes {
        single: vec![],
        shape: vec![],
        colour: vec![],
        concept_images: vec![],
        concept: vec![],
    };
    for i in 0..single as u64 {
        let s = world.sample(HELDOUT_SEED_BASE + 100_000 + i)?;
        let o = s.objects[0];
        p.shape.push(
            ShapeKind::ALL
                .iter()
                .position(|&k| k == o.shape)
                .unwrap_or(0),
        );
        p.colour
            .push(Colour::ALL.iter().position(|&k| k == o.colour).unwrap_or(0));
        p.single.push(to_metrics_image(&render(&s))?);
    }
    for (ci, c) in Concept::ALL.into_iter().enumerate() {
        for k in 0..per_concept as u64 {
            let s = concept_scene(c, HELDOUT_SEED_BASE + 200_000 + k)?;
            p.concept_images.push(to_metrics_image(&render(&s))?);
            p.concept.push(ci);
        }
    }
    Ok(p)
}

/// DINO on the probes.
#[derive(Debug, Clone, Default)]
pub struct DinoReport {
    pub shape_nn: f64,
    pub colour_nn: f64,
    pub concept_nn: f64,
    pub concept_same: f64,
    pub concept_cross: f64,
}

fn dino_report(
    p: &Probes,
    embed: &dyn Fn(&[RgbImage]) -> ToyResult<Vec<Vec<f32>>>,
) -> ToyResult<DinoReport> {
    let single = embed(&p.single)?;
    let conc = embed(&p.concept_images)?;
    let (same, cross) = same_vs_cross(&conc, &p.concept);
    Ok(DinoReport {
        shape_nn: nn_accuracy(&single, &p.shape),
        colour_nn: nn_accuracy(&single, &p.colour),
        concept_nn: nn_accuracy(&conc, &p.concept),
        concept_same: same,
        concept_cross: cross,
    })
}

/// Evaluates a DINO folder (through the metrics) and a random-init ViT of `shape` (seed `baseline_seed`).
pub fn eval_dino(
    dir: &Path,
    shape: &DinoShape,
    single: usize,
    per_concept: usize,
    baseline_seed: u64,
) -> ToyResult<(DinoReport, DinoReport)> {
    let enc = load_dino(dir)?;
    let p = probes(single, per_concept)?;
    let trained = dino_report(&p, &|imgs| Ok(enc.embed_images(imgs, 50)?))?;
    let (_vm, random) = init_dino(shape, baseline_seed)?;
    let processor = shape.processor()?;
    let base = dino_report(&p, &|imgs| {
        let refs: Vec<&RgbImage> = imgs.iter().collect();
        let px = pixel_batch(&refs, &processor, &Device::Cpu)?;
        random
            .embed(&px)
            .and_then(|t| t.to_vec2::<f32>())
            .map_err(candle_err)
    })?;
    Ok((trained, base))
}
