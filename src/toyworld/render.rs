//! The renderer: a scene to a 64x64 RGB image, anti-aliased by 4x4 supersampling, with a lightly textured
//! background (a gentle gradient and fine noise, deterministic in the scene's texture seed).

use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::palette::ACCENT;
use super::scene::{Object, Scene, Style, CANVAS};

/// Width of outline strokes in pixels.
pub const OUTLINE_WIDTH: f32 = 2.4;

/// Supersampling factor per axis.
const SS: usize = 4;

/// Renders a scene.
pub fn render(scene: &Scene) -> RgbImage {
    let mut rng = ChaCha8Rng::seed_from_u64(scene.texture_seed);
    let bg = scene.background.rgb();
    // Gradient: up to +-5 levels across the image in a random direction; noise: +-3 levels per pixel.
    let angle: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    let amp: f32 = rng.random_range(0.0..5.0);
    let (gx, gy) = (angle.cos() * amp, angle.sin() * amp);
    let mut img = RgbImage::new(CANVAS as u32, CANVAS as u32);
    let half = CANVAS as f32 / 2.0;
    for y in 0..CANVAS {
        for x in 0..CANVAS {
            let shade = gx * (x as f32 - half) / half
                + gy * (y as f32 - half) / half
                + rng.random_range(-3.0..3.0);
            let base = [
                bg[0] as f32 + shade,
                bg[1] as f32 + shade,
                bg[2] as f32 + shade,
            ];
            let mut acc = [0f32; 3];
            for sy in 0..SS {
                for sx in 0..SS {
                    let px = x as f32 + (sx as f32 + 0.5) / SS as f32;
                    let py = y as f32 + (sy as f32 + 0.5) / SS as f32;
                    let c = sample(scene, px, py).unwrap_or(base);
                    for k in 0..3 {
                        acc[k] += c[k];
                    }
                }
            }
            let n = (SS * SS) as f32;
            img.put_pixel(
                x as u32,
                y as u32,
                image::Rgb([
                    (acc[0] / n).round().clamp(0.0, 255.0) as u8,
                    (acc[1] / n).round().clamp(0.0, 255.0) as u8,
                    (acc[2] / n).round().clamp(0.0, 255.0) as u8,
                ]),
            );
        }
    }
    img
}

/// The colour at a point, `None` for the background.
fn sample(scene: &Scene, px: f32, py: f32) -> Option<[f32; 3]> {
    scene
        .objects
        .iter()
        .find_map(|o| object_colour(o, scene.style, px, py))
}

fn object_colour(o: &Object, style: Style, px: f32, py: f32) -> Option<[f32; 3]> {
    let (dx, dy) = (px - o.cx, py - o.cy);
    let d = o.shape.sdf(dx, dy, o.r);
    if d > 0.0 {
        return None;
    }
    let rgb = match style {
        Style::Outline if d < -OUTLINE_WIDTH => return None,
        Style::Outline => o.colour.rgb(),
        Style::Solid if o.pattern.is_accent(o.shape, dx, dy, o.r) => ACCENT,
        Style::Solid => o.colour.rgb(),
    };
    Some([rgb[0] as f32, rgb[1] as f32, rgb[2] as f32])
}
