//! Differentiable building blocks for training the metric encoders with candle autograd.
//!
//! The metrics' own modules (`crate::metrics::clip`, `crate::metrics::vit`) run candle's fused
//! `softmax_last_dim` and `layer_norm` kernels, which have no backward pass; these blocks compute the same
//! functions from elementary ops (so gradients flow) and create their parameters under exactly the
//! transformers key names, so a trained `VarMap` saves as a checkpoint the metrics load unchanged.

use candle::{DType, Device, Module, Tensor, D};
use candle_nn::{Init, Linear, VarBuilder};

use crate::metrics::activation::Activation;

/// A layer norm's parameters (`weight` = 1, `bias` = 0 at init) and its differentiable forward.
#[derive(Debug, Clone)]
pub struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Norm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> candle::Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(size, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(size, "bias", Init::Const(0.0))?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        xn.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// A linear layer initialised as candle's (`kaiming` weights); bias optional.
pub fn linear(i: usize, o: usize, bias: bool, vb: VarBuilder) -> candle::Result<Linear> {
    if bias {
        candle_nn::linear(i, o, vb)
    } else {
        candle_nn::linear_no_bias(i, o, vb)
    }
}

/// Normal(0, std) init.
pub fn randn(std: f64) -> Init {
    Init::Randn {
        mean: 0.0,
        stdev: std,
    }
}

/// Multi-head self-attention with an optional additive mask (`[s, s]`, broadcast).
#[derive(Debug, Clone)]
pub struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
}

/// Names of one transformer block's parameters (CLIP's or ViT's).
#[derive(Debug, Clone, Copy)]
pub enum Naming {
    /// `self_attn.{q,k,v,out}_proj`, `layer_norm1`, `mlp.fc1`, `mlp.fc2`, `layer_norm2`.
    Clip,
    /// `attention.attention.{query,key,value}`, `attention.output.dense`, `layernorm_before`,
    /// `intermediate.dense`, `output.dense`, `layernorm_after`.
    Vit,
}

impl Attention {
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> candle::Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        let hd = h / self.heads;
        let split = |t: Tensor| -> candle::Result<Tensor> {
            t.reshape((b, s, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split((self.q.forward(x)? * (hd as f64).powf(-0.5))?)?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        let mut att = q.matmul(&k.t()?)?;
        if let Some(m) = mask {
            att = att.broadcast_add(m)?;
        }
        let att = candle_nn::ops::softmax(&att, D::Minus1)?;
        let out = att.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))?;
        self.o.forward(&out)
    }
}

/// One pre-norm transformer block: `x + attn(ln1(x))`, then `x + fc2(act(fc1(ln2(x))))`.
#[derive(Debug, Clone)]
pub struct Block {
    ln1: Norm,
    attn: Attention,
    ln2: Norm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

/// The shape of a transformer stack.
#[derive(Debug, Clone, Copy)]
pub struct StackShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub layers: usize,
    pub eps: f64,
    pub act: Activation,
}

impl Block {
    pub fn new(vb: VarBuilder, c: &StackShape, naming: Naming) -> candle::Result<Self> {
        let (h, m) = (c.hidden, c.intermediate);
        Ok(match naming {
            Naming::Clip => Self {
                ln1: Norm::new(h, c.eps, vb.pp("layer_norm1"))?,
                attn: Attention {
                    q: linear(h, h, true, vb.pp("self_attn.q_proj"))?,
                    k: linear(h, h, true, vb.pp("self_attn.k_proj"))?,
                    v: linear(h, h, true, vb.pp("self_attn.v_proj"))?,
                    o: linear(h, h, true, vb.pp("self_attn.out_proj"))?,
                    heads: c.heads,
                },
                ln2: Norm::new(h, c.eps, vb.pp("layer_norm2"))?,
                fc1: linear(h, m, true, vb.pp("mlp.fc1"))?,
                fc2: linear(m, h, true, vb.pp("mlp.fc2"))?,
                act: c.act,
            },
            Naming::Vit => Self {
                ln1: Norm::new(h, c.eps, vb.pp("layernorm_before"))?,
                attn: Attention {
                    q: linear(h, h, true, vb.pp("attention.attention.query"))?,
                    k: linear(h, h, true, vb.pp("attention.attention.key"))?,
                    v: linear(h, h, true, vb.pp("attention.attention.value"))?,
                    o: linear(h, h, true, vb.pp("attention.output.dense"))?,
                    heads: c.heads,
                },
                ln2: Norm::new(h, c.eps, vb.pp("layernorm_after"))?,
                fc1: linear(h, m, true, vb.pp("intermediate.dense"))?,
                fc2: linear(m, h, true, vb.pp("output.dense"))?,
                act: c.act,
            },
        })
    }

    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> candle::Result<Tensor> {
        let x = (self.attn.forward(&self.ln1.forward(x)?, mask)? + x)?;
        let y = self.fc2.forward(
            &self
                .act
                .forward(&self.fc1.forward(&self.ln2.forward(&x)?)?)?,
        )?;
        y + x
    }
}

/// A stack of blocks under `prefix.N` (CLIP: `layers.N`, ViT: `layer.N`).
#[derive(Debug, Clone)]
pub struct Stack {
    blocks: Vec<Block>,
}

impl Stack {
    pub fn new(vb: VarBuilder, c: &StackShape, naming: Naming) -> candle::Result<Self> {
        let vb = vb.pp(match naming {
            Naming::Clip => "layers",
            Naming::Vit => "layer",
        });
        let blocks = (0..c.layers)
            .map(|i| Block::new(vb.pp(i), c, naming))
            .collect::<candle::Result<_>>()?;
        Ok(Self { blocks })
    }

    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> candle::Result<Tensor> {
        let mut x = x.clone();
        for b in &self.blocks {
            x = b.forward(&x, mask)?;
        }
        Ok(x)
    }
}

/// A patch embedding as a matrix product (the same function as a `Conv2d` with kernel = stride = `patch`):
/// `pixels [b, c, H, W]` -> `[b, (H/p)*(W/p), out]`; `weight` is the conv kernel `[out, c, p, p]`.
pub fn patchify(
    pixels: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    patch: usize,
) -> candle::Result<Tensor> {
    let (b, c, h, w) = pixels.dims4()?;
    let (gy, gx) = (h / patch, w / patch);
    let out = weight.dim(0)?;
    let cols = pixels
        .reshape((b, c, gy, patch, gx, patch))?
        .permute((0, 2, 4, 1, 3, 5))?
        .contiguous()?
        .reshape((b, gy * gx, c * patch * patch))?;
    let wm = weight.reshape((out, c * patch * patch))?;
    let y = cols.broadcast_matmul(&wm.t()?)?;
    match bias {
        Some(bias) => y.broadcast_add(bias),
        None => Ok(y),
    }
}

/// Rows scaled to unit L2 norm.
pub fn l2_normalize(x: &Tensor) -> candle::Result<Tensor> {
    let n = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    x.broadcast_div(&n)
}

/// `[s, s]` additive causal mask (a large negative number above the diagonal).
pub fn causal_mask(s: usize, device: &Device) -> candle::Result<Tensor> {
    let mask: Vec<f32> = (0..s)
        .flat_map(|i| (0..s).map(move |j| if j > i { -1e9 } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (s, s), device)?.to_dtype(DType::F32)
}
