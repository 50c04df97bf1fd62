//! Low-rank Adam with the moment rotation (`adam.wgsl`).

use burn::tensor::{Device, Tensor};
use subtrack::ProjectionAware;
use subtrack::testing::kernels;
use subtrack::testing::moments::AdamParams;
use subtrack::testing::route::{self, Rotation, RouteRequest, StepFlag};

use crate::reference::{Mat, Rng};
use crate::{assert_close, download, upload, wgpu_device};

use super::{orthonormal, upload_roundtrip};

/// f64 low-rank Adam: (M', V', N), after the rotation by C when given (`code`: V × (1 − β2)).
pub(super) fn adam_f64(
    m: &Mat,
    v: &Mat,
    g: &Mat,
    c: Option<(&Mat, bool)>,
    p: &AdamParams,
) -> [Mat; 3] {
    let (m, v) = match c {
        None => (m.clone(), v.clone()),
        Some((c, code)) => {
            let rotated = c.mul(m);
            let cc = Mat::from_fn(c.rows, c.cols, |i, j| c.at(i, j).powi(2));
            let centred = Mat::from_fn(v.rows, v.cols, |i, j| v.at(i, j) - m.at(i, j).powi(2));
            let var = cc.mul(&centred);
            let scale = if code { 1.0 - p.beta_2 } else { 1.0 };
            let v = Mat::from_fn(v.rows, v.cols, |i, j| {
                (var.at(i, j) + rotated.at(i, j).powi(2)).abs() * scale
            });
            (rotated, v)
        }
    };
    let m = Mat::from_fn(m.rows, m.cols, |i, j| {
        p.beta_1 * m.at(i, j) + (1.0 - p.beta_1) * g.at(i, j)
    });
    let v = Mat::from_fn(v.rows, v.cols, |i, j| {
        p.beta_2 * v.at(i, j) + (1.0 - p.beta_2) * g.at(i, j).powi(2)
    });
    let n = Mat::from_fn(m.rows, m.cols, |i, j| {
        m.at(i, j) / (v.at(i, j).sqrt() + p.epsilon)
    });
    [m, v, n]
}

#[test]
fn adam_kernel_matches_the_portable_path() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let cpu = Device::flex();
    let params = AdamParams {
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-6,
    };
    let mut rng = Rng::new(41);
    for (r, b) in [(5, 53), (16, 16), (17, 150), (70, 90)] {
        // (rotation, moved): no rotation, both variants, and a rotation whose basis did not
        // move (device flag 0), which must equal no rotation.
        let variants = [
            (None, true),
            (Some(ProjectionAware::Paper), true),
            (Some(ProjectionAware::Code), true),
            (Some(ProjectionAware::Paper), false),
        ];
        for (rotation, moved) in variants {
            let [m, v, g] = adam_inputs(r, b, &mut rng);
            // A change of basis of the geodesic's form I − (1 − cos θ)·w·wᵀ, perturbed so
            // that it is a general dense matrix.
            let w = orthonormal(r, 1, &mut rng);
            let c = Mat::from_fn(r, r, |i, j| {
                let id = if i == j { 1.0 } else { 0.0 };
                id - 0.4 * w.at(i, 0) * w.at(j, 0) + 0.01 * ((i * 7 + j * 3) % 5) as f64
            });
            let code = rotation == Some(ProjectionAware::Code);
            let applied = rotation.filter(|_| moved).map(|_| (&c, code));
            let expected = adam_f64(&m, &v, &g, applied, &params);
            let run = |dev: &Device, flag: Option<f32>| {
                let flag = flag.map(|f| Tensor::<1>::from_floats([f], dev));
                let moved = (!moved).then(|| Tensor::<1>::from_floats([0.0], dev));
                let c_dev = upload(&c, dev);
                let out = route::adam(
                    upload(&m, dev),
                    upload(&v, dev),
                    &upload(&g, dev),
                    &params,
                    rotation.map(|variant| Rotation {
                        change_of_basis: &c_dev,
                        variant,
                        moved: moved.as_ref(),
                    }),
                    flag.as_ref().map(StepFlag::from),
                    RouteRequest::WGSL,
                );
                [out.moment_1, out.moment_2, out.normalized].map(download)
            };
            let before = kernels::launches("adam", [r, r, b]);
            let got = run(&device, None);
            assert_eq!(
                kernels::launches("adam", [r, r, b]),
                before + 1,
                "the WGSL kernel did not run"
            );
            let portable = run(&cpu, None);
            let case = format!("{r}×{b}, rotation {rotation:?}, moved {moved}");
            assert_adam_close(&got, &portable, &expected, 1e-5, &case);
            // A skipped step keeps M and V exactly and gives N = 0, on both paths.
            for dev in [&device, &cpu] {
                let [m2, v2, n2] = run(dev, Some(0.0));
                assert_eq!(m2.data, upload_roundtrip(&m), "skip keeps M");
                assert_eq!(v2.data, upload_roundtrip(&v), "skip keeps V");
                assert!(n2.data.iter().all(|&x| x == 0.0), "skip zeroes N");
            }
        }
    }
}

/// Inputs of a low-rank Adam case, r×b each: M, V (at least M⊙M, as a second moment is)
/// and G̃.
pub(super) fn adam_inputs(r: usize, b: usize, rng: &mut Rng) -> [Mat; 3] {
    let m = rng.mat(r, b);
    let spread = rng.mat(r, b);
    let v = Mat::from_fn(r, b, |i, j| m.at(i, j).powi(2) + spread.at(i, j).powi(2));
    let g = rng.mat(r, b);
    [m, v, g]
}

/// (M', V', N) `got` within `portable_tol` (relative) of the tensor-op path and 1e-5 of f64.
pub(super) fn assert_adam_close(
    got: &[Mat; 3],
    portable: &[Mat; 3],
    expected: &[Mat; 3],
    portable_tol: f64,
    case: &str,
) {
    for (k, name) in ["M", "V", "N"].iter().enumerate() {
        let what = format!("{case}, {name}");
        assert_close(
            &got[k],
            &portable[k],
            portable_tol,
            format_args!("{what}: vs portable"),
        );
        assert_close(&got[k], &expected[k], 1e-5, format_args!("{what}: vs f64"));
    }
}
