//! The config file as written: serde structs with `deny_unknown_fields`, every field optional so that
//! `include`d files can each supply a part. Relative paths are kept as written and resolved against the
//! directory of the file that holds them.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, value::MapAccessDeserializer, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::experiment::RunDtype;
use super::params::MethodKind;
use crate::schedulers::SchedulerKind;

/// One config file (the main one or an include).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// Files whose contents come before this file's (paths relative to this file).
    pub include: Option<Vec<String>>,
    pub run: Option<RawRun>,
    pub model: Option<RawModel>,
    pub loras: Option<Vec<RawLora>>,
    pub prompt_sets: Option<Vec<RawPromptSet>>,
    pub methods: Option<Vec<RawMethod>>,
    pub seeds: Option<RawSeeds>,
    pub samples_per_prompt: Option<usize>,
    pub sampler: Option<RawSampler>,
    pub metrics: Option<RawMetrics>,
    pub report: Option<RawReport>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRun {
    /// Results go to `<out>/<name>/` (default: the config file's stem).
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub path: Option<String>,
    pub config_dir: Option<String>,
    pub dtype: Option<RunDtype>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLora {
    pub name: String,
    pub path: String,
    pub trigger: Option<OneOrMany>,
    pub class_noun: Option<String>,
    pub references: Option<OneOrMany>,
    pub weight: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPromptSet {
    pub name: String,
    pub prompts: Option<Vec<RawPrompt>>,
    /// A TOML file with `prompts = [...]` (relative to this file).
    pub file: Option<String>,
}

/// A prompt file under `experiments/`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPromptFile {
    pub description: Option<String>,
    pub prompts: Vec<RawPrompt>,
}

/// A prompt: a template string, or a table with overrides.
#[derive(Debug)]
pub enum RawPrompt {
    Text(String),
    Table(RawPromptTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPromptTable {
    pub text: String,
    pub negative: Option<String>,
    pub branches: Option<BTreeMap<String, String>>,
    pub token_indices: Option<Vec<Vec<Vec<usize>>>>,
    pub mask_indices: Option<Vec<Vec<usize>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMethod {
    pub name: Option<String>,
    pub method: MethodKind,
    pub params: Option<toml::Table>,
    pub prompt_sets: Option<Vec<String>>,
}

/// `seeds = [0, 1, 2]` or `seeds = { start = 0, count = 32 }`.
#[derive(Debug)]
pub enum RawSeeds {
    List(Vec<u64>),
    Range(RawSeedRange),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSeedRange {
    pub start: u64,
    pub count: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSampler {
    pub scheduler: Option<SchedulerKind>,
    pub steps: Option<usize>,
    pub guidance: Option<f64>,
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub negative_prompt: Option<String>,
    pub clip_skip: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub scores: Option<Vec<String>>,
    pub clip_model: Option<String>,
    pub dino_model: Option<String>,
    pub batch_size: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReport {
    pub metrics: Option<Vec<String>>,
    pub grid_seed: Option<u64>,
    pub trade_off: Option<Vec<String>>,
    pub confidence: Option<f64>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, PartialEq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![s.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    v.push(s);
                }
                Ok(OneOrMany(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawPrompt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawPrompt;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a prompt template string, or a table { text = \"...\", negative, branches, token_indices, mask_indices }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawPrompt, E> {
                Ok(RawPrompt::Text(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawPrompt, A::Error> {
                RawPromptTable::deserialize(MapAccessDeserializer::new(map)).map(RawPrompt::Table)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawSeeds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawSeeds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a list of seeds (non-negative integers) or a table { start = 0, count = 32 }",
                )
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawSeeds, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<u64>()? {
                    v.push(s);
                }
                Ok(RawSeeds::List(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawSeeds, A::Error> {
                RawSeedRange::deserialize(MapAccessDeserializer::new(map)).map(RawSeeds::Range)
            }
        }
        d.deserialize_any(V)
    }
}
