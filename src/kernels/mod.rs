//! Hand-written WGSL compute shaders (`shaders/`) on Burn's wgpu backend, and the routing
//! that uses them only where they can run: a wgpu device whose runtime compiles WGSL. The
//! optimizer asks for them through [`SubTrackConfig::wgsl_kernels`](crate::SubTrackConfig)
//! (on by default). Everywhere else (CPU backends, CUDA,
//! ROCm, wgpu builds on SPIR-V or MSL) the portable tensor-op path runs, and the first
//! fallback is logged once.
//!
//! The kernels: [`project`], [`adam`] (with the moment rotation), [`recovery`] (column norms
//! and limiter), [`update`] (back-projection fused with the weight update) and [`track`] (the
//! geodesic tracking step). The projection finds the step flag ([`project_checked`]: 0 where
//! G holds NaN or ±∞) in the same pass over G, and the later kernels take it, so such a
//! gradient is skipped without a read-back.
//!
//! Each kernel is an operation of the [`SubTrackKernels`] backend extension, registered for
//! Burn's CubeCL backend and, lazily, for its fusion layer, so it works with Burn's default
//! kernel fusion on.

mod adam;
mod flex;
mod project;
mod recovery;
mod tracking;
mod update;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, KernelSource, SourceTemplate, into_contiguous};
use burn::backend::{Backend, Dispatch, DispatchDevice, backend_extension};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::BufferBinding;
use burn::tensor::{DType, Device, Shape, Tensor, TensorData};

use crate::config::{ProjectionAware, RecoveryScaling};
use crate::moments::{AdamParams, rotate_moments};
use crate::recovery::{RecoveryScales, column_sq, kept_weight, recovery_scales};

pub use project::projected_shape;

/// Side of the square output block a workgroup computes: 16×16 invocations of 4×4 each.
const BLOCK: usize = 64;
/// Bytes a storage binding may hold under the portable WebGPU limits (lavapipe's too).
const MAX_BINDING_BYTES: usize = 128 << 20;

/// The device limits the kernels plan their launches for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes one storage binding may hold; larger tensors are bound in row chunks.
    pub max_binding_bytes: usize,
    /// Workgroups per dispatch dimension; wider matrices take several launches.
    pub max_workgroups: usize,
}

impl Limits {
    /// WebGPU's portable defaults, which every adapter supports: 128 MiB per storage
    /// binding, 65,535 workgroups per dimension.
    pub const WEBGPU: Limits = Limits {
        max_binding_bytes: MAX_BINDING_BYTES,
        max_workgroups: MAX_WORKGROUPS,
    };
}

/// (first block, blocks) of each launch over the ⌈b/64⌉ 64-column blocks of a matrix, at most
/// `limits.max_workgroups` blocks a launch.
fn column_groups(b: usize, limits: Limits) -> Vec<(usize, usize)> {
    let blocks = b.div_ceil(BLOCK);
    (0..blocks)
        .step_by(limits.max_workgroups)
        .map(|first| (first, limits.max_workgroups.min(blocks - first)))
        .collect()
}
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

/// A WGSL shader (`shaders/`) with its template values, all part of the kernel id.
#[derive(Debug)]
struct Templated {
    name: &'static str,
    source: &'static str,
    values: Vec<(&'static str, String)>,
}

impl Templated {
    fn new(name: &'static str, source: &'static str) -> Self {
        Self {
            name,
            source,
            values: Vec::new(),
        }
    }

    /// Register `{{key}}` = `value`.
    fn with(mut self, key: &'static str, value: impl ToString) -> Self {
        self.values.push((key, value.to_string()));
        self
    }
}

impl KernelSource for Templated {
    fn source(&self) -> SourceTemplate {
        self.values
            .iter()
            .fold(SourceTemplate::new(self.source), |t, (k, v)| {
                t.register(*k, v)
            })
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.name, self.values.clone()))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Panics unless every tensor is f32 on a runtime that compiles WGSL: the launchers'
/// callers have checked both, so this only guards against misuse.
fn assert_f32_on_wgsl(kernel: &str, tensors: &[&CubeTensor]) {
    assert!(
        tensors.iter().all(|t| t.dtype == DType::F32) && tensors[0].client.name() == WGSL,
        "{kernel}: f32 tensors on a WGSL runtime"
    );
}

/// A new, uninitialised contiguous f32 tensor of `shape` beside `like`.
fn empty_f32(like: &CubeTensor, shape: Shape) -> CubeTensor {
    let bytes = shape.num_elements() * 4;
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        like.client.empty(bytes),
        DType::F32,
    )
}

/// A contiguous f32 tensor of `shape` beside `like`, uploaded from `values`.
fn f32_from(like: &CubeTensor, shape: Shape, values: &[f32]) -> CubeTensor {
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        like.client.create_from_slice(bytemuck::cast_slice(values)),
        DType::F32,
    )
}

/// Whether `t` (2-D) is the transposed view of a row-major tensor: its buffer then holds tᵀ
/// row by row, and a kernel can read it in place. The right case's canonical gradient is
/// such a view (G = ∇Wᵀ, §1); copying it to rows of its own would cost a pass over G.
fn is_transposed_view(t: &CubeTensor) -> bool {
    let (shape, strides) = (t.meta.shape(), t.meta.strides());
    !t.meta.is_tiled() && shape.len() == 2 && strides[0] == 1 && strides[1] == shape[0]
}

/// tᵀ of a 2-D tensor, row-major: the view swapped back where `t` is a transposed view
/// ([`is_transposed_view`], no copy), else a copy.
fn contiguous_transpose(mut t: CubeTensor) -> CubeTensor {
    t.meta.swap(0, 1);
    into_contiguous(t)
}

/// G (a×b) as a kernel reads it: in place as its stored transpose (b×a rows, `true`) where
/// it is a transposed view and one launch takes all its rows (`rows_per_launch` = a), else
/// row-major a×b (`false`, a copy where it is not already).
fn stored_gradient(g: CubeTensor, rows_per_launch: usize) -> (CubeTensor, bool) {
    if is_transposed_view(&g) && rows_per_launch == g.meta.shape()[0] {
        (contiguous_transpose(g), true)
    } else {
        (into_contiguous(g), false)
    }
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

/// Operations with a WGSL implementation. `params` and `scalars` are small f32 tensors whose
/// last element is the step flag (1 = step, 0 = skip), so that a skip decided on the device
/// needs no read-back.
#[backend_extension(Cube, Fusion)]
pub trait SubTrackKernels: Backend {
    /// (G̃ = SᵀG, flag): `basis` a×r, `g` a×b → r×b (algorithm.md §2, canonical left
    /// layout), and the step flag \[1\] (0 where G holds NaN or ±∞). S and G over
    /// `max_binding_bytes` are split into row chunks, columns past `max_workgroups` blocks
    /// into several launches.
    #[fusion(meta = |s, g, _b, _w| (
        TensorSpec::new(projected_shape(&s.shape, &g.shape), g.dtype),
        TensorSpec::new(Shape::from([1]), g.dtype),
    ))]
    fn wgsl_project(
        basis: FloatTensor<Self>,
        g: FloatTensor<Self>,
        max_binding_bytes: usize,
        max_workgroups: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Split-K projection: (`splits` partial sums of SᵀG stacked as (splits·r)×b, flag).
    #[fusion(meta = |s, g, k| (
        TensorSpec::new(Shape::from([k * s.shape[1], g.shape[1]]), g.dtype),
        TensorSpec::new(Shape::from([1]), g.dtype),
    ))]
    fn wgsl_project_split(
        basis: FloatTensor<Self>,
        g: FloatTensor<Self>,
        splits: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Low-rank Adam (§2): (M', V', N) from M, V, G̃ (r×b) and `params`
    /// [β1, 1−β1, β2, 1−β2, ε, v_scale, moved, flag].
    #[fusion(meta = |m, _v, _g, _p, _b, _w| (m.clone(), m.clone(), m.clone()))]
    fn wgsl_adam(
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        params: FloatTensor<Self>,
        max_binding_bytes: usize,
        max_workgroups: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// [`wgsl_adam`](SubTrackKernels::wgsl_adam) after rotating M and V with C = S_newᵀ·S_old
    /// (r×r, §5) where `moved` (in `params`) is 1.
    #[fusion(meta = |m, _v, _g, _p, _c, _b, _w| (m.clone(), m.clone(), m.clone()))]
    fn wgsl_adam_rotate(
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        params: FloatTensor<Self>,
        change: FloatTensor<Self>,
        max_binding_bytes: usize,
        max_workgroups: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Recovery scales (§7) without a previous norm: (ψ 1×b, ‖Λ‖ \[1\]) from G (a×b), G̃ and
    /// N (r×b) and `params` [2k − k², ζ, flag]. G over `max_binding_bytes` is read in row
    /// chunks. `tiled`: the column norms by 64×64 tiles (experimental, see
    /// [`set_tiled_recovery_norms`]).
    #[fusion(meta = |g, _l, _n, _p, _m, _t| recovery_meta(g, _l, _n, _p, _m))]
    fn wgsl_recovery(
        grad: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        params: FloatTensor<Self>,
        max_binding_bytes: usize,
        tiled: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// [`wgsl_recovery`](SubTrackKernels::wgsl_recovery) with the norm-growth limiter
    /// against `previous` = Λ_prev (\[1\]).
    #[fusion(meta = |g, _l, _n, _p, _q, _m, _t| recovery_meta(g, _l, _n, _p, _m))]
    fn wgsl_recovery_limited(
        grad: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        params: FloatTensor<Self>,
        previous: FloatTensor<Self>,
        max_binding_bytes: usize,
        tiled: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// W' = d·(W − α·s·S·N) (§2): `basis` a×r, `normalized` r×b, `weight` a×b or b×a
    /// (`transposed`), `scalars` [α, d, s, k, flag].
    #[fusion(dtype = weight, shape = weight)]
    fn wgsl_update(
        basis: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scalars: FloatTensor<Self>,
        transposed: bool,
        max_binding_bytes: usize,
        max_workgroups: usize,
    ) -> FloatTensor<Self>;

    /// W' = d·(W − α·(S·L + G⊙ψ)), L = s·N − k·G̃⊙ψ (§2 with §7 folded in): `grad` a×b,
    /// `psi` 1×b, `g_low` r×b.
    #[allow(clippy::too_many_arguments)]
    #[fusion(dtype = weight, shape = weight)]
    fn wgsl_update_recovery(
        basis: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scalars: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        psi: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        transposed: bool,
        max_binding_bytes: usize,
        max_workgroups: usize,
    ) -> FloatTensor<Self>;

    /// out = X·Yᵀ (X m×k, Y n×k → m×n): G·Aᵀ, A·Aᵀ and the re-orthonormalisation
    /// products of the tracking step (§4). X over `max_binding_bytes` is split into row
    /// chunks.
    #[fusion(dtype = x, shape = Shape::from([x[0], y[0]]))]
    fn wgsl_product(
        x: FloatTensor<Self>,
        y: FloatTensor<Self>,
        max_binding_bytes: usize,
    ) -> FloatTensor<Self>;

    /// The top singular triplet of ∇F and the geodesic angle (§4): [v (r), σ, θ, cos θ,
    /// sin θ, moved] from P = ∇Fᵀ∇F, its normalised power Q (r×r) and `params`
    /// [η, θ_max (< 0: none), floor, ‖G‖²_F, flag].
    #[fusion(dtype = normal, shape = Shape::from([normal[0] + 5]))]
    fn wgsl_top_singular(
        normal: FloatTensor<Self>,
        powered: FloatTensor<Self>,
        params: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The geodesic update (§4): (S', C = S'ᵀS) from S and ∇F (a×r) and the triplet.
    #[fusion(meta = |s, _f, _t| (s.clone(), TensorSpec::new(Shape::from([s.shape[1], s.shape[1]]), s.dtype)))]
    fn wgsl_geodesic_step(
        basis: FloatTensor<Self>,
        tangent: FloatTensor<Self>,
        triplet: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Re-orthonormalisation (§4): (F, status) from S'ᵀS' (r×r) and `params` \[tol\]; F = L⁻¹
    /// of its Cholesky factor when the drift exceeds tol (status 1), else I (status 0).
    #[fusion(meta = |g, _p| (g.clone(), TensorSpec::new(Shape::from([1]), g.dtype)))]
    fn wgsl_reorthonormalize(
        gram: FloatTensor<Self>,
        params: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

fn limits(max_binding_bytes: usize, max_workgroups: usize) -> Limits {
    Limits {
        max_binding_bytes,
        max_workgroups,
    }
}

/// Output specs of the recovery kernels: ψ [1, b] and the norm \[1\].
fn recovery_meta(
    grad: &TensorSpec,
    _g_low: &TensorSpec,
    _normalized: &TensorSpec,
    _params: &TensorSpec,
    _max_binding_bytes: &usize,
) -> (TensorSpec, TensorSpec) {
    (
        TensorSpec::new(Shape::from([1, grad.shape[1]]), grad.dtype),
        TensorSpec::new(Shape::from([1]), grad.dtype),
    )
}

impl SubTrackKernels for CubeBackend {
    fn wgsl_project(
        basis: FloatTensor<Self>,
        g: FloatTensor<Self>,
        max_binding_bytes: usize,
        max_workgroups: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        project::launch(basis, g, limits(max_binding_bytes, max_workgroups))
    }

    fn wgsl_project_split(
        basis: FloatTensor<Self>,
        g: FloatTensor<Self>,
        splits: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        project::launch_split(basis, g, splits, Limits::WEBGPU)
    }

    fn wgsl_adam(
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        params: FloatTensor<Self>,
        max_binding_bytes: usize,
        max_workgroups: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let limits = limits(max_binding_bytes, max_workgroups);
        adam::launch(moment_1, moment_2, g_low, params, None, limits)
    }

    fn wgsl_adam_rotate(
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        params: FloatTensor<Self>,
        change: FloatTensor<Self>,
        max_binding_bytes: usize,
        max_workgroups: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let limits = limits(max_binding_bytes, max_workgroups);
        adam::launch(moment_1, moment_2, g_low, params, Some(change), limits)
    }

    fn wgsl_recovery(
        grad: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        params: FloatTensor<Self>,
        max_binding_bytes: usize,
        tiled: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        recovery::launch(
            grad,
            g_low,
            normalized,
            params,
            None,
            max_binding_bytes,
            tiled,
        )
    }

    fn wgsl_recovery_limited(
        grad: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        params: FloatTensor<Self>,
        previous: FloatTensor<Self>,
        max_binding_bytes: usize,
        tiled: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let limit = max_binding_bytes;
        recovery::launch(
            grad,
            g_low,
            normalized,
            params,
            Some(previous),
            limit,
            tiled,
        )
    }

    fn wgsl_update(
        basis: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scalars: FloatTensor<Self>,
        transposed: bool,
        max_binding_bytes: usize,
        max_workgroups: usize,
    ) -> FloatTensor<Self> {
        let limits = limits(max_binding_bytes, max_workgroups);
        update::launch(basis, normalized, weight, scalars, None, transposed, limits)
    }

    fn wgsl_update_recovery(
        basis: FloatTensor<Self>,
        normalized: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scalars: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        psi: FloatTensor<Self>,
        g_low: FloatTensor<Self>,
        transposed: bool,
        max_binding_bytes: usize,
        max_workgroups: usize,
    ) -> FloatTensor<Self> {
        let limits = limits(max_binding_bytes, max_workgroups);
        let recovery = Some((grad, psi, g_low));
        update::launch(
            basis, normalized, weight, scalars, recovery, transposed, limits,
        )
    }

    fn wgsl_product(
        x: FloatTensor<Self>,
        y: FloatTensor<Self>,
        max_binding_bytes: usize,
    ) -> FloatTensor<Self> {
        tracking::product(x, y, max_binding_bytes)
    }

    fn wgsl_top_singular(
        normal: FloatTensor<Self>,
        powered: FloatTensor<Self>,
        params: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        tracking::top_singular(normal, powered, params)
    }

    fn wgsl_geodesic_step(
        basis: FloatTensor<Self>,
        tangent: FloatTensor<Self>,
        triplet: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        tracking::geodesic_step(basis, tangent, triplet)
    }

    fn wgsl_reorthonormalize(
        gram: FloatTensor<Self>,
        params: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        tracking::reorthonormalize(gram, params)
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

/// How many times `kernel` (`"project"`, `"adam"`, `"recovery"` (one per row chunk of G)
/// or `"update"`) was launched at sizes `[a, r, b]` in
/// this process: lets callers and tests see that the WGSL kernel, not a fallback, ran.
/// `"project: Gᵀ in place"`, `"recovery: Gᵀ in place"` and `"update: Gᵀ in place"` count
/// the launches that read a transposed-view gradient from its own buffer, uncopied;
/// `"project: flex"`, `"update: flex"`, `"adam: flex"` (sizes [r, 0, b]) and
/// `"column_sq: flex"` (sizes [a, 0, b]) the fused CPU loops.
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

/// G̃ = SᵀG (algorithm.md §2): with `cpu`, one gemm on `flex` read from S's and G's views
/// ([`flex::project`]); with `wgsl`, the WGSL kernel on wgpu/WGSL devices for f32 tensors
/// within its size limits; tensor ops otherwise.
pub fn project(basis: &Tensor<2>, g: &Tensor<2>, wgsl: bool, cpu: bool) -> Tensor<2> {
    if cpu && flex::runs(&g.device(), &[basis, g]) {
        let ([a, r], b) = (basis.dims(), g.dims()[1]);
        count_launch("project: flex", [a, r, b]);
        return flex::project(basis, g);
    }
    if wgsl && PROJECTION_SPLITS.with(Cell::get) > 1 {
        return project_checked(basis, g, wgsl).0;
    }
    project_flagged(basis, g, wgsl, Limits::WEBGPU).0
}

thread_local! {
    static PROJECTION_SPLITS: Cell<usize> = const { Cell::new(1) };
    static TILED_RECOVERY_NORMS: Cell<bool> = const { Cell::new(false) };
}

/// Experimental tuning hook: from now on, the WGSL recovery column norms on this thread use
/// 64×64 tiles over a 2-D grid with partial sums per 64-row block
/// (`shaders/recovery_norms_tiled.wgsl`) instead of one invocation per column over all rows
/// (`recovery_norms.wgsl`, the default). The tiled kernel fills a GPU (⌈b/256⌉ workgroups
/// are 2–6 at the 60m shapes) but was slower on lavapipe (437–448 against 389–418 ms for
/// a 20m SubTrack++ step); `benchmark --tiled-recovery-norms` measures it on a GPU.
pub fn set_tiled_recovery_norms(on: bool) {
    TILED_RECOVERY_NORMS.with(|t| t.set(on));
}

/// Experimental tuning hook: from now on, the WGSL projections on this thread ([`project`],
/// [`project_checked`], so the optimizer's steps run here) use [`project_split`] with
/// `splits` partial sums (1, the default, turns it off). For measuring split-K on a GPU
/// (`benchmark --projection-splits N`); no default is set from it yet.
pub fn set_projection_splits(splits: usize) {
    PROJECTION_SPLITS.with(|s| s.set(splits.max(1)));
}

/// (G̃, flag): [`project`] with the step flag of G ([`step_flag`]), which the WGSL kernel
/// finds while it reads G (no pass of its own).
pub fn project_checked(basis: &Tensor<2>, g: &Tensor<2>, wgsl: bool) -> (Tensor<2>, Tensor<1>) {
    let splits = PROJECTION_SPLITS.with(Cell::get);
    if wgsl && splits > 1 {
        return project_split(basis, g, splits);
    }
    project_within(basis, g, wgsl, Limits::WEBGPU)
}

/// (G̃, flag) under `limits`: S and G over the binding limit are projected in row chunks,
/// columns past the workgroup limit in several launches. [`project`] uses the WebGPU
/// defaults; smaller limits exercise the splitting on small tensors.
pub fn project_within(
    basis: &Tensor<2>,
    g: &Tensor<2>,
    wgsl: bool,
    limits: Limits,
) -> (Tensor<2>, Tensor<1>) {
    match project_flagged(basis, g, wgsl, limits) {
        (g_low, Some(flag)) => (g_low, flag),
        (g_low, None) => (g_low, step_flag(g)),
    }
}

/// (G̃, the kernel's step flag): the flag only where the WGSL kernel found it while reading
/// G; the tensor-op path leaves it to the caller, who may not need it (two passes over G).
fn project_flagged(
    basis: &Tensor<2>,
    g: &Tensor<2>,
    wgsl: bool,
    limits: Limits,
) -> (Tensor<2>, Option<Tensor<1>>) {
    let device = g.device();
    let ([a, r], b) = (basis.dims(), g.dims()[1]);
    let runs = wgsl
        && [basis, g].iter().all(|t| t.dtype() == DType::F32)
        && project::plan(a, r, b, limits).is_some()
        && wgsl_available(&device);
    if runs {
        let (g_low, flag) = Dispatch::wgsl_project(
            basis.clone().into_dispatch(),
            g.clone().into_dispatch(),
            limits.max_binding_bytes,
            limits.max_workgroups,
        );
        (
            Tensor::from_dispatch(g_low),
            Some(Tensor::from_dispatch(flag)),
        )
    } else {
        if wgsl {
            report_fallback(&device);
        }
        (crate::basis::project(basis, g), None)
    }
}

/// (G̃, flag) by split-K (experimental, for tuning; the optimizer uses [`project_checked`]):
/// the WGSL kernel writes `splits` partial sums over row ranges of S and G, and Burn's
/// reduction adds them. More workgroups than [`project`] where r×b is small next to a (the
/// 60m shapes on a GPU with many multiprocessors), at the cost of splits·r·b floats. Falls
/// back to the single launch ([`project_within`]) where `splits` is 1 or the split launch
/// cannot run.
pub fn project_split(basis: &Tensor<2>, g: &Tensor<2>, splits: usize) -> (Tensor<2>, Tensor<1>) {
    let ([a, r], b) = (basis.dims(), g.dims()[1]);
    let runs = splits > 1
        && [basis, g].iter().all(|t| t.dtype() == DType::F32)
        && project::split_plan(a, r, b, splits, Limits::WEBGPU).is_some()
        && wgsl_available(&g.device());
    if !runs {
        return project_within(basis, g, true, Limits::WEBGPU);
    }
    let (partials, flag) = Dispatch::wgsl_project_split(
        basis.clone().into_dispatch(),
        g.clone().into_dispatch(),
        splits,
    );
    let partials = Tensor::<2>::from_dispatch(partials).reshape([splits, r, b]);
    (
        partials.sum_dim(0).reshape([r, b]),
        Tensor::from_dispatch(flag),
    )
}

/// The step flag of a gradient on its device: [1.0] when every element is finite, [0.0]
/// when one is NaN or ±∞. Computed without a read-back.
pub fn step_flag<const D: usize>(grad: &Tensor<D>) -> Tensor<1> {
    grad.clone().is_finite().all().float()
}

/// `new` where the step runs, `old` where `flag` says it is skipped (a select, so NaN in
/// `new` never leaks through).
pub fn keep_on_skip<const D: usize>(new: Tensor<D>, old: Tensor<D>, flag: &Tensor<1>) -> Tensor<D> {
    let skip = flag
        .clone()
        .equal_elem(0.0)
        .reshape([1; D])
        .expand(new.dims());
    new.mask_where(skip, old)
}

/// Host `values` followed by the step flag (1 when `flag` is `None`), as one f32 tensor.
fn with_flag(values: &[f64], flag: Option<&Tensor<1>>, device: &Device) -> Tensor<1> {
    with_flags(values, &[flag], device)
}

/// Host `values` followed by device values (\[1\] each; [1.0] where `None`), as one f32
/// tensor: the parameter buffers of the kernels.
fn with_flags(values: &[f64], flags: &[Option<&Tensor<1>>], device: &Device) -> Tensor<1> {
    let mut host: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    if flags.iter().all(Option::is_none) {
        // Every value is known on the host: one upload, no concatenation.
        host.resize(values.len() + flags.len(), 1.0);
        let n = host.len();
        return Tensor::from_data(TensorData::new(host, [n]), device);
    }
    let n = host.len();
    let mut parts = vec![Tensor::<1>::from_data(TensorData::new(host, [n]), device)];
    parts.extend(
        flags
            .iter()
            .map(|f| f.cloned().unwrap_or_else(|| Tensor::ones([1], device))),
    );
    Tensor::cat(parts, 0)
}

/// Low-rank Adam's result (algorithm.md §2): the new moments and N = M' ⊘ (sqrt(V') + ε),
/// all r×b. Where the step is skipped M and V are unchanged and N is 0.
pub struct LowRankAdam {
    /// M'.
    pub moment_1: Tensor<2>,
    /// V'.
    pub moment_2: Tensor<2>,
    /// N, before the scale s and the bias correction c.
    pub normalized: Tensor<2>,
}

/// The projection-aware rotation of the moments at a basis change (§5).
#[derive(Clone, Copy)]
pub struct Rotation<'a> {
    /// C = S_newᵀ·S_old, r×r.
    pub change_of_basis: &'a Tensor<2>,
    /// The paper's V or the authors' code's (× (1 − β2)); not `Off`.
    pub variant: ProjectionAware,
    /// Device flag: \[1\] where the basis moved, \[0\] where it did not (no rotation then);
    /// `None` means it moved.
    pub moved: Option<&'a Tensor<1>>,
}

/// Low-rank Adam on M, V (r×b) with G̃ (r×b), after the projection-aware rotation (§5)
/// when `rotation` is given. `flag` is the device-side step flag ([`step_flag`]); `None`
/// means the step runs. With `wgsl`, one WGSL kernel on wgpu/WGSL devices for f32 tensors
/// within its size limits; with `cpu` and no flag, the moments and N in one fused pass on
/// `flex` ([`flex::adam`], after the rotation's tensor ops); tensor ops otherwise.
#[allow(clippy::too_many_arguments)]
pub fn adam(
    moment_1: Tensor<2>,
    moment_2: Tensor<2>,
    g_low: &Tensor<2>,
    adam: &AdamParams,
    rotation: Option<Rotation>,
    flag: Option<&Tensor<1>>,
    wgsl: bool,
    cpu: bool,
) -> LowRankAdam {
    let limits = Limits::WEBGPU;
    adam_within(
        moment_1, moment_2, g_low, adam, rotation, flag, wgsl, cpu, limits,
    )
}

/// [`adam`] under `limits`: columns past the workgroup limit take several launches.
#[allow(clippy::too_many_arguments)]
pub fn adam_within(
    moment_1: Tensor<2>,
    moment_2: Tensor<2>,
    g_low: &Tensor<2>,
    adam: &AdamParams,
    rotation: Option<Rotation>,
    flag: Option<&Tensor<1>>,
    wgsl: bool,
    cpu: bool,
    limits: Limits,
) -> LowRankAdam {
    let device = g_low.device();
    let [r, b] = moment_1.dims();
    let runs = wgsl
        && [&moment_1, &moment_2, g_low]
            .into_iter()
            .chain(rotation.map(|rot| rot.change_of_basis))
            .all(|t| t.dtype() == DType::F32)
        && adam::plan(r, b, limits)
        && wgsl_available(&device);
    if runs {
        let v_scale = match rotation.map(|rot| rot.variant) {
            Some(ProjectionAware::Code) => 1.0 - adam.beta_2,
            _ => 1.0,
        };
        let values = [
            adam.beta_1,
            1.0 - adam.beta_1,
            adam.beta_2,
            1.0 - adam.beta_2,
            adam.epsilon,
            v_scale,
        ];
        let moved = rotation.and_then(|rot| rot.moved);
        let params = with_flags(&values, &[moved, flag], &device).into_dispatch();
        let (m, v, g) = (
            moment_1.into_dispatch(),
            moment_2.into_dispatch(),
            g_low.clone().into_dispatch(),
        );
        let Limits {
            max_binding_bytes: bytes,
            max_workgroups: groups,
        } = limits;
        let (m, v, n) = match rotation {
            None => Dispatch::wgsl_adam(m, v, g, params, bytes, groups),
            Some(rot) => {
                let c = rot.change_of_basis.clone().into_dispatch();
                Dispatch::wgsl_adam_rotate(m, v, g, params, c, bytes, groups)
            }
        };
        return LowRankAdam {
            moment_1: Tensor::from_dispatch(m),
            moment_2: Tensor::from_dispatch(v),
            normalized: Tensor::from_dispatch(n),
        };
    }
    if wgsl {
        report_fallback(&device);
    }
    let old = flag.map(|_| (moment_1.clone(), moment_2.clone()));
    let (m, v) = match rotation {
        Some(rot) => {
            let (m0, v0) = (moment_1.clone(), moment_2.clone());
            let c = rot.change_of_basis;
            let (m, v) = rotate_moments(moment_1, moment_2, c, rot.variant, adam.beta_2);
            match rot.moved {
                Some(moved) => (keep_on_skip(m, m0, moved), keep_on_skip(v, v0, moved)),
                None => (m, v),
            }
        }
        None => (moment_1, moment_2),
    };
    if cpu && flag.is_none() && flex::runs(&device, &[&m, &v, g_low]) {
        count_launch("adam: flex", [r, 0, b]);
        let (moment_1, moment_2, normalized) = flex::adam(m, v, g_low, adam);
        return LowRankAdam {
            moment_1,
            moment_2,
            normalized,
        };
    }
    let (m, v) = adam.update_moments(m, v, g_low);
    let n = adam.normalize(&m, &v);
    match (flag, old) {
        (Some(flag), Some((m0, v0))) => LowRankAdam {
            moment_1: keep_on_skip(m, m0, flag),
            moment_2: keep_on_skip(v, v0, flag),
            normalized: keep_on_skip(n.clone(), n.zeros_like(), flag),
        },
        _ => LowRankAdam {
            moment_1: m,
            moment_2: v,
            normalized: n,
        },
    }
}

/// One SubTrack tracking step on the device (algorithm.md §4), with no read-back.
pub struct TrackedStep {
    /// S', a×r, re-orthonormalised where its drift exceeded the tolerance.
    pub basis: Tensor<2>,
    /// C = S'ᵀ·S, r×r (I where the basis did not move).
    pub change_of_basis: Tensor<2>,
    /// \[1\] where the basis moved; \[0\] where σ was at round-off level, zero or not finite.
    pub moved: Tensor<1>,
    /// \[1\] where S' was re-orthonormalised, else \[0\].
    pub reorthonormalized: Tensor<1>,
    /// The top singular value σ of the tangent (\[1\]; 0 where not finite).
    pub sigma: Tensor<1>,
    /// The rotation angle θ = min(η·σ, θ_max) in radians (\[1\]; 0 where the basis stayed).
    pub theta: Tensor<1>,
    /// The step flag of G ([`step_flag`]), found by the first projection.
    pub flag: Tensor<1>,
}

/// Squarings of the normalised ∇Fᵀ∇F before the power iterations of `top_singular.wgsl`:
/// the start vector's error shrinks like (λ2/λ1)^(2^10).
const SQUARINGS: usize = 10;

/// Whether [`track`] runs its kernels for a basis a×r and a gradient a×b on `device`.
pub fn tracking_runs(a: usize, r: usize, b: usize, dtype: DType, device: &Device) -> bool {
    dtype == DType::F32 && tracking::plan(a, r, b, Limits::WEBGPU) && wgsl_available(device)
}

/// The geodesic step of [`crate::geodesic::geodesic_step`] as WGSL kernels, reading nothing
/// back: A = SᵀG, G·Aᵀ and A·Aᵀ, the tangent ∇F = −2·(G·Aᵀ − S·(A·Aᵀ)) (update.wgsl), the
/// top singular triplet of ∇F through the r×r problem (repeated squaring, then power
/// iterations), the geodesic update of S with C = S'ᵀS, and the Cholesky
/// re-orthonormalisation where the drift max |S'ᵀS' − I| exceeds `tolerance`.
///
/// `None` when [`tracking_runs`] is false: the caller takes the host path.
/// The step flag of G comes from the first projection (A = SᵀG); where G holds NaN or ±∞
/// the basis stays, and [`TrackedStep::flag`] carries the flag on to the rest of the step.
pub fn track(
    basis: &Tensor<2>,
    g: &Tensor<2>,
    step_size: f64,
    max_theta: Option<f64>,
    tolerance: f64,
) -> Option<TrackedStep> {
    let ([a, r], b) = (basis.dims(), g.dims()[1]);
    let device = g.device();
    if basis.dtype() != g.dtype() || !tracking_runs(a, r, b, g.dtype(), &device) {
        return None;
    }
    let limits = Limits::WEBGPU;
    let (limit, groups) = (limits.max_binding_bytes, limits.max_workgroups);
    let d = |t: &Tensor<2>| t.clone().into_dispatch();
    let product = |x: &Tensor<2>, y: &Tensor<2>| {
        Tensor::<2>::from_dispatch(Dispatch::wgsl_product(d(x), d(y), limit))
    };
    let gram = |x: &Tensor<2>| {
        Tensor::<2>::from_dispatch(Dispatch::wgsl_project(d(x), d(x), limit, groups).0)
    };
    let unit = |x: Tensor<2>| {
        let norm = x.clone().square().sum().sqrt().reshape([1, 1]);
        x / norm
    };

    let (coefficients, flag) = Dispatch::wgsl_project(d(basis), d(g), limit, groups);
    let (coefficients, flag) = (
        Tensor::<2>::from_dispatch(coefficients),
        Tensor::<1>::from_dispatch(flag),
    );
    let g_at = product(g, &coefficients);
    let a_at = product(&coefficients, &coefficients);
    // ∇F = −2·(G·Aᵀ − S·(A·Aᵀ)): the update kernel's d·(W − α·S·(s·N)) with W = G·Aᵀ,
    // N = A·Aᵀ, α = s = 1 and d = −2.
    let scalars = with_flag(&[1.0, -2.0, 1.0, 0.0], None, &device);
    let tangent = Tensor::<2>::from_dispatch(Dispatch::wgsl_update(
        d(basis),
        d(&a_at),
        g_at.into_dispatch(),
        scalars.into_dispatch(),
        false,
        limit,
        groups,
    ));
    let normal = gram(&tangent);
    let mut powered = unit(normal.clone());
    for _ in 0..SQUARINGS {
        powered = unit(gram(&powered));
    }
    let g_norm2 = g.clone().square().sum();
    let values = [
        step_size,
        max_theta.unwrap_or(-1.0),
        crate::geodesic::SIGMA_FLOOR,
    ];
    let params = with_flags(&values, &[Some(&g_norm2), Some(&flag)], &device);
    let triplet = Tensor::<1>::from_dispatch(Dispatch::wgsl_top_singular(
        d(&normal),
        d(&powered),
        params.into_dispatch(),
    ));
    let (moved_basis, change) =
        Dispatch::wgsl_geodesic_step(d(basis), d(&tangent), triplet.clone().into_dispatch());
    let (moved_basis, change) = (
        Tensor::<2>::from_dispatch(moved_basis),
        Tensor::<2>::from_dispatch(change),
    );
    let tol = with_flags(&[tolerance], &[], &device);
    let (factor, status) =
        Dispatch::wgsl_reorthonormalize(gram(&moved_basis).into_dispatch(), tol.into_dispatch());
    let factor = Tensor::<2>::from_dispatch(factor);
    Some(TrackedStep {
        // S'·Fᵀ and F·C (C is symmetric): exact copies where F = I.
        basis: product(&moved_basis, &factor),
        change_of_basis: product(&factor, &change),
        moved: triplet.clone().narrow(0, r + 4, 1),
        reorthonormalized: Tensor::from_dispatch(status),
        sigma: triplet.clone().narrow(0, r, 1),
        theta: triplet.narrow(0, r + 1, 1),
        flag,
    })
}

/// Recovery scales and the limiter (§7) from G (a×b; with `transposed`, the transposed view
/// of the parameter's gradient), G̃ and N (r×b): see [`recovery_scales`]. `g_sq`: G's
/// column sums of squares ([`column_sq`]) where the caller has them; the portable path then
/// skips its pass over G (the kernels form their own). `flag` as in
/// [`adam`]: where the step is skipped the returned norm is `previous` (when there is one).
/// With `wgsl`, two WGSL kernels (column norms, then limiter) on wgpu/WGSL devices for f32
/// tensors within their size limits; tensor ops otherwise, where `cpu` makes G's column
/// sums one fused pass on `flex` ([`column_sq_fused`]).
#[allow(clippy::too_many_arguments)]
pub fn recovery(
    g: &Tensor<2>,
    transposed: bool,
    g_sq: Option<Tensor<2>>,
    g_low: &Tensor<2>,
    normalized: &Tensor<2>,
    variant: RecoveryScaling,
    scale: f64,
    growth_limit: f64,
    previous: Option<&Tensor<1>>,
    flag: Option<&Tensor<1>>,
    wgsl: bool,
    cpu: bool,
) -> RecoveryScales {
    let limits = Limits::WEBGPU;
    recovery_within(
        g,
        transposed,
        g_sq,
        g_low,
        normalized,
        variant,
        scale,
        growth_limit,
        previous,
        flag,
        wgsl,
        cpu,
        limits,
    )
}

/// [`recovery`] under `limits`: G over the binding limit is read in row chunks.
#[allow(clippy::too_many_arguments)]
pub fn recovery_within(
    g: &Tensor<2>,
    transposed: bool,
    g_sq: Option<Tensor<2>>,
    g_low: &Tensor<2>,
    normalized: &Tensor<2>,
    variant: RecoveryScaling,
    scale: f64,
    growth_limit: f64,
    previous: Option<&Tensor<1>>,
    flag: Option<&Tensor<1>>,
    wgsl: bool,
    cpu: bool,
    limits: Limits,
) -> RecoveryScales {
    let max_binding_bytes = limits.max_binding_bytes;
    let device = g.device();
    let ([a, b], r) = (g.dims(), g_low.dims()[0]);
    let k = kept_weight(variant, scale);
    let runs = wgsl
        && [g, g_low, normalized]
            .into_iter()
            .map(|t| t.dtype())
            .chain(previous.map(|p| p.dtype()))
            .all(|d| d == DType::F32)
        && recovery::plan(a, r, b, limits).is_some()
        && wgsl_available(&device);
    if runs {
        let params = with_flag(&[2.0 * k - k * k, growth_limit], flag, &device).into_dispatch();
        let (gd, ld, nd) = (
            g.clone().into_dispatch(),
            g_low.clone().into_dispatch(),
            normalized.clone().into_dispatch(),
        );
        let tiled = TILED_RECOVERY_NORMS.with(Cell::get);
        let (psi, norm) = match previous {
            None => Dispatch::wgsl_recovery(gd, ld, nd, params, max_binding_bytes, tiled),
            Some(p) => Dispatch::wgsl_recovery_limited(
                gd,
                ld,
                nd,
                params,
                p.clone().into_dispatch(),
                max_binding_bytes,
                tiled,
            ),
        };
        return RecoveryScales {
            scaled_phi: Tensor::from_dispatch(psi),
            kept_weight: k,
            norm: Tensor::from_dispatch(norm),
        };
    }
    if wgsl {
        report_fallback(&device);
    }
    let scales = recovery_scales(
        g_sq.unwrap_or_else(|| column_sq_fused(g, transposed, cpu)),
        column_sq_fused(g_low, false, cpu),
        column_sq_fused(normalized, false, cpu),
        variant,
        scale,
        growth_limit,
        previous,
    );
    match (flag, previous) {
        (Some(flag), Some(previous)) => RecoveryScales {
            norm: keep_on_skip(scales.norm, previous.clone(), flag),
            ..scales
        },
        _ => scales,
    }
}

/// G's column sums of squares, [1, b], as [`column_sq`] computes them: with `cpu`, in one
/// fused pass on `flex` (G (a×b), or with `transposed` the transposed view of a b×a tensor,
/// whose rows then hold G's columns).
pub fn column_sq_fused(g: &Tensor<2>, transposed: bool, cpu: bool) -> Tensor<2> {
    if cpu && flex::runs(&g.device(), &[g]) {
        let [a, b] = g.dims();
        count_launch("column_sq: flex", [a, 0, b]);
        let stored = if transposed {
            g.clone().transpose()
        } else {
            g.clone()
        };
        return flex::column_sq(stored, transposed);
    }
    column_sq(g, transposed)
}

/// The recovery inputs of the weight update: G (a×b), ψ (1×b), G̃ (r×b) and the residual's
/// weight k on S·G̃ (see [`RecoveryScales`]).
pub struct RecoveryTerm {
    /// G, a×b in the canonical layout.
    pub grad: Tensor<2>,
    /// ψ = f·φ, 1×b.
    pub psi: Tensor<2>,
    /// G̃, r×b.
    pub g_low: Tensor<2>,
    /// k: 1 (paper) or s (the authors' code).
    pub kept_weight: f64,
}

/// The coefficients of the weight update W' = d·(W − α·(S·L + G⊙ψ)), L = s·N − k·G̃⊙ψ.
#[derive(Clone, Copy, Debug)]
pub struct UpdateCoefficients {
    /// α = lr·c (learning rate times bias correction).
    pub alpha: f64,
    /// d = 1 − lr·wd (decoupled weight decay).
    pub decay: f64,
    /// s, the scale of the projected update.
    pub scale: f64,
}

/// The weight update of a projected matrix (algorithm.md §2, with §7 folded in):
/// W' = d·(W − α·(S·L + G⊙ψ)) with L = s·N − k·G̃⊙ψ, or W' = d·(W − α·s·S·N) without
/// recovery.
///
/// `basis` S a×r and `normalized` N r×b in the canonical layout; `weight` W a×b, or b×a when
/// `transposed` (the right case of §1). `flag` as in [`adam`]: where the step is skipped W
/// is returned unchanged. With `wgsl`, one fused WGSL kernel on wgpu/WGSL devices for f32
/// tensors within its size limits (S·L is never stored); tensor ops otherwise, where `cpu`
/// makes the a×b part W's own buffer on `flex`: one pass over W and G, then one gemm into W
/// (S·L is never stored; not with a `flag`).
#[allow(clippy::too_many_arguments)]
pub fn update(
    basis: &Tensor<2>,
    normalized: Tensor<2>,
    weight: Tensor<2>,
    recovery: Option<RecoveryTerm>,
    coefficients: UpdateCoefficients,
    transposed: bool,
    flag: Option<&Tensor<1>>,
    wgsl: bool,
    cpu: bool,
) -> Tensor<2> {
    let limits = Limits::WEBGPU;
    update_within(
        basis,
        normalized,
        weight,
        recovery,
        coefficients,
        transposed,
        flag,
        wgsl,
        cpu,
        limits,
    )
}

/// [`update`] under `limits`: S, W and G over the binding limit are updated in row chunks
/// (the left layout only; a transposed W over the limit takes the tensor-op path), columns
/// past the workgroup limit in several launches.
#[allow(clippy::too_many_arguments)]
pub fn update_within(
    basis: &Tensor<2>,
    normalized: Tensor<2>,
    weight: Tensor<2>,
    recovery: Option<RecoveryTerm>,
    coefficients: UpdateCoefficients,
    transposed: bool,
    flag: Option<&Tensor<1>>,
    wgsl: bool,
    cpu: bool,
    limits: Limits,
) -> Tensor<2> {
    let device = weight.device();
    let ([a, r], b) = (basis.dims(), normalized.dims()[1]);
    let UpdateCoefficients {
        alpha,
        decay,
        scale,
    } = coefficients;
    let runs = wgsl
        && [basis, &normalized, &weight]
            .into_iter()
            .chain(recovery.iter().flat_map(|t| [&t.grad, &t.psi, &t.g_low]))
            .all(|t| t.dtype() == DType::F32)
        && update::plan(a, r, b, transposed, limits).is_some()
        && wgsl_available(&device);
    if runs {
        let kept = recovery.as_ref().map_or(0.0, |t| t.kept_weight);
        let scalars = with_flag(&[alpha, decay, scale, kept], flag, &device).into_dispatch();
        let (basis, normalized, weight) = (
            basis.clone().into_dispatch(),
            normalized.into_dispatch(),
            weight.into_dispatch(),
        );
        let (limit, groups) = (limits.max_binding_bytes, limits.max_workgroups);
        return Tensor::from_dispatch(match recovery {
            None => Dispatch::wgsl_update(
                basis, normalized, weight, scalars, transposed, limit, groups,
            ),
            Some(t) => Dispatch::wgsl_update_recovery(
                basis,
                normalized,
                weight,
                scalars,
                t.grad.into_dispatch(),
                t.psi.into_dispatch(),
                t.g_low.into_dispatch(),
                transposed,
                limit,
                groups,
            ),
        });
    }
    if wgsl {
        report_fallback(&device);
    }
    // α is folded into the r×b and 1×b factors, so that no a×b pass scales by it:
    // α·(S·L + G⊙ψ) = S·(α·L) + G⊙(α·ψ); α·k scales ψ (1×b) rather than G̃⊙ψ (r×b).
    // The fused CPU loops (not with a device-side flag, which only the WGSL route makes).
    let fused = cpu && flag.is_none() && {
        let terms = recovery.iter().flat_map(|t| [&t.grad, &t.psi, &t.g_low]);
        let all: Vec<_> = [basis, &normalized, &weight]
            .into_iter()
            .chain(terms)
            .collect();
        flex::runs(&device, &all)
    };
    let low = match &recovery {
        Some(t) if fused => flex::low(
            normalized,
            t.g_low.clone(),
            t.psi.clone(),
            alpha * scale,
            alpha * t.kept_weight,
        ),
        Some(t) => {
            normalized.mul_scalar(alpha * scale)
                - t.g_low.clone() * t.psi.clone().mul_scalar(alpha * t.kept_weight)
        }
        None => normalized.mul_scalar(alpha * scale),
    };
    // The a×b terms are formed in W's own layout: in the right case (S·L)ᵀ = Lᵀ·Sᵀ and
    // (G⊙ψ)ᵀ = Gᵀ⊙ψᵀ, so no element-wise pass runs over a transposed view (on `flex` such a
    // pass costs about 10× a contiguous one).
    let own_layout = |x: Tensor<2>| if transposed { x.transpose() } else { x };
    if fused {
        // W's own buffer takes the result: one pass over W and G for the recovery term,
        // then one gemm into W; S·L is never stored.
        count_launch("update: flex", [a, r, b]);
        let recovery = recovery.map(|t| (own_layout(t.grad), t.psi, alpha));
        return flex::step(weight, basis, low, recovery, decay, transposed);
    }
    let mut u = if transposed {
        crate::basis::project_back_transposed(basis, low)
    } else {
        crate::basis::project_back(basis, low)
    };
    if let Some(t) = recovery {
        u = u + own_layout(t.grad) * own_layout(t.psi.mul_scalar(alpha));
    }
    let old = flag.map(|_| weight.clone());
    let stepped = weight - u;
    let stepped = if decay == 1.0 {
        stepped
    } else {
        stepped.mul_scalar(decay)
    };
    match (flag, old) {
        (Some(flag), Some(old)) => keep_on_skip(stepped, old, flag),
        _ => stepped,
    }
}
