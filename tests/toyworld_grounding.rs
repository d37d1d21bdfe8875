//! The token-attention loss's targets (which caption object each token names, where each object lies) and the
//! loss itself on hand-made attention maps.

use burn::tensor::{ElementConversion, Tensor, TensorData};
use clora_harness::backend::Cpu;
use clora_harness::models::clip::tokenizer::ClipTokenizer;
use clora_harness::toyworld::caption::{caption_phrases, training_caption, CaptionOrder};
use clora_harness::toyworld::grounding::{ground, Grounding, MAX_OBJECTS, NO_OBJECT};
use clora_harness::toyworld::scene::{PlainWorld, CANVAS};
use clora_harness::toyworld::shape::ShapeKind;
use clora_harness::toyworld::token_attention::token_attention_loss;

const GRID: usize = 8;

fn world() -> PlainWorld {
    PlainWorld {
        object_counts: [0.2, 0.4, 0.4],
        pattern_rate: 0.5,
        ..PlainWorld::default()
    }
}

#[test]
fn each_grounded_token_is_a_word_of_its_object() {
    let tok = ClipTokenizer::embedded().unwrap();
    let world = world();
    let mut grounded_phrases = 0;
    for order in [CaptionOrder::LeftToRight, CaptionOrder::Shuffled] {
        for i in 0..300u64 {
            let scene = world.sample(i).unwrap();
            let g = ground(&scene, i, 0.12, order, &tok, GRID).unwrap();
            let caption = training_caption(&scene, i, 0.12, order);
            // Token k of `tokens(caption)` sits at position k + 1 (after BOS).
            let tokens = tok.tokens(&caption);
            assert_eq!(g.token_object.len(), tok.max_length());
            assert_eq!(g.token_object[0], NO_OBJECT);
            for (j, (_, phrase)) in caption_phrases(&scene, i, 0.12, order).iter().enumerate() {
                let words: Vec<String> = g
                    .token_object
                    .iter()
                    .enumerate()
                    .filter(|(_, &o)| o as usize == j)
                    .map(|(pos, _)| tokens[pos - 1].trim_end_matches("</w>").to_string())
                    .collect();
                // The phrase without its article: "red striped square", "circle".
                let expected: Vec<&str> = phrase.split_whitespace().skip(1).collect();
                assert_eq!(
                    words.join(" "),
                    expected.join(" "),
                    "`{caption}`, object {j}"
                );
                grounded_phrases += 1;
            }
            let named = g.token_object.iter().filter(|&&o| o != NO_OBJECT).count();
            assert!(
                named < tokens.len(),
                "`{caption}`: articles, separators are not grounded"
            );
        }
    }
    assert!(grounded_phrases > 1000);
}

#[test]
fn coverage_is_each_objects_share_of_each_cell() {
    let tok = ClipTokenizer::embedded().unwrap();
    let world = world();
    let cells = GRID * GRID;
    let cell_px = (CANVAS / GRID) as f32;
    let mut circles = 0;
    for i in 0..200u64 {
        let scene = world.sample(i).unwrap();
        let g = ground(&scene, i, 0.0, CaptionOrder::LeftToRight, &tok, GRID).unwrap();
        let phrases = caption_phrases(&scene, i, 0.0, CaptionOrder::LeftToRight);
        for j in 0..MAX_OBJECTS {
            let cov = &g.coverage[j * cells..(j + 1) * cells];
            let Some((k, _)) = phrases.get(j) else {
                assert!(cov.iter().all(|&v| v == 0.0), "seed {i}: no object {j}");
                continue;
            };
            let o = &scene.objects[*k];
            assert!(cov.iter().all(|&v| (0.0..=1.0).contains(&v)));
            // The cell under the object's centre is covered.
            let centre = (o.cy / cell_px) as usize * GRID + (o.cx / cell_px) as usize;
            assert!(cov[centre] > 0.0, "seed {i}, object {j}");
            if o.shape == ShapeKind::Circle {
                // Pixel centres inside a circle: its area, to within its rim.
                let area: f32 = cov.iter().sum::<f32>() * cell_px * cell_px;
                let exact = std::f32::consts::PI * o.r * o.r;
                assert!(
                    (area - exact).abs() < 2.0 * std::f32::consts::PI * o.r,
                    "{area} vs {exact}"
                );
                circles += 1;
            }
        }
        // Objects do not overlap: no cell is covered more than once.
        for c in 0..cells {
            let sum: f32 = (0..MAX_OBJECTS).map(|j| g.coverage[j * cells + c]).sum();
            assert!(sum <= 1.0 + 1e-5);
        }
    }
    assert!(circles > 50);
}

#[test]
fn targets_hold_the_objects_coverage_in_the_grounded_tokens_columns() {
    // SD 1.x's context, and a shorter one (`harness toyworld train --text-tokens 32`)
    for context in [77, 32] {
        targets_at_context(context);
    }
}

fn targets_at_context(context: usize) {
    let tok = ClipTokenizer::embedded()
        .unwrap()
        .with_max_length(context)
        .unwrap();
    let world = world();
    let captions: Vec<String> = (0..4u64)
        .map(|i| {
            let scene = world
                .sample(clora_harness::toyworld::latent_data::TRAIN_SEED_BASE + i)
                .unwrap();
            training_caption(&scene, i, 0.12, CaptionOrder::LeftToRight)
        })
        .collect();
    let g = Grounding::of_training_set(&world, &captions, CaptionOrder::LeftToRight, &tok, GRID)
        .unwrap();
    assert_eq!(g.tokens, context);
    let (cells, tokens) = (GRID * GRID, context);
    let (coverage, selected) = g.targets(&[Some(2), None]);
    assert_eq!(coverage.len(), 2 * cells * tokens);
    assert_eq!(selected.len(), 2 * tokens);
    // The row trained on the empty prompt grounds nothing.
    assert!(selected[tokens..].iter().all(|&v| v == 0.0));
    assert!(coverage[cells * tokens..].iter().all(|&v| v == 0.0));
    let e = &g.examples[2];
    for k in 0..tokens {
        let column: Vec<f32> = (0..cells).map(|c| coverage[c * tokens + k]).collect();
        match e.token_object[k] {
            NO_OBJECT => {
                assert_eq!(selected[k], 0.0);
                assert!(column.iter().all(|&v| v == 0.0));
            }
            j => {
                assert_eq!(selected[k], 1.0);
                assert_eq!(
                    column,
                    e.coverage[j as usize * cells..(j as usize + 1) * cells]
                );
            }
        }
    }
    // A caption that is not its scene's is refused, naming the example.
    let mut wrong = captions.clone();
    wrong[1] = "a red circle".into();
    let err = Grounding::of_training_set(&world, &wrong, CaptionOrder::LeftToRight, &tok, GRID)
        .unwrap_err()
        .to_string();
    assert!(err.contains("training example 1"), "{err}");
    // A grid that does not divide the canvas is refused.
    let scene = world.sample(0).unwrap();
    assert!(ground(&scene, 0, 0.0, CaptionOrder::LeftToRight, &tok, 7).is_err());
}

/// Maps `[1, heads, n_q, n_k]` from per-query weights of one key column (other keys share the rest evenly).
fn maps(columns: &[(usize, Vec<f32>)], heads: usize, n_q: usize, n_k: usize) -> Tensor<Cpu, 4> {
    let mut v = vec![0f32; heads * n_q * n_k];
    for h in 0..heads {
        for q in 0..n_q {
            let row = &mut v[(h * n_q + q) * n_k..(h * n_q + q + 1) * n_k];
            let mut used = 0.0;
            for (k, w) in columns {
                row[*k] = w[q];
                used += w[q];
            }
            let free = n_k - columns.len();
            for (k, x) in row.iter_mut().enumerate() {
                if !columns.iter().any(|(c, _)| *c == k) {
                    *x = (1.0 - used) / free as f32;
                }
            }
        }
    }
    Tensor::from_data(
        TensorData::new(v, [1, heads, n_q, n_k]),
        &Default::default(),
    )
}

#[test]
fn token_attention_loss_is_the_squared_share_of_attention_outside_the_object() {
    let (n_q, n_k) = (4, 5);
    let dev = Default::default();
    // Token 1's object covers queries 0 and 1 (the second only half); token 3 is not grounded.
    let mask = [1.0f32, 0.5, 0.0, 0.0];
    let mut cov = vec![0f32; n_q * n_k];
    for q in 0..n_q {
        cov[q * n_k + 1] = mask[q];
        cov[q * n_k + 3] = 1.0;
    }
    let coverage = Tensor::<Cpu, 3>::from_data(TensorData::new(cov, [1, n_q, n_k]), &dev);
    let selected = Tensor::<Cpu, 2>::from_data(
        TensorData::new(vec![0.0f32, 1.0, 0.0, 0.0, 0.0], [1, n_k]),
        &dev,
    );
    let loss = |m: Tensor<Cpu, 4>| {
        token_attention_loss(&[(0, m)], coverage.clone(), selected.clone(), 1)
            .into_scalar()
            .elem::<f64>()
    };
    // All of token 1's attention on query 0: inside.
    let inside = maps(&[(1, vec![0.9, 0.0, 0.0, 0.0])], 2, n_q, n_k);
    assert!(loss(inside) < 1e-9);
    // Even over the queries: share inside (1 + 0.5) / 4, loss (1 - 0.375)^2.
    let even = maps(&[(1, vec![0.3; 4])], 2, n_q, n_k);
    assert!((loss(even) - 0.625f64.powi(2)).abs() < 1e-6);
    // All outside: 1. Heads are averaged: one head inside, one outside gives the mean of their columns.
    let outside = maps(&[(1, vec![0.0, 0.0, 0.4, 0.4])], 2, n_q, n_k);
    assert!((loss(outside.clone()) - 1.0).abs() < 1e-6);
    let inside = maps(&[(1, vec![0.8, 0.0, 0.0, 0.0])], 1, n_q, n_k);
    let outside_one = maps(&[(1, vec![0.0, 0.0, 0.4, 0.4])], 1, n_q, n_k);
    let mixed = Tensor::cat(vec![inside, outside_one], 1);
    // Mean column (0.4, 0, 0.2, 0.2): share inside 0.5.
    assert!((loss(mixed) - 0.25).abs() < 1e-6);
    // Layers are averaged; no grounded token or no maps: 0.
    let two_layers = token_attention_loss(
        &[
            (0, maps(&[(1, vec![0.9, 0.0, 0.0, 0.0])], 2, n_q, n_k)),
            (1, outside),
        ],
        coverage.clone(),
        selected.clone(),
        1,
    )
    .into_scalar()
    .elem::<f64>();
    assert!((two_layers - 0.5).abs() < 1e-6);
    let none = token_attention_loss::<Cpu>(&[], coverage, selected, 1);
    assert_eq!(none.into_scalar().elem::<f64>(), 0.0);
}
