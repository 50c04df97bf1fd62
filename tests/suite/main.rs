//! Integration tests, one binary (each test binary links all of Burn).
//!
//! Every test runs on Burn's `flex` CPU backend and, where a Vulkan, Metal or DX12 adapter
//! exists, on wgpu (an OpenGL adapter is passed over, with a note saying so). With
//! `SUBTRACK_REQUIRE_WGPU=1` (set by `.ci/run`) a missing adapter fails the run.

mod bad_input;
mod checkpoint;
mod device;
mod diagnostics;
mod generate;
mod hand_gradients;
mod kernels;
mod learner;
mod precision;
mod pretrain;
mod reference;
mod replicas;
mod subspace;
mod trajectories;

use std::io::Write;
use std::sync::OnceLock;

use burn::tensor::{Device, DeviceKind, Tensor, TensorData};
use reference::Mat;
use subtrack::SubTrackConfig;
use subtrack_llama::device::wgpu_adapter;

/// The devices to test on: flex, plus wgpu when an adapter exists.
pub fn devices() -> Vec<Device> {
    let mut out = vec![Device::flex()];
    if let Some(wgpu) = wgpu_device() {
        out.push(wgpu);
    }
    out
}

/// The wgpu device, or `None` when this machine has no Vulkan, Metal or DX12 adapter. The
/// reason, naming any OpenGL adapter passed over, goes straight to stderr (past the
/// harness's capture) once per run; with `SUBTRACK_REQUIRE_WGPU=1` it fails the test instead.
pub fn wgpu_device() -> Option<Device> {
    static WGPU: OnceLock<Option<Device>> = OnceLock::new();
    WGPU.get_or_init(|| match wgpu_adapter(DeviceKind::DefaultDevice) {
        Ok(picked) => {
            let device = picked.device;
            // Touch the device so a broken adapter fails here, not inside a test.
            let probe = Tensor::<1>::from_floats([1.0, 2.0], &device)
                .sum()
                .into_scalar::<f32>();
            assert_eq!(probe, 3.0, "wgpu adapter computes 1 + 2 wrongly");
            Some(device)
        }
        Err(why) => {
            assert!(
                !wgpu_required(),
                "SUBTRACK_REQUIRE_WGPU=1 but no supported wgpu adapter: {why}"
            );
            let _ = writeln!(std::io::stderr(), "note: wgpu tests skipped: {why}");
            None
        }
    })
    .clone()
}

/// Whether `SUBTRACK_REQUIRE_WGPU=1` is set.
pub fn wgpu_required() -> bool {
    std::env::var("SUBTRACK_REQUIRE_WGPU").is_ok_and(|v| v == "1")
}

pub fn upload(m: &Mat, device: &Device) -> Tensor<2> {
    Tensor::from_data(
        TensorData::new(m.data.clone(), [m.rows, m.cols]).convert::<f32>(),
        device,
    )
}

pub fn download(t: Tensor<2>) -> Mat {
    let [rows, cols] = t.dims();
    let data = t
        .into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .unwrap();
    Mat { rows, cols, data }
}

/// ‖x − y‖ / ‖y‖.
fn rel_err(x: &Mat, y: &Mat) -> f64 {
    x.sub(y).norm() / y.norm().max(1e-300)
}

/// Assert ‖got − want‖ / ‖want‖ < `tol`; the message names `what` and the error.
#[track_caller]
pub fn assert_close(got: &Mat, want: &Mat, tol: f64, what: impl std::fmt::Display) {
    let err = rel_err(got, want);
    assert!(err < tol, "{what}: relative error {err:e} (limit {tol:e})");
}

/// The three presets, named.
pub fn presets() -> [(&'static str, SubTrackConfig); 3] {
    [
        ("GaLore", SubTrackConfig::galore()),
        ("SubTrack-Grad", SubTrackConfig::subtrack_grad()),
        ("SubTrack++", SubTrackConfig::subtrack_plus_plus()),
    ]
}

/// A tensor's elements as f64, in row-major order.
pub fn values<const D: usize>(t: &Tensor<D>) -> Vec<f64> {
    t.to_data().convert::<f64>().try_into_vec::<f64>().unwrap()
}

/// max |x − y| over paired elements.
pub fn max_abs_diff(x: &[f64], y: &[f64]) -> f64 {
    x.iter()
        .zip(y)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
}

/// A path that does not exist yet, inside a temporary directory that the returned guard
/// removes when it drops, also when the test panics.
pub fn fresh_dir(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("subtrack-{name}-"))
        .tempdir()
        .unwrap();
    let dir = tmp.path().join(name);
    (tmp, dir)
}
