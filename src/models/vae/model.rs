//! `AutoencoderKL` with `Encoder` (`DownEncoderBlock2D`s) and `Decoder` (`UpDecoderBlock2D`s).

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use super::config::VaeConfig;
use crate::error::{Error, Result};
use crate::models::blocks::{Attention, Downsample2D, ResnetBlock2D, Upsample2D};
use crate::models::nn::fused::silu;
use crate::models::nn::{Conv2d, GroupNorm};
use crate::models::weights::VarBuilder;

const VAE_EPS: f64 = 1e-6;

/// The VAE's single-head spatial self-attention (`Attention` with a group norm and a residual).
#[derive(Module, Debug)]
pub struct VaeAttention<B: Backend> {
    pub group_norm: GroupNorm<B>,
    pub attn: Attention<B>,
}

impl<B: Backend> VaeAttention<B> {
    fn load(vb: &VarBuilder<B>, channels: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            group_norm: GroupNorm::load(&vb.pp("group_norm"), groups, channels, VAE_EPS)?,
            // heads = channels / attention_head_dim with attention_head_dim = channels: one head.
            attn: Attention::load(vb, channels, channels, 1, channels, true, true)?,
        })
    }

    /// `[b, c, h, w] -> [b, c, h, w]`
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let t = self
            .group_norm
            .forward(x.clone())
            .reshape([b, c, h * w])
            .swap_dims(1, 2);
        let (y, _) = self.attn.forward(t, None, false);
        y.swap_dims(1, 2).reshape([b, c, h, w]) + x
    }
}

/// `UNetMidBlock2D` of the VAE: resnet, attention, resnet.
#[derive(Module, Debug)]
pub struct VaeMidBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<VaeAttention<B>>,
}

impl<B: Backend> VaeMidBlock<B> {
    fn load(vb: &VarBuilder<B>, channels: usize, groups: usize, attention: bool) -> Result<Self> {
        let resnet = |i: usize| {
            ResnetBlock2D::load(
                &vb.pp("resnets").pp(i),
                channels,
                channels,
                None,
                groups,
                VAE_EPS,
            )
        };
        let attentions = if attention {
            vec![VaeAttention::load(
                &vb.pp("attentions").pp(0),
                channels,
                groups,
            )?]
        } else {
            vec![]
        };
        Ok(Self {
            resnets: vec![resnet(0)?, resnet(1)?],
            attentions,
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, None);
        if let Some(a) = self.attentions.first() {
            x = a.forward(x);
        }
        self.resnets[1].forward(x, None)
    }
}

/// `DownEncoderBlock2D` / `UpDecoderBlock2D`: resnets and an optional resampler.
#[derive(Module, Debug)]
pub struct VaeBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub downsamplers: Option<Downsample2D<B>>,
    pub upsamplers: Option<Upsample2D<B>>,
}

impl<B: Backend> VaeBlock<B> {
    fn forward(&self, mut x: Tensor<B, 4>) -> Tensor<B, 4> {
        for r in &self.resnets {
            x = r.forward(x, None);
        }
        if let Some(d) = &self.downsamplers {
            x = d.forward(x);
        }
        if let Some(u) = &self.upsamplers {
            x = u.forward(x);
        }
        x
    }
}

/// `Encoder`: image `[b, 3, H, W]` -> moments `[b, 2 * latent, H/8, W/8]`.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub down_blocks: Vec<VaeBlock<B>>,
    pub mid_block: VaeMidBlock<B>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Encoder<B> {
    fn load(vb: &VarBuilder<B>, cfg: &VaeConfig) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let g = cfg.norm_num_groups;
        let mut down_blocks = Vec::new();
        for i in 0..ch.len() {
            let bvb = vb.pp("down_blocks").pp(i);
            let c_in = if i == 0 { ch[0] } else { ch[i - 1] };
            let resnets = (0..cfg.layers_per_block)
                .map(|j| {
                    let ci = if j == 0 { c_in } else { ch[i] };
                    ResnetBlock2D::load(&bvb.pp("resnets").pp(j), ci, ch[i], None, g, VAE_EPS)
                })
                .collect::<Result<Vec<_>>>()?;
            let downsamplers = if i + 1 < ch.len() {
                Some(Downsample2D::load(&bvb.pp("downsamplers").pp(0), ch[i], 0)?)
            } else {
                None
            };
            down_blocks.push(VaeBlock {
                resnets,
                downsamplers,
                upsamplers: None,
            });
        }
        let top = *ch.last().expect("validated non-empty");
        Ok(Self {
            conv_in: Conv2d::load(&vb.pp("conv_in"), cfg.in_channels, ch[0], 3, 1, 1)?,
            down_blocks,
            mid_block: VaeMidBlock::load(&vb.pp("mid_block"), top, g, cfg.mid_block_add_attention)?,
            conv_norm_out: GroupNorm::load(&vb.pp("conv_norm_out"), g, top, VAE_EPS)?,
            conv_out: Conv2d::load(&vb.pp("conv_out"), top, 2 * cfg.latent_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.conv_in.forward(x);
        for b in &self.down_blocks {
            x = b.forward(x);
        }
        x = self.mid_block.forward(x);
        self.conv_out.forward(silu(self.conv_norm_out.forward(x)))
    }
}

/// `Decoder`: latent `[b, latent, h, w]` -> image `[b, 3, 8h, 8w]`.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub mid_block: VaeMidBlock<B>,
    pub up_blocks: Vec<VaeBlock<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Decoder<B> {
    fn load(vb: &VarBuilder<B>, cfg: &VaeConfig) -> Result<Self> {
        let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let g = cfg.norm_num_groups;
        let n = rev.len();
        let mut up_blocks = Vec::new();
        let mut c_prev = rev[0];
        for (i, &c_out) in rev.iter().enumerate() {
            let bvb = vb.pp("up_blocks").pp(i);
            let resnets = (0..cfg.layers_per_block + 1)
                .map(|j| {
                    let ci = if j == 0 { c_prev } else { c_out };
                    ResnetBlock2D::load(&bvb.pp("resnets").pp(j), ci, c_out, None, g, VAE_EPS)
                })
                .collect::<Result<Vec<_>>>()?;
            let upsamplers = if i + 1 < n {
                Some(Upsample2D::load(&bvb.pp("upsamplers").pp(0), c_out)?)
            } else {
                None
            };
            up_blocks.push(VaeBlock {
                resnets,
                downsamplers: None,
                upsamplers,
            });
            c_prev = c_out;
        }
        Ok(Self {
            conv_in: Conv2d::load(&vb.pp("conv_in"), cfg.latent_channels, rev[0], 3, 1, 1)?,
            mid_block: VaeMidBlock::load(
                &vb.pp("mid_block"),
                rev[0],
                g,
                cfg.mid_block_add_attention,
            )?,
            up_blocks,
            conv_norm_out: GroupNorm::load(&vb.pp("conv_norm_out"), g, rev[n - 1], VAE_EPS)?,
            conv_out: Conv2d::load(&vb.pp("conv_out"), rev[n - 1], cfg.out_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.conv_in.forward(z);
        x = self.mid_block.forward(x);
        for b in &self.up_blocks {
            x = b.forward(x);
        }
        self.conv_out.forward(silu(self.conv_norm_out.forward(x)))
    }
}

/// The encoder's posterior `N(mean, std^2)` over latents (`[b, latent, h, w]` each).
#[derive(Debug, Clone)]
pub struct DiagonalGaussian<B: Backend> {
    pub mean: Tensor<B, 4>,
    pub logvar: Tensor<B, 4>,
}

impl<B: Backend> DiagonalGaussian<B> {
    /// `exp(0.5 * logvar)`, with logvar clamped to [-30, 20] as diffusers does.
    pub fn std(&self) -> Tensor<B, 4> {
        (self.logvar.clone() * 0.5).exp()
    }
}

/// The VAE.
#[derive(Module, Debug)]
pub struct AutoencoderKL<B: Backend> {
    pub encoder: Encoder<B>,
    pub decoder: Decoder<B>,
    pub quant_conv: Option<Conv2d<B>>,
    pub post_quant_conv: Option<Conv2d<B>>,
    pub scaling_factor: f64,
    pub latent_channels: usize,
    pub scale_factor: usize,
}

impl<B: Backend> AutoencoderKL<B> {
    pub fn load(vb: &VarBuilder<B>, cfg: &VaeConfig) -> Result<Self> {
        let l = cfg.latent_channels;
        Ok(Self {
            encoder: Encoder::load(&vb.pp("encoder"), cfg)?,
            decoder: Decoder::load(&vb.pp("decoder"), cfg)?,
            quant_conv: if cfg.use_quant_conv {
                Some(Conv2d::load(&vb.pp("quant_conv"), 2 * l, 2 * l, 1, 1, 0)?)
            } else {
                None
            },
            post_quant_conv: if cfg.use_post_quant_conv {
                Some(Conv2d::load(&vb.pp("post_quant_conv"), l, l, 1, 1, 0)?)
            } else {
                None
            },
            scaling_factor: cfg.scaling_factor,
            latent_channels: l,
            scale_factor: cfg.scale_factor(),
        })
    }

    /// Image `[b, 3, H, W]` in [-1, 1] to the latent posterior (unscaled: multiply a sample or the mean by
    /// `scaling_factor` to get the diffusion latent).
    pub fn encode(&self, image: Tensor<B, 4>) -> Result<DiagonalGaussian<B>> {
        let [_, _, h, w] = image.dims();
        let k = self.scale_factor;
        if !h.is_multiple_of(k) || !w.is_multiple_of(k) {
            return Err(Error::invalid(
                "VAE input",
                format!("image {h}x{w} must be a multiple of {k} on each side"),
            ));
        }
        let mut moments = self.encoder.forward(image);
        if let Some(q) = &self.quant_conv {
            moments = q.forward(moments);
        }
        let mut halves = moments.chunk(2, 1);
        let logvar = halves.pop().expect("two halves").clamp(-30.0, 20.0);
        let mean = halves.pop().expect("two halves");
        Ok(DiagonalGaussian { mean, logvar })
    }

    /// Unscaled latent `[b, latent, h, w]` (the diffusion latent divided by `scaling_factor`) to an image
    /// `[b, 3, 8h, 8w]` in about [-1, 1].
    pub fn decode(&self, z: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let c = z.dims()[1];
        if c != self.latent_channels {
            return Err(Error::invalid(
                "VAE latent",
                format!("{c} channels, expected {}", self.latent_channels),
            ));
        }
        let z = match &self.post_quant_conv {
            Some(p) => p.forward(z),
            None => z,
        };
        Ok(self.decoder.forward(z))
    }

    /// Unscaled latent `[b, latent, h, w]` to an image `[b, 3, 8h, 8w]` in [0, 1]: [`decode`](Self::decode),
    /// then `x / 2 + 0.5`, clamped, as diffusers' image processor does.
    pub fn decode_to_unit(&self, z: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        Ok((self.decode(z)? / 2.0 + 0.5).clamp(0.0, 1.0))
    }
}
