//! Training bookkeeping shared by the VAE, base and LoRA trainers: the learning-rate schedule, the resumable
//! state file, and the loss log (CSV).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::error::{ToyError, ToyResult};

/// The JSON file `path` parsed, or `None` when there is no such file; `what` names it in the error of a file
/// that does not parse.
pub fn read_json_if_present<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
) -> ToyResult<Option<T>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| ToyError::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ToyError::bad_file(path, format!("invalid {what} ({e})")))
}

/// Linear warm-up to `lr`, then cosine decay to `lr * floor` at `total`.
pub fn learning_rate(step: usize, total: usize, lr: f64, warmup: usize, floor: f64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let p = ((step - warmup) as f64 / span as f64).min(1.0);
    lr * (floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
}

/// The state of a training phase, saved beside its checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseState {
    /// Steps done (the checkpoint holds the weights after this many steps).
    pub step: usize,
    /// Steps of the whole phase.
    pub total: usize,
    /// Seconds spent so far, over all runs.
    pub seconds: f64,
    /// Whether the phase is finished.
    pub done: bool,
    /// Free-form numbers a phase keeps (the VAE's scaling factor, ...).
    #[serde(default)]
    pub values: std::collections::BTreeMap<String, f64>,
}

impl PhaseState {
    pub fn path(work: &Path, phase: &str) -> PathBuf {
        work.join(format!("{phase}.state.json"))
    }

    /// The saved state of `phase`, if any.
    pub fn load(work: &Path, phase: &str) -> ToyResult<Option<Self>> {
        read_json_if_present(&Self::path(work, phase), "state")
    }

    /// Writes the state atomically.
    pub fn save(&self, work: &Path, phase: &str) -> ToyResult<()> {
        let p = Self::path(work, phase);
        let tmp = p.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).expect("state serializes");
        std::fs::write(&tmp, text).map_err(|e| ToyError::io(&tmp, e))?;
        std::fs::rename(&tmp, &p).map_err(|e| ToyError::io(&p, e))
    }
}

/// Appends `step,loss,lr,seconds` rows to `<phase>.loss.csv` and reports progress.
pub struct LossLog {
    path: PathBuf,
    started: Instant,
    seconds_before: f64,
    ema: Option<f64>,
    window: Vec<f64>,
}

impl LossLog {
    pub fn open(work: &Path, phase: &str, seconds_before: f64) -> ToyResult<Self> {
        let path = work.join(format!("{phase}.loss.csv"));
        if !path.is_file() {
            std::fs::write(&path, "step,loss,lr,seconds\n").map_err(|e| ToyError::io(&path, e))?;
        }
        Ok(Self {
            path,
            started: Instant::now(),
            seconds_before,
            ema: None,
            window: Vec::new(),
        })
    }

    /// Seconds over all runs of this phase.
    pub fn seconds(&self) -> f64 {
        self.seconds_before + self.started.elapsed().as_secs_f64()
    }

    /// Records one step's loss; returns the smoothed loss.
    pub fn record(&mut self, step: usize, loss: f64, lr: f64) -> ToyResult<f64> {
        self.window.push(loss);
        let ema = match self.ema {
            Some(e) => 0.95 * e + 0.05 * loss,
            None => loss,
        };
        self.ema = Some(ema);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| ToyError::io(&self.path, e))?;
        writeln!(f, "{step},{loss:.6},{lr:.3e},{:.1}", self.seconds())
            .map_err(|e| ToyError::io(&self.path, e))?;
        Ok(ema)
    }

    /// Mean of the losses recorded since the last call.
    pub fn take_window_mean(&mut self) -> f64 {
        let m = self.window.iter().sum::<f64>() / self.window.len().max(1) as f64;
        self.window.clear();
        m
    }
}

/// Fails on a non-finite loss, naming the phase and step.
pub fn check_finite(phase: &str, step: usize, loss: f64) -> ToyResult<()> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(ToyError::Training(format!(
            "{phase}: loss became {loss} at step {step}"
        )))
    }
}
