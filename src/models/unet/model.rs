//! `UNet2DConditionModel`: `conv_in`, `time_embedding`, `down_blocks`, `mid_block`, `up_blocks`,
//! `conv_norm_out`, `conv_out`.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use super::blocks::{BlockSpec, DownBlock, MidBlock, UpBlock};
use super::config::{DownBlockType, UNetConfig, UpBlockType};
use super::embeddings::{timestep_features, TimestepEmbedding};
use crate::error::{Error, Result};
use crate::lora::targets::{visit, LoraTargets, Target};
use crate::models::blocks::transformer::TransformerSpec;
use crate::models::blocks::AttentionProbe;
use crate::models::nn::fused::silu;
use crate::models::nn::norm::downcast;
use crate::models::nn::{Conv2d, GroupNorm};
use crate::models::weights::VarBuilder;

/// The denoising UNet of SD 1.x.
#[derive(Module, Debug)]
pub struct UNet2DConditionModel<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub time_embedding: TimestepEmbedding<B>,
    pub down_blocks: Vec<DownBlock<B>>,
    pub mid_block: MidBlock<B>,
    pub up_blocks: Vec<UpBlock<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
    /// Width of the sinusoidal features (`block_out_channels[0]`).
    pub time_proj_dim: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub num_downsamples: usize,
    pub in_channels: usize,
    pub cross_attention_dim: usize,
}

impl<B: Backend> UNet2DConditionModel<B> {
    pub fn load(vb: &VarBuilder<B>, cfg: &UNetConfig) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let temb = cfg.time_embed_dim();
        let attn_spec = |i: usize, channels: usize| TransformerSpec {
            channels,
            heads: cfg.num_heads[i],
            dim_head: channels / cfg.num_heads[i],
            context_dim: cfg.cross_attention_dim,
            layers: cfg.transformer_layers_per_block[i],
            norm_groups: cfg.norm_num_groups,
            use_linear_projection: cfg.use_linear_projection,
            upcast_attention: cfg.upcast_attention,
        };
        let spec = |attention: Option<TransformerSpec>| BlockSpec {
            temb,
            groups: cfg.norm_num_groups,
            eps: cfg.norm_eps,
            attention,
        };

        let mut down_blocks = Vec::new();
        for (i, kind) in cfg.down_block_types.iter().enumerate() {
            let c_in = if i == 0 { ch[0] } else { ch[i - 1] };
            let attention =
                (*kind == DownBlockType::CrossAttnDownBlock2D).then(|| attn_spec(i, ch[i]));
            down_blocks.push(DownBlock::load(
                &vb.pp("down_blocks").pp(i),
                c_in,
                ch[i],
                cfg.layers_per_block[i],
                &spec(attention),
                i + 1 < n,
                cfg.downsample_padding,
            )?);
        }

        let mid_attn = attn_spec(n - 1, ch[n - 1]);
        let mid_block = MidBlock::load(
            &vb.pp("mid_block"),
            ch[n - 1],
            &spec(Some(mid_attn)),
            &mid_attn,
        )?;

        // Up path: reversed channels, heads and layer counts.
        let mut up_blocks = Vec::new();
        let mut c_prev = ch[n - 1];
        for (i, kind) in cfg.up_block_types.iter().enumerate() {
            let r = n - 1 - i;
            let c_out = ch[r];
            let c_skip_in = ch[r.saturating_sub(1)];
            let attention = (*kind == UpBlockType::CrossAttnUpBlock2D).then(|| attn_spec(r, c_out));
            up_blocks.push(UpBlock::load(
                &vb.pp("up_blocks").pp(i),
                c_skip_in,
                c_out,
                c_prev,
                cfg.layers_per_block[r] + 1,
                &spec(attention),
                i + 1 < n,
            )?);
            c_prev = c_out;
        }

        Ok(Self {
            conv_in: Conv2d::load(&vb.pp("conv_in"), cfg.in_channels, ch[0], 3, 1, 1)?,
            time_embedding: TimestepEmbedding::load(&vb.pp("time_embedding"), ch[0], temb)?,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::load(
                &vb.pp("conv_norm_out"),
                cfg.norm_num_groups,
                ch[0],
                cfg.norm_eps,
            )?,
            conv_out: Conv2d::load(&vb.pp("conv_out"), ch[0], cfg.out_channels, 3, 1, 1)?,
            time_proj_dim: ch[0],
            flip_sin_to_cos: cfg.flip_sin_to_cos,
            freq_shift: cfg.freq_shift,
            num_downsamples: n - 1,
            in_channels: cfg.in_channels,
            cross_attention_dim: cfg.cross_attention_dim,
        })
    }

    /// Checks the shapes of a forward's inputs, so a caller's mistake is an error, not a panic deep inside.
    pub fn check_inputs(
        &self,
        sample: &[usize; 4],
        timesteps: usize,
        context: &[usize; 3],
    ) -> Result<()> {
        let [b, c, h, w] = *sample;
        let k = 1usize << self.num_downsamples;
        if c != self.in_channels {
            return Err(Error::invalid(
                "UNet input",
                format!("{c} channels, expected {}", self.in_channels),
            ));
        }
        if !h.is_multiple_of(k) || !w.is_multiple_of(k) || h == 0 || w == 0 {
            return Err(Error::invalid(
                "UNet input",
                format!("latent {h}x{w} must be a positive multiple of {k} on each side"),
            ));
        }
        if timesteps != b {
            return Err(Error::invalid(
                "UNet input",
                format!("{timesteps} timesteps for a batch of {b}"),
            ));
        }
        if context[0] != b || context[2] != self.cross_attention_dim {
            return Err(Error::invalid(
                "UNet input",
                format!(
                    "text embedding {context:?}, expected [{b}, tokens, {}]",
                    self.cross_attention_dim
                ),
            ));
        }
        Ok(())
    }

    /// The noise prediction: `sample` `[b, 4, h, w]`, one timestep per row, `context` `[b, 77, d]`.
    pub fn forward(
        &self,
        sample: Tensor<B, 4>,
        timesteps: &[f32],
        context: Tensor<B, 3>,
    ) -> Result<Tensor<B, 4>> {
        let mut probe = AttentionProbe::none();
        self.forward_probed(sample, timesteps, context, &mut probe)
    }

    /// As [`forward`](Self::forward), handing the probed cross-attention maps to `probe`.
    pub fn forward_probed(
        &self,
        sample: Tensor<B, 4>,
        timesteps: &[f32],
        context: Tensor<B, 3>,
        probe: &mut AttentionProbe<B>,
    ) -> Result<Tensor<B, 4>> {
        self.check_inputs(&sample.dims(), timesteps.len(), &context.dims())?;
        let device = sample.device();
        let dtype = sample.dtype();
        // [b, time_proj_dim] in f32, then the run dtype, as diffusers casts `t_emb` to the sample dtype.
        let t = timestep_features::<B>(
            timesteps,
            self.time_proj_dim,
            self.flip_sin_to_cos,
            self.freq_shift,
            &device,
        );
        let temb = self.time_embedding.forward(downcast(t, dtype));

        let mut x = self.conv_in.forward(sample);
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            let (y, s) = block.forward(x, &temb, &context, probe);
            x = y;
            skips.extend(s);
        }
        x = self.mid_block.forward(x, &temb, &context, probe);
        for block in &self.up_blocks {
            x = block.forward(x, &mut skips, &temb, &context, probe);
        }
        Ok(self.conv_out.forward(silu(self.conv_norm_out.forward(x))))
    }
}

impl<B: Backend> LoraTargets<B> for UNet2DConditionModel<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        visit(&mut self.conv_in, prefix, "conv_in", f);
        visit(&mut self.time_embedding, prefix, "time_embedding", f);
        visit(&mut self.down_blocks, prefix, "down_blocks", f);
        visit(&mut self.mid_block, prefix, "mid_block", f);
        visit(&mut self.up_blocks, prefix, "up_blocks", f);
        visit(&mut self.conv_out, prefix, "conv_out", f);
    }
}
