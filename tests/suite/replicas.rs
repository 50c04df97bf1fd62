//! Determinism for data-parallel training: optimizer replicas fed the same gradients, each
//! stepped from its own thread, stay bit-identical (weights, bases, moments, limiter norms)
//! across subspace updates, on every device and route (the device's kernels and the
//! portable tensor ops). DDP never re-broadcasts parameters,
//! so any difference between replicas would grow into drift.

use std::sync::Barrier;

use burn::optim::Optimizer;
use burn::tensor::{Device, Tensor};
use subtrack::{SubTrackConfig, SubTrackState};

use crate::reference::Rng;
use crate::{devices, presets, upload, values};

/// Every float of a weight and its state, as bits, in a fixed order.
fn bits(w: &Tensor<2>, state: &Option<SubTrackState<2>>) -> Vec<u64> {
    let mut out: Vec<f64> = values(w);
    match state {
        Some(SubTrackState::Projected(s)) => {
            out.extend(values(&s.basis));
            out.extend(values(&s.moment_1));
            out.extend(values(&s.moment_2));
            out.extend(s.limiter_norm.iter().flat_map(values));
            out.push(s.step as f64);
        }
        Some(SubTrackState::Dense(s)) => {
            out.extend(values(&s.moment_1));
            out.extend(values(&s.moment_2));
            out.push(s.step as f64);
        }
        None => {}
    }
    out.into_iter().map(f64::to_bits).collect()
}

/// One replica: its own optimizer from `config`, `steps` steps on each of the shapes with
/// the gradients every replica draws alike; returns the bits after each step. `barrier`
/// makes the replicas' steps interleave.
fn replica(
    config: &SubTrackConfig,
    shapes: &[[usize; 2]],
    steps: usize,
    device: &Device,
    barrier: &Barrier,
) -> Vec<Vec<u64>> {
    let optim = config.build().unwrap();
    let mut rng = Rng::new(99);
    let mut weights: Vec<Tensor<2>> = shapes
        .iter()
        .map(|&[m, n]| upload(&rng.mat(m, n), device))
        .collect();
    let mut states: Vec<Option<SubTrackState<2>>> = vec![None; shapes.len()];
    let mut trace = Vec::new();
    for k in 0..steps {
        barrier.wait();
        for (i, &[m, n]) in shapes.iter().enumerate() {
            let grad = upload(&Rng::new((k * 10 + i) as u64).mat(m, n), device);
            let (w, s) = optim.step(0.01, weights[i].clone(), grad, states[i].take());
            trace.push(bits(&w, &s));
            (weights[i], states[i]) = (w, s);
        }
    }
    trace
}

#[test]
fn replicas_stepped_from_threads_stay_bit_identical() {
    const REPLICAS: usize = 3;
    // Left and right projected layouts and a dense parameter; T = 3 and 8 steps put
    // subspace updates at k = 3 and 6.
    let shapes = [[24, 40], [40, 24], [1, 40]];
    // Each device's own route (flex's fused loops, the WGSL kernels) and the portable one.
    let routes = devices()
        .into_iter()
        .flat_map(|device| [(device.clone(), true), (device, false)]);
    for (device, kernels) in routes {
        for (name, preset) in presets() {
            let config = preset
                .with_rank(4)
                .with_update_interval(3)
                .with_step_size(0.05)
                .with_weight_decay(0.01)
                .with_wgsl_kernels(kernels)
                .with_cpu_kernels(kernels);
            let name = format!("{name} (kernels {kernels})");
            let barrier = Barrier::new(REPLICAS);
            let traces: Vec<Vec<Vec<u64>>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..REPLICAS)
                    .map(|_| scope.spawn(|| replica(&config, &shapes, 8, &device, &barrier)))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for (r, trace) in traces.iter().enumerate().skip(1) {
                for (step, (got, want)) in trace.iter().zip(&traces[0]).enumerate() {
                    let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
                    assert!(
                        got.len() == want.len() && differ == 0,
                        "{name} on {device:?}: replica {r} differs from replica 0 in {differ} values at parameter step {step}"
                    );
                }
            }
        }
    }
}
