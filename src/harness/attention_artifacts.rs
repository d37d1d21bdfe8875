//! CLoRA's attention maps and masks over the steps of one image, saved beside it (`save_attention = true`):
//! `attention.safetensors` with every step's aggregated maps and masks, the latent it received and what the latent
//! update moved it by (`tools/toyworld/latent_shift.py` reads them), and two labelled PNG grids over the
//! image, branches (rows) x steps (columns): `masks.png` (the image dimmed outside each branch's mask) and
//! `attention.png` (each LoRA branch's mask-token attention as a heat map).

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::error::{HarnessError, HarnessResult};
use crate::latent_io::write_f32_safetensors;
use crate::methods::clora::layout::LayoutPass;
use crate::methods::clora::method::CloraStepRecord;
use crate::report::font::FAMILY;
use crate::report::plots::render_on;

/// The sidecar `details` key listing the files [`write`] saved for an image (present, possibly empty,
/// whenever the job asked for them with `save_attention`).
pub const DETAILS_KEY: &str = "attention_files";

/// At most this many step columns in the PNG grids (first and last step always shown).
const MAX_COLUMNS: usize = 8;
const LEFT: u32 = 110;
const TOP: u32 = 56;
const GAP: u32 = 4;

/// What one CLoRA image's attention record needs.
pub struct AttentionRecord<'a> {
    pub records: &'a [CloraStepRecord],
    /// `mask_indices[k]` per branch (base branch first).
    pub mask_tokens: &'a [Vec<usize>],
    /// Map side in cells (h, w).
    pub map_hw: (usize, usize),
    /// Branch names, base first.
    pub branch_names: Vec<String>,
    /// The layout pass (`mask_mode = "layout"`): its maps and final latent are saved too.
    pub layout: Option<&'a LayoutPass>,
}

/// Step columns shown: evenly spaced, first and last included.
fn columns(steps: usize) -> Vec<usize> {
    if steps <= MAX_COLUMNS {
        return (0..steps).collect();
    }
    let mut c: Vec<usize> = (0..MAX_COLUMNS)
        .map(|j| (j * (steps - 1) + (MAX_COLUMNS - 1) / 2) / (MAX_COLUMNS - 1))
        .collect();
    c.dedup();
    c
}

/// Writes the artifacts into `dir`; returns the files written.
pub fn write(
    dir: &Path,
    rec: &AttentionRecord<'_>,
    image: &image::RgbImage,
) -> HarnessResult<Vec<PathBuf>> {
    let (h, w) = rec.map_hw;
    let q = h * w;
    let s = rec.records.len();
    let n = rec.mask_tokens.len();
    if s == 0 || n == 0 || q == 0 {
        return Ok(Vec::new());
    }
    let tokens = rec.records[0].maps.len() / (n * q).max(1);
    let [lc, lh, lw] = rec.records[0].latent_chw;
    // attention.safetensors: maps [S, N, h*w, 77], masks [S, N, h, w], timesteps [S], and the latent each
    // step received and what its updates moved it by, latent_in / latent_shift [S, c, lh, lw]
    let mut maps = Vec::with_capacity(s * n * q * tokens);
    let mut masks = Vec::with_capacity(s * n * q);
    let mut ts = Vec::with_capacity(s);
    let mut latent_in = Vec::with_capacity(s * lc * lh * lw);
    let mut latent_shift = Vec::with_capacity(s * lc * lh * lw);
    for r in rec.records {
        maps.extend_from_slice(&r.maps);
        for m in &r.masks {
            masks.extend_from_slice(m);
        }
        ts.push(r.t as f32);
        latent_in.extend_from_slice(&r.latent_in);
        latent_shift.extend_from_slice(&r.latent_shift);
    }
    let st = dir.join("attention.safetensors");
    let mut tensors: Vec<(&str, Vec<usize>, &[f32])> = vec![
        ("maps", vec![s, n, q, tokens], &maps),
        ("masks", vec![s, n, h, w], &masks),
        ("timesteps", vec![s], &ts),
        ("latent_in", vec![s, lc, lh, lw], &latent_in),
        ("latent_shift", vec![s, lc, lh, lw], &latent_shift),
    ];
    // the layout pass's base-branch maps [S', h*w, 77] and final latent [c, lh, lw]
    if let Some(l) = rec.layout {
        let per_step = q * l.tokens;
        tensors.push((
            "layout_maps",
            vec![l.step_maps.len() / per_step.max(1), q, l.tokens],
            &l.step_maps,
        ));
        tensors.push(("layout_latent", l.latent_chw.to_vec(), &l.latent));
    }
    write_f32_safetensors(&st, &tensors, None)?;

    let cols = columns(s);
    let cell = image.width().clamp(96, 192);
    let small = image::imageops::resize(
        image,
        cell,
        cell * image.height() / image.width().max(1),
        image::imageops::FilterType::Triangle,
    );
    let ch = small.height();
    let up = |m: &[f32], x: u32, y: u32| -> f32 {
        let mx = (x as usize * w / cell as usize).min(w - 1);
        let my = (y as usize * h / ch as usize).min(h - 1);
        m[my * w + mx]
    };
    let grid = |title: &str, file: &str, pixel: &dyn Fn(usize, usize, u32, u32) -> [u8; 3]| {
        let width = LEFT + cols.len() as u32 * (cell + GAP) + GAP;
        let height = TOP + n as u32 * (ch + GAP) + GAP + 20;
        let mut canvas = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
        for k in 0..n {
            for (j, &step) in cols.iter().enumerate() {
                let x0 = LEFT + j as u32 * (cell + GAP);
                let y0 = TOP + k as u32 * (ch + GAP);
                for y in 0..ch {
                    for x in 0..cell {
                        canvas.put_pixel(x0 + x, y0 + y, image::Rgb(pixel(k, step, x, y)));
                    }
                }
            }
        }
        let path = dir.join(file);
        render_on(&path, canvas, |root| {
            let e = |e: DrawingAreaErrorKind<_>| e.to_string();
            root.draw(&Text::new(
                title.to_string(),
                (8, 8),
                (FAMILY, 18).into_font(),
            ))
            .map_err(e)?;
            let label = TextStyle::from((FAMILY, 13).into_font());
            for (j, &step) in cols.iter().enumerate() {
                let x = (LEFT + j as u32 * (cell + GAP)) as i32;
                root.draw(&Text::new(
                    format!("step {step} (t={})", rec.records[step].t.round()),
                    (x + 2, TOP as i32 - 18),
                    label.clone(),
                ))
                .map_err(e)?;
            }
            for (k, name) in rec.branch_names.iter().enumerate().take(n) {
                let y = (TOP + k as u32 * (ch + GAP) + ch / 2) as i32;
                root.draw(&Text::new(name.clone(), (8, y), label.clone()))
                    .map_err(e)?;
            }
            Ok(())
        })?;
        Ok::<PathBuf, HarnessError>(path)
    };
    let masks_png = grid(
        "CLoRA masks over the steps (image dimmed outside each branch's mask)",
        "masks.png",
        &|k, step, x, y| {
            let m = &rec.records[step].masks[k];
            let keep = if up(m, x, y) > 0.5 { 1.0 } else { 0.25 };
            let p = small.get_pixel(x, y).0;
            p.map(|c| (c as f32 * keep).round() as u8)
        },
    )?;
    // heat of each branch's mask tokens, min-max normalised per cell (base branch: its mask)
    let heat: Vec<Vec<Vec<f32>>> = rec
        .records
        .iter()
        .map(|r| {
            (0..n)
                .map(|k| {
                    let toks = &rec.mask_tokens[k];
                    if toks.is_empty() {
                        return r.masks[k].clone();
                    }
                    let v: Vec<f32> = (0..q)
                        .map(|i| {
                            toks.iter()
                                .map(|&t| r.maps[(k * q + i) * tokens + t])
                                .sum::<f32>()
                                / toks.len() as f32
                        })
                        .collect();
                    let (lo, hi) = v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |a, &x| {
                        (a.0.min(x), a.1.max(x))
                    });
                    v.iter().map(|x| (x - lo) / (hi - lo).max(1e-12)).collect()
                })
                .collect()
        })
        .collect();
    let attention_png = grid(
        "CLoRA attention of each branch's concept tokens over the steps (red: high)",
        "attention.png",
        &|k, step, x, y| {
            let a = up(&heat[step][k], x, y).clamp(0.0, 1.0);
            let p = small.get_pixel(x, y).0;
            let g = (p[0] as f32 * 0.3 + p[1] as f32 * 0.59 + p[2] as f32 * 0.11) * 0.5;
            [
                (g + a * 127.0).round() as u8,
                (g * (1.0 - a) + a * 40.0).round() as u8,
                (g * (1.0 - a)).round() as u8,
            ]
        },
    )?;
    Ok(vec![st, masks_png, attention_png])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_include_the_first_and_last_step() {
        assert_eq!(columns(3), vec![0, 1, 2]);
        let c = columns(50);
        assert_eq!(c.len(), MAX_COLUMNS);
        assert_eq!((c[0], *c.last().unwrap()), (0, 49));
    }
}
