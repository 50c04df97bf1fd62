//! The choice of route (`route::choose`), and the optimizer on the WGSL route: the finite
//! check on the device, no read-back.

use burn::optim::Optimizer;
use burn::tensor::{DType, Device, Tensor};
use subtrack::testing::kernels::{self, ProjectionTile, TileChoice};
use subtrack::testing::route::{self, Sizes};
use subtrack::{SubTrackConfig, SubTrackState};

use crate::reference::Rng;
use crate::{download, upload, wgpu_device};

/// Everything a skipped step must leave unchanged, as host values.
fn snapshot(w: &Tensor<2>, state: &Option<SubTrackState<2>>) -> Vec<Vec<f64>> {
    let mut out = vec![download(w.clone()).data];
    match state {
        Some(SubTrackState::Projected(s)) => {
            out.push(download(s.basis.clone()).data);
            out.push(download(s.moment_1.clone()).data);
            out.push(download(s.moment_2.clone()).data);
            out.extend(s.limiter_norm.clone().map(|n| download(n.unsqueeze()).data));
        }
        Some(SubTrackState::Dense(s)) => {
            out.push(download(s.moment_1.clone()).data);
            out.push(download(s.moment_2.clone()).data);
        }
        None => {}
    }
    out
}

#[test]
fn wgsl_route_checks_gradients_on_the_device_and_reads_nothing_back() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let config = SubTrackConfig::subtrack_plus_plus()
        .with_rank(4)
        .with_update_interval(5)
        .with_weight_decay(0.01)
        .with_wgsl_kernels(true);
    let optim = config.build().unwrap();
    let report = optim.report();
    let mut rng = Rng::new(5);
    let packed = || [0, 6, 8].map(|first| kernels::launches("params: packed", [first, 4, 40]));
    let packed_before = packed();
    // A projected 24×40 weight (left case) and a 1×40 one that AdamW updates.
    for (rows, cols, projected) in [(24, 40, true), (1, 40, false)] {
        let mut w = upload(&rng.mat(rows, cols), &device);
        let mut state = None;
        let step = |w: Tensor<2>, g: Tensor<2>, state| {
            let reads = report.host_reads();
            let (w, state) = optim.step(0.01, w, g, state);
            (w, state, report.host_reads() - reads)
        };
        // Steps k = 0 … 9, subspace updates at k = 5 and the NaN step k = 10 included.
        for t in 0..10 {
            let g = upload(&rng.mat(rows, cols), &device);
            let (nw, ns, reads) = step(w, g, state);
            (w, state) = (nw, ns);
            if projected && t == 0 {
                assert!(reads > 0, "the first basis is found on the host");
            } else {
                assert_eq!(reads, 0, "step {t} of a {rows}×{cols} weight read back");
            }
        }
        // A NaN gradient: nothing read back, nothing changed, the skip counted on the device.
        let before = snapshot(&w, &state);
        let skips = report.nonfinite_skips();
        let mut bad = rng.mat(rows, cols);
        bad.data[3] = f64::NAN;
        let (nw, ns, reads) = step(w, upload(&bad, &device), state);
        (w, state) = (nw, ns);
        assert_eq!(reads, 0, "a skipped {rows}×{cols} step read back");
        assert_eq!(
            snapshot(&w, &state),
            before,
            "a skipped {rows}×{cols} step changed the weight or its state"
        );
        assert_eq!(report.nonfinite_skips(), skips + 1);
        // The skipped step still counts toward k (the host never learnt of it).
        assert_eq!(state.as_ref().map(|s| s.step()), Some(11));
        // Steps go on normally after the skip.
        let (nw, _, _) = step(w, upload(&rng.mat(rows, cols), &device), state);
        assert!(download(nw).data.iter().all(|x| x.is_finite()));
    }
    assert!(
        kernels::launches("adam", [4, 4, 40]) > 0,
        "the Adam kernel ran"
    );
    assert!(
        kernels::launches("recovery", [24, 4, 40]) > 0,
        "the recovery kernels ran"
    );
    assert!(
        kernels::launches("geodesic_step", [24, 4, 4]) > 0,
        "the tracking kernels ran"
    );
    assert_eq!(report.subspace_updates(), 2, "k = 5 and the skipped k = 10");
    // Steps k = 1 … 11 check on the device: their Adam, recovery and update kernels bind the
    // parameter buffer the projection made, except Adam at the subspace updates k = 5 and
    // 10, whose "moved" flag comes from the tracking kernels. (At least: other tests may
    // run kernels of these sizes at the same time.)
    let packed_after = packed();
    for (k, (name, steps)) in [("Adam", 9), ("recovery", 11), ("update", 11)]
        .iter()
        .enumerate()
    {
        assert!(
            packed_after[k] >= packed_before[k] + steps,
            "{name} bound the packed parameters {} times, not {steps}",
            packed_after[k] - packed_before[k]
        );
    }
}

#[test]
fn one_route_per_parameter_from_device_dtype_sizes_and_config() {
    let config = SubTrackConfig::subtrack_plus_plus().with_rank(8);
    let sizes = Sizes {
        a: 64,
        r: 8,
        b: 96,
        transposed: false,
    };
    let name = |config: &SubTrackConfig, device: &Device, dtype| {
        route::choose(config, device, dtype, Some(sizes)).name()
    };
    let cpu = Device::flex();
    assert_eq!(name(&config, &cpu, DType::F32), "fused CPU loops (flex)");
    assert_eq!(
        name(&config.clone().with_cpu_kernels(false), &cpu, DType::F32),
        "portable"
    );
    // The loops and kernels are f32: any other dtype takes the tensor ops.
    assert_eq!(name(&config, &cpu, DType::F64), "portable");
    let chosen = route::choose(&config, &cpu, DType::F32, None);
    assert!(
        !chosen.checks_on_device(),
        "only the WGSL route checks on the device"
    );

    let Some(device) = wgpu_device() else {
        return;
    };
    let chosen = route::choose(&config, &device, DType::F32, Some(sizes));
    assert_eq!(chosen.name(), "WGSL kernels");
    assert!(chosen.checks_on_device() && chosen.tracking(sizes).is_some());
    assert!(
        chosen.fallbacks(sizes).is_empty(),
        "{:?}",
        chosen.fallbacks(sizes)
    );
    assert_eq!(
        name(
            &config.clone().with_wgsl_kernels(false),
            &device,
            DType::F32
        ),
        "portable"
    );
    assert_eq!(name(&config, &device, DType::F64), "portable");
    // Past the kernels' plans: a transposed W over a 128 MiB binding (the update kernel
    // chunks only the left layout) and a rank over the tracking kernels' 1024. Sizes only:
    // nothing is allocated.
    let large = Sizes {
        a: 8192,
        r: 1100,
        b: 8192,
        transposed: true,
    };
    assert_eq!(
        chosen.fallbacks(large),
        ["update", "update with recovery", "tracking step"]
    );
    assert!(chosen.tracking(large).is_none());
}

/// The WGSL launches of one projected SubTrack++ step between subspace updates (untuned
/// sizes, no row chunks) on an adapter with more than WebGPU's 8 storage buffers (lavapipe
/// offers them): the projection, Adam fused with recovery scaling's norms, and the update
/// with the limiter, one each, and nothing else at these sizes: three. (Under 8 buffers the
/// step takes five: Adam, the column norms and the limiter apart.) Sizes 43×6×61 are this
/// test's alone (the counts are per process).
#[test]
fn launches_of_one_projected_step() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let (a, r, b) = (43, 6, 61);
    let config = SubTrackConfig::subtrack_plus_plus()
        .with_rank(r)
        .with_update_interval(50)
        .with_wgsl_kernels(true);
    let optim = config.build().unwrap();
    let mut rng = Rng::new(43);
    let mut w = upload(&rng.mat(a, b), &device);
    let mut state = None;
    // k = 0 (the initial basis) and k = 1 (the limiter's first norm) set the state up.
    for _ in 0..2 {
        let (nw, ns) = optim.step(0.01, w, upload(&rng.mat(a, b), &device), state);
        (w, state) = (nw, ns);
    }
    let kernels_at = [
        ("project", [a, r, b]),
        ("project_reduce", [a, r, b]),
        ("adam", [r, r, b]),
        ("adam_recovery", [a, r, b]),
        ("recovery", [a, r, b]),
        ("recovery_limit", [a, r, b]),
        ("update", [a, r, b]),
        ("tangent", [a, b, r]),
    ];
    let count = || kernels_at.map(|(name, sizes)| kernels::launches(name, sizes));
    // Read back: with fusion on, launches run (and count) when the stream is flushed.
    download(w.clone());
    let before = count();
    let (w, _) = optim.step(0.01, w, upload(&rng.mat(a, b), &device), state);
    download(w);
    let after = count();
    let made: Vec<u64> = after.iter().zip(before).map(|(x, y)| x - y).collect();
    assert_eq!(
        made,
        [1, 0, 0, 1, 0, 0, 1, 0],
        "launches per kernel of {kernels_at:?}"
    );
    assert_eq!(made.iter().sum::<u64>(), 3);
}

/// The fused three-launch step with either tile pinned, W in both layouts: twelve SubTrack++
/// steps (subspace updates at k = 5 and 10, whose rotation takes the unfused path) on
/// lavapipe match the CPU's portable path, and the fused kernels ran.
#[test]
fn fused_steps_match_the_cpu_with_either_tile() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let config = SubTrackConfig::subtrack_plus_plus()
        .with_rank(5)
        .with_update_interval(5);
    for (tile, (rows, cols)) in [
        (ProjectionTile::Block64, (37, 70)),
        (ProjectionTile::Block128, (71, 39)),
    ] {
        let (a, b) = (rows.min(cols), rows.max(cols));
        let mut rng = Rng::new(rows as u64);
        let w0 = rng.mat(rows, cols);
        let grads: Vec<_> = (0..12).map(|_| rng.mat(rows, cols)).collect();
        let run =
            |device: &Device, wgsl: bool| super::trajectory(&config, &w0, &grads, device, wgsl);
        let fused = || {
            [
                kernels::launches("adam_recovery", [a, 5, b]),
                kernels::launches("update: limited", [a, 5, b]),
            ]
        };
        let before = fused();
        kernels::set_projection_tile(tile);
        let on_gpu = run(&device, true);
        kernels::set_projection_tile(TileChoice::Tuned);
        let on_cpu = run(&Device::flex(), false);
        crate::assert_close(&on_gpu, &on_cpu, 1e-4, format_args!("fused steps, {tile}"));
        // k = 1 … 11 less the rotations at 5 and 10 (k = 0 finds the basis and runs too).
        let after = fused();
        assert!(
            after[0] >= before[0] + 9 && after[1] >= before[1] + 9,
            "{tile}: fused launches {before:?} → {after:?}"
        );
    }
}
