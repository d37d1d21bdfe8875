//! What the two encoders' training loops share: the batch check, the AdamW optimiser, one optimiser step with
//! its finite-loss guard, and the running means logged every [`LOG_EVERY`] steps.

use candle::Tensor;
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};

use super::data::candle_err;
use crate::toyworld::error::{ToyError, ToyResult};

/// Steps between log lines.
pub const LOG_EVERY: usize = 25;

/// Refuses a batch that contrastive losses cannot use (`what`: the phase, for the message).
pub fn check_batch(what: &str, batch: usize, dataset: usize) -> ToyResult<()> {
    if batch < 2 || dataset < batch {
        return Err(ToyError::Training(format!(
            "{what} needs batch >= 2 and dataset >= batch (batch {batch}, dataset {dataset})"
        )));
    }
    Ok(())
}

/// AdamW over every variable of `varmap`.
pub fn adamw(varmap: &VarMap, lr: f64, weight_decay: f64) -> ToyResult<AdamW> {
    AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr,
            weight_decay,
            ..Default::default()
        },
    )
    .map_err(candle_err)
}

/// Running means of the loss and the in-batch accuracy since the last log line.
#[derive(Debug, Default)]
pub struct StepStats {
    loss: f64,
    acc: f64,
    n: usize,
}

impl StepStats {
    /// Reads `loss`, refuses a non-finite one (`what`: the phase), takes the optimiser step and records it.
    pub fn step(
        &mut self,
        opt: &mut AdamW,
        loss: &Tensor,
        acc: f64,
        what: &str,
        step: usize,
    ) -> ToyResult<()> {
        let lv = loss.to_scalar::<f32>().map_err(candle_err)?;
        if !lv.is_finite() {
            return Err(ToyError::Training(format!(
                "{what} loss is {lv} at step {step}"
            )));
        }
        opt.backward_step(loss).map_err(candle_err)?;
        self.loss += lv as f64;
        self.acc += acc;
        self.n += 1;
        Ok(())
    }

    /// Whether step `step` (0-based) of `steps` ends a log period.
    pub fn due(step: usize, steps: usize) -> bool {
        (step + 1).is_multiple_of(LOG_EVERY) || step + 1 == steps
    }

    /// The mean loss and accuracy since the last call; starts a new period.
    pub fn take(&mut self) -> (f64, f64) {
        let n = self.n.max(1) as f64;
        let means = (self.loss / n, self.acc / n);
        *self = Self::default();
        means
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::{DType, Device};
    use candle_nn::{Init, VarBuilder};

    #[test]
    fn step_stats_average_each_period_and_refuse_a_non_finite_loss() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let w = vb.get_with_hints(2, "w", Init::Const(1.0)).unwrap();
        let mut opt = adamw(&varmap, 0.1, 0.0).unwrap();
        let mut stats = StepStats::default();
        for (step, acc) in [(0, 0.5), (1, 1.0)] {
            let loss = w.sqr().unwrap().sum_all().unwrap(); // 2.0 before the first step
            stats.step(&mut opt, &loss, acc, "test", step).unwrap();
        }
        let (loss, acc) = stats.take();
        assert!(loss < 2.0 && loss > 1.0, "{loss}");
        assert_eq!(acc, 0.75);
        assert_eq!(stats.take(), (0.0, 0.0));
        let nan = Tensor::new(f32::NAN, &Device::Cpu).unwrap();
        let e = stats
            .step(&mut opt, &nan, 0.0, "test", 7)
            .unwrap_err()
            .to_string();
        assert!(e.contains("test loss is NaN at step 7"), "{e}");
        assert!(StepStats::due(24, 100) && StepStats::due(99, 100) && !StepStats::due(25, 100));
        assert!(check_batch("X", 1, 10).is_err() && check_batch("X", 4, 3).is_err());
        check_batch("X", 2, 2).unwrap();
    }
}
