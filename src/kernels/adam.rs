//! Launch of `shaders/adam.wgsl`: low-rank Adam with the optional moment rotation.

use burn::backend::wgpu::{CubeTensor, into_contiguous};
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::Shape;

use super::fit::fits;
use super::launch::{
    self, BLOCK, Limits, Templated, assert_f32_on_wgsl, column_groups, empty_f32, stored_gradient,
};

const SHADER: &str = include_str!("../../shaders/adam.wgsl");

/// The binding of C where the kernel rotates; without a rotation C is not bound at all.
const CHANGE_BINDING: &str =
    "@group(0) @binding(7) var<storage, read_write> change_of_basis: array<f32>;";
/// The stand-in for C without a rotation: never read, and no binding.
const NO_CHANGE: &str = "var<private> change_of_basis: array<f32, 1>;";

/// `adam.wgsl` for r×b moments, rotating where `rotate`, from 64-column block `j_block` on.
pub(super) fn kernel(r: usize, b: usize, rotate: bool, j_block: usize) -> Templated {
    Templated::new("adam", SHADER)
        .with("r", r)
        .with("b", b)
        .with("rotate", rotate)
        .with("j_block", j_block)
        .with("change", if rotate { CHANGE_BINDING } else { NO_CHANGE })
}

/// Whether the kernel runs moments of r×b under `limits`, rotating them where `rotate`:
/// each moment fits one binding, its 64-row blocks fit the workgroup limit (columns past it
/// take several launches), and the shader fits the adapter (it binds 7 storage buffers, 8
/// with the rotation).
pub fn plan(r: usize, b: usize, rotate: bool, limits: Limits) -> bool {
    r * b * 4 <= limits.max_binding_bytes
        && r.div_ceil(BLOCK) <= limits.max_workgroups
        && fits(&kernel(r, b, rotate, 0), limits)
}

/// (M', V', N) from M, V, G̃ (r×b), the parameter buffer `params` (β1, 1−β1, β2, 1−β2, ε,
/// v_scale, moved, flag; `step_buffer.rs`) and, when rotating, C (r×r). The caller (the WGSL
/// route's `Ops::adam`, `route/wgsl/mod.rs`) has checked the runtime, the dtypes and
/// [`plan`].
pub fn launch(
    moment_1: CubeTensor,
    moment_2: CubeTensor,
    g_low: CubeTensor,
    params: CubeTensor,
    change: Option<CubeTensor>,
    limits: Limits,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let (r, b) = (moment_1.meta.shape()[0], moment_1.meta.shape()[1]);
    let inputs: Vec<&CubeTensor> = [&moment_1, &moment_2, &g_low, &params]
        .into_iter()
        .chain(change.as_ref())
        .collect();
    assert_f32_on_wgsl("adam", &inputs);
    let [moment_1, moment_2, g_low, params] =
        [moment_1, moment_2, g_low, params].map(into_contiguous);
    let client = moment_1.client.clone();
    let output = || empty_f32(&moment_1, Shape::from([r, b]));
    let (out_m, out_v, out_n) = (output(), output(), output());
    let rotate = change.is_some();
    let mut buffers = vec![
        moment_1.handle.clone().binding(),
        moment_2.handle.clone().binding(),
        g_low.handle.clone().binding(),
        out_m.handle.clone().binding(),
        out_v.handle.clone().binding(),
        out_n.handle.clone().binding(),
        params.handle.clone().binding(),
    ];
    buffers.extend(change.map(|c| into_contiguous(c).handle.binding()));
    for (j_block, blocks) in column_groups(b, limits) {
        crate::launches::count_launch("adam", [r, r, b]);
        launch::launch(
            &client,
            kernel(r, b, rotate, j_block),
            CubeDim::new_2d(16, 16),
            CubeCount::Static(blocks as u32, r.div_ceil(BLOCK) as u32, 1),
            buffers.clone(),
            limits,
        );
    }
    (out_m, out_v, out_n)
}

const FUSED: &str = include_str!("../../shaders/adam_recovery.wgsl");

/// φ's first slot in the fused kernel's scratch buffer (the slots before it are unused).
pub const PHI_AT: usize = 64;
/// Columns per workgroup of the fused kernel (one invocation each).
const COLUMNS: usize = 256;

/// `adam_recovery.wgsl` for G a×b (read in place as its stored transpose where
/// `g_transposed`) and r×b moments.
pub(super) fn recovery_kernel(a: usize, r: usize, b: usize, g_transposed: bool) -> Templated {
    Templated::new("adam_recovery", FUSED)
        .with("a", a)
        .with("r", r)
        .with("b", b)
        .with("g_transposed", g_transposed)
        .with("phi_at", PHI_AT)
}

/// Workgroups of the fused kernel for b columns: each writes one partial sum.
pub fn recovery_partials(b: usize) -> usize {
    b.div_ceil(COLUMNS)
}

/// Whether the fused kernel runs G a×b and r×b moments under `limits`: G and the moments
/// each in one binding, its column groups within the workgroup limit, and its nine
/// bindings within the adapter's.
pub fn recovery_plan(a: usize, r: usize, b: usize, limits: Limits) -> bool {
    let limit = limits.max_binding_bytes;
    a * b * 4 <= limit
        && r * b * 4 <= limit
        && recovery_partials(b) <= limits.max_workgroups
        && fits(&recovery_kernel(a, r, b, false), limits)
}

/// (M', V', N, scratch) of low-rank Adam fused with recovery scaling's norms and scales
/// (`adam_recovery.wgsl`): scratch holds φ (b values from [`PHI_AT`]) and the
/// [`recovery_partials`] workgroup sums of ‖Λ[:, j]‖² after them, for the limited update.
/// `params` is the step's parameter buffer (Adam's values, 2k − k², the flag). The caller
/// has checked the runtime, the dtypes and [`recovery_plan`].
pub fn launch_recovery(
    grad: CubeTensor,
    moment_1: CubeTensor,
    moment_2: CubeTensor,
    g_low: CubeTensor,
    params: CubeTensor,
    limits: Limits,
) -> (CubeTensor, CubeTensor, CubeTensor, CubeTensor) {
    let (r, b) = (moment_1.meta.shape()[0], moment_1.meta.shape()[1]);
    let a = grad.meta.shape()[0];
    assert_f32_on_wgsl(
        "adam_recovery",
        &[&grad, &moment_1, &moment_2, &g_low, &params],
    );
    let [moment_1, moment_2, g_low, params] =
        [moment_1, moment_2, g_low, params].map(into_contiguous);
    // The right case's G = ∇Wᵀ is read in place (one launch takes all its rows).
    let (grad, g_transposed) = stored_gradient(grad, a);
    let output = || empty_f32(&moment_1, Shape::from([r, b]));
    let (out_m, out_v, out_n) = (output(), output(), output());
    let partials = recovery_partials(b);
    let scratch = empty_f32(&moment_1, Shape::from([PHI_AT + b + partials]));
    crate::launches::count_launch("adam_recovery", [a, r, b]);
    launch::launch(
        &moment_1.client,
        recovery_kernel(a, r, b, g_transposed),
        CubeDim::new_1d(COLUMNS as u32),
        CubeCount::Static(partials as u32, 1, 1),
        vec![
            grad.handle.clone().binding(),
            moment_1.handle.clone().binding(),
            moment_2.handle.clone().binding(),
            g_low.handle.clone().binding(),
            out_m.handle.clone().binding(),
            out_v.handle.clone().binding(),
            out_n.handle.clone().binding(),
            params.handle.clone().binding(),
            scratch.handle.clone().binding(),
        ],
        limits,
    );
    (out_m, out_v, out_n, scratch)
}
