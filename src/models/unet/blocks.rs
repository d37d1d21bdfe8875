//! The UNet's down, mid and up blocks (`CrossAttnDownBlock2D`, `DownBlock2D`, `UNetMidBlock2DCrossAttn`,
//! `CrossAttnUpBlock2D`, `UpBlock2D`); a block without attentions is the plain variant.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use crate::error::Result;
use crate::lora::targets::{visit, LoraTargets, Target};
use crate::models::blocks::transformer::TransformerSpec;
use crate::models::blocks::{
    AttentionProbe, Downsample2D, ResnetBlock2D, Transformer2DModel, Upsample2D,
};
use crate::models::weights::VarBuilder;

/// Shared parameters of one block.
#[derive(Debug, Clone, Copy)]
pub struct BlockSpec {
    pub temb: usize,
    pub groups: usize,
    pub eps: f64,
    /// `Some` for the cross-attention variants.
    pub attention: Option<TransformerSpec>,
}

/// A down block: `layers` resnets (each followed by a transformer in the cross-attention variant) and an
/// optional stride-2 downsampler.
#[derive(Module, Debug)]
pub struct DownBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Transformer2DModel<B>>,
    pub downsamplers: Option<Downsample2D<B>>,
}

impl<B: Backend> DownBlock<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        vb: &VarBuilder<B>,
        c_in: usize,
        c_out: usize,
        layers: usize,
        spec: &BlockSpec,
        add_downsample: bool,
        downsample_padding: usize,
    ) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..layers {
            let ci = if i == 0 { c_in } else { c_out };
            resnets.push(ResnetBlock2D::load(
                &vb.pp("resnets").pp(i),
                ci,
                c_out,
                Some(spec.temb),
                spec.groups,
                spec.eps,
            )?);
            if let Some(a) = &spec.attention {
                attentions.push(Transformer2DModel::load(&vb.pp("attentions").pp(i), a)?);
            }
        }
        let downsamplers = if add_downsample {
            Some(Downsample2D::load(
                &vb.pp("downsamplers").pp(0),
                c_out,
                downsample_padding,
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            downsamplers,
        })
    }

    /// Returns the output and the skip connections it produced (one per resnet, plus the downsampled map).
    pub fn forward(
        &self,
        mut x: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        probe: &mut AttentionProbe<B>,
    ) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
        let mut skips = Vec::new();
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(x, Some(temb.clone()));
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(x, context.clone(), probe);
            }
            skips.push(x.clone());
        }
        if let Some(down) = &self.downsamplers {
            x = down.forward(x);
            skips.push(x.clone());
        }
        (x, skips)
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, transformer(s), resnet.
#[derive(Module, Debug)]
pub struct MidBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Transformer2DModel<B>>,
}

impl<B: Backend> MidBlock<B> {
    pub fn load(
        vb: &VarBuilder<B>,
        channels: usize,
        spec: &BlockSpec,
        attn: &TransformerSpec,
    ) -> Result<Self> {
        let resnet = |i: usize| {
            ResnetBlock2D::load(
                &vb.pp("resnets").pp(i),
                channels,
                channels,
                Some(spec.temb),
                spec.groups,
                spec.eps,
            )
        };
        Ok(Self {
            resnets: vec![resnet(0)?, resnet(1)?],
            attentions: vec![Transformer2DModel::load(&vb.pp("attentions").pp(0), attn)?],
        })
    }

    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        probe: &mut AttentionProbe<B>,
    ) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, Some(temb.clone()));
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = attn.forward(x, context.clone(), probe);
            x = resnet.forward(x, Some(temb.clone()));
        }
        x
    }
}

/// An up block: `layers` resnets, each fed the concatenation of the running map and one skip connection
/// (each followed by a transformer in the cross-attention variant), and an optional 2x upsampler.
#[derive(Module, Debug)]
pub struct UpBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Transformer2DModel<B>>,
    pub upsamplers: Option<Upsample2D<B>>,
}

impl<B: Backend> UpBlock<B> {
    /// `c_prev`: channels coming from the block below; `c_skip_in`: channels of the last skip of this
    /// level (the down block's input width).
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        vb: &VarBuilder<B>,
        c_skip_in: usize,
        c_out: usize,
        c_prev: usize,
        layers: usize,
        spec: &BlockSpec,
        add_upsample: bool,
    ) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..layers {
            let skip = if i == layers - 1 { c_skip_in } else { c_out };
            let ci = if i == 0 { c_prev } else { c_out };
            resnets.push(ResnetBlock2D::load(
                &vb.pp("resnets").pp(i),
                ci + skip,
                c_out,
                Some(spec.temb),
                spec.groups,
                spec.eps,
            )?);
            if let Some(a) = &spec.attention {
                attentions.push(Transformer2DModel::load(&vb.pp("attentions").pp(i), a)?);
            }
        }
        let upsamplers = if add_upsample {
            Some(Upsample2D::load(&vb.pp("upsamplers").pp(0), c_out)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            upsamplers,
        })
    }

    /// `skips`: the stack of skip connections; this block pops one per resnet.
    pub fn forward(
        &self,
        mut x: Tensor<B, 4>,
        skips: &mut Vec<Tensor<B, 4>>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        probe: &mut AttentionProbe<B>,
    ) -> Tensor<B, 4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .expect("the down path produced one skip per up resnet");
            // [b, c + c_skip, h, w]
            x = resnet.forward(Tensor::cat(vec![x, skip], 1), Some(temb.clone()));
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(x, context.clone(), probe);
            }
        }
        if let Some(up) = &self.upsamplers {
            x = up.forward(x);
        }
        x
    }
}

impl<B: Backend> LoraTargets<B> for DownBlock<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        visit(&mut self.resnets, prefix, "resnets", f);
        visit(&mut self.attentions, prefix, "attentions", f);
        visit(&mut self.downsamplers, prefix, "downsamplers.0", f);
    }
}

impl<B: Backend> LoraTargets<B> for MidBlock<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        visit(&mut self.resnets, prefix, "resnets", f);
        visit(&mut self.attentions, prefix, "attentions", f);
    }
}

impl<B: Backend> LoraTargets<B> for UpBlock<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        visit(&mut self.resnets, prefix, "resnets", f);
        visit(&mut self.attentions, prefix, "attentions", f);
        visit(&mut self.upsamplers, prefix, "upsamplers.0", f);
    }
}
