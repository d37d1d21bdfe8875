//! Shared by the toyworld training tests: a much smaller model of the toyworld's kind and a training set of
//! random latents for it.
#![allow(dead_code)]

use clora_harness::models::clip::tokenizer::ClipTokenizer;
use clora_harness::toyworld::arch::ToyArch;
use clora_harness::toyworld::latent_data::LatentSet;

/// A much smaller model of the same kind, for fast tests.
pub fn tiny_arch() -> ToyArch {
    ToyArch {
        vae_channels: vec![8, 8, 8],
        unet_channels: vec![16, 32, 32],
        unet_heads: vec![1, 2, 2],
        text_hidden: 32,
        text_layers: 1,
        text_intermediate: 64,
        ..ToyArch::default()
    }
}

/// `n` examples of random latents (means from a fixed seed, small posterior deviations) captioned
/// `a red circle {i}`.
pub fn fake_latents(arch: &ToyArch, n: usize) -> LatentSet {
    let l = arch.latent_channels * arch.latent_size() * arch.latent_size();
    let tok = ClipTokenizer::embedded().unwrap();
    let captions: Vec<String> = (0..n).map(|i| format!("a red circle {i}")).collect();
    LatentSet {
        means: clora_harness::noise::gaussian_values(5, n * l),
        stds: vec![0.05; n * l],
        latent_len: l,
        ids: captions.iter().flat_map(|c| tok.encode(c)).collect(),
        captions,
    }
}
