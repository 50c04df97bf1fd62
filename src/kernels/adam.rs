//! Launch of `shaders/adam.wgsl`: low-rank Adam with the optional moment rotation.

use burn::backend::wgpu::{CubeTensor, into_contiguous};
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::Shape;

use super::fit::fits;
use super::launch::{self, BLOCK, Limits, Templated, assert_f32_on_wgsl, column_groups, empty_f32};

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
/// v_scale, moved, flag; `params.rs`) and, when rotating, C (r×r). The caller ([`crate::route::adam`]) has checked the runtime, the dtypes
/// and [`plan`].
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
