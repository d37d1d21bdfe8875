//! Built-in image statistics, computed from the PNG alone: `mean_luma` (mean Rec. 601 luma in [0, 1])
//! and `rms_contrast` (standard deviation of the luma). Cheap sanity scores (a black, flat or saturated
//! image shows at once) that let a run produce tables without any metric model.

use super::error::{HarnessError, HarnessResult};
use super::eval::{EvalItem, Evaluator, Score};

/// The pixel-statistics evaluator.
pub struct PixelStats {
    metrics: Vec<String>,
}

impl PixelStats {
    /// The metric names it computes.
    pub const METRICS: [&'static str; 2] = ["mean_luma", "rms_contrast"];

    /// Computes `metrics` (a subset of [`Self::METRICS`]).
    pub fn new(metrics: Vec<String>) -> Self {
        Self { metrics }
    }
}

/// Mean and standard deviation of the Rec. 601 luma of an RGB image, in [0, 1].
pub fn luma_stats(img: &image::RgbImage) -> (f64, f64) {
    let n = (img.width() as f64) * (img.height() as f64);
    if n == 0.0 {
        return (0.0, 0.0);
    }
    let (mut s, mut s2) = (0.0f64, 0.0f64);
    for p in img.pixels() {
        let y = (0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64) / 255.0;
        s += y;
        s2 += y * y;
    }
    let mean = s / n;
    (mean, (s2 / n - mean * mean).max(0.0).sqrt())
}

impl Evaluator for PixelStats {
    fn id(&self) -> String {
        "pixel-stats-v1".into()
    }

    fn score(&mut self, items: &[EvalItem<'_>]) -> HarnessResult<Vec<Vec<Score>>> {
        items
            .iter()
            .map(|it| {
                let img = image::open(&it.image)
                    .map_err(|e| HarnessError::RunDir {
                        path: it.image.clone(),
                        msg: format!("cannot read the image: {e}"),
                    })?
                    .to_rgb8();
                let (mean, std) = luma_stats(&img);
                Ok(self
                    .metrics
                    .iter()
                    .filter_map(|m| {
                        let value = match m.as_str() {
                            "mean_luma" => mean,
                            "rms_contrast" => std,
                            _ => return None,
                        };
                        Some(Score {
                            metric: m.clone(),
                            concept: None,
                            value,
                            model: String::new(),
                        })
                    })
                    .collect())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::luma_stats;

    #[test]
    fn luma_of_known_images() {
        let black = image::RgbImage::new(4, 4);
        assert_eq!(luma_stats(&black), (0.0, 0.0));
        let mut half = image::RgbImage::new(2, 1);
        half.put_pixel(1, 0, image::Rgb([255, 255, 255]));
        let (m, s) = luma_stats(&half);
        assert!((m - 0.5).abs() < 1e-12 && (s - 0.5).abs() < 1e-9, "{m} {s}");
    }
}
