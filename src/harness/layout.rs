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
use std::time::{Duration, SystemTime};

use super::error::{HarnessError, HarnessResult};

/// A temporary file (`.<name>.tmp<pid>-<n>`, `latent_io::write_atomic`) lives from one write to its rename,
/// milliseconds; one older than this was left by a write that never finished. Younger ones may belong to
/// another `--shard` process (or machine) writing into the same run folder, and are left alone.
const STALE_TEMP_AGE: Duration = Duration::from_secs(600);

/// Paths inside a run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Creates the folder and its subfolders, and removes temporary files left by an abandoned write (older
    /// than [`STALE_TEMP_AGE`]).
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
        let now = SystemTime::now();
        for dir in [self.root.clone(), self.images()] {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !(name.starts_with('.') && name.contains(".tmp")) {
                    continue;
                }
                // another process may rename or remove it meanwhile: gone is as good as removed
                let Ok(modified) = e.metadata().and_then(|m| m.modified()) else {
                    continue;
                };
                if now.duration_since(modified).unwrap_or_default() < STALE_TEMP_AGE {
                    continue;
                }
                let p = e.path();
                match std::fs::remove_file(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(HarnessError::io(&p, e));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(dir: &Path, name: &str, age: Duration) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, b"partial").unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
        p
    }

    #[test]
    fn create_removes_abandoned_temp_files_and_keeps_those_being_written() {
        let root = std::env::temp_dir().join(format!("clora-rundir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let run = RunDir::new(&root);
        run.create().unwrap();
        let hour = Duration::from_secs(3600);
        let abandoned = [
            temp_file(&root, ".experiment.json.tmp1-0", hour),
            temp_file(&run.images(), ".abc.png.tmp1-3", hour),
        ];
        // another shard's writes, in flight
        let live = [
            temp_file(&root, ".experiment.json.tmp2-0", Duration::ZERO),
            temp_file(&run.images(), ".abc.png.tmp2-1", Duration::from_secs(5)),
        ];
        // not a temporary file, however old
        let kept = temp_file(&run.images(), "abc.png", hour);
        run.create().unwrap();
        for p in &abandoned {
            assert!(!p.exists(), "{} not removed", p.display());
        }
        for p in live.iter().chain([&kept]) {
            assert!(p.exists(), "{} removed", p.display());
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
