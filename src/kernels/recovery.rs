//! Launches of `shaders/recovery_norms.wgsl` (column sums) and `shaders/recovery_limit.wgsl`
//! (scales and limiter).

use burn::backend::wgpu::{
    CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::KernelArguments;
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::{DType, Shape};

use super::{Limits, WGSL, chunk_rows, row_chunk};

const NORMS: &str = include_str!("../../shaders/recovery_norms.wgsl");
const LIMIT: &str = include_str!("../../shaders/recovery_limit.wgsl");

/// Invocations per workgroup of both kernels.
const GROUP: usize = 256;

#[derive(Debug)]
struct Norms {
    rows: usize,
    r: usize,
    b: usize,
    first: bool,
}

impl KernelSource for Norms {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(NORMS)
            .register("rows", self.rows.to_string())
            .register("r", self.r.to_string())
            .register("b", self.b.to_string())
            .register("first", self.first.to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.rows, self.r, self.b, self.first))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

#[derive(Debug)]
struct Limit {
    b: usize,
    has_previous: bool,
}

impl KernelSource for Limit {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(LIMIT)
            .register("b", self.b.to_string())
            .register("has_previous", self.has_previous.to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.b, self.has_previous))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Rows of G per launch of the column-norm kernel for G a×b, G̃ and N r×b under `limits`,
/// or `None` when the kernels cannot run these sizes (with WebGPU's limits the column sums
/// fit one binding only up to b ≈ 11 M, well inside the workgroup limit).
pub fn plan(a: usize, r: usize, b: usize, limits: Limits) -> Option<usize> {
    let limit = limits.max_binding_bytes;
    let fits =
        3 * b * 4 <= limit && r * b * 4 <= limit && b.div_ceil(GROUP) <= limits.max_workgroups;
    chunk_rows(a, b, limit).filter(|_| fits)
}

/// (ψ 1×b, Λ_prev' [1]) from G (a×b), G̃ and N (r×b), `params` [2k − k², ζ, flag] and the
/// previous limiter norm. The caller ([`super::recovery`]) has checked the runtime, the
/// dtypes and [`plan`].
pub fn launch(
    grad: CubeTensor,
    g_low: CubeTensor,
    normalized: CubeTensor,
    params: CubeTensor,
    previous: Option<CubeTensor>,
    limit: usize,
) -> (CubeTensor, CubeTensor) {
    let (a, b) = (grad.meta.shape()[0], grad.meta.shape()[1]);
    let r = g_low.meta.shape()[0];
    let limits = super::Limits {
        max_binding_bytes: limit,
        ..Limits::WEBGPU
    };
    let rows = plan(a, r, b, limits).expect("recovery: sizes the kernels cannot run");
    assert!(
        [&grad, &g_low, &normalized, &params]
            .into_iter()
            .chain(previous.as_ref())
            .all(|t| t.dtype == DType::F32)
            && grad.client.name() == WGSL
    );
    let [grad, g_low, normalized, params] = [grad, g_low, normalized, params].map(into_contiguous);
    let client = grad.client.clone();
    let sums = client.empty(3 * b * 4);
    for (chunk, k0) in (0..a).step_by(rows).enumerate() {
        let k1 = (k0 + rows).min(a);
        let kernel = Norms {
            rows: k1 - k0,
            r,
            b,
            first: chunk == 0,
        };
        super::count_launch("recovery", [a, r, b]);
        client.launch(
            Box::new(SourceKernel::new(kernel, CubeDim::new_1d(GROUP as u32))),
            CubeCount::Static(b.div_ceil(GROUP) as u32, 1, 1),
            KernelArguments::new().with_buffers(vec![
                row_chunk(&grad, k0..k1, a, b),
                g_low.handle.clone().binding(),
                normalized.handle.clone().binding(),
                sums.clone().binding(),
            ]),
        );
    }
    let tensor = |shape: Shape, n: usize| {
        CubeTensor::new_contiguous(
            client.clone(),
            grad.device.clone(),
            shape,
            client.empty(n * 4),
            DType::F32,
        )
    };
    let (psi, norm) = (tensor(Shape::from([1, b]), b), tensor(Shape::from([1]), 1));
    let has_previous = previous.is_some();
    let previous = match previous {
        Some(p) => into_contiguous(p).handle.binding(),
        None => client
            .create_from_slice(bytemuck::cast_slice(&[0f32]))
            .binding(),
    };
    client.launch(
        Box::new(SourceKernel::new(
            Limit { b, has_previous },
            CubeDim::new_1d(GROUP as u32),
        )),
        CubeCount::Static(1, 1, 1),
        KernelArguments::new().with_buffers(vec![
            sums.binding(),
            psi.handle.clone().binding(),
            norm.handle.clone().binding(),
            params.handle.clone().binding(),
            previous,
        ]),
    );
    (psi, norm)
}
