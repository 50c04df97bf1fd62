//! WGSL kernels (`src/kernels`, `shaders/`) against the portable path on the same inputs.

use burn::tensor::{Device, Tensor, TensorData};
use subtrack::basis;
use subtrack::kernels;

use crate::reference::{Mat, Rng};
use crate::{download, rel_err, upload, wgpu_device};

/// A random a×r matrix with orthonormal columns (Gram–Schmidt in f64).
fn orthonormal(a: usize, r: usize, rng: &mut Rng) -> Mat {
    let mut m = rng.mat(a, r);
    for j in 0..r {
        for k in 0..j {
            let dot: f64 = (0..a).map(|i| m.at(i, j) * m.at(i, k)).sum();
            for i in 0..a {
                m.data[i * r + j] -= dot * m.at(i, k);
            }
        }
        let norm: f64 = (0..a).map(|i| m.at(i, j).powi(2)).sum::<f64>().sqrt();
        for i in 0..a {
            m.data[i * r + j] /= norm;
        }
    }
    m
}

#[test]
fn projection_kernel_matches_the_portable_path() {
    let Some(device) = wgpu_device() else {
        return;
    };
    assert!(
        kernels::wgsl_available(&device),
        "the test adapter should compile WGSL"
    );
    let mut rng = Rng(17);
    // Sizes that are not multiples of the 16×16 tile, a single tile, and a tall one.
    for (a, r, b) in [
        (37, 5, 53),
        (16, 16, 16),
        (100, 17, 300),
        (257, 32, 40),
        (200, 80, 70),
    ] {
        let s = orthonormal(a, r, &mut rng);
        let g = rng.mat(a, b);
        let expected = s.t().mul(&g);
        let (s_dev, g_dev) = (upload(&s, &device), upload(&g, &device));
        let before = kernels::launches("project", [a, r, b]);
        let got = download(kernels::project(&s_dev, &g_dev, true));
        assert_eq!(
            kernels::launches("project", [a, r, b]),
            before + 1,
            "the WGSL kernel did not run"
        );
        let portable = download(basis::project(&s_dev, &g_dev));
        assert!(
            rel_err(&got, &portable) < 1e-5,
            "{a}×{r}×{b}: kernel vs portable {}",
            rel_err(&got, &portable)
        );
        assert!(
            rel_err(&got, &expected) < 1e-5,
            "{a}×{r}×{b}: kernel vs f64 {}",
            rel_err(&got, &expected)
        );
    }
}

#[test]
fn projection_splits_tensors_over_the_binding_limit() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng(29);
    // 300×90 and 300×20 at 4 bytes: 360 bytes a row, so a 46,080-byte limit holds 128 rows
    // and the projection runs as chunks of 128, 128 and 44 rows (offsets 256-byte aligned).
    let (a, r, b) = (300, 20, 90);
    let s = orthonormal(a, r, &mut rng);
    let g = rng.mat(a, b);
    let expected = s.t().mul(&g);
    let (s_dev, g_dev) = (upload(&s, &device), upload(&g, &device));
    let before = kernels::launches("project", [a, r, b]);
    let got = download(kernels::project_within(&s_dev, &g_dev, true, 46_080));
    assert_eq!(
        kernels::launches("project", [a, r, b]),
        before + 3,
        "three chunks"
    );
    assert!(
        rel_err(&got, &expected) < 1e-5,
        "chunked vs f64 {}",
        rel_err(&got, &expected)
    );
    // A limit under 64 rows cannot be chunked with aligned offsets: Burn's matmul runs.
    let fallback = download(kernels::project_within(&s_dev, &g_dev, true, 10_000));
    assert_eq!(
        kernels::launches("project", [a, r, b]),
        before + 3,
        "no launch"
    );
    assert!(rel_err(&fallback, &expected) < 1e-5);
}

#[test]
fn update_splits_tensors_over_the_binding_limit() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng(31);
    let (a, r, b) = (300, 20, 90);
    let (alpha, decay) = (0.05, 0.99);
    for transposed in [false, true] {
        let s = orthonormal(a, r, &mut rng);
        let low = rng.mat(r, b);
        let w = if transposed {
            rng.mat(b, a)
        } else {
            rng.mat(a, b)
        };
        let g = rng.mat(a, b);
        let psi = rng.mat(1, b);
        let mut u = s
            .mul(&low)
            .add(&Mat::from_fn(a, b, |i, j| g.at(i, j) * psi.at(0, j)));
        if transposed {
            u = u.t();
        }
        let expected = w.sub(&u.scale(alpha)).scale(decay);
        let dev = |m: &Mat| upload(m, &device);
        let before = kernels::launches("update", [a, r, b]);
        // 360 bytes a row: chunks of 128, 128 and 44 rows in the left layout; a transposed
        // W cannot be split by rows, so it takes the tensor-op path.
        let got = download(kernels::update_within(
            &dev(&s),
            dev(&low),
            dev(&w),
            Some((dev(&g), dev(&psi))),
            alpha,
            decay,
            transposed,
            true,
            46_080,
        ));
        let launched = kernels::launches("update", [a, r, b]) - before;
        assert_eq!(
            launched,
            if transposed { 0 } else { 3 },
            "transposed {transposed}"
        );
        let err = rel_err(&got, &expected);
        assert!(err < 1e-5, "transposed {transposed}: vs f64 {err}");
    }
}

#[test]
fn projection_falls_back_off_wgsl() {
    let device = Device::flex();
    assert!(!kernels::wgsl_available(&device));
    let s = Tensor::<2>::from_data(
        TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0, 0.0, 0.0], [3, 2]),
        &device,
    );
    let g = Tensor::<2>::from_data(
        TensorData::new((0..12).map(|x| x as f32).collect::<Vec<_>>(), [3, 4]),
        &device,
    );
    let got: Vec<f32> = kernels::project(&s, &g, true)
        .into_data()
        .try_into_vec()
        .unwrap();
    assert_eq!(got, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
}

#[test]
fn update_kernel_matches_the_portable_path() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let mut rng = Rng(23);
    let (alpha, decay) = (0.03, 0.999);
    for (a, r, b) in [(37, 5, 53), (16, 16, 16), (70, 17, 150), (130, 70, 90)] {
        for transposed in [false, true] {
            for recovery in [false, true] {
                let s = orthonormal(a, r, &mut rng);
                let low = rng.mat(r, b);
                let w = if transposed {
                    rng.mat(b, a)
                } else {
                    rng.mat(a, b)
                };
                let g = rng.mat(a, b);
                let psi = rng.mat(1, b);
                // f64 reference: d·(W − α·(S·L + G⊙ψ)), transposed into W's layout.
                let mut u = s.mul(&low);
                if recovery {
                    u = u.add(&Mat::from_fn(a, b, |i, j| g.at(i, j) * psi.at(0, j)));
                }
                if transposed {
                    u = u.t();
                }
                let expected = w.sub(&u.scale(alpha)).scale(decay);
                let dev = |m: &Mat| upload(m, &device);
                let rec = recovery.then(|| (dev(&g), dev(&psi)));
                let before = kernels::launches("update", [a, r, b]);
                let got = download(kernels::update(
                    &dev(&s),
                    dev(&low),
                    dev(&w),
                    rec,
                    alpha,
                    decay,
                    transposed,
                    true,
                ));
                assert_eq!(
                    kernels::launches("update", [a, r, b]),
                    before + 1,
                    "the WGSL kernel did not run"
                );
                // The portable path: the same formula in tensor ops on the CPU backend.
                let cpu = Device::flex();
                let up = |m: &Mat| upload(m, &cpu);
                let portable = download(kernels::update(
                    &up(&s),
                    up(&low),
                    up(&w),
                    recovery.then(|| (up(&g), up(&psi))),
                    alpha,
                    decay,
                    transposed,
                    true,
                ));
                let case = format!("{a}×{r}×{b}, transposed {transposed}, recovery {recovery}");
                assert!(
                    rel_err(&got, &portable) < 1e-5,
                    "{case}: vs portable {}",
                    rel_err(&got, &portable)
                );
                assert!(
                    rel_err(&got, &expected) < 1e-5,
                    "{case}: vs f64 {}",
                    rel_err(&got, &expected)
                );
            }
        }
    }
}
