//! Launch of `shaders/adam.wgsl`: low-rank Adam with the optional moment rotation.

use burn::backend::wgpu::{CubeTensor, SourceKernel, into_contiguous};
use burn::cubecl::server::KernelArguments;
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::Shape;

use super::launch::{BLOCK, Limits, Templated, assert_f32_on_wgsl, column_groups, empty_f32};

const SHADER: &str = include_str!("../../shaders/adam.wgsl");

/// Whether the kernel runs moments of r×b under `limits`: each moment fits one binding and
/// its 64-row blocks fit the workgroup limit (columns past it take several launches).
pub fn plan(r: usize, b: usize, limits: Limits) -> bool {
    r * b * 4 <= limits.max_binding_bytes && r.div_ceil(BLOCK) <= limits.max_workgroups
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
    // Without a rotation the kernel never reads binding 7: the parameter buffer stands in,
    // so that no dummy is uploaded.
    let change = match change {
        Some(c) => into_contiguous(c).handle.binding(),
        None => params.handle.clone().binding(),
    };
    let buffers = vec![
        moment_1.handle.clone().binding(),
        moment_2.handle.clone().binding(),
        g_low.handle.clone().binding(),
        out_m.handle.clone().binding(),
        out_v.handle.clone().binding(),
        out_n.handle.clone().binding(),
        params.handle.clone().binding(),
        change,
    ];
    for (j_block, blocks) in column_groups(b, limits) {
        let kernel = Templated::new("adam", SHADER)
            .with("r", r)
            .with("b", b)
            .with("rotate", rotate)
            .with("j_block", j_block);
        crate::launches::count_launch("adam", [r, r, b]);
        client.launch(
            Box::new(SourceKernel::new(kernel, CubeDim::new_2d(16, 16))),
            CubeCount::Static(blocks as u32, r.div_ceil(BLOCK) as u32, 1),
            KernelArguments::new().with_buffers(buffers.clone()),
        );
    }
    (out_m, out_v, out_n)
}
