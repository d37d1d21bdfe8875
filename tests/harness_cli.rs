//! The harness commands' `--help`: every option and argument is described.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_harness")).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Every option or argument line of a clap help text carries a description.
fn all_described(text: &str) {
    let mut in_list = false;
    for line in text.lines() {
        if line.ends_with(':') && !line.starts_with(' ') {
            in_list = line.starts_with("Options") || line.starts_with("Arguments") || line.starts_with("Commands");
            continue;
        }
        if in_list && line.starts_with("  ") && !line.trim().is_empty() {
            let parts: Vec<&str> = line.trim().split("  ").filter(|s| !s.trim().is_empty()).collect();
            assert!(parts.len() >= 2, "undescribed: `{line}` in\n{text}");
        }
    }
}

#[test]
fn help_is_complete() {
    let top = help(&[]);
    for c in ["run", "eval", "report"] {
        assert!(top.lines().any(|l| l.trim_start().starts_with(c)), "`{c}` missing from\n{top}");
    }
    all_described(&top);
    let run = help(&["run"]);
    for flag in ["<CONFIG>", "--out", "--device", "--dtype", "--dry-run", "--no-eval", "--no-report", "--max-images", "--quiet"] {
        assert!(run.contains(flag), "`{flag}` missing from\n{run}");
    }
    assert!(run.contains("Ctrl-C"));
    all_described(&run);
    let report = help(&["report"]);
    assert!(report.contains("<RUN>") && report.contains("report.md"));
    all_described(&report);
    let eval = help(&["eval"]);
    assert!(eval.contains("<RUN>") && eval.contains("scores.parquet"));
    all_described(&eval);
}

#[test]
fn a_malformed_config_fails_with_one_clear_line() {
    let dir = std::env::temp_dir().join(format!("clora-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "seeds = [0]\n[sampler]\nsteps = \"many\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_harness")).arg("run").arg(&cfg).arg("--out").arg(&dir).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("bad.toml:3:") && err.contains("field `sampler.steps`") && err.contains("expected usize"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
