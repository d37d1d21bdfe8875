//! An exponential moving average of a model's weights (the "EMA model" of diffusion training): after each
//! optimizer step, `ema = decay * ema + (1 - decay) * weights`. Small diffusion models sample much better from
//! their EMA than from the last step's weights, whose noise from the final few batches shows in every image.
//! The decay warms up as in diffusers' `EMAModel` (`min(decay, (1 + n) / (10 + n))` after `n` updates), so an
//! early average does not drag in the random initial weights.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor};

use super::{ToyError, ToyResult};

/// The averaged weights of a model, kept as one flat vector (one blend a step, not one per parameter).
#[derive(Debug, Clone)]
pub struct Ema<M, B: Backend> {
    /// The model's structure; its weights are replaced by the average in [`Ema::model`].
    template: M,
    /// The averaged weights, every float param flattened in visit order `[n]`.
    flat: Tensor<B, 1>,
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

/// A module's float params, flattened and concatenated in visit order `[n]`.
fn flatten<B: Backend, M: Module<B>>(module: &M) -> Tensor<B, 1> {
    let mut flat = Flatten { out: Vec::new() };
    module.visit(&mut flat);
    Tensor::cat(flat.out, 0)
}

/// Puts a flat vector's pieces into the params, in visit order.
struct Unflatten<B: Backend> {
    flat: Tensor<B, 1>,
    offset: usize,
}

impl<B: Backend> ModuleMapper<B> for Unflatten<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let start = self.offset;
        let n = param.shape().num_elements();
        self.offset += n;
        let flat = self.flat.clone();
        param.map(|t| flat.slice(start..start + n).reshape(t.dims()))
    }
}

impl<M: Module<B> + Clone, B: Backend> Ema<M, B> {
    /// Starts the average at `model`'s weights (`updates` already done, for a resumed run).
    pub fn new(model: M, decay: f64, updates: u64) -> Self {
        Self {
            flat: flatten(&model),
            template: model,
            decay,
            updates,
        }
    }

    /// The decay of the next update: `min(decay, (1 + n) / (10 + n))`.
    pub fn current_decay(&self) -> f64 {
        let n = self.updates as f64;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    /// Moves the average towards the live model's current weights, flattened in the same visit order `[n]`
    /// (what [`super::flat_adam::FlatAdam::step`] returns): `ema <- decay * ema + (1 - decay) * live`.
    pub fn update(&mut self, live: Tensor<B, 1>) -> ToyResult<()> {
        if live.dims() != self.flat.dims() {
            return Err(ToyError::Training(format!(
                "weight average: {} live weights for {} averaged ones",
                live.dims()[0],
                self.flat.dims()[0]
            )));
        }
        let decay = self.current_decay();
        self.flat = self.flat.clone().mul_scalar(decay) + live.mul_scalar(1.0 - decay);
        self.updates += 1;
        Ok(())
    }

    /// The model with the averaged weights.
    pub fn model(&self) -> M {
        let mut unflatten = Unflatten {
            flat: self.flat.clone(),
            offset: 0,
        };
        self.template.clone().map(&mut unflatten)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::tensor::TensorData;

    type C = crate::backend::Cpu;

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
        let live = two::<C>(1.0, 2.0, &device);
        let mut ema = Ema::new(two::<C>(0.0, 0.0, &device), 0.99, 0);
        // First update: decay min(0.99, 1/10) = 0.1.
        assert!((ema.current_decay() - 0.1).abs() < 1e-12);
        ema.update(flatten(&live)).unwrap();
        let (a, b) = values(&ema.model());
        assert!(a.iter().all(|v| (v - 0.9).abs() < 1e-6), "{a:?}");
        assert!(b.iter().all(|v| (v - 1.8).abs() < 1e-6), "{b:?}");
        assert_eq!(ema.updates, 1);
        // Later the target decay caps the warm-up.
        let late = Ema::new(two::<C>(0.0, 0.0, &device), 0.99, 10_000);
        assert!((late.current_decay() - 0.99).abs() < 1e-12);
    }

    #[test]
    fn keeps_each_param_in_its_place_and_refuses_a_wrong_length() {
        let device = Default::default();
        let start = Two::<C> {
            a: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]),
                &device,
            )),
            b: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![5.0f32, 6.0, 7.0], [3]),
                &device,
            )),
        };
        let ema = Ema::new(start, 0.99, 0);
        let (a, b) = values(&ema.model());
        assert_eq!(a, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(b, vec![5.0, 6.0, 7.0]);
        let mut ema = ema;
        let short = Tensor::<C, 1>::zeros([6], &device);
        let err = ema.update(short).unwrap_err();
        assert!(err.to_string().contains("6 live weights for 7"), "{err}");
    }
}
