//! The exact arithmetic of the torch (CPU, float32) and numpy (float64) calls that diffusers 0.27 makes
//! while building a schedule, so that timesteps and sigmas match to the last bits that matter.

use super::config::{BetaSchedule, SchedulerConfig};
use crate::error::Result;

/// `torch.linspace(start, end, steps, dtype=torch.float32)` on CPU: the bounds are rounded to f32, the step
/// is `(end - start) / (steps - 1)` in f32, the first half counts up from `start` and the second half down
/// from `end` (so both ends are exact), each value one fused multiply-add (torch's AVX2 kernel is compiled
/// with FMA contraction; this reproduces torch 2.2's betas bit for bit).
pub fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if steps == 0 {
        return Vec::new();
    }
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - i - 1) as f32, end)
            }
        })
        .collect()
}

/// `torch.sqrt` of a float32 value: the correctly rounded square root (what torch computes on GPUs and on
/// CPUs where MKL takes its exact AVX2 path; MKL's older kernel, used on some AMD CPUs, can be 0.75 ulp off,
/// which the scheduler tests absorb in their tolerance rather than emulate).
pub fn torch_sqrt_f32(x: f32) -> f32 {
    x.sqrt()
}

/// `torch.cumprod(x, 0)` of a float32 tensor on CPU (the running product is kept in f64, torch's CPU
/// accumulate type for float, and rounded to f32 at each element).
pub fn torch_cumprod_f32(x: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    x.iter()
        .map(|&v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// `np.linspace(start, stop, num)` (float64): `i * step + start`, the last value exactly `stop`.
pub fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let div = (num - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut y: Vec<f64> = (0..num)
        .map(|i| {
            let i = i as f64;
            if step == 0.0 {
                i / div * delta + start
            } else {
                i * step + start
            }
        })
        .collect();
    y[num - 1] = stop;
    y
}

/// `np.arange(start, stop, step)` with a float step: length `ceil((stop - start) / step)`, values
/// `start + i * ((start + step) - start)` (numpy fills from the first two values).
pub fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let second = start + step;
    let delta = second - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => second,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `np.round` (half to even).
pub fn np_round(x: f64) -> f64 {
    x.round_ties_even()
}

/// `np.interp(x, np.arange(len(fp)), fp)`.
pub fn np_interp_arange(x: f64, fp: &[f64]) -> f64 {
    let n = fp.len();
    if x.is_nan() {
        return x;
    }
    if x <= 0.0 {
        return fp[0];
    }
    let last = (n - 1) as f64;
    if x >= last {
        return fp[n - 1];
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j];
    }
    let slope = (fp[j + 1] - fp[j]) / 1.0;
    let r = slope * (x - j as f64) + fp[j];
    if r.is_nan() {
        let r2 = slope * (x - (j + 1) as f64) + fp[j + 1];
        if r2.is_nan() && fp[j] == fp[j + 1] {
            return fp[j];
        }
        return r2;
    }
    r
}

/// diffusers' `_sigma_to_t(sigma, log_sigmas)` with float32 `log_sigmas` (ascending in t): the fractional
/// training timestep whose log-sigma interpolates to `ln(sigma)`.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // low_idx = cumsum(dists >= 0).argmax().clip(max=len - 2)
    let mut cum = 0usize;
    let mut best = 0usize;
    let mut best_idx = 0usize;
    for (i, &ls) in log_sigmas.iter().enumerate() {
        if log_sigma - ls as f64 >= 0.0 {
            cum += 1;
        }
        if cum > best {
            best = cum;
            best_idx = i;
        }
    }
    let low_idx = best_idx.min(log_sigmas.len() - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx];
    let high = log_sigmas[high_idx];
    // `low - log_sigma` is float64, `low - high` float32 (numpy scalar promotion).
    let w = (low as f64 - log_sigma) / (low - high) as f64;
    let w = w.clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// diffusers' `_convert_to_karras`: the Karras et al. (2022) schedule from `sigma_max` to `sigma_min`.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, num_inference_steps: usize) -> Vec<f64> {
    let rho = 7.0f64;
    let ramp = np_linspace(0.0, 1.0, num_inference_steps);
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    let span = min_inv_rho - max_inv_rho;
    ramp.iter()
        .map(|r| (max_inv_rho + r * span).powf(rho))
        .collect()
}

/// diffusers' `betas_for_alpha_bar` (cosine, `max_beta` 0.999), computed in f64 and stored as f32.
fn betas_for_alpha_bar(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        let c = ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos();
        c * c
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr` (float32 torch arithmetic).
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let cumprod = torch_cumprod_f32(&alphas);
    let mut sqrt: Vec<f32> = cumprod.iter().map(|&a| torch_sqrt_f32(a)).collect();
    let first = sqrt[0];
    let last = sqrt[sqrt.len() - 1];
    for s in &mut sqrt {
        *s -= last;
    }
    let scale = first / (first - last);
    for s in &mut sqrt {
        *s *= scale;
    }
    let bar: Vec<f32> = sqrt.iter().map(|s| s * s).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    for i in 1..bar.len() {
        out.push(1.0 - bar[i] / bar[i - 1]);
    }
    out
}

/// The training betas (f32) of a config: `trained_betas`, or the `beta_schedule`, then the zero-SNR rescale.
pub fn betas(config: &SchedulerConfig) -> Result<Vec<f32>> {
    let n = config.num_train_timesteps;
    let betas = if let Some(tb) = &config.trained_betas {
        if tb.len() != n {
            return Err(config.err(
                "trained_betas",
                format!(
                    "expected num_train_timesteps = {n} values, found {}",
                    tb.len()
                ),
            ));
        }
        tb.iter().map(|&b| b as f32).collect()
    } else {
        match config.beta_schedule {
            BetaSchedule::Linear => torch_linspace_f32(config.beta_start, config.beta_end, n),
            BetaSchedule::ScaledLinear => {
                torch_linspace_f32(config.beta_start.powf(0.5), config.beta_end.powf(0.5), n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            BetaSchedule::SquaredcosCapV2 => betas_for_alpha_bar(n),
        }
    };
    Ok(if config.rescale_betas_zero_snr {
        rescale_zero_terminal_snr(&betas)
    } else {
        betas
    })
}

/// `alphas_cumprod = torch.cumprod(1 - betas)` (f32).
pub fn alphas_cumprod(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    torch_cumprod_f32(&alphas)
}

/// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` in float32 (ascending in t).
pub fn train_sigmas_f32(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod
        .iter()
        .map(|a| torch_sqrt_f32((1.0 - a) / a))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_matches_numpy_shapes() {
        assert_eq!(np_linspace(0.0, 999.0, 1), vec![0.0]);
        let v = np_linspace(0.0, 999.0, 4);
        assert_eq!(v, vec![0.0, 333.0, 666.0, 999.0]);
        let r = np_linspace(0.0, 1.0, 3);
        assert_eq!(r, vec![0.0, 0.5, 1.0]);
    }

    #[test]
    fn arange_lengths() {
        assert_eq!(np_arange(1000.0, 0.0, -20.0).len(), 50);
        assert_eq!(np_arange(1000.0, 0.0, -1000.0 / 3.0).len(), 3);
        let v = np_arange(1000.0, 0.0, -62.5);
        assert_eq!(v.len(), 16);
        assert_eq!(np_round(v[1]), 938.0); // 937.5 rounds to even
    }

    #[test]
    fn torch_linspace_ends_exact() {
        let b = torch_linspace_f32(0.0001, 0.02, 1000);
        assert_eq!(b[0], 0.0001f32);
        assert_eq!(b[999], 0.02f32);
    }

    #[test]
    fn interp_integer_points() {
        let fp = [1.0, 2.0, 4.0];
        assert_eq!(np_interp_arange(1.0, &fp), 2.0);
        assert_eq!(np_interp_arange(1.5, &fp), 3.0);
        assert_eq!(np_interp_arange(-1.0, &fp), 1.0);
        assert_eq!(np_interp_arange(5.0, &fp), 4.0);
    }

    #[test]
    fn zero_snr_ends_at_zero() {
        let b = torch_linspace_f32(0.00085f64.sqrt(), 0.012f64.sqrt(), 1000)
            .into_iter()
            .map(|x| x * x)
            .collect::<Vec<_>>();
        let r = rescale_zero_terminal_snr(&b);
        assert_eq!(r[999], 1.0);
        let ac = alphas_cumprod(&r);
        assert_eq!(ac[999], 0.0);
        assert!((ac[0] - alphas_cumprod(&b)[0]).abs() < 1e-6);
    }
}
