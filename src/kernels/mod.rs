//! Hand-written WGSL compute shaders (`shaders/`) on Burn's wgpu backend, and the routing
//! that uses them only where they can run: a wgpu device whose runtime compiles WGSL.
//! Everywhere else (CPU backends, CUDA, ROCm, wgpu builds on SPIR-V or MSL) the portable
//! tensor-op path runs, and the first fallback is logged once.
//!
//! Each kernel is an operation of the [`SubTrackKernels`] backend extension, registered for
//! Burn's CubeCL backend and, lazily, for its fusion layer, so it works with Burn's default
//! kernel fusion on.

mod project;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::CubeBackend;
use burn::backend::{Backend, Dispatch, DispatchDevice, backend_extension};
use burn::tensor::{Device, Tensor};

pub use project::projected_shape;

/// Operations with a WGSL implementation.
#[backend_extension(Cube, Fusion)]
pub trait SubTrackKernels: Backend {
    /// G̃ = SᵀG: `basis` a×r, `g` a×b → r×b (algorithm.md §2, canonical left layout).
    #[fusion(dtype = g, shape = projected_shape(basis, g))]
    fn wgsl_project(basis: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl SubTrackKernels for CubeBackend {
    fn wgsl_project(basis: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        project::launch(basis, g)
    }
}

/// Whether the WGSL kernels run for tensors on `device`: a wgpu device whose runtime
/// compiles WGSL (not SPIR-V or MSL). Opens the device's client.
pub fn wgsl_available(device: &Device) -> bool {
    match device.as_dispatch() {
        DispatchDevice::Cube(cube) => {
            matches!(cube, burn::cubecl::Device::Wgpu(_)) && cube.client().name() == "wgpu<wgsl>"
        }
        _ => false,
    }
}

static FALLBACK_REPORTED: AtomicBool = AtomicBool::new(false);
static LAUNCHES: AtomicU64 = AtomicU64::new(0);

/// WGSL kernel launches so far in this process (all kernels): lets callers and tests see
/// that the kernels, not the fallback, ran.
pub fn launches() -> u64 {
    LAUNCHES.load(Ordering::Relaxed)
}

/// Log, once per process, that the portable path runs on `device`.
fn report_fallback(device: &Device) {
    if !FALLBACK_REPORTED.swap(true, Ordering::Relaxed) {
        log::info!("subtrack: no WGSL kernels on {device:?}; using the portable tensor-op path");
    }
}

/// G̃ = SᵀG (algorithm.md §2): the WGSL kernel on wgpu/WGSL devices, tensor ops elsewhere.
pub fn project(basis: &Tensor<2>, g: &Tensor<2>) -> Tensor<2> {
    let device = g.device();
    if wgsl_available(&device) {
        Tensor::from_dispatch(Dispatch::wgsl_project(
            basis.clone().into_dispatch(),
            g.clone().into_dispatch(),
        ))
    } else {
        report_fallback(&device);
        crate::basis::project(basis, g)
    }
}
