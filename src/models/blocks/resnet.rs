//! diffusers' `ResnetBlock2D` (time-scale-shift "default", output scale 1).

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use crate::error::Result;
use crate::lora::targets::{visit, LoraTargets, Target};
use crate::models::nn::fused::silu;
use crate::models::nn::{Conv2d, GroupNorm, Linear};
use crate::models::weights::VarBuilder;

/// `norm1 -> silu -> conv1 (+ time_emb_proj) -> norm2 -> silu -> conv2`, plus a (1x1 conv) shortcut.
#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    pub norm1: GroupNorm<B>,
    pub conv1: Conv2d<B>,
    pub time_emb_proj: Option<Linear<B>>,
    pub norm2: GroupNorm<B>,
    pub conv2: Conv2d<B>,
    pub conv_shortcut: Option<Conv2d<B>>,
}

impl<B: Backend> ResnetBlock2D<B> {
    /// `temb_channels`: the UNet's time embedding width, `None` in the VAE.
    pub fn load(
        vb: &VarBuilder<B>,
        c_in: usize,
        c_out: usize,
        temb_channels: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        let time_emb_proj = match temb_channels {
            Some(t) => Some(Linear::load(&vb.pp("time_emb_proj"), t, c_out, true)?),
            None => None,
        };
        let conv_shortcut = if c_in != c_out {
            Some(Conv2d::load(&vb.pp("conv_shortcut"), c_in, c_out, 1, 1, 0)?)
        } else {
            None
        };
        Ok(Self {
            norm1: GroupNorm::load(&vb.pp("norm1"), groups, c_in, eps)?,
            conv1: Conv2d::load(&vb.pp("conv1"), c_in, c_out, 3, 1, 1)?,
            time_emb_proj,
            norm2: GroupNorm::load(&vb.pp("norm2"), groups, c_out, eps)?,
            conv2: Conv2d::load(&vb.pp("conv2"), c_out, c_out, 3, 1, 1)?,
            conv_shortcut,
        })
    }

    /// `x` `[b, c_in, h, w]`, `temb` `[b, temb_channels]` -> `[b, c_out, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>, temb: Option<Tensor<B, 2>>) -> Tensor<B, 4> {
        let h = self.conv1.forward(silu(self.norm1.forward(x.clone())));
        let h = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(t)) => {
                let [b, c] = [h.dims()[0], h.dims()[1]];
                h + proj.forward(silu(t)).reshape([b, c, 1, 1])
            }
            _ => h,
        };
        let h = self.conv2.forward(silu(self.norm2.forward(h)));
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        shortcut + h
    }
}

impl<B: Backend> LoraTargets<B> for ResnetBlock2D<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        visit(&mut self.conv1, prefix, "conv1", f);
        visit(&mut self.time_emb_proj, prefix, "time_emb_proj", f);
        visit(&mut self.conv2, prefix, "conv2", f);
        visit(&mut self.conv_shortcut, prefix, "conv_shortcut", f);
    }
}
