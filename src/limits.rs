//! The device limits the WGSL launches plan for (row chunks past a storage binding's size,
//! several launches past the workgroup limit).

/// Bytes a storage binding may hold under the portable WebGPU limits (lavapipe's too).
const MAX_BINDING_BYTES: usize = 128 << 20;
/// Workgroups per dispatch dimension.
pub(crate) const MAX_WORKGROUPS: usize = 65_535;

/// The device limits the WGSL kernels plan their launches for.
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

    /// WebGPU's limits with storage bindings of at most `max_binding_bytes`.
    pub const fn with_binding_bytes(max_binding_bytes: usize) -> Limits {
        Limits {
            max_binding_bytes,
            ..Limits::WEBGPU
        }
    }
}
