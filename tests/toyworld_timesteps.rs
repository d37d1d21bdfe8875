//! The base training's timestep samplers: importance weights that keep the objective's mean, stratified
//! batches, the loss-aware sampler's learning, and their use in the base phase.

use burn::tensor::ElementConversion;
use clora_harness::backend::CpuAutodiff;
use clora_harness::models::blocks::probe::AttentionProbe;
use clora_harness::models::clip::tokenizer::ClipTokenizer;
use clora_harness::toyworld::arch::ToyArch;
use clora_harness::toyworld::text_unet::TextUnet;
use clora_harness::toyworld::timestep_sampling::{
    TimestepSampler, TimestepSampling, BUCKET, DEFAULT_UNIFORM_SHARE, HISTORY,
};
use clora_harness::toyworld::train_base::{
    alphas_cumprod, diffusion_batch, epsilon_objective, min_snr_weight, weighted_epsilon_loss,
    BaseTrainConfig, NoiseOptions,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

type A = CpuAutodiff;

mod common;
mod toy_common;
use common::temp_dir;
use toy_common::{fake_latents, tiny_arch, tiny_base_config, train_base_logged};

/// The toyworld schedule's Min-SNR weights at `gamma`.
fn weights(gamma: f64) -> Vec<f64> {
    alphas_cumprod(&ToyArch::scheduler_config().unwrap())
        .unwrap()
        .iter()
        .map(|&a| min_snr_weight(a / (1.0 - a), Some(gamma)) as f64)
        .collect()
}

/// `p`'s cumulative distribution below `t` and up to `t`.
fn cdf(p: &[f64], t: usize) -> (f64, f64) {
    let below: f64 = p[..t].iter().sum();
    (below, below + p[t])
}

#[test]
fn min_snr_sampling_keeps_the_objective_and_stratifies_each_batch() {
    let w = weights(0.5);
    let n = w.len();
    assert_eq!(n, 1000);
    let s = TimestepSampler::new(TimestepSampling::MinSnr, &w).unwrap();
    let p = s.probabilities().to_vec();
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    // The noisy end (weight 1) is drawn far more than the clean end (weights down to ~5e-5).
    assert!(p[999] > 100.0 * p[0], "{} vs {}", p[999], p[0]);
    // The objective mean_t w_t f(t), estimated from draws weighed by w_t * importance, for some f.
    let f = |t: usize| 1.0 + (t as f64 / 37.0).sin();
    let exact: f64 = (0..n).map(|t| w[t] * f(t)).sum::<f64>() / n as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (mut sum, mut count) = (0.0, 0usize);
    for _ in 0..500 {
        let draws = s.draw(16, &mut rng).unwrap();
        assert_eq!(draws.len(), 16);
        for (k, d) in draws.iter().enumerate() {
            // Exactly 1 / (T p_t).
            let want = 1.0 / (n as f64 * p[d.t]);
            assert!(
                ((d.importance as f64) - want).abs() < 1e-5 * want,
                "t {}: importance {} against {want}",
                d.t,
                d.importance
            );
            // Row k's draw lies in the k-th sixteenth of the cumulative distribution.
            let (lo, hi) = cdf(&p, d.t);
            let (a, b) = (k as f64 / 16.0, (k + 1) as f64 / 16.0);
            assert!(
                lo <= b + 1e-12 && hi >= a - 1e-12,
                "row {k}: t {} spans {lo}..{hi}",
                d.t
            );
            sum += w[d.t] * d.importance as f64 * f(d.t);
            count += 1;
        }
    }
    let estimate = sum / count as f64;
    assert!(
        (estimate - exact).abs() < 0.01 * exact,
        "{estimate} against {exact}"
    );
}

#[test]
fn the_uniform_sampler_leaves_the_draw_to_the_rows() {
    let s = TimestepSampler::new(TimestepSampling::Uniform, &weights(0.5)).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    assert!(s.draw(16, &mut rng).is_none());
    assert!(s.quarters().iter().all(|q| (q - 0.25).abs() < 1e-12));
    assert!(TimestepSampler::new(TimestepSampling::MinSnr, &[0.0; 10]).is_err());
    assert!(TimestepSampler::new(TimestepSampling::Loss, &[]).is_err());
}

/// A batch of one timestep from each bucket of a schedule of `n`, and its losses: 1 in the bucket of timesteps
/// 500..510, 0.01 elsewhere.
fn one_hot_bucket(n: usize) -> (Vec<usize>, Vec<f64>) {
    let all: Vec<usize> = (0..n / BUCKET).map(|b| b * BUCKET + b % BUCKET).collect();
    let losses = all
        .iter()
        .map(|&t| if t / BUCKET == 50 { 1.0 } else { 0.01 })
        .collect();
    (all, losses)
}

#[test]
fn the_loss_sampler_draws_where_the_losses_are_once_it_has_their_history() {
    let n = 1000;
    let mut s = TimestepSampler::new(TimestepSampling::Loss, &vec![1.0; n]).unwrap();
    assert!(s.learns());
    let (all, losses) = one_hot_bucket(n);
    for _ in 0..HISTORY - 1 {
        s.observe(&all, &losses);
        // Uniform until every bucket holds its history.
        assert!(s
            .probabilities()
            .iter()
            .all(|&p| (p - 1.0 / n as f64).abs() < 1e-15));
    }
    s.observe(&all, &losses);
    let p = s.probabilities().to_vec();
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    // Bucket 50: 0.9 * 1 / (1 + 99 * 0.01) / 10 + 0.1 / 1000 per timestep.
    let hot = 0.9 / 1.99 / BUCKET as f64 + DEFAULT_UNIFORM_SHARE / n as f64;
    let cold = 0.9 * 0.01 / 1.99 / BUCKET as f64 + DEFAULT_UNIFORM_SHARE / n as f64;
    assert!((p[505] - hot).abs() < 1e-12, "{}", p[505]);
    assert!((p[0] - cold).abs() < 1e-12 && (p[999] - cold).abs() < 1e-12);
    // No timestep's importance exceeds 1 / DEFAULT_UNIFORM_SHARE.
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for _ in 0..50 {
        for d in s.draw(16, &mut rng).unwrap() {
            assert!(d.importance as f64 <= 1.0 / DEFAULT_UNIFORM_SHARE + 1e-6);
        }
    }
    // Newer losses replace the old: the same losses everywhere make it uniform again.
    for _ in 0..HISTORY {
        s.observe(&all, &vec![0.3; all.len()]);
    }
    assert!(s
        .probabilities()
        .iter()
        .all(|&p| (p - 1.0 / n as f64).abs() < 1e-12));
    // The min-snr and uniform samplers learn nothing.
    let mut m = TimestepSampler::new(TimestepSampling::MinSnr, &weights(0.5)).unwrap();
    let before = m.probabilities().to_vec();
    m.observe(&all, &losses);
    assert_eq!(m.probabilities(), &before[..]);
}

#[test]
fn the_loss_samplers_uniform_share_bounds_the_importance_and_is_checked() {
    let n = 1000;
    let (all, losses) = one_hot_bucket(n);
    let learned = |share: f64| {
        let mut s = TimestepSampler::new(TimestepSampling::Loss, &vec![1.0; n])
            .unwrap()
            .with_uniform_share(share)
            .unwrap();
        for _ in 0..HISTORY {
            s.observe(&all, &losses);
        }
        s
    };
    let s = learned(0.3);
    let cold = 0.7 * 0.01 / 1.99 / BUCKET as f64 + 0.3 / n as f64;
    assert!(
        (s.probabilities()[0] - cold).abs() < 1e-12,
        "{}",
        s.probabilities()[0]
    );
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let max = (0..50)
        .flat_map(|_| s.draw(16, &mut rng).unwrap())
        .map(|d| d.importance as f64)
        .fold(0.0, f64::max);
    // The cold timesteps weigh 1 / (T p_t), within the cap of 1 / 0.3.
    assert!(
        (max - 1.0 / (n as f64 * cold)).abs() < 1e-5 && max <= 1.0 / 0.3,
        "{max}"
    );
    // Share 1: uniform, whatever the losses.
    assert!(learned(1.0)
        .probabilities()
        .iter()
        .all(|&p| (p - 1.0 / n as f64).abs() < 1e-15));
    // Shares outside (0, 1], and a share for a sampler that has none, are refused.
    for bad in [0.0, -0.1, 1.5, f64::NAN] {
        let e = TimestepSampler::new(TimestepSampling::Loss, &weights(0.5))
            .unwrap()
            .with_uniform_share(bad);
        assert!(e.is_err(), "{bad}");
    }
    let e = TimestepSampler::new(TimestepSampling::MinSnr, &weights(0.5))
        .unwrap()
        .with_uniform_share(0.3)
        .unwrap_err();
    assert!(e.to_string().contains("loss-aware sampler only"), "{e}");
    assert!(
        TimestepSampler::new(TimestepSampling::Uniform, &weights(0.5))
            .unwrap()
            .with_uniform_share(DEFAULT_UNIFORM_SHARE)
            .is_ok()
    );
}

#[test]
fn drawn_timesteps_and_their_importance_reach_the_objective() {
    let arch = tiny_arch();
    let device = Default::default();
    let data = fake_latents(&arch, 8);
    let alphas = alphas_cumprod(&ToyArch::scheduler_config().unwrap()).unwrap();
    let empty = ClipTokenizer::embedded().unwrap().encode("");
    let ls = arch.latent_size();
    let model = TextUnet::<A>::random(&arch, 7, &device).unwrap();
    let sampler = TimestepSampler::new(TimestepSampling::MinSnr, &weights(1.0)).unwrap();
    let draws = sampler.draw(8, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
    let batch = |draws: Option<&[_]>| {
        diffusion_batch::<A>(
            &data,
            [4, ls, ls],
            8,
            1.0,
            &alphas,
            &empty,
            0.0,
            draws,
            NoiseOptions::default(),
            &mut ChaCha8Rng::seed_from_u64(5),
            &device,
        )
    };
    let b = batch(Some(&draws));
    assert_eq!(
        b.timesteps,
        draws.iter().map(|d| d.t as f32).collect::<Vec<_>>()
    );
    assert_eq!(
        b.importance,
        draws.iter().map(|d| d.importance).collect::<Vec<_>>()
    );
    let uniform = batch(None);
    assert!(uniform.importance.iter().all(|&i| i == 1.0));
    let scalar = |t: burn::tensor::Tensor<A, 1>| t.into_scalar().elem::<f64>();
    // Importance 1: the Min-SNR loss; the rows are w_t * l_t, their mean the loss.
    let plain = scalar(weighted_epsilon_loss(&model, batch(None), Some(1.0)).unwrap());
    let obj =
        epsilon_objective(&model, batch(None), Some(1.0), &mut AttentionProbe::none()).unwrap();
    assert!((scalar(obj.loss) - plain).abs() < 1e-7 * plain);
    assert!((scalar(obj.rows.mean()) - plain).abs() < 1e-6 * plain);
    // Importance weighs each row.
    let mut doubled = batch(None);
    doubled.importance = (0..8).map(|r| if r < 4 { 2.0 } else { 0.0 }).collect();
    let obj =
        epsilon_objective(&model, batch(None), Some(1.0), &mut AttentionProbe::none()).unwrap();
    let rows: Vec<f64> = obj.rows.into_data().convert::<f64>().to_vec().unwrap();
    let want = rows[..4].iter().sum::<f64>() * 2.0 / 8.0;
    let got = scalar(weighted_epsilon_loss(&model, doubled, Some(1.0)).unwrap());
    assert!((got - want).abs() < 1e-6 * want, "{got} vs {want}");
}

#[test]
fn the_base_phase_trains_with_each_sampler_and_refuses_min_snr_sampling_without_gamma() {
    let arch = tiny_arch();
    let data = fake_latents(&arch, 8);
    let root = temp_dir("toyworld-timesteps");
    let run = |name: &str, sampling, gamma| {
        let work = root.join(name);
        std::fs::create_dir_all(&work).unwrap();
        let cfg = BaseTrainConfig {
            min_snr_gamma: gamma,
            timestep_sampling: sampling,
            ..tiny_base_config()
        };
        train_base_logged(&arch, &cfg, &data, &work)
    };
    let (out, lines) = run("min-snr", TimestepSampling::MinSnr, Some(0.5));
    assert!(out.unwrap().final_loss.is_finite());
    // p_t in proportion to the weights: the clean first quarter is drawn least.
    let last = lines.iter().find(|l| l.starts_with("base 4/4")).unwrap();
    assert!(last.contains("timesteps by quarter 4%/"), "{last}");
    let (out, lines) = run("loss", TimestepSampling::Loss, Some(0.5));
    assert!(out.unwrap().final_loss.is_finite());
    assert!(
        lines.iter().any(
            |l| l.starts_with("base 4/4") && l.contains("timesteps by quarter 25%/25%/25%/25%")
        ),
        "{lines:?}"
    );
    let (out, lines) = run("uniform", TimestepSampling::Uniform, Some(0.5));
    assert!(out.unwrap().final_loss.is_finite());
    assert!(
        lines.iter().all(|l| !l.contains("timesteps by quarter")),
        "{lines:?}"
    );
    let (out, _) = run("refused", TimestepSampling::MinSnr, None);
    let err = out.unwrap_err().to_string();
    assert!(err.contains("min_snr_gamma"), "{err}");
}
