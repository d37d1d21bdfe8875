//! An exponential moving average of a model's weights (the "EMA model" of diffusion training): after each
//! optimizer step, `ema = decay * ema + (1 - decay) * weights`. Small diffusion models sample much better from
//! their EMA than from the last step's weights, whose noise from the final few batches shows in every image.
//! The decay warms up as in diffusers' `EMAModel` (`min(decay, (1 + n) / (10 + n))` after `n` updates), so an
//! early average does not drag in the random initial weights.

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::AutodiffBackend, backend::Backend, Tensor};

/// The averaged weights of a model whose trainable twin lives on an autodiff backend.
#[derive(Debug, Clone)]
pub struct Ema<M> {
    /// The averaged model (inference backend).
    pub model: M,
    /// Target decay per update.
    pub decay: f64,
    /// Updates so far (sets the warm-up of the decay).
    pub updates: u64,
}

/// Every float param flattened, in visit order.
struct Flatten<B: Backend> {
    out: Vec<Tensor<B, 1>>,
}

impl<B: Backend> ModuleVisitor<B> for Flatten<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        self.out.push(t.reshape([n]));
    }
}

/// `ema <- decay * ema + (1 - decay) * live`, param by param in visit order.
struct Blend<B: Backend> {
    live: std::vec::IntoIter<Tensor<B, 1>>,
    decay: f64,
}

impl<B: Backend> ModuleMapper<B> for Blend<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let live = self
            .live
            .next()
            .expect("the live model and its average have the same params");
        let decay = self.decay;
        param.map(|avg| {
            let dims = avg.dims();
            avg.mul_scalar(decay) + live.reshape(dims).mul_scalar(1.0 - decay)
        })
    }
}

impl<M: Clone> Ema<M> {
    /// Starts the average at `model`'s weights (`updates` already done, for a resumed run).
    pub fn new(model: M, decay: f64, updates: u64) -> Self {
        Self {
            model,
            decay,
            updates,
        }
    }

    /// The decay of the next update: `min(decay, (1 + n) / (10 + n))`.
    pub fn current_decay(&self) -> f64 {
        let n = self.updates as f64;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    /// Moves the average towards `live`'s current weights.
    pub fn update<B, L>(&mut self, live: &L)
    where
        B: AutodiffBackend,
        L: AutodiffModule<B, InnerModule = M>,
        M: Module<B::InnerBackend>,
    {
        let mut flat = Flatten { out: Vec::new() };
        live.valid().visit(&mut flat);
        let decay = self.current_decay();
        let mut blend = Blend {
            live: flat.out.into_iter(),
            decay,
        };
        self.model = self.model.clone().map(&mut blend);
        assert!(
            blend.live.next().is_none(),
            "the live model and its average have the same params"
        );
        self.updates += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::tensor::TensorData;

    type A = crate::backend::CpuAutodiff;

    #[derive(Module, Debug)]
    // (burn's derive finds the module's fields by the backend parameter's name, `B`)
    struct Two<B: Backend> {
        a: Param<Tensor<B, 2>>,
        b: Param<Tensor<B, 1>>,
    }

    fn two<B: Backend>(a: f32, b: f32, device: &B::Device) -> Two<B> {
        Two {
            a: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![a; 4], [2, 2]),
                device,
            )),
            b: Param::from_tensor(Tensor::from_data(TensorData::new(vec![b; 3], [3]), device)),
        }
    }

    fn values<B: Backend>(m: &Two<B>) -> (Vec<f32>, Vec<f32>) {
        (
            m.a.val().into_data().to_vec().unwrap(),
            m.b.val().into_data().to_vec().unwrap(),
        )
    }

    #[test]
    fn blends_every_param_with_the_warmed_up_decay() {
        let device = Default::default();
        let live = two::<A>(1.0, 2.0, &device);
        let mut ema = Ema::new(two(0.0, 0.0, &device), 0.99, 0);
        // First update: decay min(0.99, 1/10) = 0.1.
        assert!((ema.current_decay() - 0.1).abs() < 1e-12);
        ema.update::<A, _>(&live);
        let (a, b) = values(&ema.model);
        assert!(a.iter().all(|v| (v - 0.9).abs() < 1e-6), "{a:?}");
        assert!(b.iter().all(|v| (v - 1.8).abs() < 1e-6), "{b:?}");
        // Later the target decay caps the warm-up.
        let late = Ema::new(two::<crate::backend::Cpu>(0.0, 0.0, &device), 0.99, 10_000);
        assert!((late.current_decay() - 0.99).abs() < 1e-12);
    }
}
