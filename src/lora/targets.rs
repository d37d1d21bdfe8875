//! The module-path traversal: every layer a LoRA can target (`Linear`, `Conv2d`), named by its diffusers /
//! transformers path (`down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0`,
//! `text_model.encoder.layers.0.self_attn.q_proj`). Each model module implements [`LoraTargets`] next to its
//! definition, listing its children explicitly, so the paths are the model's real module paths.

use burn::tensor::backend::Backend;

use crate::models::nn::{Conv2d, Linear};

/// A layer a LoRA can be attached to.
pub enum Target<'a, B: Backend> {
    Linear(&'a mut Linear<B>),
    Conv2d(&'a mut Conv2d<B>),
}

/// Visits the LoRA-targetable layers below a module.
pub trait LoraTargets<B: Backend> {
    /// Calls `f(path, layer)` for every `Linear` and `Conv2d` below this module; `prefix` is this module's own
    /// path (`""` at the root) and `path` the layer's full dotted path.
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>));
}

/// `prefix.name`, or `name` at the root.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Visits the child module `name` of the module at `prefix`.
pub fn visit<B: Backend, T: LoraTargets<B>>(
    child: &mut T,
    prefix: &str,
    name: &str,
    f: &mut dyn FnMut(&str, Target<'_, B>),
) {
    child.for_each_target(&join(prefix, name), f);
}

impl<B: Backend> LoraTargets<B> for Linear<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        f(prefix, Target::Linear(self));
    }
}

impl<B: Backend> LoraTargets<B> for Conv2d<B> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        f(prefix, Target::Conv2d(self));
    }
}

/// A `nn.ModuleList`: children named `0`, `1`, ...
impl<B: Backend, T: LoraTargets<B>> LoraTargets<B> for Vec<T> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        for (i, m) in self.iter_mut().enumerate() {
            m.for_each_target(&join(prefix, &i.to_string()), f);
        }
    }
}

/// An optional submodule (absent: nothing to visit).
impl<B: Backend, T: LoraTargets<B>> LoraTargets<B> for Option<T> {
    fn for_each_target(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Target<'_, B>)) {
        if let Some(m) = self {
            m.for_each_target(prefix, f);
        }
    }
}
