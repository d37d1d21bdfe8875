//! From a harness [`Job`] to what the composition methods take: the [`MethodSpec`] (the method's own
//! parameters, the harness-level ones removed) and the [`CompositionJob`] (prompts, LoRAs attached to the
//! model, sampler settings).

use serde_json::{Map, Value};

use super::generator::JobError;
use super::job::{Job, JobLora};
use crate::config::params::{BASELINE_HARNESS_PARAMS, CLORA_HARNESS_PARAMS, EXCITE_HARNESS_PARAMS};
use crate::config::{MethodKind, ParamValue};
use crate::lora::state::AdapterId;
use crate::methods::clora::tokens::ConceptWords;
use crate::methods::job::TokenIndices;
use crate::methods::{CompositionJob, LoraRef, MethodSpec};

/// The method and its parameters: `job.params` without the parameters the harness reads itself.
pub fn method_spec(job: &Job) -> Result<MethodSpec, JobError> {
    let harness_only: &[&str] = match job.kind {
        MethodKind::Clora => CLORA_HARNESS_PARAMS,
        MethodKind::Excite => EXCITE_HARNESS_PARAMS,
        _ => BASELINE_HARNESS_PARAMS,
    };
    let mut table = Map::new();
    table.insert("method".into(), Value::String(job.kind.as_str().into()));
    for (k, v) in &job.params {
        if harness_only.contains(&k.as_str()) {
            continue;
        }
        let v = serde_json::to_value(v)
            .map_err(|e| JobError::Failed(format!("parameter `{k}`: {e}")))?;
        table.insert(k.clone(), v);
    }
    if job.kind == MethodKind::Excite {
        table.insert("words".into(), excite_words(job)?.into());
    }
    let mut spec: MethodSpec = serde_json::from_value(Value::Object(table))
        .map_err(|e| JobError::Failed(format!("{} parameters: {e}", job.method)))?;
    if let MethodSpec::Excite(p) = &mut spec {
        // the official 50-step schedule at the run's steps
        *p = p.clone().scaled_to(job.sampler.steps);
    }
    spec.validate()?;
    Ok(spec)
}

/// The words `excite` excites: each LoRA's class noun, and with `words = "concepts"` its trigger words too.
fn excite_words(job: &Job) -> Result<Vec<String>, JobError> {
    let with_triggers =
        matches!(job.params.get("words"), Some(ParamValue::Str(w)) if w == "concepts");
    let mut words = Vec::new();
    for l in &job.loras {
        let c = concept(l, job.kind)?;
        let own = if with_triggers {
            c.triggers
        } else {
            Vec::new()
        };
        for w in own.into_iter().chain([c.class_noun]) {
            if !words.contains(&w) {
                words.push(w);
            }
        }
    }
    Ok(words)
}

/// A float parameter the harness reads itself (`scale`, `style_lora_weight`).
pub fn float_param(job: &Job, name: &str, default: f64) -> Result<f64, JobError> {
    match job.params.get(name) {
        None => Ok(default),
        Some(ParamValue::Float(x)) => Ok(*x),
        Some(ParamValue::Int(x)) => Ok(*x as f64),
        Some(other) => Err(JobError::Failed(format!(
            "parameter `{name}` of {}: expected a number, got {other:?}",
            job.method
        ))),
    }
}

/// Whether `save_attention` is set.
pub fn save_attention(job: &Job) -> bool {
    matches!(
        job.params.get("save_attention"),
        Some(ParamValue::Bool(true))
    )
}

/// The concept words of a LoRA (CLoRA finds its tokens from them; the single-pass methods use the
/// prompt the planner rendered).
fn concept(l: &JobLora, kind: MethodKind) -> Result<ConceptWords, JobError> {
    let class_noun = match (&l.class_noun, kind) {
        (Some(c), _) => c.clone(),
        (None, MethodKind::Clora | MethodKind::Excite) => {
            return Err(JobError::Failed(format!(
                "LoRA `{}` has no `class_noun`: {} needs it to find the concept's tokens",
                l.name, kind
            )))
        }
        (None, _) => l.name.clone(),
    };
    Ok(ConceptWords {
        triggers: l.triggers.clone(),
        class_noun,
    })
}

/// The composition job of `job`, with `ids[i]` the adapter of `job.loras[i]` and `style` that of the
/// style LoRA. `width`/`height` are the job's or the model's native size.
pub fn composition_job(
    job: &Job,
    ids: &[AdapterId],
    style: Option<AdapterId>,
    width: usize,
    height: usize,
) -> Result<CompositionJob, JobError> {
    let loras = job
        .loras
        .iter()
        .zip(ids)
        .map(|(l, &id)| {
            Ok(LoraRef {
                id,
                weight: l.weight,
                concept: concept(l, job.kind)?,
            })
        })
        .collect::<Result<Vec<_>, JobError>>()?;
    let style = match (style, &job.style_lora) {
        (Some(id), Some(l)) => Some((id, float_param(job, "style_lora_weight", l.weight)?)),
        _ => None,
    };
    let token_indices = match (&job.prompt.token_indices, &job.prompt.mask_indices) {
        (None, None) => None,
        (Some(groups), Some(masks)) => Some(TokenIndices {
            groups: groups.clone(),
            masks: masks.clone(),
        }),
        _ => {
            return Err(JobError::Failed(format!(
            "prompt {:?}: `token_indices` and `mask_indices` go together (give both or neither)",
            job.prompt.template
        )))
        }
    };
    let branch_prompts = (job.kind == MethodKind::Clora).then(|| job.prompt.branches.clone());
    Ok(CompositionJob {
        base_prompt: job.prompt.plain.clone(),
        // `text` is the planner's rendering for this method (the plain prompt for `base`)
        combined_prompt: Some(job.prompt.text.clone()),
        branch_prompts,
        negative_prompt: job.prompt.negative.clone(),
        loras,
        style,
        lora_scale: float_param(job, "scale", 1.0)?,
        steps: job.sampler.steps,
        guidance: job.sampler.guidance,
        scheduler: job.sampler.scheduler,
        width,
        height,
        clip_skip: job.sampler.clip_skip,
        token_indices,
    })
}
