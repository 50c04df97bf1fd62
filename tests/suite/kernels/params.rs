//! The step's parameter buffer (`src/params.rs`): made by the projection
//! (`project_packed`), which writes the step flag into it, and bound as it is by Adam, the
//! recovery limiter and the weight update.

use burn::tensor::Device;
use subtrack::RecoveryScaling;
use subtrack::testing::kernels;
use subtrack::testing::moments::AdamParams;
use subtrack::testing::route::{
    self, ParamValues, RecoveryInputs, RecoveryTerm, RouteRequest, StepFlag, UpdateCoefficients,
    UpdateInputs,
};

use crate::reference::{Mat, Rng};
use crate::{download, upload, wgpu_device};

use super::adam::adam_inputs;
use super::{orthonormal, upload_roundtrip};

const ADAM: AdamParams = AdamParams {
    beta_1: 0.9,
    beta_2: 0.999,
    epsilon: 1e-6,
};
const COEFFICIENTS: UpdateCoefficients = UpdateCoefficients {
    alpha: 0.01,
    decay: 0.999,
    scale: 0.25,
};
const RECOVERY: RecoveryScaling = RecoveryScaling::Paper;
const GROWTH_LIMIT: f64 = 1.01;

/// The inputs of one projected SubTrack++ step: S (a×r), M and V (r×b), W (a×b).
struct Step {
    basis: Mat,
    moments: [Mat; 2],
    weight: Mat,
}

/// The values a SubTrack++ step's kernels use, as the optimizer packs them.
fn step_values() -> ParamValues {
    ParamValues::new()
        .with_adam(&ADAM, None)
        .with_recovery(RECOVERY, COEFFICIENTS.scale, GROWTH_LIMIT)
        .with_update(COEFFICIENTS, Some((RECOVERY, COEFFICIENTS.scale)))
}

/// One step on `route`: (M', V', W', flag). With `packed`, the projection makes the
/// parameter buffer from `packed`'s values and the kernels take it as their flag; else the
/// flag is [`route::project_checked`]'s own.
fn run(
    case: &Step,
    g: &Mat,
    dev: &Device,
    route: RouteRequest,
    packed: Option<ParamValues>,
) -> ([Vec<f64>; 3], f32) {
    let (s, g) = (upload(&case.basis, dev), upload(g, dev));
    let (g_low, params, bare) = match packed {
        Some(values) => {
            let (g_low, params) = route::project_packed(&s, &g, route, values);
            (g_low, Some(params), None)
        }
        None => {
            let (g_low, flag) = route::project_checked(&s, &g, route);
            (g_low, None, Some(flag))
        }
    };
    let flag = match (&params, &bare) {
        (Some(p), _) => StepFlag::Packed(p),
        (_, Some(f)) => StepFlag::Bare(f),
        _ => unreachable!(),
    };
    let [m, v] = case.moments.each_ref().map(|x| upload(x, dev));
    let adam = route::adam(m, v, &g_low, &ADAM, None, Some(flag), route);
    let inputs = RecoveryInputs {
        grad: &g,
        transposed: false,
        grad_sq: None,
        g_low: &g_low,
        normalized: &adam.normalized,
        previous: None,
    };
    let scales = route::recovery(
        inputs,
        RECOVERY,
        COEFFICIENTS.scale,
        GROWTH_LIMIT,
        Some(flag),
        route,
    );
    let flag_value = flag.tensor().into_scalar::<f32>();
    let inputs = UpdateInputs {
        basis: &s,
        normalized: adam.normalized,
        weight: upload(&case.weight, dev),
        transposed: false,
        recovery: Some(RecoveryTerm {
            grad: g,
            psi: scales.scaled_phi,
            g_low,
            kept_weight: scales.kept_weight,
        }),
    };
    let w = route::update(inputs, COEFFICIENTS, Some(flag), route);
    let out = [adam.moment_1, adam.moment_2, w].map(|t| download(t).data);
    (out, flag_value)
}

/// Launches counted under `kernel` for each kernel's first slot (Adam 0, recovery 6,
/// update 8) at G̃ r×b.
fn counts(kernel: &str, [r, b]: [usize; 2]) -> [u64; 3] {
    [0, 6, 8].map(|first| kernels::launches(kernel, [first, r, b]))
}

/// The packed buffer gives the same bits as separate flags, on the WGSL route (where each
/// of the three kernels binds it without an upload of its own) and on the tensor ops; a
/// gradient with a NaN or ∞ skips the step through it; a buffer whose values are not the
/// kernels' own is not used for them.
#[test]
fn packed_parameters_match_separate_flags() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng::new(61);
    // Sizes no other test uses, so that the launch counts are this test's own.
    let (a, r, b) = (71, 7, 47);
    let [m, v, _] = adam_inputs(r, b, &mut rng);
    let case = Step {
        basis: orthonormal(a, r, &mut rng),
        moments: [m, v],
        weight: rng.mat(a, b),
    };
    let g = rng.mat(a, b);
    let cpu = Device::flex();
    for (dev, route) in [
        (&device, RouteRequest::WGSL),
        (&cpu, RouteRequest::PORTABLE),
    ] {
        let wgsl = route == RouteRequest::WGSL;
        let bare = run(&case, &g, dev, route, None);
        let (packed_before, uploaded_before) = (
            counts("params: packed", [r, b]),
            counts("params: uploaded", [r, b]),
        );
        let packed = run(&case, &g, dev, route, Some(step_values()));
        assert!(packed == bare, "route {route:?}: packed vs separate flags");
        assert_eq!(bare.1, 1.0, "a finite G steps");
        let expected_packed = packed_before.map(|n| n + u64::from(wgsl));
        assert_eq!(
            counts("params: packed", [r, b]),
            expected_packed,
            "{route:?}"
        );
        assert_eq!(
            counts("params: uploaded", [r, b]),
            uploaded_before,
            "{route:?}"
        );

        // Values that are not the kernels' own (β1 = 0.5): each kernel whose slots differ
        // builds its own buffer, so the result is still the separate flags' one.
        let other = AdamParams {
            beta_1: 0.5,
            ..ADAM
        };
        let wrong = step_values().with_adam(&other, None);
        let (packed_before, uploaded_before) = (
            counts("params: packed", [r, b]),
            counts("params: uploaded", [r, b]),
        );
        let other_values = run(&case, &g, dev, route, Some(wrong));
        assert!(
            other_values == bare,
            "{route:?}: other values vs separate flags"
        );
        if wgsl {
            let (packed_now, uploaded_now) = (
                counts("params: packed", [r, b]),
                counts("params: uploaded", [r, b]),
            );
            assert_eq!(
                uploaded_now,
                [
                    uploaded_before[0] + 1,
                    uploaded_before[1],
                    uploaded_before[2]
                ],
                "only Adam, whose slots differ, uploads a buffer of its own"
            );
            assert_eq!(
                packed_now,
                [packed_before[0], packed_before[1] + 1, packed_before[2] + 1],
                "recovery and the update bind the packed buffer"
            );
        }

        // A NaN or ∞ in G: the projection writes flag 0 into the buffer, and M, V and W are
        // kept bit for bit.
        for bad in [f64::NAN, f64::INFINITY] {
            let mut g_bad = g.clone();
            g_bad.data[a * b - 3] = bad;
            let ([m2, v2, w2], flag) = run(&case, &g_bad, dev, route, Some(step_values()));
            assert_eq!(flag, 0.0, "{route:?}, {bad}: flag");
            assert_eq!(
                m2,
                upload_roundtrip(&case.moments[0]),
                "{route:?}, {bad}: M"
            );
            assert_eq!(
                v2,
                upload_roundtrip(&case.moments[1]),
                "{route:?}, {bad}: V"
            );
            assert_eq!(w2, upload_roundtrip(&case.weight), "{route:?}, {bad}: W");
        }
    }
}
