//! The experiment config: the shipped configs load, every kind of malformed config gets exactly one
//! clear error naming the file, the field and the expected form, includes merge, grids expand.

mod common;

use std::path::{Path, PathBuf};

use clora_harness::config::{self, ConfigError, MethodKind, ParamValue};
use common::{temp_dir, TempPath};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh folder with the files `(name, content)`.
fn folder(test: &str, files: &[(&str, &str)]) -> TempPath {
    let dir = temp_dir(&format!("config-{test}"));
    for (name, content) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    dir
}

const BASE: &str = r#"
seeds = [0, 1]
[model]
path = "model.safetensors"
[[loras]]
name = "cat"
path = "cat.safetensors"
trigger = "sks"
class_noun = "cat"
[[loras]]
name = "dog"
path = "dog.safetensors"
trigger = ["zwx"]
class_noun = "dog"
[[prompt_sets]]
name = "pairs"
prompts = ["a {cat} and a {dog}"]
[[methods]]
method = "base"
"#;

/// The base config with `extra` appended (and the files it names), loaded.
fn load_with(test: &str, extra: &str) -> Result<config::Experiment, ConfigError> {
    let text = format!("{BASE}{extra}");
    let dir = folder(
        test,
        &[
            ("exp.toml", &text),
            ("model.safetensors", "m"),
            ("cat.safetensors", "c"),
            ("dog.safetensors", "d"),
        ],
    );
    config::load(&dir.join("exp.toml"))
}

/// Asserts exactly one problem, whose message contains every one of `parts`.
fn one_error(r: Result<config::Experiment, ConfigError>, parts: &[&str]) -> String {
    let e = r.expect_err("the config should be rejected");
    let problems = e.problems();
    assert_eq!(problems.len(), 1, "expected one error, got:\n{e}");
    let msg = e.to_string();
    for p in parts {
        assert!(msg.contains(p), "error `{msg}` lacks `{p}`");
    }
    msg
}

#[test]
fn smoke_config_loads() {
    let e = config::load(&root().join("configs/smoke.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(e.name, "smoke");
    assert_eq!(e.seeds, vec![0, 1, 2, 3]);
    assert_eq!(e.prompt_sets[0].prompts.len(), 1);
    let kinds: Vec<MethodKind> = e.methods.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        vec![
            MethodKind::Base,
            MethodKind::Merge,
            MethodKind::Switch,
            MethodKind::Composite,
            MethodKind::Clora,
            MethodKind::Excite
        ]
    );
    assert_eq!(e.sampler.steps, 20);
    // the embedded toyworld model, its LoRAs and the oracle's metrics
    assert!(e.model.path.is_none());
    assert_eq!(e.loras.len(), 4);
    assert!(e.loras.iter().all(|l| l.path.is_file()));
    assert_eq!(e.metrics.scores[0], "toy_all_present");
}

#[test]
fn draft_configs_are_valid_but_for_missing_weight_files() {
    for name in [
        "ablation.toml",
        "toyworld-compare.toml",
        "toyworld-tune.toml",
        "toyworld-diagnose.toml",
        "toyworld-rings-place.toml",
        "toyworld-clora-scale.toml",
        "toyworld-excite.toml",
        "toyworld-companions.toml", // LoRAs trained among plain objects, in assets/toyworld/loras-companions
        "toyworld-branches.toml",
        "toyworld-branches-companions.toml", // the same LoRAs as toyworld-companions
        "toyworld-weights.toml",
        "toyworld-weights-companions.toml", // the same LoRAs as toyworld-companions
        "toyworld-compare-companions.toml", // the same LoRAs as toyworld-companions
        "toyworld-update-shift.toml",
        "paper-catdog.toml",
    ] {
        let path = root().join("configs").join(name);
        match config::load(&path) {
            Ok(_) => {}
            Err(e) => {
                for p in e.problems() {
                    let m = p.to_string();
                    assert!(
                        m.contains("no such file")
                            || m.contains("no such folder")
                            || m.contains("no such file or folder"),
                        "{name}: a problem other than a missing file: {m}"
                    );
                }
            }
        }
    }
}

#[test]
fn wrong_type_names_file_field_and_expected_form() {
    let m = one_error(
        load_with("wrongtype", "samples_per_prompt = \"two\"\n"),
        &["exp.toml", "samples_per_prompt", "expected"],
    );
    // `samples_per_prompt` after a table header belongs to the last table: put it at the top instead
    assert!(
        m.contains("invalid type") || m.contains("unknown field"),
        "{m}"
    );
    let dir = folder(
        "wrongtype2",
        &[("exp.toml", "samples_per_prompt = \"two\"\n")],
    );
    one_error(
        config::load(&dir.join("exp.toml")),
        &[
            "exp.toml",
            "field `samples_per_prompt`",
            "invalid type: string \"two\", expected usize",
            ":1:",
        ],
    );
}

#[test]
fn unknown_field_is_named_with_its_path() {
    one_error(
        load_with("unknown", "[sampler]\nstepz = 4\n"),
        &[
            "exp.toml",
            "sampler",
            "unknown field `stepz`",
            "expected one of",
            "`steps`",
        ],
    );
    one_error(
        load_with(
            "unknownparam",
            "[[methods]]\nname = \"c\"\nmethod = \"clora\"\nparams = { step_sise = 10 }\n",
        ),
        &[
            "exp.toml",
            "field `methods[1].params.step_sise`",
            "unknown parameter of method `clora`",
            "`step_size`",
        ],
    );
    one_error(
        load_with("unknownmethod", "[[methods]]\nmethod = \"clra\"\n"),
        &["methods[1].method", "unknown variant `clra`", "`clora`"],
    );
}

#[test]
fn missing_files_are_named() {
    one_error(
        load_with(
            "missinglora",
            "[[loras]]\nname = \"bird\"\npath = \"nope/bird.safetensors\"\nclass_noun = \"bird\"\n",
        ),
        &[
            "exp.toml",
            "field `loras[2].path`",
            "no such file",
            "nope/bird.safetensors",
        ],
    );
    one_error(
        load_with(
            "missingprompts",
            "[[prompt_sets]]\nname = \"more\"\nfile = \"prompts/none.toml\"\n",
        ),
        &[
            "field `prompt_sets[1].file`",
            "no such file",
            "prompts/none.toml",
        ],
    );
    one_error(
        load_with(
            "missingrefs",
            "[metrics]\nscores = [\"dino\"]\ndino_model = \"dino\"\n",
        ),
        &["metrics.dino_model", "no such folder"],
    );
    let dir = folder(
        "missinginclude",
        &[("exp.toml", "include = [\"shared.toml\"]\n")],
    );
    one_error(
        config::load(&dir.join("exp.toml")),
        &[
            "exp.toml",
            "field `include[0]`",
            "no such file",
            "shared.toml",
        ],
    );
    let e = config::load(Path::new("/nonexistent/exp.toml")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/exp.toml"), "{e}");
}

#[test]
fn empty_grids_are_rejected() {
    let dir = folder(
        "emptyseeds",
        &[
            ("exp.toml", &BASE.replace("seeds = [0, 1]", "seeds = []")),
            ("model.safetensors", ""),
            ("cat.safetensors", ""),
            ("dog.safetensors", ""),
        ],
    );
    one_error(
        config::load(&dir.join("exp.toml")),
        &["field `seeds`", "empty grid"],
    );
    one_error(
        load_with(
            "emptyaxis",
            "[[methods]]\nname = \"c\"\nmethod = \"clora\"\nparams = { step_size = [] }\n",
        ),
        &[
            "field `methods[1].params.step_size`",
            "empty list: a sweep axis needs at least one value",
        ],
    );
    one_error(
        load_with(
            "emptyprompts",
            "[[prompt_sets]]\nname = \"none\"\nprompts = []\n",
        ),
        &["prompt_sets[1].prompts", "empty list"],
    );
}

#[test]
fn value_errors_give_the_expected_form() {
    one_error(
        load_with("range", "[[methods]]\nname = \"c\"\nmethod = \"clora\"\nparams = { mask_threshold_alpha = [0.3, 1.2] }\n"),
        &["methods[1].params.mask_threshold_alpha[1]", "expected a number in (0, 1), found the number 1.2"],
    );
    one_error(
        load_with(
            "badtype",
            "[[methods]]\nname = \"c\"\nmethod = \"clora\"\nparams = { latent_update = \"yes\" }\n",
        ),
        &[
            "methods[1].params.latent_update",
            "expected true or false, found the string \"yes\"",
        ],
    );
    one_error(
        load_with(
            "template",
            "[[prompt_sets]]\nname = \"x\"\nprompts = [\"a {bird}\"]\n",
        ),
        &[
            "prompt_sets[1].prompts[0]",
            "`{bird}` names no LoRA",
            "\"cat\"",
        ],
    );
    one_error(
        load_with("fewconcepts", "[[prompt_sets]]\nname = \"one\"\nprompts = [\"a {cat}\"]\n[[methods]]\nmethod = \"clora\"\n"),
        &["methods[1]", "at least 2 LoRA(s)", "prompt_sets"],
    );
    one_error(
        load_with("dupname", "[[methods]]\nmethod = \"base\"\n"),
        &["methods[1].name", "used twice"],
    );
    one_error(
        load_with("size", "[sampler]\nwidth = 100\n"),
        &["sampler.width", "multiple of 8"],
    );
}

#[test]
fn several_problems_are_reported_one_line_each() {
    let e = load_with("many", "[sampler]\nsteps = 0\n[report]\nconfidence = 2.0\n").unwrap_err();
    assert_eq!(e.problems().len(), 2, "{e}");
    let s = e.to_string();
    assert!(
        s.contains("sampler.steps") && s.contains("report.confidence"),
        "{s}"
    );
}

#[test]
fn syntax_errors_give_the_line() {
    let dir = folder(
        "syntax",
        &[("exp.toml", "seeds = [0, 1]\n[model\npath = 1\n")],
    );
    let e = one_error(
        config::load(&dir.join("exp.toml")),
        &["exp.toml:2:", "not valid TOML"],
    );
    assert!(!e.contains("field"), "{e}");
}

#[test]
fn includes_merge_and_errors_name_the_included_file() {
    let dir = folder(
        "include",
        &[
            ("lib/loras.toml", "[[loras]]\nname = \"cat\"\npath = \"cat.safetensors\"\ntrigger = \"sks\"\nclass_noun = \"cat\"\n[sampler]\nsteps = 7\nguidance = 3.0\n"),
            ("lib/cat.safetensors", "c"),
            ("lib/prompts.toml", "prompts = [\"a {cat}\", { text = \"a {cat} on a sofa\", negative = \"blurry\" }]\n"),
            (
                "exp.toml",
                "include = [\"lib/loras.toml\"]\nseeds = { start = 10, count = 3 }\n[[prompt_sets]]\nname = \"p\"\nfile = \"lib/prompts.toml\"\n[[methods]]\nmethod = \"single\"\n[sampler]\nsteps = 9\n",
            ),
        ],
    );
    let e = config::load(&dir.join("exp.toml")).unwrap();
    assert_eq!(e.loras.len(), 1);
    assert!(e.loras[0].path.ends_with("lib/cat.safetensors"));
    assert_eq!(e.sampler.steps, 9, "the including file wins");
    assert_eq!(
        e.sampler.guidance, 3.0,
        "fields it does not set come from the include"
    );
    assert_eq!(e.seeds, vec![10, 11, 12]);
    assert_eq!(
        e.prompt_sets[0].prompts[1].negative.as_deref(),
        Some("blurry")
    );
    assert_eq!(e.files.len(), 2);

    let dir = folder(
        "includebad",
        &[
            (
                "shared.toml",
                "[[loras]]\nname = \"cat\"\npath = \"cat.safetensors\"\nweight = \"heavy\"\n",
            ),
            ("exp.toml", "include = [\"shared.toml\"]\n"),
        ],
    );
    one_error(
        config::load(&dir.join("exp.toml")),
        &["shared.toml", "loras[0].weight", "expected f64"],
    );

    let dir = folder(
        "cycle",
        &[
            ("a.toml", "include = [\"b.toml\"]\n"),
            ("b.toml", "include = [\"a.toml\"]\n"),
        ],
    );
    one_error(
        config::load(&dir.join("a.toml")),
        &["b.toml", "include[0]", "includes itself"],
    );
}

#[test]
fn lora_weights_name_loras_of_the_config_and_sweep_as_a_list_of_tables() {
    let e = load_with(
        "loraweights",
        "[[methods]]\nmethod = \"merge\"\nparams = { lora_weights = [{ dog = 1.5 }, { cat = 0.5, dog = 2 }] }\n",
    )
    .unwrap();
    let v = e.method("merge").unwrap().grid.expand("merge");
    let weights = |i: usize| match &v[i].params["lora_weights"] {
        ParamValue::LoraWeights(w) => w.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(v.len(), 2);
    assert_eq!(weights(0), [("dog".to_string(), 1.5)].into());
    assert_eq!(
        weights(1),
        [("cat".to_string(), 0.5), ("dog".to_string(), 2.0)].into()
    );
    assert_eq!(v[1].label, "merge[lora_weights={cat=0.5 dog=2}]");
    one_error(
        load_with(
            "loraweights-name",
            "[[methods]]\nmethod = \"merge\"\nparams = { lora_weights = { horse = 1.0 } }\n",
        ),
        &[
            "methods[1].params.lora_weights",
            "no LoRA is called \"horse\"",
            "\"cat\"",
        ],
    );
    one_error(
        load_with(
            "loraweights-value",
            "[[methods]]\nmethod = \"clora\"\nparams = { lora_weights = { cat = \"high\" } }\n",
        ),
        &[
            "methods[1].params.lora_weights",
            "the weight of LoRA \"cat\": expected a finite number, found the string \"high\"",
        ],
    );
    one_error(
        load_with(
            "loraweights-form",
            "[[methods]]\nmethod = \"composite\"\nparams = { lora_weights = 2.0 }\n",
        ),
        &[
            "methods[1].params.lora_weights",
            "expected a table of LoRA names to weights",
            "found the number 2",
        ],
    );
}

#[test]
fn grids_expand_to_the_cartesian_product() {
    let e = load_with(
        "grid",
        "[[methods]]\nname = \"sweep\"\nmethod = \"clora\"\n[methods.params]\nstep_size = [10, 20]\nmask_threshold_alpha = [0.3, 0.4, 0.5]\nlatent_update = [true, false]\niterative_steps = [[0, 10], []]\nmaps = \"cond\"\n",
    )
    .unwrap();
    let m = e.method("sweep").unwrap();
    assert_eq!(m.grid.len(), 2 * 3 * 2 * 2);
    let v = m.grid.expand(&m.name);
    assert_eq!(v.len(), 24);
    assert!(v
        .iter()
        .all(|x| x.params["maps"] == ParamValue::Str("cond".into())));
    let labels: std::collections::BTreeSet<&str> = v.iter().map(|x| x.label.as_str()).collect();
    assert_eq!(labels.len(), 24, "labels are unique");
    assert_eq!(
        v[0].swept,
        vec![
            "iterative_steps",
            "latent_update",
            "mask_threshold_alpha",
            "step_size"
        ]
    );
}

#[test]
fn clora_parameter_names_match_the_method() {
    // the CLoRA knobs of the schema (but the harness-level ones) are exactly the fields of CloraParams:
    // a table setting all of them deserializes (CloraParams denies unknown fields)
    use clora_harness::config::params::{ParamType, CLORA_HARNESS_PARAMS};
    use clora_harness::methods::clora::params::CloraParams;
    let mut t = toml::Table::new();
    for def in MethodKind::Clora.params() {
        if CLORA_HARNESS_PARAMS.contains(&def.name) {
            continue;
        }
        let value = match def.ty {
            ParamType::Bool => toml::Value::Boolean(true),
            ParamType::Int { min } => toml::Value::Integer(min.max(1)),
            ParamType::Float { .. } => toml::Value::Float(0.5),
            ParamType::Choice(c) => toml::Value::String(c[0].to_string()),
            ParamType::Lora => toml::Value::String("x".into()),
            ParamType::IntList { .. } => toml::Value::Array(vec![toml::Value::Integer(0)]),
            ParamType::LoraWeights => unreachable!("lora_weights is a harness-level parameter"),
        };
        t.insert(def.name.to_string(), value);
    }
    let r: Result<CloraParams, _> = toml::Value::Table(t).try_into();
    assert!(
        r.is_ok(),
        "CloraParams rejects the schema's CLoRA knobs: {}",
        r.unwrap_err()
    );
}

#[test]
fn baseline_parameter_names_match_the_methods() {
    // the knobs of single, merge, switch and composite (but the harness-level ones) are fields of MethodSpec
    use clora_harness::config::params::{ParamType, BASELINE_HARNESS_PARAMS};
    use clora_harness::methods::spec::MethodSpec;
    for kind in [
        MethodKind::Single,
        MethodKind::Merge,
        MethodKind::Switch,
        MethodKind::Composite,
    ] {
        let mut t = toml::Table::new();
        t.insert("method".into(), toml::Value::String(kind.as_str().into()));
        for def in kind
            .params()
            .iter()
            .filter(|d| !BASELINE_HARNESS_PARAMS.contains(&d.name))
        {
            let v = match def.ty {
                ParamType::Bool => toml::Value::Boolean(true),
                ParamType::Int { min } => toml::Value::Integer(min.max(1)),
                other => panic!("{kind}: no sample value for {other:?}"),
            };
            t.insert(def.name.to_string(), v);
        }
        let r: Result<MethodSpec, _> = toml::Value::Table(t).try_into();
        assert_eq!(
            r.map(|m| m.name()).map_err(|e| e.to_string()),
            Ok(kind.as_str()),
            "{kind}"
        );
    }
}

#[test]
fn hand_given_token_positions_come_in_pairs() {
    // mask positions without the loss's groups: rejected when the config is read, not by every CLoRA job
    let m = one_error(
        load_with(
            "maskonly",
            r#"[[prompt_sets]]
name = "by-hand"
prompts = [{ text = "a {cat} and a {dog}", mask_indices = [[], [3], [6]] }]
"#,
        ),
        &[
            "exp.toml",
            "prompt_sets[1].prompts[0].token_indices",
            "go together",
        ],
    );
    assert!(m.contains("missing"), "{m}");
    one_error(
        load_with(
            "groupsonly",
            r#"[[prompt_sets]]
name = "by-hand"
prompts = [{ text = "a {cat} and a {dog}", token_indices = [[[2], [2, 3], [2]], [[5], [6], [5, 6]]] }]
"#,
        ),
        &["prompt_sets[1].prompts[0].mask_indices", "go together"],
    );
    // both: accepted
    load_with(
        "both",
        r#"[[prompt_sets]]
name = "by-hand"
prompts = [{ text = "a {cat} and a {dog}", token_indices = [[[2], [2, 3], [2]], [[5], [6], [5, 6]]], mask_indices = [[], [3], [6]] }]
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
}
