//! The [`Generator`] of this build on Stable Diffusion: loads the model once, attaches each LoRA file once
//! (unfused adapters, selected per job), and makes each job's image with its composition method
//! ([`crate::methods`]) from the job's initial noise. CLoRA jobs record their losses and mask coverage in the
//! sidecar and, with `save_attention`, write their maps and masks beside the image; Attend-and-Excite jobs
//! record their losses.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

use super::attention_artifacts::{self, AttentionRecord};
use super::generator::{GeneratedImage, Generator, GeneratorInfo, JobContext, JobError};
use super::job::{Job, JobLora, JobModel};
use super::method_job::{composition_job, method_spec, save_attention};
use super::plan::Target;
use crate::latent_io;
use crate::lora::state::AdapterId;
use crate::lora::{LoraFile, Unmatched};
use crate::methods::clora::Clora;
use crate::methods::excite::Excite;
use crate::methods::{self, compose_with_progress, MethodSpec};
use crate::models::sd::{LoadOptions, StableDiffusion};
use crate::noise;

/// Gives the initial noise of an image for the model's latent shape.
pub type InitNoise<'a, B> = dyn Fn([usize; 4]) -> Result<Tensor<B, 4>, JobError> + 'a;

/// SD 1.x on backend `B` (autodiff: CLoRA differentiates through the UNet).
pub struct SdGenerator<B: AutodiffBackend> {
    device: B::Device,
    target: Target,
    dtype: crate::config::RunDtype,
    loaded: Option<(JobModel, StableDiffusion<B>, f64)>,
    /// LoRA files attached to the loaded model, by (path, sha256).
    attached: Vec<((PathBuf, String), AdapterId)>,
}

impl<B: AutodiffBackend> SdGenerator<B> {
    /// A generator on `device`; `backend`/`device_name` name them for provenance and hashes.
    pub fn new(
        device: B::Device,
        backend: &str,
        device_name: &str,
        dtype: crate::config::RunDtype,
    ) -> Self {
        Self {
            device,
            target: Target {
                backend: backend.to_string(),
                device: device_name.to_string(),
            },
            dtype,
            loaded: None,
            attached: Vec::new(),
        }
    }

    /// The model of `job`, loaded on first use (and again when a job names another model).
    fn model(&mut self, m: &JobModel) -> Result<(&mut StableDiffusion<B>, f64), JobError> {
        let same = self.loaded.as_ref().is_some_and(|(have, _, _)| {
            have.path == m.path && have.config_dir == m.config_dir && have.dtype == m.dtype
        });
        if !same {
            let path: PathBuf = match &m.path {
                Some(p) => p.clone(),
                None => crate::models::embedded::path()
                    .map_err(|e| JobError::Fatal(format!("the embedded default model: {e}")))?,
            };
            let t = Instant::now();
            let options = LoadOptions {
                dtype: m.dtype.dtype(),
                config_dir: m.config_dir.clone(),
            };
            let sd = StableDiffusion::<B>::load(&path, &options, &self.device).map_err(|e| {
                JobError::Fatal(format!("loading the model {}: {e}", path.display()))
            })?;
            self.attached.clear();
            self.loaded = Some((m.clone(), sd, t.elapsed().as_secs_f64()));
            let (_, sd, secs) = self.loaded.as_mut().expect("just loaded");
            return Ok((sd, *secs));
        }
        let (_, sd, _) = self.loaded.as_mut().expect("checked");
        Ok((sd, 0.0))
    }

    /// The adapter of LoRA `l` on the loaded model, attached on first use (weight 1: the job's weight is
    /// applied when the method selects the adapter).
    fn adapter(&mut self, l: &JobLora) -> Result<AdapterId, JobError> {
        let key = (l.path.clone(), l.sha256.clone());
        if let Some((_, id)) = self.attached.iter().find(|(k, _)| *k == key) {
            return Ok(*id);
        }
        let (_, sd, _) = self
            .loaded
            .as_mut()
            .ok_or_else(|| JobError::Fatal("no model loaded".into()))?;
        let file = LoraFile::open(&l.path).map_err(|e| {
            JobError::Failed(format!("LoRA `{}` ({}): {e}", l.name, l.path.display()))
        })?;
        let load = sd
            .add_lora(&l.name, &file, 1.0, Unmatched::Error)
            .map_err(|e| {
                JobError::Failed(format!("LoRA `{}` ({}): {e}", l.name, l.path.display()))
            })?;
        sd.set_adapters(&[])?;
        self.attached.push((key, load.id));
        Ok(load.id)
    }

    /// Makes the image of `job`, reporting each step. `init_noise(shape)` gives the initial noise for the model's
    /// latent shape `[1, 4, h / f, w / f]` (`f` the VAE's factor), before the scheduler's `init_noise_sigma`;
    /// `None`: drawn from `job.noise_seed`.
    pub fn generate_from(
        &mut self,
        job: &Job,
        init_noise: Option<&InitNoise<'_, B>>,
        ctx: &JobContext<'_>,
    ) -> Result<GeneratedImage, JobError> {
        let t0 = Instant::now();
        let (sd, load_s) = self.model(&job.model)?;
        let native = sd.unet_config.sample_size * sd.vae_scale_factor();
        let (width, height) = (
            job.sampler.width.unwrap_or(native),
            job.sampler.height.unwrap_or(native),
        );
        let shape = sd.latent_shape(width, height)?;
        let spec = method_spec(job)?;
        let ids = job
            .loras
            .iter()
            .map(|l| self.adapter(l))
            .collect::<Result<Vec<_>, _>>()?;
        let style = job
            .style_lora
            .as_ref()
            .map(|l| self.adapter(l))
            .transpose()?;
        let cjob = composition_job(job, &ids, style, width, height)?;
        let noise = match init_noise {
            Some(f) => f(shape)?,
            None => noise::gaussian::<B>(job.noise_seed, shape, &self.device),
        };
        let (_, sd, _) = self.loaded.as_mut().expect("loaded above");
        let steps = job.sampler.steps;
        let mut on_step = |done: usize, total: usize| ctx.steps.step(done, total, "denoise");
        ctx.steps.step(0, steps, "denoise");
        let mut clora = None;
        let mut excite = None;
        let composed = match &spec {
            MethodSpec::Clora(p) => {
                let mut m = Clora::<B>::new(p.clone());
                let out = compose_with_progress(sd, &mut m, &cjob, noise, &mut on_step);
                clora = Some(m);
                out
            }
            MethodSpec::Excite(p) => {
                let mut m = Excite::<B>::new(p.clone());
                let out = compose_with_progress(sd, &mut m, &cjob, noise, &mut on_step);
                // per denoising index with a loss: every loss computed there and the updates made
                excite = Some(serde_json::json!(m.records()));
                out
            }
            other => {
                let mut m = methods::build::<B>(other)?;
                compose_with_progress(sd, m.as_mut(), &cjob, noise, &mut on_step)
            }
        }?;
        ctx.steps.step(steps, steps, "decode");
        let t_dec = Instant::now();
        let decoded = sd.decode_latent(composed.latent)?;
        let image = latent_io::to_rgb8(&decoded)?;
        let decode_s = t_dec.elapsed().as_secs_f64();
        let mut timings = BTreeMap::new();
        timings.insert("load".to_string(), load_s);
        timings.insert("denoise".to_string(), composed.seconds);
        timings.insert("decode".to_string(), decode_s);
        let mut details = serde_json::json!({ "width": width, "height": height });
        if let Some(records) = excite {
            details["excite"] = records;
        }
        if let Some(m) = &clora {
            // the branches, base first
            let mut names = vec!["base".to_string()];
            names.extend(job.loras.iter().map(|l| l.name.clone()));
            details["clora"] = clora_details(m, &names);
            if save_attention(job) {
                let t_art = Instant::now();
                let rec = AttentionRecord {
                    records: m.records(),
                    mask_tokens: m.mask_tokens(),
                    map_hw: m.map_hw(),
                    branch_names: names,
                    layout: m.layout().map(|l| &l.pass),
                };
                let files = attention_artifacts::write(&ctx.artifact_dir, &rec, &image)
                    .map_err(|e| JobError::Failed(format!("saving attention maps: {e}")))?;
                details[attention_artifacts::DETAILS_KEY] = serde_json::json!(files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>());
                timings.insert("artifacts".to_string(), t_art.elapsed().as_secs_f64());
            }
        }
        // Every tensor of this image is gone now: free their autodiff graph entries (see the function).
        crate::backend::sweep_autodiff_graphs::<B>(&self.device);
        timings.insert("total".to_string(), t0.elapsed().as_secs_f64());
        Ok(GeneratedImage {
            image,
            timings,
            details,
        })
    }
}

/// The sidecar record of a CLoRA image: losses per step, the number of latent updates, and each branch's
/// final mask coverage (fraction of map cells in the mask).
fn clora_details<B: AutodiffBackend>(m: &Clora<B>, branches: &[String]) -> serde_json::Value {
    let records = m.records();
    let losses: Vec<Vec<f32>> = records.iter().map(|r| r.losses.clone()).collect();
    let updates: usize = losses.iter().map(Vec::len).sum();
    let coverage: Vec<f32> = records
        .last()
        .map(|r| {
            r.masks
                .iter()
                .map(|m| m.iter().sum::<f32>() / m.len().max(1) as f32)
                .collect()
        })
        .unwrap_or_default();
    // How much the LoRA branches' masks (all but the base branch) overlap: the mean over their pairs of the
    // intersection over union, per step. Masks that cover the same cells fuse the LoRAs' predictions there by
    // averaging, which is what composite does everywhere.
    let overlap: Vec<f32> = records
        .iter()
        .map(|r| mean_pairwise_iou(r.masks.get(1..).unwrap_or(&[])))
        .collect();
    serde_json::json!({
        "latent_updates": updates,
        "losses": losses,
        "branches": branches,
        "final_mask_coverage": coverage,
        "mask_overlap": overlap,
        "mask_tokens": m.mask_tokens(),
        // `mask_mode = "layout"`: the base-prompt token positions that scored each concept's object
        "layout_words": m.layout().map(|l| l.words.clone()),
    })
}

/// Mean intersection over union of every pair of masks (values > 0.5 count as in the mask); 0 with fewer than
/// two masks, and a pair of empty masks counts 0.
fn mean_pairwise_iou(masks: &[Vec<f32>]) -> f32 {
    let mut sum = 0.0;
    let mut pairs = 0;
    for i in 0..masks.len() {
        for j in i + 1..masks.len() {
            let (mut inter, mut union) = (0usize, 0usize);
            for (a, b) in masks[i].iter().zip(&masks[j]) {
                let (a, b) = (*a > 0.5, *b > 0.5);
                inter += (a && b) as usize;
                union += (a || b) as usize;
            }
            sum += if union == 0 {
                0.0
            } else {
                inter as f32 / union as f32
            };
            pairs += 1;
        }
    }
    if pairs == 0 {
        0.0
    } else {
        sum / pairs as f32
    }
}

impl<B: AutodiffBackend> Generator for SdGenerator<B> {
    fn info(&self) -> GeneratorInfo {
        GeneratorInfo {
            target: self.target.clone(),
            dtype: self.dtype.as_str().to_string(),
        }
    }

    fn generate(&mut self, job: &Job, ctx: &JobContext<'_>) -> Result<GeneratedImage, JobError> {
        self.generate_from(job, None, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::mean_pairwise_iou;

    #[test]
    fn pairwise_iou_of_masks() {
        let a = vec![1.0, 1.0, 0.0, 0.0];
        let b = vec![0.0, 1.0, 1.0, 0.0];
        let c = vec![0.0, 0.0, 0.0, 0.0];
        assert_eq!(mean_pairwise_iou(&[a.clone(), a.clone()]), 1.0);
        assert!((mean_pairwise_iou(&[a.clone(), b.clone()]) - 1.0 / 3.0).abs() < 1e-6);
        // pairs (a,b) 1/3, (a,c) 0, (b,c) 0
        assert!((mean_pairwise_iou(&[a, b, c]) - 1.0 / 9.0).abs() < 1e-6);
        assert_eq!(mean_pairwise_iou(&[vec![1.0]]), 0.0);
    }
}
