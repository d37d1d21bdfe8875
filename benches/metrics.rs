//! Metric encoder throughput on CPU with random weights (no weight file needed):
//! CLIP ViT-B/32 image features and DINO ViT-S/16 (v1) and DINOv2 ViT-S/14 CLS embeddings, in images per second
//! at batch 1 and 8, plus CLIP-224 preprocessing of a real photo (decode + PIL-exact resize + crop + normalize).
//!
//!     cargo bench --bench metrics            # criterion reports "thrpt" in images/s (elem/s)

use std::hint::black_box;
use std::time::Duration;

use candle::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use clora_harness::metrics::clip::{ClipConfig, ClipVisionTransformer};
use clora_harness::metrics::dinov2::{Dinov2Config, Dinov2Model};
use clora_harness::metrics::image_io::read_rgb;
use clora_harness::metrics::preprocess::ImageProcessorConfig;
use clora_harness::metrics::vit::{DinoV1, DinoV1Config};

const BATCHES: [usize; 2] = [1, 8];

fn pixels(batch: usize, side: usize) -> Tensor {
    Tensor::randn(0f32, 1f32, (batch, 3, side, side), &Device::Cpu).expect("random pixels")
}

fn encoders(c: &mut Criterion) {
    let dev = Device::Cpu;

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let clip_cfg = ClipConfig::vit_b32();
    let clip =
        ClipVisionTransformer::new(vb.pp("vision_model"), &clip_cfg.vision).expect("CLIP B/32");
    let proj = candle_nn::linear_no_bias(768, clip_cfg.projection_dim, vb.pp("visual_projection"))
        .expect("proj");

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let dino = DinoV1::new(vb, &DinoV1Config::vit_s16()).expect("DINO S/16");

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let dinov2 = Dinov2Model::new(vb, &Dinov2Config::vit_s14()).expect("DINOv2 S/14");

    let mut g = c.benchmark_group("metric_encoders_cpu");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    for b in BATCHES {
        g.throughput(Throughput::Elements(b as u64));
        let x = pixels(b, 224);
        g.bench_function(format!("clip_vit_b32_image_features/batch{b}"), |bench| {
            bench.iter(|| {
                let f = clip
                    .forward(black_box(&x))
                    .and_then(|h| candle::Module::forward(&proj, &h));
                black_box(f.expect("forward"))
            })
        });
        g.bench_function(format!("dino_vit_s16_cls/batch{b}"), |bench| {
            bench.iter(|| black_box(dino.forward(black_box(&x)).expect("forward")))
        });
        g.bench_function(format!("dinov2_vit_s14_cls/batch{b}"), |bench| {
            bench.iter(|| black_box(dinov2.forward(black_box(&x)).expect("forward")))
        });
    }
    g.finish();
}

fn preprocessing(c: &mut Criterion) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/photos/chelsea.png");
    let p = ImageProcessorConfig::clip_default();
    let mut g = c.benchmark_group("metric_preprocess_cpu");
    g.sample_size(20).throughput(Throughput::Elements(1));
    g.bench_function("decode_png_451x300_and_clip224", |bench| {
        bench.iter(|| {
            let img = read_rgb(black_box(&path)).expect("decode");
            black_box(p.preprocess(&img).expect("preprocess"))
        })
    });
    g.finish();
}

criterion_group!(benches, encoders, preprocessing);
criterion_main!(benches);
