//! `manifest.parquet`: one row per planned job (method variant x prompt x seed x sample), rebuilt from the
//! plan and the files on disk each time, so a killed run can never leave duplicate or half-written rows.
//!
//! Columns: `hash`, `status` (`done` | `failed` | `pending`), `error`, `method`, `kind`, `variant`,
//! `params` (JSON), `swept` (JSON list), one `param_<name>` column per parameter (typed), `prompt_set`,
//! `prompt_index`, `prompt_index_in_set`, `prompt_template`, `prompt_plain`, `prompt_text`,
//! `negative_prompt`, `loras`, `seed`, `sample`, `noise_seed`, `scheduler`, `steps`, `guidance`, `image`,
//! `width`, `height`, `seconds`, `backend`, `device`, `dtype`.

use std::collections::{BTreeMap, BTreeSet};

use super::error::{HarnessError, HarnessResult};
use super::layout::RunDir;
use super::plan::Plan;
use super::sidecar::{JobFailure, Sidecar};
use super::table::{
    col_f64, col_str, col_u64, read_parquet, write_parquet, ColumnData, TableBuilder,
};
use crate::config::ParamValue;

/// Status of a job in the manifest.
pub const DONE: &str = "done";
pub const FAILED: &str = "failed";
pub const PENDING: &str = "pending";

/// Rebuilds `manifest.parquet` from `plan` and the images on disk.
pub fn write(run: &RunDir, plan: &Plan) -> HarnessResult<()> {
    let path = run.manifest();
    let mut done: BTreeMap<&str, Sidecar> = BTreeMap::new();
    let mut failed: BTreeMap<&str, JobFailure> = BTreeMap::new();
    for j in plan.unique() {
        if let Some(s) = Sidecar::read_valid(run, &j.hash) {
            done.insert(&j.hash, s);
        } else if let Some(f) = JobFailure::read(run, &j.hash) {
            failed.insert(&j.hash, f);
        }
    }
    let jobs = &plan.jobs;
    let s = |f: &dyn Fn(&super::job::Job) -> String| -> Vec<Option<String>> {
        jobs.iter().map(|j| Some(f(j))).collect()
    };
    let mut t = TableBuilder::new();
    t.str("hash", s(&|j| j.hash.clone()));
    t.str(
        "status",
        s(&|j| {
            if done.contains_key(j.hash.as_str()) {
                DONE.into()
            } else if failed.contains_key(j.hash.as_str()) {
                FAILED.into()
            } else {
                PENDING.into()
            }
        }),
    );
    t.str(
        "error",
        jobs.iter()
            .map(|j| failed.get(j.hash.as_str()).map(|f| f.error.clone()))
            .collect(),
    );
    t.str("method", s(&|j| j.method.clone()));
    t.str("kind", s(&|j| j.kind.as_str().into()));
    t.str("variant", s(&|j| j.variant.clone()));
    t.str(
        "params",
        s(&|j| serde_json::to_string(&j.params).expect("plain data")),
    );
    t.str(
        "swept",
        s(&|j| serde_json::to_string(&j.swept).expect("plain data")),
    );
    let names: BTreeSet<&str> = jobs
        .iter()
        .flat_map(|j| j.params.keys().map(String::as_str))
        .collect();
    for name in names {
        let values: Vec<Option<&ParamValue>> = jobs.iter().map(|j| j.params.get(name)).collect();
        t.push(&format!("param_{name}"), param_column(&values));
    }
    t.str("prompt_set", s(&|j| j.prompt.set.clone()));
    t.i64(
        "prompt_index",
        jobs.iter().map(|j| Some(j.prompt.index as i64)).collect(),
    );
    t.i64(
        "prompt_index_in_set",
        jobs.iter()
            .map(|j| Some(j.prompt.index_in_set as i64))
            .collect(),
    );
    t.str("prompt_template", s(&|j| j.prompt.template.clone()));
    t.str("prompt_plain", s(&|j| j.prompt.plain.clone()));
    t.str("prompt_text", s(&|j| j.prompt.text.clone()));
    t.str("negative_prompt", s(&|j| j.prompt.negative.clone()));
    t.str(
        "loras",
        s(&|j| {
            j.loras
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        }),
    );
    t.u64("seed", jobs.iter().map(|j| Some(j.seed)).collect());
    t.i64(
        "sample",
        jobs.iter().map(|j| Some(j.sample as i64)).collect(),
    );
    t.u64(
        "noise_seed",
        jobs.iter().map(|j| Some(j.noise_seed)).collect(),
    );
    t.str("scheduler", s(&|j| j.sampler.scheduler.as_str().into()));
    t.i64(
        "steps",
        jobs.iter().map(|j| Some(j.sampler.steps as i64)).collect(),
    );
    t.f64(
        "guidance",
        jobs.iter().map(|j| Some(j.sampler.guidance)).collect(),
    );
    let sc = |j: &super::job::Job| done.get(j.hash.as_str());
    t.str(
        "image",
        jobs.iter()
            .map(|j| sc(j).map(|s| s.image.clone()))
            .collect(),
    );
    t.i64(
        "width",
        jobs.iter().map(|j| sc(j).map(|s| s.width as i64)).collect(),
    );
    t.i64(
        "height",
        jobs.iter()
            .map(|j| sc(j).map(|s| s.height as i64))
            .collect(),
    );
    t.f64(
        "seconds",
        jobs.iter()
            .map(|j| sc(j).and_then(|s| s.timings.get("total").copied()))
            .collect(),
    );
    t.str(
        "backend",
        jobs.iter()
            .map(|j| sc(j).map(|s| s.backend.clone()))
            .collect(),
    );
    t.str(
        "device",
        jobs.iter()
            .map(|j| sc(j).map(|s| s.device.clone()))
            .collect(),
    );
    t.str(
        "dtype",
        jobs.iter()
            .map(|j| sc(j).map(|s| s.dtype.clone()))
            .collect(),
    );
    let mut df = t.build(&path)?;
    write_parquet(&mut df, &path)
}

/// A typed column for one parameter (strings for text and list values).
fn param_column(values: &[Option<&ParamValue>]) -> ColumnData {
    let first = values.iter().flatten().next();
    match first {
        Some(ParamValue::Bool(_)) => ColumnData::Bool(
            values
                .iter()
                .map(|v| {
                    v.and_then(|v| {
                        if let ParamValue::Bool(b) = v {
                            Some(*b)
                        } else {
                            None
                        }
                    })
                })
                .collect(),
        ),
        Some(ParamValue::Int(_)) => ColumnData::I64(
            values
                .iter()
                .map(|v| {
                    v.and_then(|v| {
                        if let ParamValue::Int(i) = v {
                            Some(*i)
                        } else {
                            None
                        }
                    })
                })
                .collect(),
        ),
        Some(ParamValue::Float(_)) => ColumnData::F64(
            values
                .iter()
                .map(|v| {
                    v.and_then(|v| {
                        if let ParamValue::Float(x) = v {
                            Some(*x)
                        } else {
                            None
                        }
                    })
                })
                .collect(),
        ),
        _ => ColumnData::Str(values.iter().map(|v| v.map(|v| v.to_string())).collect()),
    }
}

/// A manifest row as the report reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestRow {
    pub hash: String,
    pub status: String,
    /// Why the job failed (status `failed`).
    pub error: Option<String>,
    pub method: String,
    pub kind: String,
    pub variant: String,
    pub params: BTreeMap<String, ParamValue>,
    pub swept: Vec<String>,
    pub prompt_set: String,
    pub prompt_index: u64,
    pub prompt_template: String,
    pub prompt_plain: String,
    pub seed: u64,
    pub sample: u64,
    /// Relative to the run folder; `None` unless done.
    pub image: Option<String>,
    /// Wall-clock seconds the image took (`None` unless done).
    pub seconds: Option<f64>,
}

/// Reads `manifest.parquet`.
pub fn read(run: &RunDir) -> HarnessResult<Vec<ManifestRow>> {
    let path = run.manifest();
    if !path.is_file() {
        return Err(HarnessError::RunDir {
            path: run.root.clone(),
            msg: "no manifest.parquet: nothing was generated in this run folder yet".into(),
        });
    }
    let df = read_parquet(&path)?;
    let req = |v: Vec<Option<String>>, name: &str| -> HarnessResult<Vec<String>> {
        v.into_iter()
            .map(|x| {
                x.ok_or_else(|| HarnessError::table(&path, format!("column `{name}` has a null")))
            })
            .collect()
    };
    let hash = req(col_str(&df, "hash", &path)?, "hash")?;
    let status = req(col_str(&df, "status", &path)?, "status")?;
    let error = col_str(&df, "error", &path)?;
    let method = req(col_str(&df, "method", &path)?, "method")?;
    let kind = req(col_str(&df, "kind", &path)?, "kind")?;
    let variant = req(col_str(&df, "variant", &path)?, "variant")?;
    let params = req(col_str(&df, "params", &path)?, "params")?;
    let swept = req(col_str(&df, "swept", &path)?, "swept")?;
    let prompt_set = req(col_str(&df, "prompt_set", &path)?, "prompt_set")?;
    let prompt_index = col_u64(&df, "prompt_index", &path)?;
    let template = req(col_str(&df, "prompt_template", &path)?, "prompt_template")?;
    let plain = req(col_str(&df, "prompt_plain", &path)?, "prompt_plain")?;
    let seed = col_u64(&df, "seed", &path)?;
    let sample = col_u64(&df, "sample", &path)?;
    let image = col_str(&df, "image", &path)?;
    let seconds = col_f64(&df, "seconds", &path)?;
    let mut rows = Vec::with_capacity(hash.len());
    for i in 0..hash.len() {
        let bad =
            |c: &str, e: String| HarnessError::table(&path, format!("row {i}, column `{c}`: {e}"));
        rows.push(ManifestRow {
            hash: hash[i].clone(),
            status: status[i].clone(),
            error: error[i].clone(),
            method: method[i].clone(),
            kind: kind[i].clone(),
            variant: variant[i].clone(),
            params: serde_json::from_str(&params[i]).map_err(|e| bad("params", e.to_string()))?,
            swept: serde_json::from_str(&swept[i]).map_err(|e| bad("swept", e.to_string()))?,
            prompt_set: prompt_set[i].clone(),
            prompt_index: prompt_index[i].ok_or_else(|| bad("prompt_index", "null".into()))?,
            prompt_template: template[i].clone(),
            prompt_plain: plain[i].clone(),
            seed: seed[i].ok_or_else(|| bad("seed", "null".into()))?,
            sample: sample[i].ok_or_else(|| bad("sample", "null".into()))?,
            image: image[i].clone(),
            seconds: seconds[i],
        });
    }
    Ok(rows)
}
