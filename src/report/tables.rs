//! The report's tables: method x metric (mean with CI over prompts, seeds and samples), one ablation
//! table per swept parameter of each method (marginal over the other parameters), and the job status.
//! Each is written as CSV (long format, for analysis) and returned as Markdown (wide, for reading).

use std::path::Path;

use super::data::ReportData;
use super::stats::{summarize, Summary};
use crate::config::ParamValue;
use crate::harness::manifest::{ManifestRow, DONE, FAILED, PENDING};
use crate::harness::table::{write_csv, TableBuilder};
use crate::harness::HarnessResult;

/// One row of a long-format summary table.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    /// The group: a variant label, or an axis value.
    pub group: String,
    pub metric: String,
    pub summary: Summary,
}

/// A long-format row: key columns (name, value), metric, summary.
type LongRow = (Vec<(String, String)>, String, Summary);

/// `mean ± half-width` with 3 significant decimals, or `-`.
pub fn cell(s: Option<&Summary>) -> String {
    match s {
        Some(s) if s.n > 1 => format!("{} ± {}", fmt(s.mean), fmt(s.half_width())),
        Some(s) => format!("{} (n=1)", fmt(s.mean)),
        None => "–".into(),
    }
}

/// A number with 4 significant digits.
pub fn fmt(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let mag = x.abs().log10().floor() as i32;
    let decimals = (3 - mag).clamp(0, 8) as usize;
    format!("{x:.decimals$}")
}

/// A tick label: at most 4 significant digits, trailing zeros dropped (`0.05`, `0.415`, `20`).
pub fn tick(x: f64) -> String {
    let s = fmt(x);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Markdown table from a header and rows.
pub fn markdown(header: &[String], rows: &[Vec<String>]) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
    let mut out = format!(
        "| {} |\n",
        header
            .iter()
            .map(|h| esc(h))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    out.push_str(&format!(
        "|{}\n",
        header.iter().map(|_| "---|").collect::<String>()
    ));
    for r in rows {
        out.push_str(&format!(
            "| {} |\n",
            r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
        ));
    }
    out
}

/// Per variant and metric summaries over the rows `keep` selects, in variant order.
pub fn method_summaries(
    data: &ReportData,
    confidence: f64,
    keep: &dyn Fn(&ManifestRow) -> bool,
) -> Vec<SummaryRow> {
    let mut out = Vec::new();
    for v in &data.variants {
        for m in &data.metrics {
            let vals = data.values(m, |r| r.variant == v.label && keep(r));
            if let Some(s) = summarize(&vals, confidence) {
                out.push(SummaryRow {
                    group: v.label.clone(),
                    metric: m.clone(),
                    summary: s,
                });
            }
        }
    }
    out
}

/// Per value of `axis` of `method`: summaries of each metric over all other parameters.
pub fn axis_summaries(
    data: &ReportData,
    method: &str,
    axis: &str,
    confidence: f64,
) -> Vec<(ParamValue, String, Summary)> {
    let mut out = Vec::new();
    for value in data.axis_values(method, axis) {
        for m in &data.metrics {
            let vals = data.values(m, |r| {
                r.method == method && r.params.get(axis) == Some(&value)
            });
            if let Some(s) = summarize(&vals, confidence) {
                out.push((value.clone(), m.clone(), s));
            }
        }
    }
    out
}

fn long_csv(path: &Path, key: &str, rows: &[LongRow]) -> HarnessResult<()> {
    let mut t = TableBuilder::new();
    let keys: Vec<String> = rows
        .first()
        .map(|r| r.0.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_else(|| vec![key.to_string()]);
    for (i, k) in keys.iter().enumerate() {
        t.str(
            k,
            rows.iter()
                .map(|r| r.0.get(i).map(|(_, v)| v.clone()))
                .collect(),
        );
    }
    t.str("metric", rows.iter().map(|r| Some(r.1.clone())).collect());
    t.i64("n", rows.iter().map(|r| Some(r.2.n as i64)).collect());
    t.f64("mean", rows.iter().map(|r| Some(r.2.mean)).collect());
    t.f64("std", rows.iter().map(|r| Some(r.2.std)).collect());
    t.f64("ci_low", rows.iter().map(|r| Some(r.2.lo)).collect());
    t.f64("ci_high", rows.iter().map(|r| Some(r.2.hi)).collect());
    let mut df = t.build(path)?;
    write_csv(&mut df, path)
}

/// Writes `<stem>.csv` and `<stem>.md` and returns the Markdown method x metric table over the rows `keep`
/// selects (all rows: `methods`; one prompt set: `methods_<set>`).
pub fn write_method_table(
    data: &ReportData,
    confidence: f64,
    dir: &Path,
    stem: &str,
    keep: &dyn Fn(&ManifestRow) -> bool,
) -> HarnessResult<String> {
    let rows = method_summaries(data, confidence, keep);
    let long: Vec<LongRow> = rows
        .iter()
        .map(|r| {
            let v = data
                .variants
                .iter()
                .find(|v| v.label == r.group)
                .expect("variant of the data");
            (
                vec![
                    ("variant".to_string(), r.group.clone()),
                    ("method".to_string(), v.method.clone()),
                    ("kind".to_string(), v.kind.clone()),
                ],
                r.metric.clone(),
                r.summary,
            )
        })
        .collect();
    long_csv(&dir.join(format!("{stem}.csv")), "variant", &long)?;
    let mut header = vec!["method".to_string(), "n".to_string()];
    header.extend(data.metrics.iter().cloned());
    // a variant with no job under `keep` (a method run on other prompt sets only) gets no row; one whose jobs
    // are not done yet keeps its row, with n = 0
    let md_rows: Vec<Vec<String>> = data
        .variants
        .iter()
        .filter(|v| data.rows.iter().any(|r| r.variant == v.label && keep(r)))
        .map(|v| {
            let n = data
                .rows
                .iter()
                .filter(|r| r.variant == v.label && r.status == DONE && keep(r))
                .count();
            let mut row = vec![v.label.clone(), n.to_string()];
            for m in &data.metrics {
                row.push(cell(
                    rows.iter()
                        .find(|r| r.group == v.label && &r.metric == m)
                        .map(|r| &r.summary),
                ));
            }
            row
        })
        .collect();
    let md = markdown(&header, &md_rows);
    crate::latent_io::write_atomic(&dir.join(format!("{stem}.md")), md.as_bytes())?;
    Ok(md)
}

/// Writes `times.csv` and returns the Markdown table of wall-clock seconds per image of each variant (mean
/// with its confidence interval, min, max) over the done jobs that recorded a time.
pub fn write_time_table(data: &ReportData, confidence: f64, dir: &Path) -> HarnessResult<String> {
    let mut long: Vec<LongRow> = Vec::new();
    let mut md_rows = Vec::new();
    for v in &data.variants {
        let secs: Vec<f64> = data
            .rows
            .iter()
            .filter(|r| r.variant == v.label && r.status == DONE)
            .filter_map(|r| r.seconds)
            .collect();
        let Some(s) = summarize(&secs, confidence) else {
            continue;
        };
        let (lo, hi) = secs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        long.push((
            vec![
                ("variant".to_string(), v.label.clone()),
                ("method".to_string(), v.method.clone()),
            ],
            "seconds_per_image".to_string(),
            s,
        ));
        md_rows.push(vec![
            v.label.clone(),
            s.n.to_string(),
            cell(Some(&s)),
            fmt(lo),
            fmt(hi),
        ]);
    }
    if long.is_empty() {
        return Ok(String::new());
    }
    long_csv(&dir.join("times.csv"), "variant", &long)?;
    let header: Vec<String> = ["method", "n", "seconds per image", "min", "max"]
        .map(String::from)
        .to_vec();
    Ok(markdown(&header, &md_rows))
}

/// Writes one ablation table per swept axis (`ablation_<method>_<axis>.csv|md`); returns (title, Markdown).
pub fn write_ablation_tables(
    data: &ReportData,
    confidence: f64,
    dir: &Path,
) -> HarnessResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (method, axes) in data.axes() {
        for axis in axes {
            let rows = axis_summaries(data, &method, &axis, confidence);
            let long: Vec<LongRow> = rows
                .iter()
                .map(|(v, m, s)| {
                    (
                        vec![
                            ("method".to_string(), method.clone()),
                            ("parameter".to_string(), axis.clone()),
                            ("value".to_string(), v.to_string()),
                        ],
                        m.clone(),
                        *s,
                    )
                })
                .collect();
            let stem = format!("ablation_{}_{}", file_safe(&method), file_safe(&axis));
            long_csv(&dir.join(format!("{stem}.csv")), "value", &long)?;
            let mut header = vec![axis.clone(), "n".to_string()];
            header.extend(data.metrics.iter().cloned());
            let md_rows: Vec<Vec<String>> = data
                .axis_values(&method, &axis)
                .iter()
                .map(|v| {
                    let n = data
                        .rows
                        .iter()
                        .filter(|r| {
                            r.method == method && r.params.get(&axis) == Some(v) && r.status == DONE
                        })
                        .count();
                    let mut row = vec![v.to_string(), n.to_string()];
                    for m in &data.metrics {
                        row.push(cell(
                            rows.iter()
                                .find(|(x, mm, _)| x == v && mm == m)
                                .map(|(_, _, s)| s),
                        ));
                    }
                    row
                })
                .collect();
            let md = markdown(&header, &md_rows);
            crate::latent_io::write_atomic(&dir.join(format!("{stem}.md")), md.as_bytes())?;
            out.push((format!("{method}: {axis} (other parameters pooled)"), md));
        }
    }
    Ok(out)
}

/// Writes `status.csv` (jobs per variant and status, with the first error) and returns it as Markdown.
pub fn write_status_table(data: &ReportData, dir: &Path) -> HarnessResult<String> {
    let mut t_variant = Vec::new();
    let mut counts: Vec<[usize; 3]> = Vec::new();
    let mut errors = Vec::new();
    for v in &data.variants {
        let rows: Vec<_> = data.rows.iter().filter(|r| r.variant == v.label).collect();
        let c = [DONE, FAILED, PENDING].map(|s| rows.iter().filter(|r| r.status == s).count());
        t_variant.push(v.label.clone());
        counts.push(c);
        errors.push(error_of(data, &v.label));
    }
    let path = dir.join("status.csv");
    let mut t = TableBuilder::new();
    t.str("variant", t_variant.iter().cloned().map(Some).collect());
    for (i, s) in [DONE, FAILED, PENDING].iter().enumerate() {
        t.i64(s, counts.iter().map(|c| Some(c[i] as i64)).collect());
    }
    t.str("error", errors.clone());
    let mut df = t.build(&path)?;
    write_csv(&mut df, &path)?;
    let header: Vec<String> = ["method", "done", "failed", "pending", "error"]
        .map(String::from)
        .to_vec();
    let rows: Vec<Vec<String>> = t_variant
        .iter()
        .zip(&counts)
        .zip(&errors)
        .map(|((v, c), e)| {
            vec![
                v.clone(),
                c[0].to_string(),
                c[1].to_string(),
                c[2].to_string(),
                e.clone().unwrap_or_default(),
            ]
        })
        .collect();
    Ok(markdown(&header, &rows))
}

/// The error of the first failed job of `variant`.
fn error_of(data: &ReportData, variant: &str) -> Option<String> {
    data.rows
        .iter()
        .find(|r| r.variant == variant && r.error.is_some())
        .and_then(|r| r.error.clone())
}

/// A file-name-safe version of `s`.
pub fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
