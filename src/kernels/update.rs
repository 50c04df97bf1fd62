//! Launch of `shaders/update.wgsl`: W ← d·(W − α·(S·L + G⊙ψ)).

use burn::backend::ops::FloatTensorOps;
use burn::backend::wgpu::{
    CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::KernelArguments;
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::{DType, Shape};

use super::{BLOCK, MAX_WORKGROUPS, WGSL, chunk_rows};

/// The shader text, templated by [`Update::source`].
const SHADER: &str = include_str!("../../shaders/update.wgsl");

const RECOVERY_BINDINGS: &str = "@group(0) @binding(5) var<storage, read_write> grad: array<f32>;
@group(0) @binding(6) var<storage, read_write> psi: array<f32>;";
const RECOVERY_TERM: &str = "                u = u + grad[i * B + j] * psi[j];";

#[derive(Debug)]
struct Update {
    a: usize,
    r: usize,
    b: usize,
    transposed: bool,
    recovery: bool,
}

impl KernelSource for Update {
    fn source(&self) -> SourceTemplate {
        let (bindings, term) = if self.recovery {
            (RECOVERY_BINDINGS, RECOVERY_TERM)
        } else {
            ("", "")
        };
        SourceTemplate::new(SHADER)
            .register("a", self.a.to_string())
            .register("r", self.r.to_string())
            .register("b", self.b.to_string())
            .register("transposed", self.transposed.to_string())
            .register("recovery_bindings", bindings)
            .register("recovery_term", term)
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.a, self.r, self.b, self.transposed, self.recovery))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// The update the kernel computes, with Burn's own ops: the fallback.
#[allow(clippy::too_many_arguments)]
fn portable(
    basis: CubeTensor,
    low: CubeTensor,
    weight: CubeTensor,
    recovery: Option<(CubeTensor, CubeTensor)>,
    alpha: f32,
    decay: f32,
    transposed: bool,
) -> CubeTensor {
    let mut u = CubeBackend::float_matmul(basis, low);
    if let Some((grad, psi)) = recovery {
        u = CubeBackend::float_add(u, CubeBackend::float_mul(grad, psi));
    }
    if transposed {
        u = CubeBackend::float_transpose(u);
    }
    let stepped = CubeBackend::float_sub(weight, CubeBackend::float_mul_scalar(u, alpha.into()));
    CubeBackend::float_mul_scalar(stepped, decay.into())
}

/// W' = d·(W − α·(S·L + G⊙ψ)); `recovery` holds (G, ψ) when recovery scaling is on.
/// S, W and G over `limit` bytes are updated in row chunks (left layout only). Falls back
/// to Burn's ops where the kernel cannot run: not f32, not a WGSL runtime, L or a
/// transposed W over the limit, or too many workgroups.
#[allow(clippy::too_many_arguments)]
pub fn launch(
    basis: CubeTensor,
    low: CubeTensor,
    weight: CubeTensor,
    recovery: Option<(CubeTensor, CubeTensor)>,
    alpha: f32,
    decay: f32,
    transposed: bool,
    limit: usize,
) -> CubeTensor {
    let (a, r) = (basis.meta.shape()[0], basis.meta.shape()[1]);
    let b = low.meta.shape()[1];
    let f32s = [&basis, &low, &weight]
        .iter()
        .all(|t| t.dtype == DType::F32)
        && recovery
            .as_ref()
            .is_none_or(|(g, p)| g.dtype == DType::F32 && p.dtype == DType::F32);
    let rows = if transposed {
        // W is b×a: a row chunk of the canonical layout is not contiguous in it.
        (a * r.max(b) * 4 <= limit).then_some(a)
    } else {
        chunk_rows(a, r.max(b), limit)
    };
    let fits = r * b * 4 <= limit
        && b.div_ceil(BLOCK) <= MAX_WORKGROUPS
        && a.div_ceil(BLOCK) <= MAX_WORKGROUPS;
    let (true, true, Some(rows)) = (f32s && fits, basis.client.name() == WGSL, rows) else {
        return portable(basis, low, weight, recovery, alpha, decay, transposed);
    };
    let basis = into_contiguous(basis);
    let low = into_contiguous(low);
    let weight = into_contiguous(weight);
    let client = weight.client.clone();
    let shape = Shape::from(weight.meta.shape().to_vec());
    let output = CubeTensor::new_contiguous(
        client.clone(),
        weight.device.clone(),
        shape,
        client.empty(a * b * 4),
        DType::F32,
    );
    let scalars = client.create_from_slice(bytemuck::cast_slice(&[alpha, decay]));
    let recovery = recovery.map(|(g, p)| (into_contiguous(g), into_contiguous(p)));
    for k0 in (0..a).step_by(rows) {
        let k1 = (k0 + rows).min(a);
        let slice = |t: &CubeTensor, width: usize| {
            t.handle
                .clone()
                .offset_start((k0 * width * 4) as u64)
                .offset_end(((a - k1) * width * 4) as u64)
                .binding()
        };
        let mut buffers = vec![
            slice(&basis, r),
            low.handle.clone().binding(),
            slice(&weight, b),
            slice(&output, b),
            scalars.clone().binding(),
        ];
        if let Some((grad, psi)) = &recovery {
            buffers.push(slice(grad, b));
            buffers.push(psi.handle.clone().binding());
        }
        let kernel = Update {
            a: k1 - k0,
            r,
            b,
            transposed,
            recovery: recovery.is_some(),
        };
        super::count_launch("update", [a, r, b]);
        client.launch(
            Box::new(SourceKernel::new(kernel, CubeDim::new_2d(16, 16))),
            CubeCount::Static(
                b.div_ceil(BLOCK) as u32,
                (k1 - k0).div_ceil(BLOCK) as u32,
                1,
            ),
            KernelArguments::new().with_buffers(buffers),
        );
    }
    output
}
