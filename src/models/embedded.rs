//! The embedded default model: the toyworld's trained SD-1.x-architecture model (`assets/toyworld/model`, see
//! docs/toyworld.md), compiled into the binary. It is used whenever no model path is configured, and it goes
//! through the same loader as real checkpoints: on first use its files are written (atomically) to a cache folder
//! named after their content hash, which [`StableDiffusion::load`](super::sd::StableDiffusion::load) then reads.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::latent_io::write_atomic;

macro_rules! asset {
    ($rel:literal) => {
        (
            $rel,
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/assets/toyworld/model/",
                $rel
            ))
            .as_slice(),
        )
    };
}

/// The files of the diffusers folder (relative path, contents).
static FILES: &[(&str, &[u8])] = &[
    asset!("model_index.json"),
    asset!("scheduler/scheduler_config.json"),
    asset!("text_encoder/config.json"),
    asset!("text_encoder/model.safetensors"),
    asset!("unet/config.json"),
    asset!("unet/diffusion_pytorch_model.safetensors"),
    asset!("vae/config.json"),
    asset!("vae/diffusion_pytorch_model.safetensors"),
];

/// The sha256 of the embedded folder (of its files' names and contents, in order), hex.
pub fn sha256() -> String {
    let mut h = Sha256::new();
    for (name, bytes) in FILES {
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The short name recorded in provenance.
pub const NAME: &str = "toyworld (embedded)";

/// Where the folder is unpacked: `$CLORA_HARNESS_CACHE`, else `$XDG_CACHE_HOME/clora-harness`, else
/// `$HOME/.cache/clora-harness`, else the system temp folder.
fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("CLORA_HARNESS_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("clora-harness");
    }
    if let Some(p) = std::env::var_os("HOME") {
        return PathBuf::from(p).join(".cache").join("clora-harness");
    }
    std::env::temp_dir().join("clora-harness")
}

/// The embedded model as a diffusers folder on disk (written on first use; files that differ are rewritten).
pub fn path() -> Result<PathBuf> {
    let dir = cache_root().join(format!("embedded-toyworld-{}", &sha256()[..16]));
    unpack(&dir)?;
    Ok(dir)
}

fn unpack(dir: &Path) -> Result<()> {
    for (name, bytes) in FILES {
        let p = dir.join(name);
        let same = std::fs::metadata(&p).is_ok_and(|m| m.len() == bytes.len() as u64)
            && std::fs::read(&p).is_ok_and(|have| have == *bytes);
        if !same {
            write_atomic(&p, bytes).map_err(|e| {
                Error::invalid(
                    format!("embedded model folder {}", dir.display()),
                    format!(
                        "cannot be written ({e}); set CLORA_HARNESS_CACHE to a writable folder"
                    ),
                )
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_model_unpacks_and_its_hash_is_stable() {
        let dir = std::env::temp_dir().join(format!("clora-embedded-{}", std::process::id()));
        unpack(&dir).unwrap();
        for (name, bytes) in FILES {
            assert_eq!(std::fs::read(dir.join(name)).unwrap(), *bytes);
        }
        // a damaged file is rewritten
        std::fs::write(dir.join("unet/config.json"), b"{}").unwrap();
        unpack(&dir).unwrap();
        assert!(std::fs::read(dir.join("unet/config.json")).unwrap().len() > 2);
        assert_eq!(sha256(), sha256());
        assert_eq!(sha256().len(), 64);
        // the same loader as any diffusers folder reads it
        let sd = crate::models::sd::StableDiffusion::<crate::backend::Cpu>::load(
            &dir,
            &Default::default(),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(sd.vae_scale_factor() * sd.unet_config.sample_size, 64);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
