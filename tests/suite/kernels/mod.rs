//! WGSL kernels (`src/kernels`, `shaders/`) and the fused CPU loops against the portable
//! path on the same inputs, and both against f64; one file per kernel, as in `src/kernels/`.
//!
//! `kernels::launches` counts per process, and the tests run in parallel: a test that
//! asserts an exact count of a kernel at some sizes must be the only one launching that
//! kernel at those sizes (hence 37×5×53, ×57 and ×59 in different files).

mod adam;
mod flex;
mod launch;
mod limits;
mod params;
mod project;
mod recovery;
mod route;
mod tracking;
mod tune;
mod update;

use burn::optim::Optimizer;
use burn::tensor::{Device, Tensor};
use subtrack::testing::kernels::Limits;
use subtrack::testing::route::RouteRequest;
use subtrack::{SubTrackConfig, SubTrackState};

use crate::reference::{Mat, Rng};
use crate::{download, upload};

/// The WGSL route with storage bindings of at most `max_binding_bytes`.
fn wgsl_within(max_binding_bytes: usize) -> RouteRequest {
    RouteRequest::WGSL.within(Limits::with_binding_bytes(max_binding_bytes))
}

/// W after `config`'s optimizer (the WGSL kernels on where `wgsl`) steps from `w0` through
/// `grads` on `device`, at learning rate 1e-2.
fn trajectory(
    config: &SubTrackConfig,
    w0: &Mat,
    grads: &[Mat],
    device: &Device,
    wgsl: bool,
) -> Mat {
    let optim = config.clone().with_wgsl_kernels(wgsl).build().unwrap();
    let mut w = upload(w0, device);
    let mut state: Option<SubTrackState<2>> = None;
    for g in grads {
        let (nw, ns) = optim.step(1e-2, w, upload(g, device), state);
        (w, state) = (nw, ns);
    }
    download(w)
}

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

/// `m` on `device`, stored as it is or (`view`) as the transposed view of its stored
/// transpose, the layout of the right case's canonical gradient.
fn stored(m: &Mat, view: bool, device: &Device) -> Tensor<2> {
    if view {
        upload(&m.t(), device).transpose()
    } else {
        upload(m, device)
    }
}

/// `m` as f32 values, back in f64: what a skipped step must return bit for bit.
fn upload_roundtrip(m: &Mat) -> Vec<f64> {
    m.data.iter().map(|&x| x as f32 as f64).collect()
}
