//! The tuning pins of this thread: the projection tile, split-K and column-norm kernel that
//! the WGSL launches use in place of the autotuner's choice (`benchmark --projection-tile`,
//! `--projection-splits`, `--recovery-norms`; the tests pin them to cover each variant).

use std::cell::Cell;

use super::{NormsChoice, TileChoice};

thread_local! {
    static PROJECTION_SPLITS: Cell<usize> = const { Cell::new(1) };
    static PROJECTION_TILE: Cell<TileChoice> = const { Cell::new(TileChoice::Tuned) };
    static RECOVERY_NORMS: Cell<NormsChoice> = const { Cell::new(NormsChoice::Tuned) };
}

/// Tuning hook: from now on, the WGSL recovery column norms on this thread ([`recovery()`](crate::testing::route::recovery),
/// so the optimizer's SubTrack++ steps run here) use `norms`: a [`ColumnNorms`](super::ColumnNorms) pins one
/// kernel (`benchmark --recovery-norms per-column|tiled`), [`NormsChoice::Tuned`] (the
/// default) lets the autotuner time both per shape. The per-column kernel
/// (`recovery_norms.wgsl`) runs ⌈b/256⌉ workgroups, 2–6 at the 60m shapes; the tiled one
/// (`recovery_norms_tiled.wgsl`) fills a GPU's multiprocessors at the cost of partial sums.
pub fn set_recovery_norms(norms: impl Into<NormsChoice>) {
    let norms = norms.into();
    RECOVERY_NORMS.with(|t| t.set(norms));
}

/// The column-norm kernel [`set_recovery_norms`] chose for this thread.
pub fn recovery_norms() -> NormsChoice {
    RECOVERY_NORMS.with(Cell::get)
}

/// Tuning hook: from now on, the WGSL projections on this thread ([`project()`](crate::testing::route::project),
/// [`project_checked`](crate::testing::route::project_checked), [`project_packed`](crate::testing::route::project_packed), so the optimizer's steps run here) use
/// [`project_split`](crate::route::project_split) with `splits` partial sums, by the tile [`set_projection_tile`] pins
/// (64×64 where it is tuned). 1, the default, leaves split-K to the autotuner, which
/// weighs it per shape (`tune.rs`). For measuring (`benchmark --projection-splits N`).
pub fn set_projection_splits(splits: usize) {
    PROJECTION_SPLITS.with(|s| s.set(splits.max(1)));
}

/// Tuning hook: from now on, the WGSL projections on this thread ([`project()`](crate::testing::route::project),
/// [`project_checked`](crate::testing::route::project_checked), [`project_packed`](crate::testing::route::project_packed), [`track`](crate::route::track)'s A = SᵀG) and back-projections
/// fused with the weight update ([`update()`](crate::testing::route::update)), so the optimizer's steps run here, compute
/// blocks of `tile`: a [`ProjectionTile`](super::ProjectionTile) pins one (`benchmark --projection-tile 64|128`),
/// [`TileChoice::Tuned`] (the default) lets the autotuner pick per shape.
pub fn set_projection_tile(tile: impl Into<TileChoice>) {
    let tile = tile.into();
    PROJECTION_TILE.with(|t| t.set(tile));
}

/// The tile [`set_projection_tile`] chose for this thread.
pub fn projection_tile() -> TileChoice {
    PROJECTION_TILE.with(Cell::get)
}

/// The split count [`set_projection_splits`] chose for this thread.
pub fn projection_splits() -> usize {
    PROJECTION_SPLITS.with(Cell::get)
}
