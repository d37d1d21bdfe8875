//! Noise assigned to the batch's latents (Immiscible Diffusion: Li et al. 2024, "Immiscible Diffusion:
//! Accelerating Diffusion Training with Noise Assignment"; an experiment of the base training,
//! docs/toyworld.md).
//!
//! A batch draws `n` clean latents `x0_i` and `n` Gaussian noises `eps_j` independently; the assignment gives
//! row `i` the noise `eps_pi(i)` of the permutation `pi` that minimises `sum_i |x0_i - eps_pi(i)|^2` (a linear
//! assignment, Kuhn-Munkres on the `n x n` distances). Each row's noise is then still a standard normal draw
//! (a permutation of i.i.d. draws), but each image is noised towards the nearer noises of the batch.

use pathfinding::kuhn_munkres::kuhn_munkres_min;
use pathfinding::matrix::Matrix;

/// Resolution of the squared distances handed to Kuhn-Munkres (which needs an ordered integer weight):
/// distances are rounded to `1 / SCALE`.
const SCALE: f64 = 1024.0;

/// The permutation `pi` (`pi[i]`: the noise row that row `i` gets) minimising the summed squared distance
/// between `x0` rows and their noise rows. `x0` and `noise` are `[rows, len]`, row-major.
pub fn assign_noise(x0: &[f32], noise: &[f32], rows: usize, len: usize) -> Vec<usize> {
    assert_eq!(x0.len(), rows * len, "x0: expected {rows} rows of {len}");
    assert_eq!(
        noise.len(),
        rows * len,
        "noise: expected {rows} rows of {len}"
    );
    if rows < 2 {
        return (0..rows).collect();
    }
    // cost[i][j] = |x0_i - eps_j|^2, rows `[rows, rows]`
    let cost = Matrix::from_fn(rows, rows, |(i, j)| {
        let a = &x0[i * len..(i + 1) * len];
        let e = &noise[j * len..(j + 1) * len];
        let d: f64 = a
            .iter()
            .zip(e)
            .map(|(&p, &q)| {
                let d = (p - q) as f64;
                d * d
            })
            .sum();
        (d * SCALE).round() as i64
    });
    kuhn_munkres_min(&cost).1
}

/// `noise` with its rows permuted by `pi`: row `i` of the result is row `pi[i]` of `noise`.
pub fn permute_rows(noise: &[f32], pi: &[usize], len: usize) -> Vec<f32> {
    pi.iter()
        .flat_map(|&j| noise[j * len..(j + 1) * len].iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(x0: &[f32], noise: &[f32], pi: &[usize], len: usize) -> f64 {
        pi.iter()
            .enumerate()
            .map(|(i, &j)| {
                (0..len)
                    .map(|k| ((x0[i * len + k] - noise[j * len + k]) as f64).powi(2))
                    .sum::<f64>()
            })
            .sum()
    }

    fn permutations(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![vec![]];
        }
        let mut out = Vec::new();
        for p in permutations(n - 1) {
            for k in 0..=p.len() {
                let mut q = p.clone();
                q.insert(k, n - 1);
                out.push(q);
            }
        }
        out
    }

    #[test]
    fn finds_the_cheapest_permutation() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (rows, len) = (5, 12);
        for _ in 0..20 {
            let x0: Vec<f32> = (0..rows * len)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect();
            let noise: Vec<f32> = (0..rows * len)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect();
            let pi = assign_noise(&x0, &noise, rows, len);
            let mut sorted = pi.clone();
            sorted.sort();
            assert_eq!(
                sorted,
                (0..rows).collect::<Vec<_>>(),
                "not a permutation: {pi:?}"
            );
            let best = permutations(rows)
                .iter()
                .map(|p| total(&x0, &noise, p, len))
                .fold(f64::INFINITY, f64::min);
            let got = total(&x0, &noise, &pi, len);
            // the rounding to 1/SCALE per entry can only cost rows/SCALE in all
            assert!(got <= best + rows as f64 / SCALE, "{got} > best {best}");
        }
    }

    #[test]
    fn pairs_each_latent_with_its_own_shifted_noise() {
        // noise rows are the latents shuffled plus a little: the assignment must undo the shuffle
        let (rows, len) = (6, 8);
        let x0: Vec<f32> = (0..rows * len)
            .map(|v| (v as f32 * 0.37).sin() * 3.0)
            .collect();
        let shuffle = [3, 0, 5, 1, 4, 2];
        let noise: Vec<f32> = shuffle
            .iter()
            .flat_map(|&r| x0[r * len..(r + 1) * len].iter().map(|v| v + 0.01))
            .collect();
        let pi = assign_noise(&x0, &noise, rows, len);
        let back = permute_rows(&noise, &pi, len);
        for (a, b) in x0.iter().zip(&back) {
            assert!((a + 0.01 - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
