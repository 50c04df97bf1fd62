//! Launch of `shaders/adam.wgsl`: low-rank Adam with the optional moment rotation.

use burn::backend::wgpu::{
    CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::KernelArguments;
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::{DType, Shape};

use super::{BLOCK, MAX_WORKGROUPS, WGSL};

/// The shader text, templated by [`Adam::source`].
const SHADER: &str = include_str!("../../shaders/adam.wgsl");

#[derive(Debug)]
struct Adam {
    r: usize,
    b: usize,
    rotate: bool,
}

impl KernelSource for Adam {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(SHADER)
            .register("r", self.r.to_string())
            .register("b", self.b.to_string())
            .register("rotate", self.rotate.to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.r, self.b, self.rotate))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Whether the kernel runs moments of r×b under a `limit`-byte binding: each moment fits
/// one binding and the launch fits the workgroup limits.
pub fn plan(r: usize, b: usize, limit: usize) -> bool {
    r * b * 4 <= limit && b.div_ceil(BLOCK) <= MAX_WORKGROUPS && r.div_ceil(BLOCK) <= MAX_WORKGROUPS
}

/// (M', V', N) from M, V, G̃ (r×b), `params` [β1, 1−β1, β2, 1−β2, ε, v_scale, flag] and,
/// when rotating, C (r×r). The caller ([`super::adam`]) has checked the runtime, the dtypes
/// and [`plan`].
pub fn launch(
    moment_1: CubeTensor,
    moment_2: CubeTensor,
    g_low: CubeTensor,
    params: CubeTensor,
    change: Option<CubeTensor>,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let (r, b) = (moment_1.meta.shape()[0], moment_1.meta.shape()[1]);
    let inputs = [&moment_1, &moment_2, &g_low, &params];
    assert!(
        inputs
            .into_iter()
            .chain(change.as_ref())
            .all(|t| t.dtype == DType::F32)
            && moment_1.client.name() == WGSL
    );
    let [moment_1, moment_2, g_low, params] =
        [moment_1, moment_2, g_low, params].map(into_contiguous);
    let client = moment_1.client.clone();
    let output = || {
        CubeTensor::new_contiguous(
            client.clone(),
            moment_1.device.clone(),
            Shape::from([r, b]),
            client.empty(r * b * 4),
            DType::F32,
        )
    };
    let (out_m, out_v, out_n) = (output(), output(), output());
    let rotate = change.is_some();
    let change = match change {
        Some(c) => into_contiguous(c).handle.binding(),
        None => client
            .create_from_slice(bytemuck::cast_slice(&[0f32]))
            .binding(),
    };
    super::count_launch("adam", [r, r, b]);
    client.launch(
        Box::new(SourceKernel::new(
            Adam { r, b, rotate },
            CubeDim::new_2d(16, 16),
        )),
        CubeCount::Static(b.div_ceil(BLOCK) as u32, r.div_ceil(BLOCK) as u32, 1),
        KernelArguments::new().with_buffers(vec![
            moment_1.handle.clone().binding(),
            moment_2.handle.clone().binding(),
            g_low.handle.clone().binding(),
            out_m.handle.clone().binding(),
            out_v.handle.clone().binding(),
            out_n.handle.clone().binding(),
            params.handle.clone().binding(),
            change,
        ]),
    );
    (out_m, out_v, out_n)
}
