//! UNet forward (noise prediction) on the CPU backend, batch 2 (one image with classifier-free guidance).
//!
//! - `tiny-a`: the parity fixture model (`tests/fixtures/sd/tiny-a`), 64x64 pixels.
//! - `sd15-512`: Stable Diffusion 1.5's UNet config with random weights at 512x512 (slow on 2 cores:
//!   about half a minute per forward; set `CLORA_BENCH_FULL=1` to include it).
//!
//! The PyTorch side of the comparison is `tools/bench/unet_torch.py`; `tools/bench/unet_compare.sh` runs both.
//! Run: `cargo bench --bench unet`.

use std::path::Path;
use std::time::Duration;

use burn::tensor::{DType, Tensor};
use clora_harness::backend::Cpu;
use clora_harness::models::unet::{UNet2DConditionModel, UNetConfig};
use clora_harness::models::weights::{VarBuilder, WeightStore};
use clora_harness::noise;
use criterion::{criterion_group, criterion_main, Criterion};

type B = Cpu;

fn inputs(cfg: &UNetConfig, side: usize) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let device = Default::default();
    let sample = noise::gaussian::<B>(1, [2, cfg.in_channels, side, side], &device);
    let context = noise::gaussian::<B>(2, [2, 77, cfg.cross_attention_dim, 1], &device).reshape([
        2,
        77,
        cfg.cross_attention_dim,
    ]);
    (sample, context)
}

fn bench_unet(c: &mut Criterion) {
    let device = Default::default();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd/tiny-a/unet");
    let cfg = UNetConfig::from_file(&dir.join("config.json")).expect("tiny-a config");
    let store = WeightStore::open_component(&dir, &["diffusion_pytorch_model.safetensors"])
        .expect("tiny-a weights");
    let unet = UNet2DConditionModel::load(&VarBuilder::<B>::new(store, &device, DType::F32), &cfg)
        .expect("tiny-a");
    let (sample, context) = inputs(&cfg, 8);
    let mut group = c.benchmark_group("unet_forward");
    group.bench_function("tiny-a_64px_b2", |b| {
        b.iter(|| {
            unet.forward(sample.clone(), &[500.0, 500.0], context.clone())
                .unwrap()
                .into_data()
        })
    });
    if std::env::var("CLORA_BENCH_FULL").is_ok() {
        let cfg = UNetConfig::sd15();
        let unet =
            UNet2DConditionModel::load(&VarBuilder::<B>::random(0, &device, DType::F32), &cfg)
                .unwrap();
        let (sample, context) = inputs(&cfg, 64);
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(300));
        group.bench_function("sd15_512px_b2", |b| {
            b.iter(|| {
                unet.forward(sample.clone(), &[500.0, 500.0], context.clone())
                    .unwrap()
                    .into_data()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_unet);
criterion_main!(benches);
