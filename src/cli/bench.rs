//! `harness bench`: timings of model pieces on random weights of any config (no weight file needed).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use clap::{Args, Subcommand};

use clora_harness::models::unet::{UNet2DConditionModel, UNetConfig};
use clora_harness::models::weights::VarBuilder;
use clora_harness::noise;

use super::backend::{check_precision, Device, Precision};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// One UNet forward (noise prediction) at a given size and batch.
    Unet(UnetBenchArgs),
}

#[derive(Debug, Args)]
pub struct UnetBenchArgs {
    /// `sd15` for Stable Diffusion 1.5's UNet, or a diffusers `unet/config.json`.
    #[arg(long, default_value = "sd15")]
    pub config: String,
    /// Batch size (2 = one image with classifier-free guidance).
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    /// Image width in pixels (latent = width / 8).
    #[arg(long, default_value_t = 512)]
    pub width: usize,
    /// Image height in pixels.
    #[arg(long, default_value_t = 512)]
    pub height: usize,
    /// Timed forwards after one warm-up.
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: Precision,
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.what {
        BenchWhat::Unet(a) => {
            check_precision(a.device, a.dtype)?;
            crate::with_backend!(a.device, |B, device| { unet::<B>(&a, &device) })
        }
    }
}

fn unet<B: Backend>(a: &UnetBenchArgs, device: &B::Device) -> Result<()> {
    let cfg = if a.config == "sd15" {
        UNetConfig::sd15()
    } else {
        let path = PathBuf::from(&a.config);
        UNetConfig::from_file(&path).with_context(|| format!("reading {}", path.display()))?
    };
    let t_load = Instant::now();
    let vb = VarBuilder::<B>::random(0, device, a.dtype.dtype());
    let unet = UNet2DConditionModel::load(&vb, &cfg)?;
    let load_s = t_load.elapsed().as_secs_f64();
    let (h, w) = (a.height / 8, a.width / 8);
    let sample =
        noise::gaussian::<B>(1, [a.batch, cfg.in_channels, h, w], device).cast(a.dtype.dtype());
    let context = noise::gaussian::<B>(2, [a.batch, 77, cfg.cross_attention_dim, 1], device)
        .reshape([a.batch, 77, cfg.cross_attention_dim])
        .cast(a.dtype.dtype());
    let ts = vec![500.0f32; a.batch];
    let run = || -> Result<f64> {
        let t = Instant::now();
        let out = unet.forward(sample.clone(), &ts, context.clone())?;
        // Wait for the device: reading one value back synchronises.
        let _ = out.slice([0..1, 0..1, 0..1, 0..1]).into_data();
        Ok(t.elapsed().as_secs_f64())
    };
    let warm = run()?;
    let mut times = Vec::new();
    for _ in 0..a.iters {
        times.push(run()?);
    }
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
    println!(
        "unet config={} batch={} size={}x{} device={:?} dtype={:?}: mean {:.4} s/forward (min {:.4}, warm-up {:.4}, {:.3} it/s), init {:.2} s, peak RSS {}",
        a.config,
        a.batch,
        a.width,
        a.height,
        a.device,
        a.dtype,
        mean,
        min,
        warm,
        1.0 / mean,
        load_s,
        peak_rss().map(|m| format!("{m:.0} MiB")).unwrap_or_else(|| "n/a".into())
    );
    Ok(())
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
pub fn peak_rss() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
