//! Parameters stored as f16, bf16 or f64: the optimizer steps them in f32, with f32 state,
//! and gives the weight back in its own type.

use burn::optim::Optimizer;
use burn::tensor::{DType, Device, DeviceKind, Distribution, FloatDType, Tensor, TensorData};
use subtrack::testing::basis::EXACT_SVD_MAX_SIDE;
use subtrack::{SubTrack, SubTrackConfig, SubTrackState};
use subtrack_llama::device::wgpu_adapter;

use crate::reference::Rng;
use crate::{devices, max_abs_diff, presets, values};

/// The float types other than f32 that `device` can hold.
fn other_types(device: &Device) -> Vec<DType> {
    let types: Vec<DType> = [DType::F16, DType::BF16, DType::F64]
        .into_iter()
        .filter(|&t| device.supports_dtype(t))
        .collect();
    eprintln!("{device:?}: testing {types:?}");
    types
}

fn random<const D: usize>(
    rng: &mut Rng,
    shape: [usize; D],
    dtype: DType,
    device: &Device,
) -> Tensor<D> {
    let n = shape.iter().product();
    let values: Vec<f64> = (0..n).map(|_| rng.next()).collect();
    Tensor::from_data(TensorData::new(values, shape), (device, dtype))
}

/// The dtypes of every state tensor.
fn state_types<const D: usize>(state: &SubTrackState<D>) -> Vec<DType> {
    match state {
        SubTrackState::Dense(s) => vec![s.moment_1.dtype(), s.moment_2.dtype()],
        SubTrackState::Projected(s) => {
            let mut t = vec![s.basis.dtype(), s.moment_1.dtype(), s.moment_2.dtype()];
            t.extend(s.limiter_norm.as_ref().map(|n| n.dtype()));
            t
        }
    }
}

/// Five steps (two subspace updates) of a weight held in another float type follow the f32
/// optimizer run on the same gradients within the type's rounding: the state evolves from
/// the gradients alone, so the two weights differ only by one rounding per step, at most
/// 5·u·max|W| for unit roundoff u (plus f32 rounding, for f64). The weight keeps its type
/// and the state is f32. Left and right projected shapes and a dense one.
fn check<const D: usize>(
    config: &SubTrackConfig,
    shape: [usize; D],
    dtype: DType,
    device: &Device,
    what: &str,
) {
    let (optim, reference) = (config.build().unwrap(), config.build().unwrap());
    let mut rng = Rng::new(17);
    let mut w = random(&mut rng, shape, dtype, device);
    let mut w32 = w.clone().cast(DType::F32);
    let start = values(&w32);
    let (mut state, mut state32) = (None, None);
    let lr = 0.1;
    for _ in 0..5 {
        let g = random(&mut rng, shape, dtype, device);
        (w32, state32) = reference.step(lr, w32, g.clone().cast(DType::F32), state32);
        (w, state) = optim.step(lr, w, g, state);
    }
    assert_eq!(w.dtype(), dtype, "{what}: the weight's type");
    let types = state_types(state.as_ref().unwrap());
    assert!(
        types.iter().all(|&t| t == DType::F32),
        "{what}: state types {types:?}"
    );
    let (got, want) = (values(&w), values(&w32));
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let unit_roundoff = match dtype {
        DType::F16 => 2f64.powi(-11),
        DType::BF16 => 2f64.powi(-8),
        _ => 0.0,
    };
    let limit = (5.0 * unit_roundoff + 1e-6) * scale;
    let err = max_abs_diff(&got, &want);
    assert!(
        err <= limit,
        "{what}: {err:e} from the f32 run (limit {limit:e})"
    );
    // The weights moved much further than that, so the comparison says something.
    let moved = max_abs_diff(&want, &start);
    assert!(moved > 4.0 * limit, "{what}: moved only {moved:e}");
}

#[test]
fn other_float_types_follow_the_f32_run() {
    for device in devices() {
        for dtype in other_types(&device) {
            for (name, config) in presets() {
                let config = config
                    .with_rank(4)
                    .with_update_interval(2)
                    .with_weight_decay(0.1);
                for shape in [[12, 20], [20, 12]] {
                    let what = format!("{name}, {dtype:?} {shape:?} on {device:?}");
                    check(&config, shape, dtype, &device, &what);
                }
                check(
                    &config,
                    [7],
                    dtype,
                    &device,
                    &format!("{name}, {dtype:?} [7]"),
                );
            }
        }
    }
}

/// With a zero learning rate the weight comes back bit for bit: an f64 weight keeps the
/// bits f32 cannot hold, and f16/bf16 survive the round trip through f32.
#[test]
fn a_zero_step_keeps_every_bit() {
    for device in devices() {
        for dtype in other_types(&device) {
            let optim = SubTrackConfig::subtrack_plus_plus()
                .with_rank(4)
                .build()
                .unwrap();
            let mut rng = Rng::new(5);
            for shape in [[12, 20], [20, 12], [1, 7]] {
                let w = random(&mut rng, shape, dtype, &device);
                let g = random(&mut rng, shape, dtype, &device);
                let before = values(&w);
                let (w, state) = optim.step(0.0, w, g, None);
                assert_eq!(w.dtype(), dtype);
                assert!(state.is_some());
                let changed = values(&w)
                    .iter()
                    .zip(&before)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert_eq!(
                    changed, 0,
                    "{dtype:?} {shape:?} on {device:?}: elements changed"
                );
            }
        }
    }
}

/// A device whose default float type is f16 (`Device::configure`, how Burn trains in half
/// precision): the tensors the optimizer makes for itself name their type instead of taking
/// the default, so the state stays f32. A device's default can be set only once per
/// process, so this runs [`half_device_child`] in a process of its own.
#[test]
fn a_half_precision_device_default_is_not_picked_up() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "precision::half_device_child",
            "--ignored",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
}

#[test]
#[ignore = "run by a_half_precision_device_default_is_not_picked_up in its own process"]
fn half_device_child() {
    let mut targets = vec![Device::flex()];
    // Opened here, untouched: `wgpu_device` runs a probe on the device before any test
    // could configure it.
    match wgpu_adapter(DeviceKind::DefaultDevice) {
        Ok(wgpu) => targets.push(wgpu.device),
        Err(why) => assert!(
            !crate::wgpu_required(),
            "SUBTRACK_REQUIRE_WGPU=1 but no supported wgpu adapter: {why}"
        ),
    }
    for mut device in targets {
        if !device.supports_dtype(DType::F16) {
            continue;
        }
        device.configure(FloatDType::F16).unwrap();
        eprintln!("{device:?}: default float type f16");
        for (name, config) in presets() {
            let optim = config.with_rank(4).with_update_interval(2).build().unwrap();
            for shape in [[12, 20], [20, 12], [1, 5]] {
                let what = format!("{name}, {shape:?} on {device:?}");
                steps_stay_f16(&optim, shape, 5, &device, &what);
            }
        }
        // Past EXACT_SVD_MAX_SIDE the first basis comes from the randomized SVD (its
        // device products are the same on every backend, so flex alone: lavapipe took 45 s).
        if device != Device::flex() {
            continue;
        }
        let optim = SubTrackConfig::subtrack_plus_plus()
            .with_rank(4)
            .build()
            .unwrap();
        let shape = [EXACT_SVD_MAX_SIDE + 6, EXACT_SVD_MAX_SIDE + 16];
        steps_stay_f16(
            &optim,
            shape,
            2,
            &device,
            &format!("{shape:?} on {device:?}"),
        );
    }
}

/// `steps` steps of `optim` on a random parameter of the device's default type (f16): the
/// weight stays f16, the state is f32, and the weight moves and stays finite.
fn steps_stay_f16(optim: &SubTrack, shape: [usize; 2], steps: usize, device: &Device, what: &str) {
    let mut w = Tensor::<2>::random(shape, Distribution::Default, device);
    assert_eq!(w.dtype(), DType::F16, "{what}: the device default");
    let start = values(&w);
    let mut state = None;
    for _ in 0..steps {
        let g = Tensor::<2>::random(shape, Distribution::Default, device);
        (w, state) = optim.step(0.1, w, g, state);
    }
    assert_eq!(w.dtype(), DType::F16, "{what}");
    let types = state_types(state.as_ref().unwrap());
    assert!(types.iter().all(|&t| t == DType::F32), "{what}: {types:?}");
    let now = values(&w);
    assert!(now.iter().all(|x| x.is_finite()), "{what}: not finite");
    assert!(max_abs_diff(&now, &start) > 0.01, "{what}: did not move");
}
