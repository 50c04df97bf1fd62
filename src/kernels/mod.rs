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
//! - `launch.rs`: the launch limits, templates and row chunks the launchers share.
//!
//! Each `*_plan` below says whether a kernel can run these sizes under `limits`; the route
//! falls back to the portable operation where it cannot. Launches are counted in
//! [`launches`].

mod adam;
mod extension;
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
pub use extension::SubTrackKernels;
pub use pins::{
    projection_splits, projection_tile, recovery_norms, set_projection_splits, set_projection_tile,
    set_recovery_norms,
};
pub use project::{ProjectionTile, projected_shape};
pub use recovery::ColumnNorms;
pub use tune::{
    NormsChoice, TUNED_MIN_MACS, TileChoice, TileKey, Tuned, TunedTile, UpdateLaunch, tuned_norms,
    tuned_tile, tuned_tiles,
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

/// Whether the projection kernel runs S a×r, G a×b.
pub fn projection_plan(a: usize, r: usize, b: usize, limits: Limits) -> bool {
    project::plan(a, r, b, limits).is_some()
}

/// Whether the split-K projection runs S a×r, G a×b in `splits` partial sums.
pub fn split_plan(a: usize, r: usize, b: usize, splits: usize, limits: Limits) -> bool {
    project::split_plan(a, r, b, splits, limits).is_some()
}

/// Whether the Adam kernel runs r×b moments.
pub fn adam_plan(r: usize, b: usize, limits: Limits) -> bool {
    adam::plan(r, b, limits)
}

/// Whether the recovery kernels run G a×b with G̃ r×b.
pub fn recovery_plan(a: usize, r: usize, b: usize, limits: Limits) -> bool {
    recovery::plan(a, r, b, limits).is_some()
}

/// Whether the update kernel runs W a×b (stored b×a where `transposed`) at rank r.
pub fn update_plan(a: usize, r: usize, b: usize, transposed: bool, limits: Limits) -> bool {
    update::plan(a, r, b, transposed, limits).is_some()
}

/// Whether the tracking step's kernels run a basis a×r and a gradient a×b.
pub fn tracking_plan(a: usize, r: usize, b: usize, limits: Limits) -> bool {
    tracking::plan(a, r, b, limits)
}
