//! From merged raw files to a validated [`Experiment`]: paths resolved and checked, names unique, prompt
//! templates parsed against the LoRAs, parameter grids parsed, defaults applied. Every problem found
//! becomes one error line naming its file and field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::experiment::*;
use super::load::{last, parse_file, resolve, Merged, Sourced};
use super::params::{ParamType, ParamValue};
use super::prompt::{valid_name, Template};
use super::raw::*;
use super::sweep::ParamGrid;
use crate::schedulers::SchedulerKind;

/// Image file extensions accepted as reference images.
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "bmp"];

struct Problems(Vec<ConfigError>);

impl Problems {
    fn add(&mut self, file: &Path, field: impl Into<String>, msg: impl Into<String>) {
        self.0.push(ConfigError::field(file, field, msg));
    }
}

/// Validates a merged config.
pub fn validate(m: Merged) -> Result<Experiment, ConfigError> {
    let mut p = Problems(Vec::new());
    let main = m.main.clone();

    // run name
    let name = match &m.run_name {
        Some(s) => {
            if !valid_name(&s.value) && !s.value.contains('.') {
                p.add(
                    &s.file,
                    &s.field,
                    format!(
                        "\"{}\" is not a folder name: expected letters, digits, `_`, `-` or `.`",
                        s.value
                    ),
                );
            }
            s.value.clone()
        }
        None => main
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into()),
    };

    // model
    let model_path = m
        .model_path
        .as_ref()
        .and_then(|s| existing(&mut p, s, Kind::FileOrDir));
    let config_dir = m
        .model_config_dir
        .as_ref()
        .and_then(|s| existing(&mut p, s, Kind::Dir));
    let model = ModelSpec {
        path: model_path,
        config_dir,
        dtype: m
            .model_dtype
            .as_ref()
            .map(|s| s.value)
            .unwrap_or(RunDtype::F32),
    };

    // LoRAs
    let mut loras: Vec<LoraSpec> = Vec::new();
    for s in &m.loras {
        let l = &s.value;
        let f = &s.field;
        if !valid_name(&l.name) {
            p.add(&s.file, format!("{f}.name"), format!("\"{}\" is not a LoRA name: expected letters, digits, `_` and `-` (it is written `{{name}}` in prompts)", l.name));
        } else if loras.iter().any(|o| o.name == l.name) {
            p.add(
                &s.file,
                format!("{f}.name"),
                format!("the LoRA name \"{}\" is used twice", l.name),
            );
        }
        let path = existing(
            &mut p,
            &Sourced {
                value: l.path.clone(),
                file: s.file.clone(),
                field: format!("{f}.path"),
            },
            Kind::File,
        )
        .unwrap_or_else(|| resolve(s.dir(), &l.path));
        let triggers = l.trigger.clone().map(|t| t.0).unwrap_or_default();
        for (i, t) in triggers.iter().enumerate() {
            if t.trim().is_empty() {
                p.add(
                    &s.file,
                    format!("{f}.trigger[{i}]"),
                    "empty trigger word: expected a non-empty string",
                );
            }
        }
        if let Some(c) = &l.class_noun {
            if c.trim().is_empty() {
                p.add(
                    &s.file,
                    format!("{f}.class_noun"),
                    "empty: expected the class noun, e.g. \"cat\"",
                );
            }
        }
        let mut references = Vec::new();
        for (i, r) in l
            .references
            .clone()
            .map(|r| r.0)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let field = format!("{f}.references[{i}]");
            let rp = resolve(s.dir(), r);
            if rp.is_dir() {
                match image_files(&rp) {
                    Ok(v) if v.is_empty() => p.add(
                        &s.file,
                        field,
                        format!(
                            "the folder {} holds no images (expected {})",
                            rp.display(),
                            IMAGE_EXTENSIONS.join(", ")
                        ),
                    ),
                    Ok(v) => references.extend(v),
                    Err(e) => p.add(&s.file, field, format!("cannot list {}: {e}", rp.display())),
                }
            } else if rp.is_file() {
                references.push(rp);
            } else {
                p.add(
                    &s.file,
                    field,
                    format!(
                        "no such file or folder: {} (expected an image or a folder of images)",
                        rp.display()
                    ),
                );
            }
        }
        let weight = l.weight.unwrap_or(1.0);
        if !weight.is_finite() {
            p.add(&s.file, format!("{f}.weight"), "expected a finite number");
        }
        loras.push(LoraSpec {
            name: l.name.clone(),
            path,
            triggers,
            class_noun: l.class_noun.clone(),
            references,
            weight,
        });
    }

    // prompt sets
    let mut prompt_sets: Vec<PromptSet> = Vec::new();
    if m.prompt_sets.is_empty() {
        p.add(&main, "prompt_sets", "missing: expected at least one [[prompt_sets]] with `prompts = [...]` or `file = \"...\"`");
    }
    for s in &m.prompt_sets {
        let ps = &s.value;
        let f = &s.field;
        if ps.name.trim().is_empty() {
            p.add(&s.file, format!("{f}.name"), "empty: expected a name");
        } else if prompt_sets.iter().any(|o| o.name == ps.name) {
            p.add(
                &s.file,
                format!("{f}.name"),
                format!("the prompt set name \"{}\" is used twice", ps.name),
            );
        }
        let (raw_prompts, source, base_field): (Vec<RawPrompt>, PathBuf, String) =
            match (&ps.prompts, &ps.file) {
                (Some(_), Some(_)) => {
                    p.add(
                        &s.file,
                        f.clone(),
                        "both `prompts` and `file` given: expected one of them",
                    );
                    continue;
                }
                (None, None) => {
                    p.add(
                        &s.file,
                        f.clone(),
                        "expected `prompts = [...]` or `file = \"...\"`",
                    );
                    continue;
                }
                (Some(_), None) => {
                    let Some(v) = s.value.prompts.as_ref() else {
                        continue;
                    };
                    (
                        v.iter().map(clone_prompt).collect(),
                        s.file.clone(),
                        format!("{f}.prompts"),
                    )
                }
                (None, Some(file)) => {
                    let path = resolve(s.dir(), file);
                    if !path.is_file() {
                        p.add(
                            &s.file,
                            format!("{f}.file"),
                            format!(
                                "no such file: {} (expected a TOML file with `prompts = [...]`)",
                                path.display()
                            ),
                        );
                        continue;
                    }
                    match parse_file::<RawPromptFile>(&path) {
                        Ok(pf) => (pf.prompts, path, "prompts".to_string()),
                        Err(e) => {
                            p.0.push(e);
                            continue;
                        }
                    }
                }
            };
        if raw_prompts.is_empty() {
            p.add(
                &source,
                base_field.clone(),
                "empty list: expected at least one prompt",
            );
        }
        let mut prompts = Vec::new();
        for (j, rp) in raw_prompts.into_iter().enumerate() {
            let field = format!("{base_field}[{j}]");
            let spec = match rp {
                RawPrompt::Text(t) => PromptSpec {
                    text: t,
                    negative: None,
                    branches: BTreeMap::new(),
                    token_indices: None,
                    mask_indices: None,
                },
                RawPrompt::Table(t) => PromptSpec {
                    text: t.text,
                    negative: t.negative,
                    branches: t.branches.unwrap_or_default(),
                    token_indices: t.token_indices,
                    mask_indices: t.mask_indices,
                },
            };
            check_prompt(&mut p, &source, &field, &spec, &loras);
            prompts.push(spec);
        }
        prompt_sets.push(PromptSet {
            name: ps.name.clone(),
            source,
            prompts,
        });
    }

    // methods
    let mut methods: Vec<MethodEntry> = Vec::new();
    if m.methods.is_empty() {
        p.add(
            &main,
            "methods",
            "missing: expected at least one [[methods]] entry, e.g. { method = \"base\" }",
        );
    }
    for s in &m.methods {
        let r = &s.value;
        let f = &s.field;
        let name = r
            .name
            .clone()
            .unwrap_or_else(|| r.method.as_str().to_string());
        if name.trim().is_empty() || name.contains(['[', ']', '|']) {
            p.add(&s.file, format!("{f}.name"), format!("\"{name}\" is not a method label: expected a non-empty name without `[`, `]` or `|`"));
        } else if methods.iter().any(|o| o.name == name) {
            p.add(
                &s.file,
                format!("{f}.name"),
                format!("the method name \"{name}\" is used twice: give each entry of the same method its own `name`"),
            );
        }
        let grid =
            match ParamGrid::parse(r.method, r.params.as_ref().unwrap_or(&toml::Table::new())) {
                Ok(g) => g,
                Err(problems) => {
                    for (k, msg) in problems {
                        p.add(&s.file, format!("{f}.params.{k}"), msg);
                    }
                    ParamGrid::default()
                }
            };
        // LoRA-valued parameters (and the keys of `lora_weights`) must name LoRAs of the config
        for axis in &grid.axes {
            let lora_valued = r
                .method
                .params()
                .iter()
                .any(|d| d.name == axis.name && d.ty == ParamType::Lora);
            for v in &axis.values {
                let named: Vec<&String> = match v {
                    ParamValue::Str(n) if lora_valued => vec![n],
                    ParamValue::LoraWeights(w) => w.keys().collect(),
                    _ => Vec::new(),
                };
                for n in named {
                    if !loras.iter().any(|l| &l.name == n) {
                        p.add(
                            &s.file,
                            format!("{f}.params.{}", axis.name),
                            format!(
                                "no LoRA is called \"{n}\" (expected one of: {})",
                                lora_names(&loras)
                            ),
                        );
                    }
                }
            }
        }
        if let Some(sets) = &r.prompt_sets {
            if sets.is_empty() {
                p.add(
                    &s.file,
                    format!("{f}.prompt_sets"),
                    "empty list: leave it out to run on every prompt set",
                );
            }
            for (i, n) in sets.iter().enumerate() {
                if !prompt_sets.iter().any(|ps| &ps.name == n) {
                    p.add(
                        &s.file,
                        format!("{f}.prompt_sets[{i}]"),
                        format!("no prompt set is called \"{n}\""),
                    );
                }
            }
        }
        // every prompt the method runs on must name enough LoRAs
        let need = r.method.min_concepts();
        for ps in prompt_sets
            .iter()
            .filter(|ps| r.prompt_sets.as_ref().is_none_or(|v| v.contains(&ps.name)))
        {
            if let Some((j, n)) = ps
                .prompts
                .iter()
                .enumerate()
                .map(|(j, pr)| {
                    (
                        j,
                        Template::parse(&pr.text)
                            .map(|t| t.concepts().len())
                            .unwrap_or(need),
                    )
                })
                .find(|&(_, n)| n < need)
            {
                p.add(
                    &s.file,
                    f.clone(),
                    format!(
                        "method `{}` needs prompts that name at least {need} LoRA(s) as `{{name}}`, but prompt {j} of set \"{}\" names {n}; restrict the entry with `prompt_sets = [...]`",
                        r.method, ps.name
                    ),
                );
                break;
            }
        }
        methods.push(MethodEntry {
            name,
            kind: r.method,
            grid,
            prompt_sets: r.prompt_sets.clone(),
        });
    }

    // seeds and samples
    let seeds = match &m.seeds {
        None => {
            p.add(&main, "seeds", "missing: expected a list of seeds, e.g. `seeds = [0, 1]`, or `seeds = { start = 0, count = 32 }`");
            Vec::new()
        }
        Some(s) => {
            let v: Vec<u64> = match &s.value {
                RawSeeds::List(v) => v.clone(),
                RawSeeds::Range(r) => (0..r.count as u64)
                    .map(|i| r.start.wrapping_add(i))
                    .collect(),
            };
            if v.is_empty() {
                p.add(&s.file, "seeds", "empty grid: expected at least one seed");
            }
            let mut seen = BTreeSet::new();
            for (i, x) in v.iter().enumerate() {
                if !seen.insert(*x) {
                    p.add(
                        &s.file,
                        format!("seeds[{i}]"),
                        format!("the seed {x} is listed twice"),
                    );
                }
            }
            v
        }
    };
    let samples_per_prompt = match &m.samples_per_prompt {
        Some(s) if s.value == 0 => {
            p.add(
                &s.file,
                "samples_per_prompt",
                "expected an integer >= 1, found 0",
            );
            1
        }
        Some(s) => s.value,
        None => 1,
    };

    // sampler
    let sampler = SamplerSpec {
        scheduler: last(&m.sampler, |s| s.scheduler)
            .map(|x| x.0)
            .unwrap_or(SchedulerKind::Ddim),
        steps: match last(&m.sampler, |s| s.steps) {
            Some((0, f)) => {
                p.add(f, "sampler.steps", "expected an integer >= 1, found 0");
                1
            }
            Some((n, _)) => n,
            None => 50,
        },
        guidance: match last(&m.sampler, |s| s.guidance) {
            Some((g, f)) if !g.is_finite() || g < 0.0 => {
                p.add(
                    f,
                    "sampler.guidance",
                    format!("expected a finite number >= 0, found {g}"),
                );
                7.5
            }
            Some((g, _)) => g,
            None => 7.5,
        },
        width: size(&mut p, last(&m.sampler, |s| s.width), "sampler.width"),
        height: size(&mut p, last(&m.sampler, |s| s.height), "sampler.height"),
        negative_prompt: last(&m.sampler, |s| s.negative_prompt.clone())
            .map(|x| x.0)
            .unwrap_or_default(),
        clip_skip: last(&m.sampler, |s| s.clip_skip).map(|x| x.0),
    };

    // metrics
    let metric_dir = |p: &mut Problems,
                      get: &dyn Fn(&RawMetrics) -> Option<String>,
                      field: &str|
     -> Option<PathBuf> {
        let layer = m.metrics.iter().rev().find(|l| get(&l.value).is_some())?;
        let s = Sourced {
            value: get(&layer.value)?,
            file: layer.file.clone(),
            field: field.to_string(),
        };
        existing(p, &s, Kind::Dir)
    };
    let clip_model = metric_dir(&mut p, &|r| r.clip_model.clone(), "metrics.clip_model");
    let dino_model = metric_dir(&mut p, &|r| r.dino_model.clone(), "metrics.dino_model");
    let scores = match last(&m.metrics, |s| s.scores.clone()) {
        Some((v, f)) => {
            let mut seen = BTreeSet::new();
            for (i, name) in v.iter().enumerate() {
                let field = format!("metrics.scores[{i}]");
                match KNOWN_METRICS.iter().find(|(n, _)| n == name) {
                    None => p.add(
                        f,
                        field,
                        format!(
                            "unknown metric \"{name}\": expected one of {}",
                            KNOWN_METRICS
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                    Some((_, Some(needs))) => {
                        // set at all (a wrong path is reported once, at the path)
                        let have = if *needs == "clip_model" {
                            last(&m.metrics, |r| r.clip_model.clone()).is_some()
                        } else {
                            last(&m.metrics, |r| r.dino_model.clone()).is_some()
                        };
                        if !have {
                            p.add(f, field, format!("metric \"{name}\" needs `metrics.{needs}` (a model folder in HF layout)"));
                        }
                    }
                    Some(_) => {}
                }
                if !seen.insert(name.clone()) {
                    p.add(
                        f,
                        format!("metrics.scores[{i}]"),
                        format!("\"{name}\" is listed twice"),
                    );
                }
            }
            v
        }
        None => Vec::new(),
    };
    let batch_size = match last(&m.metrics, |s| s.batch_size) {
        Some((0, f)) => {
            p.add(f, "metrics.batch_size", "expected an integer >= 1, found 0");
            1
        }
        Some((n, _)) => n,
        None => 8,
    };
    let metrics = MetricsSpec {
        scores,
        clip_model,
        dino_model,
        batch_size,
    };

    // report
    let grid_seed = match last(&m.report, |r| r.grid_seed) {
        Some((g, f)) => {
            if !seeds.is_empty() && !seeds.contains(&g) {
                p.add(
                    f,
                    "report.grid_seed",
                    format!("the seed {g} is not among `seeds`"),
                );
            }
            Some(g)
        }
        None => None,
    };
    let trade_off = match last(&m.report, |r| r.trade_off.clone()) {
        Some((v, f)) if v.len() != 2 => {
            p.add(
                f,
                "report.trade_off",
                format!(
                    "expected two metric names [x, y], found {} name(s)",
                    v.len()
                ),
            );
            ("clip_t".to_string(), "dino".to_string())
        }
        Some((v, _)) => (v[0].clone(), v[1].clone()),
        None => ("clip_t".to_string(), "dino".to_string()),
    };
    let confidence = match last(&m.report, |r| r.confidence) {
        Some((c, f)) if !(c > 0.0 && c < 1.0) => {
            p.add(
                f,
                "report.confidence",
                format!("expected a number in (0, 1), found {c}"),
            );
            0.95
        }
        Some((c, _)) => c,
        None => 0.95,
    };
    let report = ReportSpec {
        metrics: last(&m.report, |r| r.metrics.clone())
            .map(|x| x.0)
            .unwrap_or_default(),
        grid_seed,
        trade_off,
        confidence,
    };

    if let Some(e) = ConfigError::from_list(p.0) {
        return Err(e);
    }
    Ok(Experiment {
        file: main,
        files: m.files,
        name,
        model,
        loras,
        prompt_sets,
        methods,
        seeds,
        samples_per_prompt,
        sampler,
        metrics,
        report,
    })
}

fn clone_prompt(p: &RawPrompt) -> RawPrompt {
    match p {
        RawPrompt::Text(t) => RawPrompt::Text(t.clone()),
        RawPrompt::Table(t) => RawPrompt::Table(RawPromptTable {
            text: t.text.clone(),
            negative: t.negative.clone(),
            branches: t.branches.clone(),
            token_indices: t.token_indices.clone(),
            mask_indices: t.mask_indices.clone(),
        }),
    }
}

fn lora_names(loras: &[LoraSpec]) -> String {
    if loras.is_empty() {
        "none are defined; add [[loras]] entries".into()
    } else {
        loras
            .iter()
            .map(|l| format!("\"{}\"", l.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn check_prompt(p: &mut Problems, file: &Path, field: &str, spec: &PromptSpec, loras: &[LoraSpec]) {
    let t = match Template::parse(&spec.text) {
        Ok(t) => t,
        Err(msg) => {
            p.add(file, field, msg);
            return;
        }
    };
    if spec.text.trim().is_empty() {
        p.add(file, field, "empty prompt");
    }
    let concepts = t.concepts();
    for c in &concepts {
        match loras.iter().find(|l| &l.name == c) {
            None => p.add(file, field, format!("`{{{c}}}` names no LoRA (expected one of: {})", lora_names(loras))),
            Some(l) if l.class_noun.is_none() => p.add(
                file,
                field,
                format!("`{{{c}}}`: LoRA \"{c}\" has no `class_noun`, which a prompt needs to name its concept"),
            ),
            Some(_) => {}
        }
    }
    for k in spec.branches.keys() {
        if !concepts.contains(k) {
            p.add(file, format!("{field}.branches.{k}"), format!("the template does not name `{{{k}}}`; branches are keyed by the LoRAs it names"));
        }
    }
    let n = concepts.len();
    if let Some(g) = &spec.token_indices {
        if g.len() != n || g.iter().any(|per| per.len() != n + 1) {
            p.add(
                file,
                format!("{field}.token_indices"),
                format!("expected {n} group(s) (one per LoRA named), each with {} lists of token positions (base prompt, then one per LoRA branch)", n + 1),
            );
        }
    }
    if let Some(mi) = &spec.mask_indices {
        if mi.len() != n + 1 {
            p.add(
                file,
                format!("{field}.mask_indices"),
                format!(
                    "expected {} lists (base prompt, then one per LoRA branch), found {}",
                    n + 1,
                    mi.len()
                ),
            );
        }
    }
    const PAIR: &str = "missing: `token_indices` and `mask_indices` go together (give both, or neither to have them found from the words)";
    match (&spec.token_indices, &spec.mask_indices) {
        (Some(_), None) => p.add(file, format!("{field}.mask_indices"), PAIR),
        (None, Some(_)) => p.add(file, format!("{field}.token_indices"), PAIR),
        _ => {}
    }
}

#[derive(Clone, Copy)]
enum Kind {
    File,
    Dir,
    FileOrDir,
}

/// The path of `s` resolved against its file's directory, if it exists as `kind`; else a problem.
fn existing(p: &mut Problems, s: &Sourced<String>, kind: Kind) -> Option<PathBuf> {
    let path = resolve(s.dir(), &s.value);
    let ok = match kind {
        Kind::File => path.is_file(),
        Kind::Dir => path.is_dir(),
        Kind::FileOrDir => path.exists(),
    };
    if ok {
        Some(path)
    } else {
        let what = match kind {
            Kind::File => "file",
            Kind::Dir => "folder",
            Kind::FileOrDir => "file or folder",
        };
        p.add(
            &s.file,
            &s.field,
            format!(
                "no such {what}: {} (relative paths are relative to this file)",
                path.display()
            ),
        );
        None
    }
}

fn size(p: &mut Problems, v: Option<(usize, &Path)>, field: &str) -> Option<usize> {
    match v {
        Some((n, f)) if n == 0 || n % 8 != 0 => {
            p.add(
                f,
                field,
                format!("expected a positive multiple of 8 pixels, found {n}"),
            );
            None
        }
        Some((n, _)) => Some(n),
        None => None,
    }
}

/// The image files of a folder, sorted by name.
fn image_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    v.sort();
    Ok(v)
}
