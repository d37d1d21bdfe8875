//! PyTorch's `F.interpolate(x, scale_factor=(sh, sw), mode="bicubic", align_corners=False)` on one `[C, H, W]`
//! float32 array, as DINOv2 uses it to resize its position embeddings to the patch grid of the input.
//!
//! Semantics of the CPU kernel (ATen `UpSampleKernel.cpp`, `HelperInterpCubic`): the output size is
//! `floor(in * scale)`; because the scale factor is given, the source coordinate uses `1 / scale` (not
//! `in / out`): `src = (dst + 0.5) / scale - 0.5`, in float32; `i = min(floor(src), in - 1)`,
//! `t = clamp(src - i, 0, 1)`; the four taps `i - 1 .. i + 2` are clamped to the border and weighted with the
//! cubic convolution kernel of `A = -0.75`.

/// Size and the per-output taps (indices and weights) of one axis.
struct AxisTaps {
    out: usize,
    index: Vec<[usize; 4]>,
    weight: Vec<[f32; 4]>,
}

fn cubic1(x: f32, a: f32) -> f32 {
    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
}

fn cubic2(x: f32, a: f32) -> f32 {
    ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
}

fn axis_taps(input: usize, scale_factor: f64) -> AxisTaps {
    const A: f32 = -0.75;
    let out = (input as f64 * scale_factor) as usize;
    let scale = (1.0 / scale_factor) as f32;
    let mut index = Vec::with_capacity(out);
    let mut weight = Vec::with_capacity(out);
    for dst in 0..out {
        let real = scale * (dst as f32 + 0.5) - 0.5;
        let i = (real.floor() as i64).min(input as i64 - 1);
        let t = (real - i as f32).clamp(0.0, 1.0);
        weight.push([
            cubic2(t + 1.0, A),
            cubic1(t, A),
            cubic1(1.0 - t, A),
            cubic2(2.0 - t, A),
        ]);
        let clamp = |k: i64| k.clamp(0, input as i64 - 1) as usize;
        index.push([clamp(i - 1), clamp(i), clamp(i + 1), clamp(i + 2)]);
    }
    AxisTaps { out, index, weight }
}

/// Interpolates `src` (`channels x in_h x in_w`, row-major) by the given scale factors.
/// Returns the data and the output (height, width).
pub fn interpolate(
    src: &[f32],
    channels: usize,
    in_h: usize,
    in_w: usize,
    scale_h: f64,
    scale_w: f64,
) -> (Vec<f32>, usize, usize) {
    assert_eq!(src.len(), channels * in_h * in_w, "bicubic input size");
    let ty = axis_taps(in_h, scale_h);
    let tx = axis_taps(in_w, scale_w);
    let mut out = vec![0f32; channels * ty.out * tx.out];
    for c in 0..channels {
        let plane = &src[c * in_h * in_w..(c + 1) * in_h * in_w];
        for y in 0..ty.out {
            for x in 0..tx.out {
                let mut acc = 0f32;
                for (iy, wy) in ty.index[y].iter().zip(ty.weight[y]) {
                    let row = &plane[iy * in_w..(iy + 1) * in_w];
                    let mut r = 0f32;
                    for (ix, wx) in tx.index[x].iter().zip(tx.weight[x]) {
                        r += wx * row[*ix];
                    }
                    acc += wy * r;
                }
                out[(c * ty.out + y) * tx.out + x] = acc;
            }
        }
    }
    (out, ty.out, tx.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_is_floor_of_scaled_input() {
        // DINOv2 at 224 with a 37x37 grid: scale (16 + 0.1) / 37 gives 16
        let (_, h, w) = interpolate(&[0.0; 37 * 37], 1, 37, 37, 16.1 / 37.0, 16.1 / 37.0);
        assert_eq!((h, w), (16, 16));
        let (_, h, w) = interpolate(&[0.0; 5 * 5], 1, 5, 5, 16.1 / 5.0, 8.1 / 5.0);
        assert_eq!((h, w), (16, 8));
    }

    #[test]
    fn constants_are_preserved_and_weights_sum_to_one() {
        let (out, _, _) = interpolate(&[2.5; 2 * 4 * 6], 2, 4, 6, 2.6, 0.7);
        assert!(out.iter().all(|v| (v - 2.5).abs() < 1e-5), "{out:?}");
        let taps = axis_taps(9, 1.7);
        for w in taps.weight {
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn matches_torch_interpolate() {
        // torch 2.2.2: F.interpolate(x, scale_factor=..., mode="bicubic", align_corners=False)
        let x = [0.0, 1.0, 4.0, 9.0, 2.0, -3.0, 5.0, 1.0, 7.0, 0.5, -2.0, 3.0];
        let (up, h, w) = interpolate(&x, 1, 3, 4, 1.37, 2.2);
        assert_eq!((h, w), (4, 8));
        let want_up = [
            -0.30892, 0.025338, 0.507593, 1.547009, 2.294215, 3.924228, 6.740767, 9.200453,
            0.942978, 0.138084, -1.73095, -1.403246, 2.079677, 5.358995, 5.445742, 4.080132,
            4.412787, 2.673059, -0.834523, -2.311388, 0.282178, 2.9718, 2.504456, 0.91933,
            7.892612, 6.205265, 3.227277, 0.015481, -2.05628, -2.256801, -0.15667, 2.662656,
        ];
        for (i, (a, b)) in up.iter().zip(want_up).enumerate() {
            assert!((a - b).abs() < 1e-5, "up {i}: {a} vs {b}");
        }
        let (down, h, w) = interpolate(&x, 1, 3, 4, 0.7, 0.55);
        assert_eq!((h, w), (2, 2));
        for (a, b) in down.iter().zip([-0.109086, 5.429705, 2.785446, 0.868249]) {
            assert!((a - b).abs() < 1e-5, "down: {a} vs {b}");
        }
    }
}
