//! Where a training caption's words lie in its scene, for the token-attention loss
//! ([`token_attention_loss`](super::token_attention::token_attention_loss)): per example, which caption object
//! each token position names (its colour, pattern and shape words, or a concept's trigger word and class noun;
//! not the article, the separators or the background words) and how much of each cell of the cross-attention
//! grid each caption object covers.

use super::caption::{caption_phrases, style_prefix, training_caption, CaptionOrder};
use super::error::{ToyError, ToyResult};
use super::latent_data::{BARE_RATE, TRAIN_SEED_BASE};
use super::scene::{PlainWorld, Scene, Style, CANVAS};
use crate::models::clip::tokenizer::ClipTokenizer;

/// Objects a caption names at most.
pub const MAX_OBJECTS: usize = 3;

/// `token_object`'s value for a token that names no object.
pub const NO_OBJECT: u8 = u8::MAX;

/// One example's grounding.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleGrounding {
    /// `[tokens]` (the tokenizer's context): the caption object (its place in the caption) each token position
    /// names, or [`NO_OBJECT`].
    pub token_object: Vec<u8>,
    /// `[MAX_OBJECTS, grid * grid]`, row-major cells: the share of each cell's pixels the caption object covers
    /// where it is visible (an object drawn earlier covers later ones, as in the renderer).
    pub coverage: Vec<f32>,
}

/// The grounding of a whole training set (the examples of [`LatentSet`](super::latent_data::LatentSet)).
#[derive(Debug, Clone)]
pub struct Grounding {
    /// Cells per side of the grid the coverage is measured on (the cross-attention maps' resolution).
    pub grid: usize,
    /// Token positions per caption (the tokenizer's context, 77 for SD 1.x).
    pub tokens: usize,
    pub examples: Vec<ExampleGrounding>,
}

impl Grounding {
    /// The grounding of a training set's scenes, `captions` (the cached set's, in order: the scenes of `world`
    /// with seeds `TRAIN_SEED_BASE + i`); a caption that is not its scene's is an error.
    pub fn of_training_set(
        world: &PlainWorld,
        captions: &[String],
        order: CaptionOrder,
        tokenizer: &ClipTokenizer,
        grid: usize,
    ) -> ToyResult<Self> {
        let examples = captions
            .iter()
            .enumerate()
            .map(|(i, cached)| {
                let scene = world.sample(TRAIN_SEED_BASE + i as u64)?;
                let own = training_caption(&scene, i as u64, BARE_RATE, order);
                if own != *cached {
                    return Err(ToyError::Training(format!(
                        "training example {i}: its caption `{cached}` is not its scene's (`{own}`)"
                    )));
                }
                ground(&scene, i as u64, BARE_RATE, order, tokenizer, grid)
            })
            .collect::<ToyResult<_>>()?;
        Ok(Self {
            grid,
            tokens: tokenizer.max_length(),
            examples,
        })
    }

    /// The loss's targets for a batch whose row `r` shows example `rows[r]` with its caption (`None`: the
    /// caption was dropped, so nothing is grounded): `[b, grid * grid, tokens]`, each grounded token's column
    /// its object's coverage, and `[b, tokens]`, 1 where a token is grounded.
    pub fn targets(&self, rows: &[Option<usize>]) -> (Vec<f32>, Vec<f32>) {
        let (cells, tokens) = (self.grid * self.grid, self.tokens);
        let mut coverage = vec![0f32; rows.len() * cells * tokens];
        let mut selected = vec![0f32; rows.len() * tokens];
        for (r, example) in rows.iter().enumerate() {
            let Some(i) = example else { continue };
            let g = &self.examples[*i];
            for (k, &obj) in g.token_object.iter().enumerate() {
                if obj == NO_OBJECT {
                    continue;
                }
                selected[r * tokens + k] = 1.0;
                let cov = &g.coverage[obj as usize * cells..(obj as usize + 1) * cells];
                for (c, &v) in cov.iter().enumerate() {
                    coverage[(r * cells + c) * tokens + k] = v;
                }
            }
        }
        (coverage, selected)
    }
}

/// The grounding of one scene's training caption (see [`training_caption`]: `seed` picks its bare nouns).
pub fn ground(
    scene: &Scene,
    seed: u64,
    bare_rate: f64,
    order: CaptionOrder,
    tokenizer: &ClipTokenizer,
    grid: usize,
) -> ToyResult<ExampleGrounding> {
    if grid == 0 || !CANVAS.is_multiple_of(grid) {
        return Err(ToyError::Training(format!(
            "a grounding grid of {grid} cells per side does not divide the {CANVAS}-pixel canvas"
        )));
    }
    let phrases = caption_phrases(scene, seed, bare_rate, order);
    if phrases.len() > MAX_OBJECTS {
        return Err(ToyError::Scene(format!(
            "{} objects, at most {MAX_OBJECTS} can be grounded",
            phrases.len()
        )));
    }
    // Walk the caption's words as `training_caption` joins them, counting their tokens (CLIP's BPE splits
    // at spaces and punctuation, so a caption's tokens are its words' tokens in order). Position 0 is BOS.
    let context = tokenizer.max_length();
    let mut token_object = vec![NO_OBJECT; context];
    let mut tokens: Vec<String> = Vec::new();
    let mut words = |text: &str, object: Option<usize>, tokens: &mut Vec<String>| {
        for word in text.split_whitespace() {
            for t in tokenizer.tokens(word) {
                let pos = tokens.len() + 1;
                if let (Some(j), true) = (object, pos < context - 1) {
                    token_object[pos] = j as u8;
                }
                tokens.push(t);
            }
        }
    };
    if scene.style == Style::Outline {
        words(&style_prefix(), None, &mut tokens);
    }
    let last = phrases.len() - 1;
    for (j, (_, phrase)) in phrases.iter().enumerate() {
        if j > 0 {
            words(if j == last { "and" } else { "," }, None, &mut tokens);
        }
        // "a" names no attribute; the rest of the phrase is the object's words.
        let (article, rest) = phrase.split_once(' ').unwrap_or(("", phrase));
        words(article, None, &mut tokens);
        words(rest, Some(j), &mut tokens);
    }
    let caption = training_caption(scene, seed, bare_rate, order);
    let expected = tokenizer.tokens(&caption);
    if !expected.starts_with(&tokens) {
        return Err(ToyError::Prompt {
            prompt: caption,
            msg: format!("its words tokenize as {tokens:?}, the caption as {expected:?}"),
        });
    }
    let mut coverage = vec![0f32; MAX_OBJECTS * grid * grid];
    let cell = CANVAS / grid;
    for y in 0..CANVAS {
        for x in 0..CANVAS {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            // The first object containing the pixel's centre is the one drawn there (as `render`).
            let Some(k) = scene
                .objects
                .iter()
                .position(|o| o.shape.sdf(px - o.cx, py - o.cy, o.r) <= 0.0)
            else {
                continue;
            };
            let j = phrases
                .iter()
                .position(|(obj, _)| *obj == k)
                .expect("every object is named");
            coverage[j * grid * grid + (y / cell) * grid + x / cell] += 1.0 / (cell * cell) as f32;
        }
    }
    Ok(ExampleGrounding {
        token_object,
        coverage,
    })
}
