//! Reading diffusers/transformers `config.json` files field by field, so that every error names the file,
//! the field and the expected form, and every field we do not support is refused unless it has the value
//! our implementation assumes.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A parsed JSON object with its path.
#[derive(Debug, Clone)]
pub struct JsonConfig {
    pub path: PathBuf,
    pub map: Map<String, Value>,
}

impl JsonConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_str(&text, path)
    }

    pub fn from_str(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::bad_file(path, format!("invalid JSON ({e})")))?;
        match value {
            Value::Object(map) => Ok(Self {
                path: path.to_path_buf(),
                map,
            }),
            _ => Err(Error::bad_file(path, "expected a JSON object")),
        }
    }

    /// The value of `field`, treating JSON `null` as absent.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn err(&self, field: &str, msg: impl Into<String>) -> Error {
        Error::config(&self.path, field, msg)
    }

    pub fn usize(&self, field: &str, default: Option<usize>) -> Result<usize> {
        match self.get(field) {
            Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| {
                self.err(field, format!("expected a non-negative integer, found {v}"))
            }),
            None => {
                default.ok_or_else(|| self.err(field, "missing (expected a non-negative integer)"))
            }
        }
    }

    pub fn f64(&self, field: &str, default: Option<f64>) -> Result<f64> {
        match self.get(field) {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(field, format!("expected a number, found {v}"))),
            None => default.ok_or_else(|| self.err(field, "missing (expected a number)")),
        }
    }

    pub fn bool(&self, field: &str, default: bool) -> Result<bool> {
        match self.get(field) {
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(field, format!("expected true or false, found {v}"))),
            None => Ok(default),
        }
    }

    pub fn string(&self, field: &str, default: Option<&str>) -> Result<String> {
        match self.get(field) {
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.err(field, format!("expected a string, found {v}"))),
            None => default
                .map(str::to_string)
                .ok_or_else(|| self.err(field, "missing (expected a string)")),
        }
    }

    /// A list of strings.
    pub fn strings(&self, field: &str) -> Result<Vec<String>> {
        let v = self
            .get(field)
            .ok_or_else(|| self.err(field, "missing (expected a list of strings)"))?;
        let arr = v
            .as_array()
            .ok_or_else(|| self.err(field, format!("expected a list of strings, found {v}")))?;
        arr.iter()
            .map(|x| {
                x.as_str().map(str::to_string).ok_or_else(|| {
                    self.err(
                        field,
                        format!("expected a list of strings, found element {x}"),
                    )
                })
            })
            .collect()
    }

    /// A list of integers, or one integer repeated `n` times (diffusers' `int or tuple` fields).
    pub fn usizes_or_one(
        &self,
        field: &str,
        n: usize,
        default: Option<usize>,
    ) -> Result<Vec<usize>> {
        match self.get(field) {
            Some(Value::Array(arr)) => {
                let list: Vec<usize> = arr
                    .iter()
                    .map(|x| {
                        x.as_u64().map(|x| x as usize).ok_or_else(|| {
                            self.err(field, format!("expected integers, found element {x}"))
                        })
                    })
                    .collect::<Result<_>>()?;
                if list.len() != n {
                    return Err(self.err(
                        field,
                        format!("expected {n} values (one per block), found {}", list.len()),
                    ));
                }
                Ok(list)
            }
            Some(v) => {
                let x = v.as_u64().ok_or_else(|| {
                    self.err(
                        field,
                        format!("expected an integer or a list of integers, found {v}"),
                    )
                })?;
                Ok(vec![x as usize; n])
            }
            None => match default {
                Some(d) => Ok(vec![d; n]),
                None => Err(self.err(field, "missing (expected an integer or a list of integers)")),
            },
        }
    }

    /// A list of integers.
    pub fn usizes(&self, field: &str) -> Result<Vec<usize>> {
        let v = self
            .get(field)
            .ok_or_else(|| self.err(field, "missing (expected a list of integers)"))?;
        let arr = v
            .as_array()
            .ok_or_else(|| self.err(field, format!("expected a list of integers, found {v}")))?;
        arr.iter()
            .map(|x| {
                x.as_u64()
                    .map(|x| x as usize)
                    .ok_or_else(|| self.err(field, format!("expected integers, found element {x}")))
            })
            .collect()
    }

    /// Refuses a field whose value is set and differs from every value we support.
    pub fn require_one_of(&self, field: &str, supported: &[Value]) -> Result<()> {
        match self.get(field) {
            None => Ok(()),
            Some(v) if supported.contains(v) => Ok(()),
            Some(v) => Err(self.err(
                field,
                format!(
                    "value {v} is not supported (supported: {})",
                    supported
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// Refuses a field that is set to anything but null/absent or one of `supported`.
    pub fn require_unset(&self, field: &str) -> Result<()> {
        self.require_one_of(field, &[])
    }
}
