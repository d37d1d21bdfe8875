//! Which method, with which parameters: the schema shared by `harness generate --job` and experiment configs.

use serde::{Deserialize, Serialize};

use super::clora::CloraParams;
use super::excite::ExciteParams;
use crate::error::{Error, Result};

/// A composition method and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum MethodSpec {
    /// The base model, no LoRA (prompt without trigger words is up to the caller).
    Base,
    /// One LoRA (index into the job's LoRAs) with the combined prompt.
    Single {
        #[serde(default)]
        lora: usize,
    },
    /// All LoRAs at once, `W + s * sum_i w_i dW_i` (a sum), in UNet and text encoder.
    Merge {
        /// Fuse the deltas into the weights (faster, same result up to rounding) instead of unfused adapters.
        #[serde(default)]
        fuse: bool,
    },
    /// One LoRA at a time, the next one after every `switch_step` steps, round robin.
    Switch {
        #[serde(default = "default_switch_step")]
        switch_step: usize,
    },
    /// Every LoRA's CFG prediction at every step, averaged.
    Composite {
        /// One batched UNet call for all LoRAs (true) or one call per LoRA (false); same result.
        #[serde(default = "yes")]
        batched: bool,
    },
    /// CLoRA.
    Clora(CloraParams),
    /// Attend-and-Excite (a test-time push on neglected subjects' attention) on the base model, or with LoRAs
    /// on all of them merged as `merge` does.
    Excite(ExciteParams),
}

fn default_switch_step() -> usize {
    5
}

fn yes() -> bool {
    true
}

impl MethodSpec {
    /// The method's name as configs write it.
    pub fn name(&self) -> &'static str {
        match self {
            MethodSpec::Base => "base",
            MethodSpec::Single { .. } => "single",
            MethodSpec::Merge { .. } => "merge",
            MethodSpec::Switch { .. } => "switch",
            MethodSpec::Composite { .. } => "composite",
            MethodSpec::Clora(_) => "clora",
            MethodSpec::Excite(_) => "excite",
        }
    }

    /// Checks parameter ranges; errors name the parameter.
    pub fn validate(&self) -> Result<()> {
        match self {
            MethodSpec::Switch { switch_step } if *switch_step == 0 => {
                Err(Error::invalid("switch.switch_step", "must be at least 1"))
            }
            MethodSpec::Clora(p) => p.validate(),
            MethodSpec::Excite(p) => p.validate(),
            _ => Ok(()),
        }
    }
}
