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

const SOT: &str = "<|startoftext|>";
const EOT: &str = "<|endoftext|>";
const EOW: &str = "</w>";

/// CLIP's pre-tokenization pattern (transformers / open_clip), case-insensitive as there.
const CLIP_PATTERN: &str =
    r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

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
    bs.into_iter().map(|b| table[b as usize].to_string()).collect()
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
    /// `C*` except `\t\n\r`, plus U+FFFD: dropped by `_clean_text`.
    drop_chars: Regex,
    /// `\t\n\r` and `Zs`: turned into a space by `_clean_text`.
    space_chars: Regex,
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
    /// Extra added tokens with explicit ids (`added_tokens_decoder` / `added_tokens.json`).
    extra: Vec<(String, u32)>,
}

impl Default for SpecialTokens {
    fn default() -> Self {
        SpecialTokens {
            bos: SOT.to_string(),
            eos: EOT.to_string(),
            unk: EOT.to_string(),
            pad: EOT.to_string(),
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
        // the vocabulary gets the next free id, as `_add_tokens` does.
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
        let pad_id = special_id(&specials.pad, &mut added);
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
            drop_chars: Regex::new(r"[[\p{C}\x{FFFD}]--[\t\n\r]]").expect("control-char class compiles"),
            space_chars: Regex::new(r"[\t\n\r\p{Zs}]").expect("space class compiles"),
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
        let text = self.drop_chars.replace_all(text, "");
        let text = self.space_chars.replace_all(&text, " ");
        let mut spaced = String::with_capacity(text.len());
        for c in text.chars() {
            if is_cjk_ideograph(c) {
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
            if let Some((tok, id)) = self.added.iter().find(|(t, _)| rest.starts_with(t.as_str())) {
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
        if !vocab.contains_key(c.to_string().as_str()) || !vocab.contains_key(format!("{c}{EOW}").as_str()) {
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
fn vocab_from_bpe_gz(bytes: &[u8], path: &Path) -> Result<(HashMap<String, u32>, Vec<(String, String)>)> {
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
    let text = String::from_utf8(raw)
        .map_err(|e| Error::bad_file(path, format!("the BPE vocabulary is not valid UTF-8: {e}")))?;
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
    let vocab: HashMap<String, u32> = tokens.into_iter().enumerate().map(|(i, t)| (t, i as u32)).collect();
    Ok((vocab, merges))
}

/// Parses merge lines ("a b"); `first_line` is the 0-based line number of `lines[0]` in the file.
fn parse_merge_lines(lines: &[&str], first_line: usize, path: &Path) -> Result<Vec<(String, String)>> {
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
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
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
        for (field, slot) in [
            ("bos_token", &mut specials.bos),
            ("eos_token", &mut specials.eos),
            ("unk_token", &mut specials.unk),
            ("pad_token", &mut specials.pad),
        ] {
            match config.get(field) {
                None | Some(serde_json::Value::Null) => {}
                Some(v) => {
                    *slot = token_content(v).ok_or_else(|| {
                        Error::config(&config_path, field, "expected a string or an object with \"content\"")
                    })?
                }
            }
        }
        match config.get("model_max_length") {
            None | Some(serde_json::Value::Null) => {}
            Some(v) => {
                // transformers writes huge sentinels as floats (1e30) for "no limit"; SD folders say 77.
                let n = v
                    .as_u64()
                    .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f.min(u64::MAX as f64) as u64))
                    .ok_or_else(|| Error::config(&config_path, "model_max_length", "expected a positive integer"))?;
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
                Error::config(&config_path, "added_tokens_decoder", "expected an object id -> AddedToken")
            })?;
            for (id, tok) in obj {
                let id: u32 = id.parse().map_err(|_| {
                    Error::config(&config_path, "added_tokens_decoder", format!("key {id:?} is not an integer id"))
                })?;
                let content = token_content(tok).ok_or_else(|| {
                    Error::config(&config_path, "added_tokens_decoder", format!("entry {id} has no \"content\""))
                })?;
                specials.extra.push((content, id));
            }
        }
    }
    if legacy {
        if let Some(map) = read_json_object(&map_path)? {
            for (field, slot) in [
                ("bos_token", &mut specials.bos),
                ("eos_token", &mut specials.eos),
                ("unk_token", &mut specials.unk),
                ("pad_token", &mut specials.pad),
            ] {
                match map.get(field) {
                    None | Some(serde_json::Value::Null) => {}
                    Some(v) => {
                        *slot = token_content(v).ok_or_else(|| {
                            Error::config(&map_path, field, "expected a string or an object with \"content\"")
                        })?
                    }
                }
            }
        }
        if let Some(added) = read_json_object(&added_path)? {
            for (tok, id) in added {
                let id = id
                    .as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| Error::config(&added_path, tok.clone(), "expected an integer id"))?;
                specials.extra.push((tok, id));
            }
        }
    }
    specials.extra.sort_by_key(|(_, id)| *id);
    Ok((specials, max_length))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn embedded_table_shape() {
        let (vocab, merges) = vocab_from_bpe_gz(EMBEDDED_BPE_GZ, Path::new(EMBEDDED_NAME)).unwrap();
        assert_eq!(merges.len(), CLIP_NUM_MERGES);
        assert_eq!(vocab.len(), CLIP_VOCAB_SIZE);
        assert_eq!(vocab[SOT], 49406);
        assert_eq!(vocab[EOT], 49407);
        assert_eq!(merges[0], ("i".to_string(), "n".to_string()));
        assert!(hf_bpe_is_exact(&vocab, &merges), "CLIP's merge table should be well formed");
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
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as usize) % n
        };
        let base = words.clone();
        for _ in 0..20_000 {
            let k = 2 + next(3);
            let w: String = (0..k).map(|_| base[next(base.len())].as_str()).collect();
            words.push(w);
        }
        // Repetitive words exercise the "merge every occurrence" rule.
        for w in ["aaaaaaa", "abababab", "lllllllll", "!!!!!!!!", "ĠĠĠĠ", "ðŁĺĢðŁĺĢðŁĺĢ", "ooooo"] {
            words.push(w.to_string());
        }
        let mut mismatches = 0;
        for w in &words {
            let got: Vec<String> = hf.tokenize(w).unwrap().into_iter().map(|t| t.value).collect();
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
        let tok = ClipTokenizer::build(vocab, merges, SpecialTokens::default(), 77, "test".into()).unwrap();
        assert!(matches!(tok.engine, BpeEngine::Reference(_)));
        // Python: merge (a,b) everywhere first -> [ab, ab, a</w>] (no (ab,a</w>) merge).
        assert_eq!(tok.tokens("ababa"), vec!["ab", "ab", "a</w>"]);
    }

    #[test]
    fn clean_text_categories() {
        let tok = ClipTokenizer::embedded().unwrap();
        // Cc, Cf (soft hyphen, ZWJ, BOM), Co (private use), Cn (unassigned U+0378) and U+FFFD are dropped.
        assert_eq!(tok.basic_clean("a\u{0}b\u{7}c\u{AD}d\u{200D}e\u{FEFF}f\u{E000}g\u{378}h\u{FFFD}i"), "abcdefghi");
        // \t \n \r and Zs are spaces; U+2028 splits too.
        assert_eq!(tok.basic_clean(" A\tB\nC\rD\u{A0}E\u{3000}F\u{2028}G  "), "a b c d e f g");
        // CJK ideographs are spaced, NFC, lowercase without accent stripping, no punctuation split.
        assert_eq!(tok.basic_clean("猫犬Cafe\u{301}!?"), "猫 犬 café!?");
        // Final sigma as Python's str.lower().
        assert_eq!(tok.basic_clean("ΟΔΟΣ ΣΑ"), "οδος σα");
    }

    #[test]
    fn special_tokens_in_text() {
        let tok = ClipTokenizer::embedded().unwrap();
        assert_eq!(tok.encode_full("a<|endoftext|>b"), vec![49406, 320, 49407, 321, 49407]);
        assert_eq!(tok.tokens("!<|endoftext|>"), vec!["!</w>", "<|endoftext|>"]);
        // Upper case is not split out before cleanup; it is lowercased, then matched by the pattern.
        assert_eq!(tok.tokens("<|ENDOFTEXT|>"), vec!["<|endoftext|>"]);
    }
}

#[cfg(test)]
mod unicode_dump_tmp {
    #[test]
    fn dump() {
        let Some(out) = std::env::var_os("CLORA_UNICODE_DUMP") else { return };
        let drop = regex::Regex::new(r"^[[\p{C}\x{FFFD}]--[\t\n\r]]$").unwrap();
        let l = regex::Regex::new(r"^(?i:[\p{L}])$").unwrap();
        let l2 = regex::Regex::new(r"^[\p{L}]$").unwrap();
        let n = regex::Regex::new(r"^(?i:[\p{N}])$").unwrap();
        let o = regex::Regex::new(r"^(?i:[^\s\p{L}\p{N}])$").unwrap();
        let mut s = String::new();
        let mut dropped = String::new();
        for cp in 0..0x110000u32 {
            let Some(c) = char::from_u32(cp) else { continue };
            let t = c.to_string();
            if drop.is_match(&t) || cp == 0 {
                dropped.push_str(&format!("{cp:x}\n"));
                continue;
            }
            let mut k = String::new();
            if l.is_match(&t) { k.push('L') }
            if n.is_match(&t) { k.push('N') }
            if o.is_match(&t) { k.push('O') }
            if k.is_empty() { k.push('-') }
            let k2 = if l2.is_match(&t) { "L" } else { "" };
            let lower: Vec<String> = c.to_lowercase().map(|x| format!("{:x}", x as u32)).collect();
            s.push_str(&format!("{cp:x}\t{k}\t{}\t{}\t{k2}\n", lower.join(" "), c.is_whitespace() as u8));
        }
        std::fs::write(&out, s).unwrap();
        std::fs::write(format!("{}.dropped", out.to_string_lossy()), dropped).unwrap();
    }
}
