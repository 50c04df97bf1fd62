//! Launch of `shaders/project.wgsl`: G̃ = SᵀG.

use burn::backend::wgpu::{
    CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::KernelArguments;
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::{DType, Shape};

/// The shader text, templated by [`Project::source`].
const SHADER: &str = include_str!("../../shaders/project.wgsl");

use super::{BLOCK, Limits, WGSL, chunk_rows, column_groups, row_chunk};

#[derive(Debug)]
struct Project {
    a: usize,
    r: usize,
    b: usize,
    accumulate: bool,
    j_block: usize,
}

impl KernelSource for Project {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(SHADER)
            .register("a", self.a.to_string())
            .register("r", self.r.to_string())
            .register("b", self.b.to_string())
            .register("accumulate", self.accumulate.to_string())
            .register("j_block", self.j_block.to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.a, self.r, self.b, self.accumulate, self.j_block))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Output shape of the projection: basis [a, r], g [a, b] → [r, b].
pub fn projected_shape(basis: &Shape, g: &Shape) -> Shape {
    Shape::from([basis[1], g[1]])
}

/// Rows per launch for G̃ = SᵀG with S a×r and G a×b under `limits`, or `None` when the
/// kernel cannot run these sizes (G̃ itself over the binding limit, fewer than 64 rows
/// fitting, or more than the workgroup limit of 64-row blocks of G̃). Columns past the
/// workgroup limit are split over several launches.
pub fn plan(a: usize, r: usize, b: usize, limits: Limits) -> Option<usize> {
    let fits = r * b * 4 <= limits.max_binding_bytes && r.div_ceil(BLOCK) <= limits.max_workgroups;
    chunk_rows(a, r.max(b), limits.max_binding_bytes).filter(|_| fits)
}

/// G̃ = SᵀG on the device, each storage binding at most `limit` bytes: S and G over the
/// limit are split into row chunks whose partial products the kernel accumulates. The
/// caller ([`super::project_within`]) has checked the runtime, the dtype and [`plan`].
/// Returns (G̃, flag): flag [1] is 0 where G holds NaN or ±∞, else 1.
pub fn launch(basis: CubeTensor, g: CubeTensor, limits: Limits) -> (CubeTensor, CubeTensor) {
    let (a, r) = (basis.meta.shape()[0], basis.meta.shape()[1]);
    let b = g.meta.shape()[1];
    assert_eq!(
        g.meta.shape()[0],
        a,
        "project: basis is {a}×{r}, gradient has {} rows",
        g.meta.shape()[0]
    );
    let rows = plan(a, r, b, limits).expect("project: sizes the kernel cannot run");
    assert!(basis.dtype == DType::F32 && g.dtype == DType::F32 && basis.client.name() == WGSL);
    let basis = into_contiguous(basis);
    let g = into_contiguous(g);
    let client = g.client.clone();
    let handle = client.empty(r * b * 4);
    let output = CubeTensor::new_contiguous(
        client.clone(),
        g.device.clone(),
        Shape::from([r, b]),
        handle,
        DType::F32,
    );
    let flag = CubeTensor::new_contiguous(
        client.clone(),
        g.device.clone(),
        Shape::from([1]),
        client.create_from_slice(bytemuck::cast_slice(&[1f32])),
        DType::F32,
    );
    let cube_dim = CubeDim::new_2d(16, 16);
    for (chunk, k0) in (0..a).step_by(rows).enumerate() {
        let k1 = (k0 + rows).min(a);
        for (j_block, blocks) in column_groups(b, limits) {
            let kernel = Project {
                a: k1 - k0,
                r,
                b,
                accumulate: chunk > 0,
                j_block,
            };
            super::count_launch("project", [a, r, b]);
            client.launch(
                Box::new(SourceKernel::new(kernel, cube_dim)),
                CubeCount::Static(blocks as u32, r.div_ceil(BLOCK) as u32, 1),
                KernelArguments::new().with_buffers(vec![
                    row_chunk(&basis, k0..k1, a, r),
                    row_chunk(&g, k0..k1, a, b),
                    output.handle.clone().binding(),
                    flag.handle.clone().binding(),
                ]),
            );
        }
    }
    (output, flag)
}
