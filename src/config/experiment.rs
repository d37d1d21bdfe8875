//! The validated experiment: what a config file (with its includes) describes, with every path made
//! absolute and every default applied. Serialised as `experiment.json` in the run folder, so that
//! `harness report RUN` needs nothing else.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::params::MethodKind;
use super::prompt::ConceptNames;
use super::sweep::ParamGrid;
use crate::schedulers::SchedulerKind;

/// A whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// The config file given on the command line.
    pub file: PathBuf,
    /// Every file read: the config, its includes, the prompt files.
    pub files: Vec<PathBuf>,
    /// The run's name: `results/<name>/`.
    pub name: String,
    pub model: ModelSpec,
    pub loras: Vec<LoraSpec>,
    pub prompt_sets: Vec<PromptSet>,
    pub methods: Vec<MethodEntry>,
    pub seeds: Vec<u64>,
    pub samples_per_prompt: usize,
    pub sampler: SamplerSpec,
    pub metrics: MetricsSpec,
    pub report: ReportSpec,
}

/// The SD 1.x model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// A diffusers folder or a single-file checkpoint; `None` means the embedded default model.
    pub path: Option<PathBuf>,
    /// For a single-file checkpoint: a diffusers folder whose configs describe it.
    pub config_dir: Option<PathBuf>,
    pub dtype: RunDtype,
}

/// The precision the models run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunDtype {
    F32,
    F16,
    Bf16,
}

impl RunDtype {
    pub fn as_str(self) -> &'static str {
        match self {
            RunDtype::F32 => "f32",
            RunDtype::F16 => "f16",
            RunDtype::Bf16 => "bf16",
        }
    }

    pub fn dtype(self) -> burn::tensor::DType {
        match self {
            RunDtype::F32 => burn::tensor::DType::F32,
            RunDtype::F16 => burn::tensor::DType::F16,
            RunDtype::Bf16 => burn::tensor::DType::BF16,
        }
    }
}

/// One LoRA: a file and the words that name its concept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    pub name: String,
    pub path: PathBuf,
    /// Trigger word(s), e.g. `["sks"]`.
    pub triggers: Vec<String>,
    /// The class noun, e.g. `"cat"` (needed when a prompt names this LoRA).
    pub class_noun: Option<String>,
    /// Reference images of the concept (files; folders are expanded to their images).
    pub references: Vec<PathBuf>,
    /// Per-LoRA weight `w_i` (merge) / adapter weight.
    pub weight: f64,
}

impl LoraSpec {
    /// The words that name the concept in prompts (`None` without a class noun).
    pub fn concept(&self) -> Option<ConceptNames> {
        self.class_noun.as_ref().map(|c| ConceptNames {
            triggers: self.triggers.clone(),
            class_noun: c.clone(),
        })
    }
}

/// A named list of prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptSet {
    pub name: String,
    /// The file the prompts were read from.
    pub source: PathBuf,
    pub prompts: Vec<PromptSpec>,
}

/// One prompt: a template and optional per-method overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptSpec {
    /// The template, e.g. `"a {cat} and a {dog}"`.
    pub text: String,
    /// Negative prompt (default: the sampler's).
    pub negative: Option<String>,
    /// CLoRA branch prompts written out by hand, by LoRA name (default: the template with only that
    /// LoRA's trigger words).
    pub branches: BTreeMap<String, String>,
    /// CLoRA's `important_token_indices[g][k]`, by hand (default: found from the words).
    pub token_indices: Option<Vec<Vec<Vec<usize>>>>,
    /// CLoRA's `mask_indices[k]`, by hand (default: found from the words).
    pub mask_indices: Option<Vec<Vec<usize>>>,
}

/// A method entry: a method and its parameter grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodEntry {
    /// Unique label (default: the method's name).
    pub name: String,
    pub kind: MethodKind,
    pub grid: ParamGrid,
    /// The prompt sets it runs on (`None`: all).
    pub prompt_sets: Option<Vec<String>>,
}

/// Sampling settings shared by every job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerSpec {
    pub scheduler: SchedulerKind,
    pub steps: usize,
    pub guidance: f64,
    /// Pixels (default: the model's native size).
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub negative_prompt: String,
    pub clip_skip: Option<usize>,
}

/// The metrics to compute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsSpec {
    /// Metric names (see [`KNOWN_METRICS`]).
    pub scores: Vec<String>,
    /// A CLIP model folder (HF layout), for `clip_t`, `clip_score`, `clip_i`.
    pub clip_model: Option<PathBuf>,
    /// A DINO model folder (HF layout), for `dino`.
    pub dino_model: Option<PathBuf>,
    pub batch_size: usize,
}

/// The report's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportSpec {
    /// Metrics to tabulate and plot, in this order (empty: every metric scored).
    pub metrics: Vec<String>,
    /// The seed whose images fill the grids (default: the first).
    pub grid_seed: Option<u64>,
    /// The two metrics of the trade-off plot (x, y).
    pub trade_off: (String, String),
    /// Confidence level of the intervals.
    pub confidence: f64,
}

/// Metric names a config may ask for, and the model each needs (`None`: built in).
pub const KNOWN_METRICS: &[(&str, Option<&str>)] = &[
    ("mean_luma", None),
    ("rms_contrast", None),
    ("clip_t", Some("clip_model")),
    ("clip_score", Some("clip_model")),
    ("clip_i", Some("clip_model")),
    ("dino", Some("dino_model")),
    // the toyworld's oracle (src/toyworld/oracle.rs): concept presence and attribute mixing, 0/1 per image
    ("toy_present", None),
    ("toy_all_present", None),
    ("toy_mixing", None),
    ("toy_exact", None),
    ("toy_colour", None),
    ("toy_all_colours", None),
];

impl Experiment {
    /// The LoRA called `name`.
    pub fn lora(&self, name: &str) -> Option<&LoraSpec> {
        self.loras.iter().find(|l| l.name == name)
    }

    /// The method entry called `name`.
    pub fn method(&self, name: &str) -> Option<&MethodEntry> {
        self.methods.iter().find(|m| m.name == name)
    }
}
