//! `switch` (LoRA Switch of Multi-LoRA-Composition): one LoRA active at a time. The reference switches in a
//! step-end callback: after step `i > 0` with `i % switch_step == 0` the next LoRA (round robin) becomes active,
//! so step `j` uses LoRA `floor((j - 1) / switch_step) mod n` (`j >= 1`) and step 0 the first. The prompt is
//! encoded once, before the loop, with the first LoRA active in the text encoder.

use burn::tensor::{backend::AutodiffBackend, Tensor};

use super::single::{cfg_step, encode_context};
use super::{CompositionJob, CompositionMethod, StepContext, StepOutput};
use crate::error::{Error, Result};
use crate::lora::state::AdapterId;
use crate::models::sd::StableDiffusion;

#[derive(Debug)]
pub struct Switch<B: AutodiffBackend> {
    switch_step: usize,
    loras: Vec<(AdapterId, f64)>,
    style: Option<(AdapterId, f64)>,
    current: Option<usize>,
    context: Option<Tensor<B, 3>>,
}

impl<B: AutodiffBackend> Switch<B> {
    pub fn new(switch_step: usize) -> Self {
        Self {
            switch_step,
            loras: Vec::new(),
            style: None,
            current: None,
            context: None,
        }
    }

    /// The LoRA (index) active at step `j`.
    pub fn lora_at(switch_step: usize, n: usize, j: usize) -> usize {
        if j == 0 {
            0
        } else {
            ((j - 1) / switch_step) % n
        }
    }

    fn activate(&mut self, sd: &mut StableDiffusion<B>, k: usize) -> Result<()> {
        if self.current != Some(k) {
            let mut active = vec![self.loras[k]];
            active.extend(self.style);
            sd.set_adapters(&active)?;
            self.current = Some(k);
        }
        Ok(())
    }
}

impl<B: AutodiffBackend> CompositionMethod<B> for Switch<B> {
    fn name(&self) -> &'static str {
        "switch"
    }

    fn prepare(&mut self, sd: &mut StableDiffusion<B>, job: &CompositionJob) -> Result<()> {
        if job.loras.is_empty() {
            return Err(Error::invalid("switch", "needs at least one LoRA"));
        }
        self.loras = job.loras.iter().map(|l| (l.id, l.weight)).collect();
        self.style = job.style;
        self.current = None;
        sd.set_lora_scale(job.lora_scale)?;
        self.activate(sd, 0)?;
        self.context = Some(encode_context(sd, job, &job.combined()?)?);
        Ok(())
    }

    fn step(
        &mut self,
        sd: &mut StableDiffusion<B>,
        ctx: &StepContext<'_, B>,
        latent: Tensor<B, 4>,
    ) -> Result<StepOutput<B>> {
        let k = Self::lora_at(self.switch_step, self.loras.len(), ctx.index);
        self.activate(sd, k)?;
        cfg_step(sd, ctx, latent, self.context.clone().expect("prepare ran"))
    }

    fn finish(&mut self, sd: &mut StableDiffusion<B>) {
        self.context = None;
        self.current = None;
        let _ = sd.set_adapters(&[]);
        let _ = sd.set_lora_scale(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    type AD = burn::backend::Autodiff<crate::backend::Cpu>;

    #[test]
    fn switches_after_the_callback_step() {
        let seq: Vec<usize> = (0..17).map(|j| Switch::<AD>::lora_at(5, 3, j)).collect();
        assert_eq!(seq, vec![0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 0]);
    }
}
