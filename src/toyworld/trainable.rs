//! Making a loaded model trainable. The SD loaders build frozen parameters (inference and CLoRA's latent
//! gradient need no weight gradients); training marks every float parameter as requiring a gradient again.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{backend::Backend, Tensor};

struct RequireGrad;

impl<B: Backend> ModuleMapper<B> for RequireGrad {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(true)
    }
}

/// `module` with every float parameter tracked by autodiff.
pub fn trainable<B: Backend, M: Module<B>>(module: M) -> M {
    module.map(&mut RequireGrad)
}
