//! The job file of `harness generate --job FILE.toml`: one image described completely, in the schema of an
//! experiment config (the same `[model]`, `[[loras]]`, `[sampler]` tables, a prompt as in a prompt set, and
//! `[method]` written as one `[[methods]]` entry), without sweeps:
//!
//! ```toml
//! seed = 0                          # the initial noise, as `harness generate --seed` (default 0)
//! # init_latent = "noise.safetensors"  # or the initial noise from a file (tensor `latent`), instead of `seed`
//! out = "cat-dog.png"               # default: the job file's name with `.png`; `--out` wins
//! prompt = "A {cat} and a {dog}"    # or { text = "...", negative = "...", branches = {...}, token_indices, mask_indices }
//!
//! [model]
//! path = "models/stable-diffusion-v1-5"
//!
//! [[loras]]
//! name = "cat"
//! path = "loras/cat.safetensors"
//! trigger = "sks"
//! class_noun = "cat"
//!
//! [method]
//! method = "clora"
//! params = { step_size = 20.0, mask_threshold_alpha = 0.4 }
//!
//! [sampler]
//! steps = 50
//! ```
//!
//! Relative paths are relative to the job file. A list in `method.params` would describe several images: it is
//! refused (use `harness run`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::ConfigError;
use super::experiment::Experiment;
use super::load::{parse_file, resolve, Merged, Sourced};
use super::raw::{RawLora, RawMethod, RawModel, RawPrompt, RawPromptSet, RawSampler, RawSeeds};
use super::validate::validate;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJobFile {
    pub seed: Option<u64>,
    pub init_latent: Option<String>,
    pub out: Option<String>,
    pub prompt: RawPrompt,
    pub model: Option<RawModel>,
    pub loras: Option<Vec<RawLora>>,
    pub method: RawMethod,
    pub sampler: Option<RawSampler>,
}

/// A validated job file: a one-prompt, one-seed, one-method experiment and the image's own settings.
#[derive(Debug, Clone)]
pub struct JobFile {
    pub experiment: Experiment,
    /// Seed of the initial noise (`harness generate --seed`).
    pub seed: u64,
    /// The initial noise from a file instead (resolved against the job file).
    pub init_latent: Option<PathBuf>,
    /// The image (resolved against the job file; default `<stem>.png` beside it).
    pub out: PathBuf,
}

/// Reads and validates the job file `path`.
pub fn load_job_file(path: &Path) -> Result<JobFile, ConfigError> {
    let raw: RawJobFile = parse_file(path)?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let f = path;
    let mut m = Merged {
        main: path.to_path_buf(),
        files: vec![path.to_path_buf()],
        ..Default::default()
    };
    if let Some(model) = raw.model {
        m.model_path = model.path.map(|p| Sourced::new(p, f, "model.path"));
        m.model_config_dir = model
            .config_dir
            .map(|p| Sourced::new(p, f, "model.config_dir"));
        m.model_dtype = model.dtype.map(|d| Sourced::new(d, f, "model.dtype"));
    }
    for (i, l) in raw.loras.into_iter().flatten().enumerate() {
        m.loras.push(Sourced::new(l, f, format!("loras[{i}]")));
    }
    m.prompt_sets.push(Sourced::new(
        RawPromptSet {
            name: "job".into(),
            prompts: Some(vec![raw.prompt]),
            file: None,
        },
        f,
        "prompt",
    ));
    m.methods.push(Sourced::new(raw.method, f, "method"));
    let seed = raw.seed.unwrap_or(0);
    m.seeds = Some(Sourced::new(RawSeeds::List(vec![seed]), f, "seed"));
    if let Some(s) = raw.sampler {
        m.sampler.push(Sourced::new(s, f, "sampler"));
    }
    let experiment = validate(m)?;
    if let Some(e) = experiment.methods.first() {
        let swept = e.grid.swept();
        if !swept.is_empty() {
            return Err(ConfigError::field(
                path,
                format!("method.params.{}", swept[0]),
                "a list describes several images (a sweep); a job file describes one: give one value, or use `harness run` with an experiment config",
            ));
        }
    }
    let out = match raw.out {
        Some(o) => resolve(&dir, o),
        None => path.with_extension("png"),
    };
    Ok(JobFile {
        experiment,
        seed,
        init_latent: raw.init_latent.map(|p| resolve(&dir, p)),
        out,
    })
}
