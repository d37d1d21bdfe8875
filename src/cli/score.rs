//! `harness score`: ad-hoc CLIP / DINO scores of a folder of images against a prompt and reference folders.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use clora_harness::metrics::image_io::{has_image_extension, list_images};
use clora_harness::metrics::{
    clip_t_prompt, ConceptRefs, ImageQuery, MetricsConfig, Scorer, Trigger,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One row per score: image, metric, scope, value, model (tab-separated, with a header).
    Tsv,
    /// One JSON object per image (JSON lines), with every score and the model ids.
    Json,
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Images to score: a folder (its .png/.jpg files) or one image file.
    #[arg(long)]
    pub images: PathBuf,
    /// CLIP-T text (the generation prompt; trigger words given with --trigger are replaced by class nouns).
    #[arg(long)]
    pub text: Option<String>,
    /// Trigger word and its class noun, `WORD=NOUN` (repeatable), applied to --text.
    #[arg(long = "trigger", value_name = "WORD=NOUN")]
    pub triggers: Vec<String>,
    /// Reference folders, one per concept: `DIR` (the concept is named after the folder) or `NAME=DIR`.
    #[arg(long, num_args = 1..)]
    pub refs: Vec<String>,
    /// CLIP model folder (transformers CLIPModel: config.json, model.safetensors, preprocessor_config.json,
    /// tokenizer files).
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// DINO model folder: ViTModel (DINO v1, e.g. dino-vits16) or Dinov2Model.
    #[arg(long)]
    pub dino: Option<PathBuf>,
    /// Cache embeddings on disk here (reference images are then embedded once ever, not once per run).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "tsv")]
    pub format: Format,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn concept_refs(spec: &str) -> Result<ConceptRefs> {
    let (name, dir) = match spec.split_once('=') {
        Some((n, d)) if !n.is_empty() && !Path::new(spec).exists() => {
            (n.to_string(), PathBuf::from(d))
        }
        _ => {
            let dir = PathBuf::from(spec);
            let name = dir
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| spec.to_string());
            (name, dir)
        }
    };
    Ok(ConceptRefs {
        name,
        ref_dir: dir,
        ref_files: Vec::new(),
    })
}

pub fn run(args: ScoreArgs) -> Result<()> {
    if args.clip.is_none() && args.dino.is_none() {
        bail!("give at least one of --clip and --dino");
    }
    if args.text.is_some() && args.clip.is_none() {
        bail!("--text (CLIP-T) needs --clip");
    }
    if args.text.is_none() && args.refs.is_empty() {
        bail!("nothing to score: give --text and/or --refs");
    }
    let triggers = args
        .triggers
        .iter()
        .map(|t| Trigger::parse(t).with_context(|| format!("--trigger {t:?}: expected WORD=NOUN")))
        .collect::<Result<Vec<_>>>()?;
    let concepts = args
        .refs
        .iter()
        .map(|r| concept_refs(r))
        .collect::<Result<Vec<_>>>()?;
    let images = if args.images.is_file() && has_image_extension(&args.images) {
        vec![args.images.clone()]
    } else {
        list_images(&args.images)?
    };
    let query = ImageQuery {
        prompt_for_clip_t: args.text.as_deref().map(|t| clip_t_prompt(t, &triggers)),
        concepts,
    };

    let scorer = Scorer::new(MetricsConfig {
        clip: args.clip.clone(),
        dino: args.dino.clone(),
        cache_dir: args.cache_dir.clone(),
        batch_size: args.batch_size,
        ..MetricsConfig::default()
    })?;
    let start = std::time::Instant::now();
    let items: Vec<(PathBuf, ImageQuery)> =
        images.iter().map(|p| (p.clone(), query.clone())).collect();
    let scores = scorer.score_images(&items)?;

    let mut out: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    match args.format {
        Format::Tsv => {
            writeln!(out, "image\tmetric\tscope\tvalue\tmodel")?;
            for s in &scores {
                for row in s.rows() {
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{:.6}\t{}",
                        s.image.display(),
                        row.metric.as_str(),
                        row.scope,
                        row.value,
                        row.model_id
                    )?;
                }
            }
        }
        Format::Json => {
            for s in &scores {
                writeln!(out, "{}", serde_json::to_string(s)?)?;
            }
        }
    }
    out.flush()?;
    let stats = scorer.cache_stats();
    eprintln!(
        "scored {} image(s) in {:.2}s; embeddings: {} computed, {} from memory, {} from disk",
        scores.len(),
        start.elapsed().as_secs_f64(),
        stats.computed,
        stats.memory_hits,
        stats.disk_hits
    );
    if let Some(t) = &query.prompt_for_clip_t {
        eprintln!("CLIP-T text: {t:?}");
    }
    Ok(())
}
