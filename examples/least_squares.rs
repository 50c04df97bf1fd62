//! One parameter stepped with hand-made gradients: least squares, min ‖W·X − Y‖²/n over a
//! 64×96 matrix W, whose gradient 2·(W·X − Y)·Xᵀ/n is written out here instead of found by
//! autodiff. The gradient is registered for the parameter's id in Burn's `GradientsParams`,
//! and `ModuleOptimizer::step` applies SubTrack++ to it, as it would AdamW.
//!
//! ```sh
//! cargo run --release --example least_squares
//! ```

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor};
use subtrack::SubTrackConfig;

/// A model of one 2-D parameter.
#[derive(Module, Debug)]
struct Model {
    weight: Param<Tensor<2>>,
}

/// (‖W·X − Y‖²/n, its gradient in W) for `n` = X's columns.
fn loss_and_gradient(weight: Tensor<2>, x: &Tensor<2>, y: &Tensor<2>) -> (f32, Tensor<2>) {
    let n = x.dims()[1] as f64;
    let residual = weight.matmul(x.clone()) - y.clone();
    let loss = residual.clone().square().sum().into_scalar::<f32>() / n as f32;
    let grad = residual.matmul(x.clone().transpose()).mul_scalar(2.0 / n);
    (loss, grad)
}

fn main() -> Result<(), subtrack::SubTrackError> {
    let device = Device::flex();
    let normal = Distribution::Normal(0.0, 1.0);
    // Y = W*·X with a target W* of rank 8 plus a little of every direction.
    let (m, k, n) = (64, 96, 256);
    let low = Tensor::<2>::random([m, 8], normal, &device)
        .matmul(Tensor::random([8, k], normal, &device))
        .mul_scalar(0.25);
    let target = low + Tensor::random([m, k], normal, &device).mul_scalar(0.02);
    let x = Tensor::<2>::random([k, n], normal, &device);
    let y = target.matmul(x.clone());
    let mut model = Model {
        weight: Param::from_tensor(Tensor::zeros([m, k], &device)),
    };

    // Rank 8 of 64: the optimizer keeps 8×96 moments instead of 64×96.
    let config = SubTrackConfig::subtrack_plus_plus()
        .with_rank(8)
        .with_update_interval(25);
    let (mut optim, report) = config.init_with_report()?;
    for step in 0..=300 {
        let (loss, grad) = loss_and_gradient(model.weight.val(), &x, &y);
        if step % 50 == 0 {
            println!("step {step:>3}: loss {loss:.4}");
        }
        let mut grads = GradientsParams::new();
        grads.register(model.weight.id, grad);
        model = optim.step(2e-2, model, grads);
    }
    println!(
        "{} subspace updates, {} steps skipped",
        report.subspace_updates(),
        report.nonfinite_skips(),
    );
    Ok(())
}
