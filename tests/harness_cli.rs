//! The harness commands' `--help`: every option and argument is described.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Every option or argument of a clap help text carries a description, on its line or the next.
fn all_described(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    let mut in_list = false;
    for (i, line) in lines.iter().enumerate() {
        if line.ends_with(':') && !line.starts_with(' ') {
            in_list = line.starts_with("Options")
                || line.starts_with("Arguments")
                || line.starts_with("Commands");
            continue;
        }
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        // an entry: `  -x, --flag <V>  text`, `      --flag`, `  <ARG>` or `  command  text`
        if in_list && (2..=6).contains(&indent) && !trimmed.is_empty() {
            let same_line = trimmed.split("  ").filter(|s| !s.trim().is_empty()).count() >= 2;
            let next_line = lines.get(i + 1).is_some_and(|n| {
                let t = n.trim_start();
                !t.is_empty() && n.len() - t.len() > indent + 2
            });
            assert!(same_line || next_line, "undescribed: `{line}` in\n{text}");
        }
    }
}

#[test]
fn help_is_complete() {
    let top = help(&[]);
    for c in ["run", "eval", "report"] {
        assert!(
            top.lines().any(|l| l.trim_start().starts_with(c)),
            "`{c}` missing from\n{top}"
        );
    }
    all_described(&top);
    let run = help(&["run"]);
    for flag in [
        "<CONFIG>",
        "--out",
        "--device",
        "--dtype",
        "--dry-run",
        "--no-eval",
        "--no-report",
        "--max-images",
        "--quiet",
    ] {
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
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("run")
        .arg(&cfg)
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("bad.toml:3:")
            && err.contains("field `sampler.steps`")
            && err.contains("expected usize"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `toyworld train`'s world options are checked before anything is trained or written: each bad value is
/// named with what was expected, and neither folder is created.
#[test]
fn toyworld_train_rejects_a_bad_world_before_training() {
    let dir = std::env::temp_dir().join(format!("clora-cli-train-{}", std::process::id()));
    for (flag, value, expected) in [
        (
            "--pattern-rate",
            "1.5",
            "expected a probability between 0 and 1",
        ),
        (
            "--pattern-rate",
            "NaN",
            "expected a probability between 0 and 1",
        ),
        ("--object-counts", "0.5,0.6,0.1", "expected three shares"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_harness"))
            .args(["toyworld", "train", "--work"])
            .arg(dir.join("work"))
            .arg("--out")
            .arg(dir.join("model"))
            .args([flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {value} was accepted");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains(&format!("{flag} {value}")) || err.contains(&format!("{flag} `{value}`")),
            "{err}"
        );
        assert!(err.contains(expected), "{err}");
        assert!(!dir.exists(), "{flag} {value} created {}", dir.display());
    }
}
