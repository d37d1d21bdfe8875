//! Image grids: prompts (rows) x method variants (columns) at one seed, with readable labels.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::data::ReportData;
use super::font::FAMILY;
use super::plots::render_on;
use super::tables::file_safe;
use crate::harness::manifest::DONE;
use crate::harness::{HarnessResult, RunDir};

const LEFT: u32 = 240;
const GAP: u32 = 6;
const TITLE_H: u32 = 44;
const LINE_H: u32 = 17;

/// Greedy word wrap of `text` to lines no wider than `width` pixels at `size` px.
fn wrap(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    text: &str,
    size: u32,
    width: u32,
) -> Vec<String> {
    let style = TextStyle::from((FAMILY, size).into_font());
    let fits = |s: &str| {
        area.estimate_text_size(s, &style)
            .map(|(w, _)| w <= width)
            .unwrap_or(true)
    };
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ') {
        let cand = if cur.is_empty() {
            word.to_string()
        } else {
            format!("{cur} {word}")
        };
        if fits(&cand) {
            cur = cand;
            continue;
        }
        if !cur.is_empty() {
            lines.push(std::mem::take(&mut cur));
        }
        // a word wider than the line is cut
        let mut piece = String::new();
        for ch in word.chars() {
            let c2 = format!("{piece}{ch}");
            if !fits(&c2) && !piece.is_empty() {
                lines.push(std::mem::take(&mut piece));
            }
            piece.push(ch);
        }
        cur = piece;
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// Writes one grid per prompt set at `seed` (sample 0); returns (prompt set, file) pairs.
pub fn write_grids(
    run: &RunDir,
    data: &ReportData,
    seed: u64,
    dir: &Path,
) -> HarnessResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut sets: Vec<String> = Vec::new();
    for r in &data.rows {
        if !sets.contains(&r.prompt_set) {
            sets.push(r.prompt_set.clone());
        }
    }
    for set in sets {
        let rows: Vec<_> = data
            .rows
            .iter()
            .filter(|r| r.prompt_set == set && r.seed == seed && r.sample == 0)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let mut prompts: Vec<(u64, String)> = Vec::new();
        for r in &rows {
            if !prompts.iter().any(|p| p.0 == r.prompt_index) {
                prompts.push((r.prompt_index, r.prompt_plain.clone()));
            }
        }
        prompts.sort();
        let variants: Vec<String> = data
            .variants
            .iter()
            .map(|v| v.label.clone())
            .filter(|l| rows.iter().any(|r| &r.variant == l))
            .collect();
        // the images, and their common size
        let mut cells: BTreeMap<(u64, String), Result<image::RgbImage, String>> = BTreeMap::new();
        let mut native = 0u32;
        for r in &rows {
            let cell = match (&r.image, r.status.as_str()) {
                (Some(rel), DONE) => match image::open(run.root.join(rel)) {
                    Ok(i) => {
                        let i = i.to_rgb8();
                        native = native.max(i.width());
                        Ok(i)
                    }
                    Err(e) => Err(format!("unreadable: {e}")),
                },
                (_, s) => Err(s.to_string()),
            };
            cells.insert((r.prompt_index, r.variant.clone()), cell);
        }
        let c = native.clamp(128, 256);
        let ncol = variants.len() as u32;
        let nrow = prompts.len() as u32;
        let title = format!("Prompt set \"{set}\": prompts x methods, seed {seed}, sample 0");
        // about 11 px per character of the 20 px title
        let width = (LEFT + ncol * (c + GAP) + GAP).max(title.chars().count() as u32 * 11 + 24);
        let header_h = LINE_H * 3 + 12;
        let height = TITLE_H + header_h + nrow * (c + GAP) + GAP + 24;
        // compose the images first, then draw the text over the canvas
        let mut canvas = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
        for (ri, (pi, _)) in prompts.iter().enumerate() {
            for (ci, v) in variants.iter().enumerate() {
                let x = LEFT + GAP + ci as u32 * (c + GAP);
                let y = TITLE_H + header_h + ri as u32 * (c + GAP);
                if let Some(Ok(img)) = cells.get(&(*pi, v.clone())) {
                    let filter = if img.width() < c {
                        image::imageops::FilterType::Nearest
                    } else {
                        image::imageops::FilterType::Triangle
                    };
                    let scaled = image::imageops::resize(
                        img,
                        c,
                        c * img.height() / img.width().max(1),
                        filter,
                    );
                    image::imageops::overlay(&mut canvas, &scaled, x as i64, y as i64);
                } else {
                    for yy in y..(y + c).min(height) {
                        for xx in x..(x + c).min(width) {
                            canvas.put_pixel(xx, yy, image::Rgb([225, 225, 225]));
                        }
                    }
                }
            }
        }
        let file = format!("grid_{}_seed{seed}.png", file_safe(&set));
        let path = dir.join(&file);
        render_on(&path, canvas, |root| {
            root.draw(&Text::new(
                title.clone(),
                (GAP as i32 + 4, 12),
                (FAMILY, 20).into_font(),
            ))
            .map_err(|e| e.to_string())?;
            let small = TextStyle::from((FAMILY, 14).into_font());
            for (ci, v) in variants.iter().enumerate() {
                let x = (LEFT + GAP + ci as u32 * (c + GAP)) as i32;
                let lines = wrap(root, v, 14, c - 4);
                let shown = lines.len().min(3);
                for (li, line) in lines.iter().take(3).enumerate() {
                    let text = if li == 2 && lines.len() > 3 {
                        format!("{line}…")
                    } else {
                        line.clone()
                    };
                    let y =
                        (TITLE_H + header_h - 6) as i32 - ((shown - li) as i32 - 1) * LINE_H as i32;
                    root.draw(&Text::new(
                        text,
                        (x + 2, y),
                        small.clone().pos(Pos::new(HPos::Left, VPos::Bottom)),
                    ))
                    .map_err(|e| e.to_string())?;
                }
            }
            for (ri, (pi, text)) in prompts.iter().enumerate() {
                let y0 = (TITLE_H + header_h + ri as u32 * (c + GAP)) as i32;
                let lines = wrap(root, text, 14, LEFT - 16);
                let max_lines = ((c / LINE_H) as usize).max(1);
                for (li, line) in lines.iter().take(max_lines).enumerate() {
                    root.draw(&Text::new(
                        line.clone(),
                        (8, y0 + 4 + li as i32 * LINE_H as i32),
                        small.clone(),
                    ))
                    .map_err(|e| e.to_string())?;
                }
                for (ci, v) in variants.iter().enumerate() {
                    if let Some(Err(why)) = cells.get(&(*pi, v.clone())) {
                        let x = (LEFT + GAP + ci as u32 * (c + GAP) + c / 2) as i32;
                        root.draw(&Text::new(
                            why.clone(),
                            (x, y0 + c as i32 / 2),
                            small.clone().pos(Pos::new(HPos::Center, VPos::Center)),
                        ))
                        .map_err(|e| e.to_string())?;
                    }
                }
            }
            root.draw(&Text::new(
                "grey: no image (failed or pending)".to_string(),
                (8, height as i32 - 20),
                (FAMILY, 12).into_font().color(&RGBColor(100, 100, 100)),
            ))
            .map_err(|e| e.to_string())?;
            Ok(())
        })?;
        out.push((set, file));
    }
    Ok(out)
}
