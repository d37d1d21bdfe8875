//! Composition methods and the schema of their parameters: the name, type, allowed range of every knob,
//! and whether it changes the pixels (and so enters the job's content hash).
//!
//! The CLoRA knobs carry the names of [`crate::methods::clora::params::CloraParams`] (the official
//! pipeline's `__call__` arguments); `scale`, `style_lora`, `style_lora_weight` and `save_attention` are
//! harness-level knobs the method runner reads besides them. Defaults are the method's own: the harness
//! passes on only what the config sets.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A composition method (clora-spec.md sections 1-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    /// The model alone, no LoRA; the prompt with class nouns only.
    Base,
    /// One LoRA (`lora`), its trigger words in the prompt.
    Single,
    /// All the prompt's LoRAs fused at once, `W + scale * sum_i w_i dW_i`.
    Merge,
    /// One LoRA active per step, switching every `switch_step` steps, round-robin.
    Switch,
    /// One UNet pass per LoRA per step, guided noise averaged.
    Composite,
    /// Contrastive test-time composition (CLoRA).
    Clora,
    /// Attend-and-Excite on the prompt's LoRAs merged (unfused): a test-time push of the latent that raises
    /// the weakest concept noun's peak cross-attention.
    Excite,
}

impl MethodKind {
    pub const ALL: [MethodKind; 7] = [
        MethodKind::Base,
        MethodKind::Single,
        MethodKind::Merge,
        MethodKind::Switch,
        MethodKind::Composite,
        MethodKind::Clora,
        MethodKind::Excite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MethodKind::Base => "base",
            MethodKind::Single => "single",
            MethodKind::Merge => "merge",
            MethodKind::Switch => "switch",
            MethodKind::Composite => "composite",
            MethodKind::Clora => "clora",
            MethodKind::Excite => "excite",
        }
    }

    /// The parameters this method accepts.
    pub fn params(self) -> &'static [ParamDef] {
        match self {
            MethodKind::Base => &[],
            MethodKind::Single => SINGLE,
            MethodKind::Merge => MERGE,
            MethodKind::Switch => SWITCH,
            MethodKind::Composite => COMPOSITE,
            MethodKind::Clora => CLORA,
            MethodKind::Excite => EXCITE,
        }
    }

    /// The least number of LoRAs a prompt must name for this method.
    pub fn min_concepts(self) -> usize {
        match self {
            MethodKind::Base => 0,
            MethodKind::Single
            | MethodKind::Merge
            | MethodKind::Switch
            | MethodKind::Composite
            | MethodKind::Excite => 1,
            MethodKind::Clora => 2,
        }
    }
}

impl fmt::Display for MethodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The type and allowed range of a parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamType {
    Bool,
    /// An integer `>= min`.
    Int {
        min: i64,
    },
    /// A finite number in `(min, max)` (bounds included where `closed`).
    Float {
        min: f64,
        max: f64,
        closed: bool,
    },
    /// One of the listed strings.
    Choice(&'static [&'static str]),
    /// The name of a LoRA of the config.
    Lora,
    /// A list of integers `>= min` (a list of such lists is a sweep axis).
    IntList {
        min: i64,
    },
    /// LoRA names of the config to finite weights, `{ rings = 1.5 }` (a list of such tables is a sweep axis).
    LoraWeights,
}

impl ParamType {
    /// The expected form, for error messages.
    pub fn expected(&self) -> String {
        match self {
            ParamType::Bool => "true or false".into(),
            ParamType::Int { min } => format!("an integer >= {min}"),
            ParamType::Float { min, max, closed } => {
                match (min.is_finite(), max.is_finite(), closed) {
                    (true, true, true) => format!("a number in [{min}, {max}]"),
                    (true, true, false) => format!("a number in ({min}, {max})"),
                    (true, false, true) => format!("a number >= {min}"),
                    (true, false, false) => format!("a number > {min}"),
                    _ => "a finite number".into(),
                }
            }
            ParamType::Choice(c) => format!(
                "one of {}",
                c.iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ParamType::Lora => "the name of a LoRA of the config".into(),
            ParamType::IntList { min } => format!("a list of integers >= {min}"),
            ParamType::LoraWeights => {
                "a table of LoRA names to weights, e.g. `{ rings = 1.5 }`".into()
            }
        }
    }
}

/// One parameter of a method.
#[derive(Debug, Clone, Copy)]
pub struct ParamDef {
    pub name: &'static str,
    pub ty: ParamType,
    /// Whether the value changes the image (else it stays out of the content hash).
    pub pixels: bool,
    pub help: &'static str,
}

const fn p(name: &'static str, ty: ParamType, help: &'static str) -> ParamDef {
    ParamDef {
        name,
        ty,
        pixels: true,
        help,
    }
}

const NONNEG: ParamType = ParamType::Float {
    min: 0.0,
    max: f64::INFINITY,
    closed: true,
};
const ANY: ParamType = ParamType::Float {
    min: f64::NEG_INFINITY,
    max: f64::INFINITY,
    closed: true,
};
const SCALE: ParamDef = p(
    "scale",
    NONNEG,
    "global LoRA scale s (cross_attention_kwargs scale)",
);

/// Per-LoRA weights `w_i` in place of the `[[loras]] weight`s (diffusers' `set_adapters(names, adapter_weights)`).
/// Out of the content hash as a parameter: the weights it sets enter it through the job's LoRAs, so a table
/// that changes no weight of a prompt's LoRAs makes the same images.
const LORA_WEIGHTS: ParamDef = ParamDef {
    name: "lora_weights",
    ty: ParamType::LoraWeights,
    pixels: false,
    help: "per-LoRA weights in place of the [[loras]] weights",
};

const SINGLE: &[ParamDef] = &[
    p(
        "lora",
        ParamType::Lora,
        "the LoRA to apply (default: one job per LoRA the prompt names)",
    ),
    SCALE,
    LORA_WEIGHTS,
];
const MERGE: &[ParamDef] = &[
    SCALE,
    LORA_WEIGHTS,
    p(
        "fuse",
        ParamType::Bool,
        "fuse the deltas into the weights instead of unfused adapters",
    ),
];
const SWITCH: &[ParamDef] = &[
    p(
        "switch_step",
        ParamType::Int { min: 1 },
        "activate the next LoRA every this many steps",
    ),
    SCALE,
    LORA_WEIGHTS,
];
const COMPOSITE: &[ParamDef] = &[
    SCALE,
    LORA_WEIGHTS,
    p(
        "batched",
        ParamType::Bool,
        "all LoRAs in one batched UNet call",
    ),
];
const CLORA: &[ParamDef] = &[
    p(
        "step_size",
        NONNEG,
        "latent update z <- z - step_size * grad",
    ),
    p(
        "max_iter_to_alter",
        ParamType::Int { min: 0 },
        "update the latent at step indices below this",
    ),
    p(
        "iterative_steps",
        ParamType::IntList { min: 0 },
        "step indices with extra update cycles",
    ),
    p(
        "iterative_steps_steps",
        ParamType::Int { min: 0 },
        "extra cycles at each iterative step",
    ),
    p(
        "latent_update",
        ParamType::Bool,
        "update the latent with the contrastive loss",
    ),
    p(
        "apply_mask_after",
        ParamType::Int { min: 0 },
        "masks apply from this step index on",
    ),
    p(
        "mask_threshold_alpha",
        ParamType::Float {
            min: 0.0,
            max: 1.0,
            closed: false,
        },
        "mask = attention > alpha * max",
    ),
    p(
        "mask_mode",
        ParamType::Choice(&["threshold", "argmax", "argmax_minmax", "base_nouns", "layout"]),
        "threshold (official, masks may overlap), argmax (each cell to one branch), argmax_minmax (argmax on maps rescaled by their range), base_nouns (each cell to the class noun with the most of the base branch's attention) or layout (each concept one whole object of a first pass of the base branch, held from the first step)",
    ),
    p(
        "mask_words",
        ParamType::Choice(&["trigger_and_noun", "class_noun", "after_noun"]),
        "the words whose attention makes each branch's mask: trigger word(s) and class noun (official), the class noun alone, or the token after the class noun",
    ),
    p("erode", ParamType::Bool, "3x3 erosion of the masks"),
    p("dilate", ParamType::Bool, "3x3 dilation of the masks"),
    p("opening", ParamType::Bool, "3x3 opening of the masks"),
    p("closing", ParamType::Bool, "3x3 closing of the masks"),
    p(
        "use_text_encoder_lora",
        ParamType::Bool,
        "encode each branch prompt with its LoRA's text encoder",
    ),
    p(
        "temperature",
        ParamType::Float {
            min: 0.0,
            max: f64::INFINITY,
            closed: false,
        },
        "NT-Xent temperature",
    ),
    p(
        "attention_stride_px",
        ParamType::Int { min: 1 },
        "pixels per attention-map cell (32: 16x16 at 512)",
    ),
    p(
        "maps",
        ParamType::Choice(&["both", "cond"]),
        "CFG rows that make the maps",
    ),
    p(
        "fresh_eps",
        ParamType::Bool,
        "fresh noise prediction after the last update",
    ),
    p(
        "batched",
        ParamType::Bool,
        "all branches in one batched UNet call",
    ),
    p(
        "style_lora",
        ParamType::Lora,
        "a global style LoRA active in every branch",
    ),
    p("style_lora_weight", ANY, "the style LoRA's weight"),
    SCALE,
    LORA_WEIGHTS,
    ParamDef {
        name: "save_attention",
        ty: ParamType::Bool,
        pixels: false,
        help: "save attention maps and masks per step beside the image",
    },
];

/// The knobs of `excite` (`ExciteParams`, the authors' defaults): the schedule is the official 50-step one
/// scaled to the run's steps (updates in the first half, refinement at 0, 1/5 and 2/5 of the run with the
/// official thresholds 0.05, 0.5, 0.8); `words` says which words of each LoRA to excite.
const EXCITE: &[ParamDef] = &[
    p(
        "words",
        ParamType::Choice(&["class_nouns", "concepts"]),
        "excite each LoRA's class noun (the authors' subject nouns) or its trigger words and class noun",
    ),
    p(
        "scale_factor",
        NONNEG,
        "step size scale_factor * sqrt(scale_range[i]) (official 20)",
    ),
    p(
        "max_refinement_steps",
        ParamType::Int { min: 1 },
        "at most this many updates per refinement (official 20)",
    ),
    p(
        "normalize_eot",
        ParamType::Bool,
        "softmax over the prompt's own tokens (SD 2.1 setting) instead of all but the last",
    ),
    p(
        "smooth",
        ParamType::Bool,
        "Gaussian smoothing (3x3) of each token's map before its peak",
    ),
    p(
        "sigma",
        ParamType::Float {
            min: 0.0,
            max: f64::INFINITY,
            closed: false,
        },
        "the smoothing's sigma",
    ),
    p(
        "softmax_scale",
        ParamType::Float {
            min: 0.0,
            max: f64::INFINITY,
            closed: false,
        },
        "maps x this before the softmax over tokens (official 100)",
    ),
    p(
        "attention_stride_px",
        ParamType::Int { min: 1 },
        "pixels per attention-map cell (32: 16x16 at 512)",
    ),
    SCALE,
    LORA_WEIGHTS,
];

/// `excite` parameters that the harness reads itself (not fields of `ExciteParams`, or filled in by it).
pub const EXCITE_HARNESS_PARAMS: &[&str] = &["scale", "lora_weights", "words"];

/// Parameters of `single`, `merge`, `switch` and `composite` that the harness reads itself (not fields of
/// `methods::spec::MethodSpec`): the global LoRA scale, and `single`'s LoRA (the job applies only it).
pub const BASELINE_HARNESS_PARAMS: &[&str] = &["scale", "lora_weights", "lora"];

/// CLoRA parameters that the harness reads itself (not fields of `CloraParams`).
pub const CLORA_HARNESS_PARAMS: &[&str] = &[
    "scale",
    "lora_weights",
    "style_lora",
    "style_lora_weight",
    "save_attention",
];

/// A concrete parameter value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    IntList(Vec<i64>),
    /// `lora_weights`: LoRA name -> weight.
    LoraWeights(BTreeMap<String, f64>),
}

impl ParamValue {
    /// As a TOML value (for deserializing into a method's own parameter struct).
    pub fn to_toml(&self) -> toml::Value {
        match self {
            ParamValue::Bool(b) => toml::Value::Boolean(*b),
            ParamValue::Int(i) => toml::Value::Integer(*i),
            ParamValue::Float(f) => toml::Value::Float(*f),
            ParamValue::Str(s) => toml::Value::String(s.clone()),
            ParamValue::IntList(v) => {
                toml::Value::Array(v.iter().map(|&i| toml::Value::Integer(i)).collect())
            }
            ParamValue::LoraWeights(w) => toml::Value::Table(
                w.iter()
                    .map(|(k, &x)| (k.clone(), toml::Value::Float(x)))
                    .collect(),
            ),
        }
    }

    /// A number for plotting along an axis (`false`/`true` as 0/1); `None` for strings and lists.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            ParamValue::Int(i) => Some(*i as f64),
            ParamValue::Float(f) => Some(*f),
            _ => None,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Str(s) => f.write_str(s),
            ParamValue::IntList(v) => {
                write!(
                    f,
                    "[{}]",
                    v.iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
            ParamValue::LoraWeights(w) => write!(
                f,
                "{{{}}}",
                w.iter()
                    .map(|(k, x)| format!("{k}={x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        }
    }
}

/// Parses one value of parameter `def`; the error is the expected form and what was found.
pub fn parse_value(def: &ParamDef, v: &toml::Value) -> Result<ParamValue, String> {
    let found = || describe(v);
    let wrong = || format!("expected {}, found {}", def.ty.expected(), found());
    match def.ty {
        ParamType::Bool => v.as_bool().map(ParamValue::Bool).ok_or_else(wrong),
        ParamType::Int { min } => match v.as_integer() {
            Some(i) if i >= min => Ok(ParamValue::Int(i)),
            _ => Err(wrong()),
        },
        ParamType::Float { min, max, closed } => {
            let x = match v {
                toml::Value::Float(x) => *x,
                toml::Value::Integer(i) => *i as f64,
                _ => return Err(wrong()),
            };
            let ok = x.is_finite()
                && if closed {
                    x >= min && x <= max
                } else {
                    x > min && x < max
                };
            if ok {
                Ok(ParamValue::Float(x))
            } else {
                Err(wrong())
            }
        }
        ParamType::Choice(choices) => match v.as_str() {
            Some(s) if choices.contains(&s) => Ok(ParamValue::Str(s.to_string())),
            _ => Err(wrong()),
        },
        ParamType::Lora => match v.as_str() {
            Some(s) if !s.is_empty() => Ok(ParamValue::Str(s.to_string())),
            _ => Err(wrong()),
        },
        ParamType::IntList { min } => match v.as_array() {
            Some(a) => a
                .iter()
                .map(|x| match x.as_integer() {
                    Some(i) if i >= min => Ok(i),
                    _ => Err(wrong()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(ParamValue::IntList),
            None => Err(wrong()),
        },
        ParamType::LoraWeights => {
            let Some(t) = v.as_table().filter(|t| !t.is_empty()) else {
                return Err(wrong());
            };
            // each weight as a `Float` parameter of any finite value (the names are checked against the
            // config's LoRAs in validation)
            let weight = ParamDef { ty: ANY, ..*def };
            t.iter()
                .map(|(name, w)| match parse_value(&weight, w) {
                    Ok(ParamValue::Float(x)) => Ok((name.clone(), x)),
                    Ok(other) => unreachable!("a Float parameter parsed to {other:?}"),
                    Err(msg) => Err(format!("the weight of LoRA \"{name}\": {msg}")),
                })
                .collect::<Result<_, _>>()
                .map(ParamValue::LoraWeights)
        }
    }
}

/// A short description of a TOML value for error messages.
pub fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the string \"{s}\""),
        toml::Value::Integer(i) => format!("the integer {i}"),
        toml::Value::Float(f) => format!("the number {f}"),
        toml::Value::Boolean(b) => format!("the boolean {b}"),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(a) => format!("a list of {} value(s)", a.len()),
        toml::Value::Table(_) => "a table".into(),
    }
}
