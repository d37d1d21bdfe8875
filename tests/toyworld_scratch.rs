use std::time::Instant;
use burn::tensor::{DType, Tensor, Distribution};
use clora_harness::backend::Cpu;
use clora_harness::models::unet::UNet2DConditionModel;
use clora_harness::models::vae::AutoencoderKL;
use clora_harness::models::weights::VarBuilder;
use clora_harness::toyworld::arch::ToyArch;
type A = burn::backend::Autodiff<Cpu>;

#[test]
#[ignore]
fn timing() {
    let dev = Default::default();
    let mut arch = ToyArch::default();
    let parse = |k: &str| std::env::var(k).ok().map(|v| v.split(',').map(|x| x.parse::<usize>().unwrap()).collect::<Vec<_>>());
    if let Some(c) = parse("TCH") { arch.unet_channels = c; }
    if let Some(c) = parse("TXA") { arch.unet_cross_attention = c.iter().map(|&x| x == 1).collect(); }
    if let Some(c) = parse("THD") { arch.unet_heads = c; }
    if let Some(c) = parse("TVC") { arch.vae_channels = c; }
    let skip_vae = std::env::var("NOVAE").is_ok();
    let b: usize = std::env::var("TB").ok().and_then(|s| s.parse().ok()).unwrap_or(16);
    let unet = UNet2DConditionModel::<A>::load(&VarBuilder::random(0, &dev, DType::F32), &arch.unet_config().unwrap()).unwrap();
    let ls = arch.latent_size();
    for it in 0..3 {
        let x = Tensor::<A, 4>::random([b, 4, ls, ls], Distribution::Normal(0.0, 1.0), &dev);
        let ctx = Tensor::<A, 3>::random([b, 77, arch.text_hidden], Distribution::Normal(0.0, 1.0), &dev);
        let t0 = Instant::now();
        let y = unet.forward(x.clone(), &vec![500.0; b], ctx).unwrap();
        let loss = (y - x).powf_scalar(2.0).mean();
        let t1 = Instant::now();
        let g = loss.backward();
        let t2 = Instant::now();
        drop(g);
        eprintln!("unet b{b} it{it}: fwd {:?} bwd {:?}", t1 - t0, t2 - t1);
    }
    if skip_vae { return; }
    let vae = AutoencoderKL::<A>::load(&VarBuilder::random(0, &dev, DType::F32), &arch.vae_config(1.0).unwrap()).unwrap();
    for side in [64usize, 32] {
        for it in 0..2 {
            let x = Tensor::<A, 4>::random([b, 3, side, side], Distribution::Normal(0.0, 1.0), &dev);
            let t0 = Instant::now();
            let post = vae.encode(x.clone()).unwrap();
            let y = vae.decode(post.mean).unwrap();
            let loss = (y - x).powf_scalar(2.0).mean();
            let t1 = Instant::now();
            let g = loss.backward();
            let t2 = Instant::now();
            drop(g);
            eprintln!("vae {side}px b{b} it{it}: fwd {:?} bwd {:?}", t1 - t0, t2 - t1);
        }
    }
}
