//! The oracle: a procedural detector that reads an image of this world back into objects (shape, colour,
//! pattern, outline or filled) and a background, and a judge that compares that reading with what a prompt
//! asks for (which objects and concepts are present, whether an attribute landed on the wrong object).
//!
//! Reading: the background is the median of the border pixels; foreground is what differs from it by more
//! than [`FOREGROUND_DIFF`] in some channel; each 4-connected foreground component (holes filled) is one
//! object. Pieces that are no shape and no outline on their own are read again joined through the faint
//! pixels connected to them (more than [`FAINT_FOREGROUND_DIFF`] off; hysteresis) and closed: when that makes
//! an outline of a known shape (a thin stroke that fades for a few pixels), it is one object. Its shape is
//! the template (inscribed circle, box, apex-up triangle) with the best IoU against the filled silhouette; it is an outline when most of its eroded interior is background; its colour is the
//! nearest palette colour to the median of its non-dark pixels; its pattern comes from the dark pixels
//! inside it (a dark loop that encloses lighter pixels: rings; wide dark bands: stripes; compact dark blobs:
//! dots). Accuracy on held-out rendered scenes is measured by `tests/toyworld_oracle.rs` and reported in
//! `docs/toyworld.md`.

use std::collections::VecDeque;

use image::RgbImage;

use super::caption::PromptSpec;
use super::concept::Concept;
use super::palette::{is_dark, Background, Colour, ACCENT, DARK_MAX_CHANNEL};
use super::pattern::Pattern;
use super::scene::{Scene, Style};
use super::shape::ShapeKind;

/// A pixel is foreground when some channel differs from the background estimate by more than this.
pub const FOREGROUND_DIFF: i32 = 45;
/// A pixel that differs by more than this joins the foreground when 4-connected to it through such pixels:
/// the faint stretches of a thin generated line (rendered backgrounds vary by at most 8 levels).
pub const FAINT_FOREGROUND_DIFF: i32 = 25;
/// Components smaller than this (pixels) are noise.
pub const MIN_OBJECT_AREA: usize = 24;
/// Below this IoU with every template, the shape is unknown.
pub const MIN_SHAPE_IOU: f32 = 0.6;
/// Farther than this (RGB distance) from every palette colour, the colour is unknown.
pub const MAX_COLOUR_DISTANCE: f32 = 100.0;
/// A pixel this close (RGB distance) to a palette colour is that colour's body when a component is split.
pub const BODY_COLOUR_DISTANCE: f32 = 60.0;
/// Palette colours farther apart than this (RGB distance) are never the shading of one object: a component
/// with large areas of both is touching objects (red and orange, 115 apart, or blue and purple never split).
pub const SPLIT_COLOUR_DISTANCE: f32 = 150.0;

/// One object as the oracle reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub shape: Option<ShapeKind>,
    pub colour: Option<Colour>,
    /// `None`: dark marks that are no known pattern. Outlines have no pattern (`Some(Plain)`).
    pub pattern: Option<Pattern>,
    pub outline: bool,
    /// Inclusive pixel bounds `(x0, y0, x1, y1)`.
    pub bbox: (usize, usize, usize, usize),
    /// Pixels of the filled silhouette.
    pub area: usize,
}

/// What the oracle reads from an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub background: Background,
    pub objects: Vec<Detection>,
}

impl Reading {
    /// The style of the image: outline when every object is an outline.
    pub fn style(&self) -> Style {
        if !self.objects.is_empty() && self.objects.iter().all(|o| o.outline) {
            Style::Outline
        } else {
            Style::Solid
        }
    }

    /// Whether the reading equals a rendered scene exactly: same background, and the same multiset of
    /// (shape, colour, pattern, outline) objects.
    pub fn matches_scene(&self, scene: &Scene) -> bool {
        if self.background != scene.background || self.objects.len() != scene.objects.len() {
            return false;
        }
        let outline = scene.style == Style::Outline;
        let mut want: Vec<(ShapeKind, Colour, Pattern)> = scene
            .objects
            .iter()
            .map(|o| {
                (
                    o.shape,
                    o.colour,
                    if outline { Pattern::Plain } else { o.pattern },
                )
            })
            .collect();
        for d in &self.objects {
            if d.outline != outline {
                return false;
            }
            let (Some(s), Some(c), Some(p)) = (d.shape, d.colour, d.pattern) else {
                return false;
            };
            match want.iter().position(|w| *w == (s, c, p)) {
                Some(i) => {
                    want.swap_remove(i);
                }
                None => return false,
            }
        }
        want.is_empty()
    }
}

struct Grid {
    w: usize,
    h: usize,
}

impl Grid {
    fn neighbours4(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let (x, y) = (i % self.w, i / self.w);
        let mut out = [usize::MAX; 4];
        if x > 0 {
            out[0] = i - 1;
        }
        if x + 1 < self.w {
            out[1] = i + 1;
        }
        if y > 0 {
            out[2] = i - self.w;
        }
        if y + 1 < self.h {
            out[3] = i + self.w;
        }
        out.into_iter().filter(|&j| j != usize::MAX)
    }
}

/// Connected components (4-connectivity) of `mask`, each as a list of pixel indices.
fn components(mask: &[bool], grid: &Grid) -> Vec<Vec<usize>> {
    let mut seen = vec![false; mask.len()];
    let mut out = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        let mut comp = Vec::new();
        let mut queue = VecDeque::from([start]);
        seen[start] = true;
        while let Some(i) = queue.pop_front() {
            comp.push(i);
            for j in grid.neighbours4(i) {
                if mask[j] && !seen[j] {
                    seen[j] = true;
                    queue.push_back(j);
                }
            }
        }
        out.push(comp);
    }
    out
}

/// `seed` grown through the 4-connected pixels of `faint` (hysteresis thresholding).
fn grow(mut seed: Vec<bool>, faint: &[bool], grid: &Grid) -> Vec<bool> {
    let mut queue: VecDeque<usize> = (0..seed.len()).filter(|&i| seed[i]).collect();
    while let Some(i) = queue.pop_front() {
        for j in grid.neighbours4(i) {
            if faint[j] && !seed[j] {
                seed[j] = true;
                queue.push_back(j);
            }
        }
    }
    seed
}

/// A mask cropped to a bounding box, with local coordinates.
struct Crop {
    x0: usize,
    y0: usize,
    w: usize,
    h: usize,
    mask: Vec<bool>,
}

impl Crop {
    fn from_pixels(pixels: &[usize], width: usize) -> Self {
        let xs = pixels.iter().map(|&i| i % width);
        let ys = pixels.iter().map(|&i| i / width);
        let (x0, x1) = (xs.clone().min().unwrap_or(0), xs.max().unwrap_or(0));
        let (y0, y1) = (ys.clone().min().unwrap_or(0), ys.max().unwrap_or(0));
        let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
        let mut mask = vec![false; w * h];
        for &i in pixels {
            mask[(i / width - y0) * w + (i % width - x0)] = true;
        }
        Self { x0, y0, w, h, mask }
    }

    fn count(&self) -> usize {
        self.mask.iter().filter(|&&m| m).count()
    }

    /// The mask closed with a 3x3 square (dilated, then eroded, in a frame one pixel wider so the crop border
    /// does not erode): bridges one-pixel gaps, e.g. where a thin generated outline fades below
    /// [`FOREGROUND_DIFF`] for a pixel. A solid rendered object comes back unchanged but for one-pixel notches.
    fn closed(&self) -> Crop {
        let (pw, ph) = (self.w + 2, self.h + 2);
        let mut framed = vec![false; pw * ph];
        for y in 0..self.h {
            for x in 0..self.w {
                framed[(y + 1) * pw + x + 1] = self.mask[y * self.w + x];
            }
        }
        let closed = erode(&dilate(&framed, pw, ph), pw, ph);
        let mask = (0..self.h * self.w)
            .map(|i| closed[(i / self.w + 1) * pw + i % self.w + 1])
            .collect();
        Crop {
            x0: self.x0,
            y0: self.y0,
            w: self.w,
            h: self.h,
            mask,
        }
    }

    /// The mask with its holes (unset pixels not connected to the crop border) filled.
    fn filled(&self) -> Vec<bool> {
        let grid = Grid {
            w: self.w,
            h: self.h,
        };
        let mut outside = vec![false; self.mask.len()];
        let mut queue = VecDeque::new();
        for y in 0..self.h {
            for x in 0..self.w {
                let i = y * self.w + x;
                if (x == 0 || y == 0 || x + 1 == self.w || y + 1 == self.h) && !self.mask[i] {
                    outside[i] = true;
                    queue.push_back(i);
                }
            }
        }
        while let Some(i) = queue.pop_front() {
            for j in grid.neighbours4(i) {
                if !self.mask[j] && !outside[j] {
                    outside[j] = true;
                    queue.push_back(j);
                }
            }
        }
        outside.iter().map(|&o| !o).collect()
    }
}

/// 8-neighbour erosion of a `w x h` mask (pixels outside the mask count as unset).
fn erode(mask: &[bool], w: usize, h: usize) -> Vec<bool> {
    let mut out = vec![false; mask.len()];
    for y in 0..h {
        for x in 0..w {
            if !mask[y * w + x] {
                continue;
            }
            let mut keep = true;
            'n: for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0
                        || ny < 0
                        || nx >= w as i64
                        || ny >= h as i64
                        || !mask[ny as usize * w + nx as usize]
                    {
                        keep = false;
                        break 'n;
                    }
                }
            }
            out[y * w + x] = keep;
        }
    }
    out
}

/// 8-neighbour dilation of a `w x h` mask.
fn dilate(mask: &[bool], w: usize, h: usize) -> Vec<bool> {
    let mut out = vec![false; mask.len()];
    for y in 0..h {
        for x in 0..w {
            if !mask[y * w + x] {
                continue;
            }
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    out[ny * w + nx] = true;
                }
            }
        }
    }
    out
}

fn erode_n(mask: &[bool], w: usize, h: usize, n: usize) -> Vec<bool> {
    (0..n).fold(mask.to_vec(), |m, _| erode(&m, w, h))
}

/// Whether the pixel centre `(x, y)` (crop coordinates) lies in `shape`'s template fitted to a `w x h` box.
fn in_template(shape: ShapeKind, x: usize, y: usize, w: usize, h: usize) -> bool {
    let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
    let (fw, fh) = (w as f32, h as f32);
    match shape {
        ShapeKind::Square => true,
        ShapeKind::Circle => {
            let (u, v) = ((px - fw / 2.0) / (fw / 2.0), (py - fh / 2.0) / (fh / 2.0));
            u * u + v * v <= 1.0
        }
        ShapeKind::Triangle => {
            // Apex at the top centre, base along the bottom edge: at height py the width is fw * py / fh.
            let half = 0.5 * fw * py / fh;
            (px - fw / 2.0).abs() <= half
        }
    }
}

fn classify_shape(filled: &[bool], w: usize, h: usize) -> Option<ShapeKind> {
    let mut best: Option<(ShapeKind, f32)> = None;
    for shape in ShapeKind::ALL {
        let (mut inter, mut union) = (0usize, 0usize);
        for y in 0..h {
            for x in 0..w {
                let t = in_template(shape, x, y, w, h);
                let m = filled[y * w + x];
                inter += (t && m) as usize;
                union += (t || m) as usize;
            }
        }
        let iou = inter as f32 / union.max(1) as f32;
        if best.is_none_or(|(_, b)| iou > b) {
            best = Some((shape, iou));
        }
    }
    best.filter(|&(_, iou)| iou >= MIN_SHAPE_IOU)
        .map(|(s, _)| s)
}

fn nearest_colour(rgb: [f32; 3]) -> Option<Colour> {
    Colour::ALL
        .into_iter()
        .map(|c| (c, rgb_distance(rgb, c.rgb())))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .filter(|&(_, d)| d <= MAX_COLOUR_DISTANCE)
        .map(|(c, _)| c)
}

fn median(mut v: Vec<u8>) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    v[v.len() / 2] as f32
}

/// Whether one component of the mark mask `marks` (crop of `w x h`), at least 30% of the crop wide and high,
/// encloses the interior's centre (the mean position of `inner`) without covering it: a ring drawn around the
/// object's centre, as the renderer draws it (dots put a dot on the centre, stripes run through it).
fn ring_around_centre(marks: &[bool], inner: &[bool], w: usize, h: usize) -> bool {
    let n = inner.iter().filter(|&&m| m).count();
    if n == 0 {
        return false;
    }
    let (sx, sy) = (0..w * h)
        .filter(|&i| inner[i])
        .fold((0usize, 0usize), |(sx, sy), i| (sx + i % w, sy + i / w));
    let (cx, cy) = (
        (sx as f32 / n as f32).round() as usize,
        (sy as f32 / n as f32).round() as usize,
    );
    if marks[cy * w + cx] {
        return false;
    }
    components(marks, &Grid { w, h }).iter().any(|comp| {
        let crop = Crop::from_pixels(comp, w);
        if (crop.w as f32) < 0.3 * w as f32 || (crop.h as f32) < 0.3 * h as f32 {
            return false;
        }
        let inside_x = cx >= crop.x0 && cx < crop.x0 + crop.w;
        let inside_y = cy >= crop.y0 && cy < crop.y0 + crop.h;
        inside_x && inside_y && crop.filled()[(cy - crop.y0) * crop.w + (cx - crop.x0)]
    })
}

/// The pattern of the dark pixels `dark` inside an object's interior `interior` (crop of `w x h`).
fn classify_pattern(dark: &[bool], interior_count: usize, w: usize, h: usize) -> Option<Pattern> {
    let n_dark = dark.iter().filter(|&&d| d).count();
    if interior_count == 0 || (n_dark as f32) < 0.04 * interior_count as f32 {
        return Some(Pattern::Plain);
    }
    let grid = Grid { w, h };
    let comps: Vec<Vec<usize>> = components(dark, &grid)
        .into_iter()
        .filter(|c| c.len() >= 2)
        .collect();
    let mut wide_pixels = 0usize;
    let mut compact = 0usize;
    for comp in &comps {
        let crop = Crop::from_pixels(comp, w);
        let enclosed = crop.filled().iter().filter(|&&f| f).count() - crop.count();
        if enclosed >= 3 && crop.w as f32 >= 0.3 * w as f32 && crop.h as f32 >= 0.3 * h as f32 {
            return Some(Pattern::Rings);
        }
        if crop.w as f32 >= 2.0 * crop.h as f32 && crop.w as f32 >= 0.3 * w as f32 {
            wide_pixels += comp.len();
        } else if crop.w <= 8 && crop.h <= 8 && crop.w <= 2 * crop.h + 1 && crop.h <= 2 * crop.w + 1
        {
            compact += 1;
        }
    }
    if wide_pixels * 2 >= n_dark {
        Some(Pattern::Stripes)
    } else if compact >= 1 && compact * 2 >= comps.len() {
        Some(Pattern::Dots)
    } else {
        None
    }
}

/// The brightness (brightest channel) below which a pixel inside an object of colour `rgb` (the median of its
/// non-dark pixels) counts as a pattern mark: halfway between the accent's brightness and the object's, so a
/// pixel is a mark when it is more accent than colour, and never below the absolute [`DARK_MAX_CHANNEL`].
/// Generated images draw marks softer than the renderer (a ring's stroke at 100 over a body at 190); a fixed
/// cut at 95 broke those strokes into pieces.
fn accent_threshold(rgb: [f32; 3]) -> f32 {
    let body = rgb[0].max(rgb[1]).max(rgb[2]);
    let accent = ACCENT[0].max(ACCENT[1]).max(ACCENT[2]) as f32;
    (0.5 * (body + accent)).max(DARK_MAX_CHANNEL as f32)
}

/// A softer cut, a quarter of the way from the object's brightness to the accent's: a generated ring's stroke
/// often fades above [`accent_threshold`] for a pixel or two, which leaves the loop open.
fn faint_mark_threshold(rgb: [f32; 3]) -> f32 {
    let body = rgb[0].max(rgb[1]).max(rgb[2]);
    0.5 * (body + accent_threshold(rgb))
}

/// Reads an image of this world.
pub fn read(img: &RgbImage) -> Reading {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let px = |i: usize| img.get_pixel((i % w) as u32, (i / w) as u32).0;
    // Background: per-channel median of the two outermost pixel rings.
    let mut border: [Vec<u8>; 3] = Default::default();
    for y in 0..h {
        for x in 0..w {
            if x < 2 || y < 2 || x + 2 >= w || y + 2 >= h {
                let p = img.get_pixel(x as u32, y as u32).0;
                for k in 0..3 {
                    border[k].push(p[k]);
                }
            }
        }
    }
    let bg = [
        median(border[0].clone()),
        median(border[1].clone()),
        median(border[2].clone()),
    ];
    let background = [Background::White, Background::Grey]
        .into_iter()
        .min_by(|a, b| {
            let d = |c: Background| {
                (0..3)
                    .map(|k| (bg[k] - c.rgb()[k] as f32).powi(2))
                    .sum::<f32>()
            };
            d(*a).total_cmp(&d(*b))
        })
        .expect("two backgrounds");
    let grid = Grid { w, h };
    let differs = |threshold: i32| -> Vec<bool> {
        (0..w * h)
            .map(|i| {
                let p = px(i);
                (0..3).any(|k| (p[k] as f32 - bg[k]).abs() as i32 > threshold)
            })
            .collect()
    };
    let fg = differs(FOREGROUND_DIFF);
    // Faint pixels joined to the foreground: only consulted for pieces that are no shape on their own.
    let faint_fg = grow(fg.clone(), &differs(FAINT_FOREGROUND_DIFF), &grid);
    let mut component_of = vec![usize::MAX; w * h];
    for (c, comp) in components(&fg, &grid).iter().enumerate() {
        for &i in comp {
            component_of[i] = c;
        }
    }
    let mut objects = Vec::new();
    for joined in components(&faint_fg, &grid) {
        // The foreground components inside this faint-joined one, large enough to be objects.
        let mut pieces: Vec<Vec<usize>> = Vec::new();
        let mut index: Vec<usize> = Vec::new();
        for &i in &joined {
            let c = component_of[i];
            if c == usize::MAX {
                continue;
            }
            match index.iter().position(|&k| k == c) {
                Some(k) => pieces[k].push(i),
                None => {
                    index.push(c);
                    pieces.push(vec![i]);
                }
            }
        }
        // Keyed by the first pixel in scan order, the order the components come in.
        let read: Vec<(usize, Detection)> = pieces
            .iter()
            .filter(|p| p.len() >= MIN_OBJECT_AREA)
            .flat_map(|p| split_by_colour(img, p, &grid))
            .map(|p| (first(&p), read_object(img, &fg, &p, false)))
            .collect();
        // A thin outline whose line fades below FOREGROUND_DIFF here and there falls apart into pieces of no
        // shape; read together, with the faint pixels and the remaining one-pixel gaps closed, they are one.
        if read.iter().all(|(_, d)| d.shape.is_none() && !d.outline)
            && joined.len() >= MIN_OBJECT_AREA
        {
            let whole = read_object(img, &faint_fg, &joined, true);
            if whole.outline && whole.shape.is_some() {
                objects.push((first(&joined), whole));
                continue;
            }
        }
        objects.extend(read);
    }
    objects.sort_by_key(|(k, _)| *k);
    Reading {
        background,
        objects: objects.into_iter().map(|(_, d)| d).collect(),
    }
}

fn rgb_distance(a: [f32; 3], b: [u8; 3]) -> f32 {
    (0..3)
        .map(|k| (a[k] - b[k] as f32).powi(2))
        .sum::<f32>()
        .sqrt()
}

/// Splits a foreground component into the touching objects it holds when it has large areas (each at least
/// `2 * MIN_OBJECT_AREA` pixels and a tenth of the component) of palette colours more than
/// [`SPLIT_COLOUR_DISTANCE`] apart: a generated blue circle that touches a red square is two objects, not one
/// of no shape. Colours closer than that (shading, red and orange) count as one. Every pixel goes to the
/// colour area it is nearest to through the component (pattern marks and rims included), and each part's
/// 4-connected pieces of at least [`MIN_OBJECT_AREA`] pixels are the objects. A component of one colour comes
/// back whole: rendered scenes, whose objects never touch, read as before.
fn split_by_colour(img: &RgbImage, comp: &[usize], grid: &Grid) -> Vec<Vec<usize>> {
    let w = grid.w;
    let body_colour = |i: usize| -> Option<usize> {
        let p = img.get_pixel((i % w) as u32, (i / w) as u32).0;
        if is_dark(p) {
            return None;
        }
        let rgb = [p[0] as f32, p[1] as f32, p[2] as f32];
        Colour::ALL
            .iter()
            .position(|c| rgb_distance(rgb, c.rgb()) <= BODY_COLOUR_DISTANCE)
    };
    let labels: Vec<Option<usize>> = comp.iter().map(|&i| body_colour(i)).collect();
    let mut counts = [0usize; Colour::ALL.len()];
    for c in labels.iter().flatten() {
        counts[*c] += 1;
    }
    // Large colour areas, largest first, grouped with any larger one closer than SPLIT_COLOUR_DISTANCE.
    let mut large: Vec<usize> = (0..counts.len())
        .filter(|&c| counts[c] >= 2 * MIN_OBJECT_AREA && counts[c] * 10 >= comp.len())
        .collect();
    large.sort_by_key(|&c| std::cmp::Reverse(counts[c]));
    let mut leaders: Vec<usize> = Vec::new();
    let mut group_of = [usize::MAX; Colour::ALL.len()];
    for c in large {
        let rgb = Colour::ALL[c].rgb().map(|v| v as f32);
        match leaders
            .iter()
            .position(|&l| rgb_distance(rgb, Colour::ALL[l].rgb()) <= SPLIT_COLOUR_DISTANCE)
        {
            Some(g) => group_of[c] = g,
            None => {
                group_of[c] = leaders.len();
                leaders.push(c);
            }
        }
    }
    if leaders.len() < 2 {
        return vec![comp.to_vec()];
    }
    // Multi-source breadth-first assignment through the component from the grouped colour areas.
    let mut part = vec![usize::MAX; grid.w * grid.h];
    let mut inside = vec![false; grid.w * grid.h];
    let mut queue = VecDeque::new();
    for (&i, label) in comp.iter().zip(&labels) {
        inside[i] = true;
        if let Some(g) = label.map(|c| group_of[c]).filter(|&g| g != usize::MAX) {
            part[i] = g;
            queue.push_back(i);
        }
    }
    while let Some(i) = queue.pop_front() {
        for j in grid.neighbours4(i) {
            if inside[j] && part[j] == usize::MAX {
                part[j] = part[i];
                queue.push_back(j);
            }
        }
    }
    (0..leaders.len())
        .flat_map(|g| {
            let mask: Vec<bool> = part.iter().map(|&p| p == g).collect();
            components(&mask, grid)
        })
        .filter(|p| p.len() >= MIN_OBJECT_AREA)
        .collect()
}

/// The first pixel of `pixels` in scan order.
fn first(pixels: &[usize]) -> usize {
    pixels.iter().copied().min().unwrap_or(0)
}

/// Reads the object made of the pixels `comp` of the foreground `fg`; `close`: bridge one-pixel gaps first.
fn read_object(img: &RgbImage, fg: &[bool], comp: &[usize], close: bool) -> Detection {
    let w = img.width() as usize;
    let px = |i: usize| img.get_pixel((i % w) as u32, (i / w) as u32).0;
    let crop = Crop::from_pixels(comp, w);
    let (cw, ch) = (crop.w, crop.h);
    // Silhouette: the component (closed if asked) with its holes filled.
    let filled = if close {
        crop.closed().filled()
    } else {
        crop.filled()
    };
    let area = filled.iter().filter(|&&f| f).count();
    let shape = classify_shape(&filled, cw, ch);
    let global = |x: usize, y: usize| (crop.y0 + y) * w + crop.x0 + x;
    // Outline: most of the deep interior is background.
    let deep = erode_n(&filled, cw, ch, 3);
    let deep_n = deep.iter().filter(|&&d| d).count();
    let deep_bg = (0..cw * ch)
        .filter(|&i| deep[i] && !fg[global(i % cw, i / cw)])
        .count();
    let outline = deep_n >= 6 && deep_bg as f32 > 0.5 * deep_n as f32;
    // Colour: median of the non-dark object pixels, away from the anti-aliased rim when possible.
    let inner = erode(&filled, cw, ch);
    let pick = |mask: &[bool]| -> [Vec<u8>; 3] {
        let mut ch3: [Vec<u8>; 3] = Default::default();
        for i in 0..cw * ch {
            let g = global(i % cw, i / cw);
            if mask[i] && fg[g] && !is_dark(px(g)) {
                let p = px(g);
                for k in 0..3 {
                    ch3[k].push(p[k]);
                }
            }
        }
        ch3
    };
    let mut samples = pick(&inner);
    if samples[0].len() < 5 {
        samples = pick(&crop.mask);
    }
    let median_rgb = [
        median(samples[0].clone()),
        median(samples[1].clone()),
        median(samples[2].clone()),
    ];
    let colour = if samples[0].is_empty() {
        None
    } else {
        nearest_colour(median_rgb)
    };
    let pattern = if outline {
        Some(Pattern::Plain)
    } else {
        let marks_below = |threshold: f32| -> Vec<bool> {
            (0..cw * ch)
                .map(|i| {
                    let p = px(global(i % cw, i / cw));
                    inner[i] && (p[0].max(p[1]).max(p[2]) as f32) < threshold
                })
                .collect()
        };
        let dark = marks_below(accent_threshold(median_rgb));
        let interior_count = inner.iter().filter(|&&m| m).count();
        match classify_pattern(&dark, interior_count, cw, ch) {
            Some(Pattern::Rings) => Some(Pattern::Rings),
            _ if ring_around_centre(
                &marks_below(faint_mark_threshold(median_rgb)),
                &inner,
                cw,
                ch,
            ) =>
            {
                Some(Pattern::Rings)
            }
            other => other,
        }
    };
    Detection {
        shape,
        colour,
        pattern,
        outline,
        bbox: (crop.x0, crop.y0, crop.x0 + cw - 1, crop.y0 + ch - 1),
        area,
    }
}

/// How an image answers a prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Per object of the prompt: the detection (index into the reading's objects) with its shape, colour and
    /// pattern that the best assignment gave it, if any (for an outline prompt the pattern is not checked).
    pub matched: Vec<Option<usize>>,
    /// Per concept the prompt names: whether it is present (a subject: its object was found; the style: every
    /// object is an outline).
    pub concepts: Vec<(Concept, bool)>,
    /// Objects that match no prompt object but carry the distinctive attributes (colour, pattern or shape) of
    /// two or more different prompt objects: an attribute landed on the wrong object.
    pub mixed_objects: usize,
    /// Objects that match no prompt object.
    pub extra_objects: usize,
    /// Every prompt object found, nothing else, the right style and background.
    pub exact: bool,
    /// Per subject concept the prompt names: whether some object has the concept's own colour (whatever its
    /// shape and pattern): a partial presence, for models that get a concept's colour before its shape and
    /// pattern.
    pub concept_colours: Vec<(Concept, bool)>,
}

impl Verdict {
    /// Per object of the prompt: whether it was found ([`Verdict::matched`]).
    pub fn objects_found(&self) -> Vec<bool> {
        self.matched.iter().map(Option::is_some).collect()
    }

    /// Whether every concept of the prompt is present.
    pub fn all_concepts_present(&self) -> bool {
        self.concepts.iter().all(|(_, p)| *p)
    }

    pub fn mixing(&self) -> bool {
        self.mixed_objects > 0
    }

    /// Whether every subject concept's colour is on some object.
    pub fn all_concept_colours(&self) -> bool {
        self.concept_colours.iter().all(|(_, p)| *p)
    }
}

/// The attributes of prompt object `e` that detection `d` gets wrong: (shape, colour, pattern, outline); an
/// attribute the prompt leaves open is never wrong, nor is the pattern of an outline prompt. `d` matches
/// the object when none is.
pub fn mismatches(spec: &PromptSpec, e: usize, d: &Detection) -> [bool; 4] {
    let o = &spec.objects[e];
    let outline = spec.style == Style::Outline;
    [
        d.shape != Some(o.shape),
        o.colour.is_some_and(|c| d.colour != Some(c)),
        !outline && o.pattern.is_some_and(|p| d.pattern != Some(p)),
        d.outline != outline,
    ]
}

/// Compares a reading with a prompt.
pub fn judge(spec: &PromptSpec, reading: &Reading) -> Verdict {
    let outline = spec.style == Style::Outline;
    let matches = |e: usize, d: &Detection| !mismatches(spec, e, d).contains(&true);
    // Best assignment of detections to prompt objects (at most 3 prompt objects: try every order).
    let n = spec.objects.len();
    let mut best: Vec<Option<usize>> = vec![None; n];
    let mut best_count = 0;
    for_each_assignment(n, reading.objects.len(), &mut |assign: &[Option<
        usize,
    >]| {
        let ok = assign
            .iter()
            .enumerate()
            .all(|(e, d)| d.is_none_or(|d| matches(e, &reading.objects[d])));
        let count = assign.iter().filter(|a| a.is_some()).count();
        if ok && count > best_count {
            best_count = count;
            best = assign.to_vec();
        }
    });
    let objects_found: Vec<bool> = best.iter().map(|a| a.is_some()).collect();
    let used: Vec<usize> = best.iter().flatten().copied().collect();
    let unmatched: Vec<&Detection> = reading
        .objects
        .iter()
        .enumerate()
        .filter(|(i, _)| !used.contains(i))
        .map(|(_, d)| d)
        .collect();
    // Distinctive attributes: those that a single prompt object has.
    let unique = |f: &dyn Fn(usize) -> bool| (0..n).filter(|&e| f(e)).count() == 1;
    let mixed_objects = unmatched
        .iter()
        .filter(|d| {
            let mut owners: Vec<usize> = Vec::new();
            for e in 0..n {
                let o = &spec.objects[e];
                let colour = o.colour.is_some()
                    && d.colour == o.colour
                    && unique(&|k| spec.objects[k].colour == o.colour);
                let pattern = !outline
                    && o.pattern.is_some_and(|p| p != Pattern::Plain)
                    && d.pattern == o.pattern
                    && unique(&|k| spec.objects[k].pattern == o.pattern);
                let shape =
                    d.shape == Some(o.shape) && unique(&|k| spec.objects[k].shape == o.shape);
                if colour || pattern || shape {
                    owners.push(e);
                }
            }
            owners.len() >= 2
        })
        .count();
    let mut concepts: Vec<(Concept, bool)> = spec
        .objects
        .iter()
        .zip(&objects_found)
        .filter_map(|(o, &found)| o.concept.map(|c| (c, found)))
        .collect();
    if outline {
        concepts.push((Concept::Outline, reading.style() == Style::Outline));
    }
    let exact = objects_found.iter().all(|&f| f)
        && unmatched.is_empty()
        && reading.background == spec.background
        && reading.style() == spec.style;
    let concept_colours = spec
        .objects
        .iter()
        .filter_map(|o| o.concept)
        .filter_map(|c| c.look().map(|look| (c, look.colour)))
        .map(|(c, colour)| (c, reading.objects.iter().any(|d| d.colour == Some(colour))))
        .collect();
    Verdict {
        matched: best,
        concepts,
        mixed_objects,
        extra_objects: unmatched.len(),
        exact,
        concept_colours,
    }
}

/// Calls `f` with every partial injective assignment of `n` slots to `m` items (`None` = unassigned).
fn for_each_assignment(n: usize, m: usize, f: &mut dyn FnMut(&[Option<usize>])) {
    fn go(
        slot: usize,
        n: usize,
        m: usize,
        cur: &mut Vec<Option<usize>>,
        f: &mut dyn FnMut(&[Option<usize>]),
    ) {
        if slot == n {
            f(cur);
            return;
        }
        cur.push(None);
        go(slot + 1, n, m, cur, f);
        cur.pop();
        for j in 0..m {
            if !cur.contains(&Some(j)) {
                cur.push(Some(j));
                go(slot + 1, n, m, cur, f);
                cur.pop();
            }
        }
    }
    go(0, n, m, &mut Vec::with_capacity(n), f);
}

/// Judges a generated image against the prompt that produced it: parses the prompt with the world's caption
/// parser ([`parse`](super::caption::parse): "a dtz circle and a stz square", "an olz drawing of a red
/// circle"), reads the image ([`read_generated`]) and compares.
pub fn judge_prompt(image: &RgbImage, prompt: &str) -> Result<Verdict, super::error::ToyError> {
    let spec = super::caption::parse(prompt)?;
    Ok(judge(&spec, &read_generated(image)?))
}

/// Reads a generated image: images of another square size are resized to the world's 64x64 (triangle
/// filter); a non-square image is an error.
pub fn read_generated(image: &RgbImage) -> Result<Reading, super::error::ToyError> {
    let side = super::scene::CANVAS as u32;
    let (w, h) = image.dimensions();
    if (w, h) == (side, side) {
        Ok(read(image))
    } else if w == h && w > 0 {
        Ok(read(&image::imageops::resize(
            image,
            side,
            side,
            image::imageops::FilterType::Triangle,
        )))
    } else {
        Err(super::error::ToyError::Image(format!(
            "cannot judge a {w}x{h} image: the toyworld's images are square ({side}x{side})"
        )))
    }
}
