//! diffusers building blocks shared by the UNet and the VAE: `ResnetBlock2D`, `Attention`,
//! `Downsample2D`/`Upsample2D` and the `Transformer2DModel` of SD 1.x.

pub mod attention;
pub mod probe;
pub mod resnet;
pub mod sampling;
pub mod transformer;

pub use attention::Attention;
pub use probe::AttentionProbe;
pub use resnet::ResnetBlock2D;
pub use sampling::{Downsample2D, Upsample2D};
pub use transformer::Transformer2DModel;
