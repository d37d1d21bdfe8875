//! CLIP tokenizer parity with transformers 4.39.3's slow `CLIPTokenizer` (no ftfy), on
//! `tests/fixtures/tokenizer/cases.json`, for the embedded vocabulary, the gz file and a diffusers
//! `tokenizer/` folder; plus error messages that name the offending file.

use std::path::{Path, PathBuf};

use clora_harness::models::clip::tokenizer::ClipTokenizer;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Case {
    text: String,
    ids: Vec<u32>,
    ids_full: Vec<u32>,
    tokens_full: Vec<String>,
    ids_fast: Vec<u32>,
}

fn cases() -> Vec<Case> {
    let cases = cases_from(&root().join("tests/fixtures/tokenizer/cases.json"));
    assert!(
        cases.len() >= 50,
        "expected the full case list, found {}",
        cases.len()
    );
    cases
}

fn cases_from(path: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("cases.json is JSON");
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .expect("id list")
            .iter()
            .map(|x| x.as_u64().expect("id") as u32)
            .collect()
    };
    json["cases"]
        .as_array()
        .expect("`cases` list")
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().expect("text").to_string(),
            ids: ids(&c["ids"]),
            ids_full: ids(&c["ids_full"]),
            tokens_full: c["tokens_full"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|t| t.as_str().expect("token").to_string())
                        .collect()
                })
                .unwrap_or_default(),
            ids_fast: c.get("ids_fast").map(ids).unwrap_or_default(),
        })
        .collect()
}

/// Checks every case; returns a readable list of the failures.
fn check_all(tok: &ClipTokenizer, label: &str) {
    check_cases(tok, label, &cases());
}

fn check_cases(tok: &ClipTokenizer, label: &str, cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        let ids = tok.encode(&c.text);
        let full = tok.encode_full(&c.text);
        let tokens = tok.tokens(&c.text);
        assert_eq!(ids.len(), 77, "{label}: encode({:?}) length", c.text);
        if ids != c.ids {
            failures.push(format!(
                "{:?}: encode\n  got  {ids:?}\n  want {:?}",
                c.text, c.ids
            ));
        }
        if full != c.ids_full {
            failures.push(format!(
                "{:?}: encode_full\n  got  {full:?}\n  want {:?}",
                c.text, c.ids_full
            ));
        }
        if !c.tokens_full.is_empty() {
            let want = &c.tokens_full[1..c.tokens_full.len() - 1];
            if tokens != want {
                failures.push(format!(
                    "{:?}: tokens\n  got  {tokens:?}\n  want {want:?}",
                    c.text
                ));
            }
        }
        // tokens()[i] sits at position i + 1 of encode().
        for (i, t) in tokens.iter().enumerate().take(75) {
            assert_eq!(
                tok.token_to_id(t),
                Some(ids[i + 1]),
                "{label}: {:?}: token {i} {t:?} is not at position {}",
                c.text,
                i + 1
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{label}: {} of {} checks failed:\n{}",
        failures.len(),
        cases.len() * 3,
        failures.join("\n")
    );
}

/// Extra reference cases in the cases.json format (e.g. fuzz strings run through transformers), from the file
/// named by `CLORA_TOKENIZER_EXTRA_CASES`; skipped when the variable is unset.
#[test]
fn extra_cases_from_env() {
    let Some(path) = std::env::var_os("CLORA_TOKENIZER_EXTRA_CASES") else {
        return;
    };
    let cases = cases_from(Path::new(&path));
    check_cases(&ClipTokenizer::embedded().unwrap(), "extra cases", &cases);
}

#[test]
fn embedded_matches_transformers_slow_tokenizer() {
    let tok = ClipTokenizer::embedded().expect("embedded vocabulary loads");
    assert_eq!(tok.max_length(), 77);
    assert_eq!(tok.bos_id(), 49406);
    assert_eq!(tok.eos_id(), 49407);
    assert_eq!(tok.pad_id(), 49407);
    assert_eq!(tok.vocab_size(), 49408);
    check_all(&tok, "embedded");
}

#[test]
fn from_dir_matches_transformers_slow_tokenizer() {
    let tok = ClipTokenizer::from_dir(&root().join("tests/fixtures/sd/tiny-a/tokenizer"))
        .expect("tiny-a tokenizer loads");
    assert_eq!(tok.max_length(), 77);
    assert_eq!(tok.bos_id(), 49406);
    assert_eq!(tok.eos_id(), 49407);
    assert_eq!(tok.pad_id(), 49407);
    assert_eq!(tok.vocab_size(), 49408);
    check_all(&tok, "from_dir(tiny-a)");
}

#[test]
fn from_bpe_gz_matches_transformers_slow_tokenizer() {
    let tok = ClipTokenizer::from_bpe_gz(&root().join("assets/clip/bpe_simple_vocab_16e6.txt.gz"))
        .expect("gz loads");
    check_all(&tok, "from_bpe_gz");
}

/// Where the fast tokenizer differs from the slow one, we follow the slow one (the reference).
#[test]
fn slow_is_matched_where_fast_differs() {
    let tok = ClipTokenizer::embedded().unwrap();
    let differing: Vec<Case> = cases()
        .into_iter()
        .filter(|c| c.ids != c.ids_fast)
        .collect();
    assert!(
        !differing.is_empty(),
        "cases.json should contain slow/fast differences (CJK, control chars, final sigma)"
    );
    for c in &differing {
        assert_eq!(tok.encode(&c.text), c.ids, "{:?}", c.text);
        assert_ne!(tok.encode(&c.text), c.ids_fast, "{:?}", c.text);
    }
}

#[test]
fn basic_prompts() {
    let tok = ClipTokenizer::embedded().unwrap();
    assert_eq!(
        tok.tokens("A photo of a CAT"),
        vec!["a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>"]
    );
    let ids = tok.encode("a cat");
    assert_eq!(&ids[..4], &[49406, 320, 2368, 49407]);
    assert!(ids[4..].iter().all(|&i| i == 49407));
    assert_eq!(tok.encode_full(""), vec![49406, 49407]);
    // Truncation keeps EOS last.
    let long = "cat ".repeat(200);
    let ids = tok.encode(&long);
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[0], 49406);
    assert_eq!(ids[76], 49407);
    assert!(ids[1..76].iter().all(|&i| i == 2368));
    assert_eq!(tok.encode_full(&long).len(), 202);
}

// ---------------------------------------------------------------------------------------------------------
// Errors name the file and say what was expected.

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "clora-tokenizer-test-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn err_text<T: std::fmt::Debug>(r: clora_harness::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

fn copy_tiny_tokenizer(to: &Path) {
    let from = root().join("tests/fixtures/sd/tiny-a/tokenizer");
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

#[test]
fn error_missing_folder() {
    let dir = root().join("tests/fixtures/sd/does-not-exist/tokenizer");
    let msg = err_text(ClipTokenizer::from_dir(&dir));
    assert!(msg.contains("does-not-exist/tokenizer"), "{msg}");
    assert!(msg.contains("vocab.json"), "{msg}");
}

#[test]
fn error_missing_vocab_json() {
    let dir = scratch("no-vocab");
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\ni n\n").unwrap();
    let msg = err_text(ClipTokenizer::from_dir(&dir));
    assert!(
        msg.contains(&dir.join("vocab.json").display().to_string()),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn error_missing_merges_txt() {
    let dir = scratch("no-merges");
    std::fs::copy(
        root().join("tests/fixtures/sd/tiny-a/tokenizer/vocab.json"),
        dir.join("vocab.json"),
    )
    .unwrap();
    let msg = err_text(ClipTokenizer::from_dir(&dir));
    assert!(
        msg.contains(&dir.join("merges.txt").display().to_string()),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn error_malformed_vocab_json() {
    let dir = scratch("bad-vocab");
    copy_tiny_tokenizer(&dir);
    std::fs::write(dir.join("vocab.json"), "[1, 2, 3]").unwrap();
    let msg = err_text(ClipTokenizer::from_dir(&dir));
    assert!(
        msg.contains(&dir.join("vocab.json").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("JSON object"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn error_malformed_merges_line() {
    let dir = scratch("bad-merges");
    copy_tiny_tokenizer(&dir);
    let merges = std::fs::read_to_string(dir.join("merges.txt")).unwrap();
    let mut lines: Vec<&str> = merges.lines().collect();
    lines[3] = "t h e";
    std::fs::write(dir.join("merges.txt"), lines.join("\n")).unwrap();
    let msg = err_text(ClipTokenizer::from_dir(&dir));
    assert!(
        msg.contains(&dir.join("merges.txt").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("line 4"), "{msg}");
    assert!(msg.contains("two symbols"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn error_malformed_tokenizer_config() {
    let dir = scratch("bad-config");
    copy_tiny_tokenizer(&dir);
    std::fs::write(
        dir.join("tokenizer_config.json"),
        "{\"model_max_length\": \"long\"}",
    )
    .unwrap();
    let msg = err_text(ClipTokenizer::from_dir(&dir));
    assert!(msg.contains("tokenizer_config.json"), "{msg}");
    assert!(msg.contains("model_max_length"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn error_truncated_gz() {
    let dir = scratch("truncated-gz");
    let gz = std::fs::read(root().join("assets/clip/bpe_simple_vocab_16e6.txt.gz")).unwrap();
    let path = dir.join("bpe_simple_vocab_16e6.txt.gz");
    std::fs::write(&path, &gz[..gz.len() / 2]).unwrap();
    let msg = err_text(ClipTokenizer::from_bpe_gz(&path));
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("gzip"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn error_not_gzip_and_missing_gz() {
    let dir = scratch("not-gz");
    let path = dir.join("bpe.txt.gz");
    std::fs::write(&path, "#version: 0.2\ni n\n").unwrap();
    let msg = err_text(ClipTokenizer::from_bpe_gz(&path));
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("not a gzip file"), "{msg}");

    let missing = dir.join("missing.txt.gz");
    let msg = err_text(ClipTokenizer::from_bpe_gz(&missing));
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn error_gz_with_too_few_merges() {
    use std::io::Write;
    let dir = scratch("short-gz");
    let path = dir.join("short.txt.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(b"\"bpe_simple_vocab_16e6.txt#version: 0.2\ni n\nt h\n")
        .unwrap();
    std::fs::write(&path, enc.finish().unwrap()).unwrap();
    let msg = err_text(ClipTokenizer::from_bpe_gz(&path));
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("48894"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------------------
// Folder settings.

#[test]
fn from_dir_reads_pad_token_and_max_length() {
    // SD 2.x style: pad token "!" (id 0), legacy config without added_tokens_decoder, overridden by the map.
    let dir = scratch("pad-bang");
    copy_tiny_tokenizer(&dir);
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"model_max_length": 20, "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer"}"#,
    )
    .unwrap();
    std::fs::write(dir.join("special_tokens_map.json"), r#"{"pad_token": "!"}"#).unwrap();
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.max_length(), 20);
    assert_eq!(tok.pad_id(), 0);
    let ids = tok.encode("a cat");
    assert_eq!(ids.len(), 20);
    assert_eq!(&ids[..5], &[49406, 320, 2368, 49407, 0]);
    // The pad token is an added token of the slow tokenizer: a literal "!" is split out as "!" (id 0),
    // not BPE'd to "!</w>" (256).
    assert_eq!(tok.tokens("hi!"), vec!["hi</w>", "!"]);
    assert_eq!(tok.encode_full("hi!"), vec![49406, 1883, 0, 49407]);
    assert_eq!(
        tok.encode_full("wow!! ok!"),
        vec![49406, 2781, 0, 0, 2481, 0, 49407]
    );
    let _ = std::fs::remove_dir_all(&dir);

    // Without any config file: defaults 77 / <|endoftext|>.
    let dir = scratch("no-config");
    copy_tiny_tokenizer(&dir);
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.max_length(), 77);
    assert_eq!(tok.pad_id(), 49407);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn from_dir_splits_added_tokens_decoder_entries() {
    // A textual-inversion style token saved in tokenizer_config.json's added_tokens_decoder (checked against
    // transformers 4.39.3).
    let dir = scratch("added-token");
    copy_tiny_tokenizer(&dir);
    let config = std::fs::read_to_string(
        root().join("tests/fixtures/sd/tiny-a/tokenizer/tokenizer_config.json"),
    )
    .unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
    config["added_tokens_decoder"]["49408"] = serde_json::json!({
        "content": "<cat-toy>", "lstrip": false, "normalized": true, "rstrip": false,
        "single_word": false, "special": false
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    assert_eq!(
        tok.tokens("a <cat-toy> on a table"),
        vec!["a</w>", "<cat-toy>", "on</w>", "a</w>", "table</w>"]
    );
    assert_eq!(
        tok.encode_full("a <cat-toy> on a table"),
        vec![49406, 320, 49408, 525, 320, 2175, 49407]
    );
    assert_eq!(
        tok.encode_full("a<cat-toy>s"),
        vec![49406, 320, 49408, 338, 49407]
    );
    // Case-sensitive, like the trie.
    assert_eq!(
        tok.encode_full("<CAT-TOY>"),
        vec![49406, 283, 2368, 268, 5988, 285, 49407]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
