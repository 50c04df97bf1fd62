//! The device limits the WGSL launches plan for: row chunks past a storage binding's size,
//! several launches past the workgroup limit, and which kernels fit the adapter at all
//! (storage buffers per shader stage, workgroup memory, invocations per workgroup).

/// Bytes a storage binding may hold under the portable WebGPU limits (lavapipe's too).
const MAX_BINDING_BYTES: usize = 128 << 20;
/// Workgroups per dispatch dimension.
pub(crate) const MAX_WORKGROUPS: usize = 65_535;

/// The device limits the WGSL kernels plan their launches for. A kernel whose bindings,
/// workgroup memory or workgroup size exceed them is never launched: its operation takes
/// another candidate or the portable route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Limits {
    /// Bytes one storage binding may hold; larger tensors are bound in row chunks.
    pub max_binding_bytes: usize,
    /// Workgroups per dispatch dimension; wider matrices take several launches.
    pub max_workgroups: usize,
    /// Storage buffers one compute shader may bind.
    pub max_storage_buffers: usize,
    /// Bytes of workgroup (shared) memory one workgroup may use.
    pub max_workgroup_bytes: usize,
    /// Invocations in one workgroup.
    pub max_invocations: usize,
}

impl Limits {
    /// WebGPU's portable defaults, which every adapter supports: 128 MiB per storage
    /// binding, 65,535 workgroups per dimension, 8 storage buffers per shader stage,
    /// 16 KiB of workgroup memory and 256 invocations per workgroup.
    pub const WEBGPU: Limits = Limits {
        max_binding_bytes: MAX_BINDING_BYTES,
        max_workgroups: MAX_WORKGROUPS,
        max_storage_buffers: 8,
        max_workgroup_bytes: 16 << 10,
        max_invocations: 256,
    };

    /// The route's own limits before the adapter's lower them ([`crate::route::RouteRequest`]):
    /// WebGPU's binding size and workgroup count, which the launches are planned and tested
    /// for, and no cap of their own on what a shader binds or holds, which the adapter
    /// decides (a fused kernel with more than WebGPU's 8 storage buffers runs where the
    /// adapter offers them).
    pub const ROUTE: Limits = Limits {
        max_storage_buffers: usize::MAX,
        max_workgroup_bytes: usize::MAX,
        max_invocations: usize::MAX,
        ..Limits::WEBGPU
    };

    /// WebGPU's limits with storage bindings of at most `max_binding_bytes`.
    pub const fn with_binding_bytes(max_binding_bytes: usize) -> Limits {
        Limits {
            max_binding_bytes,
            ..Limits::WEBGPU
        }
    }

    /// The smaller of each limit: what both `self` and `other` allow.
    pub fn min(self, other: Limits) -> Limits {
        Limits {
            max_binding_bytes: self.max_binding_bytes.min(other.max_binding_bytes),
            max_workgroups: self.max_workgroups.min(other.max_workgroups),
            max_storage_buffers: self.max_storage_buffers.min(other.max_storage_buffers),
            max_workgroup_bytes: self.max_workgroup_bytes.min(other.max_workgroup_bytes),
            max_invocations: self.max_invocations.min(other.max_invocations),
        }
    }
}
