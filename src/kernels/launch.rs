//! What the WGSL launchers share: the launch limits, shader templates, and the chunking of
//! tensors past a storage binding's size and dispatches past the workgroup limit.

use std::ops::Range;

use burn::backend::wgpu::{
    CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::cubecl::client::Client;
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::{BufferBinding, KernelArguments};
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::{DType, Shape};

pub(super) use crate::limits::{Limits, MAX_WORKGROUPS};

/// Side of the square output block a workgroup computes: 16×16 invocations of 4×4 each.
pub(super) const BLOCK: usize = 64;
/// CubeCL's name for a wgpu runtime that compiles WGSL (not SPIR-V or MSL).
pub(super) const WGSL: &str = "wgpu<wgsl>";

/// (first block, blocks) of each launch over the ⌈b/64⌉ 64-column blocks of a matrix, at most
/// `limits.max_workgroups` blocks a launch.
pub(super) fn column_groups(b: usize, limits: Limits) -> Vec<(usize, usize)> {
    column_groups_of(b, BLOCK, limits)
}

/// [`column_groups`] over blocks of `block` columns.
pub(super) fn column_groups_of(b: usize, block: usize, limits: Limits) -> Vec<(usize, usize)> {
    let blocks = b.div_ceil(block);
    (0..blocks)
        .step_by(limits.max_workgroups)
        .map(|first| (first, limits.max_workgroups.min(blocks - first)))
        .collect()
}

/// Rows per chunk when an a-row matrix of `widest` f32 columns exceeds `limit` bytes: as
/// many as fit, rounded down to a multiple of 64 so that every chunk's byte offset is a
/// multiple of 256 (the largest storage-offset alignment WebGPU lets a device require).
/// `None` when not even 64 rows fit.
pub(super) fn chunk_rows(a: usize, widest: usize, limit: usize) -> Option<usize> {
    if a * widest * 4 <= limit {
        return Some(a);
    }
    let rows = limit / (4 * widest) / 64 * 64;
    (rows > 0).then_some(rows)
}

/// A WGSL shader (`shaders/`) with its template values, all part of the kernel id.
#[derive(Debug)]
pub(super) struct Templated {
    name: &'static str,
    source: &'static str,
    values: Vec<(&'static str, String)>,
}

impl Templated {
    pub(super) fn new(name: &'static str, source: &'static str) -> Self {
        Self {
            name,
            source,
            values: Vec::new(),
        }
    }

    /// Register `{{key}}` = `value`.
    pub(super) fn with(mut self, key: &'static str, value: impl ToString) -> Self {
        self.values.push((key, value.to_string()));
        self
    }

    /// The shader's name (its file's, without `.wgsl`).
    pub(super) fn name(&self) -> &'static str {
        self.name
    }

    /// The WGSL source with every template value filled in, as the device compiles it.
    pub(crate) fn expand(&self) -> String {
        self.source().complete()
    }

    /// The template values, in the order they were registered.
    pub(crate) fn values(&self) -> &[(&'static str, String)] {
        &self.values
    }
}

/// Launch `kernel` with workgroups of `workgroup` invocations, `count` of them, binding
/// `buffers` in order.
///
/// # Panics
/// Where `kernel` does not fit `limits` ([`fit::fits`]): every launcher's `plan` has
/// checked that, so this guards the adapter against a kernel edit the plans missed.
pub(super) fn launch(
    client: &Client,
    kernel: Templated,
    workgroup: CubeDim,
    count: CubeCount,
    buffers: Vec<BufferBinding>,
    limits: Limits,
) {
    let needs = super::fit::needs(&kernel);
    assert!(
        needs.fit(limits),
        "{}: needs {needs:?}, past the device's {limits:?}",
        kernel.name
    );
    debug_assert_eq!(
        buffers.len(),
        needs.storage_buffers,
        "{}: bindings",
        kernel.name
    );
    client.launch(
        Box::new(SourceKernel::new(kernel, workgroup)),
        count,
        KernelArguments::new().with_buffers(buffers),
    );
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
pub(super) fn assert_f32_on_wgsl(kernel: &str, tensors: &[&CubeTensor]) {
    assert!(
        tensors.iter().all(|t| t.dtype == DType::F32) && tensors[0].client.name() == WGSL,
        "{kernel}: f32 tensors on a WGSL runtime"
    );
}

/// A new, uninitialised contiguous f32 tensor of `shape` beside `like`.
pub(super) fn empty_f32(like: &CubeTensor, shape: Shape) -> CubeTensor {
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
pub(super) fn f32_from(like: &CubeTensor, shape: Shape, values: &[f32]) -> CubeTensor {
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
pub(super) fn is_transposed_view(t: &CubeTensor) -> bool {
    let (shape, strides) = (t.meta.shape(), t.meta.strides());
    !t.meta.is_tiled() && shape.len() == 2 && strides[0] == 1 && strides[1] == shape[0]
}

/// tᵀ of a 2-D tensor, row-major: the view swapped back where `t` is a transposed view
/// ([`is_transposed_view`], no copy), else a copy.
pub(super) fn contiguous_transpose(mut t: CubeTensor) -> CubeTensor {
    t.meta.swap(0, 1);
    into_contiguous(t)
}

/// G (a×b) as a kernel reads it: in place as its stored transpose (b×a rows, `true`) where
/// it is a transposed view and one launch takes all its rows (`rows_per_launch` = a), else
/// row-major a×b (`false`, a copy where it is not already).
pub(super) fn stored_gradient(g: CubeTensor, rows_per_launch: usize) -> (CubeTensor, bool) {
    if is_transposed_view(&g) && rows_per_launch == g.meta.shape()[0] {
        (contiguous_transpose(g), true)
    } else {
        (into_contiguous(g), false)
    }
}

/// Rows `rows` of a row-major matrix of `total` rows and `width` f32 columns, bound as a
/// storage buffer: the byte range of the whole tensor narrowed by offsets.
pub(super) fn row_chunk(
    t: &CubeTensor,
    rows: Range<usize>,
    total: usize,
    width: usize,
) -> BufferBinding {
    t.handle
        .clone()
        .offset_start((rows.start * width * 4) as u64)
        .offset_end(((total - rows.end) * width * 4) as u64)
        .binding()
}
