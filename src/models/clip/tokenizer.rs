//! The CLIP BPE tokenizer of SD 1.x, bit-exact with transformers' slow `CLIPTokenizer` as a default diffusers
//! install runs it, i.e. without `ftfy` (transformers 4.39, `models/clip/tokenization_clip.py`).
//!
//! The pipeline, step by step as transformers does it:
//!
//! 1. `PreTrainedTokenizer.tokenize` splits the raw text on the *added tokens* (the special tokens
//!    `<|startoftext|>`, `<|endoftext|>`, the pad token, and any `added_tokens_decoder` / `added_tokens.json`
//!    entry), case-sensitively, leftmost-longest. Those pieces become their ids directly. Their
//!    `lstrip`/`rstrip` flags only strip whitespace that step 2 discards anyway, so they need no handling;
//!    `single_word` is not supported (no SD tokenizer uses it).
//! 2. Every other piece goes through `BasicTokenizer(do_lower_case=True, strip_accents=False,
//!    do_split_on_punc=False, tokenize_chinese_chars=True)`: drop U+0000, U+FFFD and every char of general
//!    category `C*` except `\t \n \r`; map `\t \n \r` and `Zs` to a space; put spaces around CJK ideographs
//!    (BERT's ranges); NFC; split on whitespace; lowercase each word (full Unicode mapping, no accent
//!    stripping, no punctuation split); join with single spaces.
//! 3. `re.findall` with CLIP's pattern (case-insensitive):
//!    `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`.
//! 4. Each match is UTF-8 byte-encoded with GPT-2's `bytes_to_unicode` and BPE'd with `</w>` appended to its
//!    last symbol. A match that is exactly `<|startoftext|>` or `<|endoftext|>` is not BPE'd (transformers'
//!    pre-seeded `bpe` cache) and stays that one token.
//! 5. Tokens become ids through the added tokens, then the vocabulary, then the unknown token
//!    (`<|endoftext|>`).
//! 6. `encode`: BOS + the first `max_length - 2` ids + EOS, right-padded with the pad token to `max_length`
//!    (transformers' `truncation=True, padding="max_length"`).
//!
//! The BPE itself is `tokenizers`' BPE model (`end_of_word_suffix = "</w>"`, no dropout). It gives the same
//! merges as the Python `bpe()` loop whenever the merge table is well formed (every byte symbol in the vocab,
//! merge results unique and in the vocab, each merge only using tokens created by earlier merges), which
//! CLIP's is; for any other vocabulary a direct port of the Python loop is used instead.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::Path;

use regex::Regex;
use tokenizers::models::bpe::{Vocab as HfVocab, BPE};
use tokenizers::Model;
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};

/// The open_clip vocabulary file, embedded (MIT, OpenAI; see `assets/clip/LICENSE-open_clip.txt`).
const EMBEDDED_BPE_GZ: &[u8] = include_bytes!("../../../assets/clip/bpe_simple_vocab_16e6.txt.gz");
/// Name used in error messages about the embedded file.
const EMBEDDED_NAME: &str = "assets/clip/bpe_simple_vocab_16e6.txt.gz (embedded)";

/// Number of merges CLIP uses: `lines[1 : 49152 - 256 - 2 + 1]`.
pub const CLIP_NUM_MERGES: usize = 49152 - 256 - 2;
/// Size of CLIP's vocabulary.
pub const CLIP_VOCAB_SIZE: usize = 49408;
/// Context length of CLIP's text encoder.
pub const CLIP_MAX_LENGTH: usize = 77;

/// token -> id.
type VocabMap = HashMap<String, u32>;
/// Merges in rank order.
type MergeList = Vec<(String, String)>;

const SOT: &str = "<|startoftext|>";
const EOT: &str = "<|endoftext|>";
const EOW: &str = "</w>";

/// CLIP's pre-tokenization pattern, `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|
/// [^\s\p{L}\p{N}]+` with `re.IGNORECASE`, written so that Rust's `regex` matches exactly what Python's `regex`
/// module matches. The one difference is the letter class: under IGNORECASE Python's `[\p{L}]` does not match
/// U+0345 (a combining mark whose case fold is ι) while its negated class `[^\s\p{L}\p{N}]` excludes it, so
/// U+0345 matches no branch and is skipped; Rust's `(?i)[\p{L}]` would include it, so the letter class is written
/// without `(?i)`. (Checked code point by code point against regex 2026.11.19 for every char that survives the
/// cleanup.)
const CLIP_PATTERN: &str = r"(?i:<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d)|\p{L}+|(?i:\p{N})|(?i:[^\s\p{L}\p{N}])+";

/// GPT-2's `bytes_to_unicode`: byte -> printable char.
fn bytes_to_unicode() -> [char; 256] {
    let mut bs: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut table = ['\0'; 256];
    for (b, c) in bs.into_iter().zip(cs) {
        table[b as usize] = char::from_u32(c).expect("bytes_to_unicode maps to valid chars");
    }
    table
}

/// The 256 byte symbols in `bytes_to_unicode` order (the order of the first 256 vocab entries).
fn byte_symbols_in_vocab_order() -> Vec<String> {
    let mut bs: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
        }
    }
    let table = bytes_to_unicode();
    bs.into_iter()
        .map(|b| table[b as usize].to_string())
        .collect()
}

/// `_clean_text` drops U+0000, U+FFFD and general category `C*` (`Cc Cf Cs Co Cn`) except `\t \n \r`, with
/// the Unicode 14.0 tables of Python 3.11's `unicodedata` (the reference environment). A fixed table rather
/// than `\p{C}`: characters assigned after Unicode 14.0 are `Cn` there and are dropped by the reference.
fn is_dropped_by_clean_text(c: char) -> bool {
    let cp = c as u32;
    PY311_CLEAN_TEXT_DROPPED
        .binary_search_by(|&(lo, hi)| {
            if hi < cp {
                std::cmp::Ordering::Less
            } else if lo > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// `_is_whitespace`: `\t \n \r` and general category `Zs` (the same set in every Unicode version since 4.1).
fn is_clean_text_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\r' | ' ' | '\u{A0}' | '\u{1680}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    ) || ('\u{2000}'..='\u{200A}').contains(&c)
}

/// BERT's "Chinese character" ranges (`BasicTokenizer._is_chinese_char`).
fn is_cjk_ideograph(c: char) -> bool {
    let cp = c as u32;
    (0x4E00..=0x9FFF).contains(&cp)
        || (0x3400..=0x4DBF).contains(&cp)
        || (0x20000..=0x2A6DF).contains(&cp)
        || (0x2A700..=0x2B73F).contains(&cp)
        || (0x2B740..=0x2B81F).contains(&cp)
        || (0x2B820..=0x2CEAF).contains(&cp)
        || (0xF900..=0xFAFF).contains(&cp)
        || (0x2F800..=0x2FA1F).contains(&cp)
}

/// The BPE merge engine.
#[derive(Clone)]
enum BpeEngine {
    /// `tokenizers`' BPE (used when it provably merges like the Python loop).
    Hf(Box<BPE>),
    /// A direct port of transformers' `CLIPTokenizer.bpe`.
    Reference(ReferenceBpe),
}

/// Direct port of `CLIPTokenizer.bpe`: repeatedly merge every occurrence (left to right) of the lowest-ranked
/// adjacent pair.
#[derive(Clone)]
struct ReferenceBpe {
    /// (first, second) -> rank; with duplicated pairs the last rank wins, as in Python's `dict(zip(..))`.
    ranks: HashMap<(String, String), usize>,
}

impl ReferenceBpe {
    fn new(merges: &[(String, String)]) -> Self {
        let mut ranks = HashMap::with_capacity(merges.len());
        for (i, (a, b)) in merges.iter().enumerate() {
            ranks.insert((a.clone(), b.clone()), i);
        }
        ReferenceBpe { ranks }
    }

    fn bpe(&self, word: &str) -> Vec<String> {
        let chars: Vec<char> = word.chars().collect();
        let Some((last, init)) = chars.split_last() else {
            return Vec::new();
        };
        let mut w: Vec<String> = init.iter().map(|c| c.to_string()).collect();
        w.push(format!("{last}{EOW}"));
        // Reused key buffer to avoid allocating two strings per lookup.
        let mut key = (String::new(), String::new());
        while w.len() > 1 {
            let mut best: Option<(usize, usize)> = None; // (rank, index of first occurrence)
            for i in 0..w.len() - 1 {
                key.0.clear();
                key.0.push_str(&w[i]);
                key.1.clear();
                key.1.push_str(&w[i + 1]);
                if let Some(&r) = self.ranks.get(&key) {
                    if best.is_none_or(|(br, _)| r < br) {
                        best = Some((r, i));
                    }
                }
            }
            let Some((_, at)) = best else { break };
            let first = w[at].clone();
            let second = w[at + 1].clone();
            let mut merged = Vec::with_capacity(w.len());
            let mut i = 0;
            while i < w.len() {
                if i + 1 < w.len() && w[i] == first && w[i + 1] == second {
                    merged.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut w[i]));
                    i += 1;
                }
            }
            w = merged;
        }
        w
    }
}

/// A piece of the input after splitting on added tokens.
enum Segment<'a> {
    Text(&'a str),
    Added(&'a str, u32),
}

/// CLIP's BPE tokenizer (transformers' slow `CLIPTokenizer` without ftfy).
#[derive(Clone)]
pub struct ClipTokenizer {
    engine: BpeEngine,
    /// token -> id, from the vocabulary file.
    vocab: HashMap<String, u32>,
    /// Added tokens (split out of the raw text before anything else), longest first; with their ids.
    added: Vec<(String, u32)>,
    byte_encoder: [char; 256],
    pattern: Regex,
    max_length: usize,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    unk_id: u32,
    /// Where the vocabulary came from (for Debug).
    source: String,
}

impl fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab.len())
            .field(
                "engine",
                &match self.engine {
                    BpeEngine::Hf(_) => "tokenizers BPE",
                    BpeEngine::Reference(_) => "reference BPE",
                },
            )
            .field("max_length", &self.max_length)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

/// Special-token settings (strings) read from a tokenizer folder.
struct SpecialTokens {
    bos: String,
    eos: String,
    unk: String,
    pad: String,
    /// `sep_token`, `cls_token`, `mask_token` when set (CLIP has none).
    sep: Option<String>,
    cls: Option<String>,
    mask: Option<String>,
    /// `additional_special_tokens`.
    additional: Vec<String>,
    /// Extra added tokens with explicit ids (`added_tokens_decoder` / `added_tokens.json`).
    extra: Vec<(String, u32)>,
}

impl SpecialTokens {
    /// Reads the special-token fields present in a tokenizer_config.json / special_tokens_map.json object.
    fn update_from(
        &mut self,
        obj: &serde_json::Map<String, serde_json::Value>,
        path: &Path,
    ) -> Result<()> {
        let content = |field: &str, v: &serde_json::Value| -> Result<String> {
            token_content(v).ok_or_else(|| {
                Error::config(
                    path,
                    field,
                    "expected a string or an object with \"content\"",
                )
            })
        };
        for (field, value) in obj {
            if value.is_null() {
                continue;
            }
            match field.as_str() {
                "bos_token" => self.bos = content(field, value)?,
                "eos_token" => self.eos = content(field, value)?,
                "unk_token" => self.unk = content(field, value)?,
                "pad_token" => self.pad = content(field, value)?,
                "sep_token" => self.sep = Some(content(field, value)?),
                "cls_token" => self.cls = Some(content(field, value)?),
                "mask_token" => self.mask = Some(content(field, value)?),
                "additional_special_tokens" => {
                    let list = value
                        .as_array()
                        .ok_or_else(|| Error::config(path, field, "expected a list of tokens"))?;
                    for v in list {
                        let t = content(field, v)?;
                        if !self.additional.contains(&t) {
                            self.additional.push(t);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Default for SpecialTokens {
    fn default() -> Self {
        SpecialTokens {
            bos: SOT.to_string(),
            eos: EOT.to_string(),
            unk: EOT.to_string(),
            pad: EOT.to_string(),
            sep: None,
            cls: None,
            mask: None,
            additional: Vec::new(),
            extra: Vec::new(),
        }
    }
}

impl ClipTokenizer {
    /// The vocabulary shipped with the crate (assets/clip/bpe_simple_vocab_16e6.txt.gz, embedded with
    /// `include_bytes!`).
    pub fn embedded() -> Result<Self> {
        let (vocab, merges) = vocab_from_bpe_gz(EMBEDDED_BPE_GZ, Path::new(EMBEDDED_NAME))?;
        Self::build(
            vocab,
            merges,
            SpecialTokens::default(),
            CLIP_MAX_LENGTH,
            EMBEDDED_NAME.to_string(),
        )
    }

    /// From the gz BPE file (open_clip format: a header line, then one merge per line).
    pub fn from_bpe_gz(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (vocab, merges) = vocab_from_bpe_gz(&bytes, path)?;
        Self::build(
            vocab,
            merges,
            SpecialTokens::default(),
            CLIP_MAX_LENGTH,
            path.display().to_string(),
        )
    }

    /// From a diffusers/transformers `tokenizer/` folder (vocab.json + merges.txt; model_max_length and the
    /// special tokens are read from tokenizer_config.json and special_tokens_map.json when present, defaults
    /// 77 / `<|endoftext|>`).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::bad_file(
                dir,
                "not a directory; expected a tokenizer folder with vocab.json and merges.txt",
            ));
        }
        let vocab_path = dir.join("vocab.json");
        let merges_path = dir.join("merges.txt");
        let vocab = read_vocab_json(&vocab_path)?;
        let merges = read_merges_txt(&merges_path)?;
        let (specials, max_length) = read_tokenizer_config(dir)?;
        Self::build(
            vocab,
            merges,
            specials,
            max_length,
            dir.display().to_string(),
        )
    }

    fn build(
        vocab: HashMap<String, u32>,
        merges: Vec<(String, String)>,
        specials: SpecialTokens,
        max_length: usize,
        source: String,
    ) -> Result<Self> {
        if max_length < 2 {
            return Err(Error::invalid(
                format!("{source}: model_max_length"),
                format!("is {max_length}, expected at least 2 (room for BOS and EOS)"),
            ));
        }

        // Added tokens, as `PreTrainedTokenizer.__init__` registers them: the explicit ones first, then the
        // special tokens in SPECIAL_TOKENS_ATTRIBUTES order (bos, eos, unk, pad); a special token missing from
        // the vocabulary gets the next free id, as `_add_tokens` does. (sep/cls/mask/additional are unset for
        // CLIP but are added tokens too when a folder sets them.)
        let mut added: Vec<(String, u32)> = Vec::new();
        let mut next_id = vocab
            .values()
            .copied()
            .max()
            .map_or(0, |m| m + 1)
            .max(vocab.len() as u32);
        for (tok, id) in &specials.extra {
            if !tok.is_empty() && !added.iter().any(|(t, _)| t == tok) {
                added.push((tok.clone(), *id));
                next_id = next_id.max(id + 1);
            }
        }
        let mut special_id = |tok: &str, added: &mut Vec<(String, u32)>| -> u32 {
            if let Some((_, id)) = added.iter().find(|(t, _)| t == tok) {
                return *id;
            }
            let id = match vocab.get(tok) {
                Some(id) => *id,
                None => {
                    let id = next_id;
                    next_id += 1;
                    id
                }
            };
            if !tok.is_empty() {
                added.push((tok.to_string(), id));
            }
            id
        };
        let bos_id = special_id(&specials.bos, &mut added);
        let eos_id = special_id(&specials.eos, &mut added);
        let unk_added_id = special_id(&specials.unk, &mut added);
        if let Some(sep) = &specials.sep {
            special_id(sep, &mut added);
        }
        let pad_id = special_id(&specials.pad, &mut added);
        for tok in specials
            .cls
            .iter()
            .chain(&specials.mask)
            .chain(&specials.additional)
        {
            special_id(tok, &mut added);
        }
        // `_convert_token_to_id` falls back to `encoder.get(unk_token)`.
        let unk_id = vocab.get(&specials.unk).copied().unwrap_or(unk_added_id);
        // Longest first, so that a split prefers the longest token starting at a position.
        added.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));

        let engine = if hf_bpe_is_exact(&vocab, &merges) {
            let hf_vocab: HfVocab = vocab.iter().map(|(k, v)| (k.clone(), *v)).collect();
            let mut builder = BPE::builder()
                .vocab_and_merges(hf_vocab, merges.clone())
                .end_of_word_suffix(EOW.to_string());
            if vocab.contains_key(&specials.unk) {
                builder = builder.unk_token(specials.unk.clone());
            }
            match builder.build() {
                Ok(bpe) => BpeEngine::Hf(Box::new(bpe)),
                Err(_) => BpeEngine::Reference(ReferenceBpe::new(&merges)),
            }
        } else {
            BpeEngine::Reference(ReferenceBpe::new(&merges))
        };

        Ok(ClipTokenizer {
            engine,
            vocab,
            added,
            byte_encoder: bytes_to_unicode(),
            pattern: Regex::new(CLIP_PATTERN).expect("CLIP pattern compiles"),
            max_length,
            bos_id,
            eos_id,
            pad_id,
            unk_id,
            source,
        })
    }

    /// ids padded/truncated to max_length (77): BOS ... EOS PAD...
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let content = self.content_ids(text);
        let keep = content.len().min(self.max_length - 2);
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        ids.extend_from_slice(&content[..keep]);
        ids.push(self.eos_id);
        ids.resize(self.max_length, self.pad_id);
        ids
    }

    /// ids without padding/truncation, with BOS/EOS.
    pub fn encode_full(&self, text: &str) -> Vec<u32> {
        let content = self.content_ids(text);
        let mut ids = Vec::with_capacity(content.len() + 2);
        ids.push(self.bos_id);
        ids.extend(content);
        ids.push(self.eos_id);
        ids
    }

    /// The BPE tokens (strings like "cat</w>") of text, without BOS/EOS, in order; the token at index `i` is at
    /// position `i + 1` in [`encode`](Self::encode) (when `i + 1 < max_length - 1`).
    pub fn tokens(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.for_each_token(text, |tok, _| out.push(tok.to_string()));
        out
    }

    /// Tokens and their ids, without BOS/EOS (untruncated).
    pub fn tokens_with_ids(&self, text: &str) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        self.for_each_token(text, |tok, id| out.push((tok.to_string(), id)));
        out
    }

    /// Context length (`model_max_length`, 77 for SD 1.x).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The same vocabulary with another context length (`model_max_length`): what a text encoder with
    /// `max_position_embeddings` other than 77 reads, when its folder carries no tokenizer of its own.
    pub fn with_max_length(mut self, max_length: usize) -> Result<Self> {
        if max_length < 2 {
            return Err(Error::invalid(
                format!("{}: model_max_length", self.source),
                format!("is {max_length}, expected at least 2 (room for BOS and EOS)"),
            ));
        }
        self.max_length = max_length;
        Ok(self)
    }

    /// `<|startoftext|>` (49406).
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// `<|endoftext|>` (49407).
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The pad token's id (`<|endoftext|>` = 49407 for SD 1.x).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Number of entries in the vocabulary file (49408 for CLIP).
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The id of a token string (added tokens first, then the vocabulary), if any.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.added
            .iter()
            .find(|(t, _)| t == token)
            .map(|(_, id)| *id)
            .or_else(|| self.vocab.get(token).copied())
    }

    /// The text cleanup of transformers' `BasicTokenizer(strip_accents=False, do_split_on_punc=False)`
    /// followed by `" ".join(...)`: the string `re.findall` runs on.
    pub fn basic_clean(&self, text: &str) -> String {
        let mut spaced = String::with_capacity(text.len() + 8);
        for c in text.chars() {
            if is_dropped_by_clean_text(c) {
                continue;
            }
            if is_clean_text_space(c) {
                spaced.push(' ');
            } else if is_cjk_ideograph(c) {
                spaced.push(' ');
                spaced.push(c);
                spaced.push(' ');
            } else {
                spaced.push(c);
            }
        }
        let normalized: String = spaced.nfc().collect();
        let mut out = String::with_capacity(normalized.len());
        for word in normalized.split_whitespace() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&word.to_lowercase());
        }
        out
    }

    fn content_ids(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        self.for_each_token(text, |_, id| ids.push(id));
        ids
    }

    /// Split the raw text on added tokens (leftmost, then longest), like transformers' `Trie.split`.
    fn split_added<'a>(&'a self, text: &'a str) -> Vec<Segment<'a>> {
        let mut out = Vec::new();
        if self.added.is_empty() {
            out.push(Segment::Text(text));
            return out;
        }
        let mut start = 0;
        let mut pos = 0;
        while pos < text.len() {
            let rest = &text[pos..];
            if let Some((tok, id)) = self
                .added
                .iter()
                .find(|(t, _)| rest.starts_with(t.as_str()))
            {
                if start < pos {
                    out.push(Segment::Text(&text[start..pos]));
                }
                out.push(Segment::Added(tok.as_str(), *id));
                pos += tok.len();
                start = pos;
            } else {
                pos += rest.chars().next().map_or(1, char::len_utf8);
            }
        }
        if start < text.len() {
            out.push(Segment::Text(&text[start..]));
        }
        out
    }

    fn lookup(&self, token: &str) -> u32 {
        self.token_to_id(token).unwrap_or(self.unk_id)
    }

    fn for_each_token(&self, text: &str, mut f: impl FnMut(&str, u32)) {
        let mut encoded = String::new();
        for segment in self.split_added(text) {
            match segment {
                Segment::Added(tok, id) => f(tok, id),
                Segment::Text(s) => {
                    let cleaned = self.basic_clean(s);
                    for m in self.pattern.find_iter(&cleaned) {
                        let piece = m.as_str();
                        if piece == SOT || piece == EOT {
                            // transformers' `bpe` cache is pre-seeded with these two.
                            f(piece, self.lookup(piece));
                            continue;
                        }
                        encoded.clear();
                        encoded.extend(piece.bytes().map(|b| self.byte_encoder[b as usize]));
                        match &self.engine {
                            BpeEngine::Hf(bpe) => match bpe.tokenize(&encoded) {
                                Ok(tokens) => {
                                    for t in tokens {
                                        // Added tokens take precedence in `convert_tokens_to_ids`.
                                        let id = self
                                            .added
                                            .iter()
                                            .find(|(a, _)| *a == t.value)
                                            .map_or(t.id, |(_, id)| *id);
                                        f(&t.value, id);
                                    }
                                }
                                // Unreachable: `hf_bpe_is_exact` checked every byte symbol is in the vocab.
                                Err(_) => f(piece, self.unk_id),
                            },
                            BpeEngine::Reference(r) => {
                                for t in r.bpe(&encoded) {
                                    f(&t, self.lookup(&t));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// True when `tokenizers`' heap-based BPE provably gives the same merges as the Python `bpe()` loop:
/// every byte symbol (with and without `</w>`) is in the vocabulary, vocabulary ids are unique, no merge pair
/// repeats, every merge part and result is in the vocabulary, merge results are unique, and a merge only uses
/// tokens created by earlier merges (so the heap processes merges in rank order, as the Python loop does).
fn hf_bpe_is_exact(vocab: &HashMap<String, u32>, merges: &[(String, String)]) -> bool {
    let table = bytes_to_unicode();
    for c in table {
        if !vocab.contains_key(c.to_string().as_str())
            || !vocab.contains_key(format!("{c}{EOW}").as_str())
        {
            return false;
        }
    }
    let ids: HashSet<u32> = vocab.values().copied().collect();
    if ids.len() != vocab.len() {
        return false;
    }
    let mut pairs: HashSet<(&str, &str)> = HashSet::with_capacity(merges.len());
    let mut created: HashMap<String, usize> = HashMap::with_capacity(merges.len());
    for (rank, (a, b)) in merges.iter().enumerate() {
        if !pairs.insert((a.as_str(), b.as_str())) {
            return false;
        }
        if !vocab.contains_key(a) || !vocab.contains_key(b) {
            return false;
        }
        let result = format!("{a}{b}");
        if !vocab.contains_key(&result) {
            return false;
        }
        if created.insert(result, rank).is_some() {
            return false;
        }
    }
    for (rank, (a, b)) in merges.iter().enumerate() {
        for part in [a, b] {
            if created.get(part).is_some_and(|&r| r >= rank) {
                return false;
            }
        }
    }
    true
}

/// Vocabulary and merges from the open_clip gz file, exactly as open_clip / transformers derive them:
/// merges = lines[1 : 48895], vocab = the 256 byte symbols, the same with `</w>`, one token per merge, then
/// `<|startoftext|>`, `<|endoftext|>`.
fn vocab_from_bpe_gz(bytes: &[u8], path: &Path) -> Result<(VocabMap, MergeList)> {
    if bytes.len() < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b {
        return Err(Error::bad_file(
            path,
            "not a gzip file (expected the gzip-compressed open_clip BPE vocabulary bpe_simple_vocab_16e6.txt.gz)",
        ));
    }
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut raw)
        .map_err(|e| {
            Error::bad_file(
                path,
                format!("cannot decompress the gzip BPE vocabulary (truncated or corrupt?): {e}"),
            )
        })?;
    let text = String::from_utf8(raw).map_err(|e| {
        Error::bad_file(path, format!("the BPE vocabulary is not valid UTF-8: {e}"))
    })?;
    let lines: Vec<&str> = text.trim().split('\n').collect();
    let available = lines.len().saturating_sub(1);
    if available < CLIP_NUM_MERGES {
        return Err(Error::bad_file(
            path,
            format!(
                "the BPE vocabulary has {available} merge lines after the header, expected at least {CLIP_NUM_MERGES}"
            ),
        ));
    }
    let merges = parse_merge_lines(&lines[1..=CLIP_NUM_MERGES], 1, path)?;
    let mut tokens: Vec<String> = byte_symbols_in_vocab_order();
    let with_eow: Vec<String> = tokens.iter().map(|t| format!("{t}{EOW}")).collect();
    tokens.extend(with_eow);
    tokens.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    tokens.push(SOT.to_string());
    tokens.push(EOT.to_string());
    // `dict(zip(vocab, range(len(vocab))))`: a repeated token keeps its last index.
    let vocab: HashMap<String, u32> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect();
    Ok((vocab, merges))
}

/// Parses merge lines ("a b"); `first_line` is the 0-based line number of `lines[0]` in the file.
fn parse_merge_lines(
    lines: &[&str],
    first_line: usize,
    path: &Path,
) -> Result<Vec<(String, String)>> {
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => Ok((a.to_string(), b.to_string())),
                _ => Err(Error::bad_file(
                    path,
                    format!(
                        "line {}: malformed merge {:?}, expected two symbols separated by a space",
                        first_line + i + 1,
                        line
                    ),
                )),
            }
        })
        .collect()
}

/// `vocab.json`: a JSON object token -> id.
fn read_vocab_json(path: &Path) -> Result<HashMap<String, u32>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let vocab: HashMap<String, u32> = serde_json::from_str(&text).map_err(|e| {
        Error::bad_file(
            path,
            format!("expected a JSON object mapping token strings to integer ids: {e}"),
        )
    })?;
    if vocab.is_empty() {
        return Err(Error::bad_file(path, "empty vocabulary"));
    }
    Ok(vocab)
}

/// `merges.txt`, read as transformers does: `read().strip().split("\n")[1 : 49152 - 256 - 2 + 1]` (the first
/// line is always skipped as the `#version` header).
fn read_merges_txt(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let lines: Vec<&str> = text.trim().split('\n').collect();
    let end = lines.len().min(CLIP_NUM_MERGES + 1);
    if end <= 1 {
        return Ok(Vec::new());
    }
    parse_merge_lines(&lines[1..end], 1, path)
}

/// A special token value: a string or an AddedToken object `{"content": ...}`.
fn token_content(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}

fn read_json_object(path: &Path) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::bad_file(path, format!("expected a JSON object: {e}")))?;
    match value {
        serde_json::Value::Object(o) => Ok(Some(o)),
        _ => Err(Error::bad_file(path, "expected a JSON object")),
    }
}

/// Special tokens and `model_max_length` of a tokenizer folder, with transformers' precedence: values from
/// tokenizer_config.json; if that file has no `added_tokens_decoder` (legacy format), special_tokens_map.json
/// overrides them and added_tokens.json adds tokens.
fn read_tokenizer_config(dir: &Path) -> Result<(SpecialTokens, usize)> {
    let config_path = dir.join("tokenizer_config.json");
    let map_path = dir.join("special_tokens_map.json");
    let added_path = dir.join("added_tokens.json");
    let mut specials = SpecialTokens::default();
    let mut max_length = CLIP_MAX_LENGTH;
    let config = read_json_object(&config_path)?;
    let mut legacy = true;
    if let Some(config) = &config {
        specials.update_from(config, &config_path)?;
        match config.get("model_max_length") {
            None | Some(serde_json::Value::Null) => {}
            Some(v) => {
                // transformers writes huge sentinels as floats (1e30) for "no limit"; SD folders say 77.
                let n = v
                    .as_u64()
                    .or_else(|| {
                        v.as_f64()
                            .filter(|f| *f >= 0.0)
                            .map(|f| f.min(u64::MAX as f64) as u64)
                    })
                    .ok_or_else(|| {
                        Error::config(
                            &config_path,
                            "model_max_length",
                            "expected a positive integer",
                        )
                    })?;
                if n < 2 {
                    return Err(Error::config(
                        &config_path,
                        "model_max_length",
                        format!("is {n}, expected at least 2 (room for BOS and EOS)"),
                    ));
                }
                if n > 1 << 20 {
                    return Err(Error::config(
                        &config_path,
                        "model_max_length",
                        format!("is {n}, expected the encoder's context length (77 for SD 1.x)"),
                    ));
                }
                max_length = n as usize;
            }
        }
        if let Some(decoder) = config.get("added_tokens_decoder") {
            legacy = false;
            let obj = decoder.as_object().ok_or_else(|| {
                Error::config(
                    &config_path,
                    "added_tokens_decoder",
                    "expected an object id -> AddedToken",
                )
            })?;
            for (id, tok) in obj {
                let id: u32 = id.parse().map_err(|_| {
                    Error::config(
                        &config_path,
                        "added_tokens_decoder",
                        format!("key {id:?} is not an integer id"),
                    )
                })?;
                let content = token_content(tok).ok_or_else(|| {
                    Error::config(
                        &config_path,
                        "added_tokens_decoder",
                        format!("entry {id} has no \"content\""),
                    )
                })?;
                specials.extra.push((content, id));
            }
        }
    }
    if legacy {
        if let Some(map) = read_json_object(&map_path)? {
            specials.update_from(&map, &map_path)?;
        }
        if let Some(added) = read_json_object(&added_path)? {
            for (tok, id) in added {
                let id = id
                    .as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| {
                        Error::config(&added_path, tok.clone(), "expected an integer id")
                    })?;
                specials.extra.push((tok, id));
            }
        }
    }
    specials.extra.sort_by_key(|(_, id)| *id);
    Ok((specials, max_length))
}

/// Code point ranges (inclusive) that transformers' `BasicTokenizer._clean_text` removes under Python 3.11
/// (`unicodedata.unidata_version == "14.0.0"`): U+0000, U+FFFD and general category C* except `\t \n \r`.
/// Generated with `unicodedata.category`; surrogates (never in a Rust string) are merged into their neighbours.
#[rustfmt::skip]
const PY311_CLEAN_TEXT_DROPPED: &[(u32, u32)] = &[
    (0x0, 0x8), (0xB, 0xC), (0xE, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x378, 0x379), (0x380, 0x383),
    (0x38B, 0x38B), (0x38D, 0x38D), (0x3A2, 0x3A2), (0x530, 0x530), (0x557, 0x558), (0x58B, 0x58C), (0x590, 0x590),
    (0x5C8, 0x5CF), (0x5EB, 0x5EE), (0x5F5, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD), (0x70E, 0x70F), (0x74B, 0x74C),
    (0x7B2, 0x7BF), (0x7FB, 0x7FC), (0x82E, 0x82F), (0x83F, 0x83F), (0x85C, 0x85D), (0x85F, 0x85F), (0x86B, 0x86F),
    (0x88F, 0x897), (0x8E2, 0x8E2), (0x984, 0x984), (0x98D, 0x98E), (0x991, 0x992), (0x9A9, 0x9A9), (0x9B1, 0x9B1),
    (0x9B3, 0x9B5), (0x9BA, 0x9BB), (0x9C5, 0x9C6), (0x9C9, 0x9CA), (0x9CF, 0x9D6), (0x9D8, 0x9DB), (0x9DE, 0x9DE),
    (0x9E4, 0x9E5), (0x9FF, 0xA00), (0xA04, 0xA04), (0xA0B, 0xA0E), (0xA11, 0xA12), (0xA29, 0xA29), (0xA31, 0xA31),
    (0xA34, 0xA34), (0xA37, 0xA37), (0xA3A, 0xA3B), (0xA3D, 0xA3D), (0xA43, 0xA46), (0xA49, 0xA4A), (0xA4E, 0xA50),
    (0xA52, 0xA58), (0xA5D, 0xA5D), (0xA5F, 0xA65), (0xA77, 0xA80), (0xA84, 0xA84), (0xA8E, 0xA8E), (0xA92, 0xA92),
    (0xAA9, 0xAA9), (0xAB1, 0xAB1), (0xAB4, 0xAB4), (0xABA, 0xABB), (0xAC6, 0xAC6), (0xACA, 0xACA), (0xACE, 0xACF),
    (0xAD1, 0xADF), (0xAE4, 0xAE5), (0xAF2, 0xAF8), (0xB00, 0xB00), (0xB04, 0xB04), (0xB0D, 0xB0E), (0xB11, 0xB12),
    (0xB29, 0xB29), (0xB31, 0xB31), (0xB34, 0xB34), (0xB3A, 0xB3B), (0xB45, 0xB46), (0xB49, 0xB4A), (0xB4E, 0xB54),
    (0xB58, 0xB5B), (0xB5E, 0xB5E), (0xB64, 0xB65), (0xB78, 0xB81), (0xB84, 0xB84), (0xB8B, 0xB8D), (0xB91, 0xB91),
    (0xB96, 0xB98), (0xB9B, 0xB9B), (0xB9D, 0xB9D), (0xBA0, 0xBA2), (0xBA5, 0xBA7), (0xBAB, 0xBAD), (0xBBA, 0xBBD),
    (0xBC3, 0xBC5), (0xBC9, 0xBC9), (0xBCE, 0xBCF), (0xBD1, 0xBD6), (0xBD8, 0xBE5), (0xBFB, 0xBFF), (0xC0D, 0xC0D),
    (0xC11, 0xC11), (0xC29, 0xC29), (0xC3A, 0xC3B), (0xC45, 0xC45), (0xC49, 0xC49), (0xC4E, 0xC54), (0xC57, 0xC57),
    (0xC5B, 0xC5C), (0xC5E, 0xC5F), (0xC64, 0xC65), (0xC70, 0xC76), (0xC8D, 0xC8D), (0xC91, 0xC91), (0xCA9, 0xCA9),
    (0xCB4, 0xCB4), (0xCBA, 0xCBB), (0xCC5, 0xCC5), (0xCC9, 0xCC9), (0xCCE, 0xCD4), (0xCD7, 0xCDC), (0xCDF, 0xCDF),
    (0xCE4, 0xCE5), (0xCF0, 0xCF0), (0xCF3, 0xCFF), (0xD0D, 0xD0D), (0xD11, 0xD11), (0xD45, 0xD45), (0xD49, 0xD49),
    (0xD50, 0xD53), (0xD64, 0xD65), (0xD80, 0xD80), (0xD84, 0xD84), (0xD97, 0xD99), (0xDB2, 0xDB2), (0xDBC, 0xDBC),
    (0xDBE, 0xDBF), (0xDC7, 0xDC9), (0xDCB, 0xDCE), (0xDD5, 0xDD5), (0xDD7, 0xDD7), (0xDE0, 0xDE5), (0xDF0, 0xDF1),
    (0xDF5, 0xE00), (0xE3B, 0xE3E), (0xE5C, 0xE80), (0xE83, 0xE83), (0xE85, 0xE85), (0xE8B, 0xE8B), (0xEA4, 0xEA4),
    (0xEA6, 0xEA6), (0xEBE, 0xEBF), (0xEC5, 0xEC5), (0xEC7, 0xEC7), (0xECE, 0xECF), (0xEDA, 0xEDB), (0xEE0, 0xEFF),
    (0xF48, 0xF48), (0xF6D, 0xF70), (0xF98, 0xF98), (0xFBD, 0xFBD), (0xFCD, 0xFCD), (0xFDB, 0xFFF),
    (0x10C6, 0x10C6), (0x10C8, 0x10CC), (0x10CE, 0x10CF), (0x1249, 0x1249), (0x124E, 0x124F), (0x1257, 0x1257),
    (0x1259, 0x1259), (0x125E, 0x125F), (0x1289, 0x1289), (0x128E, 0x128F), (0x12B1, 0x12B1), (0x12B6, 0x12B7),
    (0x12BF, 0x12BF), (0x12C1, 0x12C1), (0x12C6, 0x12C7), (0x12D7, 0x12D7), (0x1311, 0x1311), (0x1316, 0x1317),
    (0x135B, 0x135C), (0x137D, 0x137F), (0x139A, 0x139F), (0x13F6, 0x13F7), (0x13FE, 0x13FF), (0x169D, 0x169F),
    (0x16F9, 0x16FF), (0x1716, 0x171E), (0x1737, 0x173F), (0x1754, 0x175F), (0x176D, 0x176D), (0x1771, 0x1771),
    (0x1774, 0x177F), (0x17DE, 0x17DF), (0x17EA, 0x17EF), (0x17FA, 0x17FF), (0x180E, 0x180E), (0x181A, 0x181F),
    (0x1879, 0x187F), (0x18AB, 0x18AF), (0x18F6, 0x18FF), (0x191F, 0x191F), (0x192C, 0x192F), (0x193C, 0x193F),
    (0x1941, 0x1943), (0x196E, 0x196F), (0x1975, 0x197F), (0x19AC, 0x19AF), (0x19CA, 0x19CF), (0x19DB, 0x19DD),
    (0x1A1C, 0x1A1D), (0x1A5F, 0x1A5F), (0x1A7D, 0x1A7E), (0x1A8A, 0x1A8F), (0x1A9A, 0x1A9F), (0x1AAE, 0x1AAF),
    (0x1ACF, 0x1AFF), (0x1B4D, 0x1B4F), (0x1B7F, 0x1B7F), (0x1BF4, 0x1BFB), (0x1C38, 0x1C3A), (0x1C4A, 0x1C4C),
    (0x1C89, 0x1C8F), (0x1CBB, 0x1CBC), (0x1CC8, 0x1CCF), (0x1CFB, 0x1CFF), (0x1F16, 0x1F17), (0x1F1E, 0x1F1F),
    (0x1F46, 0x1F47), (0x1F4E, 0x1F4F), (0x1F58, 0x1F58), (0x1F5A, 0x1F5A), (0x1F5C, 0x1F5C), (0x1F5E, 0x1F5E),
    (0x1F7E, 0x1F7F), (0x1FB5, 0x1FB5), (0x1FC5, 0x1FC5), (0x1FD4, 0x1FD5), (0x1FDC, 0x1FDC), (0x1FF0, 0x1FF1),
    (0x1FF5, 0x1FF5), (0x1FFF, 0x1FFF), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x2072, 0x2073),
    (0x208F, 0x208F), (0x209D, 0x209F), (0x20C1, 0x20CF), (0x20F1, 0x20FF), (0x218C, 0x218F), (0x2427, 0x243F),
    (0x244B, 0x245F), (0x2B74, 0x2B75), (0x2B96, 0x2B96), (0x2CF4, 0x2CF8), (0x2D26, 0x2D26), (0x2D28, 0x2D2C),
    (0x2D2E, 0x2D2F), (0x2D68, 0x2D6E), (0x2D71, 0x2D7E), (0x2D97, 0x2D9F), (0x2DA7, 0x2DA7), (0x2DAF, 0x2DAF),
    (0x2DB7, 0x2DB7), (0x2DBF, 0x2DBF), (0x2DC7, 0x2DC7), (0x2DCF, 0x2DCF), (0x2DD7, 0x2DD7), (0x2DDF, 0x2DDF),
    (0x2E5E, 0x2E7F), (0x2E9A, 0x2E9A), (0x2EF4, 0x2EFF), (0x2FD6, 0x2FEF), (0x2FFC, 0x2FFF), (0x3040, 0x3040),
    (0x3097, 0x3098), (0x3100, 0x3104), (0x3130, 0x3130), (0x318F, 0x318F), (0x31E4, 0x31EF), (0x321F, 0x321F),
    (0xA48D, 0xA48F), (0xA4C7, 0xA4CF), (0xA62C, 0xA63F), (0xA6F8, 0xA6FF), (0xA7CB, 0xA7CF), (0xA7D2, 0xA7D2),
    (0xA7D4, 0xA7D4), (0xA7DA, 0xA7F1), (0xA82D, 0xA82F), (0xA83A, 0xA83F), (0xA878, 0xA87F), (0xA8C6, 0xA8CD),
    (0xA8DA, 0xA8DF), (0xA954, 0xA95E), (0xA97D, 0xA97F), (0xA9CE, 0xA9CE), (0xA9DA, 0xA9DD), (0xA9FF, 0xA9FF),
    (0xAA37, 0xAA3F), (0xAA4E, 0xAA4F), (0xAA5A, 0xAA5B), (0xAAC3, 0xAADA), (0xAAF7, 0xAB00), (0xAB07, 0xAB08),
    (0xAB0F, 0xAB10), (0xAB17, 0xAB1F), (0xAB27, 0xAB27), (0xAB2F, 0xAB2F), (0xAB6C, 0xAB6F), (0xABEE, 0xABEF),
    (0xABFA, 0xABFF), (0xD7A4, 0xD7AF), (0xD7C7, 0xD7CA), (0xD7FC, 0xF8FF), (0xFA6E, 0xFA6F), (0xFADA, 0xFAFF),
    (0xFB07, 0xFB12), (0xFB18, 0xFB1C), (0xFB37, 0xFB37), (0xFB3D, 0xFB3D), (0xFB3F, 0xFB3F), (0xFB42, 0xFB42),
    (0xFB45, 0xFB45), (0xFBC3, 0xFBD2), (0xFD90, 0xFD91), (0xFDC8, 0xFDCE), (0xFDD0, 0xFDEF), (0xFE1A, 0xFE1F),
    (0xFE53, 0xFE53), (0xFE67, 0xFE67), (0xFE6C, 0xFE6F), (0xFE75, 0xFE75), (0xFEFD, 0xFF00), (0xFFBF, 0xFFC1),
    (0xFFC8, 0xFFC9), (0xFFD0, 0xFFD1), (0xFFD8, 0xFFD9), (0xFFDD, 0xFFDF), (0xFFE7, 0xFFE7), (0xFFEF, 0xFFFB),
    (0xFFFD, 0xFFFF), (0x1000C, 0x1000C), (0x10027, 0x10027), (0x1003B, 0x1003B), (0x1003E, 0x1003E),
    (0x1004E, 0x1004F), (0x1005E, 0x1007F), (0x100FB, 0x100FF), (0x10103, 0x10106), (0x10134, 0x10136),
    (0x1018F, 0x1018F), (0x1019D, 0x1019F), (0x101A1, 0x101CF), (0x101FE, 0x1027F), (0x1029D, 0x1029F),
    (0x102D1, 0x102DF), (0x102FC, 0x102FF), (0x10324, 0x1032C), (0x1034B, 0x1034F), (0x1037B, 0x1037F),
    (0x1039E, 0x1039E), (0x103C4, 0x103C7), (0x103D6, 0x103FF), (0x1049E, 0x1049F), (0x104AA, 0x104AF),
    (0x104D4, 0x104D7), (0x104FC, 0x104FF), (0x10528, 0x1052F), (0x10564, 0x1056E), (0x1057B, 0x1057B),
    (0x1058B, 0x1058B), (0x10593, 0x10593), (0x10596, 0x10596), (0x105A2, 0x105A2), (0x105B2, 0x105B2),
    (0x105BA, 0x105BA), (0x105BD, 0x105FF), (0x10737, 0x1073F), (0x10756, 0x1075F), (0x10768, 0x1077F),
    (0x10786, 0x10786), (0x107B1, 0x107B1), (0x107BB, 0x107FF), (0x10806, 0x10807), (0x10809, 0x10809),
    (0x10836, 0x10836), (0x10839, 0x1083B), (0x1083D, 0x1083E), (0x10856, 0x10856), (0x1089F, 0x108A6),
    (0x108B0, 0x108DF), (0x108F3, 0x108F3), (0x108F6, 0x108FA), (0x1091C, 0x1091E), (0x1093A, 0x1093E),
    (0x10940, 0x1097F), (0x109B8, 0x109BB), (0x109D0, 0x109D1), (0x10A04, 0x10A04), (0x10A07, 0x10A0B),
    (0x10A14, 0x10A14), (0x10A18, 0x10A18), (0x10A36, 0x10A37), (0x10A3B, 0x10A3E), (0x10A49, 0x10A4F),
    (0x10A59, 0x10A5F), (0x10AA0, 0x10ABF), (0x10AE7, 0x10AEA), (0x10AF7, 0x10AFF), (0x10B36, 0x10B38),
    (0x10B56, 0x10B57), (0x10B73, 0x10B77), (0x10B92, 0x10B98), (0x10B9D, 0x10BA8), (0x10BB0, 0x10BFF),
    (0x10C49, 0x10C7F), (0x10CB3, 0x10CBF), (0x10CF3, 0x10CF9), (0x10D28, 0x10D2F), (0x10D3A, 0x10E5F),
    (0x10E7F, 0x10E7F), (0x10EAA, 0x10EAA), (0x10EAE, 0x10EAF), (0x10EB2, 0x10EFF), (0x10F28, 0x10F2F),
    (0x10F5A, 0x10F6F), (0x10F8A, 0x10FAF), (0x10FCC, 0x10FDF), (0x10FF7, 0x10FFF), (0x1104E, 0x11051),
    (0x11076, 0x1107E), (0x110BD, 0x110BD), (0x110C3, 0x110CF), (0x110E9, 0x110EF), (0x110FA, 0x110FF),
    (0x11135, 0x11135), (0x11148, 0x1114F), (0x11177, 0x1117F), (0x111E0, 0x111E0), (0x111F5, 0x111FF),
    (0x11212, 0x11212), (0x1123F, 0x1127F), (0x11287, 0x11287), (0x11289, 0x11289), (0x1128E, 0x1128E),
    (0x1129E, 0x1129E), (0x112AA, 0x112AF), (0x112EB, 0x112EF), (0x112FA, 0x112FF), (0x11304, 0x11304),
    (0x1130D, 0x1130E), (0x11311, 0x11312), (0x11329, 0x11329), (0x11331, 0x11331), (0x11334, 0x11334),
    (0x1133A, 0x1133A), (0x11345, 0x11346), (0x11349, 0x1134A), (0x1134E, 0x1134F), (0x11351, 0x11356),
    (0x11358, 0x1135C), (0x11364, 0x11365), (0x1136D, 0x1136F), (0x11375, 0x113FF), (0x1145C, 0x1145C),
    (0x11462, 0x1147F), (0x114C8, 0x114CF), (0x114DA, 0x1157F), (0x115B6, 0x115B7), (0x115DE, 0x115FF),
    (0x11645, 0x1164F), (0x1165A, 0x1165F), (0x1166D, 0x1167F), (0x116BA, 0x116BF), (0x116CA, 0x116FF),
    (0x1171B, 0x1171C), (0x1172C, 0x1172F), (0x11747, 0x117FF), (0x1183C, 0x1189F), (0x118F3, 0x118FE),
    (0x11907, 0x11908), (0x1190A, 0x1190B), (0x11914, 0x11914), (0x11917, 0x11917), (0x11936, 0x11936),
    (0x11939, 0x1193A), (0x11947, 0x1194F), (0x1195A, 0x1199F), (0x119A8, 0x119A9), (0x119D8, 0x119D9),
    (0x119E5, 0x119FF), (0x11A48, 0x11A4F), (0x11AA3, 0x11AAF), (0x11AF9, 0x11BFF), (0x11C09, 0x11C09),
    (0x11C37, 0x11C37), (0x11C46, 0x11C4F), (0x11C6D, 0x11C6F), (0x11C90, 0x11C91), (0x11CA8, 0x11CA8),
    (0x11CB7, 0x11CFF), (0x11D07, 0x11D07), (0x11D0A, 0x11D0A), (0x11D37, 0x11D39), (0x11D3B, 0x11D3B),
    (0x11D3E, 0x11D3E), (0x11D48, 0x11D4F), (0x11D5A, 0x11D5F), (0x11D66, 0x11D66), (0x11D69, 0x11D69),
    (0x11D8F, 0x11D8F), (0x11D92, 0x11D92), (0x11D99, 0x11D9F), (0x11DAA, 0x11EDF), (0x11EF9, 0x11FAF),
    (0x11FB1, 0x11FBF), (0x11FF2, 0x11FFE), (0x1239A, 0x123FF), (0x1246F, 0x1246F), (0x12475, 0x1247F),
    (0x12544, 0x12F8F), (0x12FF3, 0x12FFF), (0x1342F, 0x143FF), (0x14647, 0x167FF), (0x16A39, 0x16A3F),
    (0x16A5F, 0x16A5F), (0x16A6A, 0x16A6D), (0x16ABF, 0x16ABF), (0x16ACA, 0x16ACF), (0x16AEE, 0x16AEF),
    (0x16AF6, 0x16AFF), (0x16B46, 0x16B4F), (0x16B5A, 0x16B5A), (0x16B62, 0x16B62), (0x16B78, 0x16B7C),
    (0x16B90, 0x16E3F), (0x16E9B, 0x16EFF), (0x16F4B, 0x16F4E), (0x16F88, 0x16F8E), (0x16FA0, 0x16FDF),
    (0x16FE5, 0x16FEF), (0x16FF2, 0x16FFF), (0x187F8, 0x187FF), (0x18CD6, 0x18CFF), (0x18D09, 0x1AFEF),
    (0x1AFF4, 0x1AFF4), (0x1AFFC, 0x1AFFC), (0x1AFFF, 0x1AFFF), (0x1B123, 0x1B14F), (0x1B153, 0x1B163),
    (0x1B168, 0x1B16F), (0x1B2FC, 0x1BBFF), (0x1BC6B, 0x1BC6F), (0x1BC7D, 0x1BC7F), (0x1BC89, 0x1BC8F),
    (0x1BC9A, 0x1BC9B), (0x1BCA0, 0x1CEFF), (0x1CF2E, 0x1CF2F), (0x1CF47, 0x1CF4F), (0x1CFC4, 0x1CFFF),
    (0x1D0F6, 0x1D0FF), (0x1D127, 0x1D128), (0x1D173, 0x1D17A), (0x1D1EB, 0x1D1FF), (0x1D246, 0x1D2DF),
    (0x1D2F4, 0x1D2FF), (0x1D357, 0x1D35F), (0x1D379, 0x1D3FF), (0x1D455, 0x1D455), (0x1D49D, 0x1D49D),
    (0x1D4A0, 0x1D4A1), (0x1D4A3, 0x1D4A4), (0x1D4A7, 0x1D4A8), (0x1D4AD, 0x1D4AD), (0x1D4BA, 0x1D4BA),
    (0x1D4BC, 0x1D4BC), (0x1D4C4, 0x1D4C4), (0x1D506, 0x1D506), (0x1D50B, 0x1D50C), (0x1D515, 0x1D515),
    (0x1D51D, 0x1D51D), (0x1D53A, 0x1D53A), (0x1D53F, 0x1D53F), (0x1D545, 0x1D545), (0x1D547, 0x1D549),
    (0x1D551, 0x1D551), (0x1D6A6, 0x1D6A7), (0x1D7CC, 0x1D7CD), (0x1DA8C, 0x1DA9A), (0x1DAA0, 0x1DAA0),
    (0x1DAB0, 0x1DEFF), (0x1DF1F, 0x1DFFF), (0x1E007, 0x1E007), (0x1E019, 0x1E01A), (0x1E022, 0x1E022),
    (0x1E025, 0x1E025), (0x1E02B, 0x1E0FF), (0x1E12D, 0x1E12F), (0x1E13E, 0x1E13F), (0x1E14A, 0x1E14D),
    (0x1E150, 0x1E28F), (0x1E2AF, 0x1E2BF), (0x1E2FA, 0x1E2FE), (0x1E300, 0x1E7DF), (0x1E7E7, 0x1E7E7),
    (0x1E7EC, 0x1E7EC), (0x1E7EF, 0x1E7EF), (0x1E7FF, 0x1E7FF), (0x1E8C5, 0x1E8C6), (0x1E8D7, 0x1E8FF),
    (0x1E94C, 0x1E94F), (0x1E95A, 0x1E95D), (0x1E960, 0x1EC70), (0x1ECB5, 0x1ED00), (0x1ED3E, 0x1EDFF),
    (0x1EE04, 0x1EE04), (0x1EE20, 0x1EE20), (0x1EE23, 0x1EE23), (0x1EE25, 0x1EE26), (0x1EE28, 0x1EE28),
    (0x1EE33, 0x1EE33), (0x1EE38, 0x1EE38), (0x1EE3A, 0x1EE3A), (0x1EE3C, 0x1EE41), (0x1EE43, 0x1EE46),
    (0x1EE48, 0x1EE48), (0x1EE4A, 0x1EE4A), (0x1EE4C, 0x1EE4C), (0x1EE50, 0x1EE50), (0x1EE53, 0x1EE53),
    (0x1EE55, 0x1EE56), (0x1EE58, 0x1EE58), (0x1EE5A, 0x1EE5A), (0x1EE5C, 0x1EE5C), (0x1EE5E, 0x1EE5E),
    (0x1EE60, 0x1EE60), (0x1EE63, 0x1EE63), (0x1EE65, 0x1EE66), (0x1EE6B, 0x1EE6B), (0x1EE73, 0x1EE73),
    (0x1EE78, 0x1EE78), (0x1EE7D, 0x1EE7D), (0x1EE7F, 0x1EE7F), (0x1EE8A, 0x1EE8A), (0x1EE9C, 0x1EEA0),
    (0x1EEA4, 0x1EEA4), (0x1EEAA, 0x1EEAA), (0x1EEBC, 0x1EEEF), (0x1EEF2, 0x1EFFF), (0x1F02C, 0x1F02F),
    (0x1F094, 0x1F09F), (0x1F0AF, 0x1F0B0), (0x1F0C0, 0x1F0C0), (0x1F0D0, 0x1F0D0), (0x1F0F6, 0x1F0FF),
    (0x1F1AE, 0x1F1E5), (0x1F203, 0x1F20F), (0x1F23C, 0x1F23F), (0x1F249, 0x1F24F), (0x1F252, 0x1F25F),
    (0x1F266, 0x1F2FF), (0x1F6D8, 0x1F6DC), (0x1F6ED, 0x1F6EF), (0x1F6FD, 0x1F6FF), (0x1F774, 0x1F77F),
    (0x1F7D9, 0x1F7DF), (0x1F7EC, 0x1F7EF), (0x1F7F1, 0x1F7FF), (0x1F80C, 0x1F80F), (0x1F848, 0x1F84F),
    (0x1F85A, 0x1F85F), (0x1F888, 0x1F88F), (0x1F8AE, 0x1F8AF), (0x1F8B2, 0x1F8FF), (0x1FA54, 0x1FA5F),
    (0x1FA6E, 0x1FA6F), (0x1FA75, 0x1FA77), (0x1FA7D, 0x1FA7F), (0x1FA87, 0x1FA8F), (0x1FAAD, 0x1FAAF),
    (0x1FABB, 0x1FABF), (0x1FAC6, 0x1FACF), (0x1FADA, 0x1FADF), (0x1FAE8, 0x1FAEF), (0x1FAF7, 0x1FAFF),
    (0x1FB93, 0x1FB93), (0x1FBCB, 0x1FBEF), (0x1FBFA, 0x1FFFF), (0x2A6E0, 0x2A6FF), (0x2B739, 0x2B73F),
    (0x2B81E, 0x2B81F), (0x2CEA2, 0x2CEAF), (0x2EBE1, 0x2F7FF), (0x2FA1E, 0x2FFFF), (0x3134B, 0xE00FF),
    (0xE01F0, 0x10FFFF),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + std::fmt::Debug>() {}
        check::<ClipTokenizer>();
    }

    #[test]
    fn bytes_to_unicode_is_gpt2() {
        let t = bytes_to_unicode();
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[0], 'Ā');
        let set: HashSet<char> = t.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(byte_symbols_in_vocab_order()[0], "!");
    }

    #[test]
    fn a_shorter_context_pads_and_truncates_to_it() {
        let tok = ClipTokenizer::embedded().unwrap();
        let long = "a red striped circle, a blue dotted square and a green ringed triangle";
        let full = tok.encode(long);
        let short = tok.clone().with_max_length(8).unwrap();
        assert_eq!(short.max_length(), 8);
        let ids = short.encode(long);
        // BOS, the first six content ids, EOS
        assert_eq!(ids.len(), 8);
        assert_eq!(&ids[..7], &full[..7]);
        assert_eq!(ids[7], tok.eos_id());
        let padded = short.encode("a circle");
        assert_eq!(padded.len(), 8);
        assert_eq!(&padded[..4], &tok.encode("a circle")[..4]);
        assert!(padded[4..].iter().all(|&id| id == tok.pad_id()));
        let err = tok.with_max_length(1).unwrap_err().to_string();
        assert!(
            err.contains("model_max_length") && err.contains("at least 2"),
            "{err}"
        );
    }

    #[test]
    fn embedded_table_shape() {
        let (vocab, merges) = vocab_from_bpe_gz(EMBEDDED_BPE_GZ, Path::new(EMBEDDED_NAME)).unwrap();
        assert_eq!(merges.len(), CLIP_NUM_MERGES);
        assert_eq!(vocab.len(), CLIP_VOCAB_SIZE);
        assert_eq!(vocab[SOT], 49406);
        assert_eq!(vocab[EOT], 49407);
        assert_eq!(merges[0], ("i".to_string(), "n".to_string()));
        assert!(
            hf_bpe_is_exact(&vocab, &merges),
            "CLIP's merge table should be well formed"
        );
        let tok = ClipTokenizer::embedded().unwrap();
        assert!(matches!(tok.engine, BpeEngine::Hf(_)));
    }

    /// `tokenizers`' heap BPE and the port of the Python loop agree on every vocabulary token and on random
    /// concatenations of tokens.
    #[test]
    fn hf_bpe_matches_python_loop() {
        let (vocab, merges) = vocab_from_bpe_gz(EMBEDDED_BPE_GZ, Path::new(EMBEDDED_NAME)).unwrap();
        let hf_vocab: HfVocab = vocab.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let hf = BPE::builder()
            .vocab_and_merges(hf_vocab, merges.clone())
            .end_of_word_suffix(EOW.to_string())
            .cache_capacity(0)
            .build()
            .unwrap();
        let reference = ReferenceBpe::new(&merges);
        let mut words: Vec<String> = vocab
            .keys()
            .filter(|t| *t != SOT && *t != EOT)
            .map(|t| t.strip_suffix(EOW).unwrap_or(t).to_string())
            .collect();
        words.sort();
        // Deterministic pseudo-random concatenations of 2-4 tokens.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as usize) % n
        };
        let base = words.clone();
        for _ in 0..20_000 {
            let k = 2 + next(3);
            let w: String = (0..k).map(|_| base[next(base.len())].as_str()).collect();
            words.push(w);
        }
        // Repetitive words exercise the "merge every occurrence" rule.
        for w in [
            "aaaaaaa",
            "abababab",
            "lllllllll",
            "!!!!!!!!",
            "ĠĠĠĠ",
            "ðŁĺĢðŁĺĢðŁĺĢ",
            "ooooo",
        ] {
            words.push(w.to_string());
        }
        let mut mismatches = 0;
        for w in &words {
            let got: Vec<String> = hf
                .tokenize(w)
                .unwrap()
                .into_iter()
                .map(|t| t.value)
                .collect();
            let want = reference.bpe(w);
            if got != want {
                mismatches += 1;
                if mismatches < 10 {
                    eprintln!("{w:?}: tokenizers {got:?} vs python {want:?}");
                }
            }
        }
        assert_eq!(mismatches, 0, "of {} words", words.len());
    }

    #[test]
    fn reference_engine_is_used_for_irregular_tables() {
        // A merge that uses a token created by a later merge: not safe for the heap algorithm.
        let mut vocab: HashMap<String, u32> = HashMap::new();
        for (i, s) in byte_symbols_in_vocab_order().into_iter().enumerate() {
            vocab.insert(format!("{s}{EOW}"), (i + 256) as u32);
            vocab.insert(s, i as u32);
        }
        let merges = vec![
            ("ab".to_string(), "a".to_string()),
            ("a".to_string(), "b".to_string()),
        ];
        vocab.insert("aba".into(), 512);
        vocab.insert("ab".into(), 513);
        vocab.insert(SOT.into(), 514);
        vocab.insert(EOT.into(), 515);
        assert!(!hf_bpe_is_exact(&vocab, &merges));
        let tok = ClipTokenizer::build(vocab, merges, SpecialTokens::default(), 77, "test".into())
            .unwrap();
        assert!(matches!(tok.engine, BpeEngine::Reference(_)));
        // Python: merge (a,b) everywhere first -> [ab, ab, a</w>] (no (ab,a</w>) merge).
        assert_eq!(tok.tokens("ababa"), vec!["ab", "ab", "a</w>"]);
    }

    #[test]
    fn clean_text_categories() {
        let tok = ClipTokenizer::embedded().unwrap();
        // Cc, Cf (soft hyphen, ZWJ, BOM), Co (private use), Cn (unassigned U+0378) and U+FFFD are dropped.
        assert_eq!(
            tok.basic_clean("a\u{0}b\u{7}c\u{AD}d\u{200D}e\u{FEFF}f\u{E000}g\u{378}h\u{FFFD}i"),
            "abcdefghi"
        );
        // \t \n \r and Zs are spaces; U+2028 splits too.
        assert_eq!(
            tok.basic_clean(" A\tB\nC\rD\u{A0}E\u{3000}F\u{2028}G  "),
            "a b c d e f g"
        );
        // CJK ideographs are spaced, NFC, lowercase without accent stripping, no punctuation split.
        assert_eq!(tok.basic_clean("猫犬Cafe\u{301}!?"), "猫 犬 café!?");
        // Final sigma as Python's str.lower().
        assert_eq!(tok.basic_clean("ΟΔΟΣ ΣΑ"), "οδος σα");
        // Assigned after Unicode 14.0 (Python 3.11's tables), so `Cn` for the reference: dropped.
        // U+1FAE8 shaking face (15.0), U+31350 CJK Ext. H (15.0), U+0897 Arabic pepet (16.0).
        assert_eq!(tok.basic_clean("a\u{1FAE8}b\u{31350}c\u{897}d"), "abcd");
        assert!(
            !is_dropped_by_clean_text('\u{1FAE7}'),
            "U+1FAE7 melting face is Unicode 14.0"
        );
        // U+0345 survives the cleanup but matches no branch of the pattern (as in Python's `regex`).
        assert_eq!(tok.tokens("o\u{345}"), vec!["o</w>"]);
        assert_eq!(tok.tokens("\u{345}"), Vec::<String>::new());
    }

    #[test]
    fn special_tokens_in_text() {
        let tok = ClipTokenizer::embedded().unwrap();
        assert_eq!(
            tok.encode_full("a<|endoftext|>b"),
            vec![49406, 320, 49407, 321, 49407]
        );
        assert_eq!(tok.tokens("!<|endoftext|>"), vec!["!</w>", "<|endoftext|>"]);
        // Upper case is not split out before cleanup; it is lowercased, then matched by the pattern.
        assert_eq!(tok.tokens("<|ENDOFTEXT|>"), vec!["<|endoftext|>"]);
    }
}
