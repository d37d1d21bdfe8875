//! Reading config files: TOML parsing with field-path errors, and `include` resolution.
//!
//! `include = ["../experiments/toyworld/loras.toml"]` reads those files first (depth first, paths relative
//! to the including file), then this one. Lists of tables (`loras`, `prompt_sets`, `methods`) are
//! concatenated in that order; tables (`model`, `sampler`, `metrics`, `report`, `run`) merge field by
//! field, and every other value is replaced, the including file winning.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::error::{line_col, ConfigError};
use super::raw::*;

/// A value with the file and the field it came from.
#[derive(Debug)]
pub struct Sourced<T> {
    pub value: T,
    pub file: PathBuf,
    pub field: String,
}

impl<T> Sourced<T> {
    pub fn new(value: T, file: &Path, field: impl Into<String>) -> Self {
        Self {
            value,
            file: file.to_path_buf(),
            field: field.into(),
        }
    }

    /// The directory relative paths in this value are resolved against.
    pub fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }
}

/// Every file of a config, merged.
#[derive(Debug, Default)]
pub struct Merged {
    pub main: PathBuf,
    pub files: Vec<PathBuf>,
    pub run_name: Option<Sourced<String>>,
    pub model_path: Option<Sourced<String>>,
    pub model_config_dir: Option<Sourced<String>>,
    pub model_dtype: Option<Sourced<super::experiment::RunDtype>>,
    pub loras: Vec<Sourced<RawLora>>,
    pub prompt_sets: Vec<Sourced<RawPromptSet>>,
    pub methods: Vec<Sourced<RawMethod>>,
    pub seeds: Option<Sourced<RawSeeds>>,
    pub samples_per_prompt: Option<Sourced<usize>>,
    pub sampler: Vec<Sourced<RawSampler>>,
    pub metrics: Vec<Sourced<RawMetrics>>,
    pub report: Vec<Sourced<RawReport>>,
}

/// Parses the TOML file `path` into `T`; errors name the file, the field path and the line.
pub fn parse_file<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    parse_str(path, &text)
}

/// Parses `text` (the contents of `path`) into `T`.
pub fn parse_str<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let de = toml::de::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
        file: path.to_path_buf(),
        at: e.span().map(|s| line_col(text, s.start)),
        msg: e.message().trim().to_string(),
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.message().trim().to_string();
        // serde reports a missing field at its table; name the field itself
        let field = match (missing_field(&msg), field.as_str()) {
            (Some(f), ".") => f,
            (Some(f), t) => format!("{t}.{f}"),
            (None, _) => field,
        };
        ConfigError::Field {
            file: path.to_path_buf(),
            at: inner.span().map(|s| line_col(text, s.start)),
            field,
            msg,
        }
    })
}

/// The field named by serde's "missing field `x`" message.
fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// Reads `main` and everything it includes.
pub fn load(main: &Path) -> Result<Merged, ConfigError> {
    let mut merged = Merged {
        main: main.to_path_buf(),
        ..Default::default()
    };
    let mut stack = Vec::new();
    visit(main, &mut stack, &mut merged)?;
    Ok(merged)
}

fn visit(path: &Path, stack: &mut Vec<PathBuf>, m: &mut Merged) -> Result<(), ConfigError> {
    let raw: RawFile = parse_file(path)?;
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    stack.push(canonical);
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    for (i, inc) in raw.include.iter().flatten().enumerate() {
        let p = resolve(&dir, inc);
        if !p.is_file() {
            return Err(ConfigError::field(
                path,
                format!("include[{i}]"),
                format!(
                    "no such file: {} (expected a TOML file, relative to this file)",
                    p.display()
                ),
            ));
        }
        let c = p.canonicalize().unwrap_or_else(|_| p.clone());
        if stack.contains(&c) {
            return Err(ConfigError::field(
                path,
                format!("include[{i}]"),
                format!(
                    "{} includes itself (directly or through other includes)",
                    p.display()
                ),
            ));
        }
        visit(&p, stack, m)?;
    }
    stack.pop();
    m.files.push(path.to_path_buf());

    let f = path;
    if let Some(run) = raw.run {
        if let Some(n) = run.name {
            m.run_name = Some(Sourced::new(n, f, "run.name"));
        }
    }
    if let Some(model) = raw.model {
        if let Some(p) = model.path {
            m.model_path = Some(Sourced::new(p, f, "model.path"));
        }
        if let Some(p) = model.config_dir {
            m.model_config_dir = Some(Sourced::new(p, f, "model.config_dir"));
        }
        if let Some(d) = model.dtype {
            m.model_dtype = Some(Sourced::new(d, f, "model.dtype"));
        }
    }
    for (i, l) in raw.loras.into_iter().flatten().enumerate() {
        m.loras.push(Sourced::new(l, f, format!("loras[{i}]")));
    }
    for (i, s) in raw.prompt_sets.into_iter().flatten().enumerate() {
        m.prompt_sets
            .push(Sourced::new(s, f, format!("prompt_sets[{i}]")));
    }
    for (i, s) in raw.methods.into_iter().flatten().enumerate() {
        m.methods.push(Sourced::new(s, f, format!("methods[{i}]")));
    }
    if let Some(s) = raw.seeds {
        m.seeds = Some(Sourced::new(s, f, "seeds"));
    }
    if let Some(s) = raw.samples_per_prompt {
        m.samples_per_prompt = Some(Sourced::new(s, f, "samples_per_prompt"));
    }
    if let Some(s) = raw.sampler {
        m.sampler.push(Sourced::new(s, f, "sampler"));
    }
    if let Some(s) = raw.metrics {
        m.metrics.push(Sourced::new(s, f, "metrics"));
    }
    if let Some(s) = raw.report {
        m.report.push(Sourced::new(s, f, "report"));
    }
    Ok(())
}

/// `rel` resolved against `dir`, with `.` and `..` removed lexically where they can be
/// (`configs/../experiments/x.toml` becomes `experiments/x.toml`).
pub fn resolve(dir: &Path, rel: impl AsRef<Path>) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in dir.join(rel).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let last_is_normal =
                    matches!(out.components().next_back(), Some(Component::Normal(_)));
                if last_is_normal {
                    out.pop();
                } else if !matches!(out.components().next_back(), Some(Component::RootDir)) {
                    out.push("..");
                }
            }
            c => out.push(c.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// The last value of a field set in any of `layers` (later layers win), with its file.
pub fn last<'a, T, V>(
    layers: &'a [Sourced<T>],
    get: impl Fn(&'a T) -> Option<V>,
) -> Option<(V, &'a Path)> {
    layers
        .iter()
        .rev()
        .find_map(|l| get(&l.value).map(|v| (v, l.file.as_path())))
}

#[cfg(test)]
mod tests {
    use super::resolve;
    use std::path::Path;

    #[test]
    fn resolve_removes_dot_dot_lexically() {
        assert_eq!(
            resolve(Path::new("configs"), "../experiments/x.toml"),
            Path::new("experiments/x.toml")
        );
        assert_eq!(resolve(Path::new("a/b"), "../../../m"), Path::new("../m"));
        assert_eq!(
            resolve(Path::new("/r/configs"), "./y/../z"),
            Path::new("/r/configs/z")
        );
        assert_eq!(resolve(Path::new("/"), ".."), Path::new("/"));
        assert_eq!(resolve(Path::new("configs"), ".."), Path::new("."));
    }
}
