//! Kill test: `harness run` killed with SIGKILL at several points (start-up, mid-generation, during
//! evaluation and report) and restarted ends with the same tables and images as an uninterrupted run,
//! with no duplicate or corrupt rows; Ctrl-C finishes the current image and stops cleanly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clora_harness::harness::table::{col_f64, col_str, read_parquet};

const IMAGES: usize = 12;

fn setup(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd/tiny-a");
    let cfg = format!(
        r#"
seeds = [0, 1, 2, 3]
[run]
name = "kill"
[model]
path = "{}"
[[prompt_sets]]
name = "p"
prompts = ["a red ball", "a blue cube", "a green cone"]
[[methods]]
method = "base"
[sampler]
steps = 3
width = 64
height = 64
[metrics]
scores = ["mean_luma", "rms_contrast"]
[report]
trade_off = ["mean_luma", "rms_contrast"]
"#,
        model.display()
    );
    let p = dir.join("kill.toml");
    std::fs::write(&p, cfg).unwrap();
    p
}

fn harness(cfg: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_harness"));
    c.arg("run")
        .arg(cfg)
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn done_images(run: &Path) -> usize {
    std::fs::read_dir(run.join("images"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.ends_with(".json") && !n.ends_with(".error.json") && !n.starts_with('.')
                })
                .count()
        })
        .unwrap_or(0)
}

/// Starts a run and kills it (SIGKILL) once `ready()` holds, or `delay` after `ready()` first holds.
/// Returns whether the kill happened before the run finished on its own.
fn kill_when(cfg: &Path, out: &Path, ready: impl Fn() -> bool, delay: Duration) -> bool {
    let mut child = harness(cfg, out).spawn().unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the run failed on its own: {status}");
            return false;
        }
        if ready() {
            std::thread::sleep(delay);
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "the run took too long"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The manifest without its timing column, as sorted rows of strings.
fn manifest(run: &Path) -> Vec<Vec<String>> {
    let p = run.join("manifest.parquet");
    let df = read_parquet(&p).unwrap();
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .filter(|n| n != "seconds")
        .collect();
    let mut cols = Vec::new();
    for n in &names {
        let c = df
            .column(n)
            .unwrap()
            .cast(&polars::prelude::DataType::String)
            .unwrap();
        let s = c.str().unwrap().clone();
        cols.push(
            (0..s.len())
                .map(|i| s.get(i).unwrap_or("<null>").to_string())
                .collect::<Vec<_>>(),
        );
    }
    let mut rows: Vec<Vec<String>> = (0..df.height())
        .map(|i| cols.iter().map(|c| c[i].clone()).collect())
        .collect();
    rows.sort();
    rows
}

fn scores(run: &Path) -> Vec<(String, String, u64)> {
    let p = run.join("scores.parquet");
    let df = read_parquet(&p).unwrap();
    let (h, m, v) = (
        col_str(&df, "hash", &p).unwrap(),
        col_str(&df, "metric", &p).unwrap(),
        col_f64(&df, "value", &p).unwrap(),
    );
    let mut out: Vec<(String, String, u64)> = (0..h.len())
        .map(|i| {
            (
                h[i].clone().unwrap(),
                m[i].clone().unwrap(),
                v[i].unwrap().to_bits(),
            )
        })
        .collect();
    out.sort();
    out
}

fn images(run: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(run.join("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".png"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn killed_and_restarted_runs_end_like_an_uninterrupted_one() {
    let dir = std::env::temp_dir().join(format!("clora-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = setup(&dir);
    let reference = dir.join("reference");
    let status = harness(&cfg, &reference).status().unwrap();
    assert!(status.success());
    let ref_run = reference.join("kill");

    let out = dir.join("killed");
    let run = out.join("kill");
    let mut kills = 0;
    // during start-up (config, hashing, model load)
    kills += kill_when(&cfg, &out, || true, Duration::from_millis(30)) as usize;
    // mid-generation, at several image counts (the kill lands while the next image is being made)
    for k in [1, 4, 8] {
        kills += kill_when(
            &cfg,
            &out,
            || done_images(&run) >= k,
            Duration::from_millis(150),
        ) as usize;
    }
    // after the last image: during the manifest, evaluation or report
    for delay in [0, 40] {
        kills += kill_when(
            &cfg,
            &out,
            || done_images(&run) >= IMAGES,
            Duration::from_millis(delay),
        ) as usize;
    }
    assert!(kills >= 4, "only {kills} runs were killed before finishing");
    // restart until done
    let status = harness(&cfg, &out).status().unwrap();
    assert!(status.success());

    let want = manifest(&ref_run);
    let got = manifest(&run);
    assert_eq!(got.len(), IMAGES, "one manifest row per job, no duplicates");
    assert_eq!(got, want);
    let s = scores(&run);
    assert_eq!(
        s.len(),
        IMAGES * 2,
        "one score per image and metric, no duplicates"
    );
    assert_eq!(s, scores(&ref_run));
    assert_eq!(images(&run), images(&ref_run));
    for t in ["methods.csv", "methods.md", "status.csv"] {
        assert_eq!(
            std::fs::read(run.join("report/tables").join(t)).unwrap(),
            std::fs::read(ref_run.join("report/tables").join(t)).unwrap(),
            "{t}"
        );
    }
    // no temporary files left behind
    let leftovers: Vec<String> = std::fs::read_dir(run.join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_finishes_the_current_image_and_stops_cleanly() {
    interrupt_after_two_images("sigint", 1);
}

/// `timeout` and job schedulers signal the process and its group: two signals at once are one request.
#[test]
fn two_signals_sent_together_stop_like_one() {
    interrupt_after_two_images("sigint-twice", 2);
}

/// Sends `signals` SIGINTs 20 ms apart (the first handled, the next not merged into it by the kernel) once two
/// images are done, and checks the run stopped cleanly.
fn interrupt_after_two_images(tag: &str, signals: usize) {
    let dir = std::env::temp_dir().join(format!("clora-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = setup(&dir);
    let out = dir.join("out");
    let run = out.join("kill");
    let mut child = harness(&cfg, &out).spawn().unwrap();
    let t0 = Instant::now();
    while done_images(&run) < 2 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the interrupt"
        );
        assert!(t0.elapsed() < Duration::from_secs(300));
        std::thread::sleep(Duration::from_millis(5));
    }
    let kill = vec![format!("kill -INT {}", child.id()); signals].join("; sleep 0.02; ");
    let sent = Command::new("sh").arg("-c").arg(kill).status().unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "an interrupted run exits with 130"
    );
    let done = done_images(&run);
    assert!((2..IMAGES).contains(&done), "{done} images");
    // the manifest was written on the way out: done rows and pending rows, nothing half-made
    let rows = manifest(&run);
    assert_eq!(rows.len(), IMAGES);
    let p = run.join("manifest.parquet");
    let df = read_parquet(&p).unwrap();
    let status_col = col_str(&df, "status", &p).unwrap();
    assert_eq!(
        status_col
            .iter()
            .filter(|s| s.as_deref() == Some("done"))
            .count(),
        done
    );
    assert_eq!(
        status_col
            .iter()
            .filter(|s| s.as_deref() == Some("pending"))
            .count(),
        IMAGES - done
    );
    // its provenance record says so
    let prov: Vec<PathBuf> = std::fs::read_dir(run.join("provenance"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(prov.len(), 1);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&prov[0]).unwrap()).unwrap();
    assert_eq!(record["status"], "interrupted");
    assert_eq!(record["images"].as_array().unwrap().len(), done);
    // and the next run completes it
    assert!(harness(&cfg, &out).status().unwrap().success());
    assert_eq!(done_images(&run), IMAGES);
    std::fs::remove_dir_all(&dir).unwrap();
}
