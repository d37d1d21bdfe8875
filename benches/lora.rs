//! Cost of unfused LoRA adapters against fused ones: one UNet forward (CPU backend) with 1, 2 and 4 random LoRAs
//! on the attention projections (`to_q`, `to_k`, `to_v`, `to_out.0`).
//!
//! Variants, batch 2 (one image with classifier-free guidance):
//! - `base`: no LoRA; `fused_N`: N LoRAs merged into the weights (the same work as `base`, whatever N);
//! - `unfused_N`: N adapters acting on every row (`W x + sum_k s_k B_k (A_k x)`, packed into two matmuls);
//! - `rows_N` / `base_bN`: the batched-branch forward of CLoRA, batch 2(N+1) with rows [base, LoRA 1..N] x 2,
//!   against the base model at the same batch.
//!
//! Configs: `tiny-a` (the parity fixture, 64x64 pixels, rank 8): criterion, then `CLORA_BENCH_ROUNDS` (30)
//! interleaved rounds of every variant (min / median, robust to load from other processes on a shared machine).
//! SD 1.5's UNet with random weights (`VarBuilder::random`, rank 16) when `CLORA_BENCH_FULL=1`: interleaved
//! rounds only (`CLORA_BENCH_FULL_ROUNDS`, default 3), at `CLORA_BENCH_SIDE` pixels (default 256: a 512x512
//! forward takes about half a minute on 2 cores); `CLORA_BENCH_ROWS=1` adds the batched-branch variant for 2
//! LoRAs. Run: `cargo bench --bench lora`.

use std::path::Path;

use burn::tensor::{DType, Tensor, TensorData};
use clora_harness::backend::Cpu;
use clora_harness::lora::linear::LinearAdapter;
use clora_harness::lora::{LoraTargets, RowMultipliers, Target};
use clora_harness::models::unet::{UNet2DConditionModel, UNetConfig};
use clora_harness::models::weights::{VarBuilder, WeightStore};
use clora_harness::noise;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};

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

/// Every variant through criterion, on one UNet (adapters are re-attached between variants).
fn criterion_variants(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    unet: &mut UNet2DConditionModel<B>,
    cfg: &UNetConfig,
    side: usize,
    rank: usize,
    variants: &[Variant],
) {
    for v in variants {
        v.configure(unet, rank);
        run(group, &v.name(), unet, &inputs(cfg, v.batch(), side));
    }
    attach(unet, 0, rank);
}

/// One configuration of the UNet's adapters and the batch it runs.
#[derive(Clone, Copy, Debug)]
enum Variant {
    Base { batch: usize },
    Unfused(usize),
    Fused(usize),
    Rows(usize),
}

impl Variant {
    fn name(self) -> String {
        match self {
            Self::Base { batch } => format!("base_b{batch}"),
            Self::Unfused(n) => format!("unfused_{n}"),
            Self::Fused(n) => format!("fused_{n}"),
            Self::Rows(n) => format!("rows_{n}_b{}", 2 * (n + 1)),
        }
    }

    fn batch(self) -> usize {
        match self {
            Self::Base { batch } => batch,
            Self::Rows(n) => 2 * (n + 1),
            _ => 2,
        }
    }

    fn configure(self, unet: &mut UNet2DConditionModel<B>, rank: usize) {
        match self {
            Self::Base { .. } => attach(unet, 0, rank),
            Self::Unfused(n) => {
                attach(unet, n, rank);
                refresh(
                    unet,
                    &RowMultipliers::AllRows((0..n).map(|k| (k, 1.0)).collect()),
                );
            }
            Self::Fused(n) => {
                attach(unet, n, rank);
                fuse(unet, n);
            }
            Self::Rows(n) => {
                attach(unet, n, rank);
                let branch: Vec<Vec<(usize, f64)>> = (0..=n)
                    .map(|k| if k == 0 { vec![] } else { vec![(k - 1, 1.0)] })
                    .collect();
                refresh(
                    unet,
                    &RowMultipliers::PerRow([branch.clone(), branch].concat()),
                );
            }
        }
    }
}

/// Interleaved timing: every round runs each variant once, so load from other processes on a shared machine
/// spreads over all variants alike; prints min and median seconds per forward.
fn interleaved(
    title: &str,
    unet: &mut UNet2DConditionModel<B>,
    cfg: &UNetConfig,
    side: usize,
    rank: usize,
    variants: &[Variant],
    rounds: usize,
) {
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..=rounds {
        for (i, v) in variants.iter().enumerate() {
            v.configure(unet, rank);
            let x = inputs(cfg, v.batch(), side);
            let t = std::time::Instant::now();
            let _ = unet
                .forward(x.0.clone(), &x.2, x.1.clone())
                .unwrap()
                .into_data();
            // round 0 warms up
            if round > 0 {
                times[i].push(t.elapsed().as_secs_f64());
            }
        }
    }
    attach(unet, 0, rank);
    println!("{title}: {rounds} interleaved rounds, seconds per forward (min / median)");
    for (v, t) in variants.iter().zip(&mut times) {
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("  {:<12} {:>9.4} / {:>9.4}", v.name(), t[0], t[t.len() / 2]);
    }
}

fn all_variants(rows: &[usize]) -> Vec<Variant> {
    let mut v = vec![Variant::Base { batch: 2 }];
    for n in [1, 2, 4] {
        v.extend([Variant::Unfused(n), Variant::Fused(n)]);
    }
    for &n in rows {
        v.extend([Variant::Base { batch: 2 * (n + 1) }, Variant::Rows(n)]);
    }
    v
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
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
    let variants = all_variants(&[1, 2, 4]);
    criterion_variants(&mut group, &mut unet, &cfg, 8, 8, &variants);
    group.finish();
    let rounds = env_usize("CLORA_BENCH_ROUNDS", 30);
    interleaved(
        "tiny-a 64px rank 8",
        &mut unet,
        &cfg,
        8,
        8,
        &variants,
        rounds,
    );

    if std::env::var("CLORA_BENCH_FULL").is_ok() {
        // criterion's 10 samples per variant take too long at this size on 2 cores: interleaved rounds only
        let side_px = env_usize("CLORA_BENCH_SIDE", 256);
        let cfg = UNetConfig::sd15();
        let mut unet =
            UNet2DConditionModel::load(&VarBuilder::<B>::random(0, &device, DType::F32), &cfg)
                .unwrap();
        let rows: Vec<usize> = if std::env::var("CLORA_BENCH_ROWS").is_ok() {
            vec![2]
        } else {
            vec![]
        };
        let title = format!("SD 1.5 UNet (random weights) {side_px}px rank 16");
        interleaved(
            &title,
            &mut unet,
            &cfg,
            side_px / 8,
            16,
            &all_variants(&rows),
            env_usize("CLORA_BENCH_FULL_ROUNDS", 3),
        );
    }
}

criterion_group!(benches, bench_lora);
criterion_main!(benches);
