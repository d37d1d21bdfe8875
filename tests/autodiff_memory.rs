//! Generating on an autodiff backend keeps memory flat from image to image. burn 0.21's autodiff backend keeps
//! the graph entries of every operation, tracked or not, until some backward pass cleans them up; the harness's
//! generator runs every job on an autodiff backend (CLoRA's latent update needs it) and sweeps them after each
//! image (`backend::sweep_autodiff_graphs`). Without the sweep a 10-step toyworld image left ~14 MB behind.
//! Alone in its test binary so that no other test's allocations move the resident size it reads.

#![cfg(target_os = "linux")]

use burn::backend::Autodiff;
use clora_harness::backend::Cpu;
use clora_harness::config;
use clora_harness::harness::filehash::FileHasher;
use clora_harness::harness::{self, Generator, Interrupt, JobContext};

/// Resident set size of this process in MB.
fn resident_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096.0 / 1e6
}

#[test]
fn images_on_an_autodiff_backend_leave_no_memory_behind() {
    let dir = std::env::temp_dir().join(format!("clora-harness-admem-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The embedded toyworld model (no model.path), the base method, 12 seeds.
    std::fs::write(
        dir.join("exp.toml"),
        r#"
seeds = { start = 0, count = 12 }
[run]
name = "admem"
[[prompt_sets]]
name = "one"
prompts = ["a red circle and a blue square"]
[[methods]]
method = "base"
[sampler]
steps = 10
[metrics]
scores = ["mean_luma"]
"#,
    )
    .unwrap();
    let exp = config::load(&dir.join("exp.toml")).unwrap_or_else(|e| panic!("{e}"));
    let mut g = harness::SdGenerator::<Autodiff<Cpu>>::new(
        Default::default(),
        "flex",
        "cpu",
        exp.model.dtype,
    );
    let plan = harness::plan(&exp, &g.info().target, &mut FileHasher::in_memory()).unwrap();
    assert_eq!(plan.jobs.len(), 12);
    let ctx = JobContext {
        steps: &harness::generator::NoSteps,
        interrupt: &Interrupt::new(),
        artifact_dir: dir.join("artifacts"),
    };
    let mut resident = Vec::new();
    for job in &plan.jobs {
        g.generate(job, &ctx).unwrap_or_else(|e| panic!("{e}"));
        resident.push(resident_mb());
    }
    // After 4 images (the model loaded, allocator pools warm), 8 more: the sweep keeps them within a few MB;
    // without it they took ~110 MB.
    let growth = resident[11] - resident[3];
    assert!(
        growth < 40.0,
        "resident size grew by {growth:.1} MB over 8 images: {resident:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
