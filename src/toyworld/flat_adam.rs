//! Adam over all of a module's trained weights as one flat vector.
//!
//! burn's `Adam` steps each parameter tensor on its own: about fifteen tensor operations per tensor, each with
//! libtorch's and burn's fixed cost, and the toyworld's text encoder + UNet have a few hundred small tensors,
//! so the optimizer took 15 ms of a 170 ms base step (docs/toyworld.md, "The allocator and the optimizer").
//! This optimizer concatenates the gradients, runs the same arithmetic once on the whole vector and cuts the
//! result back into the parameters. Every element goes through the same f32 operations as in burn's `Adam` with its
//! default config (beta1 0.9, beta2 0.999, epsilon 1e-5, no weight decay), so the weights are the same bit
//! for bit (the test below checks it against burn's). Like burn's, it leaves a parameter without a
//! gradient (a frozen one) untouched; the set of parameters with gradients must not change between steps.
//!
//! The new weights come back flattened too, in the module's visit order, for the weight average.

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::AutodiffBackend, backend::Backend, Tensor};

use super::{ToyError, ToyResult};

/// Adam's state over the flat vector of every parameter that has a gradient.
#[derive(Debug)]
pub struct FlatAdam<B: Backend> {
    /// First and second moments `[n]` (`None` before the first step).
    moments: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    /// Which parameters (in visit order) the vector holds; fixed at the first step.
    trained: Option<Vec<bool>>,
    /// Steps taken (Adam's `t`).
    time: i32,
    /// Decay of the second moment (burn's default 0.999 unless [`FlatAdam::with_beta2`] set another).
    beta2: f32,
    /// After [`FlatAdam::set_beta2`] changed the decay: the product of the decays of the steps before the
    /// change, and the step count then (the bias correction's `beta2^t` becomes the product of every step's).
    earlier_decay: Option<(f32, i32)>,
}

impl<B: Backend> Default for FlatAdam<B> {
    fn default() -> Self {
        Self {
            moments: None,
            trained: None,
            time: 0,
            beta2: BETA_2,
            earlier_decay: None,
        }
    }
}

const BETA_1: f32 = 0.9;
const BETA_2: f32 = 0.999;
const EPSILON: f32 = 1e-5;

/// Gathers each parameter's weights and gradient, flattened, in visit order.
struct Gather<'a, AB: AutodiffBackend> {
    grads: &'a AB::Gradients,
    weights: Vec<Tensor<AB::InnerBackend, 1>>,
    gradients: Vec<Tensor<AB::InnerBackend, 1>>,
    trained: Vec<bool>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for Gather<'_, AB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        match t.grad(self.grads) {
            Some(g) => {
                self.weights.push(t.inner().reshape([n]));
                self.gradients.push(g.reshape([n]));
                self.trained.push(true);
            }
            None => self.trained.push(false),
        }
    }
}

/// Puts the new weights back, parameter by parameter in visit order: each trained parameter takes the next
/// piece of the flat vector.
struct Scatter<'a, AB: AutodiffBackend> {
    flat: Tensor<AB::InnerBackend, 1>,
    offset: usize,
    trained: std::slice::Iter<'a, bool>,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for Scatter<'_, AB> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        if !self.trained.next().copied().unwrap_or(false) {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let (start, n) = (self.offset, tensor.shape().num_elements());
        self.offset += n;
        let piece = self.flat.clone().slice(start..start + n);
        let mut new = Tensor::from_inner(piece.reshape(tensor.dims()));
        if tensor.is_require_grad() {
            new = new.require_grad();
        }
        Param::from_mapped_value(id, new, mapper)
    }
}

impl<B: Backend> FlatAdam<B> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The same optimizer with the second moment's decay `beta2` in place of burn's 0.999 (an experiment:
    /// `harness toyworld train --adam-beta2`).
    pub fn with_beta2(beta2: f32) -> Self {
        Self {
            beta2,
            ..Self::default()
        }
    }

    /// The second moment's decay from the next step on (`harness toyworld train --adam-beta2-steps`: a
    /// short average early, burn's 0.999 later). The moments are kept; the bias correction follows the
    /// decays the steps had.
    pub fn set_beta2(&mut self, beta2: f32) {
        if beta2 == self.beta2 {
            return;
        }
        self.earlier_decay = Some((self.decay_product(), self.time));
        self.beta2 = beta2;
    }

    /// The product of the second moment's decays over the steps so far (`beta2^t` while it never changed).
    fn decay_product(&self) -> f32 {
        match self.earlier_decay {
            None => self.beta2.powi(self.time),
            Some((product, at)) => product * self.beta2.powi(self.time - at),
        }
    }

    /// One Adam step at learning rate `lr` with `grads` (from `loss.backward()`): the stepped module, and its
    /// trained weights after the step, flattened in visit order `[n]`.
    pub fn step<AB, M>(
        &mut self,
        lr: f64,
        module: M,
        grads: &AB::Gradients,
    ) -> ToyResult<(M, Tensor<B, 1>)>
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        let mut gather = Gather::<AB> {
            grads,
            weights: Vec::new(),
            gradients: Vec::new(),
            trained: Vec::new(),
        };
        module.visit(&mut gather);
        if gather.weights.is_empty() {
            return Err(ToyError::Training(
                "Adam step: no parameter has a gradient".into(),
            ));
        }
        match &self.trained {
            Some(t) if *t != gather.trained => {
                return Err(ToyError::Training(
                    "Adam step: the parameters with gradients changed between steps".into(),
                ))
            }
            _ => {}
        }
        // theta, g: [n]
        let theta = Tensor::cat(gather.weights, 0);
        let g = Tensor::cat(gather.gradients, 0);
        // burn's AdaptiveMomentum, element for element (its first step starts from zero moments, which adds
        // exactly nothing).
        let (m, v) = match self.moments.take() {
            Some((m, v)) => (
                m.mul_scalar(BETA_1).add(g.clone().mul_scalar(1.0 - BETA_1)),
                v.mul_scalar(self.beta2)
                    .add(g.square().mul_scalar(1.0 - self.beta2)),
            ),
            None => (
                g.clone().mul_scalar(1.0 - BETA_1),
                g.square().mul_scalar(1.0 - self.beta2),
            ),
        };
        self.time += 1;
        let bias_correction2_sqrt = (1.0 - self.decay_product()).sqrt();
        let combined_factor = bias_correction2_sqrt / (1.0 - BETA_1.powi(self.time));
        let update = m
            .clone()
            .mul_scalar(combined_factor)
            .div(v.clone().sqrt().add_scalar(EPSILON * bias_correction2_sqrt));
        let theta = theta - update.mul_scalar(lr);
        self.moments = Some((m, v));
        let mut scatter = Scatter::<AB> {
            flat: theta.clone(),
            offset: 0,
            trained: gather.trained.iter(),
        };
        let module = module.map(&mut scatter);
        self.trained = Some(gather.trained);
        Ok((module, theta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    use burn::tensor::{Distribution, TensorData};

    type A = crate::backend::CpuAutodiff;
    type Inner = <A as AutodiffBackend>::InnerBackend;

    #[derive(Module, Debug)]
    struct Net<B: Backend> {
        w: Param<Tensor<B, 2>>,
        b: Param<Tensor<B, 1>>,
        frozen: Param<Tensor<B, 1>>,
    }

    fn net(device: &<A as burn::tensor::backend::BackendTypes>::Device) -> Net<A> {
        let t2 = Tensor::<A, 2>::random([3, 4], Distribution::Normal(0.0, 1.0), device);
        let t1 = Tensor::<A, 1>::random([4], Distribution::Normal(0.0, 1.0), device);
        Net {
            w: Param::from_tensor(t2),
            b: Param::from_tensor(t1),
            frozen: crate::models::nn::frozen(Tensor::from_data(
                TensorData::new(vec![0.5f32; 4], [4]),
                device,
            )),
        }
    }

    fn loss(net: &Net<A>, x: Tensor<A, 2>) -> Tensor<A, 1> {
        // [5, 3] x [3, 4] + [4], times the frozen [4]: a loss whose gradient differs per element and step.
        let y = x.matmul(net.w.val()) + net.b.val().unsqueeze::<2>();
        (y * net.frozen.val().unsqueeze::<2>())
            .powf_scalar(2.0)
            .mean()
    }

    fn values(net: &Net<A>) -> Vec<f32> {
        let mut out: Vec<f32> = net.w.val().into_data().to_vec().unwrap();
        out.extend(net.b.val().into_data().to_vec::<f32>().unwrap());
        out.extend(net.frozen.val().into_data().to_vec::<f32>().unwrap());
        out
    }

    /// Five steps of `flat_adam` and of burn's Adam under `config` from the same weights: the same bits.
    fn steps_as_burns(config: AdamConfig, mut flat_adam: FlatAdam<Inner>) {
        let device = Default::default();
        <A as Backend>::seed(&device, 7);
        let start = net(&device);
        let mut reference = start.clone();
        let mut flat_net = start;
        let mut burn_adam = config.init::<A, Net<A>>();
        for step in 0..5 {
            let x = Tensor::<A, 2>::random([5, 3], Distribution::Normal(0.0, 1.0), &device);
            let lr = 0.01 * (step + 1) as f64;
            let grads =
                GradientsParams::from_grads(loss(&reference, x.clone()).backward(), &reference);
            reference = burn_adam.step(lr, reference, grads);
            let grads = loss(&flat_net, x).backward();
            let (stepped, flat) = flat_adam.step::<A, _>(lr, flat_net, &grads).unwrap();
            flat_net = stepped;
            // The flat weights are the trained params' new values in visit order (w, then b).
            let flat: Vec<f32> = flat.into_data().to_vec().unwrap();
            assert_eq!(flat, values(&flat_net)[..16].to_vec());
        }
        assert_eq!(values(&flat_net), values(&reference));
        assert!(values(&flat_net)[16..].iter().all(|&v| v == 0.5));
    }

    #[test]
    fn steps_bit_for_bit_as_burns_adam_and_leaves_frozen_params() {
        steps_as_burns(AdamConfig::new(), FlatAdam::new());
    }

    #[test]
    fn another_beta2_steps_as_burns_adam_with_it() {
        steps_as_burns(
            AdamConfig::new().with_beta_2(0.99),
            FlatAdam::with_beta2(0.99),
        );
    }

    /// A param's gradient as f64 values, flattened.
    fn grad_f64<const D: usize>(
        param: &Param<Tensor<A, D>>,
        grads: &<A as AutodiffBackend>::Gradients,
    ) -> Vec<f64> {
        let g: Vec<f32> = param.grad(grads).unwrap().into_data().to_vec().unwrap();
        g.into_iter().map(f64::from).collect()
    }

    /// Three steps at beta2 0.99, then two at 0.999 after `set_beta2`: each element as Adam written out in
    /// f64 with those decays (the bias correction `1 - 0.99^3 * 0.999^(t-3)`), to f32 rounding.
    #[test]
    fn a_changed_beta2_keeps_the_moments_and_corrects_by_every_steps_decay() {
        let device = Default::default();
        <A as Backend>::seed(&device, 7);
        let mut flat_net = net(&device);
        let mut reference: Vec<f64> = values(&flat_net)[..16].iter().map(|&v| v as f64).collect();
        let (mut m, mut v) = (vec![0.0f64; 16], vec![0.0f64; 16]);
        let mut decay_product = 1.0f64;
        let mut adam = FlatAdam::<Inner>::with_beta2(0.99);
        for step in 0..5 {
            let beta2 = if step < 3 { 0.99 } else { 0.999 };
            adam.set_beta2(beta2 as f32);
            let x = Tensor::<A, 2>::random([5, 3], Distribution::Normal(0.0, 1.0), &device);
            let lr = 0.01 * (step + 1) as f64;
            let grads = loss(&flat_net, x).backward();
            // The gradient at the current weights, w then b: [16].
            let mut g = grad_f64(&flat_net.w, &grads);
            g.extend(grad_f64(&flat_net.b, &grads));
            let (stepped, _) = adam.step::<A, _>(lr, flat_net, &grads).unwrap();
            flat_net = stepped;
            decay_product *= beta2;
            let t = step + 1;
            for i in 0..16 {
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i];
                let m_hat = m[i] / (1.0 - 0.9f64.powi(t));
                let v_hat = v[i] / (1.0 - decay_product);
                reference[i] -= lr * m_hat / (v_hat.sqrt() + EPSILON as f64);
            }
        }
        for (got, want) in values(&flat_net)[..16].iter().zip(&reference) {
            assert!((*got as f64 - want).abs() < 1e-5, "{got} against {want}");
        }
    }

    #[test]
    fn refuses_a_step_without_gradients() {
        let device = Default::default();
        let n = net(&device);
        // A loss of a tensor outside the module: no parameter of it gets a gradient.
        let outside = Tensor::<A, 1>::ones([2], &device).require_grad();
        let grads = (outside * 2.0).sum().backward();
        let err = FlatAdam::new().step::<A, _>(0.1, n, &grads).unwrap_err();
        assert!(
            err.to_string().contains("no parameter has a gradient"),
            "{err}"
        );
    }
}
