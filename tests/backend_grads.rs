//! Gradients of the operations on CLoRA's path (its latent update differentiates the UNet's cross-attention maps
//! with respect to the latent), each checked against central finite differences along random directions:
//! `<dL/dx, v>` against `(L(x + h v) - L(x - h v)) / 2h` for a scalar `L = sum(w * op(x))`. In CI this runs on
//! `flex`; on a GPU machine `--features cuda-tests` runs the same checks on CUDA (session 14 found CLoRA's
//! images on `cuda` apart from the CPU backends' while the forward-only methods matched: docs/toyworld.md,
//! "On a GPU"), so a wrong backward kernel is named by the operation whose check fails.
//!
//! Tolerance: `|fd - ad| <= 1e-2 |ad| + 3e-4`. In f32 with h = 3e-3 the two agree to 7e-5 or better on `flex`
//! (directional derivatives 0.002-2.3); a wrong gradient is off by about its own size.

mod common;

use burn::backend::Autodiff;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{activation, DType, ElementConversion, Int, Tensor, TensorData};
use clora_harness::methods::clora::loss::{min_max_normalise, nt_xent};
use clora_harness::models::blocks::AttentionProbe;
use clora_harness::models::nn::activation::Activation;
use clora_harness::models::nn::attention::scaled_dot_product;
use clora_harness::models::nn::resample::upsample_nearest_2x;
use clora_harness::models::nn::GroupNorm;
use clora_harness::models::sd::{LoadOptions, StableDiffusion};
use clora_harness::models::weights::VarBuilder;
use common::{device, B};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type AD = Autodiff<B>;

/// `n` values uniform in [-1, 1), drawn on the CPU (the same on every backend).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn tensor<const D: usize>(v: Vec<f32>, shape: [usize; D]) -> Tensor<AD, D> {
    Tensor::from_data(TensorData::new(v, shape), &device())
}

/// `sum(w * y) / sqrt(n)` with fixed random weights `w`: a scalar that sees every output element.
fn weighted<const D: usize>(y: Tensor<AD, D>, seed: u64) -> Tensor<AD, 1> {
    let shape = y.dims();
    let n: usize = shape.iter().product();
    let w = tensor(values(seed, n), shape);
    (y * w).sum() / (n as f64).sqrt()
}

/// Checks the gradient of `loss(x)` at a random `x` of `shape` along three random directions.
fn check<const D: usize>(
    name: &str,
    shape: [usize; D],
    seed: u64,
    loss: impl Fn(Tensor<AD, D>) -> Tensor<AD, 1>,
) {
    let n: usize = shape.iter().product();
    let x0 = values(seed, n);
    let x = tensor(x0.clone(), shape).require_grad();
    let grads = loss(x.clone()).backward();
    let g: Vec<f32> = x
        .grad(&grads)
        .unwrap_or_else(|| panic!("{name}: no gradient reached the input"))
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap();
    let h = 3e-3f32;
    for k in 0..3u64 {
        let v = values(seed.wrapping_mul(31).wrapping_add(k + 1), n);
        let ad: f64 = g.iter().zip(&v).map(|(a, b)| *a as f64 * *b as f64).sum();
        let at = |s: f32| -> f64 {
            let xs: Vec<f32> = x0.iter().zip(&v).map(|(a, b)| a + s * b).collect();
            loss(tensor(xs, shape)).into_scalar().elem::<f64>()
        };
        let fd = (at(h) - at(-h)) / (2.0 * h as f64);
        assert!(
            (fd - ad).abs() <= 1e-2 * ad.abs() + 3e-4,
            "{name}, direction {k}: autodiff {ad:.6}, finite differences {fd:.6}"
        );
    }
}

#[test]
fn batching_ops_cat_repeat_and_slices() {
    // forward_all: the latent twice (CFG), repeated per branch; contrastive_loss: width-1 slices of the maps.
    check("cat + repeat_dim", [1, 4, 4, 4], 1, |x| {
        weighted(Tensor::cat(vec![x.clone(), x], 0).repeat_dim(0, 3), 101)
    });
    check("slices of the last dim", [2, 16, 8], 2, |x| {
        [(0, 1), (0, 5), (1, 1), (1, 6)]
            .into_iter()
            .map(|(k, t)| {
                let e = x.clone().slice([k..k + 1, 0..16, t..t + 1]).reshape([16]);
                weighted(e, 200 + t as u64)
            })
            .reduce(|a, b| a + b)
            .unwrap()
    });
}

#[test]
fn clora_loss_ops() {
    check("min-max normalise", [64], 3, |x| {
        weighted(min_max_normalise(x), 103)
    });
    check("nt_xent", [6, 16], 4, |x| {
        nt_xent(x, &[0, 0, 0, 1, 1, 1], 0.5)
    });
    check("select with repeated rows + gather", [4, 5], 5, |x| {
        let dev = device();
        let rows =
            Tensor::<AD, 1, Int>::from_data(TensorData::new(vec![0i64, 0, 1, 3, 3], [5]), &dev);
        let cols =
            Tensor::<AD, 2, Int>::from_data(TensorData::new(vec![1i64, 2, 0, 4, 4], [5, 1]), &dev);
        let picked = x.select(0, rows);
        weighted(picked.clone().gather(1, cols), 105) + weighted(picked, 106)
    });
    check("max_pair, max_dim, exp, log", [3, 6], 6, |x| {
        let m = x
            .clone()
            .max_dim(1)
            .max_pair(x.clone().slice([0..3, 0..1]))
            .detach();
        let num = (x.clone().slice([0..3, 0..1]) - m.clone()).exp();
        let den = (x - m).exp().sum_dim(1);
        (-(num / den).log()).mean()
    });
}

#[test]
fn attention_ops() {
    check("softmax", [2, 2, 16, 7], 7, |x| {
        weighted(activation::softmax(x, 3), 107)
    });
    let k = || tensor(values(8, 2 * 2 * 7 * 8), [2, 2, 7, 8]);
    let v = || tensor(values(9, 2 * 2 * 7 * 8), [2, 2, 7, 8]);
    check("q k^T (gradient to q)", [2, 2, 16, 8], 10, |q| {
        weighted(q.matmul(k().swap_dims(2, 3)), 110)
    });
    check("q k^T (gradient to k)", [2, 2, 7, 8], 11, |kk| {
        let q = tensor(values(12, 2 * 2 * 16 * 8), [2, 2, 16, 8]);
        weighted(q.matmul(kk.swap_dims(2, 3)), 111)
    });
    // The UNet's attention, with the probabilities CLoRA's maps are made of.
    check(
        "scaled_dot_product (out and probs)",
        [2, 2, 16, 8],
        13,
        |q| {
            let (out, probs) = scaled_dot_product(q, k(), v(), 0.35, None, true, true);
            weighted(out, 113) + weighted(probs.unwrap(), 114)
        },
    );
}

#[test]
fn unet_layer_ops() {
    let weight = || tensor(values(14, 8 * 4 * 9), [8, 4, 3, 3]);
    check(
        "conv2d 3x3, padding 1 (gradient to the input)",
        [1, 4, 8, 8],
        15,
        |x| {
            weighted(
                conv2d(
                    x,
                    weight(),
                    None,
                    ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
                ),
                115,
            )
        },
    );
    check(
        "conv2d 3x3, stride 2 (gradient to the input)",
        [1, 4, 8, 8],
        16,
        |x| {
            weighted(
                conv2d(
                    x,
                    weight(),
                    None,
                    ConvOptions::new([2, 2], [1, 1], [1, 1], 1),
                ),
                116,
            )
        },
    );
    let norm = GroupNorm::<AD>::load(
        &VarBuilder::random(17, &device(), DType::F32).pp("norm"),
        4,
        8,
        1e-5,
    )
    .expect("a group norm");
    check("group norm", [2, 8, 4, 4], 18, |x| {
        weighted(norm.forward(x), 118)
    });
    for (i, name) in ["silu", "gelu"].into_iter().enumerate() {
        let act = Activation::from_name(name).expect("a known activation");
        check(name, [2, 8, 4, 4], 19 + i as u64, |x| {
            weighted(act.forward(x), 119 + i as u64)
        });
    }
    check("nearest 2x upsampling", [1, 4, 4, 4], 21, |x| {
        weighted(upsample_nearest_2x(x), 121)
    });
}

#[test]
fn toyworld_unet_attention_maps_to_the_latent() {
    // The whole path CLoRA differentiates: latent -> UNet -> the 8x8 cross-attention maps (and the noise
    // prediction), on the committed toyworld model with a random context.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/toyworld/model");
    let sd = StableDiffusion::<AD>::load(&dir, &LoadOptions::default(), &device())
        .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
    let context = || tensor(values(22, 2 * 77 * 64), [2, 77, 64]);
    check("toyworld UNet: maps and noise", [2, 4, 16, 16], 23, |z| {
        let mut probe = AttentionProbe::at_query_len(64);
        let eps = sd
            .unet
            .forward_probed(z, &[500.0, 500.0], context(), &mut probe)
            .expect("a forward");
        assert!(
            !probe.maps.is_empty(),
            "no 8x8 cross-attention map was probed"
        );
        let mut total = weighted(eps, 123);
        for (i, (_, m)) in probe.maps.into_iter().enumerate() {
            total = total + weighted(m, 130 + i as u64) * 10.0;
        }
        total
    });
}
