//! What a report is made of: the manifest rows joined with their whole-image scores.

use std::collections::BTreeMap;

use crate::config::ParamValue;
use crate::harness::manifest::{self, ManifestRow, DONE};
use crate::harness::table::{col_f64, col_str, read_parquet};
use crate::harness::{HarnessError, HarnessResult, RunDir};

/// A method variant, as it appears in the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantInfo {
    pub label: String,
    pub method: String,
    pub kind: String,
    pub params: BTreeMap<String, ParamValue>,
    pub swept: Vec<String>,
}

/// Manifest rows with their scores.
#[derive(Debug, Clone)]
pub struct ReportData {
    pub rows: Vec<ManifestRow>,
    /// Whole-image scores of each row, by metric.
    pub scores: Vec<BTreeMap<String, f64>>,
    /// Metrics in report order.
    pub metrics: Vec<String>,
    /// Variants in plan order.
    pub variants: Vec<VariantInfo>,
    /// Method entries in plan order.
    pub methods: Vec<String>,
}

impl ReportData {
    /// Reads the manifest and (if present) the scores of `run`. `wanted` orders and filters the metrics
    /// (empty: all scored, sorted by name).
    pub fn load(run: &RunDir, wanted: &[String]) -> HarnessResult<Self> {
        let rows = manifest::read(run)?;
        let mut by_hash: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        let path = run.scores();
        if path.is_file() {
            let df = read_parquet(&path)?;
            let hash = col_str(&df, "hash", &path)?;
            let metric = col_str(&df, "metric", &path)?;
            let concept = col_str(&df, "concept", &path)?;
            let value = col_f64(&df, "value", &path)?;
            for i in 0..hash.len() {
                if concept[i].is_some() {
                    continue;
                }
                let (Some(h), Some(m), Some(v)) = (&hash[i], &metric[i], value[i]) else {
                    return Err(HarnessError::table(
                        &path,
                        format!("row {i} has a null hash, metric or value"),
                    ));
                };
                by_hash.entry(h.clone()).or_default().insert(m.clone(), v);
            }
        }
        let scores: Vec<BTreeMap<String, f64>> = rows
            .iter()
            .map(|r| {
                if r.status == DONE {
                    by_hash.get(&r.hash).cloned().unwrap_or_default()
                } else {
                    BTreeMap::new()
                }
            })
            .collect();
        let present: Vec<String> = {
            let mut v: Vec<String> = scores.iter().flat_map(|s| s.keys().cloned()).collect();
            v.sort();
            v.dedup();
            v
        };
        let metrics = if wanted.is_empty() {
            present
        } else {
            wanted
                .iter()
                .filter(|m| present.contains(m))
                .cloned()
                .collect()
        };
        let mut variants: Vec<VariantInfo> = Vec::new();
        let mut methods: Vec<String> = Vec::new();
        for r in &rows {
            if !variants.iter().any(|v| v.label == r.variant) {
                variants.push(VariantInfo {
                    label: r.variant.clone(),
                    method: r.method.clone(),
                    kind: r.kind.clone(),
                    params: r.params.clone(),
                    swept: r.swept.clone(),
                });
            }
            if !methods.contains(&r.method) {
                methods.push(r.method.clone());
            }
        }
        Ok(Self {
            rows,
            scores,
            metrics,
            variants,
            methods,
        })
    }

    /// The values of `metric` over the rows that `keep` selects.
    pub fn values(&self, metric: &str, keep: impl Fn(&ManifestRow) -> bool) -> Vec<f64> {
        self.rows
            .iter()
            .zip(&self.scores)
            .filter(|(r, _)| keep(r))
            .filter_map(|(_, s)| s.get(metric).copied())
            .collect()
    }

    /// The prompt sets of the rows, in plan order.
    pub fn prompt_sets(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.rows {
            if !out.contains(&r.prompt_set) {
                out.push(r.prompt_set.clone());
            }
        }
        out
    }

    /// The swept axes of each method entry, in order: (method, axis names).
    pub fn axes(&self) -> Vec<(String, Vec<String>)> {
        self.methods
            .iter()
            .map(|m| {
                let swept = self
                    .variants
                    .iter()
                    .find(|v| &v.method == m)
                    .map(|v| v.swept.clone())
                    .unwrap_or_default();
                (m.clone(), swept)
            })
            .filter(|(_, s)| !s.is_empty())
            .collect()
    }

    /// The distinct values of parameter `axis` among the variants of `method`, in plan order.
    pub fn axis_values(&self, method: &str, axis: &str) -> Vec<ParamValue> {
        let mut out: Vec<ParamValue> = Vec::new();
        for v in self.variants.iter().filter(|v| v.method == method) {
            if let Some(x) = v.params.get(axis) {
                if !out.contains(x) {
                    out.push(x.clone());
                }
            }
        }
        out
    }
}
