//! The results folder of a run, `results/<name>/`:
//!
//! ```text
//! experiment.json           the validated config (absolute paths), what `harness report` reads
//! images/<hash>.png         one image per distinct job
//! images/<hash>.json        its sidecar (the job, timings, backend); written last, it marks the image done
//! images/<hash>.error.json  why a job failed (retried on the next run)
//! artifacts/<hash>/         optional per-image extras (attention maps, masks)
//! manifest.parquet          one row per planned job (method variant x prompt x seed x sample)
//! scores.parquet            one row per (image, metric, concept)
//! scores/<evaluator>/<hash>.json   cached scores of one image
//! provenance/<start>-<pid>.json    one record per invocation: config, hashes, backend, code version, timings
//! report/                   report.md, tables/*.csv|md, plots/*.png, grids/*.png
//! cache/file-hashes.json    hashes of model and LoRA files
//! ```

use std::path::{Path, PathBuf};

use super::error::{HarnessError, HarnessResult};

/// Paths inside a run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Creates the folder and its subfolders, and removes temporary files left by an abandoned write.
    pub fn create(&self) -> HarnessResult<()> {
        for d in [
            self.root.clone(),
            self.images(),
            self.provenance_dir(),
            self.root.join("cache"),
        ] {
            std::fs::create_dir_all(&d).map_err(|e| HarnessError::io(&d, e))?;
        }
        self.remove_stale_temp_files()
    }

    /// Whether this looks like a run folder (has `experiment.json`).
    pub fn check(&self) -> HarnessResult<()> {
        if !self.experiment_json().is_file() {
            return Err(HarnessError::RunDir {
                path: self.root.clone(),
                msg: "not a run folder: no experiment.json (run `harness run CONFIG` first)".into(),
            });
        }
        Ok(())
    }

    pub fn experiment_json(&self) -> PathBuf {
        self.root.join("experiment.json")
    }
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn image(&self, hash: &str) -> PathBuf {
        self.images().join(format!("{hash}.png"))
    }
    pub fn sidecar(&self, hash: &str) -> PathBuf {
        self.images().join(format!("{hash}.json"))
    }
    pub fn error_file(&self, hash: &str) -> PathBuf {
        self.images().join(format!("{hash}.error.json"))
    }
    pub fn artifacts(&self, hash: &str) -> PathBuf {
        self.root.join("artifacts").join(hash)
    }
    pub fn manifest(&self) -> PathBuf {
        self.root.join("manifest.parquet")
    }
    pub fn scores(&self) -> PathBuf {
        self.root.join("scores.parquet")
    }
    pub fn score_cache(&self, evaluator: &str, hash: &str) -> PathBuf {
        self.root
            .join("scores")
            .join(evaluator)
            .join(format!("{hash}.json"))
    }
    pub fn provenance_dir(&self) -> PathBuf {
        self.root.join("provenance")
    }
    pub fn file_hash_cache(&self) -> PathBuf {
        self.root.join("cache").join("file-hashes.json")
    }
    pub fn report_dir(&self) -> PathBuf {
        self.root.join("report")
    }

    /// The path of `p` relative to the run folder (for tables), with `/` separators.
    pub fn relative(&self, p: &Path) -> String {
        p.strip_prefix(&self.root)
            .unwrap_or(p)
            .to_string_lossy()
            .replace('\\', "/")
    }

    fn remove_stale_temp_files(&self) -> HarnessResult<()> {
        for dir in [self.root.clone(), self.images()] {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.contains(".tmp") {
                    let p = e.path();
                    std::fs::remove_file(&p).map_err(|e| HarnessError::io(&p, e))?;
                }
            }
        }
        Ok(())
    }
}
