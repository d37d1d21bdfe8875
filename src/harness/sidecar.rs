//! The sidecar of an image, `images/<hash>.json`: the job, timings and where it was made. Written after
//! the PNG; an image counts as done only when its sidecar parses, names the same hash and matches the
//! PNG's bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::hash::sha256_hex;
use super::job::Job;
use super::layout::RunDir;

/// What `images/<hash>.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    pub hash: String,
    /// The image, relative to the run folder.
    pub image: String,
    pub png_sha256: String,
    pub width: u32,
    pub height: u32,
    pub job: Job,
    /// Seconds per phase.
    pub timings: BTreeMap<String, f64>,
    pub backend: String,
    pub device: String,
    pub dtype: String,
    pub code_version: String,
    pub created_at: String,
    /// Method-specific details.
    pub details: serde_json::Value,
}

impl Sidecar {
    /// The sidecar of `hash` if the image is complete and intact.
    pub fn read_valid(run: &RunDir, hash: &str) -> Option<Sidecar> {
        let bytes = std::fs::read(run.sidecar(hash)).ok()?;
        let s: Sidecar = serde_json::from_slice(&bytes).ok()?;
        if s.hash != hash || s.job.hash != hash {
            return None;
        }
        let png = std::fs::read(run.image(hash)).ok()?;
        (sha256_hex(&png) == s.png_sha256).then_some(s)
    }
}

/// What `images/<hash>.error.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobFailure {
    pub hash: String,
    pub variant: String,
    pub error: String,
    pub at: String,
}

impl JobFailure {
    pub fn read(run: &RunDir, hash: &str) -> Option<JobFailure> {
        let bytes = std::fs::read(run.error_file(hash)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}
