//! The key grammar of LoRA files: which model component, module and factor a tensor name refers to, in each of
//! the three formats users bring.
//!
//! | format | UNet example | factor |
//! |---|---|---|
//! | kohya / A1111 | `lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight` (`lora_te_` for CLIP) | `lora_down` = A, `lora_up` = B, `.alpha` |
//! | diffusers / PEFT | `unet.down_blocks.0.attentions.0.proj_in.lora_A.weight` (`text_encoder.` for CLIP) | `lora_A` = A, `lora_B` = B |
//! | older diffusers | `unet.<block>.attn1.processor.to_q_lora.down.weight`, `<module>.lora.down.weight`, `text_encoder.<layer>.self_attn.to_q_lora.down.weight`, `<module>.lora_linear_layer.down.weight` | `down` = A, `up` = B |
//!
//! kohya names are the module path with `.` replaced by `_`: they are kept as written here and resolved against
//! the loaded model's module paths later, never by guessing where the dots were. Keys without a component
//! prefix in the diffusers formats belong to the UNet (as in diffusers).

/// A part of the SD model a LoRA can adapt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Unet,
    TextEncoder,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Self::Unet => "UNet",
            Self::TextEncoder => "text encoder",
        }
    }

    /// Index for per-component arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The file format a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LoraFormat {
    /// kohya-ss / A1111 (`lora_unet_*`, `lora_te_*`, `.alpha`), LoCon included.
    Kohya,
    /// diffusers/PEFT as `save_lora_weights` writes it (`lora_A` / `lora_B`).
    Peft,
    /// The older diffusers attention-processor / LoRA-compatible-layer formats (`to_q_lora.down`, `lora.down`,
    /// `lora_linear_layer.down`).
    DiffusersOld,
}

/// How a key names its module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModuleRef {
    /// A dotted diffusers/transformers path (`down_blocks.0.attentions.0.proj_in`).
    Path(String),
    /// A kohya name: the path with every `.` replaced by `_` (`down_blocks_0_attentions_0_proj_in`).
    Kohya(String),
}

impl std::fmt::Display for ModuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(p) | Self::Kohya(p) => f.write_str(p),
        }
    }
}

/// Which factor a tensor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A: `[r, in]` (conv: `[r, in, k, k]`).
    Down,
    /// B: `[out, r]` (conv: `[out, r, 1, 1]`).
    Up,
    /// The scalar alpha (scale = alpha / r).
    Alpha,
}

/// A LoRA tensor name, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraKey {
    pub component: Component,
    pub module: ModuleRef,
    pub role: Role,
    pub format: LoraFormat,
}

/// What a tensor name is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    Lora(LoraKey),
    /// A LoRA for another architecture (SDXL, SD3/Flux); the string says why.
    OtherArchitecture(&'static str),
    /// A LyCORIS/PEFT variant this harness does not implement (LoHa, LoKr, Tucker mid, DoRA, ...): loading
    /// the rest would silently give a different model, so it is an error.
    Unsupported(&'static str),
    /// Not a LoRA tensor name of any known format.
    Unrecognized,
}

/// Classifies one tensor name.
pub fn parse_key(key: &str) -> KeyKind {
    if key.starts_with("lora_te1_")
        || key.starts_with("lora_te2_")
        || key.starts_with("text_encoder_2.")
    {
        return KeyKind::OtherArchitecture(
            "SDXL's two text encoders (lora_te1_/lora_te2_/text_encoder_2.)",
        );
    }
    if key.starts_with("transformer.") || key.starts_with("lora_transformer_") {
        return KeyKind::OtherArchitecture("a transformer denoiser (SD3/Flux/PixArt), not a UNet");
    }
    for (prefix, component) in [
        ("lora_unet_", Component::Unet),
        ("lora_te_", Component::TextEncoder),
    ] {
        if let Some(rest) = key.strip_prefix(prefix) {
            return parse_kohya(rest, component);
        }
    }
    let (component, rest) = if let Some(r) = key.strip_prefix("unet.") {
        (Component::Unet, r)
    } else if let Some(r) = key.strip_prefix("text_encoder.") {
        (Component::TextEncoder, r)
    } else {
        (Component::Unet, key)
    };
    let lora = |module: &str, role, format| {
        KeyKind::Lora(LoraKey {
            component,
            module: ModuleRef::Path(module.to_string()),
            role,
            format,
        })
    };
    if rest.contains("lora_magnitude_vector") || rest.ends_with(".dora_scale") {
        return KeyKind::Unsupported("DoRA magnitude vectors");
    }
    if let Some(m) = rest.strip_suffix(".lora_A.weight") {
        return lora(m, Role::Down, LoraFormat::Peft);
    }
    if let Some(m) = rest.strip_suffix(".lora_B.weight") {
        return lora(m, Role::Up, LoraFormat::Peft);
    }
    for (suffix, role) in [(".down.weight", Role::Down), (".up.weight", Role::Up)] {
        let Some(head) = rest.strip_suffix(suffix) else {
            continue;
        };
        // `<module>.lora.down.weight` (LoRACompatibleLinear/Conv) and `<module>.lora_linear_layer.down.weight`
        for marker in [".lora", ".lora_linear_layer"] {
            if let Some(m) = head.strip_suffix(marker) {
                return lora(m, role, LoraFormat::DiffusersOld);
            }
        }
        // `<parent>[.processor].to_q_lora.down.weight`: the attention processor of `<parent>`
        for (proc_name, unet_child, te_child) in [
            ("to_q_lora", "to_q", "q_proj"),
            ("to_k_lora", "to_k", "k_proj"),
            ("to_v_lora", "to_v", "v_proj"),
            ("to_out_lora", "to_out.0", "out_proj"),
        ] {
            if let Some(parent) = head
                .strip_suffix(proc_name)
                .and_then(|p| p.strip_suffix('.'))
            {
                let parent = parent.strip_suffix(".processor").unwrap_or(parent);
                let child = match component {
                    Component::Unet => unet_child,
                    Component::TextEncoder => te_child,
                };
                return lora(&format!("{parent}.{child}"), role, LoraFormat::DiffusersOld);
            }
        }
    }
    if let Some(m) = rest.strip_suffix(".alpha") {
        return lora(m, Role::Alpha, LoraFormat::Peft);
    }
    KeyKind::Unrecognized
}

fn parse_kohya(rest: &str, component: Component) -> KeyKind {
    let Some((name, suffix)) = rest.split_once('.') else {
        return KeyKind::Unrecognized;
    };
    if component == Component::Unet
        && [
            "input_blocks_",
            "middle_block_",
            "output_blocks_",
            "label_emb_",
        ]
        .iter()
        .any(|p| name.starts_with(p))
    {
        return KeyKind::OtherArchitecture(
            "original-LDM/SGM UNet block names (input_blocks/middle_block/output_blocks), as SDXL LoRAs use",
        );
    }
    let role = match suffix {
        "lora_down.weight" => Role::Down,
        "lora_up.weight" => Role::Up,
        "alpha" => Role::Alpha,
        s if s.starts_with("hada_") => return KeyKind::Unsupported("LyCORIS LoHa (hada_*)"),
        s if s.starts_with("lokr_") => return KeyKind::Unsupported("LyCORIS LoKr (lokr_*)"),
        s if s.starts_with("lora_mid") => {
            return KeyKind::Unsupported("LyCORIS Tucker decomposition (lora_mid)")
        }
        "dora_scale" => return KeyKind::Unsupported("DoRA (dora_scale)"),
        "diff" | "diff_b" | "on_input" | "w_norm" | "b_norm" => {
            return KeyKind::Unsupported("LyCORIS full/norm layers (diff, w_norm, ...)")
        }
        _ => return KeyKind::Unrecognized,
    };
    KeyKind::Lora(LoraKey {
        component,
        module: ModuleRef::Kohya(name.to_string()),
        role,
        format: LoraFormat::Kohya,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lora(key: &str) -> LoraKey {
        match parse_key(key) {
            KeyKind::Lora(k) => k,
            other => panic!("{key}: {other:?}"),
        }
    }

    #[test]
    fn kohya_keys() {
        let k = lora("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0.lora_up.weight");
        assert_eq!(k.component, Component::Unet);
        assert_eq!(
            k.module,
            ModuleRef::Kohya(
                "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0".into()
            )
        );
        assert_eq!(k.role, Role::Up);
        let k = lora("lora_te_text_model_encoder_layers_0_mlp_fc1.alpha");
        assert_eq!((k.component, k.role), (Component::TextEncoder, Role::Alpha));
        assert_eq!(
            parse_key("lora_unet_input_blocks_4_1_proj_in.lora_down.weight"),
            KeyKind::OtherArchitecture(
                "original-LDM/SGM UNet block names (input_blocks/middle_block/output_blocks), as SDXL LoRAs use"
            )
        );
        assert!(matches!(
            parse_key("lora_te2_text_model_encoder_layers_0_mlp_fc1.alpha"),
            KeyKind::OtherArchitecture(_)
        ));
        assert!(matches!(
            parse_key("lora_unet_conv_in.hada_w1_a"),
            KeyKind::Unsupported(_)
        ));
        assert_eq!(
            parse_key("lora_unet_conv_in.something"),
            KeyKind::Unrecognized
        );
    }

    #[test]
    fn peft_keys() {
        let k =
            lora("unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0.lora_A.weight");
        assert_eq!(
            k.module,
            ModuleRef::Path("mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0".into())
        );
        assert_eq!(
            (k.component, k.role, k.format),
            (Component::Unet, Role::Down, LoraFormat::Peft)
        );
        let k = lora("text_encoder.text_model.encoder.layers.1.self_attn.q_proj.lora_B.weight");
        assert_eq!(k.component, Component::TextEncoder);
        assert_eq!(
            k.module,
            ModuleRef::Path("text_model.encoder.layers.1.self_attn.q_proj".into())
        );
        assert!(matches!(
            parse_key("unet.conv_in.lora_magnitude_vector"),
            KeyKind::Unsupported(_)
        ));
    }

    #[test]
    fn old_diffusers_keys() {
        let k = lora("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight");
        assert_eq!(
            k.module,
            ModuleRef::Path(
                "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0".into()
            )
        );
        assert_eq!((k.role, k.format), (Role::Down, LoraFormat::DiffusersOld));
        // no prefix: the UNet, as `unet.save_attn_procs` wrote it
        let k = lora(
            "up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora.up.weight",
        );
        assert_eq!(k.component, Component::Unet);
        assert_eq!(
            k.module,
            ModuleRef::Path("up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k".into())
        );
        let k = lora("text_encoder.text_model.encoder.layers.0.self_attn.to_v_lora.up.weight");
        assert_eq!(
            k.module,
            ModuleRef::Path("text_model.encoder.layers.0.self_attn.v_proj".into())
        );
        let k =
            lora("text_encoder.text_model.encoder.layers.0.mlp.fc2.lora_linear_layer.down.weight");
        assert_eq!(
            k.module,
            ModuleRef::Path("text_model.encoder.layers.0.mlp.fc2".into())
        );
        let k = lora("unet.down_blocks.1.resnets.0.conv1.lora.up.weight");
        assert_eq!(
            k.module,
            ModuleRef::Path("down_blocks.1.resnets.0.conv1".into())
        );
        assert_eq!(parse_key("unet.conv_in.weight"), KeyKind::Unrecognized);
    }
}
