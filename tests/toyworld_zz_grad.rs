use burn::tensor::{DType, Distribution, Tensor};
use clora_harness::backend::CpuAutodiff as A;
use clora_harness::models::nn::{Conv2d, Linear};
use clora_harness::models::weights::VarBuilder;
#[test]
fn grads_flow() {
    let dev = Default::default();
    let vb = VarBuilder::<A>::random(0, &dev, DType::F32);
    let lin = Linear::load(&vb.pp("l"), 4, 3, true).unwrap();
    let conv = Conv2d::load(&vb.pp("c"), 2, 2, 3, 1, 1).unwrap();
    let x = Tensor::<A, 2>::random([2, 4], Distribution::Normal(0.0, 1.0), &dev);
    let loss = lin.forward(x).sum();
    let g = loss.backward();
    eprintln!(
        "lin weight grad: {:?}",
        lin.weight.val().grad(&g).map(|t| t.into_data())
    );
    eprintln!(
        "lin bias grad: {:?}",
        lin.bias
            .as_ref()
            .unwrap()
            .val()
            .grad(&g)
            .map(|t| t.into_data())
    );
    eprintln!("is_require_grad: {}", lin.weight.val().is_require_grad());
    let x = Tensor::<A, 4>::random([1, 2, 4, 4], Distribution::Normal(0.0, 1.0), &dev);
    let loss = conv.forward(x).sum();
    let g = loss.backward();
    eprintln!(
        "conv weight grad: {:?}",
        conv.weight.val().grad(&g).map(|t| t.dims())
    );
    let t = Tensor::<A, 2>::random([2, 2], Distribution::Normal(0.0, 1.0), &dev).require_grad();
    let g = (t.clone() * 2.0).sum().backward();
    eprintln!("plain grad: {:?}", t.grad(&g).map(|t| t.into_data()));
}
#[derive(burn::module::Module, Debug)]
struct M<B: burn::tensor::backend::Backend> {
    lin: Linear<B>,
    conv: Conv2d<B>,
}
#[test]
fn adam_updates() {
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    let dev = Default::default();
    let vb = VarBuilder::<A>::random(0, &dev, DType::F32);
    let mut m = M {
        lin: Linear::load(&vb.pp("l"), 4, 3, true).unwrap(),
        conv: Conv2d::load(&vb.pp("c"), 2, 2, 3, 1, 1).unwrap(),
    };
    let mut optim = AdamConfig::new().init::<A, M<A>>();
    for i in 0..3 {
        let x = Tensor::<A, 2>::ones([2, 4], &dev);
        let loss = m.lin.forward(x).powf_scalar(2.0).sum();
        eprintln!("step {i} loss {}", loss.clone().into_scalar());
        let g = loss.backward();
        let gp = GradientsParams::from_grads(g, &m);
        eprintln!("grads params: {}", gp.len());
        m = optim.step(1e-1, m, gp);
    }
}
#[test]
fn vae_updates() {
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    use clora_harness::models::vae::AutoencoderKL;
    use burn::module::Module;
    use clora_harness::toyworld::arch::ToyArch;
    let dev = Default::default();
    let arch = ToyArch::default();
    let mut m = AutoencoderKL::<A>::load(
        &VarBuilder::random(0, &dev, DType::F32),
        &arch.vae_config(1.0).unwrap(),
    )
    .unwrap();
    let mut optim = AdamConfig::new().init::<A, AutoencoderKL<A>>();
    let x = Tensor::<A, 4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &dev);
    for i in 0..3 {
        let post = m.encode(x.clone()).unwrap();
        let y = m.decode(post.mean).unwrap();
        let loss = (y - x.clone()).abs().mean();
        eprintln!("vae step {i} loss {}", loss.clone().into_scalar());
        let g = loss.backward();
        let gp = GradientsParams::from_grads(g, &m);
        eprintln!("vae grads params: {} of {}", gp.len(), m.num_params());
        m = optim.step(1e-2, m, gp);
    }
}
