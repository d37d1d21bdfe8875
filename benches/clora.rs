//! CLoRA step cost on the CPU backend: wall time and peak memory of one denoising step, with and without the
//! latent update, for N = 2, 3, 4 LoRAs (N + 1 branches: the base and one per LoRA), batched (all branches and
//! both CFG halves in one UNet call) against sequential (one call per branch).
//!
//! - tiny: `tests/fixtures/sd/tiny-c` at 128x128 (latent 16x16, maps 4x4), random rank-4 LoRAs (UNet attention
//!   and text-encoder attention), 5 timed steps per configuration after one warm-up step, each configuration in
//!   a fresh process.
//! - full (`CLORA_BENCH_FULL=1`): Stable Diffusion 1.5's UNet and text encoder with random weights
//!   (`VarBuilder::random`), 2 random rank-8 LoRAs, batched, one step each, measured once: a step with one latent
//!   update at `CLORA_BENCH_UPDATE_SIZE` pixels (default 256) and a step without update at
//!   `CLORA_BENCH_FORWARD_SIZE` pixels (default 512). A configuration whose estimated need exceeds the memory
//!   available is skipped with a note (the attention probabilities of the 64x64 self-attention layers are
//!   materialised: a 512x512 update with 3 branches holds ~16 GB of them for the backward pass).
//!
//! A "step" is `Clora::step` at a step index below `max_iter_to_alter` (one update: UNet forward of every branch
//! with the gradient tracked for the latent, NT-Xent, backward, `z - 20 grad`; then masks and fusion of the
//! stale prediction), or with `latent_update = false` (the forward, masks and fusion alone). The scheduler step
//! is excluded (microseconds). Peak memory is the process's `VmHWM` over the steps (reset through
//! `/proc/self/clear_refs` after loading), next to `VmRSS` after loading the model and attaching the LoRAs: the
//! difference is what the steps themselves need.
//!
//! Run: `cargo bench --bench clora` (add `CLORA_BENCH_FULL=1` for SD 1.5; `CLORA_BENCH_ONLY=tiny|full`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::{DType, Tensor};
use clora_harness::backend::Cpu;
use clora_harness::lora::{Component, LoraFile, Target, Unmatched};
use clora_harness::methods::clora::tokens::ConceptWords;
use clora_harness::methods::clora::{Clora, CloraParams};
use clora_harness::methods::{CompositionJob, CompositionMethod, LoraRef, StepContext};
use clora_harness::models::clip::text_encoder::{ClipTextConfig, ClipTextModel};
use clora_harness::models::clip::tokenizer::ClipTokenizer;
use clora_harness::models::sd::{LoadOptions, StableDiffusion};
use clora_harness::models::unet::{UNet2DConditionModel, UNetConfig};
use clora_harness::models::vae::{AutoencoderKL, VaeConfig};
use clora_harness::models::weights::VarBuilder;
use clora_harness::noise;
use clora_harness::schedulers::{self, SchedulerConfig, SchedulerKind};
use safetensors::tensor::{Dtype, TensorView};

type AD = Autodiff<Cpu>;

const NOUNS: [&str; 4] = ["cat", "dog", "bird", "fish"];
const BASE_PROMPT: &str = "A cat and a dog and a bird and a fish";

/// `VmHWM` and `VmRSS` of this process, MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Resets `VmHWM` to the current RSS (Linux >= 4.0); false where not permitted.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mem_available_mib() -> f64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::INFINITY, |kb| kb / 1024.0)
}

/// A random PEFT-format LoRA (`unet.<path>.lora_A.weight` `[r, in]`, `lora_B` `[out, r]`, no alpha: scale 1) on
/// every UNet attention projection and every text-encoder attention projection of `sd`.
fn write_random_lora(sd: &mut StableDiffusion<AD>, path: &Path, rank: usize, seed: u64) {
    let mut shapes: Vec<(String, usize, usize)> = Vec::new();
    let unet_ends = [".to_q", ".to_k", ".to_v", ".to_out.0"];
    let te_ends = [".q_proj", ".k_proj", ".v_proj", ".out_proj"];
    for (component, prefix, ends) in [
        (Component::Unet, "unet", &unet_ends),
        (Component::TextEncoder, "text_encoder", &te_ends),
    ] {
        sd.for_each_lora_target(component, &mut |p, t| {
            if let Target::Linear(l) = t {
                if ends.iter().any(|e| p.ends_with(e)) {
                    shapes.push((format!("{prefix}.{p}"), l.d_in(), l.d_out()));
                }
            }
        });
    }
    let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    for (k, (name, d_in, d_out)) in shapes.iter().enumerate() {
        let s = seed * 100_000 + 2 * k as u64;
        let a: Vec<f32> = noise::gaussian_values(s, rank * d_in)
            .iter()
            .map(|v| v / (*d_in as f32).sqrt())
            .collect();
        let b: Vec<f32> = noise::gaussian_values(s + 1, d_out * rank)
            .iter()
            .map(|v| v * 0.3 / (rank as f32).sqrt())
            .collect();
        let bytes = |v: Vec<f32>| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        tensors.push((format!("{name}.lora_A.weight"), bytes(a), vec![rank, *d_in]));
        tensors.push((
            format!("{name}.lora_B.weight"),
            bytes(b),
            vec![*d_out, rank],
        ));
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, b, s)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).expect("tensor view"),
            )
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, path).expect("write LoRA");
}

/// Attaches `n` random LoRAs; returns the job's LoRA list.
fn attach_loras(sd: &mut StableDiffusion<AD>, dir: &Path, n: usize, rank: usize) -> Vec<LoraRef> {
    (0..n)
        .map(|k| {
            let path = dir.join(format!("lora{k}_r{rank}.safetensors"));
            if !path.exists() {
                write_random_lora(sd, &path, rank, 1 + k as u64);
            }
            let load = sd
                .add_lora(
                    NOUNS[k],
                    &LoraFile::open(&path).unwrap(),
                    1.0,
                    Unmatched::Error,
                )
                .unwrap();
            LoraRef {
                id: load.id,
                weight: 1.0,
                concept: ConceptWords {
                    triggers: vec!["sks".into()],
                    class_noun: NOUNS[k].into(),
                },
            }
        })
        .collect()
}

fn job(loras: Vec<LoraRef>, size: usize) -> CompositionJob {
    CompositionJob {
        base_prompt: BASE_PROMPT.into(),
        combined_prompt: None,
        branch_prompts: None,
        negative_prompt: "nsfw".into(),
        loras,
        style: None,
        lora_scale: 1.0,
        steps: 50,
        guidance: 7.5,
        scheduler: SchedulerKind::Ddim,
        width: size,
        height: size,
        clip_skip: None,
        token_indices: None,
    }
}

struct Timing {
    seconds: Vec<f64>,
    /// RSS after loading the model and attaching the LoRAs (MiB).
    rss_setup: f64,
    /// VmHWM over the steps, warm-up included (MiB).
    peak: f64,
}

/// Runs `warmup + iters` CLoRA steps (step index 0, from the same latent) and times the last `iters`.
fn time_steps(
    sd: &mut StableDiffusion<AD>,
    job: &CompositionJob,
    p: CloraParams,
    warmup: usize,
    iters: usize,
) -> Timing {
    let rss_setup = memory().1;
    let reset = reset_peak();
    let mut clora = Clora::<AD>::new(p);
    clora.prepare(sd, job).expect("prepare");
    let scheduler =
        schedulers::build::<AD>(job.scheduler, &sd.scheduler_config, job.steps).unwrap();
    let shape = sd.latent_shape(job.width, job.height).unwrap();
    let latent: Tensor<AD, 4> = noise::gaussian(7, shape, &Default::default());
    let ctx = StepContext {
        index: 0,
        t: scheduler.timesteps()[0],
        steps: job.steps,
        guidance: job.guidance,
        scheduler: scheduler.as_ref(),
    };
    let mut seconds = Vec::new();
    for k in 0..warmup + iters {
        let t0 = Instant::now();
        let out = clora.step(sd, &ctx, latent.clone()).expect("step");
        let _ = out.eps.into_data();
        if k >= warmup {
            seconds.push(t0.elapsed().as_secs_f64());
        }
    }
    clora.finish(sd);
    Timing {
        seconds,
        rss_setup,
        peak: if reset { memory().0 } else { f64::NAN },
    }
}

fn report(what: &str, t: &Timing) {
    let mut s = t.seconds.clone();
    s.sort_by(f64::total_cmp);
    let median = s[s.len() / 2];
    println!(
        "{what}: median {median:.3} s/step (min {:.3}, {} runs); RSS after setup {:.0} MiB, peak {:.0} MiB (+{:.0} MiB for the steps)",
        s[0],
        s.len(),
        t.rss_setup,
        t.peak,
        t.peak - t.rss_setup
    );
}

fn update_params(batched: bool) -> CloraParams {
    CloraParams {
        latent_update: true,
        max_iter_to_alter: 50,
        iterative_steps: vec![],
        batched,
        ..CloraParams::default()
    }
}

/// One tiny configuration, in this process: `n` LoRAs, batched or not, with or without update.
fn tiny_case(dir: &Path, n: usize, batched: bool, update: bool) {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd/tiny-c");
    let mut sd =
        StableDiffusion::<AD>::load(&model, &LoadOptions::default(), &Default::default()).unwrap();
    let loras = attach_loras(&mut sd, dir, n, 4);
    let mode = if batched { "batched" } else { "sequential" };
    let p = CloraParams {
        latent_update: update,
        ..update_params(batched)
    };
    let t = time_steps(&mut sd, &job(loras, 128), p, 1, 5);
    let what = if update {
        "step with 1 update"
    } else {
        "step, no update  "
    };
    report(&format!("N={n} ({} branches) {mode:10} {what}", n + 1), &t);
}

/// Every tiny configuration, each in a fresh process (so that each peak is its own).
fn tiny(dir: &Path) {
    println!("== tiny-c, 128x128 (latent 16x16, maps 4x4), random rank-4 LoRAs, CPU f32, 1 warm-up + 5 timed steps");
    let exe = std::env::current_exe().unwrap();
    for n in [2, 3, 4] {
        for batched in [true, false] {
            for update in [true, false] {
                let status = std::process::Command::new(&exe)
                    .env("CLORA_BENCH_CASE", format!("{n},{batched},{update}"))
                    .env("CLORA_BENCH_DIR", dir)
                    .status()
                    .expect("run a case");
                assert!(status.success());
            }
        }
    }
}

/// SD 1.5 with random weights: UNet and text encoder at full size; a small random VAE (unused by a step, it only
/// sets the latent factor 8).
fn sd15() -> StableDiffusion<AD> {
    let device = Default::default();
    let vb = |seed| VarBuilder::<AD>::random(seed, &device, DType::F32);
    let unet_config = UNetConfig::sd15();
    let text_config = ClipTextConfig::sd15();
    let vae_config = VaeConfig {
        block_out_channels: vec![32, 32, 32, 32],
        layers_per_block: 1,
        ..VaeConfig::sd15()
    };
    StableDiffusion {
        tokenizer: ClipTokenizer::embedded().unwrap(),
        text_encoder: ClipTextModel::load(&vb(1), &text_config).unwrap(),
        unet: UNet2DConditionModel::load(&vb(2), &unet_config).unwrap(),
        vae: AutoencoderKL::load(&vb(3), &vae_config).unwrap(),
        unet_config,
        vae_config,
        text_config,
        scheduler_config: SchedulerConfig::sd15_default(),
        source: PathBuf::from("random"),
        dtype: DType::F32,
        lora: Default::default(),
    }
}

/// Rough need of one step of `branches` branches at `size` pixels: weights (~4.3 GB) plus the probabilities of the
/// five 64x64-equivalent self-attention layers (kept for the backward pass with an update, transient otherwise).
fn estimate_mib(size: usize, branches: usize, update: bool) -> f64 {
    let q = (size / 8) * (size / 8);
    let probs = (2 * branches * 8 * q * q * 4) as f64 / 1048576.0;
    4300.0 + probs * if update { 7.0 } else { 3.0 }
}

fn full(dir: &Path) {
    let env_size = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (update_size, forward_size) = (
        env_size("CLORA_BENCH_UPDATE_SIZE", 256),
        env_size("CLORA_BENCH_FORWARD_SIZE", 512),
    );
    println!("== SD 1.5 (random weights), 2 random rank-8 LoRAs (3 branches), batched, CPU f32, one step each");
    let t0 = Instant::now();
    let mut sd = sd15();
    let loras = attach_loras(&mut sd, dir, 2, 8);
    println!(
        "model + LoRAs ready in {:.1} s, RSS {:.0} MiB",
        t0.elapsed().as_secs_f64(),
        memory().1
    );
    for (size, update) in [(update_size, true), (forward_size, false)] {
        let need = estimate_mib(size, 3, update);
        let avail = mem_available_mib() + memory().1;
        let what = format!(
            "SD 1.5 {size}x{size} N=2 batched step {}",
            if update { "with 1 update" } else { "no update" }
        );
        if need > 0.9 * avail {
            println!("{what}: skipped, needs about {need:.0} MiB, {avail:.0} MiB available");
            continue;
        }
        let p = CloraParams {
            latent_update: update,
            ..update_params(true)
        };
        let t = time_steps(&mut sd, &job(loras.clone(), size), p, 0, 1);
        report(&what, &t);
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    if let Ok(case) = std::env::var("CLORA_BENCH_CASE") {
        let v: Vec<&str> = case.split(',').collect();
        let dir = PathBuf::from(std::env::var("CLORA_BENCH_DIR").unwrap());
        tiny_case(&dir, v[0].parse().unwrap(), v[1] == "true", v[2] == "true");
        return;
    }
    let only = std::env::var("CLORA_BENCH_ONLY").unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("clora-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "peak-memory reset via /proc/self/clear_refs: {}",
        if reset_peak() {
            "yes"
        } else {
            "not permitted (peaks are process-wide)"
        }
    );
    if only.is_empty() || only == "tiny" {
        tiny(&dir);
    }
    if (only.is_empty() && std::env::var("CLORA_BENCH_FULL").is_ok()) || only == "full" {
        full(&dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
