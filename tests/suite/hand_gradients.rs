//! Gradients registered by hand (`GradientsParams::register`), as a user writing their own
//! loop makes them: on the model's autodiff device or on its inner device, every route steps
//! them alike.

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use subtrack::SubTrackConfig;

use crate::{devices, presets, values};

#[derive(Module, Debug)]
struct Model {
    /// 24×40: projected at rank 4.
    weight: Param<Tensor<2>>,
    /// Length 40: AdamW.
    bias: Param<Tensor<1>>,
}

/// A deterministic pattern of `len` values in about [−1, 1].
fn pattern(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

/// The weights after `steps` steps of `config`, with gradients made on `grad_device` (the
/// model's autodiff device or its inner device) for a model on `device`'s autodiff device.
fn train(config: &SubTrackConfig, device: &Device, autodiff_grads: bool, steps: usize) -> Vec<f64> {
    let ad = device.clone().autodiff();
    let grad_device = if autodiff_grads {
        ad.clone()
    } else {
        device.clone()
    };
    let weight = Tensor::<2>::from_data(TensorData::new(pattern(24 * 40, 1), [24, 40]), &ad);
    let bias = Tensor::<1>::from_data(TensorData::new(pattern(40, 2), [40]), &ad);
    let mut model = Model {
        weight: Param::from_tensor(weight),
        bias: Param::from_tensor(bias),
    };
    let mut optim = config.init().unwrap();
    for step in 0..steps {
        let g = Tensor::<2>::from_data(
            TensorData::new(pattern(24 * 40, step + 3), [24, 40]),
            &grad_device,
        );
        let b = Tensor::<1>::from_data(TensorData::new(pattern(40, step + 4), [40]), &grad_device);
        let mut grads = GradientsParams::new();
        grads.register(model.weight.id, g);
        grads.register(model.bias.id, b);
        model = optim.step(1e-2, model, grads);
    }
    let mut out = values(&model.weight.val());
    out.extend(values(&model.bias.val()));
    out
}

#[test]
fn gradients_on_the_autodiff_device_step_as_on_its_inner_device() {
    for device in devices() {
        for (name, preset) in presets() {
            for (route, config) in [
                ("device's own route", preset.clone()),
                (
                    "portable",
                    preset
                        .clone()
                        .with_cpu_kernels(false)
                        .with_wgsl_kernels(false),
                ),
            ] {
                // Two subspace updates in 7 steps.
                let config = config.with_rank(4).with_update_interval(3);
                let inner = train(&config, &device, false, 7);
                let ad = train(&config, &device, true, 7);
                assert!(
                    inner.iter().all(|x| x.is_finite()),
                    "{name}, {route}, {device:?}"
                );
                assert_eq!(
                    ad, inner,
                    "{name}, {route}, {device:?}: autodiff-device gradients step differently"
                );
                let start: Vec<f64> = pattern(24 * 40, 1).into_iter().map(f64::from).collect();
                assert_ne!(
                    &inner[..start.len()],
                    &start[..],
                    "{name}, {route}: W moved"
                );
            }
        }
    }
}
