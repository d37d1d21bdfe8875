//! Deterministic Gaussian noise, identical on every backend: generated on the CPU from a seed with
//! ChaCha8 and the Box-Muller transform, then moved to the device.

use burn::tensor::{backend::Backend, Tensor, TensorData};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `n` standard normal samples from `seed`.
pub fn gaussian_values(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n + 1);
    let uniform = |rng: &mut ChaCha8Rng| {
        // (0, 1]: 53 random bits, never 0 so ln() is finite.
        ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    };
    while out.len() < n {
        let (u1, u2) = (uniform(&mut rng), uniform(&mut rng));
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        out.push((r * theta.cos()) as f32);
        out.push((r * theta.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// A `[b, c, h, w]` standard normal tensor from `seed`.
pub fn gaussian<B: Backend>(seed: u64, shape: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(gaussian_values(seed, n), shape), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_standard() {
        let a = gaussian_values(7, 100_000);
        assert_eq!(a, gaussian_values(7, 100_000));
        assert_ne!(a[..10], gaussian_values(8, 10)[..]);
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }
}
