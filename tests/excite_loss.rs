//! Attend-and-Excite's loss against diffusers 0.27.2's `StableDiffusionAttendAndExcitePipeline`
//! (`_compute_max_attention_per_index`, `_compute_loss`; fixtures: tools/fixtures/make_excite_fixtures.py):
//! the smoothed peaks and the loss within 1e-5, the gradient w.r.t. the attention maps within 1e-5.

mod common;

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use clora_harness::methods::excite::loss::{
    excite_loss, gaussian_kernel, max_attention_per_token, smooth,
};
use clora_harness::methods::excite::ExciteParams;
use common::*;

type AD = Autodiff<B>;

#[test]
fn peaks_loss_and_gradient_match_diffusers() {
    let r = Reference::open(&fixtures().join("excite/loss.safetensors"));
    let kernel = gaussian_kernel(ExciteParams::default().sigma);
    let mut case = 0;
    while r.has(&format!("case{case}.maps")) {
        let (maps, shape) = r.f32(&format!("case{case}.maps"));
        let (hw, _) = r.i64(&format!("case{case}.hw"));
        let (tokens, _) = r.i64(&format!("case{case}.tokens"));
        let tokens: Vec<usize> = tokens.iter().map(|&t| t as usize).collect();
        let raw = Tensor::<AD, 2>::from_data(TensorData::new(maps, shape.clone()), &device())
            .require_grad();
        // diffusers: every position but the start token and the last (76 of 77)
        let peaks = max_attention_per_token(
            raw.clone(),
            (hw[0] as usize, hw[1] as usize),
            shape[1] - 1,
            &tokens,
            100.0,
            Some(&kernel),
        );
        let loss = excite_loss(peaks.clone());
        let grads = loss.backward();
        let grad = raw.grad(&grads).expect("gradient of the maps");
        let name = |what: &str| format!("case{case}.{what}");
        assert_close(&name("peaks"), &peaks.inner(), &r.f32(&name("peaks")), 1e-5);
        assert_close(&name("loss"), &loss.inner(), &r.f32(&name("loss")), 1e-5);
        assert_close(&name("grad"), &grad, &r.f32(&name("grad")), 1e-5);
        case += 1;
    }
    assert!(case >= 4, "expected at least 4 fixture cases, found {case}");
}

#[test]
fn the_smoothing_kernel_is_the_references_and_reflects_at_the_border() {
    // 1-d factor exp(-((x - 1) / (2 * 0.5))^2) = [e^-1, 1, e^-1], normalised
    let e = (-1.0f64).exp();
    let g = [
        e / (1.0 + 2.0 * e),
        1.0 / (1.0 + 2.0 * e),
        e / (1.0 + 2.0 * e),
    ];
    let k = gaussian_kernel(0.5);
    for y in 0..3 {
        for x in 0..3 {
            assert!((k[y][x] - g[y] * g[x]).abs() < 1e-12);
        }
    }
    // a single 1 in the corner of a 3x3 image; reflect padding makes row -1 a copy of row 1 and column -1 a
    // copy of column 1 (zeros here), so the one is seen once, by the windows around it
    let img = Tensor::<B, 2>::from_data(
        TensorData::new(vec![1.0f32, 0., 0., 0., 0., 0., 0., 0., 0.], [3, 3]),
        &device(),
    );
    let out = smooth(img, &k).into_data().to_vec::<f32>().unwrap();
    // (0, 0): the one at the window's centre
    assert!((out[0] as f64 - g[1] * g[1]).abs() < 1e-6, "{out:?}");
    // (1, 1): the one at (0,0) is its upper-left neighbour
    assert!((out[4] as f64 - g[0] * g[0]).abs() < 1e-6, "{out:?}");
    // (0, 1): the one is its left neighbour; the reflected row -1 is row 1 (zeros)
    assert!((out[1] as f64 - g[1] * g[0]).abs() < 1e-6, "{out:?}");
}

#[test]
fn the_softmax_range_is_what_end_says() {
    // two cells, five positions: with end = 3 the softmax runs over positions 1 and 2 only
    let maps = Tensor::<B, 2>::from_data(
        TensorData::new(
            vec![0.0f32, 0.02, 0.01, 0.5, 0.5, 0.0, 0.0, 0.03, 0.5, 0.5],
            [2, 5],
        ),
        &device(),
    );
    let peaks = max_attention_per_token(maps.clone(), (1, 2), 3, &[1, 2], 100.0, None)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let s = |a: f32, b: f32| a.exp() / (a.exp() + b.exp());
    assert!((peaks[0] - s(2.0, 1.0)).abs() < 1e-6, "{peaks:?}");
    assert!((peaks[1] - s(3.0, 0.0)).abs() < 1e-6, "{peaks:?}");
    // with end = 5 the padding positions take most of the mass
    let wide = max_attention_per_token(maps, (1, 2), 5, &[1], 100.0, None)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert!(wide[0] < 1e-10, "{wide:?}");
    // the loss: the weakest token
    let loss = excite_loss(Tensor::<B, 1>::from_data(
        TensorData::new(vec![0.9f32, 0.4, 1.2], [3]),
        &device(),
    ))
    .into_scalar();
    assert!((loss - 0.6).abs() < 1e-6);
    let none = excite_loss(Tensor::<B, 1>::from_data(
        TensorData::new(vec![1.0f32, 1.3], [2]),
        &device(),
    ))
    .into_scalar();
    assert_eq!(none, 0.0);
}
