//! Gradients of the operations on CLoRA's path (its latent update differentiates the UNet's cross-attention maps
//! with respect to the latent), each checked against central finite differences along random directions:
//! `<dL/dx, v>` against `(L(x + h v) - L(x - h v)) / 2h` for a scalar `L = sum(w * op(x))`. In CI this runs on
//! `flex`; on a GPU machine `--features cuda-tests` runs the same checks on CUDA. That is how session 15 found
//! why CLoRA's images on `cuda` were apart from the CPU backends' (docs/toyworld.md, "On a GPU"): the gradient
//! of a `sum_dim` chain in the maps' aggregation; `clora_maps_ops` keeps that chain as a check of its own, and
//! the later checks follow CLoRA's path from the maps to the latent, with and without per-row LoRAs.
//!
//! Tolerance: `|fd - ad| <= 1e-2 |ad| + 3e-4`. In f32 with h = 3e-3 the two agree to 7e-5 or better on `flex`
//! (directional derivatives 0.0007-2.5); a wrong gradient is off by about its own size. Every check prints its
//! values (`--nocapture`): on CUDA, whose matmuls round f32 to TF32, finite differences through a matmul are
//! noise, so there compare the printed autodiff values with `flex`'s (they agree to about 1e-4).

mod common;

use burn::backend::Autodiff;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{activation, DType, ElementConversion, Int, Tensor, TensorData};
use clora_harness::lora::file::LoraFile;
use clora_harness::lora::key::Component;
use clora_harness::lora::resolve::Unmatched;
use clora_harness::lora::state::AdapterId;
use clora_harness::methods::clora::engine::contrastive_loss;
use clora_harness::methods::clora::loss::{min_max_normalise, nt_xent};
use clora_harness::methods::clora::maps::{aggregate, MapRows};
use clora_harness::methods::clora::tokens::ConceptWords;
use clora_harness::methods::clora::{Clora, CloraParams};
use clora_harness::methods::{compose, CompositionJob, LoraRef};
use clora_harness::models::blocks::AttentionProbe;
use clora_harness::models::nn::activation::Activation;
use clora_harness::models::nn::attention::scaled_dot_product;
use clora_harness::models::nn::resample::upsample_nearest_2x;
use clora_harness::models::nn::GroupNorm;
use clora_harness::models::sd::{LoadOptions, StableDiffusion};
use clora_harness::models::weights::VarBuilder;
use clora_harness::schedulers::SchedulerKind;
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
    let mut failed = Vec::new();
    for k in 0..3u64 {
        let v = values(seed.wrapping_mul(31).wrapping_add(k + 1), n);
        let ad: f64 = g.iter().zip(&v).map(|(a, b)| *a as f64 * *b as f64).sum();
        let at = |s: f32| -> f64 {
            let xs: Vec<f32> = x0.iter().zip(&v).map(|(a, b)| a + s * b).collect();
            loss(tensor(xs, shape)).into_scalar().elem::<f64>()
        };
        let fd = (at(h) - at(-h)) / (2.0 * h as f64);
        // Every direction is printed (shown with --nocapture), so one run on another backend tells a wrong
        // kernel (a gradient off by a factor or a sign) from rounding noise (a small, scattered difference).
        let ok = (fd - ad).abs() <= 1e-2 * ad.abs() + 3e-4;
        let line = format!(
            "{name}, direction {k}: autodiff {ad:.6}, finite differences {fd:.6}{}",
            if ok { "" } else { "  FAILS" }
        );
        println!("{line}");
        if !ok {
            failed.push(line);
        }
    }
    // BACKEND_GRADS_REPORT_ONLY=1 (for a one-shot run on a GPU machine): print, so that the later checks of
    // the same test still run, instead of stopping at the first failure.
    if std::env::var_os("BACKEND_GRADS_REPORT_ONLY").is_none() {
        assert!(failed.is_empty(), "{}", failed.join("\n"));
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
    let (sd, _) = toyworld_with_loras(&[]);
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

#[test]
fn lora_delta_ops() {
    // A LoRA convolution's delta (src/lora/conv.rs): a 3x3 `down` convolution to a few channels, a per-row
    // gain (CLoRA's per-row adapters), a 1x1 `up` convolution; and a linear layer's low-rank pair.
    let down = || tensor(values(40, 8 * 16 * 9), [8, 16, 3, 3]);
    let up = || tensor(values(41, 16 * 8), [16, 8, 1, 1]);
    let gain = || tensor(values(42, 4 * 8), [4, 8]).reshape([4, 8, 1, 1]);
    check(
        "LoRA conv delta: down 3x3, per-row gain, up 1x1",
        [4, 16, 8, 8],
        43,
        |x| {
            let h = conv2d(x, down(), None, ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
            let h = h * gain();
            weighted(
                conv2d(h, up(), None, ConvOptions::new([1, 1], [0, 0], [1, 1], 1)),
                143,
            )
        },
    );
    let a = || tensor(values(44, 8 * 32), [32, 8]);
    let b = || tensor(values(45, 8 * 32), [8, 32]);
    check("LoRA linear delta: x A B", [4, 64, 32], 46, |x| {
        let h = x.matmul(a().unsqueeze::<3>()) * tensor(values(47, 4 * 8), [4, 1, 8]);
        weighted(h.matmul(b().unsqueeze::<3>()), 146)
    });
}

#[test]
fn toyworld_clora_loss_with_loras_per_row_to_the_latent() {
    // CLoRA's own gradient: the committed model with two committed LoRAs assigned per row (base, dots,
    // stripes; two CFG rows each, as the batched CLoRA call), the branches' aggregated 8x8 maps, the
    // contrastive loss over two concept groups, differentiated to the one latent all rows share.
    let (mut sd, ids) = toyworld_with_loras(&["dots", "stripes"]);
    let rows: Vec<Vec<AdapterId>> = [vec![], vec![ids[0]], vec![ids[1]]]
        .into_iter()
        .flat_map(|r| [r.clone(), r])
        .collect();
    let context = || tensor(values(24, 6 * 77 * 64), [6, 77, 64]);
    let groups = groups();
    // The branches' rows of one latent, through the UNet: the noise predictions and the probed 8x8 maps.
    let forward = |sd: &StableDiffusion<AD>, z: Tensor<AD, 4>| {
        let input = Tensor::cat(vec![z.clone(), z], 0).repeat_dim(0, 3);
        let mut probe = AttentionProbe::at_query_len(64);
        let eps = sd
            .unet
            .forward_probed(input, &[900.0; 6], context(), &mut probe)
            .expect("a forward");
        let layer_maps: Vec<Tensor<AD, 4>> = probe.maps.into_iter().map(|(_, m)| m).collect();
        (eps, layer_maps)
    };
    let clora_loss = |sd: &StableDiffusion<AD>, z: Tensor<AD, 4>| {
        let (_, layer_maps) = forward(sd, z);
        let maps = aggregate(&layer_maps, &BRANCH_ROWS, MapRows::Both);
        contrastive_loss(&maps, &groups, 0.5)
    };
    let maps_and_noise = |sd: &StableDiffusion<AD>, z: Tensor<AD, 4>| {
        let (eps, layer_maps) = forward(sd, z);
        let mut total = weighted(eps, 125);
        for (i, m) in layer_maps.into_iter().enumerate() {
            total = total + weighted(m, 135 + i as u64) * 10.0;
        }
        total
    };
    // Without adapters first, then with them, step by step along CLoRA's path: which part parts. (The loss
    // is smooth only piecewise (min-max normalisation); the seeds are ones whose directions cross no kink.)
    sd.set_lora_rows(Component::Unet, &vec![vec![]; 6])
        .expect("rows");
    check(
        "toyworld UNet, batched branches: maps and noise",
        [1, 4, 16, 16],
        28,
        |z| maps_and_noise(&sd, z),
    );
    check(
        "toyworld UNet, batched branches: aggregated maps",
        [1, 4, 16, 16],
        28,
        |z| {
            let (_, layer_maps) = forward(&sd, z);
            weighted(aggregate(&layer_maps, &BRANCH_ROWS, MapRows::Both), 128) * 10.0
        },
    );
    check(
        "toyworld UNet, batched branches: CLoRA's loss",
        [1, 4, 16, 16],
        // 29 since session 21's model: seed 28's second direction crosses a kink of the min-max normalisation
        29,
        |z| clora_loss(&sd, z),
    );
    sd.set_lora_rows(Component::Unet, &rows).expect("rows");
    check(
        "toyworld UNet with LoRAs per row: maps and noise",
        [1, 4, 16, 16],
        25,
        |z| maps_and_noise(&sd, z),
    );
    check(
        "toyworld UNet with LoRAs per row: CLoRA's loss",
        [1, 4, 16, 16],
        25,
        |z| clora_loss(&sd, z),
    );
}

/// Three branches' (negative, positive) rows of a batched UNet call, as `aggregate` takes them.
const BRANCH_ROWS: [(usize, usize); 3] = [(0, 1), (2, 3), (4, 5)];

/// Two concept groups over three branches: `groups[g][k]` = the tokens of group g in branch k's prompt.
fn groups() -> Vec<Vec<Vec<usize>>> {
    vec![
        vec![vec![2], vec![2, 3], vec![]],
        vec![vec![5], vec![], vec![5, 6]],
    ]
}

#[test]
fn clora_maps_ops() {
    // maps::aggregate (a branch's CFG rows and every head, sliced and added; mean over layers) and
    // engine::contrastive_loss (width-1 slices per token, min-max, NT-Xent), alone and chained.
    // The operations the first version of `aggregate` was made of, alone. On burn 0.21's CUDA backend (an
    // H200, session 15) the `select` is right and the gradient of the `sum_dim` chain is not (directional
    // derivatives -0.45, 1.15, -4.49 where flex and finite differences give -0.17, 0.37, 0.62), and so was
    // `aggregate`'s and CLoRA's latent update; `aggregate` now slices and adds instead.
    check(
        "select along the batch axis of a 4-d tensor",
        [6, 2, 64, 77],
        48,
        |x| {
            let idx =
                Tensor::<AD, 1, Int>::from_data(TensorData::new(vec![2i64, 3], [2]), &device());
            weighted(x.select(0, idx), 148)
        },
    );
    check(
        "sum over batch and heads of a 4-d tensor",
        [2, 2, 64, 77],
        49,
        |x| weighted(x.sum_dim(0).sum_dim(1).reshape([64, 77]), 149),
    );
    check("aggregate, both CFG rows", [6, 2, 64, 77], 50, |x| {
        weighted(
            aggregate(&[x.clone(), x * 0.5], &BRANCH_ROWS, MapRows::Both),
            150,
        )
    });
    check("aggregate, the positive row", [6, 2, 64, 77], 51, |x| {
        weighted(aggregate(&[x], &BRANCH_ROWS, MapRows::Cond), 151)
    });
    check("contrastive_loss of maps", [3, 64, 77], 52, |x| {
        contrastive_loss(&x, &groups(), 0.5)
    });
    check("aggregate + contrastive_loss", [6, 2, 64, 77], 53, |x| {
        contrastive_loss(
            &aggregate(&[x], &BRANCH_ROWS, MapRows::Both),
            &groups(),
            0.5,
        )
    });
}

#[test]
fn toyworld_clora_updates_lower_the_loss() {
    // The smoke run's CLoRA image as the harness makes it (the committed model, the dots and stripes LoRAs,
    // "a circle and a square", DDIM, the official default step size 20, 5 extra updates at step 0), for its
    // first step only. Prints each update's loss and the update's size and direction, values to compare
    // between backends (the first loss is the forward's alone; the later ones follow the updates); asserts
    // that the first update lowers the contrastive loss, as a gradient step of this size does here.
    let (mut sd, ids) = toyworld_with_loras(&["dots", "stripes"]);
    let loras = [("dtz", "circle"), ("stz", "square")]
        .into_iter()
        .zip(ids)
        .map(|((trigger, noun), id)| LoraRef {
            id,
            weight: 1.0,
            concept: ConceptWords {
                triggers: vec![trigger.into()],
                class_noun: noun.into(),
            },
        })
        .collect();
    sd.set_adapters(&[]).expect("no adapter active");
    let job = CompositionJob {
        base_prompt: "a circle and a square".into(),
        combined_prompt: None,
        branch_prompts: None,
        negative_prompt: String::new(),
        loras,
        style: None,
        lora_scale: 1.0,
        steps: 1,
        guidance: 7.5,
        scheduler: SchedulerKind::Ddim,
        width: 64,
        height: 64,
        clip_skip: None,
        token_indices: None,
    };
    let params = CloraParams {
        attention_stride_px: 8,
        max_iter_to_alter: 10,
        iterative_steps: vec![0],
        iterative_steps_steps: 5,
        ..CloraParams::default()
    };
    let step_size = params.step_size;
    let mut clora = Clora::<AD>::new(params);
    clora.record_latents = true;
    let z0 = values(26, 4 * 16 * 16);
    compose(
        &mut sd,
        &mut clora,
        &job,
        tensor(z0.clone(), [1, 4, 16, 16]),
    )
    .expect("a CLoRA image");
    let rec = &clora.records()[0];
    let v = values(27, 4 * 16 * 16);
    let mut prev = z0;
    for (k, (loss, z)) in rec.losses.iter().zip(&rec.latents).enumerate() {
        // the gradient this update took: (z_before - z_after) / step size
        let g: Vec<f64> = prev
            .iter()
            .zip(z)
            .map(|(a, b)| (*a as f64 - *b as f64) / step_size)
            .collect();
        let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        let along: f64 = g.iter().zip(&v).map(|(a, b)| a * *b as f64).sum();
        println!("update {k}: loss {loss:.6}, |gradient| {norm:.6e}, gradient . v {along:.6e}");
        prev = z.clone();
    }
    assert!(
        rec.losses.len() >= 2 && rec.losses[1] < rec.losses[0],
        "the first update did not lower the loss: {:?}",
        rec.losses
    );
}

/// The committed toyworld model with the named committed LoRAs attached (strictly), and their ids.
fn toyworld_with_loras(names: &[&str]) -> (StableDiffusion<AD>, Vec<AdapterId>) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/toyworld");
    let mut sd =
        StableDiffusion::<AD>::load(&root.join("model"), &LoadOptions::default(), &device())
            .unwrap_or_else(|e| panic!("loading the toyworld model: {e}"));
    let ids = names
        .iter()
        .map(|name| {
            let path = root.join(format!("loras/{name}.safetensors"));
            let file = LoraFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            sd.add_lora(name, &file, 1.0, Unmatched::Error)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .id
        })
        .collect();
    (sd, ids)
}
