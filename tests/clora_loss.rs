//! CLoRA's contrastive loss against pytorch_metric_learning 2.4.1 `NTXentLoss(temperature=0.5)`
//! (fixtures: tools/fixtures/make_ntxent_fixtures.py): value within 1e-5, gradient w.r.t. the raw maps
//! (through the min-max normalisation) within 1e-5.

mod common;

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use clora_harness::methods::clora::loss::{min_max_normalise, nt_xent};
use common::*;

type AD = Autodiff<B>;

#[test]
fn nt_xent_matches_pytorch_metric_learning() {
    let r = Reference::open(&fixtures().join("clora/ntxent.safetensors"));
    let mut case = 0;
    while r.has(&format!("case{case}.maps")) {
        let (maps, shape) = r.f32(&format!("case{case}.maps"));
        let (labels, _) = r.i64(&format!("case{case}.labels"));
        let labels: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
        let raw = Tensor::<AD, 2>::from_data(TensorData::new(maps, shape.clone()), &device())
            .require_grad();
        let rows: Vec<Tensor<AD, 2>> = (0..shape[0])
            .map(|i| {
                min_max_normalise(
                    raw.clone()
                        .slice([i..i + 1, 0..shape[1]])
                        .reshape([shape[1]]),
                )
                .unsqueeze()
            })
            .collect();
        let loss = nt_xent(Tensor::cat(rows, 0), &labels, 0.5);
        let grads = loss.backward();
        let grad = raw.grad(&grads).expect("gradient of the maps");
        assert_close(
            &format!("case{case} loss"),
            &loss.inner(),
            &r.f32(&format!("case{case}.loss")),
            1e-5,
        );
        assert_close(
            &format!("case{case} grad"),
            &grad,
            &r.f32(&format!("case{case}.grad")),
            1e-5,
        );
        case += 1;
    }
    assert!(case >= 3, "expected at least 3 fixture cases, found {case}");
}

#[test]
fn nt_xent_is_zero_without_positives_or_negatives() {
    let e = Tensor::<B, 2>::from_data(
        TensorData::new(vec![0.1f32, 0.9, 0.5, 0.2, 0.3, 0.7], [3, 2]),
        &device(),
    );
    let only_negatives = nt_xent(e.clone(), &[0, 1, 2], 0.5).into_scalar();
    let only_positives = nt_xent(e, &[0, 0, 0], 0.5).into_scalar();
    assert_eq!(only_negatives, 0.0);
    assert_eq!(only_positives, 0.0);
}
