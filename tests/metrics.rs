//! CLIP / DINO metrics against transformers references (tests/fixtures/metrics, made by
//! tools/fixtures/make_metric_fixtures.py): image decoding and preprocessing bit-exact on real photos, encoder
//! embeddings within 1e-4, scores, cache, batching and bad-input errors.

use std::path::{Path, PathBuf};

use candle::Device;
use serde_json::Value;
use sha2::{Digest, Sha256};

use clora_harness::metrics::encoder::{ClipEncoder, DinoEncoder, ImageEncoder};
use clora_harness::metrics::image_io::{hex, read_rgb, RgbImage};
use clora_harness::metrics::model_folder::{ModelFolder, ModelKind};
use clora_harness::metrics::preprocess::ImageProcessorConfig;
use clora_harness::metrics::{
    clip_t_prompt, ConceptRefs, ImageQuery, MetricsConfig, Scorer, Trigger,
};
use clora_harness::models::config_json::JsonConfig;
use clora_harness::models::weights::WeightStore;

const EMBED_TOL: f32 = 1e-4;
/// Largest per-value difference allowed between our JPEG decoder and libjpeg-turbo (measured: see the test).
const JPEG_MAX_LEVEL_DIFF: i32 = 8;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/metrics")
}

fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

/// Photos live in assets/photos, derived images in the fixture folder.
fn image_path(name: &str) -> PathBuf {
    let photo = root().join("assets/photos").join(name);
    if photo.exists() {
        photo
    } else {
        fixtures().join("images").join(name)
    }
}

/// For a JPEG fixture: the PNG holding PIL's (libjpeg-turbo's) decode of it.
fn pil_decoded_png(name: &str) -> Option<PathBuf> {
    let doc = json(&fixtures().join("images.json"));
    doc["jpeg_pil_decoded"][name]
        .as_str()
        .map(|png| fixtures().join("images").join(png))
}

/// The pixels transformers starts from: our decode for PNGs (equal to PIL's, see `decoded_pixels_equal_pil`),
/// PIL's decode for JPEGs (whose decoders differ by a level here and there, see `jpeg_decoder_difference`).
fn reference_rgb(name: &str) -> RgbImage {
    read_rgb(&pil_decoded_png(name).unwrap_or_else(|| image_path(name))).unwrap()
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sha(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn processor(name: &str) -> ImageProcessorConfig {
    let doc = json(&fixtures().join("preprocess.json"));
    let cfg = &doc["processors"][name];
    let text = serde_json::to_string(cfg).unwrap();
    ImageProcessorConfig::from_json(&JsonConfig::from_str(&text, Path::new(name)).unwrap()).unwrap()
}

fn reference(dir: &Path, key: &str) -> (Vec<f32>, Vec<usize>) {
    WeightStore::open(&[dir.join("reference.safetensors")])
        .unwrap()
        .read_f32(key)
        .unwrap()
}

/// Max abs difference per row between rows and a flat reference of the same shape.
fn row_diffs(rows: &[Vec<f32>], reference: &(Vec<f32>, Vec<usize>)) -> Vec<f32> {
    assert_eq!(vec![rows.len(), rows[0].len()], reference.1, "shape");
    let d = rows[0].len();
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            r.iter()
                .zip(&reference.0[i * d..(i + 1) * d])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        })
        .collect()
}

/// Max abs difference between rows and a flat reference of the same shape.
fn max_diff(rows: &[Vec<f32>], reference: &(Vec<f32>, Vec<usize>)) -> f32 {
    let d = row_diffs(rows, reference);
    println!(
        "  per row: {:?}",
        d.iter().map(|e| format!("{e:.1e}")).collect::<Vec<_>>()
    );
    d.into_iter().fold(0f32, f32::max)
}

fn open_clip(name: &str) -> ClipEncoder {
    let folder = ModelFolder::open(&model_dir(name), &[ModelKind::Clip], "test").unwrap();
    let digest = folder.content_digest().unwrap();
    ClipEncoder::load(&folder, &digest, &Device::Cpu).unwrap()
}

fn open_dino(name: &str) -> DinoEncoder {
    let folder = ModelFolder::open(
        &model_dir(name),
        &[ModelKind::DinoV1, ModelKind::DinoV2],
        "test",
    )
    .unwrap();
    let digest = folder.content_digest().unwrap();
    DinoEncoder::load(&folder, &digest, &Device::Cpu).unwrap()
}

// ------------------------------------------------------------------------------------------------ decoding

#[test]
fn decoded_pixels_equal_pil() {
    let doc = json(&fixtures().join("preprocess.json"));
    let decoded = doc["decoded"].as_object().unwrap();
    let mut png = 0;
    for (name, want) in decoded {
        let sha_want = want["rgb_sha256"].as_str().unwrap();
        let img = read_rgb(&image_path(name)).unwrap();
        let size = [img.width as u64, img.height as u64];
        assert_eq!(want["size"], serde_json::json!(size), "{name}: size");
        match pil_decoded_png(name) {
            // JPEG: the stored PIL decode is what the references were computed from
            Some(p) => assert_eq!(
                sha(&read_rgb(&p).unwrap().data),
                sha_want,
                "{name}: stored PIL decode"
            ),
            None => {
                assert_eq!(
                    sha(&img.data),
                    sha_want,
                    "{name}: RGB pixels differ from PIL's"
                );
                png += 1;
            }
        }
    }
    assert!(png >= 12);
    println!("{png} PNG images (RGB, RGBA, gray, gray+alpha, palette, 16-bit) decode exactly as PIL decodes them");
}

#[test]
fn jpeg_decoder_difference() {
    // zune-jpeg (pure Rust) vs libjpeg-turbo (PIL): the IDCT and colour conversion round differently
    for name in ["rocket.jpg", "coffee_420.jpg"] {
        let ours = read_rgb(&image_path(name)).unwrap();
        let pil = read_rgb(&pil_decoded_png(name).unwrap()).unwrap();
        assert_eq!((ours.width, ours.height), (pil.width, pil.height));
        let diffs: Vec<i32> = ours
            .data
            .iter()
            .zip(&pil.data)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .collect();
        let n = diffs.iter().filter(|&&d| d > 0).count();
        let max = diffs.iter().copied().max().unwrap_or(0);
        let mean = diffs.iter().map(|&d| d as f64).sum::<f64>() / diffs.len() as f64;
        println!(
            "{name}: {n} of {} values differ from PIL's decode ({:.2}%), max |diff| {max}, mean |diff| {mean:.4}",
            diffs.len(),
            100.0 * n as f64 / diffs.len() as f64
        );
        assert!(
            max <= JPEG_MAX_LEVEL_DIFF,
            "{name}: JPEG decode differs from PIL by {max} levels"
        );
    }
}

// ------------------------------------------------------------------------------------------------ preprocessing

#[test]
fn preprocessing_is_bit_exact_against_transformers() {
    let doc = json(&fixtures().join("preprocess.json"));
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 60);
    let mut by_processor = std::collections::BTreeMap::<String, usize>::new();
    let mut failures = Vec::new();
    for case in cases {
        let pname = case["processor"].as_str().unwrap();
        let iname = case["image"].as_str().unwrap();
        let p = processor(pname);
        let img = reference_rgb(iname);
        let u8_img = p.resize_and_crop(&img).unwrap();
        if let Some(png) = case.get("u8_png").and_then(|v| v.as_str()) {
            // located comparison, so a failure says how far off
            let want = read_rgb(&fixtures().join("preprocess").join(png)).unwrap();
            if (u8_img.width, u8_img.height) != (want.width, want.height) {
                failures.push(format!(
                    "{pname}/{iname}: size {}x{}",
                    u8_img.width, u8_img.height
                ));
                continue;
            }
            let bad = u8_img
                .data
                .iter()
                .zip(&want.data)
                .filter(|(a, b)| a != b)
                .count();
            let worst = u8_img
                .data
                .iter()
                .zip(&want.data)
                .map(|(a, b)| (*a as i32 - *b as i32).abs())
                .max()
                .unwrap_or(0);
            if bad > 0 {
                failures.push(format!(
                    "{pname}/{iname}: {bad} bytes differ (max |diff| {worst})"
                ));
                continue;
            }
        }
        if sha(&u8_img.data) != case["u8_sha256"].as_str().unwrap() {
            failures.push(format!("{pname}/{iname}: uint8 after resize+crop differs"));
            continue;
        }
        let pv = p.to_pixel_values(&u8_img);
        let shape: Vec<u64> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(
            [3, pv.height, pv.width].map(|v| v as u64).to_vec(),
            shape,
            "{pname}/{iname}: shape"
        );
        assert_eq!(
            p.output_size(img.width, img.height),
            (pv.height, pv.width),
            "{pname}/{iname}: output_size"
        );
        if sha(&f32_bytes(&pv.data)) != case["f32_sha256"].as_str().unwrap() {
            failures.push(format!("{pname}/{iname}: float32 pixel_values differ"));
            continue;
        }
        *by_processor.entry(pname.to_string()).or_default() += 1;
    }
    println!("pixel_values bit-exact (sha256 of uint8 and float32 arrays): {by_processor:?}");
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn same_size_image_passes_through_clip_resize_and_crop() {
    let img = read_rgb(&image_path("coffee_224.png")).unwrap();
    assert_eq!((img.width, img.height), (224, 224));
    assert_eq!(processor("clip224").resize_and_crop(&img).unwrap(), img);
}

// ------------------------------------------------------------------------------------------------ encoders

fn model_images(dir: &Path) -> (Vec<String>, Vec<RgbImage>) {
    let r = json(&dir.join("reference.json"));
    let names: Vec<String> = r["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let imgs = names.iter().map(|n| reference_rgb(n)).collect();
    (names, imgs)
}

#[test]
fn clip_embeddings_match_transformers() {
    for name in ["clip-a", "clip-b"] {
        let dir = model_dir(name);
        let enc = open_clip(name);
        let (_, imgs) = model_images(&dir);
        // batches of 4 then 2 (transformers ran one batch of 6)
        let img_emb = enc.embed_images(&imgs, 4).unwrap();
        let err = max_diff(&img_emb, &reference(&dir, "image_embeds"));
        println!("{name}: image features max abs error {err:.2e}");
        assert!(err <= EMBED_TOL, "{name}: image features error {err:e}");

        let r = json(&dir.join("reference.json"));
        let texts: Vec<&str> = r["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for (t, want) in texts.iter().zip(r["input_ids"].as_array().unwrap()) {
            let want: Vec<u32> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(enc.tokenize(t).unwrap(), want, "{name}: token ids of {t:?}");
        }
        let txt_emb = enc.embed_texts(&texts, 3).unwrap();
        let err = max_diff(&txt_emb, &reference(&dir, "text_embeds"));
        println!("{name}: text features max abs error {err:.2e}");
        assert!(err <= EMBED_TOL, "{name}: text features error {err:e}");
    }
}

#[test]
fn dino_embeddings_match_transformers() {
    for name in ["vit-a", "vit-b", "dinov2-a", "dinov2-b"] {
        let dir = model_dir(name);
        let enc = open_dino(name);
        let (_, imgs) = model_images(&dir);
        let emb = enc.embed_images(&imgs, 4).unwrap();
        let err = max_diff(&emb, &reference(&dir, "image_embeds"));
        println!("{name}: CLS embedding max abs error {err:.2e}");
        assert!(err <= EMBED_TOL, "{name}: CLS embedding error {err:e}");
    }
}

#[test]
fn jpeg_decoder_effect_on_embeddings() {
    // The decoder difference measured above, seen through the encoders: cosine between the embedding of our
    // decode and of PIL's decode of the same JPEG (random tiny models amplify pixel noise more than trained ones).
    let clip = open_clip("clip-a");
    let dino = open_dino("dinov2-a");
    for name in ["rocket.jpg", "coffee_420.jpg"] {
        let imgs = [read_rgb(&image_path(name)).unwrap(), reference_rgb(name)];
        for (model, emb) in [
            ("clip-a", clip.embed_images(&imgs, 2).unwrap()),
            ("dinov2-a", dino.embed_images(&imgs, 2).unwrap()),
        ] {
            let cos = clora_harness::metrics::scores::cosine(&emb[0], &emb[1]);
            println!("{name} through {model}: cosine(our decode, PIL decode) = {cos:.6}");
            assert!(cos > 0.9999, "{name} {model}: {cos}");
        }
    }
}

#[test]
fn batching_does_not_change_embeddings() {
    let enc = open_dino("dinov2-b");
    let (_, imgs) = model_images(&model_dir("dinov2-b"));
    let batched = enc.embed_images(&imgs, 6).unwrap();
    let single = enc.embed_images(&imgs, 1).unwrap();
    let diff = batched
        .iter()
        .flatten()
        .zip(single.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-5, "batch of 6 vs one by one: {diff:e}");
}

// ------------------------------------------------------------------------------------------------ scores

fn query_from_fixture(doc: &Value) -> ImageQuery {
    let triggers: Vec<Trigger> = doc["triggers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(w, n)| Trigger::new(w, n.as_str().unwrap()))
        .collect();
    let prompt = clip_t_prompt(doc["prompt"].as_str().unwrap(), &triggers);
    assert_eq!(prompt, doc["clip_t_prompt"].as_str().unwrap());
    ImageQuery {
        prompt_for_clip_t: Some(prompt),
        concepts: ["cat", "cup"]
            .iter()
            .map(|c| ConceptRefs {
                name: c.to_string(),
                ref_dir: fixtures().join("concepts").join(c),
                ..Default::default()
            })
            .collect(),
    }
}

fn close(what: &str, got: f32, want: &Value) {
    let want = want.as_f64().unwrap() as f32;
    assert!(
        (got - want).abs() <= EMBED_TOL,
        "{what}: {got} vs transformers {want}"
    );
}

#[test]
fn scores_match_the_reference_definitions() {
    let doc = json(&fixtures().join("scores.json"));
    let query = query_from_fixture(&doc);
    for (run, spec) in doc["runs"].as_object().unwrap() {
        let scorer = Scorer::new(MetricsConfig {
            clip: Some(model_dir(spec["clip"].as_str().unwrap())),
            dino: Some(model_dir(spec["dino"].as_str().unwrap())),
            batch_size: 3,
            ..MetricsConfig::default()
        })
        .unwrap();
        let items: Vec<(PathBuf, ImageQuery)> = spec["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (image_path(i["image"].as_str().unwrap()), query.clone()))
            .collect();
        let got = scorer.score_images(&items).unwrap();
        // the same references given file by file (as experiment configs resolve them) score the same
        let by_files: Vec<(PathBuf, ImageQuery)> = items
            .iter()
            .map(|(p, q)| {
                let concepts = q
                    .concepts
                    .iter()
                    .map(|c| {
                        let mut files: Vec<PathBuf> = std::fs::read_dir(&c.ref_dir)
                            .unwrap()
                            .map(|e| e.unwrap().path())
                            .filter(|f| {
                                matches!(
                                    f.extension().and_then(|e| e.to_str()),
                                    Some("png" | "jpg" | "jpeg")
                                )
                            })
                            .collect();
                        files.sort();
                        ConceptRefs::from_files(c.name.clone(), files)
                    })
                    .collect();
                let q = ImageQuery {
                    prompt_for_clip_t: q.prompt_for_clip_t.clone(),
                    concepts,
                };
                (p.clone(), q)
            })
            .collect();
        let again = scorer.score_images(&by_files).unwrap();
        for (a, b) in got.iter().zip(&again) {
            assert_eq!(a.concepts, b.concepts);
        }
        let mut worst = 0f32;
        for (s, want) in got.iter().zip(spec["images"].as_array().unwrap()) {
            let img = want["image"].as_str().unwrap();
            let t = s.clip_t.as_ref().unwrap();
            close(
                &format!("{run}/{img} clip_t"),
                t.cosine,
                &want["clip_t_cosine"],
            );
            close(
                &format!("{run}/{img} clip_score"),
                t.clip_score / 100.0,
                &serde_json::json!(want["clip_score"].as_f64().unwrap() / 100.0),
            );
            assert_eq!(t.prompt, "a cat next to a cup");
            for c in &s.concepts {
                let w = &want["concepts"][&c.concept];
                close(
                    &format!("{run}/{img} clip_i {}", c.concept),
                    c.clip_i.unwrap(),
                    &w["clip_i"],
                );
                close(
                    &format!("{run}/{img} dino {}", c.concept),
                    c.dino.unwrap(),
                    &w["dino"],
                );
                worst = worst
                    .max((c.clip_i.unwrap() - w["clip_i"].as_f64().unwrap() as f32).abs())
                    .max((c.dino.unwrap() - w["dino"].as_f64().unwrap() as f32).abs());
                assert_eq!(c.n_refs, 2);
            }
            let (ci, di) = (s.clip_i.unwrap(), s.dino.unwrap());
            close(
                &format!("{run}/{img} clip_i min"),
                ci.min,
                &want["clip_i_min"],
            );
            close(
                &format!("{run}/{img} clip_i mean"),
                ci.mean,
                &want["clip_i_mean"],
            );
            close(&format!("{run}/{img} dino min"), di.min, &want["dino_min"]);
            close(
                &format!("{run}/{img} dino mean"),
                di.mean,
                &want["dino_mean"],
            );
            // model ids are recorded on every row
            let rows = s.rows();
            assert_eq!(rows.len(), 2 + 4 + 4);
            let clip_id = scorer.clip_model_id().unwrap();
            let dino_id = scorer.dino_model_id().unwrap();
            assert!(
                clip_id.starts_with(&format!("clip:{}@", spec["clip"].as_str().unwrap())),
                "{clip_id}"
            );
            assert!(dino_id.starts_with("dino"), "{dino_id}");
            assert!(rows
                .iter()
                .all(|r| r.model_id == clip_id || r.model_id == dino_id));
        }
        println!("{run}: per-concept CLIP-I/DINO max abs error {worst:.2e}");
        // 2 images + 4 references, each embedded once per model
        assert_eq!(scorer.cache_stats().computed, 12, "{run}");
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("clora-metrics-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn references_are_embedded_once_and_the_disk_cache_is_reused() {
    let doc = json(&fixtures().join("scores.json"));
    let query = query_from_fixture(&doc);
    let cache = temp_dir("cache");
    let cfg = MetricsConfig {
        clip: Some(model_dir("clip-a")),
        dino: Some(model_dir("dinov2-b")),
        cache_dir: Some(cache.clone()),
        ..MetricsConfig::default()
    };
    let scorer = Scorer::new(cfg.clone()).unwrap();
    let a = scorer
        .score_image(&image_path("chelsea.png"), &query)
        .unwrap();
    assert_eq!(scorer.cache_stats().computed, 2 * (1 + 4));
    // a second image: only it is embedded, the references come from memory
    let b = scorer
        .score_image(&image_path("coffee.png"), &query)
        .unwrap();
    let st = scorer.cache_stats();
    assert_eq!(st.computed, 2 * (1 + 4) + 2, "{st:?}");
    assert_eq!(st.memory_hits, 2 * 4, "{st:?}");
    assert_ne!(
        a.clip_t.as_ref().unwrap().cosine,
        b.clip_t.as_ref().unwrap().cosine
    );

    // a new scorer on the same cache directory computes nothing and gives identical scores
    let again = Scorer::new(cfg).unwrap();
    let a2 = again
        .score_image(&image_path("chelsea.png"), &query)
        .unwrap();
    let st = again.cache_stats();
    assert_eq!((st.computed, st.disk_hits), (0, 2 * 5), "{st:?}");
    assert_eq!(a2, a);

    // content addressed: a copy under another name hits, a changed file misses
    let copy = cache.join("copy-of-chelsea.png");
    std::fs::copy(image_path("chelsea.png"), &copy).unwrap();
    let c = again.score_image(&copy, &query).unwrap();
    assert_eq!(again.cache_stats().computed, 0);
    assert_eq!(c.concepts, a.concepts);
    std::fs::copy(image_path("chelsea_small.png"), &copy).unwrap();
    again.score_image(&copy, &query).unwrap();
    assert_eq!(again.cache_stats().computed, 2);
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn one_scorer_serves_several_threads() {
    let doc = json(&fixtures().join("scores.json"));
    let query = query_from_fixture(&doc);
    let scorer = Scorer::new(MetricsConfig {
        clip: Some(model_dir("clip-b")),
        dino: Some(model_dir("dinov2-b")),
        ..MetricsConfig::default()
    })
    .unwrap();
    let images = [
        "chelsea.png",
        "coffee.png",
        "camera.png",
        "chelsea_small.png",
    ];
    let serial: Vec<_> = images
        .iter()
        .map(|i| scorer.score_image(&image_path(i), &query).unwrap())
        .collect();
    let parallel: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = images
            .iter()
            .map(|i| {
                let (scorer, query) = (&scorer, &query);
                s.spawn(move || scorer.score_image(&image_path(i), query).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(serial, parallel);
}

#[test]
fn model_ids_follow_the_weights_not_the_path() {
    let dir = temp_dir("ids");
    let copy = dir.join("clip-a");
    std::fs::create_dir_all(&copy).unwrap();
    for f in std::fs::read_dir(model_dir("clip-a")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    let id = |d: &Path| {
        let folder = ModelFolder::open(d, &[ModelKind::Clip], "test").unwrap();
        folder.model_id(&folder.content_digest().unwrap())
    };
    assert_eq!(id(&copy), id(&model_dir("clip-a")));
    let mut cfg = std::fs::read_to_string(copy.join("preprocessor_config.json")).unwrap();
    cfg = cfg.replace("\"resample\": 3", "\"resample\": 2");
    std::fs::write(copy.join("preprocessor_config.json"), cfg).unwrap();
    assert_ne!(id(&copy), id(&model_dir("clip-a")));
    std::fs::remove_dir_all(&dir).unwrap();
}

// ------------------------------------------------------------------------------------------------ bad input

fn err_text<T: std::fmt::Debug>(r: clora_harness::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

fn clip_only() -> Scorer {
    Scorer::new(MetricsConfig {
        clip: Some(model_dir("clip-a")),
        ..MetricsConfig::default()
    })
    .unwrap()
}

#[test]
fn unreadable_images_are_named_in_the_error() {
    let scorer = clip_only();
    let q = ImageQuery {
        prompt_for_clip_t: Some("a cat".into()),
        concepts: vec![],
    };
    for (file, expect) in [
        ("truncated.png", "cannot decode"),
        ("truncated.jpg", "cannot decode"),
        ("not_an_image.png", "not an image"),
    ] {
        let path = fixtures().join("images").join(file);
        let e = err_text(scorer.score_image(&path, &q));
        assert!(
            e.contains(&path.display().to_string()) && e.contains(expect),
            "{file}: {e}"
        );
    }
    let missing = fixtures().join("images/does-not-exist.png");
    let e = err_text(scorer.score_image(&missing, &q));
    assert!(e.contains("does-not-exist.png"), "{e}");
    // a bad reference image is named too
    let dir = temp_dir("badref");
    std::fs::copy(fixtures().join("images/truncated.png"), dir.join("ref.png")).unwrap();
    let q = ImageQuery {
        prompt_for_clip_t: None,
        concepts: vec![ConceptRefs {
            name: "x".into(),
            ref_dir: dir.clone(),
            ..Default::default()
        }],
    };
    let e = err_text(scorer.score_image(&image_path("chelsea.png"), &q));
    assert!(
        e.contains(&dir.join("ref.png").display().to_string()),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn empty_reference_folders_are_named_in_the_error() {
    let scorer = clip_only();
    let dir = temp_dir("empty");
    let q = ImageQuery {
        prompt_for_clip_t: None,
        concepts: vec![ConceptRefs {
            name: "ghost".into(),
            ref_dir: dir.clone(),
            ..Default::default()
        }],
    };
    let e = err_text(scorer.score_image(&image_path("chelsea.png"), &q));
    assert!(
        e.contains(&dir.display().to_string()) && e.contains("no image"),
        "{e}"
    );
    // only non-image files: still empty
    std::fs::write(dir.join("notes.txt"), "x").unwrap();
    let e = err_text(scorer.score_image(&image_path("chelsea.png"), &q));
    assert!(e.contains("no image"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    let e = err_text(scorer.score_image(&image_path("chelsea.png"), &q));
    assert!(
        e.contains(&dir.display().to_string()) && e.contains("not a directory"),
        "{e}"
    );
}

#[test]
fn wrong_architecture_folders_are_refused_naming_config_json() {
    let e = err_text(Scorer::new(MetricsConfig {
        clip: Some(model_dir("dinov2-a")),
        ..MetricsConfig::default()
    }));
    let cfg = model_dir("dinov2-a").join("config.json");
    assert!(
        e.contains(&cfg.display().to_string())
            && e.contains("model_type")
            && e.contains("\"dinov2\"")
            && e.contains("clip"),
        "{e}"
    );
    let e = err_text(Scorer::new(MetricsConfig {
        dino: Some(model_dir("clip-b")),
        ..MetricsConfig::default()
    }));
    assert!(
        e.contains("clip-b/config.json") && e.contains("\"vit\"") && e.contains("\"dinov2\""),
        "{e}"
    );
    // the SD text encoder (CLIPTextModel) is not a CLIPModel
    let sd_text = root().join("tests/fixtures/sd/tiny-a/text_encoder");
    if sd_text.join("config.json").is_file() {
        let e = err_text(Scorer::new(MetricsConfig {
            clip: Some(sd_text),
            ..MetricsConfig::default()
        }));
        assert!(e.contains("clip_text_model"), "{e}");
    }
}

#[test]
fn mismatched_or_incomplete_folders_name_the_file() {
    let dir = temp_dir("mixed");
    // a CLIP config with ViT weights
    let bad = dir.join("clip-with-vit-weights");
    std::fs::create_dir_all(&bad).unwrap();
    for f in [
        "config.json",
        "preprocessor_config.json",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
    ] {
        std::fs::copy(model_dir("clip-a").join(f), bad.join(f)).unwrap();
    }
    std::fs::copy(
        model_dir("vit-a").join("model.safetensors"),
        bad.join("model.safetensors"),
    )
    .unwrap();
    let e = err_text(Scorer::new(MetricsConfig {
        clip: Some(bad.clone()),
        ..MetricsConfig::default()
    }));
    assert!(
        e.contains(&bad.join("model.safetensors").display().to_string())
            && e.contains("missing tensor"),
        "{e}"
    );

    // a tensor of the wrong shape: dinov2-a's config with dinov2-b's weights
    let bad = dir.join("dinov2-shapes");
    std::fs::create_dir_all(&bad).unwrap();
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(model_dir("dinov2-a").join(f), bad.join(f)).unwrap();
    }
    std::fs::copy(
        model_dir("dinov2-b").join("model.safetensors"),
        bad.join("model.safetensors"),
    )
    .unwrap();
    let e = err_text(Scorer::new(MetricsConfig {
        dino: Some(bad.clone()),
        ..MetricsConfig::default()
    }));
    assert!(
        e.contains("model.safetensors") && e.contains("has shape") && e.contains("expected"),
        "{e}"
    );

    // no preprocessor_config.json
    std::fs::remove_file(bad.join("preprocessor_config.json")).unwrap();
    let e = err_text(Scorer::new(MetricsConfig {
        dino: Some(bad.clone()),
        ..MetricsConfig::default()
    }));
    assert!(
        e.contains(&bad.join("preprocessor_config.json").display().to_string())
            && e.contains("missing"),
        "{e}"
    );

    // no weights
    let empty = dir.join("no-weights");
    std::fs::create_dir_all(&empty).unwrap();
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(model_dir("vit-b").join(f), empty.join(f)).unwrap();
    }
    let e = err_text(Scorer::new(MetricsConfig {
        dino: Some(empty.clone()),
        ..MetricsConfig::default()
    }));
    assert!(
        e.contains("no-weights") && e.contains("model.safetensors"),
        "{e}"
    );

    // a truncated weight file
    let trunc = dir.join("truncated-weights");
    std::fs::create_dir_all(&trunc).unwrap();
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(model_dir("vit-a").join(f), trunc.join(f)).unwrap();
    }
    let bytes = std::fs::read(model_dir("vit-a").join("model.safetensors")).unwrap();
    std::fs::write(trunc.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let e = err_text(Scorer::new(MetricsConfig {
        dino: Some(trunc.clone()),
        ..MetricsConfig::default()
    }));
    assert!(
        e.contains("truncated-weights/model.safetensors") && e.contains("truncated"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// ------------------------------------------------------------------------------------------------ CLI

#[test]
fn harness_score_cli_prints_rows_and_fails_clearly() {
    let exe = env!("CARGO_BIN_EXE_harness");
    let out = std::process::Command::new(exe)
        .args(["score", "--images"])
        .arg(fixtures().join("concepts/cup"))
        .args([
            "--text",
            "a zwx cup on a table",
            "--trigger",
            "zwx=cup",
            "--refs",
        ])
        .arg(fixtures().join("concepts/cat"))
        .arg(format!("mug={}", fixtures().join("concepts/cup").display()))
        .arg("--clip")
        .arg(model_dir("clip-b"))
        .arg("--dino")
        .arg(model_dir("vit-b"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "image\tmetric\tscope\tvalue\tmodel");
    // 2 images x (clip_t, clip_score, 2 concepts x 2 metrics, min/mean x 2 metrics)
    assert_eq!(lines.len(), 1 + 2 * 10, "{stdout}");
    assert!(
        stdout.contains("\tconcept:cat\t") && stdout.contains("\tconcept:mug\t"),
        "{stdout}"
    );
    assert!(
        stdout.contains("clip:clip-b@") && stdout.contains("dino-v1:vit-b@"),
        "{stdout}"
    );
    assert!(stderr.contains("\"a cup on a table\""), "{stderr}");
    // an image is its own best reference: DINO of cup_0 against the mug folder is above that of cat
    let dino = |img: &str, scope: &str| -> f32 {
        lines
            .iter()
            .find(|l| l.contains(img) && l.contains("\tdino\t") && l.contains(scope))
            .and_then(|l| l.split('\t').nth(3))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(dino("cup_0.png", "concept:mug") > dino("cup_0.png", "concept:cat"));

    let out = std::process::Command::new(exe)
        .args(["score", "--images"])
        .arg(fixtures().join("images/truncated.png"))
        .args(["--text", "x", "--clip"])
        .arg(model_dir("clip-a"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("truncated.png") && stderr.contains("cannot decode"),
        "{stderr}"
    );
}
