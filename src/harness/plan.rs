//! The planner: the cartesian expansion of an experiment into jobs (method entry x parameter variant x
//! prompt x seed x sample), each with its content hash.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::error::HarnessResult;
use super::filehash::FileHasher;
use super::hash::{json_sha256, noise_seed, GENERATION_CODE_VERSION};
use super::job::*;
use crate::config::{
    sweep, ConceptNames, Experiment, LoraSpec, MethodKind, ParamValue, PromptSpec, RunDtype,
    Template,
};

/// Where the images are made: part of every content hash, since the backend and device change pixels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// e.g. `flex`, `cuda`, `tch`.
    pub backend: String,
    /// e.g. `cpu`, `cuda:0`.
    pub device: String,
}

/// Every job of an experiment, in generation order (method entry, variant, prompt, seed, sample).
#[derive(Debug, Clone)]
pub struct Plan {
    pub jobs: Vec<Job>,
}

impl Plan {
    /// The jobs with distinct hashes (the images to make), first occurrence kept.
    pub fn unique(&self) -> Vec<&Job> {
        let mut seen = BTreeSet::new();
        self.jobs
            .iter()
            .filter(|j| seen.insert(j.hash.as_str()))
            .collect()
    }
}

/// What the content hash covers: everything that determines the pixels, nothing else.
#[derive(Serialize)]
struct HashKey<'a> {
    code: &'a str,
    target: &'a Target,
    model: &'a str,
    config_dir: Option<&'a str>,
    dtype: RunDtype,
    kind: MethodKind,
    params: BTreeMap<&'a str, &'a ParamValue>,
    loras: Vec<(&'a str, f64)>,
    style_lora: Option<(&'a str, f64)>,
    text: &'a str,
    plain: &'a str,
    branches: &'a [String],
    negative: &'a str,
    token_indices: &'a Option<Vec<Vec<Vec<usize>>>>,
    mask_indices: &'a Option<Vec<Vec<usize>>>,
    sampler: &'a JobSampler,
    noise_seed: u64,
}

/// One method configuration on one prompt: (params, swept axes, label, active LoRA names).
type Run = (
    BTreeMap<String, ParamValue>,
    Vec<String>,
    String,
    Vec<String>,
);

/// Expands `exp` into jobs. File hashes of the model and LoRAs come from `hasher`.
pub fn plan(exp: &Experiment, target: &Target, hasher: &mut FileHasher) -> HarnessResult<Plan> {
    let model_sha = match &exp.model.path {
        Some(p) => hasher.hash(p)?,
        None => crate::models::embedded::sha256(),
    };
    let config_dir_sha = match &exp.model.config_dir {
        Some(p) => Some(hasher.hash(p)?),
        None => None,
    };
    let model = JobModel {
        path: exp.model.path.clone(),
        config_dir: exp.model.config_dir.clone(),
        sha256: model_sha,
        dtype: exp.model.dtype,
    };
    let mut lora_sha = BTreeMap::new();
    for l in &exp.loras {
        lora_sha.insert(l.name.clone(), hasher.hash(&l.path)?);
    }
    // a LoRA of a job, at the weight the method entry's `lora_weights` gives it, else its `[[loras]] weight`
    let job_lora = |l: &LoraSpec, params: &BTreeMap<String, ParamValue>| JobLora {
        name: l.name.clone(),
        path: l.path.clone(),
        sha256: lora_sha[&l.name].clone(),
        weight: match params.get("lora_weights") {
            Some(ParamValue::LoraWeights(w)) => w.get(&l.name).copied().unwrap_or(l.weight),
            _ => l.weight,
        },
        triggers: l.triggers.clone(),
        class_noun: l.class_noun.clone(),
        references: l.references.clone(),
    };
    let concepts: BTreeMap<String, ConceptNames> = exp
        .loras
        .iter()
        .filter_map(|l| l.concept().map(|c| (l.name.clone(), c)))
        .collect();
    let sampler = JobSampler {
        scheduler: exp.sampler.scheduler,
        steps: exp.sampler.steps,
        guidance: exp.sampler.guidance,
        width: exp.sampler.width,
        height: exp.sampler.height,
        clip_skip: exp.sampler.clip_skip,
    };

    // all prompts, numbered across sets
    let mut prompts: Vec<(&str, usize, &PromptSpec)> = Vec::new();
    for set in &exp.prompt_sets {
        for (j, p) in set.prompts.iter().enumerate() {
            prompts.push((set.name.as_str(), j, p));
        }
    }

    let mut jobs = Vec::new();
    for entry in &exp.methods {
        let defs = entry.kind.params();
        for variant in entry.grid.expand(&entry.name) {
            for (index, &(set, index_in_set, spec)) in prompts.iter().enumerate() {
                if entry
                    .prompt_sets
                    .as_ref()
                    .is_some_and(|v| !v.iter().any(|s| s == set))
                {
                    continue;
                }
                let template = Template::parse(&spec.text)
                    .map_err(|m| crate::Error::invalid(format!("prompt \"{}\"", spec.text), m))?;
                let names = template.concepts();
                // (params, swept, label, active LoRA names) for each job of this variant and prompt
                let mut runs: Vec<Run> = Vec::new();
                match entry.kind {
                    MethodKind::Base => runs.push((
                        variant.params.clone(),
                        variant.swept.clone(),
                        variant.label.clone(),
                        vec![],
                    )),
                    MethodKind::Single => match variant.params.get("lora") {
                        Some(ParamValue::Str(l)) => {
                            // a fixed LoRA applies to the prompts that name it
                            if names.contains(l) {
                                runs.push((
                                    variant.params.clone(),
                                    variant.swept.clone(),
                                    variant.label.clone(),
                                    vec![l.clone()],
                                ));
                            }
                        }
                        _ => {
                            for n in &names {
                                let mut params = variant.params.clone();
                                params.insert("lora".into(), ParamValue::Str(n.clone()));
                                let mut swept = variant.swept.clone();
                                swept.push("lora".into());
                                let label = sweep::label(&entry.name, &params, &swept);
                                runs.push((params, swept, label, vec![n.clone()]));
                            }
                        }
                    },
                    _ => runs.push((
                        variant.params.clone(),
                        variant.swept.clone(),
                        variant.label.clone(),
                        names.clone(),
                    )),
                }
                for (params, swept, label, active) in runs {
                    let lookup = |n: &str| concepts.get(n);
                    let plain = template.render(lookup, |_| false);
                    let text = template.render(lookup, |n| active.iter().any(|a| a == n));
                    let branches: Vec<String> = if entry.kind == MethodKind::Clora {
                        active
                            .iter()
                            .map(|a| {
                                spec.branches
                                    .get(a)
                                    .cloned()
                                    .unwrap_or_else(|| template.render(lookup, |n| n == a))
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let loras: Vec<JobLora> = active
                        .iter()
                        .filter_map(|n| exp.lora(n))
                        .map(|l| job_lora(l, &params))
                        .collect();
                    let style_lora = match params.get("style_lora") {
                        Some(ParamValue::Str(n)) => exp.lora(n).map(|l| {
                            let mut j = job_lora(l, &params);
                            if let Some(ParamValue::Float(w)) = params.get("style_lora_weight") {
                                j.weight = *w;
                            }
                            j
                        }),
                        _ => None,
                    };
                    let negative = spec
                        .negative
                        .clone()
                        .unwrap_or_else(|| exp.sampler.negative_prompt.clone());
                    for &seed in &exp.seeds {
                        for sample in 0..exp.samples_per_prompt {
                            let prompt = JobPrompt {
                                set: set.to_string(),
                                index,
                                index_in_set,
                                template: spec.text.clone(),
                                plain: plain.clone(),
                                text: text.clone(),
                                negative: negative.clone(),
                                branches: branches.clone(),
                                concepts: names.clone(),
                                token_indices: spec.token_indices.clone(),
                                mask_indices: spec.mask_indices.clone(),
                            };
                            let ns = noise_seed(seed, index, sample);
                            let pixel_params: BTreeMap<&str, &ParamValue> = params
                                .iter()
                                .filter(|(k, _)| {
                                    defs.iter()
                                        .find(|d| d.name == k.as_str())
                                        .is_none_or(|d| d.pixels)
                                })
                                .map(|(k, v)| (k.as_str(), v))
                                .collect();
                            let key = HashKey {
                                code: GENERATION_CODE_VERSION,
                                target,
                                model: &model.sha256,
                                config_dir: config_dir_sha.as_deref(),
                                dtype: model.dtype,
                                kind: entry.kind,
                                params: pixel_params,
                                loras: loras
                                    .iter()
                                    .map(|l| (l.sha256.as_str(), l.weight))
                                    .collect(),
                                style_lora: style_lora
                                    .as_ref()
                                    .map(|l| (l.sha256.as_str(), l.weight)),
                                text: &prompt.text,
                                plain: &prompt.plain,
                                branches: &prompt.branches,
                                negative: &prompt.negative,
                                token_indices: &prompt.token_indices,
                                mask_indices: &prompt.mask_indices,
                                sampler: &sampler,
                                noise_seed: ns,
                            };
                            let hash = json_sha256(&key)[..32].to_string();
                            jobs.push(Job {
                                hash,
                                method: entry.name.clone(),
                                kind: entry.kind,
                                variant: label.clone(),
                                params: params.clone(),
                                swept: swept.clone(),
                                prompt,
                                loras: loras.clone(),
                                style_lora: style_lora.clone(),
                                model: model.clone(),
                                sampler: sampler.clone(),
                                seed,
                                sample,
                                noise_seed: ns,
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(Plan { jobs })
}
