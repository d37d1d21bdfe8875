//! A fused operation as one node of burn's autodiff graph, in place of the nodes (and their broadcast
//! reductions) its burn operations make: the forward is the inner backend's kernel, the backward
//! [`FusedOp::backward`] from what [`FusedOp::save`] kept.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::ops::FloatTensor;

use super::{FusedKernels, FusedOp};

/// The node's backward step.
#[derive(Debug)]
struct FusedBackward<Op>(Op);

impl<I: FusedKernels, Op: FusedOp<N>, const N: usize> Backward<I, N> for FusedBackward<Op> {
    type State = Op::Saved<I>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<I>(&ops.node);
        let wanted = ops.parents.each_ref().map(Option::is_some);
        let computed = self.0.backward::<I>(ops.state, dy, wanted);
        for (parent, grad) in ops.parents.into_iter().zip(computed) {
            if let (Some(node), Some(grad)) = (parent, grad) {
                grads.register::<I>(node.id, grad);
            }
        }
    }
}

/// `op` on `Autodiff<I>`, tracked as one node when any input is.
pub fn apply<I: FusedKernels, Op: FusedOp<N>, const N: usize>(
    op: Op,
    inputs: [FloatTensor<Autodiff<I>>; N],
) -> FloatTensor<Autodiff<I>> {
    let nodes = inputs.each_ref().map(|t| t.node.clone());
    match FusedBackward(op)
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let inputs = inputs.map(|t| t.primitive);
            let output = op.forward::<I>(inputs.clone());
            prep.finish(op.save::<I>(inputs, output.clone()), output)
        }
        OpsKind::UnTracked(prep) => prep.finish(op.forward::<I>(inputs.map(|t| t.primitive))),
    }
}
