//! Cost of unfused LoRA adapters against fused ones: one UNet forward (CPU backend) with 1, 2 and 4 random LoRAs
//! on the attention projections (`to_q`, `to_k`, `to_v`, `to_out.0`).
//!
//! Variants, batch 2 (one image with classifier-free guidance):
//! - `base`: no LoRA; `fused_N`: N LoRAs merged into the weights (the same work as `base`, whatever N);
//! - `unfused_N`: N adapters acting on every row (`W x + sum_k s_k B_k (A_k x)`, packed into two matmuls);
//! - `rows_N` / `base_bN`: the batched-branch forward of CLoRA, batch 2(N+1) with rows [base, LoRA 1..N] x 2,
//!   against the base model at the same batch.
//!
//! Configs: `tiny-a` (the parity fixture, 64x64 pixels, rank 8) always; SD 1.5's UNet with random weights
//! (`VarBuilder::random`, rank 16) when `CLORA_BENCH_FULL=1`, at `CLORA_BENCH_SIDE` pixels (default 256: a 512x512
//! forward takes about half a minute on 2 cores). Run: `cargo bench --bench lora`.

use std::path::Path;
use std::time::Duration;

use burn::tensor::{DType, Tensor, TensorData};
use clora_harness::backend::Cpu;
use clora_harness::lora::linear::LinearAdapter;
use clora_harness::lora::{LoraTargets, RowMultipliers, Target};
use clora_harness::models::unet::{UNet2DConditionModel, UNetConfig};
use clora_harness::models::weights::{VarBuilder, WeightStore};
use clora_harness::noise;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode};

type B = Cpu;

const ATTENTION: [&str; 4] = [".to_q", ".to_k", ".to_v", ".to_out.0"];

fn random(seed: u64, shape: [usize; 2], std: f32) -> Tensor<B, 2> {
    let n = shape[0] * shape[1];
    let v = noise::gaussian_values(seed, n)
        .into_iter()
        .map(|x| x * std)
        .collect();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

/// Detaches everything, then attaches `n` random rank-`rank` LoRAs to every attention projection.
fn attach(unet: &mut UNet2DConditionModel<B>, n: usize, rank: usize) {
    let mut seed = 0;
    unet.for_each_target("", &mut |path, t| {
        let Target::Linear(l) = t else {
            if let Target::Conv2d(c) = t {
                c.remove_loras();
            }
            return;
        };
        l.remove_loras();
        if !ATTENTION.iter().any(|s| path.ends_with(s)) {
            return;
        }
        let (d_in, d_out) = (l.d_in(), l.d_out());
        for k in 0..n {
            seed += 2;
            l.attach_lora(LinearAdapter {
                id: k,
                down: random(seed, [d_in, rank], (1.0 / d_in as f32).sqrt()),
                up: random(seed + 1, [rank, d_out], 0.3 / (rank as f32).sqrt()),
                alpha_scale: 1.0,
            });
        }
    });
}

fn refresh(unet: &mut UNet2DConditionModel<B>, mult: &RowMultipliers) {
    unet.for_each_target("", &mut |_, t| match t {
        Target::Linear(l) => l.refresh_lora(mult),
        Target::Conv2d(c) => c.refresh_lora(mult),
    });
}

fn fuse(unet: &mut UNet2DConditionModel<B>, n: usize) {
    let contributions: Vec<(usize, f64)> = (0..n).map(|k| (k, 1.0)).collect();
    unet.for_each_target("", &mut |_, t| {
        if let Target::Linear(l) = t {
            l.fuse_lora(&contributions);
        }
    });
    refresh(unet, &RowMultipliers::none());
}

fn inputs(cfg: &UNetConfig, batch: usize, side: usize) -> (Tensor<B, 4>, Tensor<B, 3>, Vec<f32>) {
    let device = Default::default();
    let sample = noise::gaussian::<B>(1, [batch, cfg.in_channels, side, side], &device);
    let d = cfg.cross_attention_dim;
    let context = noise::gaussian::<B>(2, [batch, 77, d, 1], &device).reshape([batch, 77, d]);
    (sample, context, vec![500.0; batch])
}

fn run(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    unet: &UNet2DConditionModel<B>,
    x: &(Tensor<B, 4>, Tensor<B, 3>, Vec<f32>),
) {
    group.bench_function(name, |b| {
        b.iter(|| {
            unet.forward(x.0.clone(), &x.2, x.1.clone())
                .unwrap()
                .into_data()
        })
    });
}

/// Every variant on one UNet (adapters are re-attached between variants).
fn variants(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    unet: &mut UNet2DConditionModel<B>,
    cfg: &UNetConfig,
    side: usize,
    rank: usize,
    counts: &[usize],
    rows_n: &[usize],
) {
    let b2 = inputs(cfg, 2, side);
    attach(unet, 0, rank);
    run(group, "base", unet, &b2);
    for &n in counts {
        attach(unet, n, rank);
        refresh(
            unet,
            &RowMultipliers::AllRows((0..n).map(|k| (k, 1.0)).collect()),
        );
        run(group, &format!("unfused_{n}"), unet, &b2);
        fuse(unet, n);
        run(group, &format!("fused_{n}"), unet, &b2);
    }
    for &n in rows_n {
        let batch = 2 * (n + 1);
        let x = inputs(cfg, batch, side);
        attach(unet, 0, rank);
        run(group, &format!("base_b{batch}"), unet, &x);
        attach(unet, n, rank);
        let branch: Vec<Vec<(usize, f64)>> = (0..=n)
            .map(|k| if k == 0 { vec![] } else { vec![(k - 1, 1.0)] })
            .collect();
        let rows = [branch.clone(), branch].concat();
        refresh(unet, &RowMultipliers::PerRow(rows));
        run(group, &format!("rows_{n}_b{batch}"), unet, &x);
    }
    attach(unet, 0, rank);
}

fn bench_lora(c: &mut Criterion) {
    let device = Default::default();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd/tiny-a/unet");
    let cfg = UNetConfig::from_file(&dir.join("config.json")).expect("tiny-a config");
    let store = WeightStore::open_component(&dir, &["diffusion_pytorch_model.safetensors"])
        .expect("tiny-a weights");
    let mut unet =
        UNet2DConditionModel::load(&VarBuilder::<B>::new(store, &device, DType::F32), &cfg)
            .unwrap();
    let mut group = c.benchmark_group("lora_tiny-a_64px_r8");
    variants(&mut group, &mut unet, &cfg, 8, 8, &[1, 2, 4], &[1, 2, 4]);
    group.finish();

    if std::env::var("CLORA_BENCH_FULL").is_ok() {
        let side_px: usize = std::env::var("CLORA_BENCH_SIDE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(256);
        let cfg = UNetConfig::sd15();
        let mut unet =
            UNet2DConditionModel::load(&VarBuilder::<B>::random(0, &device, DType::F32), &cfg)
                .unwrap();
        let mut group = c.benchmark_group(format!("lora_sd15_{side_px}px_r16"));
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_secs(30));
        let rows: Vec<usize> = if std::env::var("CLORA_BENCH_ROWS").is_ok() {
            vec![2]
        } else {
            vec![]
        };
        variants(
            &mut group,
            &mut unet,
            &cfg,
            side_px / 8,
            16,
            &[1, 2, 4],
            &rows,
        );
        group.finish();
    }
}

criterion_group!(benches, bench_lora);
criterion_main!(benches);
