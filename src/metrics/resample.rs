//! Pillow's convolution resize of 8-bit images (`Image.resize` with BOX, BILINEAR, HAMMING, BICUBIC or LANCZOS),
//! bit-exact: the transformers image processors resize through PIL, so the metrics must too.
//!
//! Port of `libImaging/Resample.c` of Pillow 13 (the version the fixtures pin): per output pixel the
//! filter weights are computed in double precision over the input pixels under the (scaled) filter support,
//! normalised to sum 1, then converted to fixed point with 22 fractional bits; each pass rounds and clips to
//! 0..=255. The horizontal pass runs first (over the input rows the vertical pass needs) unless the height
//! shrinks by more than twice as many pixels as the width (Pillow 13's order, see [`vertical_first`]). A pass
//! whose size does not change is skipped (so a same-size resize is a copy).

use super::image_io::RgbImage;

/// Fractional bits of the fixed-point weights (`PRECISION_BITS = 32 - 8 - 2`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A PIL resampling filter (the numbers are PIL's `Image.Resampling` values, as in `preprocessor_config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// 4: box (area average).
    Box,
    /// 2: triangle.
    Bilinear,
    /// 5: Hamming-windowed sinc of radius 1.
    Hamming,
    /// 3: cubic convolution with a = -0.5.
    Bicubic,
    /// 1: Lanczos-windowed sinc of radius 3.
    Lanczos,
}

impl Filter {
    /// The filter for PIL's resample number; `None` for NEAREST (0) and unknown numbers.
    pub fn from_pil(code: u64) -> Option<Self> {
        match code {
            1 => Some(Filter::Lanczos),
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            4 => Some(Filter::Box),
            5 => Some(Filter::Hamming),
            _ => None,
        }
    }

    /// PIL's resample number.
    pub fn pil_code(self) -> u64 {
        match self {
            Filter::Lanczos => 1,
            Filter::Bilinear => 2,
            Filter::Bicubic => 3,
            Filter::Box => 4,
            Filter::Hamming => 5,
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // C: sin(x) / x * (0.54f + 0.46f * cos(x)), float constants promoted to double
                    x.sin() / x * (f64::from(0.54f32) + f64::from(0.46f32) * x.cos())
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// The fixed-point weights of one pass: for output index i, input indices `bounds[i].0 ..+ bounds[i].1`.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for the box `[0, in_size)` mapped onto `out_size` pixels.
fn precompute(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let in0 = 0f32;
    let in1 = in_size as f32;
    let scale = f64::from(in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C: (int)(center - support + 0.5), truncation toward zero, then clamped
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.eval((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (x, kx) in k.iter().enumerate().take(n) {
            let v = if ww != 0.0 { kx / ww } else { *kx };
            let fixed = v * f64::from(1u32 << PRECISION_BITS);
            weights[xx * ksize + x] = if v < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs {
        ksize,
        bounds,
        weights,
    }
}

#[inline]
fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Horizontal pass: rows `first_row .. first_row + rows` of `src`, each resampled to `width` pixels.
fn horizontal_pass(
    src: &RgbImage,
    width: usize,
    c: &Coeffs,
    first_row: usize,
    rows: usize,
) -> RgbImage {
    let half = 1i64 << (PRECISION_BITS - 1);
    let mut out = vec![0u8; rows * width * 3];
    for yy in 0..rows {
        let line =
            &src.data[(yy + first_row) * src.width * 3..(yy + first_row + 1) * src.width * 3];
        let dst = &mut out[yy * width * 3..(yy + 1) * width * 3];
        for xx in 0..width {
            let (xmin, n) = c.bounds[xx];
            let k = &c.weights[xx * c.ksize..xx * c.ksize + n];
            let (mut s0, mut s1, mut s2) = (half, half, half);
            for (x, &w) in k.iter().enumerate() {
                let p = (xmin + x) * 3;
                s0 += i64::from(line[p]) * i64::from(w);
                s1 += i64::from(line[p + 1]) * i64::from(w);
                s2 += i64::from(line[p + 2]) * i64::from(w);
            }
            dst[xx * 3] = clip8(s0);
            dst[xx * 3 + 1] = clip8(s1);
            dst[xx * 3 + 2] = clip8(s2);
        }
    }
    RgbImage {
        width,
        height: rows,
        data: out,
    }
}

/// Vertical pass to `height` rows; `row_shift` is subtracted from every bound (the rows `src` starts at).
fn vertical_pass(src: &RgbImage, height: usize, c: &Coeffs, row_shift: usize) -> RgbImage {
    let half = 1i64 << (PRECISION_BITS - 1);
    let width = src.width;
    let mut out = vec![0u8; height * width * 3];
    for yy in 0..height {
        let (ymin, n) = c.bounds[yy];
        let ymin = ymin - row_shift;
        let k = &c.weights[yy * c.ksize..yy * c.ksize + n];
        let dst = &mut out[yy * width * 3..(yy + 1) * width * 3];
        for xx in 0..width {
            let (mut s0, mut s1, mut s2) = (half, half, half);
            for (y, &w) in k.iter().enumerate() {
                let p = ((ymin + y) * width + xx) * 3;
                s0 += i64::from(src.data[p]) * i64::from(w);
                s1 += i64::from(src.data[p + 1]) * i64::from(w);
                s2 += i64::from(src.data[p + 2]) * i64::from(w);
            }
            dst[xx * 3] = clip8(s0);
            dst[xx * 3 + 1] = clip8(s1);
            dst[xx * 3 + 2] = clip8(s2);
        }
    }
    RgbImage {
        width,
        height,
        data: out,
    }
}

/// Whether Pillow 13 runs the vertical pass first: when the height shrinks by more than twice as many pixels
/// as the width does (`ImagingResampleInner`, Pillow >= 13; earlier Pillows always start horizontally, which
/// changes some pixels by one level for such sizes).
pub fn vertical_first(in_w: usize, in_h: usize, width: usize, height: usize) -> bool {
    let dy = in_h as i64 - height as i64;
    let dx = in_w as i64 - width as i64;
    dy > 0 && dy > dx * 2
}

/// Resizes to `width x height` exactly as Pillow 13's `Image.resize((width, height), filter)` does for an RGB
/// image.
pub fn resize(img: &RgbImage, width: usize, height: usize, filter: Filter) -> RgbImage {
    let need_h = width != img.width;
    let need_v = height != img.height;
    if !need_h && !need_v {
        return img.clone();
    }
    let vert = precompute(img.height, height, filter);
    if !need_h {
        return vertical_pass(img, height, &vert, 0);
    }
    let horiz = precompute(img.width, width, filter);
    if !need_v {
        return horizontal_pass(img, width, &horiz, 0, img.height);
    }
    if vertical_first(img.width, img.height, width, height) {
        let tmp = vertical_pass(img, height, &vert, 0);
        horizontal_pass(&tmp, width, &horiz, 0, height)
    } else {
        // only the input rows the vertical pass reads
        let last = vert.bounds[height - 1];
        let (first_row, last_row) = (vert.bounds[0].0, last.0 + last.1);
        let tmp = horizontal_pass(img, width, &horiz, first_row, last_row - first_row);
        vertical_pass(&tmp, height, &vert, first_row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize) -> RgbImage {
        let data = (0..w * h * 3).map(|i| ((i * 37) % 256) as u8).collect();
        RgbImage::from_raw(w, h, data).unwrap()
    }

    #[test]
    fn same_size_is_a_copy() {
        let img = ramp(7, 5);
        assert_eq!(resize(&img, 7, 5, Filter::Bicubic), img);
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for filter in [
            Filter::Box,
            Filter::Bilinear,
            Filter::Hamming,
            Filter::Bicubic,
            Filter::Lanczos,
        ] {
            for (i, o) in [(10, 3), (3, 10), (451, 224), (7, 7)] {
                let c = precompute(i, o, filter);
                for xx in 0..o {
                    let s: i64 = c.weights[xx * c.ksize..xx * c.ksize + c.bounds[xx].1]
                        .iter()
                        .map(|&w| i64::from(w))
                        .sum();
                    // rounding each weight moves the sum by at most half a unit per tap
                    assert!(
                        (s - (1 << PRECISION_BITS)).abs() <= c.ksize as i64,
                        "{filter:?} {i}->{o}: {s}"
                    );
                }
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_raw(13, 9, [200u8, 10, 99].repeat(13 * 9)).unwrap();
        for filter in [
            Filter::Box,
            Filter::Bilinear,
            Filter::Hamming,
            Filter::Bicubic,
            Filter::Lanczos,
        ] {
            for (w, h) in [(5, 4), (30, 17), (13, 20)] {
                let out = resize(&img, w, h, filter);
                assert_eq!((out.width, out.height), (w, h));
                assert!(
                    out.data.chunks(3).all(|p| p == [200, 10, 99]),
                    "{filter:?} {w}x{h}"
                );
            }
        }
    }

    #[test]
    fn pass_order_follows_pillow_13() {
        assert!(vertical_first(80, 300, 224, 224)); // width grows, height shrinks
        assert!(vertical_first(225, 300, 224, 224)); // 76 > 2 * 1
        assert!(!vertical_first(451, 300, 224, 224)); // 76 < 2 * 227
        assert!(!vertical_first(300, 200, 224, 224)); // height grows
        assert!(vertical_first(240, 512, 224, 477)); // 35 > 2 * 16
                                                     // both orders give the same size
        let img = ramp(40, 90);
        let out = resize(&img, 37, 30, Filter::Bicubic);
        assert_eq!((out.width, out.height), (37, 30));
    }

    #[test]
    fn pil_codes_round_trip() {
        for code in 1..=5 {
            assert_eq!(Filter::from_pil(code).unwrap().pil_code(), code);
        }
        assert!(Filter::from_pil(0).is_none());
        assert!(Filter::from_pil(6).is_none());
    }
}
