//! A job: everything needed to make one image, self-contained (the generator needs nothing else).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{MethodKind, ParamValue, RunDtype};
use crate::schedulers::SchedulerKind;

/// One image to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Content hash of everything that determines the pixels (32 hex digits); names the image file.
    pub hash: String,
    /// The method entry's name.
    pub method: String,
    pub kind: MethodKind,
    /// `method` or `method[axis=value, ...]`.
    pub variant: String,
    /// Every parameter the config sets for this variant (the method applies its defaults to the rest).
    pub params: BTreeMap<String, ParamValue>,
    /// The swept parameters of this method entry.
    pub swept: Vec<String>,
    pub prompt: JobPrompt,
    /// The LoRAs this job applies, in order (`single`: one; `merge`/`switch`/`composite`/`clora`: those the
    /// prompt names; `base`: none). A CLoRA style LoRA is in `style_lora`, not here.
    pub loras: Vec<JobLora>,
    /// CLoRA's global style LoRA.
    pub style_lora: Option<JobLora>,
    pub model: JobModel,
    pub sampler: JobSampler,
    /// The experiment seed.
    pub seed: u64,
    /// Sample index within (prompt, seed).
    pub sample: usize,
    /// Seed of the initial noise, from (seed, prompt index, sample) only: the same for every method.
    pub noise_seed: u64,
}

/// The prompt of a job, rendered for its method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPrompt {
    pub set: String,
    /// Position in the experiment's list of all prompts (all sets, in order).
    pub index: usize,
    /// Position within its set.
    pub index_in_set: usize,
    /// The template, e.g. `"a {cat} and a {dog}"`.
    pub template: String,
    /// Class nouns only, e.g. `"a cat and a dog"` (CLoRA's base branch; the text of CLIP-T).
    pub plain: String,
    /// The prompt of a single-pass method: the trigger words of the job's LoRAs, e.g. `"a sks cat and a dog"`.
    pub text: String,
    pub negative: String,
    /// CLoRA: one prompt per LoRA in `Job::loras` order, with only that LoRA's trigger words.
    pub branches: Vec<String>,
    /// The concept names of the prompt, in order of appearance (LoRA names).
    pub concepts: Vec<String>,
    /// CLoRA's `important_token_indices`, when given by hand.
    pub token_indices: Option<Vec<Vec<Vec<usize>>>>,
    /// CLoRA's `mask_indices`, when given by hand.
    pub mask_indices: Option<Vec<Vec<usize>>>,
}

/// A LoRA as a job uses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobLora {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    pub weight: f64,
    pub triggers: Vec<String>,
    pub class_noun: Option<String>,
    /// Reference images of the concept (for CLIP-I and DINO; not part of the content hash).
    pub references: Vec<PathBuf>,
}

/// The model as a job uses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobModel {
    /// `None`: the embedded default model.
    pub path: Option<PathBuf>,
    pub config_dir: Option<PathBuf>,
    pub sha256: String,
    pub dtype: RunDtype,
}

/// Sampling settings of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSampler {
    pub scheduler: SchedulerKind,
    pub steps: usize,
    pub guidance: f64,
    /// `None`: the model's native size.
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub clip_skip: Option<usize>,
}
