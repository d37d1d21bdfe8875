//! Parameter grids: a method entry's `params` table, where a list is a sweep axis, and its cartesian
//! expansion into concrete variants.
//!
//! A list value sweeps the parameter (`step_size = [10, 20]`), except for parameters whose value is itself
//! a list (`iterative_steps = [0, 10, 20]` is one value; `iterative_steps = [[0, 10, 20], []]` sweeps).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::params::{describe, parse_value, MethodKind, ParamType, ParamValue};

/// One parameter and the values it takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    pub name: String,
    pub values: Vec<ParamValue>,
}

/// A method entry's parameters: one axis per parameter set in the config, in the table's order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParamGrid {
    pub axes: Vec<Axis>,
}

/// One point of a grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// Every parameter the config sets, with its value at this point.
    pub params: BTreeMap<String, ParamValue>,
    /// The parameters swept (more than one value) in this grid, in axis order.
    pub swept: Vec<String>,
    /// `name` or `name[axis=value, ...]` over the swept axes.
    pub label: String,
}

impl ParamGrid {
    /// Parses `table` for method `kind`. Problems come back as `(field, message)` with `field` relative to
    /// the table (`step_size`, `iterative_steps[1]`), one per parameter.
    pub fn parse(kind: MethodKind, table: &toml::Table) -> Result<Self, Vec<(String, String)>> {
        let defs = kind.params();
        let mut axes = Vec::new();
        let mut problems = Vec::new();
        for (key, value) in table {
            let Some(def) = defs.iter().find(|d| d.name == key) else {
                let known = if defs.is_empty() {
                    format!("method `{kind}` takes no parameters")
                } else {
                    format!(
                        "unknown parameter of method `{kind}`; expected one of {}",
                        defs.iter()
                            .map(|d| format!("`{}`", d.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                problems.push((key.clone(), known));
                continue;
            };
            let is_list_type = matches!(def.ty, ParamType::IntList { .. });
            let elements: Option<&Vec<toml::Value>> = match value.as_array() {
                Some(a) if !is_list_type => Some(a),
                Some(a) if !a.is_empty() && a.iter().all(|x| x.is_array()) => Some(a),
                Some(a) if a.iter().any(|x| x.is_array()) => {
                    problems.push((
                        key.clone(),
                        format!(
                            "expected {} or a list of such lists (a sweep), found a list mixing lists and {}",
                            def.ty.expected(),
                            a.iter().find(|x| !x.is_array()).map(describe).unwrap_or_default()
                        ),
                    ));
                    continue;
                }
                _ => None,
            };
            match elements {
                Some(a) if a.is_empty() => problems.push((
                    key.clone(),
                    format!(
                        "empty list: a sweep axis needs at least one value ({})",
                        def.ty.expected()
                    ),
                )),
                Some(a) => {
                    let mut values = Vec::new();
                    for (i, x) in a.iter().enumerate() {
                        match parse_value(def, x) {
                            Ok(v) if values.contains(&v) => {
                                problems.push((
                                    format!("{key}[{i}]"),
                                    format!("the value {v} is listed twice"),
                                ));
                            }
                            Ok(v) => values.push(v),
                            Err(msg) => problems.push((format!("{key}[{i}]"), msg)),
                        }
                    }
                    axes.push(Axis {
                        name: key.clone(),
                        values,
                    });
                }
                None => match parse_value(def, value) {
                    Ok(v) => axes.push(Axis {
                        name: key.clone(),
                        values: vec![v],
                    }),
                    Err(msg) => problems.push((
                        key.clone(),
                        format!("{msg} (or a list of such values to sweep)"),
                    )),
                },
            }
        }
        if problems.is_empty() {
            Ok(Self { axes })
        } else {
            Err(problems)
        }
    }

    /// The number of variants.
    pub fn len(&self) -> usize {
        self.axes.iter().map(|a| a.values.len()).product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names of the axes with more than one value.
    pub fn swept(&self) -> Vec<String> {
        self.axes
            .iter()
            .filter(|a| a.values.len() > 1)
            .map(|a| a.name.clone())
            .collect()
    }

    /// The cartesian product, first axis slowest.
    pub fn expand(&self, name: &str) -> Vec<Variant> {
        let swept = self.swept();
        let mut points: Vec<BTreeMap<String, ParamValue>> = vec![BTreeMap::new()];
        for axis in &self.axes {
            points = points
                .into_iter()
                .flat_map(|p| {
                    axis.values.iter().map(move |v| {
                        let mut q = p.clone();
                        q.insert(axis.name.clone(), v.clone());
                        q
                    })
                })
                .collect();
        }
        points
            .into_iter()
            .map(|params| Variant {
                label: label(name, &params, &swept),
                params,
                swept: swept.clone(),
            })
            .collect()
    }
}

/// `name` or `name[a=1, b=true]` over the `swept` parameters.
pub fn label(name: &str, params: &BTreeMap<String, ParamValue>, swept: &[String]) -> String {
    let parts: Vec<String> = swept
        .iter()
        .filter_map(|k| params.get(k).map(|v| format!("{k}={v}")))
        .collect();
    if parts.is_empty() {
        name.to_string()
    } else {
        format!("{name}[{}]", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn lists_are_axes_and_expand_cartesian() {
        let g = ParamGrid::parse(
            MethodKind::Clora,
            &table("step_size = [10, 20]\nlatent_update = [true, false]\niterative_steps = [0, 10]\nmaps = \"cond\""),
        )
        .unwrap();
        assert_eq!(g.len(), 4);
        let v = g.expand("clora");
        assert_eq!(v.len(), 4);
        assert_eq!(
            v[0].params["iterative_steps"],
            ParamValue::IntList(vec![0, 10])
        );
        assert_eq!(v[0].params["step_size"], ParamValue::Float(10.0));
        // BTreeMap order of toml tables: latent_update before step_size
        assert_eq!(v[0].label, "clora[latent_update=true, step_size=10]");
        assert_eq!(v[1].label, "clora[latent_update=true, step_size=20]");
        assert_eq!(v[3].label, "clora[latent_update=false, step_size=20]");
    }

    #[test]
    fn list_of_lists_sweeps_a_list_parameter() {
        let g =
            ParamGrid::parse(MethodKind::Clora, &table("iterative_steps = [[0, 10], []]")).unwrap();
        assert_eq!(g.swept(), vec!["iterative_steps".to_string()]);
        assert_eq!(g.expand("c")[1].label, "c[iterative_steps=[]]");
    }

    #[test]
    fn problems_name_the_parameter_and_the_expected_form() {
        let e = ParamGrid::parse(
            MethodKind::Clora,
            &table("step_size = \"big\"\nmask_threshold_alpha = [0.3, 1.5]\nfoo = 1\nmax_iter_to_alter = []"),
        )
        .unwrap_err();
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "foo",
                "mask_threshold_alpha[1]",
                "max_iter_to_alter",
                "step_size"
            ]
        );
        assert!(
            e[1].1
                .contains("expected a number in (0, 1), found the number 1.5"),
            "{}",
            e[1].1
        );
        assert!(e[2].1.contains("empty list"), "{}", e[2].1);
        assert!(e[3].1.contains("found the string \"big\""), "{}", e[3].1);
        let e = ParamGrid::parse(MethodKind::Base, &table("scale = 1")).unwrap_err();
        assert!(e[0].1.contains("takes no parameters"));
    }
}
