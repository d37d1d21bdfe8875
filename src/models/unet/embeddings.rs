//! Sinusoidal timestep features (`Timesteps`) and the `TimestepEmbedding` MLP.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor, TensorData};

use crate::error::Result;
use crate::lora::targets::{visit, LoraTargets, Target};
use crate::models::nn::fused::silu;
use crate::models::nn::Linear;
use crate::models::weights::VarBuilder;

/// diffusers' `get_timestep_embedding`: `[b]` timesteps -> `[b, dim]` features (computed in f32).
pub fn timestep_features<B: Backend>(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
    device: &B::Device,
) -> Tensor<B, 2> {
    let half = dim / 2;
    // exponent_k = -ln(10000) * k / (half - shift), computed in f32 as torch does
    let freqs: Vec<f32> = (0..half)
        .map(|k| {
            let e = -(10000f32.ln()) * (k as f32) / (half as f32 - downscale_freq_shift as f32);
            e.exp()
        })
        .collect();
    let b = timesteps.len();
    let mut out = vec![0f32; b * dim];
    for (i, &t) in timesteps.iter().enumerate() {
        for (k, &f) in freqs.iter().enumerate() {
            let arg = t * f;
            let (s, c) = (arg.sin(), arg.cos());
            let row = &mut out[i * dim..(i + 1) * dim];
            if flip_sin_to_cos {
                row[k] = c;
                row[half + k] = s;
            } else {
                row[k] = s;
                row[half + k] = c;
            }
        }
    }
    // odd dims get a zero pad column (already zero)
    Tensor::from_data(TensorData::new(out, [b, dim]), device)
}

/// `TimestepEmbedding`: `linear_1 -> silu -> linear_2`.
#[derive(Module, Debug)]
pub struct TimestepEmbedding<B: Backend> {
    pub linear_1: Linear<B>,
    pub linear_2: Linear<B>,
}

impl<B: Backend> TimestepEmbedding<B> {
    pub fn load(vb: &VarBuilder<B>, c_in: usize, dim: usize) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::load(&vb.pp("linear_1"), c_in, dim, true)?,
            linear_2: Linear::load(&vb.pp("linear_2"), dim, dim, true)?,
        })
    }

    /// `[b, c_in] -> [b, dim]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear_2.forward(silu(self.linear_1.forward(x)))
    }
}

impl<B: Backend> LoraTargets<B> for TimestepEmbedding<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        visit(&mut self.linear_1, prefix, "linear_1", f);
        visit(&mut self.linear_2, prefix, "linear_2", f);
    }
}
