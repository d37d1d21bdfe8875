//! Plots (plotters, bitmap, embedded font): a metric against each swept parameter per method, method
//! comparison bars with confidence intervals, and the trade-off between two metrics.

use std::io::Cursor;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::data::ReportData;
use super::font::{self, FAMILY};
use super::stats::{summarize, Summary};
use super::tables::{axis_summaries, file_safe};
use crate::config::ParamValue;
use crate::harness::{HarnessError, HarnessResult};
use crate::latent_io::write_atomic;

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn e<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Draws with `draw` on a white `w x h` canvas and writes it as PNG to `path`.
pub fn render(
    path: &Path,
    w: u32,
    h: u32,
    draw: impl FnOnce(&Area) -> Result<(), String>,
) -> HarnessResult<()> {
    render_on(
        path,
        image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255])),
        draw,
    )
}

/// Draws with `draw` over `base` and writes the result as PNG to `path`.
pub fn render_on(
    path: &Path,
    base: image::RgbImage,
    draw: impl FnOnce(&Area) -> Result<(), String>,
) -> HarnessResult<()> {
    font::ensure().map_err(|m| HarnessError::draw(path, m))?;
    let (w, h) = base.dimensions();
    let mut buf = base.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root).map_err(|m| HarnessError::draw(path, m))?;
        root.present().map_err(|m| HarnessError::draw(path, m))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| HarnessError::draw(path, "buffer size"))?;
    let mut png = Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|m| HarnessError::draw(path, m))?;
    write_atomic(path, png.get_ref()).map_err(HarnessError::from)
}

/// A colour per series.
pub fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

/// `[lo, hi]` padded by 8% (and widened when flat).
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    let span = hi - lo;
    let pad = if span > 1e-12 {
        span * 0.08
    } else {
        lo.abs().max(1.0) * 0.05
    };
    (lo - pad, hi + pad)
}

/// Truncates `s` to `n` characters with an ellipsis.
fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!(
            "{}…",
            s.chars().take(n.saturating_sub(1)).collect::<String>()
        )
    }
}

const NOTE: &str = "mean and confidence interval over prompts x seeds x samples";

/// `metric` against parameter `axis`, one line per method that sweeps it. Returns the file written.
pub fn sweep_plot(
    data: &ReportData,
    axis: &str,
    metric: &str,
    confidence: f64,
    dir: &Path,
) -> HarnessResult<Option<String>> {
    let methods: Vec<String> = data
        .axes()
        .into_iter()
        .filter(|(_, a)| a.iter().any(|x| x == axis))
        .map(|(m, _)| m)
        .collect();
    // (method, [(value, summary)])
    let mut series: Vec<(String, Vec<(ParamValue, Summary)>)> = Vec::new();
    for m in &methods {
        let pts: Vec<(ParamValue, Summary)> = axis_summaries(data, m, axis, confidence)
            .into_iter()
            .filter(|(_, mm, _)| mm == metric)
            .map(|(v, _, s)| (v, s))
            .collect();
        if !pts.is_empty() {
            series.push((m.clone(), pts));
        }
    }
    if series.is_empty() {
        return Ok(None);
    }
    // x positions: numbers as they are, anything else by category
    let all: Vec<ParamValue> = {
        let mut v: Vec<ParamValue> = Vec::new();
        for (_, pts) in &series {
            for (x, _) in pts {
                if !v.contains(x) {
                    v.push(x.clone());
                }
            }
        }
        v
    };
    let numeric = all
        .iter()
        .all(|v| matches!(v, ParamValue::Int(_) | ParamValue::Float(_)));
    let boolean = all.iter().all(|v| matches!(v, ParamValue::Bool(_)));
    let pos = |v: &ParamValue| -> f64 {
        if numeric || boolean {
            v.as_f64().unwrap_or(0.0)
        } else {
            all.iter().position(|x| x == v).unwrap_or(0) as f64
        }
    };
    let xs: Vec<f64> = all.iter().map(pos).collect();
    let (x0, x1) = if numeric {
        padded(
            xs.iter().cloned().fold(f64::INFINITY, f64::min),
            xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        )
    } else if boolean {
        (-0.5, 1.5)
    } else {
        (-0.5, all.len() as f64 - 0.5)
    };
    let lo = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, s)| s.lo))
        .fold(f64::INFINITY, f64::min);
    let hi = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, s)| s.hi))
        .fold(f64::NEG_INFINITY, f64::max);
    let (y0, y1) = padded(lo, hi);
    // room at the top for the legend
    let y1 = y1 + (y1 - y0) * (0.06 * series.len() as f64 + 0.04);
    let labels: Vec<String> = all.iter().map(|v| v.to_string()).collect();
    let file = format!("sweep_{}_{}.png", file_safe(axis), file_safe(metric));
    let title = format!("{metric} vs {axis}");
    let ns = series.len();
    render(&dir.join(&file), 900, 560, |root| {
        let (main, foot) = root.split_vertically(530);
        let mut chart = ChartBuilder::on(&main)
            .caption(&title, (FAMILY, 24))
            .margin(18)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(e)?;
        let fmt_x = |x: &f64| -> String {
            if numeric {
                super::tables::tick(*x)
            } else {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                    if boolean {
                        if i == 0.0 {
                            "false".into()
                        } else {
                            "true".into()
                        }
                    } else {
                        shorten(&labels[i as usize], 18)
                    }
                } else {
                    String::new()
                }
            }
        };
        chart
            .configure_mesh()
            .x_desc(axis)
            .y_desc(metric)
            .x_labels(if numeric {
                8
            } else {
                labels.len().max(2) * 2 + 1
            })
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&|y| super::tables::tick(*y))
            .label_style((FAMILY, 15))
            .axis_desc_style((FAMILY, 17))
            .max_light_lines(2)
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(e)?;
        let dodge = (x1 - x0) * 0.012;
        for (si, (name, pts)) in series.iter().enumerate() {
            let c = color(si);
            let off = (si as f64 - (ns as f64 - 1.0) / 2.0) * dodge;
            let mut line: Vec<(f64, f64)> =
                pts.iter().map(|(v, s)| (pos(v) + off, s.mean)).collect();
            line.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))
                .map_err(e)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(3))
                });
            chart
                .draw_series(
                    line.iter()
                        .map(|&(x, y)| Circle::new((x, y), 5, c.filled())),
                )
                .map_err(e)?;
            let cap = (x1 - x0) * 0.008;
            for (v, s) in pts {
                let x = pos(v) + off;
                for seg in [
                    vec![(x, s.lo), (x, s.hi)],
                    vec![(x - cap, s.lo), (x + cap, s.lo)],
                    vec![(x - cap, s.hi), (x + cap, s.hi)],
                ] {
                    chart
                        .draw_series(std::iter::once(PathElement::new(seg, c.stroke_width(2))))
                        .map_err(e)?;
                }
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 15))
            .draw()
            .map_err(e)?;
        foot.draw(&Text::new(
            format!(
                "{NOTE} ({:.0}% CI); other parameters pooled",
                confidence * 100.0
            ),
            (18, 8),
            (FAMILY, 13).into_font().color(&RGBColor(90, 90, 90)),
        ))
        .map_err(e)?;
        Ok(())
    })?;
    Ok(Some(file))
}

/// Horizontal bars of `metric` per method variant, with confidence intervals. Returns the file written.
pub fn bar_plot(
    data: &ReportData,
    metric: &str,
    confidence: f64,
    dir: &Path,
) -> HarnessResult<Option<String>> {
    let bars: Vec<(String, String, Summary)> = data
        .variants
        .iter()
        .filter_map(|v| {
            summarize(&data.values(metric, |r| r.variant == v.label), confidence)
                .map(|s| (v.label.clone(), v.method.clone(), s))
        })
        .collect();
    if bars.is_empty() {
        return Ok(None);
    }
    let n = bars.len();
    let lo = bars.iter().map(|b| b.2.lo).fold(0.0f64, f64::min);
    let hi = bars.iter().map(|b| b.2.hi).fold(0.0f64, f64::max);
    let (x0, x1) = padded(lo, hi);
    let x0 = if lo >= 0.0 { 0.0 } else { x0 };
    let max_label = bars
        .iter()
        .map(|b| b.0.chars().count())
        .max()
        .unwrap_or(4)
        .min(48);
    let label_w = (max_label as u32 * 8 + 20).clamp(90, 420);
    let h = 130 + 34 * n as u32;
    let file = format!("methods_{}.png", file_safe(metric));
    let title = format!("{metric} by method");
    let methods = data.methods.clone();
    render(&dir.join(&file), 700 + label_w, h, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&title, (FAMILY, 24))
            .margin(18)
            .x_label_area_size(55)
            .y_label_area_size(label_w)
            .build_cartesian_2d(x0..x1, -0.5..(n as f64 - 0.5))
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc(format!("{metric} ({NOTE}, {:.0}% CI)", confidence * 100.0))
            .x_label_formatter(&|x| super::tables::tick(*x))
            .label_style((FAMILY, 15))
            .axis_desc_style((FAMILY, 15))
            .max_light_lines(2)
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(e)?;
        for (i, (label, method, s)) in bars.iter().enumerate() {
            let y = (n - 1 - i) as f64; // first variant on top
            let c = color(methods.iter().position(|m| m == method).unwrap_or(0));
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [
                        (x0.max(0.0).min(s.mean), y - 0.32),
                        (s.mean.max(0.0).max(x0), y + 0.32),
                    ],
                    c.mix(0.75).filled(),
                )))
                .map_err(e)?;
            if lo < 0.0 {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [
                            (0.0f64.min(s.mean), y - 0.32),
                            (0.0f64.max(s.mean), y + 0.32),
                        ],
                        c.mix(0.75).filled(),
                    )))
                    .map_err(e)?;
            }
            for seg in [
                vec![(s.lo, y), (s.hi, y)],
                vec![(s.lo, y - 0.15), (s.lo, y + 0.15)],
                vec![(s.hi, y - 0.15), (s.hi, y + 0.15)],
            ] {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        seg,
                        BLACK.stroke_width(2),
                    )))
                    .map_err(e)?;
            }
            let (px, py) = chart.backend_coord(&(x0, y));
            root.draw(&Text::new(
                shorten(label, 48),
                (px - 8, py),
                TextStyle::from((FAMILY, 15).into_font()).pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(e)?;
        }
        Ok(())
    })?;
    Ok(Some(file))
}

/// The trade-off between metrics `mx` and `my`: one point per variant with CIs in both directions.
pub fn tradeoff_plot(
    data: &ReportData,
    mx: &str,
    my: &str,
    confidence: f64,
    dir: &Path,
) -> HarnessResult<Option<String>> {
    let pts: Vec<(String, String, Summary, Summary)> = data
        .variants
        .iter()
        .filter_map(|v| {
            let sx = summarize(&data.values(mx, |r| r.variant == v.label), confidence)?;
            let sy = summarize(&data.values(my, |r| r.variant == v.label), confidence)?;
            Some((v.label.clone(), v.method.clone(), sx, sy))
        })
        .collect();
    if pts.is_empty() {
        return Ok(None);
    }
    let (x0, x1) = padded(
        pts.iter().map(|p| p.2.lo).fold(f64::INFINITY, f64::min),
        pts.iter().map(|p| p.2.hi).fold(f64::NEG_INFINITY, f64::max),
    );
    let (y0, y1) = padded(
        pts.iter().map(|p| p.3.lo).fold(f64::INFINITY, f64::min),
        pts.iter().map(|p| p.3.hi).fold(f64::NEG_INFINITY, f64::max),
    );
    let file = format!("tradeoff_{}_{}.png", file_safe(mx), file_safe(my));
    let title = format!("{my} vs {mx} (each point a method variant)");
    let methods = data.methods.clone();
    render(&dir.join(&file), 900, 640, |root| {
        let (main, foot) = root.split_vertically(610);
        let mut chart = ChartBuilder::on(&main)
            .caption(&title, (FAMILY, 24))
            .margin(18)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(mx)
            .y_desc(my)
            .x_label_formatter(&|x| super::tables::tick(*x))
            .y_label_formatter(&|y| super::tables::tick(*y))
            .label_style((FAMILY, 15))
            .axis_desc_style((FAMILY, 17))
            .max_light_lines(2)
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(e)?;
        for (mi, m) in methods.iter().enumerate() {
            let c = color(mi);
            let mine: Vec<&(String, String, Summary, Summary)> =
                pts.iter().filter(|p| &p.1 == m).collect();
            if mine.is_empty() {
                continue;
            }
            for p in &mine {
                let (x, y) = (p.2.mean, p.3.mean);
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(p.2.lo, y), (p.2.hi, y)],
                        c.stroke_width(1),
                    )))
                    .map_err(e)?;
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x, p.3.lo), (x, p.3.hi)],
                        c.stroke_width(1),
                    )))
                    .map_err(e)?;
            }
            chart
                .draw_series(
                    mine.iter()
                        .map(|p| Circle::new((p.2.mean, p.3.mean), 6, c.filled())),
                )
                .map_err(e)?
                .label(m.as_str())
                .legend(move |(x, y)| Circle::new((x + 10, y), 6, c.filled()));
            if mine.len() > 1 {
                // several variants of one method: name each point by its parameters
                for p in &mine {
                    let short =
                        p.0.strip_prefix(m.as_str())
                            .unwrap_or(&p.0)
                            .trim_matches(|ch| ch == '[' || ch == ']');
                    // beside the point, not over it
                    let label = EmptyElement::at((p.2.mean, p.3.mean))
                        + Text::new(
                            shorten(short, 40),
                            (9, -14),
                            (FAMILY, 12).into_font().color(&RGBColor(50, 50, 50)),
                        );
                    chart.draw_series(std::iter::once(label)).map_err(e)?;
                }
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 15))
            .draw()
            .map_err(e)?;
        foot.draw(&Text::new(
            format!("{NOTE} ({:.0}% CI in both directions)", confidence * 100.0),
            (18, 6),
            (FAMILY, 13).into_font().color(&RGBColor(90, 90, 90)),
        ))
        .map_err(e)?;
        Ok(())
    })?;
    Ok(Some(file))
}
