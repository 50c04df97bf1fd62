//! Hand-written WGSL compute shaders (`shaders/`) on Burn's wgpu backend, and the routing
//! that uses them only where they can run: a wgpu device whose runtime compiles WGSL. The
//! optimizer asks for them through [`SubTrackConfig::wgsl_kernels`](crate::SubTrackConfig)
//! (off by default until they beat Burn's own matmul). Everywhere else (CPU backends, CUDA,
//! ROCm, wgpu builds on SPIR-V or MSL) the portable tensor-op path runs, and the first
//! fallback is logged once.
//!
//! Each kernel is an operation of the [`SubTrackKernels`] backend extension, registered for
//! Burn's CubeCL backend and, lazily, for its fusion layer, so it works with Burn's default
//! kernel fusion on.

mod project;
mod update;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor};
use burn::backend::{Backend, Dispatch, DispatchDevice, backend_extension};
use burn::cubecl::server::BufferBinding;
use burn::tensor::{DType, Device, Tensor};

pub use project::projected_shape;

/// Side of the square output block a workgroup computes: 16×16 invocations of 4×4 each.
const BLOCK: usize = 64;
/// Bytes a storage binding may hold under the portable WebGPU limits (lavapipe's too).
const MAX_BINDING_BYTES: usize = 128 << 20;
/// Workgroups per dispatch dimension.
const MAX_WORKGROUPS: usize = 65_535;
/// CubeCL's name for a wgpu runtime that compiles WGSL (not SPIR-V or MSL).
const WGSL: &str = "wgpu<wgsl>";

/// Rows per chunk when an a-row matrix of `widest` f32 columns exceeds `limit` bytes: as
/// many as fit, rounded down to a multiple of 64 so that every chunk's byte offset is a
/// multiple of 256 (the largest storage-offset alignment WebGPU lets a device require).
/// `None` when not even 64 rows fit.
fn chunk_rows(a: usize, widest: usize, limit: usize) -> Option<usize> {
    if a * widest * 4 <= limit {
        return Some(a);
    }
    let rows = limit / (4 * widest) / 64 * 64;
    (rows > 0).then_some(rows)
}

/// Rows `rows` of a row-major matrix of `total` rows and `width` f32 columns, bound as a
/// storage buffer: the byte range of the whole tensor narrowed by offsets.
fn row_chunk(t: &CubeTensor, rows: Range<usize>, total: usize, width: usize) -> BufferBinding {
    t.handle
        .clone()
        .offset_start((rows.start * width * 4) as u64)
        .offset_end(((total - rows.end) * width * 4) as u64)
        .binding()
}

/// Operations with a WGSL implementation.
#[backend_extension(Cube, Fusion)]
pub trait SubTrackKernels: Backend {
    /// G̃ = SᵀG: `basis` a×r, `g` a×b → r×b (algorithm.md §2, canonical left layout).
    /// S and G over `max_binding_bytes` are split into row chunks.
    #[fusion(dtype = g, shape = projected_shape(basis, g))]
    fn wgsl_project(
        basis: FloatTensor<Self>,
        g: FloatTensor<Self>,
        max_binding_bytes: usize,
    ) -> FloatTensor<Self>;

    /// W' = d·(W − α·S·L) (§2): `basis` a×r, `low` r×b, `weight` a×b or b×a (`transposed`).
    #[fusion(dtype = weight, shape = weight)]
    fn wgsl_update(
        basis: FloatTensor<Self>,
        low: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        alpha: f32,
        decay: f32,
        transposed: bool,
        max_binding_bytes: usize,
    ) -> FloatTensor<Self>;

    /// W' = d·(W − α·(S·L + G⊙ψ)) (§2 with §7 folded in): `grad` a×b, `psi` 1×b.
    #[allow(clippy::too_many_arguments)]
    #[fusion(dtype = weight, shape = weight)]
    fn wgsl_update_recovery(
        basis: FloatTensor<Self>,
        low: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        psi: FloatTensor<Self>,
        alpha: f32,
        decay: f32,
        transposed: bool,
        max_binding_bytes: usize,
    ) -> FloatTensor<Self>;
}

impl SubTrackKernels for CubeBackend {
    fn wgsl_project(
        basis: FloatTensor<Self>,
        g: FloatTensor<Self>,
        max_binding_bytes: usize,
    ) -> FloatTensor<Self> {
        project::launch(basis, g, max_binding_bytes)
    }

    fn wgsl_update(
        basis: FloatTensor<Self>,
        low: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        alpha: f32,
        decay: f32,
        transposed: bool,
        max_binding_bytes: usize,
    ) -> FloatTensor<Self> {
        let limit = max_binding_bytes;
        update::launch(basis, low, weight, None, alpha, decay, transposed, limit)
    }

    fn wgsl_update_recovery(
        basis: FloatTensor<Self>,
        low: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        psi: FloatTensor<Self>,
        alpha: f32,
        decay: f32,
        transposed: bool,
        max_binding_bytes: usize,
    ) -> FloatTensor<Self> {
        let (recovery, limit) = (Some((grad, psi)), max_binding_bytes);
        update::launch(
            basis, low, weight, recovery, alpha, decay, transposed, limit,
        )
    }
}

/// Whether the WGSL kernels run for tensors on `device`: a wgpu device whose runtime
/// compiles WGSL (not SPIR-V or MSL). Opens the device's client.
pub fn wgsl_available(device: &Device) -> bool {
    match device.as_dispatch() {
        DispatchDevice::Cube(cube) => {
            matches!(cube, burn::cubecl::Device::Wgpu(_)) && cube.client().name() == WGSL
        }
        _ => false,
    }
}

static FALLBACK_REPORTED: AtomicBool = AtomicBool::new(false);
static LAUNCHES: Mutex<BTreeMap<(&'static str, [usize; 3]), u64>> = Mutex::new(BTreeMap::new());

/// Count a launch of `kernel` at sizes (a, r, b).
fn count_launch(kernel: &'static str, sizes: [usize; 3]) {
    let mut map = LAUNCHES.lock().unwrap_or_else(|e| e.into_inner());
    *map.entry((kernel, sizes)).or_default() += 1;
}

/// How many times `kernel` (`"project"` or `"update"`) was launched at sizes `[a, r, b]` in
/// this process: lets callers and tests see that the WGSL kernel, not a fallback, ran.
pub fn launches(kernel: &str, sizes: [usize; 3]) -> u64 {
    let map = LAUNCHES.lock().unwrap_or_else(|e| e.into_inner());
    map.iter()
        .filter(|((k, s), _)| *k == kernel && *s == sizes)
        .map(|(_, n)| *n)
        .sum()
}

/// Log, once per process, that the portable path runs where the kernels were asked for.
fn report_fallback(device: &Device) {
    if !FALLBACK_REPORTED.swap(true, Ordering::Relaxed) {
        log::info!(
            "subtrack: WGSL kernels requested but not usable on {device:?} (not a WGSL \
             runtime, not f32, or sizes past the kernels' limits); using the portable path"
        );
    }
}

/// G̃ = SᵀG (algorithm.md §2): with `wgsl`, the WGSL kernel on wgpu/WGSL devices for f32
/// tensors within its size limits; tensor ops otherwise.
pub fn project(basis: &Tensor<2>, g: &Tensor<2>, wgsl: bool) -> Tensor<2> {
    project_within(basis, g, wgsl, MAX_BINDING_BYTES)
}

/// [`project`] with storage bindings of at most `max_binding_bytes`: S and G larger than
/// that are projected in row chunks. [`project`] uses the 128 MiB WebGPU default; a smaller
/// value exercises the chunking on small tensors.
pub fn project_within(
    basis: &Tensor<2>,
    g: &Tensor<2>,
    wgsl: bool,
    max_binding_bytes: usize,
) -> Tensor<2> {
    let device = g.device();
    let ([a, r], b) = (basis.dims(), g.dims()[1]);
    let runs = wgsl
        && [basis, g].iter().all(|t| t.dtype() == DType::F32)
        && project::plan(a, r, b, max_binding_bytes).is_some()
        && wgsl_available(&device);
    if runs {
        Tensor::from_dispatch(Dispatch::wgsl_project(
            basis.clone().into_dispatch(),
            g.clone().into_dispatch(),
            max_binding_bytes,
        ))
    } else {
        if wgsl {
            report_fallback(&device);
        }
        crate::basis::project(basis, g)
    }
}

/// The weight update of a projected matrix (algorithm.md §2, with §7 folded in):
/// W' = d·(W − α·(S·L + G⊙ψ)), α = lr·c, d = 1 − lr·wd.
///
/// `basis` S a×r and `low` L r×b in the canonical layout; `weight` W a×b, or b×a when
/// `transposed` (the right case of §1); `recovery` (G a×b, ψ 1×b) when recovery scaling is
/// on. With `wgsl`, one fused WGSL kernel on wgpu/WGSL devices for f32 tensors within its
/// size limits (S·L is never stored); tensor ops otherwise.
#[allow(clippy::too_many_arguments)]
pub fn update(
    basis: &Tensor<2>,
    low: Tensor<2>,
    weight: Tensor<2>,
    recovery: Option<(Tensor<2>, Tensor<2>)>,
    alpha: f64,
    decay: f64,
    transposed: bool,
    wgsl: bool,
) -> Tensor<2> {
    let limit = MAX_BINDING_BYTES;
    update_within(
        basis, low, weight, recovery, alpha, decay, transposed, wgsl, limit,
    )
}

/// [`update`] with storage bindings of at most `max_binding_bytes`: S, W and G larger than
/// that are updated in row chunks (the left layout only; a transposed W over the limit
/// takes the tensor-op path).
#[allow(clippy::too_many_arguments)]
pub fn update_within(
    basis: &Tensor<2>,
    low: Tensor<2>,
    weight: Tensor<2>,
    recovery: Option<(Tensor<2>, Tensor<2>)>,
    alpha: f64,
    decay: f64,
    transposed: bool,
    wgsl: bool,
    max_binding_bytes: usize,
) -> Tensor<2> {
    let device = weight.device();
    let ([a, r], b) = (basis.dims(), low.dims()[1]);
    let runs = wgsl
        && [basis, &low, &weight]
            .into_iter()
            .chain(recovery.iter().flat_map(|(g, p)| [g, p]))
            .all(|t| t.dtype() == DType::F32)
        && update::plan(a, r, b, transposed, max_binding_bytes).is_some()
        && wgsl_available(&device);
    if runs {
        let (basis, low, weight) = (
            basis.clone().into_dispatch(),
            low.into_dispatch(),
            weight.into_dispatch(),
        );
        let (alpha, decay) = (alpha as f32, decay as f32);
        return Tensor::from_dispatch(match recovery {
            None => Dispatch::wgsl_update(
                basis,
                low,
                weight,
                alpha,
                decay,
                transposed,
                max_binding_bytes,
            ),
            Some((grad, psi)) => Dispatch::wgsl_update_recovery(
                basis,
                low,
                weight,
                grad.into_dispatch(),
                psi.into_dispatch(),
                alpha,
                decay,
                transposed,
                max_binding_bytes,
            ),
        });
    }
    if wgsl {
        report_fallback(&device);
    }
    let mut u = crate::basis::project_back(basis, low);
    if let Some((grad, psi)) = recovery {
        u = u + grad * psi;
    }
    if transposed {
        u = u.transpose();
    }
    let stepped = weight - u.mul_scalar(alpha);
    if decay == 1.0 {
        stepped
    } else {
        stepped.mul_scalar(decay)
    }
}
