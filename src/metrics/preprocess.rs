//! The transformers image processors of CLIP and DINO, bit-exact: `CLIPImageProcessor` (also the legacy
//! `CLIPFeatureExtractor` configs), `BitImageProcessor` (DINOv2) and `ViTImageProcessor` (DINO v1, legacy
//! `ViTFeatureExtractor`), as transformers 4.39 runs them on a PIL RGB image:
//!
//! 1. resize through PIL ([`super::resample`]): CLIP/Bit with `size = {"shortest_edge": s}` scale the short side
//!    to `s` and the long side to `int(s * long / short)`; `{"height", "width"}` (and ViT always) resize to
//!    exactly that size, ignoring the aspect ratio;
//! 2. CLIP/Bit: center crop to `crop_size` (`top = (h - crop_h) // 2`; zero padding when the image is smaller, as
//!    `image_transforms.center_crop` does);
//! 3. rescale: `f32(u8 as f64 * rescale_factor)` (numpy multiplies in float64, then casts);
//! 4. normalize in float32: `(x - f32(mean)) / f32(std)`;
//! 5. channels first.
//!
//! `preprocessor_config.json` fields are read with transformers' defaults and its size conventions (an integer
//! `size` is a shortest edge for CLIP/Bit and a square for ViT; `crop_size` as an integer is a square).

use std::path::Path;

use serde_json::Value;

use super::image_io::RgbImage;
use super::resample::{self, Filter};
use crate::error::{Error, Result};
use crate::models::config_json::JsonConfig;

/// `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD` (CLIP and Bit defaults).
pub const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
/// `IMAGENET_STANDARD_MEAN` / `_STD` (ViT defaults).
pub const IMAGENET_STANDARD_MEAN: [f64; 3] = [0.5, 0.5, 0.5];
pub const IMAGENET_STANDARD_STD: [f64; 3] = [0.5, 0.5, 0.5];
/// `IMAGENET_DEFAULT_MEAN` / `_STD` (what the DINO checkpoints set).
pub const IMAGENET_DEFAULT_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_DEFAULT_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// Which transformers processor class the config describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessorKind {
    /// `CLIPImageProcessor` / `CLIPFeatureExtractor`.
    Clip,
    /// `BitImageProcessor` (same steps and defaults as CLIP's).
    Bit,
    /// `ViTImageProcessor` / `ViTFeatureExtractor`: resize to a fixed size, no crop.
    Vit,
}

/// The target of the resize step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTo {
    /// Short side to this many pixels, aspect ratio kept.
    ShortestEdge(usize),
    /// Exactly this size.
    Exact { height: usize, width: usize },
}

/// One image processor configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    pub kind: ProcessorKind,
    pub do_resize: bool,
    pub size: ResizeTo,
    pub resample: Filter,
    pub do_center_crop: bool,
    /// (height, width).
    pub crop_size: (usize, usize),
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
}

/// Preprocessed pixels of one image: `3 x height x width` float32, channels first.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelValues {
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl ImageProcessorConfig {
    /// What `CLIPImageProcessor()` uses with no argument (= openai/clip-vit-* checkpoints).
    pub fn clip_default() -> Self {
        Self {
            kind: ProcessorKind::Clip,
            do_resize: true,
            size: ResizeTo::ShortestEdge(224),
            resample: Filter::Bicubic,
            do_center_crop: true,
            crop_size: (224, 224),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
        }
    }

    /// facebook/dino-vits16's processor: 224x224 bilinear, ImageNet mean/std, no crop.
    pub fn dino_v1_default() -> Self {
        Self {
            kind: ProcessorKind::Vit,
            do_resize: true,
            size: ResizeTo::Exact {
                height: 224,
                width: 224,
            },
            resample: Filter::Bilinear,
            do_center_crop: false,
            crop_size: (224, 224),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: IMAGENET_DEFAULT_MEAN,
            image_std: IMAGENET_DEFAULT_STD,
        }
    }

    /// facebook/dinov2-*'s processor: shortest edge 256 bicubic, center crop 224, ImageNet mean/std.
    pub fn dinov2_default() -> Self {
        Self {
            kind: ProcessorKind::Bit,
            size: ResizeTo::ShortestEdge(256),
            image_mean: IMAGENET_DEFAULT_MEAN,
            image_std: IMAGENET_DEFAULT_STD,
            ..Self::clip_default()
        }
    }

    /// Reads a `preprocessor_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json(&JsonConfig::from_file(path)?)
    }

    /// From a parsed `preprocessor_config.json`.
    pub fn from_json(cfg: &JsonConfig) -> Result<Self> {
        let path = &cfg.path;
        let class = cfg
            .get("image_processor_type")
            .or_else(|| cfg.get("feature_extractor_type"))
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                Error::config(
                    path,
                    "image_processor_type",
                    "missing (expected CLIPImageProcessor, BitImageProcessor or ViTImageProcessor, or a \
                     feature_extractor_type)",
                )
            })?;
        let kind = match class {
            "CLIPImageProcessor" | "CLIPFeatureExtractor" => ProcessorKind::Clip,
            "BitImageProcessor" => ProcessorKind::Bit,
            "ViTImageProcessor" | "ViTFeatureExtractor" => ProcessorKind::Vit,
            other => {
                return Err(Error::config(
                    path,
                    "image_processor_type",
                    format!(
                        "is \"{other}\", expected CLIPImageProcessor, BitImageProcessor or ViTImageProcessor"
                    ),
                ))
            }
        };
        let base = match kind {
            ProcessorKind::Clip => Self::clip_default(),
            ProcessorKind::Bit => Self {
                kind,
                ..Self::clip_default()
            },
            ProcessorKind::Vit => Self {
                image_mean: IMAGENET_STANDARD_MEAN,
                image_std: IMAGENET_STANDARD_STD,
                ..Self::dino_v1_default()
            },
        };
        let size = match cfg.get("size") {
            None => base.size,
            Some(v) => {
                let dict = size_dict(v, kind != ProcessorKind::Vit, path, "size")?;
                match (kind, dict) {
                    (ProcessorKind::Vit, ResizeTo::ShortestEdge(_)) => {
                        return Err(Error::config(
                            path,
                            "size",
                            "ViTImageProcessor needs {\"height\": h, \"width\": w} (or an integer)",
                        ))
                    }
                    (_, d) => d,
                }
            }
        };
        let crop_size = match cfg.get("crop_size") {
            None => base.crop_size,
            Some(v) => match size_dict(v, false, path, "crop_size")? {
                ResizeTo::Exact { height, width } => (height, width),
                ResizeTo::ShortestEdge(_) => {
                    return Err(Error::config(
                        path,
                        "crop_size",
                        "expected {\"height\": h, \"width\": w} or an integer",
                    ))
                }
            },
        };
        let resample = match cfg.get("resample") {
            None => base.resample,
            Some(v) => {
                let code = v.as_u64().ok_or_else(|| {
                    Error::config(
                        path,
                        "resample",
                        format!("expected an integer PIL filter, found {v}"),
                    )
                })?;
                Filter::from_pil(code).ok_or_else(|| {
                    Error::config(
                        path,
                        "resample",
                        format!(
                            "is {code}; supported: 1 (LANCZOS), 2 (BILINEAR), 3 (BICUBIC), 4 (BOX), 5 (HAMMING) \
                             (0 = NEAREST is not supported)"
                        ),
                    )
                })?
            }
        };
        let out = Self {
            kind,
            do_resize: cfg.bool("do_resize", base.do_resize)?,
            size,
            resample,
            do_center_crop: kind != ProcessorKind::Vit
                && cfg.bool("do_center_crop", base.do_center_crop)?,
            crop_size,
            do_rescale: cfg.bool("do_rescale", base.do_rescale)?,
            rescale_factor: cfg.f64("rescale_factor", Some(base.rescale_factor))?,
            do_normalize: cfg.bool("do_normalize", base.do_normalize)?,
            image_mean: triple(cfg, "image_mean", base.image_mean)?,
            image_std: triple(cfg, "image_std", base.image_std)?,
        };
        if out.do_normalize && out.image_std.contains(&0.0) {
            return Err(Error::config(path, "image_std", "must not contain 0"));
        }
        Ok(out)
    }

    /// (height, width) of the resize output for an input of `width x height` (`get_resize_output_image_size`).
    pub fn resize_output_size(&self, width: usize, height: usize) -> (usize, usize) {
        match self.size {
            ResizeTo::Exact { height, width } => (height, width),
            ResizeTo::ShortestEdge(s) => {
                let (short, long) = if width <= height {
                    (width, height)
                } else {
                    (height, width)
                };
                // Python: int(requested_new_short * long / short), true division in float64
                let new_long = (s as f64 * long as f64 / short as f64) as usize;
                if width <= height {
                    (new_long, s)
                } else {
                    (s, new_long)
                }
            }
        }
    }

    /// (height, width) of the processor output for an input of `width x height`.
    pub fn output_size(&self, width: usize, height: usize) -> (usize, usize) {
        let (h, w) = if self.do_resize {
            self.resize_output_size(width, height)
        } else {
            (height, width)
        };
        if self.do_center_crop {
            crop_output_size(h, w, self.crop_size)
        } else {
            (h, w)
        }
    }

    /// Steps 1-2: the uint8 image after resize and center crop.
    pub fn resize_and_crop(&self, img: &RgbImage) -> Result<RgbImage> {
        if img.width == 0 || img.height == 0 {
            return Err(Error::invalid("image", "has zero width or height"));
        }
        let img = if self.do_resize {
            let (h, w) = self.resize_output_size(img.width, img.height);
            if h == 0 || w == 0 {
                return Err(Error::invalid(
                    "image",
                    format!("{}x{} resizes to an empty image", img.width, img.height),
                ));
            }
            resample::resize(img, w, h, self.resample)
        } else {
            img.clone()
        };
        Ok(if self.do_center_crop {
            center_crop(&img, self.crop_size)
        } else {
            img
        })
    }

    /// Steps 3-5 on a cropped image: rescale, normalize, channels first.
    pub fn to_pixel_values(&self, img: &RgbImage) -> PixelValues {
        let lut: Vec<[f32; 256]> = (0..3)
            .map(|c| {
                let mut t = [0f32; 256];
                let mean = self.image_mean[c] as f32;
                let std = self.image_std[c] as f32;
                for (v, slot) in t.iter_mut().enumerate() {
                    let mut x = if self.do_rescale {
                        (v as f64 * self.rescale_factor) as f32
                    } else {
                        v as f32
                    };
                    if self.do_normalize {
                        x = (x - mean) / std;
                    }
                    *slot = x;
                }
                t
            })
            .collect();
        let plane = img.width * img.height;
        let mut data = vec![0f32; 3 * plane];
        for (i, px) in img.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                data[c * plane + i] = lut[c][px[c] as usize];
            }
        }
        PixelValues {
            height: img.height,
            width: img.width,
            data,
        }
    }

    /// The whole processor on one RGB image.
    pub fn preprocess(&self, img: &RgbImage) -> Result<PixelValues> {
        Ok(self.to_pixel_values(&self.resize_and_crop(img)?))
    }
}

/// Output size of `center_crop` (smaller than the crop when padding an odd difference, as transformers does).
fn crop_output_size(h: usize, w: usize, crop: (usize, usize)) -> (usize, usize) {
    let (rows, _) = crop_range(h, crop.0);
    let (cols, _) = crop_range(w, crop.1);
    (rows.len(), cols.len())
}

/// For one axis of `center_crop`: the output index range within the zero-padded axis, and the padding offset
/// (where the original data starts in the padded axis).
fn crop_range(orig: usize, crop: usize) -> (std::ops::Range<usize>, usize) {
    let (orig_i, crop_i) = (orig as i64, crop as i64);
    let top = (orig_i - crop_i).div_euclid(2);
    let bottom = top + crop_i;
    if top >= 0 && bottom <= orig_i {
        return (top as usize..bottom as usize, 0);
    }
    let new = crop_i.max(orig_i);
    let pad = (new - orig_i).div_euclid(2);
    let start = (top + pad).max(0);
    let end = (bottom + pad).min(new);
    (start as usize..end.max(start) as usize, pad as usize)
}

/// transformers' `center_crop` on an HWC uint8 image (zero padding when the image is smaller than the crop).
pub fn center_crop(img: &RgbImage, crop: (usize, usize)) -> RgbImage {
    let (rows, row_pad) = crop_range(img.height, crop.0);
    let (cols, col_pad) = crop_range(img.width, crop.1);
    let (h, w) = (rows.len(), cols.len());
    let mut data = vec![0u8; h * w * 3];
    for (oy, py) in rows.enumerate() {
        // py indexes the padded axis; the source row is py - row_pad when inside the original
        let Some(sy) = py.checked_sub(row_pad).filter(|&y| y < img.height) else {
            continue;
        };
        for (ox, px) in cols.clone().enumerate() {
            let Some(sx) = px.checked_sub(col_pad).filter(|&x| x < img.width) else {
                continue;
            };
            let s = (sy * img.width + sx) * 3;
            let d = (oy * w + ox) * 3;
            data[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

/// transformers' `get_size_dict`: an integer is a shortest edge (`default_to_square = false`) or a square, a
/// list is (height, width), a dict has `shortest_edge` or `height` + `width`.
fn size_dict(v: &Value, int_is_shortest_edge: bool, path: &Path, field: &str) -> Result<ResizeTo> {
    let err = |msg: String| Error::config(path, field, msg);
    let as_size = |x: &Value, what: &str| -> Result<usize> {
        x.as_u64()
            .filter(|&n| n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| err(format!("`{what}` must be a positive integer, found {x}")))
    };
    match v {
        Value::Number(_) => {
            let s = as_size(v, field)?;
            Ok(if int_is_shortest_edge {
                ResizeTo::ShortestEdge(s)
            } else {
                ResizeTo::Exact {
                    height: s,
                    width: s,
                }
            })
        }
        Value::Array(a) if a.len() == 2 => Ok(ResizeTo::Exact {
            height: as_size(&a[0], "height")?,
            width: as_size(&a[1], "width")?,
        }),
        Value::Array(a) if a.len() == 1 => size_dict(&a[0], int_is_shortest_edge, path, field),
        Value::Object(m) => {
            if let Some(s) = m.get("shortest_edge") {
                Ok(ResizeTo::ShortestEdge(as_size(s, "shortest_edge")?))
            } else if let (Some(h), Some(w)) = (m.get("height"), m.get("width")) {
                Ok(ResizeTo::Exact {
                    height: as_size(h, "height")?,
                    width: as_size(w, "width")?,
                })
            } else {
                Err(err(format!(
                    "expected {{\"shortest_edge\": n}} or {{\"height\": h, \"width\": w}}, found {v}"
                )))
            }
        }
        _ => Err(err(format!(
            "expected an integer, [height, width] or a size dict, found {v}"
        ))),
    }
}

/// A mean/std field: three numbers, or one number for all channels.
fn triple(cfg: &JsonConfig, field: &str, default: [f64; 3]) -> Result<[f64; 3]> {
    let Some(v) = cfg.get(field) else {
        return Ok(default);
    };
    let bad = || {
        Error::config(
            &cfg.path,
            field,
            format!("expected a number or a list of 3 numbers, found {v}"),
        )
    };
    match v {
        Value::Number(n) => {
            let x = n.as_f64().ok_or_else(bad)?;
            Ok([x; 3])
        }
        Value::Array(a) if a.len() == 3 => {
            let mut out = [0.0; 3];
            for (o, x) in out.iter_mut().zip(a) {
                *o = x.as_f64().ok_or_else(bad)?;
            }
            Ok(out)
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> Result<ImageProcessorConfig> {
        ImageProcessorConfig::from_json(&JsonConfig::from_str(
            json,
            Path::new("preprocessor_config.json"),
        )?)
    }

    #[test]
    fn shortest_edge_sizes_follow_python_int_division() {
        let p = ImageProcessorConfig::clip_default();
        assert_eq!(p.resize_output_size(451, 300), (224, 336)); // int(224 * 451 / 300) = int(336.74)
        assert_eq!(p.resize_output_size(225, 300), (298, 224)); // int(298.67)
        assert_eq!(p.resize_output_size(512, 512), (224, 224));
        assert_eq!(p.resize_output_size(80, 300), (840, 224));
    }

    #[test]
    fn legacy_integer_sizes() {
        let p = cfg(r#"{"feature_extractor_type": "CLIPFeatureExtractor", "size": 224, "crop_size": 224, "resample": 3}"#)
            .unwrap();
        assert_eq!(p, ImageProcessorConfig::clip_default());
        let v = cfg(
            r#"{"feature_extractor_type": "ViTFeatureExtractor", "size": 224, "resample": 2,
                        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}"#,
        )
        .unwrap();
        assert_eq!(v, ImageProcessorConfig::dino_v1_default());
    }

    #[test]
    fn vit_defaults_are_imagenet_standard() {
        let v = cfg(r#"{"image_processor_type": "ViTImageProcessor"}"#).unwrap();
        assert_eq!(v.image_mean, [0.5; 3]);
        assert_eq!(v.resample, Filter::Bilinear);
        assert!(!v.do_center_crop);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = cfg(r#"{"image_processor_type": "SiglipImageProcessor"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("preprocessor_config.json") && e.contains("image_processor_type"),
            "{e}"
        );
        let e = cfg(r#"{"image_processor_type": "CLIPImageProcessor", "resample": 0}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`resample`") && e.contains("NEAREST"), "{e}");
        let e =
            cfg(r#"{"image_processor_type": "ViTImageProcessor", "size": {"shortest_edge": 3}}"#)
                .unwrap_err()
                .to_string();
        assert!(e.contains("`size`"), "{e}");
        let e = cfg(r#"{"image_processor_type": "CLIPImageProcessor", "image_mean": [1, 2]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`image_mean`"), "{e}");
    }

    #[test]
    fn center_crop_pads_like_transformers() {
        // checked against transformers.image_transforms.center_crop
        let img = RgbImage::from_raw(
            2,
            2,
            [1u8, 2, 3, 4].iter().flat_map(|&v| [v, v, v]).collect(),
        )
        .unwrap();
        let out = center_crop(&img, (4, 4));
        assert_eq!((out.height, out.width), (4, 4));
        let red: Vec<u8> = out.data.chunks(3).map(|p| p[0]).collect();
        assert_eq!(red, vec![0, 0, 0, 0, 0, 1, 2, 0, 0, 3, 4, 0, 0, 0, 0, 0]);
        // an odd difference in the padded case gives one row less than the crop (transformers' quirk)
        assert_eq!(crop_output_size(1, 3, (4, 3)), (3, 3));
        assert_eq!(crop_output_size(1, 3, (2, 2)), (1, 2));
    }

    #[test]
    fn normalisation_matches_numpy_f32_order() {
        let p = ImageProcessorConfig::clip_default();
        let img = RgbImage::from_raw(1, 1, vec![0, 128, 255]).unwrap();
        let v = p.to_pixel_values(&img);
        let expect = |u: u8, c: usize| {
            let x = (u as f64 * (1.0 / 255.0)) as f32;
            (x - OPENAI_CLIP_MEAN[c] as f32) / OPENAI_CLIP_STD[c] as f32
        };
        assert_eq!(v.data, vec![expect(0, 0), expect(128, 1), expect(255, 2)]);
    }
}
