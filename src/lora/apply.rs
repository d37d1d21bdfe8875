//! The LoRA API of [`StableDiffusion`]: attach a file's adapters to the UNet and text encoder, choose which act
//! (on every row, or per batch row so one batched forward serves several branches), fuse and unfuse, remove.

use burn::tensor::{backend::Backend, Tensor, TensorData};

use super::conv::ConvAdapter;
use super::file::LoraFile;
use super::key::Component;
use super::linear::LinearAdapter;
use super::resolve::{resolve, LayerFactors, ModelTargets, Resolved, Unmatched};
use super::state::{AdapterId, AdapterInfo};
use super::targets::{LoraTargets, Target};
use crate::error::{Error, Result};
use crate::models::sd::StableDiffusion;

/// What [`StableDiffusion::add_lora`] attached.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraLoad {
    pub id: AdapterId,
    /// Adapted layers per component (`[UNet, text encoder]`).
    pub layers: [usize; 2],
    /// Keys skipped under [`Unmatched::Warn`] (empty otherwise).
    pub skipped: Vec<String>,
}

const COMPONENTS: [Component; 2] = [Component::Unet, Component::TextEncoder];

impl<B: Backend> StableDiffusion<B> {
    /// Calls `f` on every LoRA-targetable layer of a component, with its diffusers/transformers path.
    pub fn for_each_lora_target(
        &mut self,
        component: Component,
        f: &mut dyn FnMut(&str, Target<'_, B>),
    ) {
        match component {
            Component::Unet => self.unet.for_each_target("", f),
            Component::TextEncoder => self.text_encoder.for_each_target("", f),
        }
    }

    /// Attaches the adapters of `file` to the UNet and text-encoder layers they name, unfused, with adapter
    /// weight `weight` (diffusers' `load_lora_weights` + `set_adapters`). The new adapter acts on every batch row
    /// (unless a per-row assignment is set, see [`set_lora_rows`](Self::set_lora_rows)). Nothing is attached
    /// when an error is returned.
    pub fn add_lora(
        &mut self,
        name: &str,
        file: &LoraFile,
        weight: f64,
        unmatched: Unmatched,
    ) -> Result<LoraLoad> {
        check_finite("LoRA weight", weight)?;
        let targets = [
            ModelTargets::collect(&mut self.unet),
            ModelTargets::collect(&mut self.text_encoder),
        ];
        let resolved = resolve(file, &targets, unmatched)?;
        let id = AdapterId(
            self.lora
                .adapters
                .iter()
                .map(|a| a.id.0 + 1)
                .max()
                .unwrap_or(0),
        );
        for c in COMPONENTS {
            attach(self, c, id, &resolved);
        }
        let layers = [resolved.layers[0].len(), resolved.layers[1].len()];
        self.lora.adapters.push(AdapterInfo {
            id,
            name: name.to_string(),
            path: file.path.clone(),
            weight,
            layers,
        });
        self.lora.active.push(id);
        self.refresh_loras();
        Ok(LoraLoad {
            id,
            layers,
            skipped: resolved.skipped,
        })
    }

    /// Makes exactly these adapters act on every row, with these weights (diffusers' `set_adapters(names,
    /// weights)`); an empty list gives the base model.
    pub fn set_adapters(&mut self, adapters: &[(AdapterId, f64)]) -> Result<()> {
        self.lora.check_ids(adapters.iter().map(|(id, _)| id))?;
        for (id, w) in adapters {
            check_finite("LoRA weight", *w)?;
            if let Some(a) = self.lora.adapters.iter_mut().find(|a| a.id == *id) {
                a.weight = *w;
            }
        }
        self.lora.active = adapters.iter().map(|(id, _)| *id).collect();
        self.refresh_loras();
        Ok(())
    }

    /// The global LoRA scale multiplying every unfused adapter in both components (diffusers'
    /// `cross_attention_kwargs={"scale": s}`, which also reaches the text encoder as `lora_scale`).
    pub fn set_lora_scale(&mut self, scale: f64) -> Result<()> {
        check_finite("LoRA scale", scale)?;
        self.lora.scale = scale;
        self.refresh_loras();
        Ok(())
    }

    /// Assigns adapters per batch row of one component: row `i` of every following forward uses `rows[i]`
    /// (with each adapter's weight and the global scale); an empty row is the base model. Forwards must then
    /// have exactly `rows.len()` rows (see [`crate::lora::state::LoraState::check_batch`]).
    pub fn set_lora_rows(&mut self, component: Component, rows: &[Vec<AdapterId>]) -> Result<()> {
        if rows.is_empty() {
            return Err(Error::invalid("LoRA rows", "need at least one row"));
        }
        self.lora.check_ids(rows.iter().flatten())?;
        self.lora.rows[component.index()] = Some(rows.to_vec());
        self.refresh_component(component);
        Ok(())
    }

    /// Back to the same adapters on every row for this component.
    pub fn clear_lora_rows(&mut self, component: Component) {
        self.lora.rows[component.index()] = None;
        self.refresh_component(component);
    }

    /// Merges `W' = W + scale * sum_i w_i (alpha / r)_i B_i A_i` into the weights of both components (diffusers'
    /// `set_adapters` + `fuse_lora(lora_scale=scale)`), replacing any earlier fusion. Fused adapters stop acting
    /// through the unfused path; [`unfuse_loras`](Self::unfuse_loras) restores the original weights exactly.
    pub fn fuse_loras(&mut self, adapters: &[(AdapterId, f64)], scale: f64) -> Result<()> {
        self.lora.check_ids(adapters.iter().map(|(id, _)| id))?;
        check_finite("LoRA scale", scale)?;
        for (_, w) in adapters {
            check_finite("LoRA weight", *w)?;
        }
        self.unfuse_loras();
        let contributions: Vec<(usize, f64)> =
            adapters.iter().map(|(id, w)| (id.0, w * scale)).collect();
        for c in COMPONENTS {
            self.for_each_lora_target(c, &mut |_, t| match t {
                Target::Linear(l) => l.fuse_lora(&contributions),
                Target::Conv2d(l) => l.fuse_lora(&contributions),
            });
        }
        self.lora.fused = Some((adapters.to_vec(), scale));
        self.refresh_loras();
        Ok(())
    }

    /// Restores the weights from before [`fuse_loras`](Self::fuse_loras), bit for bit.
    pub fn unfuse_loras(&mut self) {
        if self.lora.fused.take().is_none() {
            return;
        }
        for c in COMPONENTS {
            self.for_each_lora_target(c, &mut |_, t| match t {
                Target::Linear(l) => l.unfuse_lora(),
                Target::Conv2d(l) => l.unfuse_lora(),
            });
        }
        self.refresh_loras();
    }

    /// Unfuses and detaches every adapter; the model is the base model again.
    pub fn remove_loras(&mut self) {
        for c in COMPONENTS {
            self.for_each_lora_target(c, &mut |_, t| match t {
                Target::Linear(l) => l.remove_loras(),
                Target::Conv2d(l) => l.remove_loras(),
            });
        }
        self.lora = Default::default();
    }

    /// Encodes one prompt per row in one batched text-encoder call, row `i` with the adapters `rows[i]` (CLoRA:
    /// each branch's prompt with its own LoRA): `[n, 77, d]`. The text encoder's previous row assignment is
    /// restored afterwards.
    pub fn encode_prompts_per_row(
        &mut self,
        prompts: &[&str],
        rows: &[Vec<AdapterId>],
        clip_skip: Option<usize>,
    ) -> Result<Tensor<B, 3>> {
        if prompts.len() != rows.len() {
            return Err(Error::invalid(
                "LoRA rows",
                format!(
                    "{} prompts but {} rows of adapters",
                    prompts.len(),
                    rows.len()
                ),
            ));
        }
        let previous = self.lora.rows[Component::TextEncoder.index()].clone();
        self.set_lora_rows(Component::TextEncoder, rows)?;
        let out = self.encode_prompts(prompts, clip_skip);
        self.lora.rows[Component::TextEncoder.index()] = previous;
        self.refresh_component(Component::TextEncoder);
        out
    }

    fn refresh_loras(&mut self) {
        for c in COMPONENTS {
            self.refresh_component(c);
        }
    }

    fn refresh_component(&mut self, component: Component) {
        let mult = self.lora.multipliers(component);
        self.for_each_lora_target(component, &mut |_, t| match t {
            Target::Linear(l) => l.refresh_lora(&mult),
            Target::Conv2d(l) => l.refresh_lora(&mult),
        });
    }
}

/// Attaches the resolved factors of one component as adapter `id`, in each layer's dtype and device.
fn attach<B: Backend>(
    sd: &mut StableDiffusion<B>,
    component: Component,
    id: AdapterId,
    resolved: &Resolved,
) {
    let layers = &resolved.layers[component.index()];
    if layers.is_empty() {
        return;
    }
    sd.for_each_lora_target(component, &mut |path, target| {
        let Some((factors, scale)) = layers.get(path) else {
            return;
        };
        match (target, factors) {
            (
                Target::Linear(l),
                LayerFactors::Linear {
                    down,
                    up,
                    d_in,
                    d_out,
                    rank,
                },
            ) => {
                let w = l.weight.val();
                let (device, dtype) = (w.device(), w.dtype());
                let t = |v: &Vec<f32>, shape: [usize; 2]| {
                    Tensor::<B, 2>::from_data(
                        TensorData::new(v.clone(), shape),
                        (&device, burn::tensor::DType::F32),
                    )
                    .cast(dtype)
                };
                l.attach_lora(LinearAdapter {
                    id: id.0,
                    down: t(down, [*d_in, *rank]),
                    up: t(up, [*rank, *d_out]),
                    alpha_scale: *scale,
                });
            }
            (
                Target::Conv2d(c),
                LayerFactors::Conv {
                    down,
                    up,
                    c_in,
                    c_out,
                    kernel,
                    rank,
                },
            ) => {
                let w = c.weight.val();
                let (device, dtype) = (w.device(), w.dtype());
                let t = |v: &Vec<f32>, shape: [usize; 4]| {
                    Tensor::<B, 4>::from_data(
                        TensorData::new(v.clone(), shape),
                        (&device, burn::tensor::DType::F32),
                    )
                    .cast(dtype)
                };
                c.attach_lora(ConvAdapter {
                    id: id.0,
                    down: t(down, [*rank, *c_in, *kernel, *kernel]),
                    up: t(up, [*c_out, *rank, 1, 1]),
                    alpha_scale: *scale,
                });
            }
            // resolve() laid the factors out for this very layer kind
            _ => unreachable!("layer kind changed between resolve and attach at `{path}`"),
        }
    });
}

fn check_finite(what: &str, v: f64) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(what, format!("{v} is not a finite number")))
    }
}
