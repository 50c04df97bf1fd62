//! Launch of `shaders/project.wgsl`: G̃ = SᵀG.

use burn::backend::ops::FloatTensorOps;
use burn::backend::wgpu::{
    CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::KernelArguments;
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::{DType, Shape};

/// The shader text, templated by [`Project::source`].
const SHADER: &str = include_str!("../../shaders/project.wgsl");

use super::{BLOCK, MAX_BINDING_BYTES, MAX_WORKGROUPS, WGSL};

#[derive(Debug)]
struct Project {
    a: usize,
    r: usize,
    b: usize,
}

impl KernelSource for Project {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(SHADER)
            .register("a", self.a.to_string())
            .register("r", self.r.to_string())
            .register("b", self.b.to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.a, self.r, self.b))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Output shape of the projection: basis [a, r], g [a, b] → [r, b].
pub fn projected_shape(basis: &Shape, g: &Shape) -> Shape {
    Shape::from([basis[1], g[1]])
}

/// G̃ = SᵀG on the device. Falls back to Burn's own ops where the kernel cannot run: not
/// f32, not a WGSL runtime, a binding over 128 MiB, or too many workgroups.
pub fn launch(basis: CubeTensor, g: CubeTensor) -> CubeTensor {
    let (a, r) = (basis.meta.shape()[0], basis.meta.shape()[1]);
    let b = g.meta.shape()[1];
    assert_eq!(
        g.meta.shape()[0],
        a,
        "project: basis is {a}×{r}, gradient has {} rows",
        g.meta.shape()[0]
    );
    let fits = [a * r, a * b, r * b]
        .iter()
        .all(|n| n * 4 <= MAX_BINDING_BYTES)
        && b.div_ceil(BLOCK) <= MAX_WORKGROUPS
        && r.div_ceil(BLOCK) <= MAX_WORKGROUPS;
    let runs = basis.dtype == DType::F32 && g.dtype == DType::F32 && basis.client.name() == WGSL;
    if !(fits && runs) {
        return CubeBackend::float_matmul(CubeBackend::float_transpose(basis), g);
    }
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
    super::count_launch("project", [a, r, b]);
    let cube_dim = CubeDim::new_2d(16, 16);
    let count = CubeCount::Static(b.div_ceil(BLOCK) as u32, r.div_ceil(BLOCK) as u32, 1);
    client.launch(
        Box::new(SourceKernel::new(Project { a, r, b }, cube_dim)),
        count,
        KernelArguments::new().with_buffers(vec![
            basis.handle.binding(),
            g.handle.binding(),
            output.handle.clone().binding(),
        ]),
    );
    output
}
