//! `harness report RUN`: tables (Markdown and CSV: method x metric with confidence intervals, one
//! ablation table per swept parameter, job status), plots (metric vs each swept parameter per method,
//! method comparison bars, the trade-off of two metrics) and image grids (prompts x methods at one
//! seed), gathered in `report/report.md`.

pub mod attention;
pub mod data;
pub mod font;
pub mod grid;
pub mod plots;
pub mod stats;
pub mod tables;

use std::path::PathBuf;

use crate::harness::manifest::{DONE, FAILED, PENDING};
use crate::harness::session::read_experiment;
use crate::harness::{HarnessError, HarnessResult, RunDir};
use crate::latent_io::write_atomic;
use data::ReportData;

/// Writes the report of `run` into `run/report/`; returns the path of `report.md`.
pub fn write(run: &RunDir) -> HarnessResult<PathBuf> {
    let exp = read_experiment(run)?;
    let spec = &exp.report;
    let data = ReportData::load(run, &spec.metrics)?;
    let dir = run.report_dir();
    let tables_dir = dir.join("tables");
    let plots_dir = dir.join("plots");
    let grids_dir = dir.join("grids");
    for d in [&dir, &tables_dir, &plots_dir, &grids_dir] {
        std::fs::create_dir_all(d).map_err(|e| HarnessError::io(d, e))?;
    }
    let conf = spec.confidence;
    let pct = conf * 100.0;

    let count = |s: &str| data.rows.iter().filter(|r| r.status == s).count();
    let mut md = format!("# Report: {}\n\n", exp.name);
    md.push_str(&format!(
        "Config `{}`; {} jobs (method variant x prompt x seed x sample): {} done, {} failed, {} pending.\n\n",
        exp.file.display(),
        data.rows.len(),
        count(DONE),
        count(FAILED),
        count(PENDING)
    ));
    let missing: Vec<&String> = spec
        .metrics
        .iter()
        .filter(|m| !data.metrics.contains(m))
        .collect();
    if !missing.is_empty() {
        md.push_str(&format!(
            "No scores for {} (not computed in this run).\n\n",
            missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    md.push_str("## Methods x metrics\n\n");
    if data.metrics.is_empty() {
        md.push_str("No scores yet (`scores.parquet` is missing or empty): only the status and the image grids follow.\n\n");
    } else {
        md.push_str(&format!(
            "Mean ± half-width of the {pct:.0}% confidence interval (Student t) over the n images of each method variant (prompts x seeds x samples). CSV: `tables/methods.csv`.\n\n"
        ));
        md.push_str(&tables::write_method_table(
            &data,
            conf,
            &tables_dir,
            "methods",
            &|_| true,
        )?);
        md.push('\n');
        let sets = data.prompt_sets();
        if sets.len() > 1 {
            for set in &sets {
                md.push_str(&format!(
                    "### Prompt set `{set}`\n\nCSV: `tables/methods_{}.csv`.\n\n",
                    tables::file_safe(set)
                ));
                md.push_str(&tables::write_method_table(
                    &data,
                    conf,
                    &tables_dir,
                    &format!("methods_{}", tables::file_safe(set)),
                    &|r| &r.prompt_set == set,
                )?);
                md.push('\n');
            }
        }
        for m in &data.metrics {
            if let Some(f) = plots::bar_plot(&data, m, conf, &plots_dir)? {
                md.push_str(&format!("![{m} by method](plots/{f})\n\n"));
            }
        }
        let (mx, my) = &spec.trade_off;
        if data.metrics.contains(mx) && data.metrics.contains(my) {
            if let Some(f) = plots::tradeoff_plot(&data, mx, my, conf, &plots_dir)? {
                md.push_str(&format!(
                    "### Trade-off: {my} vs {mx}\n\n![trade-off](plots/{f})\n\n"
                ));
            }
        }

        let ablations = tables::write_ablation_tables(&data, conf, &tables_dir)?;
        if !ablations.is_empty() {
            md.push_str("## Ablations\n\nEach table pools the other swept parameters of the method. CSV: `tables/ablation_*.csv`.\n\n");
            for (title, table) in &ablations {
                md.push_str(&format!("### {title}\n\n{table}\n"));
            }
            let mut axes: Vec<String> = data.axes().into_iter().flat_map(|(_, a)| a).collect();
            axes.sort();
            axes.dedup();
            for axis in &axes {
                for m in &data.metrics {
                    if let Some(f) = plots::sweep_plot(&data, axis, m, conf, &plots_dir)? {
                        md.push_str(&format!("![{m} vs {axis}](plots/{f})\n\n"));
                    }
                }
            }
        }
    }

    let seed = spec
        .grid_seed
        .or_else(|| exp.seeds.first().copied())
        .unwrap_or(0);
    let grids = grid::write_grids(run, &data, seed, &grids_dir)?;
    if !grids.is_empty() {
        md.push_str(&format!("## Images at seed {seed}\n\n"));
        for (set, f) in &grids {
            md.push_str(&format!("![prompt set {set}](grids/{f})\n\n"));
        }
    }

    md.push_str(&attention::section(run, &data, seed));

    let times = tables::write_time_table(&data, conf, &tables_dir)?;
    if !times.is_empty() {
        md.push_str(&format!(
            "## Time per image\n\nWall-clock seconds to make each image (its sidecar's `total`: denoising, decoding, and loading where the image needed another model or LoRA); processes running side by side (`--shard`) share the machine. {pct:.0}% CI. CSV: `tables/times.csv`.\n\n{times}\n"
        ));
    }

    md.push_str("## Status\n\n");
    md.push_str(&tables::write_status_table(&data, &tables_dir)?);
    let path = dir.join("report.md");
    write_atomic(&path, md.as_bytes())?;
    Ok(path)
}
