//! Errors of the experiment config: each names the file, the field (a dotted path such as
//! `methods[2].params.step_size`) and the expected form.

use std::fmt;
use std::path::PathBuf;

/// One problem in an experiment config, or several independent ones found together.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the file: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not valid TOML.
    #[error("{}{}: not valid TOML: {msg}", file.display(), At(*at))]
    Syntax {
        file: PathBuf,
        at: Option<(usize, usize)>,
        msg: String,
    },

    /// A field is missing, unknown, of the wrong type, or has a value outside its allowed form.
    #[error("{}{}: field `{field}`: {msg}", file.display(), At(*at))]
    Field {
        file: PathBuf,
        field: String,
        at: Option<(usize, usize)>,
        msg: String,
    },

    /// Several independent problems (validation reports all it finds, one line each).
    #[error("{} problems:\n{}", .0.len(), list(.0))]
    Many(Vec<ConfigError>),
}

impl ConfigError {
    /// A problem with `field` of `file`.
    pub fn field(
        file: impl Into<PathBuf>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        ConfigError::Field {
            file: file.into(),
            field: field.into(),
            at: None,
            msg: msg.into(),
        }
    }

    /// The single problems inside (one for a plain error).
    pub fn problems(&self) -> Vec<&ConfigError> {
        match self {
            ConfigError::Many(v) => v.iter().flat_map(|e| e.problems()).collect(),
            e => vec![e],
        }
    }

    /// One error from a list of problems (`None` when the list is empty).
    pub fn from_list(mut v: Vec<ConfigError>) -> Option<Self> {
        match v.len() {
            0 => None,
            1 => v.pop(),
            _ => Some(ConfigError::Many(v)),
        }
    }
}

/// ` (line L, column C)` when known.
struct At(Option<(usize, usize)>);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((line, col)) => write!(f, ":{line}:{col}"),
            None => Ok(()),
        }
    }
}

fn list(v: &[ConfigError]) -> String {
    v.iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// 1-based line and column of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}
