//! Shared by the toyworld training tests: a much smaller model of the toyworld's kind and a training set of
//! random latents for it.
#![allow(dead_code)]

use std::path::Path;

use clora_harness::backend::CpuAutodiff;
use clora_harness::toyworld::arch::ToyArch;
use clora_harness::toyworld::latent_data::LatentSet;
use clora_harness::toyworld::train_base::{train_base, BaseOutcome, BaseTrainConfig};
use clora_harness::toyworld::ToyResult;

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
    captioned_latents(
        arch,
        (0..n).map(|i| format!("a red circle {i}")).collect(),
        5,
    )
}

/// Random latents (means drawn with `seed`, small posterior deviations), one example per caption.
pub fn captioned_latents(arch: &ToyArch, captions: Vec<String>, seed: u64) -> LatentSet {
    let n = captions.len();
    let l = arch.latent_channels * arch.latent_size() * arch.latent_size();
    let tok = arch.tokenizer().unwrap();
    LatentSet {
        means: clora_harness::noise::gaussian_values(seed, n * l),
        stds: vec![0.05; n * l],
        latent_len: l,
        ids: captions.iter().flat_map(|c| tok.encode(c)).collect(),
        captions,
    }
}

/// The tests' base phase: 4 steps at batch 4 on 8 examples, a log line every 2 steps.
pub fn tiny_base_config() -> BaseTrainConfig {
    BaseTrainConfig {
        steps: 4,
        batch: 4,
        dataset: 8,
        warmup: 2,
        log_every: 2,
        ..BaseTrainConfig::default()
    }
}

/// Runs the base phase on `data` in `work` (the embedded tokenizer at the arch's context, latents unscaled),
/// keeping its log lines.
pub fn train_base_logged(
    arch: &ToyArch,
    cfg: &BaseTrainConfig,
    data: &LatentSet,
    work: &Path,
) -> (ToyResult<BaseOutcome>, Vec<String>) {
    let tok = arch.tokenizer().unwrap();
    let mut lines = Vec::new();
    let out = train_base::<CpuAutodiff>(
        arch,
        cfg,
        data,
        1.0,
        &tok,
        work,
        &Default::default(),
        &mut |l: &str| lines.push(l.to_string()),
    );
    (out, lines)
}
