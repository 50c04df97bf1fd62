//! Launch limits (`src/kernels/launch.rs`): tensors past a storage binding's size in row
//! chunks, matrices past the workgroup limit in several launches.

use burn::tensor::Device;
use subtrack::ProjectionAware;
use subtrack::testing::kernels::{self, Limits};
use subtrack::testing::moments::AdamParams;
use subtrack::testing::route::{self, Rotation, RouteRequest, UpdateCoefficients};

use crate::reference::{Mat, Rng};
use crate::{assert_close, download, upload, wgpu_device};

use super::update::UpdateCase;
use super::{orthonormal, stored, wgsl_within};

#[test]
fn projection_splits_tensors_over_the_binding_limit() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng::new(29);
    // 300×90 and 300×20 at 4 bytes: 360 bytes a row, so a 46,080-byte limit holds 128 rows
    // and the projection runs as chunks of 128, 128 and 44 rows (offsets 256-byte aligned).
    let (a, r, b) = (300, 20, 90);
    let s = orthonormal(a, r, &mut rng);
    let g = rng.mat(a, b);
    let expected = s.t().mul(&g);
    let (s_dev, g_dev) = (upload(&s, &device), upload(&g, &device));
    let before = kernels::launches("project", [a, r, b]);
    let got = download(route::project_checked(&s_dev, &g_dev, wgsl_within(46_080)).0);
    assert_eq!(
        kernels::launches("project", [a, r, b]),
        before + 3,
        "three chunks"
    );
    assert_close(&got, &expected, 1e-5, "chunked vs f64");
    // A transposed view over the limit is laid out a×b and chunked the same way.
    let viewed = stored(&g, true, &device);
    let in_place = kernels::launches("project: Gᵀ in place", [a, r, b]);
    let got = download(route::project_checked(&s_dev, &viewed, wgsl_within(46_080)).0);
    assert_eq!(
        kernels::launches("project", [a, r, b]),
        before + 6,
        "three chunks of the view"
    );
    assert_eq!(
        kernels::launches("project: Gᵀ in place", [a, r, b]),
        in_place,
        "a chunked view is copied first"
    );
    assert_close(&got, &expected, 1e-5, "chunked view vs f64");
    let before = before + 3;
    // A limit under 64 rows cannot be chunked with aligned offsets: Burn's matmul runs.
    let fallback = download(route::project_checked(&s_dev, &g_dev, wgsl_within(10_000)).0);
    assert_eq!(
        kernels::launches("project", [a, r, b]),
        before + 3,
        "no launch"
    );
    assert_close(&fallback, &expected, 1e-5, "Burn matmul fallback vs f64");
    // The step flag comes from the same pass over G, in every chunk: 1 for this G, 0 when a
    // NaN or −∞ sits in the last chunk, on the kernel and on the fallback alike.
    let flag = |g: &Mat, limit: usize| {
        let (_, f) = route::project_checked(&s_dev, &upload(g, &device), wgsl_within(limit));
        f.into_scalar::<f32>()
    };
    assert_eq!(flag(&g, 46_080), 1.0);
    for bad in [f64::NAN, f64::NEG_INFINITY] {
        let mut g_bad = g.clone();
        g_bad.data[290 * b + 17] = bad;
        assert_eq!(flag(&g_bad, 46_080), 0.0, "{bad} in a chunk");
        assert_eq!(flag(&g_bad, 10_000), 0.0, "{bad}, fallback");
    }
}

#[test]
fn update_splits_tensors_over_the_binding_limit() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng::new(31);
    let (a, r, b) = (300, 20, 90);
    let coefficients = UpdateCoefficients {
        alpha: 0.05,
        decay: 0.99,
        scale: 0.25,
    };
    for transposed in [false, true] {
        let case = UpdateCase::new(a, r, b, transposed, &mut rng);
        let expected = case.expected(coefficients, true);
        let before = kernels::launches("update", [a, r, b]);
        // 360 bytes a row: chunks of 128, 128 and 44 rows in the left layout; a transposed
        // W cannot be split by rows, so it takes the tensor-op path.
        let got = case.run_on(coefficients, true, None, &device, wgsl_within(46_080));
        let launched = kernels::launches("update", [a, r, b]) - before;
        assert_eq!(
            launched,
            if transposed { 0 } else { 3 },
            "transposed {transposed}"
        );
        assert_close(
            &got,
            &expected,
            1e-5,
            format_args!("transposed {transposed}: vs f64"),
        );
    }
}

#[test]
fn wide_matrices_take_several_launches_past_the_workgroup_limit() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let cpu = Device::flex();
    let mut rng = Rng::new(53);
    // b = 300 is five 64-column blocks; a limit of 2 workgroups a dimension splits every
    // launch across the columns into 2 + 2 + 1 blocks.
    let (a, r, b) = (70, 6, 300);
    let narrow = Limits {
        max_workgroups: 2,
        ..Limits::WEBGPU
    };
    let s = orthonormal(a, r, &mut rng);
    let g = rng.mat(a, b);
    let before = kernels::launches("project", [a, r, b]);
    let got = download(route::project(
        &upload(&s, &device),
        &upload(&g, &device),
        RouteRequest::WGSL.within(narrow),
    ));
    assert_eq!(
        kernels::launches("project", [a, r, b]),
        before + 3,
        "three column groups"
    );
    assert_close(&got, &s.t().mul(&g), 1e-5, "projection vs f64");

    let params = AdamParams {
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-6,
    };
    let (m, g_low) = (rng.mat(r, b), rng.mat(r, b));
    let v = Mat::from_fn(r, b, |i, j| m.at(i, j).powi(2) + 0.1);
    let c = Mat::from_fn(r, r, |i, j| if i == j { 0.9 } else { 0.05 });
    let run = |dev: &Device, route: RouteRequest| {
        let c_dev = upload(&c, dev);
        let rotation = Rotation {
            change_of_basis: &c_dev,
            variant: ProjectionAware::Paper,
            moved: None,
        };
        let out = route::adam(
            upload(&m, dev),
            upload(&v, dev),
            &upload(&g_low, dev),
            &params,
            Some(rotation),
            None,
            route,
        );
        [out.moment_1, out.moment_2, out.normalized].map(download)
    };
    let before = kernels::launches("adam", [r, r, b]);
    let got = run(&device, RouteRequest::WGSL.within(narrow));
    assert_eq!(
        kernels::launches("adam", [r, r, b]),
        before + 3,
        "three column groups"
    );
    let portable = run(&cpu, RouteRequest::PORTABLE);
    for k in 0..3 {
        assert_close(
            &got[k],
            &portable[k],
            1e-5,
            format_args!("adam output {k} vs portable"),
        );
    }

    let coefficients = UpdateCoefficients {
        alpha: 0.05,
        decay: 0.99,
        scale: 0.25,
    };
    for transposed in [false, true] {
        let case = UpdateCase::new(a, r, b, transposed, &mut rng);
        let before = kernels::launches("update", [a, r, b]);
        let got = case.run_on(
            coefficients,
            true,
            None,
            &device,
            RouteRequest::WGSL.within(narrow),
        );
        assert_eq!(
            kernels::launches("update", [a, r, b]),
            before + 3,
            "transposed {transposed}"
        );
        assert_close(
            &got,
            &case.expected(coefficients, true),
            1e-5,
            format_args!("update, transposed {transposed}: vs f64"),
        );
    }
}
