//! diffusers' `Downsample2D` and `Upsample2D` (with their convolution, as SD uses them).

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use crate::error::Result;
use crate::lora::targets::{visit, LoraTargets, Target};
use crate::models::nn::resample::upsample_nearest_2x;
use crate::models::nn::Conv2d;
use crate::models::weights::VarBuilder;

/// Stride-2 3x3 convolution. With `padding = 0` (the VAE encoder) the input is first padded by one
/// pixel on the right and bottom, as diffusers does.
#[derive(Module, Debug)]
pub struct Downsample2D<B: Backend> {
    pub conv: Conv2d<B>,
    pub pad_right_bottom: bool,
}

impl<B: Backend> Downsample2D<B> {
    pub fn load(vb: &VarBuilder<B>, channels: usize, padding: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(&vb.pp("conv"), channels, channels, 3, 2, padding)?,
            pad_right_bottom: padding == 0,
        })
    }

    /// `[b, c, h, w] -> [b, c, h/2, w/2]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = if self.pad_right_bottom {
            x.pad((0, 1, 0, 1), burn::tensor::ops::PadMode::Constant(0.0))
        } else {
            x
        };
        self.conv.forward(x)
    }
}

/// Nearest 2x upsampling followed by a 3x3 convolution.
#[derive(Module, Debug)]
pub struct Upsample2D<B: Backend> {
    pub conv: Conv2d<B>,
}

impl<B: Backend> Upsample2D<B> {
    pub fn load(vb: &VarBuilder<B>, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(&vb.pp("conv"), channels, channels, 3, 1, 1)?,
        })
    }

    /// `[b, c, h, w] -> [b, c, 2h, 2w]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv.forward(upsample_nearest_2x(x))
    }
}

impl<B: Backend> LoraTargets<B> for Downsample2D<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        visit(&mut self.conv, prefix, "conv", f);
    }
}

impl<B: Backend> LoraTargets<B> for Upsample2D<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        visit(&mut self.conv, prefix, "conv", f);
    }
}
