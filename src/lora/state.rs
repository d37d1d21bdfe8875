//! The LoRA bookkeeping of a loaded model: which adapters are attached, their weights, the global scale
//! (diffusers' `cross_attention_kwargs={"scale": s}` / `lora_scale`), which adapters act on which batch rows of
//! each component, and what is fused.

use std::path::PathBuf;

use super::key::Component;
use super::rows::RowMultipliers;
use crate::error::{Error, Result};

/// An attached adapter (one LoRA file), valid until [`crate::models::sd::StableDiffusion::remove_loras`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AdapterId(pub usize);

/// What the model knows about an attached adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterInfo {
    pub id: AdapterId,
    pub name: String,
    pub path: PathBuf,
    /// The adapter weight (diffusers' `set_adapters(names, weights)`).
    pub weight: f64,
    /// Number of adapted layers per component (`[UNet, text encoder]`).
    pub layers: [usize; 2],
}

/// The LoRA state of a [`crate::models::sd::StableDiffusion`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoraState {
    pub(crate) adapters: Vec<AdapterInfo>,
    /// Global multiplier of every adapter.
    pub(crate) scale: f64,
    /// The adapters acting on every batch row, unless `rows` overrides it for a component.
    pub(crate) active: Vec<AdapterId>,
    /// Per component: the adapters of each batch row.
    pub(crate) rows: [Option<Vec<Vec<AdapterId>>>; 2],
    /// Fused adapters with their weight, and the scale they were fused with.
    pub(crate) fused: Option<(Vec<(AdapterId, f64)>, f64)>,
}

impl Default for LoraState {
    fn default() -> Self {
        Self {
            adapters: Vec::new(),
            scale: 1.0,
            active: Vec::new(),
            rows: [None, None],
            fused: None,
        }
    }
}

impl LoraState {
    pub fn adapters(&self) -> &[AdapterInfo] {
        &self.adapters
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The adapters acting on every row (when no per-row assignment is set).
    pub fn active(&self) -> &[AdapterId] {
        &self.active
    }

    /// The per-row assignment of a component, if any.
    pub fn rows(&self, component: Component) -> Option<&[Vec<AdapterId>]> {
        self.rows[component.index()].as_deref()
    }

    /// The fused adapters (with weights) and the scale they were fused with.
    pub fn fused(&self) -> Option<&(Vec<(AdapterId, f64)>, f64)> {
        self.fused.as_ref()
    }

    pub fn info(&self, id: AdapterId) -> Result<&AdapterInfo> {
        self.adapters.iter().find(|a| a.id == id).ok_or_else(|| {
            Error::invalid(
                "LoRA adapter",
                format!("no adapter with id {} is attached", id.0),
            )
        })
    }

    /// Checks that every id is attached.
    pub(crate) fn check_ids<'a>(&self, ids: impl IntoIterator<Item = &'a AdapterId>) -> Result<()> {
        for id in ids {
            self.info(*id)?;
        }
        Ok(())
    }

    /// Errors unless a forward of `batch` rows is consistent with the per-row assignment of `component`.
    pub fn check_batch(&self, component: Component, batch: usize) -> Result<()> {
        match &self.rows[component.index()] {
            Some(rows) if rows.len() != batch => Err(Error::invalid(
                format!("LoRA rows of the {}", component.name()),
                format!(
                    "assigned for a batch of {} rows, but the forward has {batch}",
                    rows.len()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The unfused multipliers (scale x weight) per row of a component; fused adapters act through the weights.
    pub(crate) fn multipliers(&self, component: Component) -> RowMultipliers {
        let is_fused = |id: &AdapterId| {
            self.fused
                .as_ref()
                .is_some_and(|(f, _)| f.iter().any(|(i, _)| i == id))
        };
        let mult = |ids: &[AdapterId]| -> Vec<(usize, f64)> {
            ids.iter()
                .filter(|id| !is_fused(id))
                .filter_map(|id| self.info(*id).ok().map(|a| (id.0, self.scale * a.weight)))
                .collect()
        };
        match &self.rows[component.index()] {
            Some(rows) => RowMultipliers::PerRow(rows.iter().map(|r| mult(r)).collect()),
            None => RowMultipliers::AllRows(mult(&self.active)),
        }
    }
}
