//! The provenance record of one invocation, `provenance/<start>-<pid>.json`: the config and its hash,
//! hashes of the model and LoRA files, backend, dtype, device, code version and the timings of every image
//! made. Rewritten atomically after each image, so a killed run keeps its record up to its last image.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::error::{HarnessError, HarnessResult};
use super::filehash::FileHasher;
use super::generator::GeneratorInfo;
use super::hash::{json_sha256, GENERATION_CODE_VERSION};
use super::layout::RunDir;
use super::plan::Plan;
use crate::config::Experiment;
use crate::latent_io::write_atomic;

#[derive(Debug, Clone, Serialize)]
pub struct FileRecord {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CodeVersion {
    pub crate_version: String,
    /// [`GENERATION_CODE_VERSION`], part of every content hash.
    pub generation: String,
    /// `git rev-parse HEAD` of the source tree, when it can be asked.
    pub git_commit: Option<String>,
    /// Whether the source tree had uncommitted changes.
    pub git_dirty: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageRecord {
    pub hash: String,
    pub variant: String,
    pub prompt: String,
    pub seed: u64,
    pub sample: usize,
    pub timings: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailureRecord {
    pub hash: String,
    pub variant: String,
    pub error: String,
}

/// The record.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `running`, `completed`, `interrupted` or `failed: <why>`.
    pub status: String,
    pub command: Vec<String>,
    pub config_files: Vec<FileRecord>,
    /// SHA-256 of `experiment.json`.
    pub experiment_sha256: String,
    pub model: Option<FileRecord>,
    pub loras: Vec<FileRecord>,
    pub backend: String,
    pub device: String,
    pub dtype: String,
    pub code: CodeVersion,
    pub host: BTreeMap<String, String>,
    pub jobs_planned: usize,
    pub images_planned: usize,
    pub images_skipped: usize,
    pub images: Vec<ImageRecord>,
    pub failures: Vec<FailureRecord>,
    /// Free-form notes of later stages (eval, report).
    pub notes: Vec<String>,
}

/// A provenance record bound to its file.
pub struct ProvenanceWriter {
    pub record: Provenance,
    path: PathBuf,
}

impl ProvenanceWriter {
    /// Starts the record of this invocation and writes it.
    pub fn start(
        run: &RunDir,
        exp: &Experiment,
        plan: &Plan,
        info: &GeneratorInfo,
        hasher: &mut FileHasher,
    ) -> HarnessResult<Self> {
        let mut config_files = Vec::new();
        for f in &exp.files {
            config_files.push(FileRecord {
                name: "config".into(),
                path: f.clone(),
                sha256: hasher.hash(f)?,
            });
        }
        for set in &exp.prompt_sets {
            if !exp.files.contains(&set.source) {
                config_files.push(FileRecord {
                    name: format!("prompt set {}", set.name),
                    path: set.source.clone(),
                    sha256: hasher.hash(&set.source)?,
                });
            }
        }
        let model = match &exp.model.path {
            Some(p) => Some(FileRecord {
                name: "model".into(),
                path: p.clone(),
                sha256: hasher.hash(p)?,
            }),
            None => None,
        };
        let mut loras = Vec::new();
        for l in &exp.loras {
            loras.push(FileRecord {
                name: l.name.clone(),
                path: l.path.clone(),
                sha256: hasher.hash(&l.path)?,
            });
        }
        let (started, stamp) = now();
        let mut host = BTreeMap::new();
        host.insert("os".into(), std::env::consts::OS.to_string());
        host.insert("arch".into(), std::env::consts::ARCH.to_string());
        host.insert(
            "cpus".into(),
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .to_string(),
        );
        let record = Provenance {
            started_at: started,
            finished_at: None,
            status: "running".into(),
            command: std::env::args().collect(),
            config_files,
            experiment_sha256: json_sha256(exp),
            model,
            loras,
            backend: info.target.backend.clone(),
            device: info.target.device.clone(),
            dtype: info.dtype.clone(),
            code: code_version(),
            host,
            jobs_planned: plan.jobs.len(),
            images_planned: plan.unique().len(),
            images_skipped: 0,
            images: Vec::new(),
            failures: Vec::new(),
            notes: Vec::new(),
        };
        let path = run
            .provenance_dir()
            .join(format!("{stamp}-{}.json", std::process::id()));
        let w = Self { record, path };
        w.save()?;
        Ok(w)
    }

    /// Writes the record (atomically).
    pub fn save(&self) -> HarnessResult<()> {
        let bytes = serde_json::to_vec_pretty(&self.record).expect("plain data");
        write_atomic(&self.path, &bytes).map_err(HarnessError::from)
    }

    /// Marks the end with `status` and writes the record.
    pub fn finish(&mut self, status: &str) -> HarnessResult<()> {
        self.record.finished_at = Some(now().0);
        self.record.status = status.to_string();
        self.save()
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// The crate version, generation version and git commit of the source tree.
pub fn code_version() -> CodeVersion {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]);
    let dirty = commit.as_ref().and_then(|_| {
        git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty())
    });
    CodeVersion {
        crate_version: crate::version().to_string(),
        generation: GENERATION_CODE_VERSION.to_string(),
        git_commit: commit,
        git_dirty: dirty,
    }
}

/// The current UTC time as ISO 8601 (`2026-11-27T06:30:00.123Z`) and as a file-name stamp
/// (`20261127T063000123Z`).
pub fn now() -> (String, String) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let ms = d.subsec_millis();
    let (y, mo, da) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    let (h, mi, se) = (s / 3600, (s / 60) % 60, s % 60);
    (
        format!("{y:04}-{mo:02}-{da:02}T{h:02}:{mi:02}:{se:02}.{ms:03}Z"),
        format!("{y:04}{mo:02}{da:02}T{h:02}{mi:02}{se:02}{ms:03}Z"),
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_819), (2027, 1, 1));
    }
}
