//! Small helpers over [`JsonConfig`] for the metric encoders' `config.json` files: nested sub-configs
//! (`text_config`, `vision_config`) whose errors name the full dotted field.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::models::config_json::JsonConfig;

/// The object under `key` (absent or `null` = an empty object, i.e. every field at its default).
pub fn nested(cfg: &JsonConfig, key: &str) -> Result<JsonConfig> {
    match cfg.get(key) {
        None => Ok(JsonConfig {
            path: cfg.path.clone(),
            map: Default::default(),
        }),
        Some(Value::Object(map)) => Ok(JsonConfig {
            path: cfg.path.clone(),
            map: map.clone(),
        }),
        Some(v) => Err(Error::config(
            &cfg.path,
            key,
            format!("expected an object, found {v}"),
        )),
    }
}

/// Prefixes the field of a config error with `prefix.` (so `hidden_size` reads `text_config.hidden_size`).
pub fn in_section<T>(prefix: &str, r: Result<T>) -> Result<T> {
    r.map_err(|e| match e {
        Error::Config { path, field, msg } => Error::Config {
            path,
            field: format!("{prefix}.{field}"),
            msg,
        },
        other => other,
    })
}

/// A positive integer field (with a default).
pub fn positive(cfg: &JsonConfig, field: &str, default: usize) -> Result<usize> {
    let v = cfg.usize(field, Some(default))?;
    if v == 0 {
        return Err(Error::config(&cfg.path, field, "must be positive"));
    }
    Ok(v)
}

/// Checks that `hidden` splits into `heads` heads.
pub fn check_heads(cfg: &JsonConfig, hidden: usize, heads: usize, heads_field: &str) -> Result<()> {
    if !hidden.is_multiple_of(heads) {
        return Err(Error::config(
            &cfg.path,
            heads_field,
            format!("{heads} heads do not divide hidden_size {hidden}"),
        ));
    }
    Ok(())
}
