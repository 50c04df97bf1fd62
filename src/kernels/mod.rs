//! The WGSL kernels (`shaders/`) on Burn's wgpu backend: their launchers, one file per
//! shader family, and what they share. The WGSL route (`route/wgsl/`) calls them through
//! the [`SubTrackKernels`] backend extension (`extension.rs`), registered for Burn's CubeCL
//! backend and, lazily, for its fusion layer, so they work with Burn's kernel fusion on.
//!
//! - `project.rs`: G̃ = SᵀG by tiles, split-K and its reduction;
//! - `adam.rs`: low-rank Adam with the moment rotation;
//! - `recovery.rs`: recovery scaling's column norms and limiter;
//! - `update.rs`: the back-projection fused with the weight update;
//! - `tracking.rs`: the geodesic tracking step's kernels;
//! - `tune.rs`: the autotuned choice of tile and column-norm kernel ([`TileChoice`]), the
//!   launchers' only caller besides the extension;
//! - `pins.rs`: this thread's pins of those choices (for measuring);
//! - `launch.rs`: the launch limits, templates and row chunks the launchers share, and the
//!   one launch every kernel goes through;
//! - `fit.rs`: what each shader needs of the adapter (bindings, workgroup memory and size),
//!   read with naga, against the device's [`Limits`];
//! - `expansions.rs`: every kernel expansion, for the suite's translation test.
//!
//! Each `*_plan` below says whether a kernel can run these sizes under `limits`; the route
//! falls back to the portable operation where it cannot. Launches are counted in
//! [`launches`].

mod adam;
mod expansions;
mod extension;
mod fit;
mod launch;
mod pins;
mod project;
mod recovery;
mod tracking;
mod tune;
mod update;

use burn::backend::DispatchDevice;
use burn::tensor::Device;

pub use crate::launches::{launches, wgsl_dispatches};
pub use crate::limits::Limits;
pub use expansions::shader_expansions;
pub use extension::SubTrackKernels;
pub use pins::{
    projection_splits, projection_tile, recovery_norms, set_projection_splits, set_projection_tile,
    set_recovery_norms,
};
pub use project::{ProjectionTile, projected_shape};
pub use recovery::ColumnNorms;
pub use tune::{
    NormsChoice, TUNED_MIN_MACS, TileChoice, TileKey, Tuned, TunedTile, UpdateLaunch, tuned_choice,
    tuned_norms, tuned_tile, tuned_tiles, tuner_candidates,
};

/// Whether the WGSL kernels run for tensors on `device`: a wgpu device whose runtime
/// compiles WGSL (not SPIR-V or MSL). Opens the device's client.
pub fn wgsl_available(device: &Device) -> bool {
    match device.as_dispatch() {
        DispatchDevice::Cube(cube) => {
            matches!(cube, burn::cubecl::Device::Wgpu(_)) && cube.client().name() == launch::WGSL
        }
        _ => false,
    }
}

/// The limits of the wgpu adapter behind `device`, as its CubeCL runtime reports them
/// (`None` for a device of another runtime). CubeCL reports one storage buffer fewer than
/// wgpu's `max_storage_buffers_per_shader_stage`, keeping one for its own kernels; wgpu
/// validates a pipeline against the device's count itself, so that one is added back.
pub fn device_limits(device: &Device) -> Option<Limits> {
    let DispatchDevice::Cube(cube) = device.as_dispatch() else {
        return None;
    };
    if !matches!(cube, burn::cubecl::Device::Wgpu(_)) {
        return None;
    }
    let client = cube.client();
    let properties = client.properties();
    let hardware = &properties.hardware;
    Some(Limits {
        max_binding_bytes: usize::try_from(properties.memory.max_page_size).unwrap_or(usize::MAX),
        max_workgroups: hardware.max_cube_count.0 as usize,
        max_storage_buffers: hardware.max_bindings as usize + 1,
        max_workgroup_bytes: hardware.max_shared_memory_size,
        max_invocations: hardware.max_units_per_cube as usize,
    })
}

/// Whether the projection kernel runs S a×r, G a×b.
pub fn projection_plan(a: usize, r: usize, b: usize, limits: Limits) -> bool {
    project::plan(a, r, b, limits).is_some()
}

/// Whether the projection's WGSL tiles fit the adapter's `limits` (bindings, workgroup
/// memory and size; the sizes are [`projection_plan`]'s).
pub fn projection_tiles_fit(limits: Limits) -> bool {
    project::tile_fits(ProjectionTile::Block64, limits)
}

/// Whether Burn's matmul with `finite_flag.wgsl` (the projection's other candidate, which
/// runs any sizes) fits the adapter's `limits`.
pub fn matmul_fits(limits: Limits) -> bool {
    project::matmul_fits(limits)
}

/// Whether the update's WGSL tiles, with the recovery term where `recovery`, fit the
/// adapter's `limits`; where they do not, Burn's ops run the update on the WGSL route.
pub fn update_tiles_fit(recovery: bool, limits: Limits) -> bool {
    update::tile_fits(ProjectionTile::Block64, recovery, limits)
}

/// Whether the split-K projection runs S a×r, G a×b in `splits` partial sums.
pub fn split_plan(a: usize, r: usize, b: usize, splits: usize, limits: Limits) -> bool {
    project::split_plan(a, r, b, splits, limits).is_some()
}

/// Whether the Adam kernel runs r×b moments, rotating them where `rotate`.
pub fn adam_plan(r: usize, b: usize, rotate: bool, limits: Limits) -> bool {
    adam::plan(r, b, rotate, limits)
}

/// Whether low-rank Adam fused with recovery scaling's norms (`adam_recovery.wgsl`) and the
/// limited update after it, by blocks of `tile`, run G a×b at rank r (W stored b×a where
/// `transposed`), with or without a previous norm: three launches a step instead of five,
/// where the adapter offers their 9 and 10 storage buffers.
pub fn fused_recovery_plan(
    tile: ProjectionTile,
    [a, r, b]: [usize; 3],
    transposed: bool,
    previous: bool,
    limits: Limits,
) -> bool {
    adam::recovery_plan(a, r, b, limits)
        && update::limited_plan(tile, [a, r, b], transposed, previous, limits)
}

/// Whether the recovery kernels run G a×b with G̃ r×b.
pub fn recovery_plan(a: usize, r: usize, b: usize, limits: Limits) -> bool {
    recovery::plan(a, r, b, limits).is_some()
}

/// Whether the update kernel runs W a×b (stored b×a where `transposed`) at rank r, with
/// the recovery term where `recovery`.
pub fn update_plan(
    a: usize,
    r: usize,
    b: usize,
    transposed: bool,
    recovery: bool,
    limits: Limits,
) -> bool {
    update::plan(a, r, b, transposed, recovery, limits).is_some()
}

/// Whether the tracking step's kernels run a basis a×r and a gradient a×b.
pub fn tracking_plan(a: usize, r: usize, b: usize, limits: Limits) -> bool {
    tracking::plan(a, r, b, limits)
}
