//! Group and layer normalisation, softmax and SiLU as single operations. burn 0.21 has no normalisation in
//! its backend traits, and its autodiff backend differentiates softmax and SiLU as the operations they are
//! made of, so a norm costs about a dozen operations forward and two dozen backward, each with its own
//! dispatch, allocation and graph entry: on the toyworld's small tensors that overhead, not the arithmetic,
//! is what a training step spends most. Here each is one call on a plain backend (libtorch's own kernel on
//! `tch`) and one graph node on `Autodiff<_>` whose backward is written out ([`reference`]).
//!
//! The model code stays generic over `B: Backend`: [`norm`], [`softmax`] and [`silu`] look at which backend
//! `B` is (its `TypeId`) and take the fused path for the backends this build has (`flex`, `tch`, `cuda`, each
//! plain or under `Autodiff`), burn's operations for any other.

mod autodiff;
mod kernels;
mod reference;

use std::any::{Any, TypeId};
use std::fmt::Debug;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

pub use kernels::FusedKernels;

/// Which normalisation, with its epsilon: `norm(x) * gamma + beta` over the inputs `[x, gamma, beta]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Norm {
    /// `torch.nn.GroupNorm` over `[n, c, ...]`: statistics over each of `groups` groups of channels.
    Group { groups: usize, eps: f64 },
    /// `torch.nn.LayerNorm` over the last axis.
    Layer { eps: f64 },
}

impl Norm {
    pub fn eps(self) -> f64 {
        match self {
            Self::Group { eps, .. } | Self::Layer { eps } => eps,
        }
    }
}

/// Softmax along `dim`, of the input `[x]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Softmax {
    pub dim: usize,
}

/// `x * sigmoid(x)`, of the input `[x]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Silu;

/// An operation of `N` float inputs and one output, with a kernel for each direction on every
/// [`FusedKernels`] backend and a reference in burn operations for any other backend.
pub trait FusedOp<const N: usize>: Debug + Clone + Copy + Send + 'static {
    /// What the backward needs of the forward's tensors, kept in the graph until then (no more: softmax
    /// keeps its output alone, where burn's operations kept the exponentials, as large).
    type Saved<I: FusedKernels>: Clone + Send + Debug + 'static;

    fn forward<I: FusedKernels>(self, inputs: [FloatTensor<I>; N]) -> FloatTensor<I>;

    fn save<I: FusedKernels>(
        self,
        inputs: [FloatTensor<I>; N],
        output: FloatTensor<I>,
    ) -> Self::Saved<I>;

    /// The gradients for the inputs (each only when `wanted`) from the output's gradient `dy`.
    fn backward<I: FusedKernels>(
        self,
        saved: Self::Saved<I>,
        dy: FloatTensor<I>,
        wanted: [bool; N],
    ) -> [Option<FloatTensor<I>>; N];

    /// The forward in burn operations (differentiated operation by operation on an autodiff backend).
    fn reference<B: Backend>(self, inputs: [FloatTensor<B>; N]) -> FloatTensor<B>;
}

impl FusedOp<3> for Norm {
    /// `x` and `gamma`.
    type Saved<I: FusedKernels> = (FloatTensor<I>, FloatTensor<I>);

    fn forward<I: FusedKernels>(self, [x, gamma, beta]: [FloatTensor<I>; 3]) -> FloatTensor<I> {
        I::norm_forward(self, x, gamma, beta)
    }

    fn save<I: FusedKernels>(
        self,
        [x, gamma, _beta]: [FloatTensor<I>; 3],
        _output: FloatTensor<I>,
    ) -> Self::Saved<I> {
        (x, gamma)
    }

    fn backward<I: FusedKernels>(
        self,
        (x, gamma): Self::Saved<I>,
        dy: FloatTensor<I>,
        wanted: [bool; 3],
    ) -> [Option<FloatTensor<I>>; 3] {
        I::norm_backward(self, x, gamma, dy, wanted)
    }

    fn reference<B: Backend>(self, [x, gamma, beta]: [FloatTensor<B>; 3]) -> FloatTensor<B> {
        reference::norm_forward::<B>(self, x, gamma, beta)
    }
}

impl FusedOp<1> for Softmax {
    /// The output.
    type Saved<I: FusedKernels> = FloatTensor<I>;

    fn forward<I: FusedKernels>(self, [x]: [FloatTensor<I>; 1]) -> FloatTensor<I> {
        I::softmax_forward(x, self.dim)
    }

    fn save<I: FusedKernels>(
        self,
        _inputs: [FloatTensor<I>; 1],
        output: FloatTensor<I>,
    ) -> FloatTensor<I> {
        output
    }

    fn backward<I: FusedKernels>(
        self,
        output: FloatTensor<I>,
        dy: FloatTensor<I>,
        _wanted: [bool; 1],
    ) -> [Option<FloatTensor<I>>; 1] {
        [Some(I::softmax_backward(output, dy, self.dim))]
    }

    fn reference<B: Backend>(self, [x]: [FloatTensor<B>; 1]) -> FloatTensor<B> {
        B::softmax(x, self.dim)
    }
}

impl FusedOp<1> for Silu {
    /// The input.
    type Saved<I: FusedKernels> = FloatTensor<I>;

    fn forward<I: FusedKernels>(self, [x]: [FloatTensor<I>; 1]) -> FloatTensor<I> {
        I::silu_forward(x)
    }

    fn save<I: FusedKernels>(
        self,
        [x]: [FloatTensor<I>; 1],
        _output: FloatTensor<I>,
    ) -> FloatTensor<I> {
        x
    }

    fn backward<I: FusedKernels>(
        self,
        x: FloatTensor<I>,
        dy: FloatTensor<I>,
        _wanted: [bool; 1],
    ) -> [Option<FloatTensor<I>>; 1] {
        [Some(I::silu_backward(x, dy))]
    }

    fn reference<B: Backend>(self, [x]: [FloatTensor<B>; 1]) -> FloatTensor<B> {
        reference::silu_forward::<B>(x)
    }
}

/// `value` as type `To`, when `From` and `To` are the same type (`Err(value)` otherwise).
fn same_type<From: 'static, To: 'static>(value: From) -> Result<To, From> {
    let boxed: Box<dyn Any> = Box::new(value);
    match boxed.downcast::<To>() {
        Ok(to) => Ok(*to),
        Err(boxed) => Err(*boxed
            .downcast::<From>()
            .unwrap_or_else(|_| unreachable!("boxed as From"))),
    }
}

/// Runs `op` on `B` if `B` is `I` or `Autodiff<I>`; gives the inputs back otherwise.
fn on<B: Backend, I: FusedKernels, Op: FusedOp<N>, const N: usize>(
    op: Op,
    inputs: [FloatTensor<B>; N],
) -> Result<FloatTensor<B>, [FloatTensor<B>; N]> {
    let is = |t: TypeId| TypeId::of::<B>() == t;
    if is(TypeId::of::<Autodiff<I>>()) {
        let inputs = same_type::<_, [FloatTensor<Autodiff<I>>; N]>(inputs)?;
        let y = autodiff::apply::<I, Op, N>(op, inputs);
        Ok(same_type(y).unwrap_or_else(|_| unreachable!("B is Autodiff<I>")))
    } else if is(TypeId::of::<I>()) {
        let inputs = same_type::<_, [FloatTensor<I>; N]>(inputs)?;
        Ok(same_type(op.forward::<I>(inputs)).unwrap_or_else(|_| unreachable!("B is I")))
    } else {
        Err(inputs)
    }
}

/// `op` on whichever backend `B` is: fused where this build has its kernels, burn's operations otherwise.
fn apply<B: Backend, Op: FusedOp<N>, const N: usize>(
    op: Op,
    inputs: [FloatTensor<B>; N],
) -> FloatTensor<B> {
    #[cfg(feature = "tch")]
    let inputs = match on::<B, burn::backend::LibTorch, Op, N>(op, inputs) {
        Ok(y) => return y,
        Err(inputs) => inputs,
    };
    #[cfg(feature = "flex")]
    let inputs = match on::<B, burn::backend::Flex, Op, N>(op, inputs) {
        Ok(y) => return y,
        Err(inputs) => inputs,
    };
    #[cfg(feature = "cuda")]
    let inputs = match on::<B, burn::backend::Cuda, Op, N>(op, inputs) {
        Ok(y) => return y,
        Err(inputs) => inputs,
    };
    op.reference::<B>(inputs)
}

fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn tensor<B: Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// `norm(x) * gamma + beta`: `x` `[n, c, ...]` for a group norm, `[..., d]` for a layer norm, `gamma` and
/// `beta` `[c]` or `[d]`; all three in the same float dtype.
pub fn norm<B: Backend, const D: usize>(
    norm: Norm,
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
) -> Tensor<B, D> {
    tensor(apply::<B, _, 3>(
        norm,
        [primitive(x), primitive(gamma), primitive(beta)],
    ))
}

/// Softmax along `dim` (burn's `activation::softmax`).
pub fn softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    tensor(apply::<B, _, 1>(Softmax { dim }, [primitive(x)]))
}

/// `x * sigmoid(x)` (burn's `activation::silu`).
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    tensor(apply::<B, _, 1>(Silu, [primitive(x)]))
}
#[cfg(test)]
mod tests {
    use burn::tensor::ops::FloatTensorOps;
    use burn::tensor::{Distribution, ElementConversion, Shape, TensorMetadata};

    use super::*;

    fn random<B: Backend>(shape: &Shape, device: &B::Device) -> FloatTensor<B> {
        let flat = Tensor::<B, 1>::random(
            [shape.num_elements()],
            Distribution::Normal(0.3, 1.5),
            device,
        );
        B::float_reshape(primitive(flat), shape.clone())
    }

    fn max_diff<B: Backend>(a: FloatTensor<B>, b: FloatTensor<B>) -> f32 {
        let numel = a.shape().num_elements();
        tensor::<B, 1>(B::float_reshape(B::float_sub(a, b), Shape::new([numel])))
            .abs()
            .max()
            .into_scalar()
            .elem()
    }

    /// `op` fused against its burn operations on `Autodiff<I>` (differentiated operation by operation):
    /// the outputs, and the gradients of `sum(y * r)` for the inputs that `tracked` marks (no others).
    fn check<I: FusedKernels, Op: FusedOp<N>, const N: usize>(
        op: Op,
        shapes: [Shape; N],
        tracked: [bool; N],
    ) {
        type A<I> = Autodiff<I>;
        let device = Default::default();
        let inputs: [FloatTensor<A<I>>; N] = shapes.each_ref().map(|s| random::<A<I>>(s, &device));
        let r = tensor::<A<I>, 1>(random::<A<I>>(
            &Shape::new([shapes[0].num_elements()]),
            &device,
        ));
        let run = |fused: bool| {
            let inputs: [Tensor<A<I>, 1>; N] = std::array::from_fn(|i| {
                let t = tensor::<A<I>, 1>(inputs[i].clone());
                if tracked[i] {
                    t.require_grad()
                } else {
                    t
                }
            });
            let shaped = std::array::from_fn(|i| {
                A::<I>::float_reshape(primitive(inputs[i].clone()), shapes[i].clone())
            });
            let y = if fused {
                apply::<A<I>, Op, N>(op, shaped)
            } else {
                op.reference::<A<I>>(shaped)
            };
            let y = tensor::<A<I>, 1>(A::<I>::float_reshape(
                y,
                Shape::new([shapes[0].num_elements()]),
            ));
            let grads = (y.clone() * r.clone()).sum().backward();
            (y.inner(), inputs.map(|t| t.grad(&grads)))
        };
        let (y_fused, grads_fused) = run(true);
        let (y_ref, grads_ref) = run(false);
        let diff = max_diff::<I>(primitive(y_fused), primitive(y_ref));
        assert!(diff < 1e-5, "{op:?}: outputs differ by {diff}");
        for (i, (f, r)) in grads_fused.into_iter().zip(grads_ref).enumerate() {
            assert_eq!(
                f.is_some(),
                tracked[i],
                "{op:?}: input {i} tracked {}",
                tracked[i]
            );
            if let (Some(f), Some(r)) = (f, r) {
                let diff = max_diff::<I>(primitive(f), primitive(r));
                assert!(
                    diff < 1e-4,
                    "{op:?}: input {i}'s gradients differ by {diff}"
                );
            }
        }
    }

    fn check_all<I: FusedKernels>() {
        let group = Norm::Group {
            groups: 4,
            eps: 1e-5,
        };
        let layer = Norm::Layer { eps: 1e-5 };
        for tracked in [[true; 3], [true, false, false], [false, true, true]] {
            let c = Shape::new([8]);
            check::<I, _, 3>(group, [Shape::new([2, 8, 5, 3]), c.clone(), c], tracked);
            let d = Shape::new([12]);
            check::<I, _, 3>(layer, [Shape::new([2, 7, 12]), d.clone(), d], tracked);
        }
        // One group is a layer norm over all of c, h, w.
        let one_group = Norm::Group {
            groups: 1,
            eps: 1e-6,
        };
        let c = Shape::new([4]);
        check::<I, _, 3>(
            one_group,
            [Shape::new([3, 4, 2, 2]), c.clone(), c],
            [true; 3],
        );
        check::<I, _, 1>(Softmax { dim: 3 }, [Shape::new([2, 2, 6, 5])], [true]);
        check::<I, _, 1>(Softmax { dim: 1 }, [Shape::new([3, 7, 2])], [true]);
        check::<I, _, 1>(Silu, [Shape::new([4, 3, 5])], [true]);
    }

    #[cfg(feature = "flex")]
    #[test]
    fn fused_operations_match_burns_on_flex() {
        check_all::<burn::backend::Flex>();
    }

    #[cfg(feature = "tch")]
    #[test]
    fn fused_operations_match_burns_on_tch() {
        check_all::<burn::backend::LibTorch>();
    }
}
