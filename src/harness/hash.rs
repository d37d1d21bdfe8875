//! Content hashes: SHA-256 over a canonical JSON encoding, and the seed of each image's initial noise.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The version of the code path that turns a job into pixels. It enters every job's content hash: bump
/// the suffix whenever a change to the models, schedulers, LoRA application, methods or VAE decoding can
/// change an image, so that cached images are regenerated.
pub const GENERATION_CODE_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+gen1");

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Hex SHA-256 of the canonical JSON of `value` (struct fields in declaration order, maps sorted).
pub fn json_sha256<T: Serialize>(value: &T) -> String {
    let bytes = serde_json::to_vec(value).expect("serialising plain data to JSON cannot fail");
    sha256_hex(&bytes)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The seed of the initial noise of sample `sample` of prompt `prompt_index` at experiment seed `seed`:
/// the first 8 bytes (little-endian) of SHA-256 of `"clora-noise:{seed}:{prompt_index}:{sample}"`. The same
/// for every method, so methods are compared on the same starting noise.
pub fn noise_seed(seed: u64, prompt_index: usize, sample: usize) -> u64 {
    let d = Sha256::digest(format!("clora-noise:{seed}:{prompt_index}:{sample}").as_bytes());
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_seed_depends_on_each_input() {
        let a = noise_seed(0, 0, 0);
        assert_eq!(a, noise_seed(0, 0, 0));
        assert_ne!(a, noise_seed(1, 0, 0));
        assert_ne!(a, noise_seed(0, 1, 0));
        assert_ne!(a, noise_seed(0, 0, 1));
        assert_ne!(noise_seed(1, 0, 0), noise_seed(0, 1, 0));
    }

    #[test]
    fn sha256_known_value() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
